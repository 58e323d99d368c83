//! The frame decoder, fed a byte stream in arbitrary chunks.
//!
//! # Input
//!
//! - byte 0: the maximum frame size, in units of 8 bytes (0 to 2040 bytes: small, so that
//!   oversized announcements are common);
//! - byte 1: how the stream is cut: 0 feeds it whole, any other value seeds the chunk sizes
//!   (1 to `(byte & 63) + 1` bytes each);
//! - the rest: the stream, as a QUIC stream would yield it.
//!
//! # Properties
//!
//! - Nothing panics.
//! - The decoder yields exactly the frames a straightforward reading of the stream finds, in
//!   order, none over the maximum; it waits only while the next frame is incomplete.
//! - An announced length over the maximum is reported as `TooLarge` (with that length) as
//!   soon as its header is in, before any of the frame is buffered.
//! - Every frame that decodes as a [`Control`] (what the control stream carries) or a
//!   [`Data`] (what a data lane carries) is re-encoded and decodes to the same value.

use ensemble_runtime::cluster::Control;
use ensemble_runtime::remote::Data;
use ensemble_runtime::transport::frame::{
    self, DEFAULT_MAX_FRAME, FrameDecoder, FrameError, HEADER_LEN,
};

/// The maximum frame size for the size byte.
pub fn max_frame(size: u8) -> usize {
    usize::from(size) * 8
}

/// Runs one input; panics if a property fails.
pub fn check(data: &[u8]) {
    let [size, cut, stream @ ..] = data else {
        return;
    };
    let max = max_frame(*size);
    let mut decoder = FrameDecoder::new(max);
    // Bytes handed to the decoder, and bytes of it returned as frames (headers included).
    let mut fed = 0;
    let mut taken = 0;
    for chunk in Chunks::new(stream, *cut) {
        decoder.extend(chunk);
        fed += chunk.len();
        loop {
            let header = stream
                .get(taken..taken + HEADER_LEN)
                .filter(|_| fed - taken >= HEADER_LEN)
                .map(|h| u32::from_be_bytes(h.try_into().expect("4 bytes")) as usize);
            match decoder.next_frame() {
                Ok(Some(payload)) => {
                    let len = header.expect("a frame was yielded before its header was fed");
                    assert!(
                        len <= max,
                        "a frame of {len} bytes passed a maximum of {max}"
                    );
                    assert!(fed - taken >= HEADER_LEN + len, "a frame was yielded early");
                    let start = taken + HEADER_LEN;
                    assert_eq!(
                        &payload[..],
                        &stream[start..start + len],
                        "wrong frame bytes"
                    );
                    taken = start + len;
                    round_trip(&payload);
                }
                Ok(None) => {
                    if let Some(len) = header {
                        assert!(len <= max, "a {len}-byte frame over {max} was not refused");
                        assert!(
                            fed - taken < HEADER_LEN + len,
                            "a complete frame was held back"
                        );
                    }
                    assert_eq!(decoder.buffered(), fed - taken, "bytes lost or invented");
                    break;
                }
                Err(err) => {
                    let FrameError::TooLarge { len, max: refused } = err else {
                        panic!("the decoder refused a frame for another reason than size: {err}");
                    };
                    assert_eq!(refused, max);
                    assert_eq!(Some(len), header, "TooLarge names another length");
                    assert!(len > max, "a {len}-byte frame under {max} was refused");
                    assert!(!err.to_string().is_empty());
                    // The node closes the stream here: nothing after an error can be trusted.
                    return;
                }
            }
        }
    }
}

/// Decodes a payload as the node does on each kind of stream; whatever decodes must survive
/// being encoded and decoded again.
pub fn round_trip(payload: &[u8]) {
    if let Ok(control) = frame::decode::<Control>(payload) {
        let framed = frame::encode_one(&control, DEFAULT_MAX_FRAME)
            .unwrap_or_else(|err| panic!("{control:?} decoded but cannot be encoded: {err}"));
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.extend(&framed);
        let again = decoder
            .next_frame()
            .expect("own frame")
            .expect("whole frame");
        assert_eq!(decoder.buffered(), 0);
        assert_eq!(frame::decode::<Control>(&again).as_ref(), Ok(&control));
    }
    if let Ok(data) = frame::decode_borrowed::<Data<'_>>(payload) {
        let framed = frame::encode_one(&data, DEFAULT_MAX_FRAME)
            .unwrap_or_else(|err| panic!("{data:?} decoded but cannot be encoded: {err}"));
        let again = &framed[HEADER_LEN..];
        assert_eq!(
            frame::decode_borrowed::<Data<'_>>(again).as_ref(),
            Ok(&data)
        );
    }
}

/// The stream, cut as byte 1 of the input says.
struct Chunks<'a> {
    rest: &'a [u8],
    /// Largest chunk; 0 for the whole stream at once.
    limit: u32,
    /// xorshift32 state.
    state: u32,
}

impl<'a> Chunks<'a> {
    fn new(stream: &'a [u8], cut: u8) -> Self {
        Chunks {
            rest: stream,
            limit: if cut == 0 { 0 } else { u32::from(cut & 63) + 1 },
            state: 0x9e37_79b9 ^ u32::from(cut),
        }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let n = if self.limit == 0 {
            self.rest.len()
        } else {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 17;
            self.state ^= self.state << 5;
            (1 + self.state % self.limit) as usize
        };
        let (chunk, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        Some(chunk)
    }
}
