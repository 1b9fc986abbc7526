//! A docker-archive manifest.json, loaded with the members of a real archive.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = layerfs::fuzzing::docker_manifest(data);
});
