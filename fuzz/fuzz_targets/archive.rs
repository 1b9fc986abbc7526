//! A docker-archive or oci-archive (plain, gzip, zstd) loaded into a throwaway store.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = layerfs::fuzzing::archive(data);
});
