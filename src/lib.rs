//! Ensemble: a distributed actor runtime in the spirit of Erlang/OTP and Akka.
//!
//! This facade re-exports the workspace crates:
//!
//! - [`runtime`] (`ensemble-runtime`): actors, mailboxes, links, monitors, the node, and
//!   clusters of nodes (`cluster`, `remote`, `transport`); its items are also re-exported at
//!   the root of this crate.
//! - [`registry`] (`ensemble-registry`): the coordination service on Raft: member sessions
//!   (which decide when a node is down), global names, groups, locks with fencing tokens, and
//!   config.
//! - [`supervisor`] (`ensemble-supervisor`): supervision trees, placement across nodes,
//!   cluster singletons and apps.
//! - [`kv`]: the example application, a partitioned, replicated key-value service that keeps
//!   its own master/slave logic while the runtime places, restarts and names its actors.
//! - `actix` (with the `actix` cargo feature): actix actors reached through an `ActorRef` from
//!   any node, and Ensemble actors reached from actix actors (see `docs/actix.md`).
//!
//! Most programs only need the [`prelude`]:
//!
//! ```
//! use ensemble::prelude::*;
//!
//! struct Greeter;
//!
//! impl Actor for Greeter {
//!     type Msg = (String, ReplyTo<String>);
//!
//!     async fn handle(&mut self, (name, reply): Self::Msg, _ctx: &mut Context<Self>) -> ActorResult {
//!         let _ = reply.send(format!("hello, {name}"));
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::new(NodeConfig::new("example"))?;
//! let greeter = node.spawn(Greeter)?;
//! let greeting = greeter
//!     .ask(|reply| ("ada".to_string(), reply), std::time::Duration::from_secs(1))
//!     .await?;
//! assert_eq!(greeting, "hello, ada");
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "actix")]
pub mod actix;
pub mod admin;
pub mod host;
/// An example application: a partitioned, replicated key-value service on actors and the registry.
pub mod kv;

pub use ensemble_registry as registry;
pub use ensemble_runtime as runtime;
pub use ensemble_runtime::*;
pub use ensemble_supervisor as supervisor;
