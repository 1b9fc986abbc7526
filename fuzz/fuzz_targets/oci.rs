//! A manifest, image index or image config.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = layerfs::fuzzing::oci_json(data);
});
