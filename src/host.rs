//! A node with everything it runs in a cluster, wired together: the `ensemble node` command,
//! the demo and programs embedding Ensemble start nodes through [`Host`].
//!
//! Starting a host starts, in order: the [`Node`] (actors), its modules (the example
//! [`kv`](crate::kv) app's, and whatever the caller registers before), the
//! [`Cluster`] service (QUIC with mutual TLS, membership, failure detection), the
//! [`Registry`] (Raft-replicated sessions, names, locks, config; it decides when a node is
//! down), the apps agent and controller manager ([`Apps::start`]; optional, so a node can be a
//! pure client that never takes app instances), and the admin HTTP server ([`AdminServer`];
//! optional). [`Host::stop`] takes them down in the reverse order, leaving the cluster on
//! purpose so that the others need not wait for a session to expire.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use ensemble_registry::{Registry, RegistryConfig};
use ensemble_runtime::cluster::{Cluster, ClusterConfig, DownDecision};
use ensemble_runtime::transport::certs::NodeCert;
use ensemble_runtime::{Node, NodeConfig};
use ensemble_supervisor::app::{Apps, AppsNode};

use crate::admin::{AdminConfig, AdminServer};

/// What a [`Host`] runs, and where.
#[derive(Clone)]
pub struct HostConfig {
    /// The node's name, unique in the cluster; the certificate must name it.
    pub name: String,
    /// The cluster's name; nodes of another cluster are refused.
    pub cluster: String,
    /// Where to accept cluster connections (QUIC, UDP); port 0 picks a free one.
    pub listen: SocketAddr,
    /// Members to join through; none to start a new cluster (this node bootstraps its
    /// registry when its data dir holds none).
    pub seeds: Vec<SocketAddr>,
    /// The node's certificate, key and CA certificate.
    pub cert: NodeCert,
    /// Registry settings; `data_dir` is where the Raft log and snapshots live.
    pub registry: RegistryConfig,
    /// Resources offered to placement, by name (say `cpu = 4000` for four cores).
    pub resources: BTreeMap<String, u64>,
    /// Labels placement constraints match (say `zone = "a"`).
    pub labels: BTreeMap<String, String>,
    /// Take part in running apps (start the node agent and a manager of the app controller).
    pub apps: bool,
    /// Serve the admin HTTP API, metrics and dashboard, if set.
    pub admin: Option<AdminConfig>,
}

impl HostConfig {
    /// Defaults for a node named `name` with certificate `cert`, keeping its registry under
    /// `data_dir`: cluster `ensemble`, listening on 127.0.0.1 on a free port, no seeds, apps
    /// on, no admin server.
    pub fn new(name: impl Into<String>, cert: NodeCert, data_dir: impl Into<PathBuf>) -> Self {
        HostConfig {
            name: name.into(),
            cluster: "ensemble".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seeds: Vec::new(),
            cert,
            registry: RegistryConfig::new(data_dir),
            resources: BTreeMap::new(),
            labels: BTreeMap::new(),
            apps: true,
            admin: None,
        }
    }
}

/// Why a host did not start: the stage that failed and its error.
#[derive(Debug, thiserror::Error)]
#[error("cannot start node {node}: {stage}: {message}")]
pub struct HostError {
    /// The node.
    pub node: String,
    /// What was being started (`node`, `cluster`, `registry`, `apps`, `admin`).
    pub stage: &'static str,
    /// The error.
    pub message: String,
}

/// A running node with its cluster service, registry, apps and admin server.
pub struct Host {
    /// The node: spawn actors on it.
    pub node: Node,
    /// Membership and the transport.
    pub cluster: Cluster,
    /// The registry client of this node.
    pub registry: Registry,
    /// The node's part in running apps, if it takes part.
    pub apps: Option<AppsNode>,
    /// The admin server, if it serves one.
    pub admin: Option<AdminServer>,
    /// Updates the node's gauges.
    gauges: tokio::task::JoinHandle<()>,
}

impl Host {
    /// Starts a node and everything `config` asks for. `prepare` runs on the node before it
    /// joins the cluster: register the modules it can run there.
    pub async fn start(config: HostConfig, prepare: impl FnOnce(&Node)) -> Result<Host, HostError> {
        let fail = |stage: &'static str, message: String| HostError {
            node: config.name.clone(),
            stage,
            message,
        };
        config
            .registry
            .validate()
            .map_err(|e| fail("registry", e))?;
        // Before joining: an admin address in use, or one that needs a token, fails the start
        // here rather than after the node joined and took work.
        let admin = match config.admin {
            Some(admin) => Some(
                AdminServer::bind(admin)
                    .await
                    .map_err(|e| fail("admin", e.to_string()))?,
            ),
            None => None,
        };
        let node = Node::new(NodeConfig::new(config.name.clone()))
            .map_err(|e| fail("node", e.to_string()))?;
        crate::kv::register_modules(&node);
        prepare(&node);

