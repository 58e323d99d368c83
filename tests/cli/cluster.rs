//! Two nodes started with `ensemble node` as separate processes, looked at and changed with
//! the client commands through their admin APIs, then stopped with SIGTERM.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{Running, app_deploy, command, run, stderr, stdout};

const WAIT: Duration = Duration::from_secs(60);

/// An `ensemble node` process and the addresses it printed.
struct NodeProcess {
    process: Running,
    cluster: String,
    admin: String,
}

fn start_node(dir: &Path, name: &str, extra: &[&str]) -> NodeProcess {
    // The CA and node certificates are in the test's directory itself.
    let certs = dir.to_path_buf();
    let data = dir.join(name);
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    let mut args = vec![
        "node",
        "--name",
        name,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--certs",
        certs.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut cmd = command(&args, &[]);
    cmd.stderr(log);
    if extra.contains(&"--exit-with-stdin") {
        // Held open by the test for as long as the process runs: a signal must stop the node
        // all the same.
        cmd.stdin(std::process::Stdio::piped());
    }
    let mut process = Running::start(cmd);
    let cluster = process.wait_for_line("cluster address", WAIT);
    let admin = process.wait_for_line(": admin http://", WAIT);
    process.wait_for_line(": ready", WAIT);
    NodeProcess {
        process,
        cluster: cluster.rsplit(' ').next().unwrap().to_owned(),
        admin: admin.rsplit(' ').next().unwrap().to_owned(),
    }
}

/// Runs a client command against `admin` until `check` accepts its standard output.
fn until_output(args: &[&str], admin: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut full = args.to_vec();
        full.extend_from_slice(&["--admin", admin]);
        let output = run(&full, &[], None);
        let text = stdout(&output);
        if output.status.success() && check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "`ensemble {}` never gave the expected output; last:\n{text}\n{}",
            args.join(" "),
            stderr(&output)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_cluster_of_node_processes_is_driven_by_the_client_commands() {
    let dir = crate::common::certificates(&["n1", "n2"]);
    let dir = dir.path();
    let n1 = start_node(dir, "n1", &[]);
    let join = format!("--join={}", n1.cluster);
    let mut n2 = start_node(
        dir,
        "n2",
        &[&join, "--admin-token", "secret-token", "--exit-with-stdin"],
    );

    // Both with sessions, both voters (the registry takes voters up to three).
    let members = until_output(&["members"], &n1.admin, |text| {
        text.lines()
            .filter(|l| l.contains(" open ") && l.contains(" yes "))
            .count()
            == 2
    });
    assert!(members.starts_with("NODE"), "{members}");
    assert!(
        members.lines().next().unwrap().contains("VOTER"),
        "{members}"
    );
    assert!(
        members.contains("n1") && members.contains("n2"),
        "{members}"
    );
    let json = until_output(&["members", "--json"], &n1.admin, |_| true);
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    assert_eq!(parsed.as_array().map(Vec::len), Some(2), "{json}");

    let status = until_output(&["status"], &n1.admin, |t| t.contains("voters n1,n2,"));
    assert!(status.contains("n1") && status.contains("2 up"), "{status}");

    // The second node requires its token.
    let refused = run(&["members", "--admin", &n2.admin], &[], None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("--token"), "{}", stderr(&refused));
    let allowed = run(
        &["members", "--admin", &n2.admin],
        &[("ENSEMBLE_ADMIN_TOKEN", "secret-token")],
        None,
    );
    assert!(allowed.status.success(), "{}", stderr(&allowed));

    // An app: deployed, listed, its name and lock visible, removed.
    let spec = dir.join("kv.toml");
    std::fs::write(
        &spec,
        "name = \"kv\"\n\n[[roles]]\nname = \"master\"\nmodule = \"kv.master\"\nsingleton = true\n\
         global_name = \"kv.master\"\n\n[[roles]]\nname = \"worker\"\nmodule = \"kv.worker\"\n\
         instances = 2\nplacement = { anti_affinity = true }\n",
    )
    .unwrap();
    let deploy = app_deploy(&spec, &n1.admin, &[]);
    assert!(deploy.status.success(), "{}", stderr(&deploy));
    assert!(
        stdout(&deploy).contains("app kv running"),
        "{}",
        stdout(&deploy)
    );
    assert!(
        stderr(&deploy).contains("worker"),
        "progress: {}",
        stderr(&deploy)
    );

    let list = until_output(&["app", "list"], &n1.admin, |t| t.contains("2/2"));
    assert!(list.contains("master") && list.contains("1/1"), "{list}");
    until_output(&["names"], &n1.admin, |t| t.contains("kv.master"));
    until_output(&["locks"], &n1.admin, |t| {
        t.contains("ensemble.singleton/kv/master")
    });

    let removed = run(&["app", "remove", "kv", "--admin", &n1.admin], &[], None);
    assert!(removed.status.success(), "{}", stderr(&removed));
    let again = run(&["app", "remove", "kv", "--admin", &n1.admin], &[], None);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("no app named kv"),
        "{}",
        stderr(&again)
    );

    // SIGTERM: each node leaves the cluster and exits 0 (n2 with its standard input, which it
    // also watches, still open).
    let mut n1 = n1;
    for node in [&mut n2, &mut n1] {
        node.process.signal(Signal::SIGTERM);
        let status = node.process.wait(WAIT);
        assert!(status.success(), "exit status {status}");
        let rest = node.process.rest(WAIT);
        assert!(
            rest.iter().any(|l| l.contains("stopped")),
            "{:?}",
            node.process.seen
        );
    }
}

/// `ensemble voters count`: a count the registry does not keep is refused at parsing; two
/// voters out of one (n2 takes the second vote), then one again (the leader keeps its vote).
#[test]
fn the_registry_voter_count_is_set_with_voters_count() {
    let certs = crate::common::certificates(&["n1", "n2"]);
    let [n1, n2] = two_nodes_one_voter(certs.path());

    for bad in ["0", "10", "three"] {
        let refused = run(&["voters", "count", bad, "--admin", &n1.admin], &[], None);
        assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));
        assert!(stderr(&refused).contains(bad), "{}", stderr(&refused));
    }

    let grown = run(&["voters", "count", "2", "--admin", &n2.admin], &[], None);
    assert!(grown.status.success(), "{}", stderr(&grown));
    assert!(
        stdout(&grown).contains("the registry keeps 2 voters: n1, n2"),
        "{}",
        stdout(&grown)
    );
    until_output(&["status"], &n2.admin, |t| {
        t.contains("voters n1,n2 (2 kept")
    });
    assert!(
        stderr(&grown).contains("with two, neither may be lost"),
        "{}",
        stderr(&grown)
    );
    let shrunk = run(&["voters", "count", "1", "--admin", &n1.admin], &[], None);
    assert!(shrunk.status.success(), "{}", stderr(&shrunk));
    let kept = if stdout(&shrunk).contains("the registry keeps 1 voter: n1 ") {
        0
    } else {
        1
    };
    let name = ["n1", "n2"][kept];
    assert!(
        stdout(&shrunk).contains(&format!("the registry keeps 1 voter: {name} ")),
        "{}",
        stdout(&shrunk)
    );
    // The leader keeps its vote (n1, unless an election came between).
    until_output(&["status"], &n1.admin, |t| {
        t.contains(&format!("leader {name}, voters {name} (1 kept"))
    });
    // The registry still writes: an app deploys through the node that gave its vote up.
    deploys_and_stops(certs.path(), 1 - kept, [n1, n2]);
}

