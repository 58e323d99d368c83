//! Ensemble's registry: the coordination service of a cluster, on openraft, in place of an
//! external ZooKeeper or etcd. A few nodes vote (three by default); every node has a
//! [`Registry`] handle and a local copy of the state, fed by the leader. What it holds and
//! promises, and how it behaves under failure, is in `docs/registry.md` of the repository.
//!
//! # What it gives a node
//!
//! - **Member sessions** with a TTL, renewed by keepalive: a session that expires marks its
//!   node down everywhere and releases what it held; a node that cannot renew in time fences
//!   itself first ([`Registry::is_fenced`]).
//! - **Global names** ([`Registry::register`], [`Registry::whereis`] from the local copy),
//!   **groups**, **locks and leases** with FIFO waiters and fencing tokens
//!   ([`Registry::lock`], [`Lease`]), a **config store** with revisions, compare-and-set and
//!   prefix watches ([`Registry::put`], [`Registry::watch_prefix`]), and placement
//!   reservations.
//! - **Voters** kept at their number, which an operator may change for the running cluster
//!   ([`Registry::set_voter_count`]): a vote moves away from a voter gone for good or one that
//!   leaves, or by hand ([`Registry::move_vote`]).
//!
//! # Map
//!
//! - `state/`: the replicated state machine, pure code: commands in, outcomes and effects out.
//! - `raft/`: openraft's storage (the log in fjall, snapshots in a store of their own), its
//!   RPCs carried over the runtime's transport, and the leader's lease for reads.
//! - `server/`: the actor every node runs: Raft's RPCs, group commit on the leader, the feeds
//!   of the local copies, and the leader's duties (`server/leader.rs`: session expiry, the
//!   voters).
//! - `client/`: the [`Registry`] handle: calls with retries and timeouts, the local copy,
//!   the session and self-fencing, leases, leaving and moving votes.
//! - [`RegistryConfig`] (its settings, checked), [`RegistryError`] (typed errors, each naming
//!   what it is about), `limits` (the sizes a command and an answer may take).
//!
//! # Example
//!
//! One node that starts a registry of its own, writes, locks and reads back:
//!
//! ```
//! use ensemble_registry::{Registry, RegistryConfig};
//! use ensemble_runtime::cluster::{Cluster, ClusterConfig, DownDecision};
//! use ensemble_runtime::transport::certs::ClusterCa;
//! use ensemble_runtime::{Node, NodeConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = ClusterCa::generate("doc")?;
//! let node = Node::new(NodeConfig::new("n1"))?;
//! let mut config = ClusterConfig::new("doc");
//! // The registry decides when a node is down: its session expired.
//! config.down = DownDecision::External;
//! let cluster = Cluster::start(&node, config, &ca.issue("n1")?).await?;
//! let data = tempfile::tempdir()?;
//! let mut settings = RegistryConfig::new(data.path().join("n1"));
//! settings.bootstrap = true; // the first node starts the registry; others join it
//! let registry = Registry::start(&cluster, settings).await?;
//!
//! let revision = registry.put("config/answer", b"42".to_vec()).await?;
//! let lease = registry.try_lock("jobs").await?;
//! assert!(lease.token() > 0);
//! assert_eq!(registry.get("config/answer").await?.map(|kv| kv.modified), Some(revision));
//! lease.release().await?;
//! registry.leave().await?;
//! node.shutdown().await;
//! cluster.leave().await;
//! # Ok(())
//! # }
//! ```

mod client;
mod config;
mod error;
mod limits;
pub mod raft;
pub(crate) mod server;
mod start;
pub mod state;

pub use client::{
    KeyChange, LEASE_RELEASED, Lease, RaftStatus, Registry, RegistryEffect, Watch, WatchEvent,
};
pub use config::RegistryConfig;
pub use error::RegistryError;
pub use server::VOTER_LABEL;
pub use start::{LEGACY_LOG_FILE, LOG_DIR};
pub use state::MAX_VOTERS;
