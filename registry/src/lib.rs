//! Ensemble's registry: the coordination service of a cluster, on openraft.

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
