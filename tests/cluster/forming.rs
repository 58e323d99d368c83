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
