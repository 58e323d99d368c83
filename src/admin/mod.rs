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
//! - `connections`: accepting connections and bounding them (how many, how long they may
//!   stall), each served by hyper.
//! - `routes`: the router: which path is served by what, behind which guard.
//! - `handlers`: the endpoints, turning what the node, its cluster, registry, supervisors and
//!   apps report into documents; the conversions are pure functions.
//! - `guard`: who may call: the bearer token (compared in constant time), and without a token,
//!   requests addressed to an IP address, `localhost` or a `.localhost` name only, changes
//!   from the page's own origin only; and how many requests at once, for how long.
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
//! Connections are bounded too, so that clients which connect and stall cannot take the
//! node's file descriptors, which its registry and cluster need: at most
//! [`AdminConfig::max_connections`] are open at once (more are closed as they are accepted,
//! and counted in `ensemble_admin_connections_refused_total`), and a connection is closed
//! when it sends no request's headers within [`AdminConfig::header_timeout`] (idle between
//! requests included) or reads nothing of an answer for [`AdminConfig::request_timeout`].

pub mod api;
mod connections;
mod dashboard;
mod exporter;
mod failure;
mod guard;
mod handlers;
mod routes;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ensemble_runtime::Node;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use exporter::install_metrics_recorder;

/// API requests served at once; more are refused with `503` until one finishes.
pub const MAX_IN_FLIGHT: usize = 64;

/// The largest request body accepted (an app spec), in bytes.
pub const MAX_BODY: usize = 256 * 1024;

/// The admin port used by default.
pub const DEFAULT_PORT: u16 = 7070;

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
    /// The longest an API request may take from its headers to its answer, body included
    /// (`408 Request Timeout` after it), and the longest a client may read nothing of an
    /// answer (the connection is closed after it). 30 s by default.
    pub request_timeout: Duration,
    /// Connections open at once; more are closed as they are accepted. 256 by default.
    pub max_connections: usize,
    /// How long requests in progress get to finish once the server stops (its address is
    /// closed at once, and idle connections too). 5 s by default.
    pub shutdown_grace: Duration,
}

impl Default for AdminConfig {
    /// `127.0.0.1:7070`, no token, 10 s for headers, 30 s for a request, 256 connections,
    /// 5 s of grace at shutdown.
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            token: None,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(5),
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
    /// A setting that cannot work.
    #[error("admin setting {setting} is {value}: {reason}")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// Its value.
        value: String,
        /// What is wrong, and what would do.
        reason: &'static str,
    },
}

/// A running admin server. Stop it with [`shutdown`](AdminServer::shutdown); dropping it
/// stops it too, without waiting for requests in progress.
pub struct AdminServer {
    addr: SocketAddr,
    /// Tells the serving task to stop accepting and finish; taken by `shutdown` or drop.
    stop: Option<oneshot::Sender<()>>,
    /// The serving task, which ends once the connections it served did (within the shutdown
    /// grace of the stop); awaited by `shutdown`.
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
        config.validate()?;
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
            max_connections: config.max_connections,
            shutdown_grace: config.shutdown_grace,
        })
    }
}

impl AdminConfig {
    /// Refuses settings that cannot work: zero timeouts (every connection would be closed at
    /// once), and no connections or more than a semaphore can count.
    fn validate(&self) -> Result<(), AdminError> {
        let setting = |setting, value: String, reason| {
            Err(AdminError::Setting {
                setting,
                value,
                reason,
            })
        };
        if self.header_timeout.is_zero() {
            return setting(
                "header_timeout",
                "0".into(),
                "every connection would be closed before its request; give a few seconds",
            );
        }
        if self.request_timeout.is_zero() {
            return setting(
                "request_timeout",
                "0".into(),
                "every request would time out; give a few seconds",
            );
        }
        if self.max_connections == 0 || self.max_connections > Semaphore::MAX_PERMITS {
            return setting(
                "max_connections",
                self.max_connections.to_string(),
                "give at least 1 (and far fewer than the process may open files)",
            );
        }
        Ok(())
    }
}

/// An admin server's address, bound and not served yet ([`AdminServer::bind`]).
pub struct BoundAdmin {
    listener: tokio::net::TcpListener,
    token: Option<String>,
    header_timeout: Duration,
    request_timeout: Duration,
    max_connections: usize,
    shutdown_grace: Duration,
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
        let router = routes::router(node.clone(), self.token, self.request_timeout);
        let bounds = connections::Bounds {
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            write_stall: self.request_timeout,
            grace: self.shutdown_grace,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let span = tracing::info_span!("admin", node = %node.id(), %addr);
        let task = tokio::spawn(
            async move {
                tracing::info!("admin server listening");
                connections::serve(self.listener, router, bounds, stopped).await;
            }
            .instrument(span),
        );
        AdminServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

impl AdminServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: the address is closed at once, idle connections too, and requests in
    /// progress get [`AdminConfig::shutdown_grace`] to finish before their connections are
    /// closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
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
