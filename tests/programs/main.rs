//! Supervised OS processes: programs run by actors under supervisors and in app roles. A
//! program killed from outside comes back with a new pid; one whose health check starts
//! failing is restarted; one that ignores its stop signal is killed after its stop timeout;
//! what a program started in its process group ends with it, and its health checks end with
//! its actor, killed; output that is not text does
//! not kill it; a command that does not exist fails to start with an error naming it; an app
//! role running
//! `python3 -m http.server` is placed on two nodes and serves on both.

use std::path::Path;
use std::time::Duration;

use ensemble::host::{Host, HostConfig};
use ensemble::prelude::*;
use ensemble::supervisor::app::{AppSpec, Apps, role_group};
use ensemble::supervisor::program::{self, HealthCheck, ProgramInfo, ProgramMsg, ProgramSpec};
use ensemble::supervisor::{ChildSpec, SupervisorRef, SupervisorSpec};
use ensemble::transport::certs::ClusterCa;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(60);

/// Whether a process with this pid exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

async fn info(actor: &ActorRef<ProgramMsg>) -> Option<ProgramInfo> {
    actor
        .ask(ProgramMsg::Info, Duration::from_secs(5))
        .await
        .ok()
}

/// The program running as child `id` of `supervisor`, once it runs.
async fn running(supervisor: &SupervisorRef, id: &str) -> (ActorRef<ProgramMsg>, ProgramInfo) {
    let deadline = Instant::now() + WAIT;
    loop {
        let children = supervisor.which_children().await.expect("children");
        let actor = children
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.actor.as_ref())
            .and_then(|a| a.downcast::<ProgramMsg>());
        if let Some(actor) = actor
            && let Some(info) = info(&actor).await
        {
            return (actor, info);
        }
        assert!(Instant::now() < deadline, "child {id} never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until child `id` runs a program with another pid than `old`.
async fn restarted(supervisor: &SupervisorRef, id: &str, old: u32) -> ProgramInfo {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, info) = running(supervisor, id).await;
        if info.pid != old && alive(info.pid) {
            return info;
        }
        assert!(Instant::now() < deadline, "child {id} was not restarted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `done` holds; fails the test saying `what` did not happen after [`WAIT`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn supervise(node: &Node, child: ChildSpec) -> SupervisorRef {
    program::register(node);
    SupervisorRef::start(
        node,
        SupervisorSpec::new("programs")
            .intensity(20, Duration::from_secs(60))
            .child(child),
    )
    .await
    .expect("supervisor starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_program_is_restarted_with_a_new_pid() {
    let node = Node::new(NodeConfig::new("p1")).unwrap();
    let spec = ProgramSpec::new("sleep", &["1000"]);
    let supervisor = supervise(&node, ChildSpec::program("sleeper", &spec)).await;
    let (_, first) = running(&supervisor, "sleeper").await;
    assert!(alive(first.pid));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let second = restarted(&supervisor, "sleeper", first.pid).await;
    assert!(!alive(first.pid));

    supervisor.stop();
    supervisor.wait_for_exit().await;
    assert!(!alive(second.pid), "the program outlived its supervisor");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_restarts_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    std::fs::write(&ready, b"").unwrap();
    let mut spec = ProgramSpec::new("sleep", &["1000"]);
    spec.health = Some(HealthCheck {
        tcp: None,
        http: None,
        exec: Some(vec![
            "test".into(),
            "-f".into(),
            ready.to_str().unwrap().into(),
        ]),
        interval_ms: 50,
        timeout_ms: 2_000,
        grace_ms: 50,
        failures: 2,
    });
    let node = Node::new(NodeConfig::new("p2")).unwrap();
    let supervisor = supervise(&node, ChildSpec::program("checked", &spec)).await;
    let (_, first) = running(&supervisor, "checked").await;

    std::fs::remove_file(&ready).unwrap();
    wait_until("the unhealthy program was not stopped", || {
        !alive(first.pid)
    })
    .await;
    // Healthy again: the restarted program stays.
    std::fs::write(&ready, b"").unwrap();
    let second = restarted(&supervisor, "checked", first.pid).await;
    assert!(alive(second.pid));

    supervisor.stop();
    supervisor.wait_for_exit().await;
    node.shutdown().await;
}

/// A program actor killed (its `stopped` hook does not run) takes its health checker with it:
/// the checker used to run on for good while its target stayed healthy, here an exec check
/// that writes a line each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_program_actor_s_health_checks_end_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let checks = dir.path().join("checks");
    let mut spec = ProgramSpec::new("sleep", &["1000"]);
    spec.health = Some(HealthCheck {
        tcp: None,
        http: None,
        exec: Some(vec![
            "sh".into(),
            "-c".into(),
            format!("echo >> {}", checks.display()),
        ]),
        interval_ms: 20,
        timeout_ms: 2_000,
        grace_ms: 0,
        failures: 3,
    });
    let node = Node::new(NodeConfig::new("p6")).unwrap();
    program::register(&node);
    let actor = node.spawn(program::Program::new(spec)).unwrap();
    let lines = || {
        std::fs::read_to_string(&checks)
            .map(|text| text.lines().count())
            .unwrap_or(0)
    };
    wait_until("the health check never ran", || lines() >= 3).await;
    actor.kill();
    actor.wait_for_exit().await;
    // Ten intervals without a check (one may have been under way at the kill).
    let deadline = Instant::now() + WAIT;
    let mut seen = lines();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = lines();
        if now == seen {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed program's health check still runs ({now} checks)"
        );
        seen = now;
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_ignoring_its_stop_signal_is_killed_after_the_timeout() {
    let mut spec = ProgramSpec::new("sh", &["-c", "trap '' TERM; sleep 1000"]);
    spec.stop_timeout_ms = 300;
    let node = Node::new(NodeConfig::new("p3")).unwrap();
    let supervisor = supervise(&node, ChildSpec::program("stubborn", &spec)).await;
    let (_, info) = running(&supervisor, "stubborn").await;

    supervisor.terminate_child("stubborn").await.unwrap();
    // terminate_child returns once the actor ended, which waits for the program.
    assert!(!alive(info.pid), "the program survived its stop");

    supervisor.stop();
    supervisor.wait_for_exit().await;
    node.shutdown().await;
}

/// The program's shell ends at once on its stop signal; what it started in the background
/// ignores it, and is killed after the stop timeout with the rest of the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_program_started_ends_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("background.pid");
    let script = format!(
        "(trap '' TERM; exec sleep 1000) & echo $! > {}; wait",
        pid_file.display()
    );
    let mut spec = ProgramSpec::new("sh", &["-c", &script]);
    spec.stop_timeout_ms = 300;
    let node = Node::new(NodeConfig::new("p5")).unwrap();
    let supervisor = supervise(&node, ChildSpec::program("wrapper", &spec)).await;
    let (_, info) = running(&supervisor, "wrapper").await;
    let mut background = 0;
    wait_until("the script never started its background process", || {
        background = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        background != 0
    })
    .await;
    assert!(alive(background));

    supervisor.terminate_child("wrapper").await.unwrap();
    assert!(!alive(info.pid), "the program survived its stop");
    // Killed before terminate_child returned; the kernel may take a moment to reap it.
    wait_until("what the program started outlived it", || {
        !alive(background)
    })
    .await;

    supervisor.stop();
    supervisor.wait_for_exit().await;
    node.shutdown().await;
}

/// A line that is not UTF-8, then more output than a pipe holds: all of it is read, so the
/// program is not killed by a closed pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_is_not_text_does_not_kill_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("wrote-everything");
    let script = format!(
        "set -e; printf '\\377\\376 not text\\n'; head -c 1000000 /dev/zero; touch {}; exec sleep 1000",
        mark.display()
    );
    let spec = ProgramSpec::new("sh", &["-c", &script]);
    let node = Node::new(NodeConfig::new("p6")).unwrap();
    let supervisor = supervise(&node, ChildSpec::program("binary", &spec)).await;
    let (_, first) = running(&supervisor, "binary").await;
    wait_until(
        "the program never got its output out (killed by a closed pipe?)",
        || mark.exists(),
    )
    .await;
    let (_, now) = running(&supervisor, "binary").await;
    assert_eq!(now.pid, first.pid, "the program was restarted");
    assert!(alive(first.pid));

    supervisor.stop();
    supervisor.wait_for_exit().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_command_fails_to_start_naming_it() {
    let node = Node::new(NodeConfig::new("p4")).unwrap();
    program::register(&node);
    let supervisor = SupervisorRef::start(&node, SupervisorSpec::new("programs"))
        .await
        .unwrap();
    let spec = ProgramSpec::new("/nonexistent/ensemble-test-program", &[]);
    let err = supervisor
        .start_child(ChildSpec::program("missing", &spec))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/ensemble-test-program"),
        "the error names the command: {err}"
    );
    supervisor.stop();
    node.shutdown().await;
}

async fn host(name: &str, ca: &ClusterCa, dir: &Path, seed: Option<std::net::SocketAddr>) -> Host {
    let mut config = HostConfig::new(name, ca.issue(name).unwrap(), dir.join(name));
    config.cluster = "programs".into();
    config.seeds = seed.into_iter().collect();
    Host::start(config, |_| {}).await.expect("host starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_role_runs_a_web_server_on_two_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("programs").unwrap();
    let first = host("w1", &ca, dir.path(), None).await;
    let second = host("w2", &ca, dir.path(), Some(first.cluster.local_addr())).await;

    let spec = AppSpec::from_toml(
        r#"
        name = "web"

        [[roles]]
        name = "http"
        instances = 2
        placement = { anti_affinity = true }
        program = { command = "python3", args = ["-m", "http.server", "--bind", "127.0.0.1", "{port}"], stop_timeout_ms = 2000, health = { http = "http://127.0.0.1:{port}/", interval_ms = 200, grace_ms = 2000, failures = 10 } }
        "#,
    )
    .expect("a valid spec");
    Apps::new(&first.node).unwrap().deploy(&spec).await.unwrap();

    let group = role_group("web", "http");
    let deadline = Instant::now() + WAIT;
    let servers = loop {
        let members = first.registry.group::<ProgramMsg>(&group);
        let nodes: std::collections::BTreeSet<String> = members
            .iter()
            .map(|m| m.id().node().name().to_owned())
            .collect();
        if members.len() == 2 && nodes.len() == 2 {
            break members;
        }
        assert!(
            Instant::now() < deadline,
            "the role did not reach 2 instances"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for server in &servers {
        let info = info(server).await.expect("the program answers");
        let port = info.port.expect("{port} was given");
        let url = format!("http://127.0.0.1:{port}/");
        let deadline = Instant::now() + WAIT;
        let status = loop {
            let target = url.clone();
            let got = tokio::task::spawn_blocking(move || {
                ureq::get(&target).call().map(|r| r.status().as_u16())
            })
            .await
            .unwrap();
            match got {
                Ok(status) => break status,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{url} never answered: {e}"),
            }
        };
        assert_eq!(status, 200, "{url}");
    }
    let pids: Vec<u32> = {
        let mut pids = Vec::new();
        for server in &servers {
            pids.push(info(server).await.unwrap().pid);
        }
        pids
    };

    assert!(Apps::new(&first.node).unwrap().remove("web").await.unwrap());
    let deadline = Instant::now() + WAIT;
    while pids.iter().any(|pid| alive(*pid)) {
        assert!(
            Instant::now() < deadline,
            "removing the app left a server running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.stop().await;
    first.stop().await;
}
