//! Writes a seed corpus for `read_dump`: a few sound dumps built with the
//! real writer, plus the same dumps with one byte changed and the checksums
//! recomputed, so the fuzzer starts past the CRC checks.
//!
//! `cargo run --example make_corpus -- corpus/read_dump`

use heapdump_formats::read::DumpView;
use heapdump_formats::testing::{DumpBuilder, SplitMix64, reseal_flip};

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .unwrap_or_else(|| "corpus/read_dump".into());
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    // Version 1 seeds too: the reader still reads that layout.
    let version_1 = |mut builder: DumpBuilder| {
        builder.major = Some(1);
        builder
    };
    let seeds = [
        ("empty", DumpBuilder::default()),
        ("small", DumpBuilder::small()),
        ("realistic-8", DumpBuilder::realistic(8)),
        ("realistic-40", DumpBuilder::realistic(40)),
        ("small-v1", version_1(DumpBuilder::small())),
        ("realistic-40-v1", version_1(DumpBuilder::realistic(40))),
    ];
    let mut rng = SplitMix64(1);
    let mut written = 0;
    for (name, builder) in seeds {
        let bytes = builder.to_bytes();
        std::fs::write(dir.join(format!("{name}.hdump")), &bytes).expect("write a seed");
        written += 1;
        let view = DumpView::parse(&bytes).expect("seeds parse");
        for k in 0..8 {
            let at = rng.below(bytes.len() as u64) as usize;
            let mask = 1u8 << (rng.below(8) as u8);
            if let Some(resealed) = reseal_flip(&bytes, &view, at, mask) {
                std::fs::write(dir.join(format!("{name}-resealed-{k}.hdump")), resealed)
                    .expect("write a seed");
                written += 1;
            }
        }
    }
    println!("wrote {written} seeds to {}", dir.display());
}
