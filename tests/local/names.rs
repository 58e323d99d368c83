//! Local names: one holder at a time, released when it ends.

use ensemble::prelude::*;
use ensemble::{LookupError, RegisterError, SpawnError};
use tokio::sync::mpsc;

use crate::util::*;

#[tokio::test]
async fn register_lookup_and_release_on_stop() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let actor = node.spawn(Probe::new("a", &tx)).unwrap();
    node.register_local("store", &actor).unwrap();
    let found: ActorRef<Cmd> = node.whereis_local("store").unwrap();
    assert_eq!(found, actor);
    assert_eq!(found.ask(|r| Cmd::Echo(3, r), ASK).await.unwrap(), 3);
    assert_eq!(node.actors()[0].names, vec!["store".to_string()]);

    actor.stop();
    within("exit", actor.wait_for_exit()).await;
    assert_eq!(
        node.whereis_local::<Cmd>("store").unwrap_err(),
        LookupError::NotFound {
            name: "store".into()
        }
    );
    // Free again for a new actor.
    let next = node.spawn(Probe::new("b", &tx)).unwrap();
    node.register_local("store", &next).unwrap();
}

#[tokio::test]
async fn a_taken_name_is_refused_naming_its_holder() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let holder = node
        .spawn_with(Probe::new("a", &tx), SpawnOptions::new().name("leader"))
        .unwrap();
    let other = node.spawn(Probe::new("b", &tx)).unwrap();
    let err = node.register_local("leader", &other).unwrap_err();
    assert_eq!(
        err,
        RegisterError::NameTaken {
            name: "leader".into(),
            holder: holder.id().clone()
        }
    );
    assert!(err.to_string().contains(&holder.id().to_string()), "{err}");
    let err = node
        .spawn_with(Probe::new("c", &tx), SpawnOptions::new().name("leader"))
        .unwrap_err();
    match err {
        SpawnError::NameTaken { holder: found, .. } => assert_eq!(&found, holder.id()),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn looking_up_with_the_wrong_message_type_says_so() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let actor = node.spawn(Probe::new("a", &tx)).unwrap();
    node.register_local("probe", &actor).unwrap();
    let err = node.whereis_local::<String>("probe").unwrap_err();
    match &err {
        LookupError::WrongType { actor: found, .. } => assert_eq!(found, actor.id()),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("does not take messages of type alloc::string::String"),
        "{err}"
    );
}

#[tokio::test]
async fn unregister_frees_the_name() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let actor = node.spawn(Probe::new("a", &tx)).unwrap();
    node.register_local("x", &actor).unwrap();
    assert!(node.unregister_local("x"));
    assert!(!node.unregister_local("x"));
    assert!(node.whereis_local::<Cmd>("x").is_err());
    assert!(node.actors()[0].names.is_empty());
}

#[tokio::test]
async fn an_actor_of_another_node_in_the_process_is_not_local() {
    let here = node();
    let there = Node::new(NodeConfig::new("there")).expect("node");
    let (tx, _events) = mpsc::unbounded_channel();
    let actor = there.spawn(Probe::new("a", &tx)).unwrap();
    assert!(matches!(
        here.register_local("a", &actor),
        Err(RegisterError::NotLocal { .. })
    ));
    assert!(here.whereis_local::<Cmd>("a").is_err());
    // Nor for names other nodes can look up.
    let remote = there.spawn(Numbers).unwrap();
    assert!(matches!(
        here.register_remote("b", &remote),
        Err(RegisterError::NotLocal { .. })
    ));
    assert!(here.whereis_local::<u64>("b").is_err());
}

/// An actor whose messages can cross nodes.
struct Numbers;

impl Actor for Numbers {
    type Msg = u64;

    async fn handle(&mut self, _msg: u64, _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}
