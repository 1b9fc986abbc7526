//! A layer index file, its checksum resealed so damage reaches its tables.
//! (The fixture's store, in /dev/shm, outlives the run: remove it by hand.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static FIXTURE: OnceLock<layerfs::fuzzing::IndexFixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let _ = FIXTURE.get_or_init(Default::default).read(data, true);
});
