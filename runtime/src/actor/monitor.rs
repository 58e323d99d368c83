//! Monitors: one-way watches that deliver exactly one [`Down`].

use crate::exit::ExitReason;
use crate::id::ActorId;

/// Identifies one monitor, as returned by `Context::monitor`; unique within the watcher's
/// node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MonitorRef(u64);

impl MonitorRef {
    pub(crate) fn from_raw(raw: u64) -> Self {
        MonitorRef(raw)
    }

    pub(crate) fn raw(self) -> u64 {
        self.0
    }
}

/// A monitored actor ended. Delivered once per monitor to the watcher's `on_down` hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Down {
    /// The monitor that fired.
    pub monitor: MonitorRef,
    /// The actor that ended.
    pub actor: ActorId,
    /// Why it ended; [`ExitReason::NoProc`] if it was already gone when the monitor was set.
    pub reason: ExitReason,
}
