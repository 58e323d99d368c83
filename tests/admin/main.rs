//! The admin HTTP server: every endpoint of the JSON API against an in-process cluster of two
//! nodes, app changes over HTTP, Prometheus metrics, the bearer token, the refusal to listen
//! beyond loopback without one, and what a node without a cluster or registry answers.
//!
//! The dashboard itself is tested in a real browser by `tests/dashboard`.

mod api;
mod auth;
mod bounds;
#[allow(dead_code)]
mod cluster;
mod http;
