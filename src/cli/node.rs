//! `ensemble node`: run a node until Ctrl-C, SIGTERM (or, for child nodes of the demo, the
//! end of standard input), then leave the cluster on purpose.
//!
//! On standard output it prints one line per stage as it starts, and these lines, which the
//! demo and the tests read: `node NAME: cluster address ADDR`, `node NAME: admin URL` and
//! `node NAME: ready`. A start that takes long (a registry without a quorum to join) says
//! `node NAME: still starting after N s` every 5 s meanwhile. Logs go to standard error.

use std::io::Write;

use clap::ArgMatches;
use ensemble::host::{Host, HostConfig};
use ensemble::transport::certs::NodeCert;

use super::CliResult;
use super::config::{self, NodeArgs};
use super::progress::{PROGRESS_EVERY, with_progress};

/// Prints a line on standard output at once (a supervisor reading it waits for each).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub(crate) fn run(args: NodeArgs, matches: &ArgMatches) -> CliResult {
    let settings = config::resolve(&args, matches)?;
    // Before anything records a metric, so that `/metrics` shows everything from the start.
    ensemble::admin::install_metrics_recorder();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&settings.log))
        .with_writer(std::io::stderr)
        .init();
    let cert = NodeCert::load(&settings.certs, &settings.name)
        .map_err(|e| format!("certs (directory {}): {e}", settings.certs.display()))?;
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        format!(
            "data_dir: cannot create {}: {e}",
            settings.data_dir.display()
        )
    })?;

    let name = settings.name.clone();
    let mut config = HostConfig::new(settings.name, cert, &settings.data_dir);
    config.cluster = settings.cluster;
    config.listen = settings.listen;
    config.seeds = settings.join.clone();
    config.registry = settings.registry;
    config.resources = settings.resources;
    config.labels = settings.labels;
    config.apps = settings.apps;
    config.admin = settings.admin;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        if settings.join.is_empty() {
            say(&format!(
                "node {name}: starting a new cluster {:?} (no --join given)",
                config.cluster
            ));
        } else {
            let seeds: Vec<String> = settings.join.iter().map(|s| s.to_string()).collect();
            say(&format!(
                "node {name}: joining through {}",
                seeds.join(", ")
            ));
        }
        // Joining a cluster whose registry has no quorum waits for it, up to six request
        // timeouts (30 s by default).
        let host = with_progress(Host::start(config, |_| {}), PROGRESS_EVERY, |waited| {
            say(&format!(
                "node {name}: still starting after {} s (joining the cluster and its registry)",
                waited.as_secs()
            ))
        })
        .await
        .map_err(|e| e.to_string())?;
        say(&format!(
            "node {name}: cluster address {}",
            host.cluster.local_addr()
        ));
        if let Some(admin) = &host.admin {
            say(&format!(
                "node {name}: admin http://{}/",
                admin.local_addr()
            ));
        }
        say(&format!(
            "node {name}: ready; registry leader {} (Ctrl-C to leave the cluster and stop)",
            host.registry
                .leader()
                .unwrap_or_else(|| "not known yet".into())
        ));

        let registry = host.registry.clone();
        let expired = async move {
            // The cluster declared this node down (its session expired while it was cut
            // off): it cannot rejoin as this incarnation. Exit with an error, so that
            // whatever supervises the process (systemd, a container runtime) starts it again
            // as a new incarnation.
            while !registry.is_expired() {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            reason = stop_signal(args.exit_with_stdin) => {
                say(&format!("node {name}: {reason}; leaving the cluster"));
                // A voter hands its registry vote over first, which may take seconds.
                let leaving = with_progress(host.stop(), PROGRESS_EVERY, |waited| {
                    say(&format!(
                        "node {name}: still leaving after {} s (handing its registry vote over, \
                         ending the actors bound to its locks, closing its session); \
                         Ctrl-C again to exit at once",
                        waited.as_secs()
                    ))
                });
                tokio::select! {
                    () = leaving => {}
                    // A second Ctrl-C or SIGTERM (not the end of standard input, which came
                    // already if that was the first reason).
                    reason = stop_signal(false) => {
                        say(&format!(
                            "node {name}: {reason} again; exiting without finishing the leave \
                             (its registry session expires after its TTL)"
                        ));
                        std::process::exit(130);
                    }
                }
                say(&format!("node {name}: stopped"));
                Ok(())
            }
            () = expired => {
                host.stop().await;
                Err(format!(
                    "node {name}: the cluster declared this node down (its registry session expired, \
                     probably while it was cut off); start it again to rejoin as a new incarnation"
                ))
            }
        }
    })
}

/// Waits for a reason to stop: Ctrl-C, SIGTERM, or (if asked) the end of standard input.
async fn stop_signal(exit_with_stdin: bool) -> &'static str {
    let stdin_closed = async {
        if !exit_with_stdin {
            return std::future::pending().await;
        }
        // Read on a thread of its own, not tokio's (`tokio::io::stdin` reads on its blocking
        // pool): a read there cannot be cancelled, and the runtime would wait for it at exit,
        // so a node stopped by a signal with its standard input still open would never exit.
        let (closed, on_close) = tokio::sync::oneshot::channel::<()>();
        let reader = std::thread::Builder::new()
            .name("stdin-watch".into())
            .spawn(move || {
                let mut buf = [0u8; 64];
                let mut stdin = std::io::stdin();
                loop {
                    match std::io::Read::read(&mut stdin, &mut buf) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = closed.send(());
            });
        match reader {
            Ok(_) => {
                let _ = on_close.await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch standard input; stop the node with a signal");
                std::future::pending::<()>().await;
            }
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        () = terminate => "terminated",
        () = stdin_closed => "standard input closed",
    }
}
