//! The node's admin HTTP server: a JSON API, Prometheus metrics and the web dashboard.
//!
//! (Being written: this stub fixes the interface the CLI and the node command use.)

pub mod api;

use std::net::SocketAddr;

use ensemble_runtime::Node;

/// Where the admin server listens and who may use it.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// The address to bind; loopback by default.
    pub listen: SocketAddr,
    /// The bearer token required on every API call, if any. Required when `listen` is not a
    /// loopback address.
    pub token: Option<String>,
}

/// Why the admin server did not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("cannot bind the admin server to {addr}: {source}")]
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

/// A running admin server.
pub struct AdminServer {
    addr: SocketAddr,
}

impl AdminServer {
    /// Starts serving `node`'s admin API (the cluster, registry and apps it has attached).
    pub async fn start(node: &Node, config: AdminConfig) -> Result<AdminServer, AdminError> {
        let _ = node;
        Ok(AdminServer {
            addr: config.listen,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub async fn shutdown(self) {}
}
