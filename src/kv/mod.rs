//! An example application: a partitioned, replicated key-value service that keeps its own
//! master/slave intelligence on top of Ensemble's actors and registry.
//!
//! The runtime places, restarts and names the actors; everything about *data* (partitioning,
//! replication, promotion, rebuilding after a failover) is this module's.
//!
//! # Layout
//!
//! - `protocol`: the messages ([`WorkerMsg`], [`MasterMsg`]), the partition table clients
//!   route by ([`Table`]), [`partition_of`], and the refusals a worker answers ([`KvError`]).
//! - `worker`: [`Worker`], module [`WORKER_MODULE`]. Joins the group [`WORKERS_GROUP`] and
//!   holds the partitions the master gives it, each as [`Role::Primary`] or [`Role::Backup`]
//!   with an [`Epoch`] and a version. A primary serves reads and writes and answers a write
//!   only once its backup applied it.
//! - `master`: [`Master`], module [`MASTER_MODULE`], run as a cluster singleton and registered
//!   under [`MASTER_NAME`] by whoever starts it. Finds workers through the group, monitors
//!   them, and in *rounds* collects what every worker holds and hands out assignments.
//! - `planner`: the master's decisions as a pure function (table + reports → table + orders),
//!   unit-tested: even spread, primary and backup on different workers and nodes, promotion of
//!   the backup, rebalancing, rebuilding a table from reports (the newest line wins, then
//!   the highest version).
//! - `client`: [`KvClient`]: resolves the master by name, caches its table, routes by key, and
//!   retries through failures until a deadline.
//!
//! # Deployment
//!
//! Register both modules on every node with [`register_modules`]. The app platform then starts
//! one [`MASTER_MODULE`] as a singleton, registers it as [`MASTER_NAME`], and spreads
//! [`WORKER_MODULE`] instances over the nodes; both take optional arguments ([`MasterArgs`],
//! [`WorkerArgs`]) with defaults for everything. Clients need only a node with a registry.
//!
//! # Guarantees
//!
//! - A write acknowledged to a client is held by the partition's primary and its backup, so it
//!   survives the loss of any one worker (or of a node holding only one of the two: the
//!   master keeps them on different nodes when it can). While a partition has no backup (just
//!   after the first worker started, or while no other worker lives) its primary acknowledges
//!   alone; [`Status`]'s `replicated` count says when every partition has one. While a new
//!   backup is copied (its snapshot on the way), writes wait for the copy. Losing both before
//!   a new backup has its copy loses the partition's data; the master says so in its log and
//!   starts the partition empty.
//! - A master that fails over loses nothing: the workers hold the truth, and a new master
//!   rebuilds the table from their reports before it answers with assignments, promoting a
//!   copy only once every live worker has reported (a silent one may hold the newest): the
//!   copy of the newest line (the epoch whose primary's writes it holds), of one line the
//!   highest version. Meanwhile clients keep working
//!   with the table they have, for every partition whose primary lives. A worker whose node
//!   the master's cannot reach while the registry holds it up (a partial partition) counts as
//!   live and silent, as Erlang's `noconnection` is no death: it keeps its roles, holds up
//!   any partition started empty, and is asked again once its node is connected.
//! - Reads go to the primary; they see every acknowledged write, and may see a write that is
//!   applied but not yet acknowledged (it is acknowledged unless the primary dies first). A
//!   primary the master replaced while it lived, whose order was lost on the way, answers
//!   reads at its old epoch until it hears (the new line's first write reaches it, or the
//!   master's next round): a client still routing by the old table may read from it then.
//!   When the master moves a partition off a live primary to balance, it makes it the new
//!   backup, so the new line's first write reaches it before any write of the new epoch is
//!   acknowledged.
//! - Requests name the epoch of the client's table; a worker that is not the primary at that
//!   epoch refuses ([`KvError::NotPrimary`]), and the client refreshes its table and retries.
//!   A worker whose node is fenced (cut off past its registry session's validity, so that
//!   its partitions may be someone else's by now) refuses every read and write
//!   ([`KvError::Fenced`]) until the session is back.
//! - A backup that lost the snapshot starting its epoch (or the ask for it) asks again when
//!   the next replicated write finds it without, at most once a second: a client trying a
//!   waiting write again is such a write. Until then the partition's writes wait.
//!
//! # Limits
//!
//! A partition's snapshot travels in one message, so a partition must fit in the transport's
//! maximum frame (8 MiB by default). Values are encoded as MessagePack arrays of bytes. The
//! partition count (1 to [`MAX_PARTITIONS`]) is fixed for the life of the data: keys route by
//! it, so a master of another count than the workers' data ends at its first round with an
//! error naming both counts, rather than look for keys in the wrong partitions.
//!
//! # Fencing the master
//!
//! A master whose node is cut off fences itself before its successor starts, but an order it
//! sent just before the cut may still be on its way (held by the connection while the cut
//! lasts) and arrive after the successor's orders. The successor numbers epochs from what the
//! workers report, so epochs alone cannot tell the two apart. So every order carries the
//! lock and the fencing token of the master's singleton lease (read in its `started` hook
//! with `Registry::lease_of`), and a worker ignores the orders of a master with a lower
//! token than one it followed, or than the holder of that lock has in its node's copy of the
//! registry: a copy may lag behind the registry, never run ahead of it, so a later grant
//! there means the master was replaced, even before its successor reaches the worker (the
//! worker then raises its bar to that grant's token, so the refusal lasts after the grant
//! ends). A master started without a lease (by hand, in a test), or of an earlier build, has
//! token 0, which is not fenced: its orders are followed, as before tokens. A worker that
//! restarted follows the first master it hears from; it holds nothing then. What is left: a
//! late order of the replaced master that reaches a worker before both the successor's first
//! order and the successor's grant in the worker's node's copy is followed. The grant
//! usually reaches the copy one feed message after the registry commits it; later while the
//! copy catches up, or if the same cut holds up its feed. A master of an earlier build names
//! no lock, but under the app platform it holds the same one, so the late orders of the
//! leased master it replaced are refused once the copy shows its grant.
//!
// The links are spelled out because the doc line on `pub mod kv` in the crate root makes
// rustdoc resolve this whole text from there.
//! [`Epoch`]: crate::kv::Epoch
//! [`KvClient`]: crate::kv::KvClient
//! [`KvError`]: crate::kv::KvError
//! [`KvError::NotPrimary`]: crate::kv::KvError::NotPrimary
//! [`KvError::Fenced`]: crate::kv::KvError::Fenced
//! [`MASTER_MODULE`]: crate::kv::MASTER_MODULE
//! [`MASTER_NAME`]: crate::kv::MASTER_NAME
//! [`MAX_PARTITIONS`]: crate::kv::MAX_PARTITIONS
//! [`Master`]: crate::kv::Master
//! [`MasterArgs`]: crate::kv::MasterArgs
//! [`MasterMsg`]: crate::kv::MasterMsg
//! [`Role::Backup`]: crate::kv::Role::Backup
//! [`Role::Primary`]: crate::kv::Role::Primary
//! [`Status`]: crate::kv::Status
//! [`Table`]: crate::kv::Table
//! [`WORKERS_GROUP`]: crate::kv::WORKERS_GROUP
//! [`WORKER_MODULE`]: crate::kv::WORKER_MODULE
//! [`Worker`]: crate::kv::Worker
//! [`WorkerArgs`]: crate::kv::WorkerArgs
//! [`WorkerMsg`]: crate::kv::WorkerMsg
//! [`partition_of`]: crate::kv::partition_of
//! [`register_modules`]: crate::kv::register_modules

