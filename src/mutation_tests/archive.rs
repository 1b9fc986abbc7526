//! Archives as `load` reads them: whole docker-archives and oci-archives
//! mutated, and a docker-archive's `manifest.json` mutated inside an
//! otherwise real archive.

use super::fixture_seeds;
use crate::fuzzing::{archive, docker_manifest, sample_docker_archive};
use crate::testutil::gzip;
use crate::testutil::mutate::{count, mutate_json, run, run_with};

pub(super) fn manifest_json(saved: &[u8]) -> Vec<u8> {
    let mut tar = tar::Archive::new(saved);
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("manifest.json") {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            return v;
        }
    }
    panic!("no manifest.json");
}

#[test]
fn mutated_docker_archive_manifests() {
    let saved = sample_docker_archive();
    let real = manifest_json(&saved);
    // The legacy layout (`<id>/layer.tar`, Parent, LayerSources) as well.
    let legacy = br#"[{"Config":"c.json","RepoTags":["a:1","b"],"Layers":["x/layer.tar","x/layer.tar"],"Parent":"sha256:00","LayerSources":{"sha256:01":{"mediaType":"m","size":1,"digest":"sha256:01"}}}]"#;
    let seeds = vec![real, legacy.to_vec()];
    run_with(
        "docker-archive manifest.json",
        seeds,
        count(1500),
        mutate_json,
        docker_manifest,
    );
}

#[test]
fn mutated_archives() {
    let saved = sample_docker_archive();
    let mut seeds = vec![gzip(&saved), saved];
    seeds.extend(fixture_seeds(
        "mutation: archives",
        &["real/ggcr/test_link.tar", "real/ggcr/hello-world-v25.tar"],
    ));
    run("archives", seeds, count(1000), archive);
}
