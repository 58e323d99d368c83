//! A process benchmark's working directory: certificates, data dirs and node logs.

/// A new temporary directory named with `prefix`, kept rather than removed when the
/// benchmark ends if `ENSEMBLE_BENCH_KEEP` is set (the second value says so), to read the
/// nodes' logs and data after a run.
pub(crate) fn work_dir(prefix: &str) -> (tempfile::TempDir, bool) {
    let keep = std::env::var_os("ENSEMBLE_BENCH_KEEP").is_some();
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .disable_cleanup(keep)
        .tempdir()
        .expect("temp dir");
    (dir, keep)
}
