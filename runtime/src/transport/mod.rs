//! The data bus between nodes: QUIC connections with mutual TLS.
//!
//! - [`certs`]: the cluster CA and node certificates (what `ensemble cert` makes).
//! - [`frame`]: length-prefixed MessagePack frames, with a maximum size.
//! - `tls`: rustls/quinn configurations that accept only peers with a certificate from the
//!   cluster CA, and read the node name a peer's certificate carries.

pub mod certs;
pub mod frame;
pub(crate) mod tls;
