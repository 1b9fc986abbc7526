//! A Dockerfile and a .dockerignore (the same bytes as both).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = layerfs::fuzzing::dockerfile(data);
});
