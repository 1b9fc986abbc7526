//! Hostile bytes: seeded mutations (`testutil::mutate`) of real inputs fed
//! to every parser of untrusted input through `crate::fuzzing`, the glue the
//! cargo-fuzz targets in `fuzz/` use too. Each case must give a result or a
//! one-line error: no panic, no hang, no allocation its size does not
//! justify, and a store it touched stays fsck-clean. `LAYERFS_MUTATIONS=N`
//! runs N cases per parser instead of the default; `LAYERFS_MUTATION_START`
//! moves the first case number (to explore, or to replay one case).
//!
//! Inputs a mutation once broke are kept in `regressions.rs`.

mod archive;
mod dockerfile;
mod estargz;
mod layer;
mod oci;
mod registry;
mod regressions;

/// A few real files of `../shared/fixtures` as extra seeds (the tier that
/// says loudly when it skips); never copied into the repository.
fn fixture_seeds(test: &str, paths: &[&str]) -> Vec<Vec<u8>> {
    let Some(dir) = crate::testutil::fixtures_dir(test) else {
        return Vec::new();
    };
    paths
        .iter()
        .filter_map(|p| std::fs::read(dir.join(p)).ok())
        .collect()
}

/// Writes the seeds of each fuzz target to `fuzz/corpus/TARGET/` (or under
/// `LAYERFS_FUZZ_CORPUS`), so a run by hand starts from real inputs:
/// `cargo test --lib write_fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_corpus() {
    use crate::fuzzing::{IndexFixture, sample_docker_archive};
    use crate::testutil::{gzip, zstd};
    let root = std::env::var_os("LAYERFS_FUZZ_CORPUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus").into());
    let tars = layer::tar_seeds();
    let mut layers = tars.clone();
    layers.extend(tars.iter().map(|t| gzip(t)));
    layers.extend(tars.iter().map(|t| zstd(t)));
    let saved = sample_docker_archive();
    let targets: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("layer", layers),
        ("layer_index", vec![IndexFixture::new().seed()]),
        ("oci", oci::seeds()),
        ("docker_manifest", vec![archive::manifest_json(&saved)]),
        ("archive", vec![gzip(&saved), saved]),
        ("dockerfile", dockerfile::seeds()),
        (
            "registry",
            [registry::auth_seeds(), registry::response_seeds()].concat(),
        ),
    ];
    for (target, seeds) in targets {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
        }
    }
}
