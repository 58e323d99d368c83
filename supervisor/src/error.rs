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
