//! The Prometheus exporter behind `/metrics`: one recorder for the whole process.
//!
//! The `metrics` facade has one global recorder per process, set once. The first admin server
//! to start (or a program calling [`install_metrics_recorder`] early, so that nothing recorded
//! before the admin server starts is lost) installs a Prometheus recorder; every admin server
//! of the process then renders it. When the program installed another recorder first, there
//! is nothing to render and `/metrics` says so (`503`).
//!
//! Histograms are kept as summaries; their samples are folded in at every scrape and, so that
//! they do not pile up between scrapes, every few seconds by an upkeep thread.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// How often the upkeep thread folds histogram samples in.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The outcome of the one attempt to install the recorder: its handle, or why not.
static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the admin server's Prometheus recorder as the process's `metrics` recorder, if no
/// recorder is installed yet; [`AdminServer::start`](super::AdminServer::start) does it too.
/// Call it early to keep what is recorded before the admin server starts. Returns whether
/// `/metrics` can export (false: another recorder was installed first).
pub fn install_metrics_recorder() -> bool {
    handle().is_ok()
}

/// The recorder's handle, installing it on the first call; or why there is none.
pub(crate) fn handle() -> Result<&'static PrometheusHandle, &'static str> {
    RECORDER
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    start_upkeep(handle.clone());
                    Ok(handle)
                }
                Err(_) => Err("another metrics recorder was installed in this process before the admin server's, so /metrics has nothing to export: leave the recorder to the admin server (or call ensemble::admin::install_metrics_recorder first), or export from your own recorder".to_owned()),
            }
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Folds histogram samples in periodically, on a thread of its own: the recorder outlives any
/// async runtime of the process.
fn start_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("ensemble-metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms are folded in at scrapes only");
    }
}
