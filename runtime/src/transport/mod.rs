//! The data bus between nodes: QUIC connections with mutual TLS.
//!
//! - [`certs`]: the cluster CA and node certificates (what `ensemble cert` makes).
//! - [`frame`]: length-prefixed MessagePack frames, with a maximum size.
//! - [`simnet`]: a simulated network (seeded loss, duplication, delay, partitions) that a
//!   cluster's QUIC endpoint can run over in simulation tests.
//! - [`tls`]: rustls/quinn configurations that accept only peers with a certificate from the
//!   cluster CA, and read the node name a peer's certificate carries.

pub mod certs;
pub mod frame;
pub mod simnet;
pub mod tls;
