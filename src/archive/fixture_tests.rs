//! The fixture tier: every archive and layout in shared/fixtures loads with
//! the names, image IDs, manifest digests, layer counts, sizes and diff_ids
//! that the fixture README and interop/VERIFY.txt give. Each test skips
//! loudly when the fixtures are not there.

use super::*;
use crate::image::usage;
use crate::oci::{Digest, Platform, Reference, media_type as mt};
use crate::store::Store;
use crate::testutil::{fixtures_dir, temp_store};
use std::path::PathBuf;

/// What one loaded image must be.
struct Want {
    names: &'static [&'static str],
    /// The image ID (config digest), hex.
    id: &'static str,
    /// The manifest digest, where the archive has one to keep (OCI).
    manifest: Option<&'static str>,
    /// Layer media types and sizes as stored (OCI: as in VERIFY.txt).
    layers: &'static [(&'static str, u64)],
    /// The first diff_id, where the README names it.
    base_diff_id: Option<&'static str>,
}

fn fixture(test: &str, rel: &str) -> Option<PathBuf> {
    fixtures_dir(&format!("archive::fixture_tests::{test}")).map(|d| d.join(rel))
}

/// The images here are amd64: load them for amd64 whatever this machine is
/// (on amd64 through the default, so the default is what is tested).
fn amd64() -> LoadOptions {
    let platform =
        (Platform::host().architecture != "amd64").then(|| Platform::parse("linux/amd64").unwrap());
    LoadOptions {
        platform,
        ..Default::default()
    }
}

fn with(repo: &str) -> LoadOptions {
    LoadOptions {
        repository: Some(Reference::parse(repo).unwrap()),
        ..amd64()
    }
}

fn d(hex: &str) -> Digest {
    Digest::from_hex(hex).unwrap()
}

fn check(store: &Store, what: &str, report: &LoadReport, wants: &[Want]) {
    let got: Vec<(Vec<String>, Digest)> = report
        .images
        .iter()
        .map(|i| (i.names.clone(), i.id))
        .collect();
    assert_eq!(report.images.len(), wants.len(), "{what}: {got:?}");
    for (img, want) in report.images.iter().zip(wants) {
        let case = format!("{what} {:?}", want.names);
        assert_eq!(img.names, want.names, "{case}");
        assert_eq!(img.id, d(want.id), "{case}: image ID");
        if let Some(m) = want.manifest {
            assert_eq!(img.manifest.digest, d(m), "{case}: manifest digest");
        }
        let by = want
            .names
            .first()
            .map_or_else(|| img.id.to_string(), |n| n.to_string());
        let r = store.resolve(&by).unwrap();
        assert_eq!(r.manifest_digest, img.manifest.digest, "{case}");
        assert_eq!(r.config.rootfs.diff_ids, img.diff_ids, "{case}");
        let layers: Vec<(&str, u64)> = r
            .manifest
            .layers
            .iter()
            .map(|l| (l.media_type.as_str(), l.size))
            .collect();
        assert_eq!(layers, want.layers, "{case}: layers");
        for l in &r.manifest.layers {
            assert_eq!(store.blob_size(&l.digest).unwrap(), l.size, "{case}");
        }
        if let Some(base) = want.base_diff_id {
            assert_eq!(img.diff_ids[0], d(base), "{case}: base diff_id");
        }
    }
}

const BASE_DIFF_ID: &str = "ab4608eafa088ab819c984664a361d17822ccb367851e0a5aa64de173bd91157";
const GZ: &str = mt::OCI_LAYER_GZIP;
const TAR: &str = mt::OCI_LAYER;
const ZST: &str = mt::OCI_LAYER_ZSTD;
const APP_B_ID: &str = "0f7aff33d0eeb1ce56c1ee5cbab2bab94bc92dce89ef09cac96e8c62147cd250";

