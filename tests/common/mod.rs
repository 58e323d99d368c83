//! Helpers shared by the test binaries whose nodes run in child processes (`tests/cluster`,
//! `tests/registry`, `tests/chaos`, `tests/overload`...); each includes this file as its
//! `common` module.

use std::net::SocketAddr;

use ensemble::transport::certs::ClusterCa;

/// A CA in a temporary directory, with certificates for `nodes`. With `ENSEMBLE_TEST_KEEP`
/// set, the directory (certificates, data dirs, node logs) is kept and its path printed.
pub(crate) fn certificates(nodes: &[&str]) -> tempfile::TempDir {
    let keep = std::env::var_os("ENSEMBLE_TEST_KEEP").is_some();
    let dir = tempfile::Builder::new()
        .prefix("ensemble-test-")
        .disable_cleanup(keep)
        .tempdir()
        .expect("temp dir");
    if keep {
        eprintln!("keeping {}", dir.path().display());
    }
    let ca = ClusterCa::generate("test").expect("CA");
    ca.save(dir.path()).expect("save CA");
    for node in nodes {
        ca.issue(node)
            .expect("issue")
            .save(dir.path())
            .expect("save cert");
    }
    dir
}

/// The seed addresses in environment variable `var` (comma-separated; none if unset).
pub(crate) fn seeds_from_env(var: &str) -> Vec<SocketAddr> {
    std::env::var(var)
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("seed address"))
        .collect()
}

/// Logs to standard error with the filter in environment variable `var`, if set.
pub(crate) fn log_from_env(var: &str) {
    if let Ok(filter) = std::env::var(var) {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
}
