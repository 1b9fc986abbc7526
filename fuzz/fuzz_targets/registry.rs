//! First byte even: an auth.json; odd: a WWW-Authenticate line, then a response body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = layerfs::fuzzing::registry(data);
});
