//! An app on five nodes, two of them killed with `kill -9`, and a sixth joining.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{ChildNode, DEADLINE, certificates, one_cluster_at_a_time};

fn spec(dir: &Path, workers: usize) -> String {
    let history = dir.join("boss-history");
    format!(
        r#"
name = "probe"

[[roles]]
name = "boss"
module = "probe.boss"
singleton = true
global_name = "probe.boss"
args = {{ lock = "ensemble.singleton/probe/boss", history = "{history}" }}

[[roles]]
name = "worker"
module = "probe.worker"
instances = {workers}
min_instances = 3
global_name = "probe.worker.{{i}}"
placement = {{ anti_affinity = true, resources = {{ cpu = 300 }} }}

[[roles]]
name = "zoned"
module = "probe.worker"
instances = 2
placement = {{ labels = {{ zone = "two" }} }}
"#,
        history = history.display()
    )
}

fn deploy(node: &mut ChildNode, dir: &Path, workers: usize) {
    let path = dir.join(format!("probe-{workers}.toml"));
    std::fs::write(&path, spec(dir, workers)).expect("write the spec");
    assert_eq!(node.run(&format!("deploy {}", path.display())), "ok");
}

type Roles = BTreeMap<String, (BTreeMap<String, u64>, Option<String>)>;

/// A role's instances by node, and its problem, from `node`'s status of the app, waiting until
/// the node's copy of the registry has the (deployed) app.
fn roles(node: &mut ChildNode) -> Roles {
    let answer = node.run_until("status probe", "{");
    let status: Value = serde_json::from_str(&answer).expect("status JSON");
    status["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .map(|role| {
            let running = role["running"]
                .as_object()
                .expect("running")
                .iter()
                .map(|(n, c)| (n.clone(), c.as_u64().expect("count")))
                .collect();
            let problem = role["problem"].as_str().map(str::to_owned);
            (
                role["name"].as_str().expect("name").to_owned(),
                (running, problem),
            )
        })
        .collect()
}

