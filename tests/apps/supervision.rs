//! A supervisor whose children are started from modules on other nodes: one pinned to a
//! node, one placed on any node of a zone and restarted on another when its node dies.

use std::path::Path;
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

/// Nodes a, b, c and d of one cluster (a, b and c its voters, with a leader), and the seeds
/// that join it.
fn four_nodes(dir: &Path) -> ([ChildNode; 4], Vec<String>) {
    let mut a = ChildNode::start("a", dir, &[], true);
    let seeds = vec![a.addr.clone()];
    let b = ChildNode::start("b", dir, &seeds, false);
    let c = ChildNode::start("c", dir, &seeds, false);
    let d = ChildNode::start("d", dir, &seeds, false);
    a.run_until("leader", "voters a,b,c");
    ([a, b, c, d], seeds)
}

#[test]
fn module_children_are_placed_and_restarted_on_a_live_node() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["a", "b", "c", "d", "e"]);
    let dir = certs.path();
    let ([mut a, _b, mut c, mut d], seeds) = four_nodes(dir);

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
    let other = kill_one_of(&first, &mut c, &mut d);
    let children = ask_until(&mut a, "children", |children| {
        node_of(children, "free") == other
    });
    assert_eq!(node_of(&children, "pinned"), "b", "{children}");
    let answer = a.run_until("ping sup.free", &format!("ok {other}"));
    assert!(answer.starts_with(&format!("ok {other}")), "{answer}");

    // Node e joins: the child waiting for it starts there.
    let _e = ChildNode::start("e", dir, &seeds, false);
    let children = ask_until(&mut a, "children", |children| {
        node_of(children, "later") == "e"
    });
    assert!(children.contains("later@e/Running"), "{children}");

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
    ask_until(&mut a, "status crashy", |status| {
        status.contains("gave up: more than 2 restarts within 60 s")
    });
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

/// A node's death is one failure: a supervisor with the default intensity (1 restart in 5 s)
/// whose two children ran on a node that dies restarts both elsewhere instead of giving up.
#[test]
fn the_children_of_a_dead_node_count_as_one_restart() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["a", "b", "c", "d"]);
    let dir = certs.path();
    let ([mut a, _b, mut c, mut d], _) = four_nodes(dir);

    assert_eq!(a.run("supervise-pair"), "ok");
    let children = a.run("children pair");
    let first = node_of(&children, "one");
    assert_eq!(node_of(&children, "two"), first, "{children}");
    let other = kill_one_of(&first, &mut c, &mut d);
    let wanted = [
        format!("one@{other}/Running"),
        format!("two@{other}/Running"),
    ];
    ask_until(&mut a, "children pair", |children| {
        assert!(
            !children.starts_with("err"),
            "the supervisor gave up: {children}"
        );
        wanted.iter().all(|w| children.contains(w.as_str()))
    });
}

/// Rest-for-one across nodes: a child waiting for a node that joins while the sibling before
/// it waits out its restart backoff starts only after that sibling, as the strategy orders.
#[test]
fn a_waiting_child_does_not_start_before_the_sibling_it_depends_on() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["a", "b", "c", "d", "e"]);
    let dir = certs.path();
    let ([mut a, _b, mut c, mut d], seeds) = four_nodes(dir);

    assert_eq!(a.run("supervise-rest e"), "ok");
    let children = a.run("children rest");
    assert!(children.contains("second@-/Unplaced"), "{children}");
    let first = node_of(&children, "first");
    // `first` ends with its node and restarts after its backoff (4 s); `second`'s node joins
    // meanwhile.
    kill_one_of(&first, &mut c, &mut d);
    ask_until(&mut a, "children rest", |children| {
        children.contains("first@-/Restarting")
    });
    let _e = ChildNode::start("e", dir, &seeds, false);
    ask_until(&mut a, "children rest", |children| {
        let running = |id: &str| {
            children
                .split_whitespace()
                .any(|c| c.starts_with(&format!("{id}@")) && c.ends_with("/Running"))
        };
        assert!(
            running("first") || !running("second"),
            "second started before first: {children}"
        );
        running("first") && running("second")
    });
}

/// Kills `first` of the nodes c and d (zone two); answers the other.
fn kill_one_of(first: &str, c: &mut ChildNode, d: &mut ChildNode) -> &'static str {
    if first == "c" {
        c.kill();
        "d"
    } else {
        d.kill();
        "c"
    }
}

/// Runs `command` on `node` until `done` holds for its answer, which it returns; fails the
/// test with the last answer after the deadline.
fn ask_until(node: &mut ChildNode, command: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = node.run(command);
        if done(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "`{command}` never answered as awaited: {answer}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
