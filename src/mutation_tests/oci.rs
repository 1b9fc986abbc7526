//! Manifests, image indexes and configs as registries and archives send
//! them: parsed, written back, parsed again.

use super::fixture_seeds;
use crate::fuzzing::oci_json;
use crate::testutil::mutate::{count, mutate_json, run_with};

pub const MANIFEST: &str = r#"{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 1470},
  "layers": [
    {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
     "digest": "sha256:0e6ad19fab55d22eb3bd35ae1a4c0a2d4b6f1bb0ec9f5b4a4cae4fe39f3f2b3c", "size": 283600,
     "annotations": {"org.opencontainers.image.title": "base"}},
    {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
     "digest": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "size": 12,
     "urls": ["https://example.com/l"]}
  ],
  "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "size": 7},
  "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
}"#;

pub const INDEX: &str = r#"{
  "schemaVersion": 2,
  "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
  "manifests": [
    {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
     "digest": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "size": 528,
     "platform": {"architecture": "amd64", "os": "linux"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json",
     "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 1528,
     "platform": {"architecture": "arm64", "os": "linux", "variant": "v8", "os.features": ["x"]}}
  ]
}"#;

pub const CONFIG: &str = r#"{
  "created": "2024-01-02T03:04:05.123456789Z", "architecture": "amd64", "os": "linux",
  "config": {"User": "1000:1000", "Env": ["PATH=/usr/bin", "APP=a"], "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["echo hi"], "WorkingDir": "/app", "Labels": {"a": "b"},
    "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}}, "StopSignal": "SIGTERM"},
  "rootfs": {"type": "layers", "diff_ids": [
    "sha256:ab4608ea3ea4b00a5b4c0bb7e9c8d8cdd1a5a8e5c5d3b5e7d5f0c1e3d8c7b6a5"]},
  "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "RUN x", "empty_layer": true},
    {"created": "1970-01-01T00:00:00+01:00", "comment": "c", "author": "me"}]
}"#;

pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [MANIFEST, INDEX, CONFIG]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    seeds.extend(fixture_seeds(
        "mutation: manifests",
        &[
            "real/busybox/busybox-1.38.0-musl.oci/index.json",
            "real/ggcr/test_index/index.json",
            "synthetic/shared-base.oci/index.json",
        ],
    ));
    seeds
}

#[test]
fn the_seeds_parse() {
    for s in [MANIFEST, INDEX] {
        crate::oci::ManifestKind::parse(s.as_bytes()).unwrap();
    }
    crate::oci::ImageConfig::parse(CONFIG.as_bytes()).unwrap();
}

#[test]
fn mutated_manifests_indexes_and_configs() {
    run_with(
        "manifests, indexes, configs",
        seeds(),
        count(4000),
        mutate_json,
        oci_json,
    );
}
