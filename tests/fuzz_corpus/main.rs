//! The fuzz targets' checks (`fuzz/src/`), run by a plain `cargo test` over every input the
//! fuzzers start from: the checked-in corpus (`fuzz/corpus/<target>/`) and the inputs saved
//! from past failures (`fuzz/regressions/<target>/`). The fuzzing itself needs cargo-fuzz and
//! libFuzzer (`.ci/fuzz`); this keeps the properties checked, on inputs of every kind, in the
//! main build.

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/frame_decoder.rs"]
mod frame_decoder;
#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/handshake.rs"]
mod handshake;
#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/registry_command.rs"]
mod registry_command;

use std::path::Path;

/// A target's check: runs one input, panics if a property fails.
type Check = fn(&[u8]);

#[test]
fn every_corpus_and_regression_input_passes_its_target_s_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let targets: [(&str, Check); 3] = [
        ("frame_decoder", frame_decoder::check),
        ("handshake", handshake::check),
        ("registry_command", registry_command::check),
    ];
    for (target, check) in targets {
        let mut inputs = 0;
        for dir in [root.join("corpus"), root.join("regressions")] {
            let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("a directory entry").path();
                let input = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                check(&input);
                inputs += 1;
            }
        }
        assert!(
            inputs > 0,
            "no corpus for fuzz target {target} under {}",
            root.display()
        );
    }
}