mod client;
mod master;
mod planner;
mod protocol;
mod worker;

pub use client::{ClientStats, Failure, KvClient, KvClientError};
pub use master::{MAX_INTERVAL_MS, MAX_PARTITIONS, Master, MasterArgs};
pub use protocol::{
    Assignment, Epoch, KvError, MasterMsg, PartitionId, PartitionReport, ReadResult,
    ReplicaOutcome, Role, Route, Status, Table, TableEntry, WorkerMsg, WorkerReport, WorkerStatus,
    WriteResult, partition_of,
};
pub use worker::{Worker, WorkerArgs};

use crate::Node;

/// The module name of the master.
pub const MASTER_MODULE: &str = "kv.master";

/// The module name of a worker.
pub const WORKER_MODULE: &str = "kv.worker";

/// The global name the master is registered under (by whoever starts it, not by the master).
pub const MASTER_NAME: &str = "kv.master";

/// The registry group every worker joins.
pub const WORKERS_GROUP: &str = "kv.workers";

/// The app spec deploying this service: a master singleton named [`MASTER_NAME`] and three
/// workers on three different nodes (the file `examples/apps/kv.toml`).
pub const APP_SPEC: &str = include_str!("../../examples/apps/kv.toml");

/// Registers modules [`MASTER_MODULE`] and [`WORKER_MODULE`] on `node`. Their arguments are
/// optional: nil (no arguments), an empty map and a partial map all decode, missing fields
/// taking their defaults.
pub fn register_modules(node: &Node) {
    node.register_module(MASTER_MODULE, |args: Option<MasterArgs>| {
        Master::new(args.unwrap_or_default())
    });
    node.register_module(WORKER_MODULE, |args: Option<WorkerArgs>| {
        Worker::new(args.unwrap_or_default())
    });
}
