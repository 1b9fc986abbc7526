//! A layer blob (tar, gzip, zstd) ingested into a throwaway store and read back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = layerfs::fuzzing::layer_blob(data);
});