#[test]
fn synthetic_oci_layouts_and_archive() {
    let cases: Vec<(&str, LoadOptions, Vec<Want>)> = vec![
        (
            "synthetic/shared-base.oci",
            with("lfs"),
            vec![
                Want {
                    names: &["lfs:base"],
                    id: "6b4b2cddd792fa3382b0c973ac1695340cd2a62dc66475692ee0bcb037177ef1",
                    manifest: Some(
                        "f74e3cc8c0077c9ada31e2db184283e1be8b527ff8de6e6912b5647ea0bea1f6",
                    ),
                    layers: &[(GZ, 283600)],
                    base_diff_id: Some(BASE_DIFF_ID),
                },
                Want {
                    names: &["lfs:app-a"],
                    id: "a13509de562211c3e4318241e6469cd0ef03b3cec009567fe7d324e6da272a95",
                    manifest: Some(
                        "d0ba3e35ea4527da5229f9ba3438eb37aae81cebd02a0cad8bd6b937a534f733",
                    ),
                    layers: &[(GZ, 283600), (GZ, 348)],
                    base_diff_id: Some(BASE_DIFF_ID),
                },
                Want {
                    names: &["lfs:app-b"],
                    id: APP_B_ID,
                    manifest: Some(
                        "b3a8c618ff65a3d567e4e3340101afb72cc908fbea4728dfb873f57966a6a563",
                    ),
                    layers: &[(GZ, 283600), (GZ, 627), (GZ, 384)],
                    base_diff_id: Some(BASE_DIFF_ID),
                },
            ],
        ),
        (
            "synthetic/app-b.oci-archive.tar",
            with("lfs"),
            vec![Want {
                names: &["lfs:app-b"],
                id: APP_B_ID,
                manifest: Some("b3a8c618ff65a3d567e4e3340101afb72cc908fbea4728dfb873f57966a6a563"),
                layers: &[(GZ, 283600), (GZ, 627), (GZ, 384)],
                base_diff_id: Some(BASE_DIFF_ID),
            }],
        ),
        (
            "synthetic/app-b-zstd.oci",
            with("lfs"),
            vec![Want {
                names: &["lfs:app-b"],
                id: APP_B_ID,
                manifest: Some("542746347f78257d9f3774d28103337fffd4b53d9531b953a204b16c8fa2dea2"),
                layers: &[(ZST, 270508), (ZST, 556), (ZST, 345)],
                base_diff_id: Some(BASE_DIFF_ID),
            }],
        ),
        (
            "synthetic/mixed-compression.oci",
            with("lfs"),
            vec![Want {
                names: &["lfs:app-b"],
                id: APP_B_ID,
                manifest: Some("6c4cbafc8a99b57aba72cb503de8549b45266407e60c942dcf64ba4e11b5fd9f"),
                layers: &[(GZ, 283600), (TAR, 13824), (ZST, 286)],
                base_diff_id: Some(BASE_DIFF_ID),
            }],
        ),
    ];
    for (rel, opts, wants) in cases {
        let Some(path) = fixture("synthetic_oci_layouts_and_archive", rel) else {
            return;
        };
        let (_d, store) = temp_store();
        let report = load(&store, &path, &opts).unwrap();
        assert!(report.notes.is_empty(), "{rel}: {:?}", report.notes);
        check(&store, rel, &report, &wants);
    }
    // The three images of shared-base.oci share their base layer: 4 layers,
    // 3 configs, 3 manifests.
    let Some(path) = fixture(
        "synthetic_oci_layouts_and_archive",
        "synthetic/shared-base.oci",
    ) else {
        return;
    };
    let (_d, store) = temp_store();
    let report = load(&store, &path, &amd64()).unwrap();
    assert!(
        report.images.iter().all(|i| i.names.is_empty()),
        "bare tags named without --name"
    );
    assert_eq!(report.notes.len(), 3, "{:?}", report.notes);
    assert!(report.notes.iter().all(|n| n.contains("--name")));
    assert_eq!(store.list_blobs().unwrap().len(), 10);
}

#[test]
fn synthetic_docker_archives_share_their_base_layer() {
    let wants = [
        (
            "synthetic/base.docker.tar",
            &["lfs-fixtures/base:latest"][..],
            "6b4b2cddd792fa3382b0c973ac1695340cd2a62dc66475692ee0bcb037177ef1",
            &[(TAR, 2397184)][..],
        ),
        (
            "synthetic/app-a.docker.tar",
            &["lfs-fixtures/app-a:latest"][..],
            "a13509de562211c3e4318241e6469cd0ef03b3cec009567fe7d324e6da272a95",
            &[(TAR, 2397184), (TAR, 8192)][..],
        ),
        (
            "synthetic/app-b.docker.tar",
            &["lfs-fixtures/app-b:latest"][..],
            APP_B_ID,
            &[(TAR, 2397184), (TAR, 13824), (TAR, 10240)][..],
        ),
    ];
    let (_d, store) = temp_store();
    for (rel, names, id, layers) in wants {
        let Some(path) = fixture("synthetic_docker_archives_share_their_base_layer", rel) else {
            return;
        };
        let report = load(&store, &path, &amd64()).unwrap();
        check(
            &store,
            rel,
            &report,
            &[Want {
                names,
                id,
                manifest: None,
                layers,
                base_diff_id: Some(BASE_DIFF_ID),
            }],
        );
    }
    // The base layer, uncompressed in each archive, is one blob: its digest
    // is its diff_id. 4 layers + 3 configs + 3 manifests.
    let base = d(BASE_DIFF_ID);
    assert!(store.has_blob(&base));
    assert_eq!(store.list_blobs().unwrap().len(), 10);
    let u = usage(&store).unwrap();
    let sum: u64 = u.images.iter().map(|i| i.total).sum();
    assert_eq!(
        sum,
        u.images_total + 2 * 2397184,
        "the base is not counted once"
    );
    assert_eq!(u.images_total, u.blobs_total);
}

