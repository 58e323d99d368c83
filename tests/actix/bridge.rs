//! An actix actor registered by global name on one node, told and asked from another; one
//! reached by a local name; lookups for the wrong message type.

use ensemble::actix::{ActixMsg, ActixRefExt, ActixSystem, Bridge};
use ensemble::registry::RegistryError;
use ensemble::{LookupError, SpawnOptions};

use crate::util::{Bridged, Cmd, DEADLINE, Greeter, Other, Reply, resolve, two_nodes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actix_actor_is_asked_by_name_from_another_node() {
    let pair = two_nodes().await;
    let actix = ActixSystem::start("bridge-test").unwrap();
    let (addr, exit) = actix.start_actor(|_ctx| Greeter::default()).await.unwrap();
    let proxy = Bridge::<Cmd>::new(addr)
        .lifeline(exit)
        .register(&pair.a.node, &pair.a.registry, "greeter")
        .await
        .unwrap();
    assert!(proxy.is_local());

    // Node b finds it by name: a reference to the proxy on node a.
    let greeter = resolve::<Bridged>(&pair.b, "greeter").await;
    assert_eq!(greeter.id(), proxy.id());
    assert!(!greeter.is_local());

    // An ask travels b -> a -> the actix thread, and the handler's result comes back.
    let answer = greeter
        .ask_actix(Cmd::Greet("ada".into()), DEADLINE)
        .await
        .unwrap();
    assert_eq!(answer, Reply::Text("hello, ada from actix".into()));
    // The same through the plain `ActorRef::ask`.
    let answer = greeter
        .ask(|reply| ActixMsg::Ask(Cmd::Total, reply), DEADLINE)
        .await
        .unwrap();
    assert_eq!(answer, Ok(Reply::Total(0)));

    // Tells arrive, in order, before an ask sent after them.
    for n in 1..=100 {
        greeter.tell_actix(Cmd::Add(n)).await.unwrap();
    }
    let total = greeter.ask_actix(Cmd::Total, DEADLINE).await.unwrap();
    assert_eq!(total, Reply::Total(5050));

    // Looking the name up for another message type fails, naming the name and both types.
    let err = pair
        .b
        .registry
        .whereis::<ActixMsg<Other>>("greeter")
        .unwrap_err();
    assert!(matches!(err, RegistryError::WrongType { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("\"greeter\""), "{text}");
    assert!(text.contains("ActixMsg<"), "{text}");
    assert!(text.contains("Other"), "{text}");

    // A second registration of the name is refused with the holder named; the second proxy
    // is stopped again.
    let (addr2, exit2) = actix.start_actor(|_ctx| Greeter::default()).await.unwrap();
    let err = Bridge::<Cmd>::new(addr2)
        .lifeline(exit2)
        .register(&pair.a.node, &pair.a.registry, "greeter")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("\"greeter\""), "{text}");
    assert!(text.contains(&proxy.id().to_string()), "{text}");

    actix.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_name_reaches_the_actix_actor() {
    let node = ensemble::Node::new(ensemble::NodeConfig::new("solo")).unwrap();
    let actix = ActixSystem::start("local-test").unwrap();
    let addr = actix
        .run(|| actix::Actor::start(Greeter::default()))
        .await
        .unwrap();
    let proxy = Bridge::<Cmd>::new(addr.clone())
        .label("local greeter")
        .max_in_flight(2)
        .spawn_options(SpawnOptions::new().name("greeter"))
        .spawn(&node)
        .unwrap();

    let found = node.whereis_local::<Bridged>("greeter").unwrap();
    assert_eq!(found.id(), proxy.id());
    // More messages than may be in flight at once: the proxy waits for room and loses none.
    for n in 1..=50 {
        found.tell_actix(Cmd::Add(n)).await.unwrap();
    }
    assert_eq!(
        found.ask_actix(Cmd::Total, DEADLINE).await.unwrap(),
        Reply::Total(1275)
    );

    let err = node
        .whereis_local::<ActixMsg<Other>>("greeter")
        .unwrap_err();
    assert!(matches!(err, LookupError::WrongType { .. }), "{err:?}");
    assert!(err.to_string().contains(&proxy.id().to_string()), "{err}");

    // Bridging an actor that has stopped is refused, naming it.
    addr.do_send(Cmd::Stop);
    crate::util::until("the actix actor to stop", || {
        (!addr.connected()).then_some(())
    })
    .await;
    let err = Bridge::<Cmd>::new(addr)
        .label("stopped greeter")
        .spawn(&node)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot bridge actix actor \"stopped greeter\": it is stopped (its mailbox is closed)"
    );

    actix.shutdown().await;
    node.shutdown().await;
}
