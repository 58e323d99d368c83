//! When the actix actor stops, its proxy ends: monitors on other nodes fire, the global name is
//! released, and senders get errors naming the actor.

use actix::Actor as _;
use ensemble::actix::{ActixAskError, ActixError, ActixRefExt, ActixSystem, Bridge, Lifeline};
use ensemble::{AskError, ExitReason};

use crate::util::{
    Bridged, Cmd, DEADLINE, Greeter, monitor, next_down, released, resolve, two_nodes, until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_actix_actor_fires_monitors_on_other_nodes_and_releases_its_name() {
    let pair = two_nodes().await;
    let actix = ActixSystem::start("lifecycle-test").unwrap();
    let (addr, exit) = actix.start_actor(|_ctx| Greeter::default()).await.unwrap();
    let proxy = Bridge::<Cmd>::new(addr.clone())
        .lifeline(exit)
        .register(&pair.a.node, &pair.a.registry, "greeter")
        .await
        .unwrap();
    let greeter = resolve::<Bridged>(&pair.b, "greeter").await;
    let mut downs = monitor(&pair.b, &greeter).await;

    // Stopped from actix's side: not through the bridge, so only the lifeline tells.
    addr.do_send(Cmd::Stop);
    let down = next_down(&mut downs).await;
    assert_eq!(down.actor, *proxy.id());
    assert_eq!(down.reason, ExitReason::Normal);
    assert_eq!(
        tokio::time::timeout(DEADLINE, proxy.wait_for_exit())
            .await
            .unwrap(),
        ExitReason::Normal
    );

    // The name is released, on node b's copy too.
    released(&pair.b, "greeter").await;
    // A sender still holding the old reference gets an error, not a hang.
    let err = greeter.ask_actix(Cmd::Total, DEADLINE).await.unwrap_err();
    assert!(
        matches!(err, ActixAskError::Ask(AskError::Dead { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains(&proxy.id().to_string()), "{err}");

    actix.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifeline_held_by_the_actor_gives_its_exit_reason() {
    let pair = two_nodes().await;
    let actix = ActixSystem::start("reason-test").unwrap();
    let (lifeline, exit) = Lifeline::new();
    let reason = ExitReason::Failed("the actix greeter lost its backend".into());
    let addr = actix
        .run({
            let reason = reason.clone();
            move || {
                Greeter {
                    lifeline: Some((lifeline, reason)),
                    ..Greeter::default()
                }
                .start()
            }
        })
        .await
        .unwrap();
    let proxy = Bridge::<Cmd>::new(addr)
        .lifeline(exit)
        .register(&pair.a.node, &pair.a.registry, "greeter")
        .await
        .unwrap();
    let greeter = resolve::<Bridged>(&pair.b, "greeter").await;
    let mut downs = monitor(&pair.b, &greeter).await;

    // Stopped through the bridge, from node b; the actix actor says why in `stopped`.
    greeter.tell_actix(Cmd::Stop).await.unwrap();
    let down = next_down(&mut downs).await;
    assert_eq!(down.actor, *proxy.id());
    assert_eq!(down.reason, reason);
    released(&pair.b, "greeter").await;

    actix.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_lifeline_the_next_message_finds_the_actor_stopped() {
    let pair = two_nodes().await;
    let actix = ActixSystem::start("no-lifeline-test").unwrap();
    let addr = actix.run(|| Greeter::default().start()).await.unwrap();
    let proxy = Bridge::<Cmd>::new(addr.clone())
        .register(&pair.a.node, &pair.a.registry, "greeter")
        .await
        .unwrap();
    let greeter = resolve::<Bridged>(&pair.b, "greeter").await;
    let mut downs = monitor(&pair.b, &greeter).await;

    addr.do_send(Cmd::Stop);
    until("the actix actor to stop", || {
        (!addr.connected()).then_some(())
    })
    .await;
    // Nothing tells the proxy; the next message finds the mailbox closed and the asker gets
    // an error naming the actor, on the other node.
    let err = greeter.ask_actix(Cmd::Total, DEADLINE).await.unwrap_err();
    assert_eq!(
        err,
        ActixAskError::Actix(ActixError::Stopped {
            actor: proxy.id().clone(),
            label: "greeter".into(),
        })
    );
    assert_eq!(
        err.to_string(),
        format!(
            "actix actor \"greeter\" (bridged as {}) is stopped: its mailbox is closed and the message was not handled",
            proxy.id()
        )
    );
    // Then the proxy ends: the monitor fires and the name is released.
    let down = next_down(&mut downs).await;
    assert_eq!(down.actor, *proxy.id());
    assert_eq!(down.reason, ExitReason::Normal);
    released(&pair.b, "greeter").await;

    actix.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_the_actix_system_down_ends_its_bridges() {
    let node = ensemble::Node::new(ensemble::NodeConfig::new("solo")).unwrap();
    let actix = ActixSystem::start("shutdown-test").unwrap();
    let mut proxies = Vec::new();
    for _ in 0..3 {
        let (addr, exit) = actix.start_actor(|_ctx| Greeter::default()).await.unwrap();
        proxies.push(
            Bridge::<Cmd>::new(addr)
                .lifeline(exit)
                .spawn(&node)
                .unwrap(),
        );
    }
    actix.shutdown().await;
    for proxy in proxies {
        assert_eq!(
            tokio::time::timeout(DEADLINE, proxy.wait_for_exit())
                .await
                .unwrap(),
            ExitReason::Normal
        );
    }
    node.shutdown().await;
}
