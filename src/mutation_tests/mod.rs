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
