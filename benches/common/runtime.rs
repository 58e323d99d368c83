//! The benchmarks' runtime: multi-thread (tokio's default, one worker per core), or
//! current-thread with `ENSEMBLE_BENCH_RUNTIME=current_thread`, which child processes inherit.
//! Several processes share this machine's two cores, so the choice shows how much of a figure
//! is wake-ups across threads.

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    let mut builder = match std::env::var("ENSEMBLE_BENCH_RUNTIME").as_deref() {
        Ok("current_thread") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build().expect("runtime")
}
