//! Ensemble's supervision trees, placement across nodes, cluster singletons and apps.
//!
//! A [`Supervisor`] is an actor that starts children from [`ChildSpec`]s, in order, links to
//! them, and restarts them when they end, by its [`Strategy`] (one-for-one, one-for-all,
//! rest-for-one) and each child's [`Restart`] type, within a restart [`Intensity`]. When the
//! intensity is exceeded it stops its children and exits with a failure, so its own supervisor
//! decides: failures climb the tree. Children may be added and removed at run time
//! ([`SupervisorRef::start_child`] and friends), restarts may back off exponentially
//! ([`Backoff`]), and the tree can be inspected ([`SupervisorRef::snapshot`]).
//!
//! # Layout
//!
//! - `spec`: [`SupervisorSpec`], [`ChildSpec`] and their options.
//! - `core`: the decisions (what to stop, what to start, when to give up), as pure code with
//!   time passed in; unit tests and a property test against a reference model.
//! - `supervisor`: the [`Supervisor`] actor that carries the decisions out.
//! - `handle`: [`SupervisorRef`], the API to a running supervisor.
//! - `snapshot`: introspection values ([`ChildInfo`], [`ChildCounts`], [`TreeSnapshot`]).
//! - [`placement`]: where instances go, as pure code (capacity, reservations, labels,
//!   anti-affinity, spread or pack).
//! - [`agent`]: the node agent that starts placed instances on its node (reserving resources
//!   in the registry, taking a singleton's lease, registering names and groups).
//! - [`singleton`]: cluster singletons guarded by registry leases and fencing tokens.
//! - [`app`]: app specs (TOML) deployed into the registry, and the controller that keeps each
//!   app at its wanted shape across node loss and join.
//! - [`program`]: supervised OS processes: an external program owned by an actor, with
//!   health checks, a stop signal and its output in the logs.
//!
//! Children started from a registered module ([`ChildSpec::module`]) may run on other nodes
//! ([`Placement`]); when their node goes down they are restarted on a live one.
//!
//! Semantics in detail: `docs/supervision.md`, `docs/placement.md` and `docs/apps.md` of the
//! repository.
//!
//! ```
//! use std::time::Duration;
//! use ensemble_runtime::prelude::*;
//! use ensemble_supervisor::{ChildSpec, Strategy, SupervisorRef, SupervisorSpec};
//!
//! struct Worker;
//!
//! impl Actor for Worker {
//!     type Msg = ReplyTo<&'static str>;
//!
//!     async fn handle(&mut self, reply: Self::Msg, _ctx: &mut Context<Self>) -> ActorResult {
//!         let _ = reply.send("working");
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::new(NodeConfig::new("doc"))?;
//! let spec = SupervisorSpec::new("root")
//!     .strategy(Strategy::OneForOne)
//!     .intensity(3, Duration::from_secs(5))
//!     .child(ChildSpec::worker("worker", || Worker));
//! let root = SupervisorRef::start(&node, spec).await?;
//! let children = root.which_children().await?;
//! let worker = children[0].actor.as_ref().unwrap().downcast::<ReplyTo<&'static str>>().unwrap();
//! assert_eq!(worker.ask(|r| r, Duration::from_secs(1)).await?, "working");
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod agent;
pub mod app;
mod core;
mod error;
mod handle;
pub mod placement;
pub mod program;
pub mod singleton;
mod snapshot;
mod spec;
mod supervisor;

pub use crate::core::ChildState;
pub use error::SupervisorError;
pub use handle::{DEFAULT_CALL_TIMEOUT, Granted, SupervisorRef};
pub use snapshot::{ChildCounts, ChildInfo, ChildSnapshot, TreeSnapshot};
pub use spec::{
    Backoff, ChildKind, ChildSpec, DEFAULT_WORKER_SHUTDOWN, Intensity, Placement, Restart,
    Shutdown, Strategy, SupervisorSpec,
};
pub use supervisor::{Supervisor, SupervisorMsg};
