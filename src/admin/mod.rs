//! The node's admin HTTP server: a JSON API, Prometheus metrics and the web dashboard.
//!
//! ```no_run
//! # async fn run(node: &ensemble::Node) -> Result<(), Box<dyn std::error::Error>> {
//! use ensemble::admin::{AdminConfig, AdminServer};
//!
//! let admin = AdminServer::start(node, AdminConfig::default()).await?;
//! println!("dashboard on http://{}/", admin.local_addr());
//! // ...
//! admin.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`api`]: the JSON documents the API answers (and the CLI reads).
//! - `routes`: the router: which path is served by what, behind which guard.
//! - `handlers`: the endpoints, turning what the node, its cluster, registry, supervisors and
//!   apps report into documents; the conversions are pure functions.
//! - `guard`: who may call: the bearer token (compared in constant time), and without a token,
//!   requests addressed to an IP address or `localhost` only, changes from the page's own
//!   origin only.
//! - `exporter`: the process-wide Prometheus recorder behind `/metrics`.
//! - `dashboard`: the web page (HTML, CSS and script compiled into the binary).
//! - `failure`: errors as an HTTP status and an [`api::ApiError`] document.
//!
//! The endpoints, the documents and the dashboard are described in `docs/admin.md` of the
//! repository.
//!
//! # What a node answers
//!
//! The server finds the node's parts as node extensions: the cluster service
//! ([`Cluster`](ensemble_runtime::cluster::Cluster)), the
//! [`Registry`](ensemble_registry::Registry) and the top-level supervisors
//! ([`SupervisorRef::top_level`](ensemble_supervisor::SupervisorRef::top_level)). A node
//! lacking one answers what it can (status, actors, trees; itself as the only member) and
//! `503 Service Unavailable` with an error naming the missing part for the rest. Registry
//! documents come from the node's copy of the registry, so any node answers for the whole
//! cluster, even when the registry has lost its quorum; changes (deploying and removing apps)
//! go through the registry's leader.
//!
//! # Security
//!
//! The server speaks plain HTTP. It binds to loopback by default and refuses to bind anywhere
//! else without a token ([`AdminError::TokenRequired`]). With a token, every `/api/` and
//! `/metrics` request needs `Authorization: Bearer TOKEN`; the dashboard's page and its
//! script carry no data and are served to anyone, and the script sends the token it reads
//! from the page's address (`/#token=TOKEN`, never sent to the server).
//!
//! Without a token, a web page the operator visits could still try to reach the loopback
//! server through the browser; so the API answers only requests addressed to an IP address or
//! `localhost` (a host name could be rebound to 127.0.0.1 by its owner), and takes changes
//! only from clients that send no `Origin` (curl, the CLI) or from the dashboard's own origin.
//!
//! # Bounds
//!
//! At most [`MAX_IN_FLIGHT`] API requests are served at once; more are answered `503` at once.
//! Request bodies (app specs) are limited to [`MAX_BODY`] bytes (`413` beyond). Everything that
//! waits has a deadline: a supervision tree that does not answer its snapshot within 2 s is
//! left out, a change the registry does not confirm within 8 s answers `504`, and a request
//! not answered within [`AdminConfig::request_timeout`] (a body sent too slowly) answers
//! `408`.
//!
//! Connections are bounded too, so that clients which connect and send nothing cannot take
//! the node's file descriptors, which its registry and cluster need: at most
//! [`AdminConfig::max_connections`] are open at once (more are closed as they are accepted,
//! and counted in `ensemble_admin_connections_refused_total`), and a connection that does not
//! send a request's headers within [`AdminConfig::header_timeout`] (idle between requests
//! included) is closed.

pub mod api;
mod dashboard;
mod exporter;
mod failure;
mod guard;
mod handlers;
mod routes;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ensemble_runtime::Node;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use exporter::install_metrics_recorder;

/// API requests served at once; more are refused with `503` until one finishes.
pub const MAX_IN_FLIGHT: usize = 64;

/// The largest request body accepted (an app spec), in bytes.
pub const MAX_BODY: usize = 256 * 1024;

/// How long [`AdminServer::shutdown`] lets requests in progress finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The admin port used by default.
pub const DEFAULT_PORT: u16 = 7070;

/// What a failed `accept` (out of file descriptors, say) waits before the next, so the
/// server does not spin on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Where the admin server listens and who may use it.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// The address to bind; loopback by default.
    pub listen: SocketAddr,
    /// The bearer token required on every API call, if any. Required when `listen` is not a
    /// loopback address. An empty token counts as none.
    pub token: Option<String>,
    /// How long a connection may take to send a request's headers, counted from when the
    /// server starts waiting for them (so idle time between requests counts); then it is
    /// closed. 10 s by default.
    pub header_timeout: Duration,
    /// The longest a request may take from its headers to its answer, body included;
    /// `408 Request Timeout` after it. 30 s by default.
    pub request_timeout: Duration,
    /// Connections open at once; more are closed as they are accepted. 256 by default.
    pub max_connections: usize,
}

