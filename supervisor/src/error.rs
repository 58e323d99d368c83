//! Errors of supervisor operations, each naming the supervisor or child concerned.

use ensemble_runtime::{AskError, SpawnError};

/// A supervisor operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// A child with this id exists already.
    #[error("supervisor {supervisor}: a child with id {id:?} exists already")]
    ChildExists {
        /// The supervisor.
        supervisor: String,
        /// The child id.
        id: String,
    },
    /// No child has this id.
    #[error("supervisor {supervisor}: no child with id {id:?}")]
    NoSuchChild {
        /// The supervisor.
        supervisor: String,
        /// The child id.
        id: String,
    },
    /// The operation needs the child stopped (`terminate_child` first).
    #[error("supervisor {supervisor}: child {id:?} is running; terminate it first")]
    ChildRunning {
        /// The supervisor.
        supervisor: String,
        /// The child id.
        id: String,
    },
    /// The child waits out its restart backoff: it starts by itself when the backoff ends
    /// (Erlang/OTP's `{error, restarting}`). Terminate it first to restart or delete it now.
    #[error(
        "supervisor {supervisor}: child {id:?} is being restarted (it waits out its restart backoff) and starts by itself; terminate it first to restart or delete it now"
    )]
    ChildRestarting {
        /// The supervisor.
        supervisor: String,
        /// The child id.
        id: String,
    },
    /// The child failed to start.
    #[error("supervisor {supervisor}: child {id:?} failed to start: {error}")]
    StartFailed {
        /// The supervisor.
        supervisor: String,
        /// The child id.
        id: String,
        /// Why.
        error: SpawnError,
    },
    /// No node can take the child now. Its spec is kept: it starts when a node joins or room
    /// frees up (see [`ChildState::Unplaced`](crate::ChildState::Unplaced)); delete it to
    /// give up.
    #[error(
        "supervisor {supervisor}: no node can take child {id:?} now ({reason}); it will start when a node that can joins"
    )]
    Unplaced {
        /// The supervisor.
        supervisor: String,
        /// The child id.
        id: String,
        /// Why, per node.
        reason: String,
    },
    /// A global name was asked for a child made by a closure: only children started from a
    /// module carry one (a cluster singleton registers its own, see `Singleton`).
    #[error(
        "supervisor {supervisor}: child {id:?} asks for a global name, but only children started from a registered module (ChildSpec::module) register one; register it from the actor's started hook instead"
    )]
    GlobalNameUnsupported {
        /// The supervisor.
        supervisor: String,
        /// The child id.
        id: String,
    },
    /// A negotiated start placed fewer copies than the minimum accepted; none were kept.
    #[error(
        "only {placed} of {asked} copies of child {id:?} could be placed, fewer than the {min} accepted ({reason}); none were kept"
    )]
    NotEnough {
        /// The template's id.
        id: String,
        /// Copies asked for.
        asked: usize,
        /// The fewest accepted.
        min: usize,
        /// Copies that could be placed.
        placed: usize,
        /// Why no more.
        reason: String,
    },
    /// The child asks to run on another node, but its actor is made by a closure, which
    /// cannot travel: only children started from a registered module can be placed.
    #[error(
        "supervisor {supervisor}: child {id:?} asks for placement on {placement}, but it is started by a closure, which only runs locally; start it from a registered module (ChildSpec::module) or use Placement::Local"
    )]
    PlacementUnsupported {
        /// The supervisor.
        supervisor: String,
        /// The child id.
        id: String,
        /// The placement asked for.
        placement: String,
    },
    /// The supervisor did not answer (stopped, or busy past the timeout).
    #[error("supervisor did not answer: {0}")]
    Unreachable(#[from] AskError),
}
