//! Clusters forming, and noticing a node killed with `kill -9`.

use std::time::Instant;

use ensemble::cluster::MemberEvent;

use crate::util::*;

/// Reads a child's lines until it has reported `Joined` for each of `names`.
fn expect_joined(child: &mut ChildNode, names: &[&str]) {
    let mut missing: Vec<&str> = names.to_vec();
    while !missing.is_empty() {
        let line = child.expect_line("EVENT Joined(");
        missing.retain(|name| !line.contains(&format!("node: {name}#")));
    }
}

/// This node `n0` and child nodes `n1`..`n3` joined through it.
async fn four_nodes(
    certs: &tempfile::TempDir,
) -> (ensemble::Node, ensemble::cluster::Cluster, Vec<ChildNode>) {
    let (node, cluster) = local_node("n0", certs.path()).await;
    let seed = cluster.local_addr();
    let mut children: Vec<ChildNode> = ["n1", "n2", "n3"]
        .iter()
        .map(|name| ChildNode::spawn(name, certs.path(), "test", &[seed]))
        .collect();
    for child in &mut children {
        child.expect_line("JOINED");
    }
    wait_members(&cluster, &["n1", "n2", "n3"]).await;
    (node, cluster, children)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_and_this_one_form_a_full_mesh() {
    let certs = certificates(&["n0", "n1", "n2", "n3"]);
    let (_node, _cluster, mut children) = four_nodes(&certs).await;
    // Every child connected to every other node, not only to the seed.
    for (i, child) in children.iter_mut().enumerate() {
        let others: Vec<&str> = ["n0", "n1", "n2", "n3"]
            .into_iter()
            .filter(|n| *n != format!("n{}", i + 1))
            .collect();
        expect_joined(child, &others);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_kill_9_is_declared_down_everywhere() {
    let certs = certificates(&["n0", "n1", "n2", "n3"]);
    let (_node, cluster, mut children) = four_nodes(&certs).await;
    for i in [0, 2] {
        let child = &mut children[i];
        let others = if child.name == "n1" {
            ["n0", "n2", "n3"]
        } else {
            ["n0", "n1", "n2"]
        };
        expect_joined(child, &others);
    }

    let victim = member_id(&cluster, "n2");
    let mut events = cluster.subscribe();
    let killed_at = Instant::now();
    children[1].kill();
    let down = MemberEvent::Down(victim.clone());
    wait_event(&mut events, "n2 declared down", |e| e == &down).await;
    let detected = killed_at.elapsed();
    for i in [0, 2] {
        children[i].expect_line(&format!("EVENT Down({victim})"));
    }
    wait_members(&cluster, &["n1", "n3"]).await;
    // Measured, not asserted: the machine is shared (docs/performance.md has the figures).
    eprintln!("kill -9 of n2 declared down after {detected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_is_reported_left_not_down() {
    let certs = certificates(&["n0", "n1"]);
    let (_node, cluster) = local_node("n0", certs.path()).await;
    let (_other_node, other) = local_node("n1", certs.path()).await;
    other.join(&[cluster.local_addr()]).await.unwrap();
    wait_members(&cluster, &["n1"]).await;
    let n1 = member_id(&cluster, "n1");
    let mut events = cluster.subscribe();
    other.leave().await;
    let event = wait_event(&mut events, "n1 leaving", |e| {
        matches!(e, MemberEvent::Left(_) | MemberEvent::Down(_))
    })
    .await;
    assert_eq!(event, MemberEvent::Left(n1));
    wait_members(&cluster, &[]).await;
}

/// A start whose join fails leaves nothing behind: the address it listened on is free again,
/// so the node can be started again on it (here without seeds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_join_failed_frees_its_address() {
    let certs = certificates(&["lonely"]);
    let cert = ensemble::transport::certs::NodeCert::load(certs.path(), "lonely").unwrap();
    // A seed where nobody listens, and an address for this node, both free just now.
    let free = || {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|socket| socket.local_addr())
            .unwrap()
    };
    let (dead_seed, listen) = (free(), free());
    let node = ensemble::Node::new(ensemble::NodeConfig::new("lonely")).unwrap();
    let mut config = test_config("test");
    config.listen = listen;
    config.seeds = vec![dead_seed];
    config.handshake_timeout = std::time::Duration::from_millis(300);
    let err = match ensemble::cluster::Cluster::start(&node, config, &cert).await {
        Ok(_) => panic!("joined through a seed where nobody listens"),
        Err(err) => err,
    };
    assert!(err.to_string().contains(&dead_seed.to_string()), "{err}");
    assert!(node.extension::<ensemble::cluster::Cluster>().is_none());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut config = test_config("test");
        config.listen = listen;
        match ensemble::cluster::Cluster::start(&node, config, &cert).await {
            Ok(cluster) => {
                assert_eq!(cluster.local_addr(), listen);
                break;
            }
            Err(err) => assert!(
                Instant::now() < deadline,
                "{listen} still taken after the failed start: {err}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Settings that would panic a task later are refused at start, naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_cannot_work_are_refused_at_start() {
    let certs = certificates(&["strict"]);
    let cert = ensemble::transport::certs::NodeCert::load(certs.path(), "strict").unwrap();
    let node = ensemble::Node::new(ensemble::NodeConfig::new("strict")).unwrap();
    type Spoil = fn(&mut ensemble::cluster::ClusterConfig);
    let cases: [(&str, Spoil); 7] = [
        ("phi.heartbeat_interval", |c| {
            c.phi.heartbeat_interval = std::time::Duration::ZERO
        }),
        ("phi.heartbeat_interval is 61s", |c| {
            c.phi.heartbeat_interval = std::time::Duration::from_secs(61)
        }),
        ("control_queue", |c| c.control_queue = 0),
        ("phi.min_std_dev is 0", |c| {
            c.phi.min_std_dev = std::time::Duration::ZERO
        }),
        ("max_frame_size", |c| c.max_frame_size = 100),
        (
            "max_frame_size is 4294967296 bytes; it takes 16384 to 4294967295",
            |c| c.max_frame_size = u32::MAX as usize + 1,
        ),
        ("phi.threshold", |c| c.phi.threshold = f64::NAN),
    ];
    for (setting, spoil) in cases {
        let mut config = test_config("test");
        spoil(&mut config);
        match ensemble::cluster::Cluster::start(&node, config, &cert).await {
            Ok(_) => panic!("started with a bad {setting}"),
            Err(err) => assert!(err.to_string().contains(setting), "{setting}: {err}"),
        }
    }
}

/// A join cut short by its caller's timeout leaves nothing behind: the next dial of the same
/// seed goes ahead. (The address stayed marked as being dialled, and every later dial of it,
/// a join or a redial, was refused with "already connecting" for good.) The seed is a socket
/// that never answers, so that the first join cannot end before it is cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_cut_short_leaves_its_seed_free_to_dial_again() {
    let certs = certificates(&["n0"]);
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let seed = silent.local_addr().unwrap();
    let node = ensemble::Node::new(ensemble::NodeConfig::new("n0")).unwrap();
    let mut config = test_config("test");
    config.handshake_timeout = std::time::Duration::from_millis(300);
    let cert = ensemble::transport::certs::NodeCert::load(certs.path(), "n0").unwrap();
    let cluster = ensemble::cluster::Cluster::start(&node, config, &cert)
        .await
        .unwrap();
    let cut =
        tokio::time::timeout(std::time::Duration::from_millis(50), cluster.join(&[seed])).await;
    assert!(cut.is_err(), "the join of a silent seed ended: {cut:?}");
    let err = cluster.join(&[seed]).await.unwrap_err().to_string();
    assert!(!err.contains("already connecting"), "{err}");
    assert!(err.contains(&seed.to_string()), "{err}");
}