/// Waits until every role runs its wanted count on `alive` nodes only, with the constraints
/// of the spec honoured, and every global name answering from a live node.
fn wait_shape(node: &mut ChildNode, alive: &[&str], workers: usize) {
    let zone_two: BTreeSet<&str> = alive
        .iter()
        .copied()
        .filter(|n| !["a", "b"].contains(n))
        .collect();
    let deadline = Instant::now() + DEADLINE;
    let mut last;
    loop {
        let roles = roles(node);
        let count = |role: &str| roles[role].0.values().sum::<u64>() as usize;
        let on_alive = roles
            .values()
            .all(|(running, _)| running.keys().all(|n| alive.contains(&n.as_str())));
        let anti = roles["worker"].0.values().all(|&c| c == 1);
        let zoned = roles["zoned"]
            .0
            .keys()
            .all(|n| zone_two.contains(n.as_str()));
        let shaped = count("boss") == 1 && count("worker") == workers && count("zoned") == 2;
        if shaped && on_alive && anti && zoned {
            let mut names: Vec<String> = vec!["probe.boss".into()];
            names.extend((0..workers).map(|i| format!("probe.worker.{i}")));
            let answers: Vec<String> = names
                .iter()
                .map(|n| node.run(&format!("ping {n}")))
                .collect();
            let live = answers.iter().all(|a| {
                a.strip_prefix("ok ")
                    .and_then(|rest| rest.split_whitespace().next())
                    .is_some_and(|n| alive.contains(&n))
            });
            if live {
                return;
            }
            last = format!("names: {answers:?}");
        } else {
            last = format!("roles: {roles:?}");
        }
        assert!(
            Instant::now() < deadline,
            "the app did not reach its shape on {alive:?}; last seen {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The node running the boss, as `node` reaches it through its name.
fn boss(node: &mut ChildNode) -> (String, u64) {
    let answer = node.run_until("ping probe.boss", "ok ");
    let mut words = answer.split_whitespace().skip(1);
    let name = words.next().expect("node").to_owned();
    let token = words.next().expect("token").parse().expect("token number");
    (name, token)
}

/// Boss instances as recorded: (token, node, up, down) in microseconds; a killed node's
/// instance ends at the kill.
fn boss_history(dir: &Path, kills: &BTreeMap<String, u128>) -> Vec<(u64, String, u128, u128)> {
    let text = std::fs::read_to_string(dir.join("boss-history")).unwrap_or_default();
    let mut ups: BTreeMap<u64, (String, u128)> = BTreeMap::new();
    let mut downs: BTreeMap<u64, u128> = BTreeMap::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (token, at): (u64, u128) = (w[1].parse().unwrap(), w[3].parse().unwrap());
        match w[0] {
            "up" => {
                ups.insert(token, (w[2].to_owned(), at));
            }
            _ => {
                downs.insert(token, at);
            }
        }
    }
    ups.into_iter()
        .map(|(token, (node, up))| {
            let down = downs
                .get(&token)
                .copied()
                .or_else(|| kills.get(&node).copied())
                .unwrap_or(u128::MAX);
            (token, node, up, down)
        })
        .collect()
}

#[test]
fn an_app_keeps_its_shape_as_nodes_die_and_join() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["a", "b", "c", "d", "e", "f"]);
    let dir = certs.path();
    let mut a = ChildNode::start("a", dir, &[], true);
    let seeds = vec![a.addr.clone()];
    let mut nodes: BTreeMap<String, ChildNode> = BTreeMap::new();
    for name in ["b", "c", "d", "e"] {
        nodes.insert(name.into(), ChildNode::start(name, dir, &seeds, false));
    }
    a.run_until("leader", "voters a,b,c");
    nodes.insert("a".into(), a);
    let mut alive: Vec<&str> = vec!["a", "b", "c", "d", "e"];
    let mut kills = BTreeMap::new();

    deploy(nodes.get_mut("a").unwrap(), dir, 3);
    wait_shape(nodes.get_mut("a").unwrap(), &alive, 3);
    let (first_boss, first_token) = boss(nodes.get_mut("a").unwrap());

    // First the boss's node, then a node that is not a registry voter (killing two of the
    // three voters would leave the registry without a majority).
    let second = ["d", "e"]
        .into_iter()
        .find(|n| *n != first_boss)
        .unwrap()
        .to_owned();
    let mut last_token = first_token;
    for victim in [first_boss.clone(), second] {
        nodes.get_mut(&victim).unwrap().kill();
        kills.insert(victim.clone(), crate::child::micros());
        alive.retain(|n| *n != victim);
        let observer = alive[0].to_owned();
        let observer = nodes.get_mut(&observer).unwrap();
        wait_shape(observer, &alive, 3);
        let (holder, token) = boss(observer);
        assert!(
            alive.contains(&holder.as_str()),
            "boss on dead node {holder}"
        );
        assert!(
            token >= last_token,
            "the boss's token went back: {token} < {last_token}"
        );
        last_token = token;
    }
    assert!(
        last_token > first_token,
        "the boss did not move with a new token"
    );

    // Singleton holders never overlapped, and each took over with a greater token.
    let history = boss_history(dir, &kills);
    assert!(history.len() >= 2, "boss history: {history:?}");
    for pair in history.windows(2) {
        let ((t1, n1, _, down1), (t2, n2, up2, _)) = (&pair[0], &pair[1]);
        assert!(t2 > t1);
        assert!(
            up2 > down1,
            "boss {t2} on {n2} started before boss {t1} on {n1} ended: {history:?}"
        );
    }

    // Four workers with anti-affinity on three nodes: one cannot be placed, which the status
    // says, until a node joins.
    let observer = alive[0].to_owned();
    deploy(nodes.get_mut(&observer).unwrap(), dir, 4);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let roles = roles(nodes.get_mut(&observer).unwrap());
        if let Some(problem) = &roles["worker"].1 {
            assert!(
                problem.contains("runs an instance of the role already"),
                "{problem}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no placement problem shown: {roles:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let seeds = vec![nodes[&observer].addr.clone()];
    nodes.insert("f".into(), ChildNode::start("f", dir, &seeds, false));
    alive.push("f");
    wait_shape(nodes.get_mut(&observer).unwrap(), &alive, 4);
    let roles = roles(nodes.get_mut(&observer).unwrap());
    assert_eq!(roles["worker"].0.get("f"), Some(&1), "{roles:?}");
    assert_eq!(roles["worker"].1, None, "{roles:?}");
}
