//! A layer index file, its checksum resealed so damage reaches its tables.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = layerfs::fuzzing::layer_index(data, true);
});
