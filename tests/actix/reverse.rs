//! Actix actors holding Ensemble `ActorRef`s: asking and telling actors on another node from
//! their context.

use ensemble::actix::{ActixRefExt, ActixSystem, Bridge};

use crate::util::{
    Bridged, Cmd, Collector, CollectorMsg, DEADLINE, Echo, EchoMsg, Greeter, Reply, resolve,
    two_nodes,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actix_actor_asks_and_tells_ensemble_actors_on_another_node() {
    let pair = two_nodes().await;
    // Ensemble actors on node b, found by name from node a.
    let echo = pair.b.node.spawn(Echo).unwrap();
    pair.b.registry.register("echo", &echo).await.unwrap();
    let collector = pair.b.node.spawn(Collector::default()).unwrap();
    pair.b
        .registry
        .register("collector", &collector)
        .await
        .unwrap();
    let echo_from_a = resolve::<EchoMsg>(&pair.a, "echo").await;
    let collector_from_a = resolve::<CollectorMsg>(&pair.a, "collector").await;
    assert!(!echo_from_a.is_local() && !collector_from_a.is_local());

    // An actix actor on node a's side holds them.
    let actix = ActixSystem::start("reverse-test").unwrap();
    let (addr, exit) = actix
        .start_actor(move |_ctx| Greeter {
            echo: Some(echo_from_a),
            collector: Some(collector_from_a),
            ..Greeter::default()
        })
        .await
        .unwrap();
    Bridge::<Cmd>::new(addr)
        .lifeline(exit)
        .register(&pair.a.node, &pair.a.registry, "greeter")
        .await
        .unwrap();
    let greeter = resolve::<Bridged>(&pair.b, "greeter").await;

    // b asks the actix actor, which asks b's echo and answers with what it said.
    let answer = greeter
        .ask_actix(Cmd::Relay("ping".into()), DEADLINE)
        .await
        .unwrap();
    assert_eq!(answer, Reply::Text("echo ping from b".into()));

    // Tells from the actix actor keep their order on the way to b's collector.
    for n in 0..200 {
        greeter.tell_actix(Cmd::Forward(n)).await.unwrap();
    }
    // Once the actix actor has answered this, every Forward before it has been handed over.
    assert_eq!(
        greeter.ask_actix(Cmd::Total, DEADLINE).await.unwrap(),
        Reply::Total(0)
    );
    let expected: Vec<u64> = (0..200).collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got = collector.ask(CollectorMsg::Get, DEADLINE).await.unwrap();
        if got == expected {
            break;
        }
        assert!(
            got.len() < expected.len() && expected.starts_with(&got),
            "out of order or lost: {got:?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 200 arrived",
            got.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    actix.shutdown().await;
}
