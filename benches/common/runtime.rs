//! The benchmarks' runtime: multi-thread, or current-thread with
//! `ENSEMBLE_BENCH_RUNTIME=current_thread`, which child processes inherit.
//! Several processes share this machine's two cores, so the choice shows how much of a figure
//! is wake-ups across threads. `ENSEMBLE_BENCH_WORKERS=N` sets the multi-thread runtime's
//! worker threads.

/// Tokio's default: one worker thread per core.
#[allow(dead_code)]
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    build(None)
}

/// For one of `processes` processes sharing the machine: each gets its share of the cores as
/// worker threads (at least one), as docs/operations.md advises for nodes sharing a machine.
#[allow(dead_code)]
pub(crate) fn sharing_with(processes: usize) -> tokio::runtime::Runtime {
    build(Some(share(processes)))
}

/// What [`sharing_with`] builds, for a benchmark's report.
#[allow(dead_code)]
pub(crate) fn describe_sharing(processes: usize) -> String {
    match std::env::var("ENSEMBLE_BENCH_RUNTIME").as_deref() {
        Ok("current_thread") => "current-thread runtimes".to_owned(),
        _ => format!(
            "{} worker thread(s) per process",
            workers(Some(share(processes))).unwrap_or(1)
        ),
    }
}

/// One process's share of the cores, at least one.
fn share(processes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (cores / processes.max(1)).max(1)
}

/// How many worker threads a multi-thread runtime of this process gets.
fn workers(default: Option<usize>) -> Option<usize> {
    std::env::var("ENSEMBLE_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .filter(|&w: &usize| w > 0)
        .or(default)
}

fn build(default_workers: Option<usize>) -> tokio::runtime::Runtime {
    let mut builder = match std::env::var("ENSEMBLE_BENCH_RUNTIME").as_deref() {
        Ok("current_thread") => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(workers) = workers(default_workers) {
                builder.worker_threads(workers);
            }
            builder
        }
    };
    builder.enable_all().build().expect("runtime")
}
