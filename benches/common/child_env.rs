//! What a child node process of a benchmark reads from its environment: the seeds it joins
//! through, and whether it logs.

/// The addresses in `ENSEMBLE_BENCH_SEEDS` (comma-separated; none if unset).
pub(crate) fn seeds<T: std::str::FromStr>() -> Vec<T> {
    std::env::var("ENSEMBLE_BENCH_SEEDS")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("ENSEMBLE_BENCH_SEEDS: {s:?} is not an address"))
        })
        .collect()
}

/// Logs to standard error at the filter in `ENSEMBLE_BENCH_LOG`, if it is set (the parent
/// points standard error at the child's log file).
pub(crate) fn log_if_asked() {
    if let Ok(filter) = std::env::var("ENSEMBLE_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
}
