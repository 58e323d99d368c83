//! The `ensemble` binary, run as a user runs it: bad arguments and bad config refused with
//! errors that name what is wrong, certificates made with `cert`, a two-node cluster started
//! with `node` and looked at and changed with the client commands, the client commands against
//! a scripted admin server, and `demo` run to its end and interrupted.

#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;

mod arguments;
mod client;
mod cluster;
mod demo;
mod util;
