//! How large the registry lets commands, log entries and Raft messages grow.
//!
//! Everything the registry sends between nodes must fit one frame of the transport
//! (`max_frame_size`, 8 MiB by default), and a message that does not fit is refused, not cut.
//! A log entry the leader cannot send would stop replication for good, so the limits are
//! set from the frame size, each with room for the next: a command takes at most an eighth
//! of a frame, a log entry (and a client's request) a quarter, an AppendEntries or a
//! snapshot chunk half.

use crate::state::Command;

/// The smallest frame limit the registry runs with: under it, a command could take only a
/// few kilobytes.
pub(crate) const MIN_FRAME: usize = 64 << 10;

/// The limits for one frame size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The most one command may take (`Command::approx_bytes`): larger ones are refused with
    /// [`RegistryError::TooLarge`](crate::RegistryError::TooLarge) before they are sent.
    pub(crate) command: usize,
    /// The most bytes of commands one log entry, or one request of a client, gathers; also
    /// the size of the parts a whole state is sent to a copy in.
    pub(crate) entry: usize,
    /// The most bytes of entries one AppendEntries carries, the size of a snapshot's chunks,
    /// and the most an answer to a read may take.
    pub(crate) append: usize,
}

impl Limits {
    /// The limits under frames of at most `max_frame` bytes.
    pub(crate) fn for_frame(max_frame: usize) -> Limits {
        Limits {
            command: max_frame / 8,
            entry: max_frame / 4,
            append: max_frame / 2,
        }
    }

    /// The first of `commands` over the limit of a command, named briefly, and its size.
    pub(crate) fn oversized(&self, commands: &[Command]) -> Option<(String, usize)> {
        commands.iter().find_map(|command| {
            let bytes = command.approx_bytes();
            (bytes > self.command).then(|| (command.brief(), bytes))
        })
    }
}

/// About how many bytes `commands` take encoded ([`Command::approx_bytes`]).
pub(crate) fn approx_bytes(commands: &[Command]) -> usize {
    commands.iter().map(Command::approx_bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_leaves_room_for_the_next() {
        let limits = Limits::for_frame(8 << 20);
        assert_eq!(limits.command, 1 << 20);
        assert!(limits.command * 2 <= limits.entry);
        assert!(limits.entry * 2 <= limits.append);
        assert!(limits.append < 8 << 20);
    }

    #[test]
    fn a_large_command_is_named_briefly_and_a_small_one_whole() {
        let small = Command::Put {
            key: "k".into(),
            value: b"v".to_vec(),
        };
        assert_eq!(small.brief(), format!("{small:?}"));
        let large = Command::Put {
            key: "big".into(),
            value: vec![7; 1 << 20],
        };
        let brief = large.brief();
        assert!(brief.starts_with("Put { key: \"big\""), "{brief}");
        let size = format!("… (about {} bytes)", large.approx_bytes());
        assert!(brief.len() < 300 && brief.ends_with(&size), "{brief}");
        assert!(large.approx_bytes() > 1 << 20);
    }
}
