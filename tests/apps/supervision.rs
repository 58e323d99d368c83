//! A supervisor whose children are started from modules on other nodes: one pinned to a
//! node, one placed on any node of a zone and restarted on another when its node dies.

use std::time::{Duration, Instant};

use crate::util::{ChildNode, DEADLINE, certificates, one_cluster_at_a_time};

/// The node of child `id` in `children`'s answer (`id@node ...`).
fn node_of(children: &str, id: &str) -> String {
    children
        .split_whitespace()
        .find_map(|c| c.strip_prefix(&format!("{id}@")))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no child {id} in {children:?}"))
        .to_owned()
}

#[test]
fn module_children_are_placed_and_restarted_on_a_live_node() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["a", "b", "c", "d", "e"]);
    let dir = certs.path();
    let mut a = ChildNode::start("a", dir, &[], true);
    let seeds = vec![a.addr.clone()];
    let _b = ChildNode::start("b", dir, &seeds, false);
    let mut c = ChildNode::start("c", dir, &seeds, false);
    let mut d = ChildNode::start("d", dir, &seeds, false);
    a.run_until("leader", "voters a,b,c");

    // `later` is pinned to node e, which has not joined: it waits, without failing.
    assert_eq!(a.run("supervise b e"), "ok");
    let children = a.run("children");
    assert!(children.contains("later@-/Unplaced"), "{children}");
    assert_eq!(node_of(&children, "pinned"), "b", "{children}");
    let first = node_of(&children, "free");
    assert!(
        ["c", "d"].contains(&first.as_str()),
        "zone two only: {children}"
    );
    assert!(a.run_until("ping sup.free", "ok ").contains(&first));

    // Kill the free child's node: the supervisor restarts it on the other node of zone two.
    let other = if first == "c" { "d" } else { "c" };
    if first == "c" {
        c.kill()
    } else {
        d.kill()
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        let children = a.run("children");
        let now = node_of(&children, "free");
        if now == other {
            assert_eq!(node_of(&children, "pinned"), "b", "{children}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "child not restarted on {other}: {children}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = a.run_until("ping sup.free", &format!("ok {other}"));
    assert!(answer.starts_with(&format!("ok {other}")), "{answer}");

    // Node e joins: the child waiting for it starts there.
    let _e = ChildNode::start("e", dir, &seeds, false);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let children = a.run("children");
        if node_of(&children, "later") == "e" {
            assert!(children.contains("later@e/Running"), "{children}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "child not placed on e: {children}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Negotiation: ten copies, one per node (anti-affinity). Accepting six fails and keeps
    // none; accepting two takes the four live nodes, one each.
    let refused = a.run("negotiate more 10 6");
    assert!(
        refused.starts_with("err only 4 of 10 copies of child \"more\" could be placed"),
        "{refused}"
    );
    assert!(!a.run("children").contains("more-"));
    let alive = if first == "c" { "a,b,d,e" } else { "a,b,c,e" };

    // An app role whose instances fail to start gives up after its restart intensity, says so
    // in the app's status, and goes when the app is removed.
    let spec = dir.join("crashy.toml");
    std::fs::write(
        &spec,
        "name = \"crashy\"\n[[roles]]\nname = \"r\"\nmodule = \"probe.worker\"\n\
         args = { fail = true }\nrestart = { max_restarts = 2, within_secs = 60 }\n",
    )
    .unwrap();
    assert_eq!(a.run(&format!("deploy {}", spec.display())), "ok");
    assert_eq!(a.run("list"), "ok crashy");
    let status = a.run_until("status crashy", "{");
    let deadline = Instant::now() + DEADLINE;
    let mut status = status;
    while !status.contains("gave up: more than 2 restarts within 60 s") {
        assert!(
            Instant::now() < deadline,
            "the role did not give up: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
        status = a.run("status crashy");
    }
    // A role dropped from a deployed app is stopped.
    let two = |roles: &str| {
        let path = dir.join(format!("two-{roles}.toml"));
        let mut text = String::from("name = \"two\"\n");
        for role in roles.chars() {
            text.push_str(&format!(
                "[[roles]]\nname = \"{role}\"\nmodule = \"probe.worker\"\nglobal_name = \"two.{role}\"\n"
            ));
        }
        std::fs::write(&path, text).unwrap();
        format!("deploy {}", path.display())
    };
    assert_eq!(a.run(&two("xy")), "ok");
    a.run_until("ping two.x", "ok ");
    a.run_until("ping two.y", "ok ");
    assert_eq!(a.run(&two("x")), "ok");
    a.run_until("ping two.y", "none");
    assert!(a.run("ping two.x").starts_with("ok "));
    assert_eq!(a.run("remove two"), "ok true");
    a.run_until("ping two.x", "none");

    assert_eq!(a.run("remove crashy"), "ok true");
    assert_eq!(a.run("list"), "ok ");
    assert_eq!(a.run("remove crashy"), "ok false");
    a.run_until("status crashy", "none");
    assert_eq!(a.run("negotiate many 10 2"), format!("granted 4 {alive}"));
    let children = a.run("children");
    assert_eq!(children.matches("many-").count(), 4, "{children}");
}
