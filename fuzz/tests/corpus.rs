//! Replays the seeds, the checked-in corpus and every saved regression through the fuzz
//! checks, without libFuzzer: a plain `cargo test --manifest-path fuzz/Cargo.toml`.

use std::fs;
use std::path::Path;

use ensemble_fuzz::{TARGETS, frame_decoder, seeds};
use ensemble_registry::raft::TypeConfig;
use ensemble_registry::state::Command;
use ensemble_runtime::cluster::Control;
use ensemble_runtime::remote::Data;
use ensemble_runtime::transport::frame::{self, FrameDecoder, HEADER_LEN};
use openraft::Entry;
use serde::Deserialize;

#[test]
fn every_seed_passes_its_check() {
    for seed in seeds::all() {
        let (_, check) = TARGETS
            .iter()
            .find(|(name, _)| *name == seed.target)
            .expect("a seed of a known target");
        check(&seed.bytes);
    }
}

/// A seed that does not decode would only test the rejection of garbage: each must decode as
/// the form its target reads, to its last byte.
#[test]
fn every_seed_decodes_whole() {
    for seed in seeds::all() {
        let whole = match seed.target {
            "frame_decoder" => frame_decoder_seed_decodes(&seed.bytes),
            "handshake" => frame::decode::<Control>(&seed.bytes).is_ok(),
            "registry_command" => registry_seed_decodes(&seed.bytes),
            other => panic!("a seed of an unknown target {other}"),
        };
        assert!(whole, "{}/{} does not decode", seed.target, seed.name);
    }
}

/// Every whole frame in the stream decodes as a control or a data frame, but for the empty and
/// the garbage frames of the seeds made for them; a seed yields a frame unless it is made to be
/// refused or cut short.
fn frame_decoder_seed_decodes(bytes: &[u8]) -> bool {
    let mut decoder = FrameDecoder::new(frame_decoder::max_frame(bytes[0]));
    decoder.extend(&bytes[2..]);
    let mut frames = 0;
    while let Ok(Some(payload)) = decoder.next_frame() {
        frames += 1;
        let control = frame::decode::<Control>(&payload).is_ok();
        let data = frame::decode_borrowed::<Data<'_>>(&payload).is_ok();
        let garbage = payload.is_empty() || payload[..] == [0xc1, 0xff, 0x00];
        if !control && !data && !garbage {
            return false;
        }
    }
    frames > 0 || bytes.len() < 2 + HEADER_LEN + 1 || bytes[0] < 255
}

fn registry_seed_decodes(bytes: &[u8]) -> bool {
    let mut rest = &bytes[1..];
    while !rest.is_empty() {
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        let decoded = if bytes[0].is_multiple_of(2) {
            Entry::<TypeConfig>::deserialize(&mut de).is_ok()
        } else {
            Vec::<Command>::deserialize(&mut de).is_ok()
        };
        if !decoded {
            return false;
        }
    }
    true
}

#[test]
fn the_checked_in_corpus_is_the_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for seed in seeds::all() {
        let path = root.join(seed.target).join(&seed.name);
        let on_disk = fs::read(&path)
            .unwrap_or_else(|err| panic!("{}: {err} (run the seed_corpus binary)", path.display()));
        assert_eq!(
            on_disk,
            seed.bytes,
            "{} is stale: run `cargo run --manifest-path fuzz/Cargo.toml --bin seed_corpus`",
            path.display()
        );
    }
}

#[test]
fn saved_inputs_pass_their_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (target, check) in TARGETS {
        for dir in [
            root.join("corpus").join(target),
            root.join("regressions").join(target),
        ] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("a directory entry").path();
                check(&fs::read(&path).expect("a saved input"));
            }
        }
    }
}
