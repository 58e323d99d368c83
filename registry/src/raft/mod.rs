//! Raft: the replicated log under the registry (openraft), its storage (fjall), its RPCs
//! (asks over the runtime's transport) and the leader's lease for reads (`lease`).

pub(crate) mod lease;
pub mod log_store;
pub(crate) mod network;
pub mod runtime;
pub mod snapshot_store;
pub mod state_machine;
pub mod types;

pub use state_machine::StateMachine;
pub use types::{Batch, TypeConfig, Voter, raft_id};
