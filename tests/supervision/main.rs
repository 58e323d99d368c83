//! Supervision trees: strategies and restart types, intensity escalating up a tree, shutdown
//! timeouts, dynamic children, backoff, start failures and introspection.

mod backoff;
mod dynamic;
mod escalation;
mod lifecycle;
mod start_failures;
mod strategies;
mod util;
