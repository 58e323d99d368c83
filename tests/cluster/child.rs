//! A node in a child process, configured through the environment; it reports on stdout.
//!
//! Lines: `LISTENING <addr>` once listening, `JOINED` once joined, `JOIN-FAILED <error>` if
//! it could not join (then it exits with status 2), `EVENT <event>` per membership change. It
//! runs an [`Echo`] actor registered for other nodes as `echo`, and offers the module `echo`
//! (an `Echo` with the prefix given as argument) for remote spawns. It exits when its standard
//! input closes, so no child outlives its test.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use ensemble::cluster::Cluster;
use ensemble::transport::certs::NodeCert;
use ensemble::{Node, NodeConfig};

use crate::protocol::Echo;

pub(crate) const ENV_NAME: &str = "ENSEMBLE_TEST_NODE";
pub(crate) const ENV_CERTS: &str = "ENSEMBLE_TEST_CERTS";
pub(crate) const ENV_CLUSTER: &str = "ENSEMBLE_TEST_CLUSTER";
pub(crate) const ENV_SEEDS: &str = "ENSEMBLE_TEST_SEEDS";
pub(crate) const ENV_LOG: &str = "ENSEMBLE_TEST_LOG";

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub(crate) fn run() {
    let Ok(name) = std::env::var(ENV_NAME) else {
        return;
    };
    let certs = PathBuf::from(std::env::var(ENV_CERTS).expect("certificate dir"));
    let cluster_name = std::env::var(ENV_CLUSTER).unwrap_or_else(|_| "test".into());
    let seeds = crate::common::seeds_from_env(ENV_SEEDS);
    crate::common::log_from_env(ENV_LOG);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let node = Node::new(NodeConfig::new(&name)).expect("node");
        let cert = NodeCert::load(&certs, &name).expect("certificate");
        // Started without seeds and joined after subscribing, so no event is missed.
        let cluster = Cluster::start(&node, crate::util::test_config(&cluster_name), &cert)
            .await
            .expect("cluster service");
        let mut events = cluster.subscribe();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                say(&format!("EVENT {event:?}"));
            }
        });
        let echo = node.spawn(Echo::new(String::new())).expect("echo");
        node.register_remote("echo", &echo).expect("register echo");
        node.register_module("echo", Echo::new);
        say(&format!("LISTENING {}", cluster.local_addr()));
        if !seeds.is_empty() {
            match cluster.join(&seeds).await {
                Ok(()) => say("JOINED"),
                Err(err) => {
                    say(&format!("JOIN-FAILED {err}"));
                    std::process::exit(2);
                }
            }
        }
        // Stop when the parent goes away (its end of our stdin closes).
        tokio::task::spawn_blocking(|| {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                if line.is_err() {
                    break;
                }
            }
        })
        .await
        .ok();
    });
}
