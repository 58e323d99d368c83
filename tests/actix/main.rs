//! The actix bridge (`ensemble::actix`, the `actix` feature): actix actors reached by name from
//! another node, asks answered, monitors fired and names released when the actix actor stops,
//! and actix actors telling and asking Ensemble actors on other nodes.
//!
//! Each test runs two nodes in this process, joined over real QUIC with mutual TLS on loopback,
//! with the registry on both, and an actix system on a thread of its own next to node `a`.

mod bridge;
mod lifecycle;
mod reverse;
mod util;
