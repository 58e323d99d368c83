//! Clusters: nodes that find each other, keep a full mesh of connections, and watch each
//! other's heartbeats.
//!
//! - `wire`: what nodes say on a connection's control stream.
//! - `handshake`: whether to accept a peer (version, cluster, certificate name).
//! - `membership`: the member table and its events, pure.
//! - [`phi`]: the phi accrual failure detector, pure.
//! - `service`: [`Cluster`], the service that runs it all for one node.
//! - `lane`: the writing end of a data lane, which lets frames ready together leave together.
//! - `control`: the writing end of the control stream, and its heartbeats.

mod control;
mod handshake;
mod lane;
mod membership;
pub mod phi;
mod service;
mod wire;

#[doc(hidden)]
pub use handshake::check as check_hello;
pub use handshake::{MAX_HEARTBEAT_INTERVAL, Refusal};
pub use membership::{Member, MemberEvent, MemberStatus};
pub use phi::{PhiAccrual, PhiConfig};
pub use service::{
    Cluster, ClusterConfig, ClusterError, DownDecision, MAX_MAX_FRAME, MIN_MAX_FRAME,
};
pub use wire::{Control, Hello, MemberView, PROTOCOL_VERSION};