#[test]
fn busybox_index_loads_this_platform() {
    let Some(path) = fixture(
        "busybox_index_loads_this_platform",
        "real/busybox/busybox-1.38.0-musl.oci",
    ) else {
        return;
    };
    let (arm_manifest, arm_id) = (
        "3cb83a1fb0a5d7064741699ec39f3276d393df432c7c287e8486154465910a89",
        "f6e222a3f5fdafd5cc6c032d2eff47a6406964ca9e8ba1e210eabbfd8c0e007e",
    );
    let amd = Want {
        names: &["busybox:1.38.0-musl", "busybox:1.38.0-musl-amd64"],
        id: "654fc8fd836e35f4a64586bddf8f59b9029b48cf80f520834c6c98ca8ab5def9",
        manifest: Some("a34ce92094b7b100a98fbd21411a92825f6827b1bc5f6918c253516c90556998"),
        layers: &[(GZ, 886160)],
        base_diff_id: Some("0f8918d0fe4f272ce8acece89916a9ba0b240584d3c1dd1943f343f69b0d0ffb"),
    };
    let (_d, store) = temp_store();
    let report = load(&store, &path, &with("busybox")).unwrap();
    check(&store, "busybox", &report, &[amd]);
    assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
    assert!(
        report.notes[0].contains("1.38.0-musl-arm64v8"),
        "{:?}",
        report.notes
    );
    assert!(
        !store.has_blob(&d(arm_manifest)),
        "the other platform was stored"
    );

    let arm = LoadOptions {
        repository: Some(Reference::parse("busybox").unwrap()),
        platform: Some(Platform::parse("linux/arm64/v8").unwrap()),
    };
    let (_d, store) = temp_store();
    let report = load(&store, &path, &arm).unwrap();
    let got: Vec<(Vec<String>, Digest, Digest)> = report
        .images
        .iter()
        .map(|i| (i.names.clone(), i.id, i.manifest.digest))
        .collect();
    assert_eq!(
        got,
        vec![(
            vec![
                "busybox:1.38.0-musl".to_string(),
                "busybox:1.38.0-musl-arm64v8".to_string()
            ],
            d(arm_id),
            d(arm_manifest)
        )]
    );
}

#[test]
fn ggcr_docker_archives() {
    let cases: Vec<(&str, Vec<Want>)> = vec![
        (
            "real/ggcr/test_bundle.tar",
            vec![
                Want {
                    names: &["test_image_2:latest"],
                    id: "930705ce23e3b6ed4c08746b6fe880089c864fbaf62482702ae3fdd66b8c7fe9",
                    manifest: None,
                    layers: &[(TAR, 10240)],
                    base_diff_id: Some(
                        "3610aa5267a210147ba6ca02cdd87610dfc08522de9c5f5015edd8ee14853fd8",
                    ),
                },
                Want {
                    names: &["test_image_1:latest"],
                    id: "6e0b05049ed9c17d02e1a55e80d6599dbfcce7f4f4b022e3c673e685789c470e",
                    manifest: None,
                    layers: &[(TAR, 10240)],
                    base_diff_id: Some(
                        "8897395fd26dc44ad0e2a834335b33198cb41ac4d98dfddf58eced3853fa7b17",
                    ),
                },
            ],
        ),
        (
            "real/ggcr/test_link.tar",
            vec![
                Want {
                    names: &["bazel/v1/tarball:test_image_1"],
                    id: "6e0b05049ed9c17d02e1a55e80d6599dbfcce7f4f4b022e3c673e685789c470e",
                    manifest: None,
                    layers: &[(TAR, 10240)],
                    base_diff_id: Some(
                        "8897395fd26dc44ad0e2a834335b33198cb41ac4d98dfddf58eced3853fa7b17",
                    ),
                },
                Want {
                    // Its first layer.tar is a symlink to image 1's.
                    names: &["bazel/v1/tarball:test_image_3"],
                    id: "d4c9adacde69c3d92446e0484cea29493e9fd573cf0c8febfc700d80c46697a4",
                    manifest: None,
                    layers: &[(TAR, 10240), (TAR, 2048)],
                    base_diff_id: Some(
                        "8897395fd26dc44ad0e2a834335b33198cb41ac4d98dfddf58eced3853fa7b17",
                    ),
                },
            ],
        ),
        (
            "real/ggcr/whiteout_image.tar",
            vec![Want {
                names: &["bazel/pkg/v1/mutate:whiteout_image"],
                id: "decb630649c3e1256345d416b228d6c3ceb387a55120ad44dc3ec992976d28b9",
                manifest: None,
                layers: &[(TAR, 10240), (TAR, 10240), (TAR, 10240)],
                base_diff_id: None,
            }],
        ),
        (
            "real/ggcr/whiteout_dir.tar",
            vec![Want {
                names: &["localhost:5000/whiteout:latest"],
                id: "92f1e3d53acdc7e137e73869abc4e87aba6614440a31723423790ca0d5db9111",
                manifest: None,
                layers: &[(GZ, 129), (GZ, 128), (GZ, 95), (GZ, 129)],
                base_diff_id: None,
            }],
        ),
        (
            "real/ggcr/overwritten_file.tar",
            vec![Want {
                names: &["bazel/pkg/v1/mutate:overwritten_file"],
                id: "68f6eb746cdb287658796ba120849bb77be87040a155fbefb89c96f109c0703a",
                manifest: None,
                layers: &[(TAR, 10240), (TAR, 10240), (TAR, 10240)],
                base_diff_id: None,
            }],
        ),
    ];
    for (rel, wants) in cases {
        let Some(path) = fixture("ggcr_docker_archives", rel) else {
            return;
        };
        let (_d, store) = temp_store();
        let report = load(&store, &path, &amd64()).unwrap();
        assert!(report.notes.is_empty(), "{rel}: {:?}", report.notes);
        check(&store, rel, &report, &wants);
    }
}

