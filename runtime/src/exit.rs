//! Why an actor stopped.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// The reason an actor ended, delivered to links, monitors and the actor's `stopped` hook.
///
/// Only [`ExitReason::Normal`] is a normal exit: every other reason travels along links and kills
/// linked actors that do not trap exits (as in Erlang, `Shutdown` is abnormal for links; a
/// supervisor may still treat it as clean, see `is_clean`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExitReason {
    /// The actor finished its work or was stopped with `stop`.
    Normal,
    /// The actor was asked to stop by its parent, its supervisor or the node's shutdown.
    Shutdown,
    /// The actor was killed with `kill`, or outlived a shutdown deadline; its `stopped` hook did
    /// not run.
    Killed,
    /// A hook of the actor panicked; the text is the panic message.
    Panicked(String),
    /// A hook of the actor returned an error, or it stopped itself with this reason.
    Failed(String),
    /// The actor did not exist (already stopped) when it was linked or monitored.
    NoProc,
    /// The node the actor ran on was declared down.
    NodeDown(NodeId),
}

impl ExitReason {
    /// True for [`ExitReason::Normal`] only; every other reason propagates along links.
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal)
    }

    /// True for `Normal` and `Shutdown`: the exits a transient child is not restarted after.
    pub fn is_clean(&self) -> bool {
        matches!(self, ExitReason::Normal | ExitReason::Shutdown)
    }

    /// This reason with its text (of `Panicked` or `Failed`) cut to at most `max` bytes, on a
    /// character boundary, saying how much was cut.
    pub(crate) fn with_text_cut(self, max: usize) -> ExitReason {
        match self {
            ExitReason::Panicked(text) => ExitReason::Panicked(cut_text(text, max)),
            ExitReason::Failed(text) => ExitReason::Failed(cut_text(text, max)),
            other => other,
        }
    }
}

/// `text` with at most `max` bytes of it kept, cut on a character boundary, and a few words
/// after it saying how much was cut.
pub(crate) fn cut_text(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} more bytes cut)", &text[..end], text.len() - end)
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Panicked(msg) => write!(f, "panicked: {msg}"),
            ExitReason::Failed(msg) => write!(f, "failed: {msg}"),
            ExitReason::NoProc => f.write_str("noproc (no such actor)"),
            ExitReason::NodeDown(node) => write!(f, "node {node} is down"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_normal_is_normal_and_shutdown_is_clean() {
        assert!(ExitReason::Normal.is_normal());
        assert!(!ExitReason::Shutdown.is_normal());
        assert!(ExitReason::Shutdown.is_clean());
        assert!(!ExitReason::Killed.is_clean());
        assert!(!ExitReason::Failed("x".into()).is_clean());
    }

    #[test]
    fn a_long_text_is_cut_on_a_character_boundary_and_says_so() {
        let long = ExitReason::Failed("é".repeat(10)).with_text_cut(5);
        assert_eq!(long, ExitReason::Failed("éé... (16 more bytes cut)".into()));
        let short = ExitReason::Panicked("boom".into()).with_text_cut(4);
        assert_eq!(short, ExitReason::Panicked("boom".into()));
        assert_eq!(ExitReason::Killed.with_text_cut(0), ExitReason::Killed);
    }

    #[test]
    fn display_is_readable() {
        assert_eq!(
            ExitReason::Panicked("boom".into()).to_string(),
            "panicked: boom"
        );
        assert_eq!(
            ExitReason::NodeDown(NodeId::new("n2", 3)).to_string(),
            "node n2#3 is down"
        );
    }
}