        let mut cluster_config = ClusterConfig::new(config.cluster.clone());
        cluster_config.listen = config.listen;
        cluster_config.seeds = config.seeds.clone();
        cluster_config.resources = config.resources.clone();
        cluster_config.labels = config.labels.clone();
        // The registry decides when a node is down (its session expired), the same everywhere.
        cluster_config.down = DownDecision::External;
        let cluster = match Cluster::start(&node, cluster_config, &config.cert).await {
            Ok(cluster) => cluster,
            Err(e) => {
                node.shutdown().await;
                return Err(fail("cluster", e.to_string()));
            }
        };
        let mut registry_config = config.registry.clone();
        registry_config.bootstrap = config.seeds.is_empty();
        let registry = match Registry::start(&cluster, registry_config).await {
            Ok(registry) => registry,
            Err(e) => {
                node.shutdown().await;
                let listen = cluster.local_addr();
                cluster.leave().await;
                drop(cluster);
                address_released(listen).await;
                return Err(fail("registry", e.to_string()));
            }
        };
        let gauges = tokio::spawn(update_gauges(
            node.clone(),
            cluster.clone(),
            registry.clone(),
        ));
        let mut host = Host {
            node,
            cluster,
            registry,
            apps: None,
            admin: None,
            gauges,
        };
        if config.apps {
            match Apps::start(&host.node).await {
                Ok(apps) => host.apps = Some(apps),
                Err(e) => {
                    host.stop().await;
                    return Err(fail("apps", e.to_string()));
                }
            }
        }
        host.admin = admin.map(|admin| admin.serve(&host.node));
        Ok(host)
    }

    /// Leaves the cluster on purpose and stops everything: the registry session is closed
    /// once the actors bound to this node's locks have ended (releasing its names, locks and
    /// reservations at once), the actors are stopped, then the connections are closed. Returns
    /// once the cluster address is free again (2 s at most), so that a node can be started on
    /// it again at once.
    pub async fn stop(self) {
        self.gauges.abort();
        if let Some(admin) = self.admin {
            admin.shutdown().await;
        }
        // Best effort, bounded: when the cluster has lost its registry quorum (the last nodes
        // of a cluster stopping), the session simply expires instead.
        let leave_timeout = self.registry.leave_timeout();
        match tokio::time::timeout(leave_timeout, self.registry.leave()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(node = %self.node.id(), error = %e, "leaving the registry failed; the session will expire instead");
            }
            Err(_) => {
                tracing::warn!(node = %self.node.id(), timeout = ?leave_timeout, "leaving the registry timed out; the session will expire instead");
            }
        }
        self.node.shutdown().await;
        let listen = self.cluster.local_addr();
        self.cluster.leave().await;
        drop((self.node, self.cluster, self.registry, self.apps));
        address_released(listen).await;
    }
}

/// How long [`Host::stop`] waits for the cluster's address to be free.
const RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits until nothing of the stopped node holds its cluster address any more (the last tasks
/// that held the cluster service end within moments of it), so that a program can start a
/// node on it again at once, as after a session expired. Bounded by [`RELEASE_TIMEOUT`].
async fn address_released(listen: SocketAddr) {
    let deadline = tokio::time::Instant::now() + RELEASE_TIMEOUT;
    while std::net::UdpSocket::bind(listen).is_err() {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(%listen, timeout = ?RELEASE_TIMEOUT, "the stopped node's cluster address is still bound");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// How often [`update_gauges`] samples the node.
const GAUGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the node-level gauges current (the admin server exports them on `/metrics`):
/// members by status, actors, and the registry's revision, sessions, leadership and fencing.
async fn update_gauges(node: Node, cluster: Cluster, registry: Registry) {
    let mut tick = tokio::time::interval(GAUGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let members = cluster.members();
        let suspect = members
            .iter()
            .filter(|m| m.status == ensemble_runtime::cluster::MemberStatus::Suspect)
            .count();
        // The member list holds the other nodes; this one is up by definition.
        metrics::gauge!("ensemble_members", "status" => "up")
            .set((members.len() - suspect + 1) as f64);
        metrics::gauge!("ensemble_members", "status" => "suspect").set(suspect as f64);
        metrics::gauge!("ensemble_actors").set(node.actor_count() as f64);
        metrics::gauge!("ensemble_registry_revision").set(registry.revision() as f64);
        metrics::gauge!("ensemble_registry_sessions").set(registry.sessions().len() as f64);
        let leads = registry.leader().as_deref() == Some(node.id().name());
        metrics::gauge!("ensemble_registry_leader").set(f64::from(u8::from(leads)));
        metrics::gauge!("ensemble_registry_fenced").set(f64::from(u8::from(registry.is_fenced())));
    }
}
