//! Ensemble's actor runtime.
//!
//! # Layout
//!
//! - [`actor`]: the [`Actor`] trait, [`Context`], [`ActorRef`], [`ReplyTo`], monitors, and
//!   the internals that run an actor (mailbox, signals, cells, the run loop).
//! - [`node`]: the [`Node`], the local runtime: spawning, local names, the actor table,
//!   shutdown, dead letters.
//! - [`transport`]: the cluster CA and node certificates, mutual-TLS QUIC configurations, and
//!   the frames that cross the wire.
//! - [`cluster`]: nodes joining a cluster: the handshake, the member table, the phi accrual
//!   failure detector and the [`Cluster`](cluster::Cluster) service that runs them.
//! - [`remote`]: actor references, asks and signals that cross nodes, and actor modules that
//!   other nodes can spawn.
//! - [`ExitReason`], [`NodeId`] and [`ActorId`]: identities and why actors end.
//! - [`error`]: one error type per operation, each naming what it is about.
//! - [`hashing`]: the hasher of the runtime's maps, whose seed a simulation fixes.
//!
//! The semantics (ordering, delivery, exits, links, monitors, mailbox bounds, and what changes
//! across nodes) are written down in `docs/semantics.md` of the repository, the wire protocol
//! in `docs/protocol.md`.
//!
//! Start with the [`prelude`].

pub mod actor;
pub mod cluster;
pub mod error;
mod exit;
pub mod hashing;
mod id;
pub mod node;
pub mod remote;
pub mod transport;

pub use actor::{
    Actor, ActorRef, ActorResult, Context, Down, MonitorRef, ReplyTo, SpawnOptions, TimerRef,
    UntypedRef,
};
pub use error::{ActorError, AskError, LookupError, RegisterError, SpawnError, TellError};
pub use exit::ExitReason;
pub use id::{ActorId, NodeId};
pub use node::{ActorInfo, Node, NodeConfig, NodeError, ShutdownReport};

/// The types most programs need.
pub mod prelude {
    pub use crate::{
        Actor, ActorError, ActorId, ActorRef, ActorResult, AskError, Context, Down, ExitReason,
        MonitorRef, Node, NodeConfig, ReplyTo, SpawnOptions, TellError, TimerRef, UntypedRef,
    };
}
