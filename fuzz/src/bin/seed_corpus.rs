//! Writes the seed corpus: `corpus/<target>/<seed>` for every seed of `ensemble_fuzz::seeds`.
//! Files of earlier runs that are no longer seeds are removed, so the directory holds exactly
//! the seeds.
//!
//! Run from anywhere: `cargo run --manifest-path fuzz/Cargo.toml --bin seed_corpus`.

use std::fs;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let seeds = ensemble_fuzz::seeds::all();
    for (target, _) in ensemble_fuzz::TARGETS {
        let dir = root.join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
    }
    let mut total = 0;
    for seed in &seeds {
        fs::write(root.join(seed.target).join(&seed.name), &seed.bytes)?;
        total += seed.bytes.len();
    }
    println!(
        "wrote {} seeds ({total} bytes) under {}",
        seeds.len(),
        root.display()
    );
    Ok(())
}
