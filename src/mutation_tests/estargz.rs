//! eStargz: blobs (footer, TOC, chunk members) mutated and read as a lazy
//! reader reads them, and tar headers mutated and written as eStargz (what
//! the writer accepts must read back).

use super::layer::tar_seeds;
use crate::fuzzing::{estargz_blob, estargz_write};
use crate::testutil::mutate::{count, mutate_in_place, run, run_with};

fn blob_seeds() -> Vec<Vec<u8>> {
    tar_seeds()
        .iter()
        .filter_map(|t| {
            let mut blob = Vec::new();
            crate::layer::estargz::write(std::io::Cursor::new(t), &mut blob).ok()?;
            Some(blob)
        })
        .collect()
}

#[test]
fn the_seeds_read_back() {
    let seeds = blob_seeds();
    assert!(seeds.len() >= 3, "{} seeds", seeds.len());
    for (i, s) in seeds.iter().enumerate() {
        estargz_blob(s).unwrap_or_else(|e| panic!("seed {i}: {e}"));
    }
}

#[test]
fn mutated_estargz_blobs() {
    run_with(
        "estargz blobs",
        blob_seeds(),
        count(20000),
        mutate_in_place,
        estargz_blob,
    );
}

#[test]
fn mutated_tars_written_as_estargz() {
    run("estargz writer", tar_seeds(), count(1000), estargz_write);
}
