//! The example key-value app deployed through the platform on four processes; the node
//! running its master killed with `kill -9`: every acknowledged write stays readable, the
//! master comes back under its name on a live node, and writes go on.

use std::path::Path;

use crate::util::{ChildNode, certificates, one_cluster_at_a_time};

const SPEC: &str = r#"
name = "kv"

[[roles]]
name = "master"
module = "kv.master"
singleton = true
global_name = "kv.master"

[[roles]]
name = "worker"
module = "kv.worker"
instances = 4
min_instances = 2
placement = { anti_affinity = true }
"#;

fn deploy(node: &mut ChildNode, dir: &Path) {
    let path = dir.join("kv.toml");
    std::fs::write(&path, SPEC).expect("write the spec");
    assert_eq!(node.run(&format!("deploy {}", path.display())), "ok");
}

/// The fencing token the master's orders carry, once it is its singleton lease's as this
/// node's copy of the registry has it (the copy may lag a grant for a moment).
fn master_token(node: &mut ChildNode) -> u64 {
    let deadline = std::time::Instant::now() + crate::util::DEADLINE;
    loop {
        let answer = node.run_until("kvtoken", "ok ");
        let tokens: Vec<u64> = answer[3..]
            .split(' ')
            .map(|t| t.parse().expect("a token"))
            .collect();
        if tokens[0] == tokens[1] {
            assert!(tokens[0] > 0, "the master took no token from its lease");
            return tokens[0];
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the master's orders carry token {}, its lease's is {}",
            tokens[0],
            tokens[1]
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn the_kv_app_survives_the_loss_of_its_masters_node() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["a", "b", "c", "d"]);
    let dir = certs.path();
    let mut a = ChildNode::start("a", dir, &[], true);
    let seeds = vec![a.addr.clone()];
    let mut nodes = vec![
        ChildNode::start("b", dir, &seeds, false),
        ChildNode::start("c", dir, &seeds, false),
        ChildNode::start("d", dir, &seeds, false),
    ];
    a.run_until("leader", "voters a,b,c");
    nodes.insert(0, a);

    deploy(&mut nodes[0], dir);
    let master = nodes[0].run_until("kvmaster", "ok ")[3..].to_owned();
    // Ready once every partition has a backup: before that a write is held by one worker.
    nodes[0].run_until("kvstatus", "ok 16/16 replicated");
    let first_token = master_token(&mut nodes[0]);
    // Drive from a node that is not the master's.
    let driver = nodes.iter().position(|n| n.name != master).unwrap();
    for i in 0..40 {
        let answer = nodes[driver].run(&format!("kvput k{i} v{i}"));
        assert_eq!(answer, "ok", "put k{i}");
    }

    let victim = nodes.iter().position(|n| n.name == master).unwrap();
    nodes[victim].kill();
    let driver = &mut nodes[driver];
    for i in 0..40 {
        assert_eq!(
            driver.run(&format!("kvget k{i}")),
            format!("ok v{i}"),
            "get k{i}"
        );
    }
    let moved = driver.run_until("kvmaster", "ok ");
    let deadline = std::time::Instant::now() + crate::util::DEADLINE;
    let mut now_at = moved[3..].to_owned();
    while now_at == master {
        assert!(
            std::time::Instant::now() < deadline,
            "the master stayed on {master}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        now_at = driver.run_until("kvmaster", "ok ")[3..].to_owned();
    }
    for i in 40..60 {
        assert_eq!(driver.run(&format!("kvput k{i} v{i}")), "ok", "put k{i}");
    }
    let token = master_token(driver);
    assert!(
        token > first_token,
        "the new master's orders carry fencing token {token}, not above the first's {first_token}"
    );
    for i in 0..60 {
        assert_eq!(
            driver.run(&format!("kvget k{i}")),
            format!("ok v{i}"),
            "get k{i}"
        );
    }
}