#[test]
fn hello_world_v25_is_arm64_only() {
    let Some(path) = fixture(
        "hello_world_v25_is_arm64_only",
        "real/ggcr/hello-world-v25.tar",
    ) else {
        return;
    };
    let (_d, store) = temp_store();
    let amd = LoadOptions {
        platform: Some(Platform::parse("linux/amd64").unwrap()),
        ..Default::default()
    };
    let err = load(&store, &path, &amd).unwrap_err().to_string();
    assert!(
        err.contains("hello-world-v25.tar")
            && err.contains("linux/arm64")
            && err.contains("--platform"),
        "{err}"
    );
    assert!(store.image_entries().unwrap().is_empty());
    assert!(store.list_blobs().unwrap().is_empty());

    let arm = LoadOptions {
        platform: Some(Platform::parse("linux/arm64").unwrap()),
        ..Default::default()
    };
    let report = load(&store, &path, &arm).unwrap();
    // RepoTags null: untagged. The layer is uncompressed: digest = diff_id.
    check(
        &store,
        "hello-world-v25",
        &report,
        &[Want {
            names: &[],
            id: "ee301c921b8aadc002973b2e0c3da17d701dcd994b606769a7e6eaa100b81d44",
            manifest: None,
            layers: &[(TAR, 10752)],
            base_diff_id: Some("12660636fe55438cc3ae7424da7ac56e845cdb52493ff9cf949c47a7f57f8b43"),
        }],
    );
    assert!(store.has_blob(&d(
        "12660636fe55438cc3ae7424da7ac56e845cdb52493ff9cf949c47a7f57f8b43"
    )));
}

#[test]
fn ggcr_test_index_skips_what_is_not_an_image() {
    let Some(path) = fixture(
        "ggcr_test_index_skips_what_is_not_an_image",
        "real/ggcr/test_index",
    ) else {
        return;
    };
    // Entries 1, 3 (a nested OCI index) and 4 (a nested Docker manifest
    // list) all lead to one Docker-typed manifest; entry 2 is a
    // vnd.oci.descriptor, which is no image.
    let (_d, store) = temp_store();
    let report = load(&store, &path, &with("t")).unwrap();
    check(
        &store,
        "test_index",
        &report,
        &[Want {
            names: &["t:1", "t:3", "t:4"],
            id: "6e0b05049ed9c17d02e1a55e80d6599dbfcce7f4f4b022e3c673e685789c470e",
            manifest: Some("eebff607b1628d67459b0596643fc07de70d702eccf030f0bc7bb6fc2b278650"),
            layers: &[(mt::DOCKER_LAYER_GZIP, 167)],
            base_diff_id: Some("8897395fd26dc44ad0e2a834335b33198cb41ac4d98dfddf58eced3853fa7b17"),
        }],
    );
    assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
    assert!(
        report.notes[0].contains("vnd.oci.descriptor"),
        "{:?}",
        report.notes
    );
    let entry = store.find_entry("t:1").unwrap().descriptor;
    assert_eq!(
        entry.media_type,
        mt::DOCKER_MANIFEST,
        "listed under the type its bytes have"
    );
}
