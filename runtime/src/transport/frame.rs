//! Frames: how messages are cut out of a QUIC stream.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of MessagePack
//! (`rmp-serde`). The decoder is pure (bytes in, frames out) so that it can be fuzzed and
//! property-tested apart from any socket; the connection code feeds it what the stream yields.
//!
//! # Bounds
//!
//! A frame longer than the configured maximum is refused before any of it is buffered, with
//! [`FrameError::TooLarge`]: a peer cannot make a node allocate more than the maximum for one
//! frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Default largest frame: 8 MiB.
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;

/// A frame could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame announces more bytes than allowed.
    #[error(
        "frame of {len} bytes is over the maximum of {max} bytes (raise `max_frame_size` on both nodes if such messages are intended)"
    )]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The frame's bytes are not a valid message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A value could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Appends one frame holding `value` to `buf`. Fails (leaving `buf` as it was) if the
/// encoding is over `max`.
pub fn encode<T: Serialize + ?Sized>(
    value: &T,
    max: usize,
    buf: &mut BytesMut,
) -> Result<(), FrameError> {
    let start = buf.len();
    buf.put_u32(0);
    let mut writer = buf.writer();
    let encoded = rmp_serde::encode::write_named(&mut writer, value);
    let buf = writer.into_inner();
    if let Err(err) = encoded {
        buf.truncate(start);
        return Err(FrameError::Encode(err.to_string()));
    }
    let len = buf.len() - start - HEADER_LEN;
    if len > max {
        buf.truncate(start);
        return Err(FrameError::TooLarge { len, max });
    }
    buf[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Encodes one value as a frame of its own.
pub fn encode_one<T: Serialize + ?Sized>(value: &T, max: usize) -> Result<Bytes, FrameError> {
    let mut buf = BytesMut::new();
    encode(value, max, &mut buf)?;
    Ok(buf.freeze())
}

/// Decodes a frame's payload as a `T`.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    rmp_serde::from_slice(payload).map_err(|err| FrameError::Malformed(err.to_string()))
}

/// Decodes a frame's payload as a `T` that borrows from it (no copies of strings and bytes).
pub fn decode_borrowed<'a, T: serde::Deserialize<'a>>(payload: &'a [u8]) -> Result<T, FrameError> {
    rmp_serde::from_slice(payload).map_err(|err| FrameError::Malformed(err.to_string()))
}

/// Cuts frames out of a byte stream.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    buf: BytesMut,
}

impl FrameDecoder {
    /// A decoder refusing frames over `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            buf: BytesMut::new(),
        }
    }

    /// Adds bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's payload, `None` if more bytes are needed. After an error the
    /// stream cannot be trusted to be in sync and must be closed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buf[..HEADER_LEN].try_into().expect("4 bytes")) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if self.buf.len() < HEADER_LEN + len {
            // Reserve what the frame needs at once rather than growing step by step.
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Bytes received but not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping(u64),
        Text { body: String, tags: Vec<String> },
        Blob(#[serde(with = "serde_bytes_compat")] Vec<u8>),
    }

    mod serde_bytes_compat {
        pub(super) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
        pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<u8>, D::Error> {
            serde::Deserialize::deserialize(d)
        }
    }

    fn msg() -> impl Strategy<Value = Msg> {
        prop_oneof![
            any::<u64>().prop_map(Msg::Ping),
            (".{0,40}", prop::collection::vec(".{0,8}", 0..4))
                .prop_map(|(body, tags)| Msg::Text { body, tags }),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(Msg::Blob),
        ]
    }

    #[test]
    fn a_frame_round_trips() {
        let bytes = encode_one(&Msg::Ping(7), DEFAULT_MAX_FRAME).unwrap();
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.extend(&bytes);
        let frame = d.next_frame().unwrap().unwrap();
        assert_eq!(decode::<Msg>(&frame).unwrap(), Msg::Ping(7));
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn oversized_frames_are_refused_on_both_ends() {
        let big = Msg::Blob(vec![1; 1000]);
        assert!(matches!(
            encode_one(&big, 100),
            Err(FrameError::TooLarge { max: 100, .. })
        ));
        let bytes = encode_one(&big, DEFAULT_MAX_FRAME).unwrap();
        let mut d = FrameDecoder::new(100);
        d.extend(&bytes[..HEADER_LEN]);
        let err = d.next_frame().unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { max: 100, .. }));
        assert!(err.to_string().contains("max_frame_size"));
    }

    #[test]
    fn a_failed_encode_leaves_the_buffer_as_it_was() {
        let mut buf = BytesMut::new();
        encode(&Msg::Ping(1), 100, &mut buf).unwrap();
        let before = buf.clone();
        assert!(encode(&Msg::Blob(vec![0; 500]), 100, &mut buf).is_err());
        assert_eq!(buf, before);
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.extend(&[0, 0, 0, 3, 0xc1, 0xff, 0x00]);
        let frame = d.next_frame().unwrap().unwrap();
        assert!(matches!(
            decode::<Msg>(&frame),
            Err(FrameError::Malformed(_))
        ));
    }

    proptest! {
        /// Any sequence of messages, cut into any chunks, decodes to the same sequence.
        #[test]
        fn frames_survive_any_chunking(msgs in prop::collection::vec(msg(), 0..20), cuts in prop::collection::vec(1usize..64, 1..50)) {
            let mut wire = BytesMut::new();
            for m in &msgs {
                encode(m, DEFAULT_MAX_FRAME, &mut wire).unwrap();
            }
            let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut out = Vec::new();
            let mut rest: &[u8] = &wire;
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                d.extend(&rest[..n]);
                rest = &rest[n..];
                i += 1;
                while let Some(frame) = d.next_frame().unwrap() {
                    out.push(decode::<Msg>(&frame).unwrap());
                }
            }
            prop_assert_eq!(out, msgs);
            prop_assert_eq!(d.buffered(), 0);
        }

        /// Arbitrary bytes never panic the decoder: they give frames, errors or a wait.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), max in 0usize..256) {
            let mut d = FrameDecoder::new(max);
            d.extend(&bytes);
            while let Ok(Some(frame)) = d.next_frame() {
                prop_assert!(frame.len() <= max);
                let _ = decode::<Msg>(&frame);
            }
        }
    }
}