impl Default for AdminConfig {
    /// `127.0.0.1:7070`, no token, 10 s for headers, 30 s for a request, 256 connections.
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            token: None,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
        }
    }
}

/// Why the admin server did not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error(
        "cannot bind the admin server to {addr}: {source} (another node there?); give another address with --admin HOST:PORT (admin.listen), or --admin off"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Exposed beyond loopback without a token.
    #[error(
        "the admin server would listen on {addr}, beyond loopback, without a token: set admin.token (or ENSEMBLE_ADMIN_TOKEN), or bind it to 127.0.0.1"
    )]
    TokenRequired {
        /// The address.
        addr: SocketAddr,
    },
}

/// A running admin server. Stop it with [`shutdown`](AdminServer::shutdown); dropping it
/// stops it too, without waiting for requests in progress.
pub struct AdminServer {
    addr: SocketAddr,
    /// Tells the serving task to stop accepting and finish; taken by `shutdown` or drop.
    stop: Option<oneshot::Sender<()>>,
    /// The serving task, awaited (within [`SHUTDOWN_GRACE`]) by `shutdown`.
    task: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Starts serving `node`'s admin API (the cluster, registry and apps it has attached).
    ///
    /// Installs the process-wide metrics recorder if none is installed yet (see
    /// [`install_metrics_recorder`]). Fails if the address cannot be bound, or if it is not a
    /// loopback address and `config` has no token.
    pub async fn start(node: &Node, config: AdminConfig) -> Result<AdminServer, AdminError> {
        Ok(AdminServer::bind(config).await?.serve(node))
    }

    /// Checks `config` and binds its address, without serving yet: a node checks this before
    /// it joins its cluster, so that an address in use does not make it join and leave again.
    ///
    /// # Errors
    ///
    /// As [`AdminServer::start`].
    pub async fn bind(config: AdminConfig) -> Result<BoundAdmin, AdminError> {
        let token = config.token.filter(|t| !t.is_empty());
        if token.is_none() && !is_loopback(config.listen.ip()) {
            return Err(AdminError::TokenRequired {
                addr: config.listen,
            });
        }
        let bind_error = |source| AdminError::Bind {
            addr: config.listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(bind_error)?;
        Ok(BoundAdmin {
            listener,
            token,
            header_timeout: config.header_timeout,
            request_timeout: config.request_timeout,
            max_connections: config.max_connections.max(1),
        })
    }
}

/// An admin server's address, bound and not served yet ([`AdminServer::bind`]).
pub struct BoundAdmin {
    listener: tokio::net::TcpListener,
    token: Option<String>,
    header_timeout: Duration,
    request_timeout: Duration,
    max_connections: usize,
}

impl BoundAdmin {
    /// Serves the admin API of `node` on the bound address.
    pub fn serve(self, node: &Node) -> AdminServer {
        let addr = self
            .listener
            .local_addr()
            .expect("a bound TCP listener has a local address");
        if let Err(why) = exporter::handle() {
            tracing::warn!(node = %node.id(), "{why}");
        }
        let router = routes::router(node.clone(), self.token.clone(), self.request_timeout);
        let (stop, stopped) = oneshot::channel::<()>();
        let span = tracing::info_span!("admin", node = %node.id(), %addr);
        let task = tokio::spawn(self.accept_loop(router, stopped).instrument(span));
        AdminServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

impl BoundAdmin {
    /// Accepts connections until `stopped`, each served by hyper in a task of its own within
    /// the bounds of the config; then lets the open ones finish their requests and close.
    async fn accept_loop(self, router: axum::Router, mut stopped: oneshot::Receiver<()>) {
        tracing::info!("admin server listening");
        let connections = Arc::new(Semaphore::new(self.max_connections));
        let graceful = GracefulShutdown::new();
        let service = TowerToHyperService::new(router);
        loop {
            let (stream, from) = tokio::select! {
                _ = &mut stopped => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot accept an admin connection; trying again shortly");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tracing::debug!(%from, max = self.max_connections, "admin connection refused: too many open");
                metrics::counter!("ensemble_admin_connections_refused_total").increment(1);
                drop(stream);
                continue;
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.header_timeout)
                .serve_connection(TokioIo::new(stream), service.clone());
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(%from, error = %err, "admin connection ended");
                }
                drop(permit);
            });
        }
        // Closes idle connections at once and the others after their request in progress.
        graceful.shutdown().await;
    }
}

impl AdminServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: no new connections are accepted, and requests in progress get a few
    /// seconds to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            tracing::warn!(addr = %self.addr, grace = ?SHUTDOWN_GRACE, "admin requests still running after the grace period; dropping them");
            task.abort();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Whether `ip` is a loopback address (IPv4-mapped IPv6 ones included).
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_loopback("127.1.2.3".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("0.0.0.0".parse().unwrap()));
        assert!(!is_loopback("::".parse().unwrap()));
        assert!(!is_loopback("10.0.0.1".parse().unwrap()));
    }
}