#[test]
fn a_registry_vote_is_moved_by_hand_with_voters_move() {
    let certs = crate::common::certificates(&["n1", "n2"]);
    let [n1, n2] = two_nodes_one_voter(certs.path());

    let refused = run(
        &["voters", "move", "n2", "n1", "--admin", &n1.admin],
        &[],
        None,
    );
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("node n2 does not vote"),
        "{}",
        stderr(&refused)
    );
    let same = run(
        &["voters", "move", "n1", "n1", "--admin", &n1.admin],
        &[],
        None,
    );
    assert_eq!(same.status.code(), Some(1));
    assert!(stderr(&same).contains("both"), "{}", stderr(&same));

    // The only voter's vote, so the leader's: n2 takes it and leads.
    let moved = run(
        &["voters", "move", "n1", "n2", "--admin", &n1.admin],
        &[],
        None,
    );
    assert!(moved.status.success(), "{}", stderr(&moved));
    assert!(
        stdout(&moved).contains("moved to node n2") && stdout(&moved).contains("the voters are n2"),
        "{}",
        stdout(&moved)
    );
    until_output(&["status"], &n2.admin, |t| {
        t.contains("leader n2, voters n2,")
    });
    // The registry still writes: an app deploys through the node that lost its vote.
    deploys_and_stops(certs.path(), 0, [n1, n2]);
}

/// Two `ensemble node` processes, n1 and n2, with one registry voter (n1), so that n2 is a
/// node without a vote; returned once both have sessions and n1 is named the voter.
fn two_nodes_one_voter(dir: &Path) -> [NodeProcess; 2] {
    let config = dir.join("one-voter.toml");
    std::fs::write(&config, "[registry]\nvoters = 1\n").unwrap();
    let config = config.to_str().unwrap();
    let n1 = start_node(dir, "n1", &["--config", config]);
    let join = format!("--join={}", n1.cluster);
    let n2 = start_node(dir, "n2", &[&join, "--config", config]);
    until_output(&["members"], &n1.admin, |text| {
        text.lines().filter(|l| l.contains(" open ")).count() == 2
    });
    until_output(&["status"], &n1.admin, |t| t.contains("voters n1,"));
    [n1, n2]
}

/// Deploys an app of one singleton through `nodes[through]` (so the registry writes), then
/// stops `nodes` with SIGTERM: each must exit cleanly.
fn deploys_and_stops(dir: &Path, through: usize, nodes: [NodeProcess; 2]) {
    let spec = dir.join("kv.toml");
    std::fs::write(
        &spec,
        "name = \"kv\"\n\n[[roles]]\nname = \"master\"\nmodule = \"kv.master\"\nsingleton = true\n",
    )
    .unwrap();
    let deploy = app_deploy(&spec, &nodes[through].admin, &[]);
    assert!(deploy.status.success(), "{}", stderr(&deploy));
    for mut node in nodes {
        node.process.signal(Signal::SIGTERM);
        let status = node.process.wait(WAIT);
        assert!(status.success(), "exit status {status}");
    }
}
