//! The local actor core: isolation, links, monitors, asks, mailboxes, ordering, timers, names
//! and shutdown, on one node.

mod ask;
mod hooks;
mod isolation;
mod links;
mod mailbox;
mod monitors;
mod names;
mod ordering;
mod shutdown;
mod timers;
mod util;
