//! Fuzz checks for what an Ensemble node decodes from outside: frames cut out of a QUIC stream,
//! the first control frame of a connection, and the registry's commands as its log and its
//! proposals carry them.
//!
//! # Layout
//!
//! - [`frame_decoder`]: arbitrary bytes, cut into arbitrary chunks, through the frame decoder,
//!   every frame decoded as the control and data types the node reads.
//! - [`handshake`]: arbitrary bytes as a connection's first control frame, through the
//!   acceptance decision the node makes.
//! - [`registry_command`]: arbitrary bytes as log entries or proposed commands, applied to a
//!   fresh registry state while its invariants are checked.
//! - [`seeds`]: real values of each kind, encoded as the node encodes them: the seed corpus
//!   (`src/bin/seed_corpus.rs` writes it to `corpus/<target>/`).
//!
//! Each check is a plain function of the input bytes that panics when a property fails, so
//! the `fuzz_targets/` are one-line wrappers and `tests/corpus.rs` replays the corpus and the
//! saved regressions through the same code without libFuzzer.

pub mod frame_decoder;
pub mod handshake;
pub mod registry_command;
pub mod seeds;

/// A target's check: runs one input, panics if a property fails.
pub type Check = fn(&[u8]);

/// The fuzz targets, by the name of their binary and their corpus directory.
pub const TARGETS: [(&str, Check); 3] = [
    ("frame_decoder", frame_decoder::check),
    ("handshake", handshake::check),
    ("registry_command", registry_command::check),
];
