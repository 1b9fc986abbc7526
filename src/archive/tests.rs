//! load and save on archives built in code: round trips through both
//! formats, the naming rules, platform selection, skipped entries, and bad
//! input, which must leave the store as it was.

use super::source::Source;
use super::*;
use crate::image::{layer_descriptor, new_config, usage, write_image};
use crate::layer::{Compression, LayerIndex, LayerWriter, TarMeta};
use crate::oci::{
    Descriptor, Digest, ImageIndex, Manifest, Platform, REF_NAME_ANNOTATION, Reference,
    media_type as mt,
};
use crate::store::Store;
use crate::testutil::{TarBuilder, external_tool, gzip, noise, temp_store, text, zstd};
use std::fs;
use std::path::{Path, PathBuf};

const LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn meta(mode: u32) -> TarMeta {
    TarMeta {
        mode,
        mtime: 1_700_000_000,
        ..Default::default()
    }
}

/// A platform that is not this machine's.
fn other_platform() -> Platform {
    let arch = if Platform::host().architecture == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    Platform::parse(&format!("linux/{arch}")).unwrap()
}

struct Made {
    manifest: Descriptor,
    id: Digest,
    diff_ids: Vec<Digest>,
    layers: Vec<Digest>,
}

impl Made {
    /// Manifest, config and layer digests: what a layout of this image holds.
    fn blobs(&self) -> Vec<Digest> {
        let mut v = vec![self.manifest.digest, self.id];
        v.extend(&self.layers);
        v
    }
}

/// A two-layer image: a gzip base (a dir, a file, a hard link to it) and a
/// zstd top layer (a file and a whiteout). `seed` makes images distinct.
fn make_image(store: &Store, tag: Option<&str>, platform: &Platform, seed: u64) -> Made {
    let mut l1 = LayerWriter::new(store, Compression::Gzip).unwrap();
    l1.add_dir(b"etc", &meta(0o755)).unwrap();
    // noise() and text() use `seed | 1`: spread the seeds so images differ.
    let data = text(10_000, seed * 4);
    l1.add_file(b"etc/data", &meta(0o644), data.len() as u64, &data[..])
        .unwrap();
    l1.add_hardlink(b"etc/data-link", &meta(0o644), b"etc/data")
        .unwrap();
    let i1 = l1.finish().unwrap();
    let mut l2 = LayerWriter::new(store, Compression::Zstd).unwrap();
    let blob = noise(5000, seed * 4 + 2);
    l2.add_file(b"blob", &meta(0o755), blob.len() as u64, &blob[..])
        .unwrap();
    l2.add_whiteout(b"etc/old").unwrap();
    let i2 = l2.finish().unwrap();
    let mut cfg = new_config();
    cfg.architecture = platform.architecture.clone();
    cfg.os = platform.os.clone();
    cfg.variant = platform.variant.clone();
    cfg.created = Some("2024-01-01T00:00:00Z".into());
    cfg.set_env("SEED", &seed.to_string());
    cfg.rootfs.diff_ids = vec![i1.diff_id, i2.diff_id];
    let tag = tag.map(|t| Reference::parse(t).unwrap());
    let layers = [layer_descriptor(&i1), layer_descriptor(&i2)];
    let image = write_image(store, &cfg, &layers, tag.as_ref()).unwrap();
    Made {
        id: image.id,
        manifest: image.manifest,
        diff_ids: vec![i1.diff_id, i2.diff_id],
        layers: vec![i1.digest, i2.digest],
    }
}

fn blob(store: &Store, d: &Digest) -> Vec<u8> {
    fs::read(store.blob_path(d)).unwrap()
}

fn named(desc: &Descriptor, annotations: &[(&str, &str)]) -> Descriptor {
    let mut d = desc.clone();
    d.annotations = None;
    for (k, v) in annotations {
        d.set_annotation(k, v);
    }
    d
}

/// An OCI layout as a tar: `entries` as index.json, and the blobs.
fn layout_tar(store: &Store, blobs: &[Digest], entries: Vec<Descriptor>) -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.file("oci-layout", 0o644, LAYOUT);
    t.file("index.json", 0o644, &ImageIndex::new_oci(entries).to_json());
    for d in blobs {
        t.file(&format!("blobs/sha256/{}", d.hex()), 0o644, &blob(store, d));
    }
    t.finish()
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

fn load_bytes(store: &Store, bytes: &[u8], opts: &LoadOptions) -> Result<LoadReport, ArchiveError> {
    let dir = tempfile::tempdir().unwrap();
    load(store, &write_file(dir.path(), "archive.tar", bytes), opts)
}

fn with_name(repo: &str) -> LoadOptions {
    LoadOptions {
        repository: Some(Reference::parse(repo).unwrap()),
        platform: None,
    }
}

/// Every (manifest digest, tag) of the store's index.json.
fn snapshot(store: &Store) -> Vec<(Digest, Option<String>)> {
    store
        .image_entries()
        .unwrap()
        .into_iter()
        .map(|e| (e.descriptor.digest, e.name().map(str::to_string)))
        .collect()
}

/// The store lists the same images as before, holds no temp file, and
/// every blob in it is whole (hashes to its name).
fn assert_untouched(store: &Store, before: &[(Digest, Option<String>)], case: &str) {
    assert_eq!(snapshot(store), before, "{case}: images changed");
    let tmp: Vec<_> = fs::read_dir(store.tmp_dir()).unwrap().collect();
    assert!(tmp.is_empty(), "{case}: temp files left: {tmp:?}");
    for d in store.list_blobs().unwrap() {
        assert_eq!(Digest::of(&blob(store, &d)), d, "{case}: damaged blob {d}");
    }
}

fn layer_tar(seed: u64) -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.dir("d", 0o755)
        .file(&format!("d/f{seed}"), 0o644, &text(3000, seed));
    t.finish()
}

/// A config as Docker writes one: its own key order and spacing, which
/// re-serializing would change, and with it the image ID.
fn docker_config(diff_ids: &[Digest], platform: &Platform) -> Vec<u8> {
    let ids: Vec<String> = diff_ids.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        r#"{{"architecture": "{}", "os": "{}", "config": {{"Env": ["A=1"]}}, "created": "2020-01-01T00:00:00Z", "rootfs": {{"type": "layers", "diff_ids": [{}]}}}}"#,
        platform.architecture,
        platform.os,
        ids.join(", ")
    )
    .into_bytes()
}

/// A file of a docker-archive.
struct Member(String, Vec<u8>);

/// One image of a docker-archive: config file name, RepoTags, layer files.
struct DockerImage {
    config: String,
    tags: Option<Vec<&'static str>>,
    layers: Vec<String>,
}

fn docker_tar(members: &[Member], images: &[DockerImage]) -> Vec<u8> {
    let manifest: Vec<serde_json::Value> = images
        .iter()
        .map(|i| serde_json::json!({"Config": i.config, "RepoTags": i.tags, "Layers": i.layers}))
        .collect();
    let mut t = TarBuilder::new();
    for Member(name, bytes) in members {
        t.file(name, 0o644, bytes);
    }
    t.file(
        "manifest.json",
        0o644,
        &serde_json::to_vec(&manifest).unwrap(),
    );
    t.finish()
}

/// A one-image docker-archive with `layers` (stored under their diff_id
/// hex, as skopeo does, gzipped where asked).
fn simple_docker_tar(
    tags: Option<Vec<&'static str>>,
    seeds: &[u64],
    platform: &Platform,
) -> (Vec<u8>, Digest) {
    let layers: Vec<Vec<u8>> = seeds.iter().map(|s| layer_tar(*s)).collect();
    let diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::of(l)).collect();
    let config = docker_config(&diff_ids, platform);
    let id = Digest::of(&config);
    let mut members = vec![Member(format!("{}.json", id.hex()), config)];
    let mut paths = Vec::new();
    for (l, d) in layers.into_iter().zip(&diff_ids) {
        let p = format!("{}.tar", d.hex());
        members.push(Member(p.clone(), l));
        paths.push(p);
    }
    let tar = docker_tar(
        &members,
        &[DockerImage {
            config: format!("{}.json", id.hex()),
            tags,
            layers: paths,
        }],
    );
    (tar, id)
}

// ---------------------------------------------------------------- round trips

#[test]
fn docker_archive_round_trip_keeps_id_diff_ids_and_names() {
    let (_s, src) = temp_store();
    let made = make_image(&src, Some("app:1"), &Platform::host(), 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.tar");
    let report = save_to_path(&src, &["app:1".into()], SaveFormat::DockerArchive, &path).unwrap();
    assert_eq!(report.images, vec![(made.id, vec!["app:1".to_string()])]);
    assert_eq!(report.bytes, fs::metadata(&path).unwrap().len());

    // What docker load reads: manifest.json naming uncompressed layers by
    // diff_id, the config under the image ID, legacy links to the layers.
    let archive = Source::open(&path, dir.path()).unwrap();
    let items: serde_json::Value =
        serde_json::from_slice(&archive.read_small("manifest.json").unwrap()).unwrap();
    assert_eq!(items[0]["RepoTags"], serde_json::json!(["app:1"]));
    assert_eq!(items[0]["Config"], format!("{}.json", made.id.hex()));
    for (i, d) in made.diff_ids.iter().enumerate() {
        let name = items[0]["Layers"][i].as_str().unwrap();
        assert_eq!(name, format!("{}.tar", d.hex()));
        let (mut r, size) = archive.open_member(name).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(
            Digest::of(&bytes),
            *d,
            "layer {i} is not its uncompressed tar"
        );
    }
    let repositories: serde_json::Value =
        serde_json::from_slice(&archive.read_small("repositories").unwrap()).unwrap();
    let top = repositories["app"]["1"].as_str().unwrap();
    assert_eq!(
        archive.size(&format!("{top}/layer.tar")).unwrap(),
        archive
            .size(&format!("{}.tar", made.diff_ids[1].hex()))
            .unwrap()
    );

    let (_d, dst) = temp_store();
    let loaded = load(&dst, &path, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.images.len(), 1);
    let img = &loaded.images[0];
    assert_eq!(img.id, made.id, "image ID changed");
    assert_eq!(img.names, ["app:1"]);
    assert_eq!(img.diff_ids, made.diff_ids);
    let r = dst.resolve("app:1").unwrap();
    assert_eq!(r.id(), made.id);
    assert_eq!(r.config.rootfs.diff_ids, made.diff_ids);
    // Stored as they came: uncompressed, so each digest is its diff_id.
    assert_eq!(r.layer_digests(), made.diff_ids);
    assert!(
        r.manifest
            .layers
            .iter()
            .all(|l| l.media_type == mt::OCI_LAYER)
    );
    let base = LayerIndex::open(
        &dst.layer_index_path(&r.layer_digests()[0]),
        &r.layer_digests()[0],
    )
    .unwrap();
    let etc = base.find_dir(b"etc").unwrap();
    assert_eq!(etc.lookup(b"data").0.unwrap().size(), 10_000);
    assert!(etc.lookup(b"data-link").0.is_some());
}

#[test]
fn oci_archive_round_trip_keeps_every_digest() {
    let (_s, src) = temp_store();
    let made = make_image(&src, Some("example.com/team/app:2"), &Platform::host(), 2);
    let mut out = Vec::new();
    save(
        &src,
        &["example.com/team/app:2".into()],
        SaveFormat::OciArchive,
        &mut out,
    )
    .unwrap();
    let (_d, dst) = temp_store();
    let loaded = load_bytes(&dst, &out, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.images.len(), 1);
    let img = &loaded.images[0];
    assert_eq!(img.names, ["example.com/team/app:2"]);
    assert_eq!(img.id, made.id);
    assert_eq!(
        img.manifest.digest, made.manifest.digest,
        "manifest digest changed"
    );
    assert_eq!(img.diff_ids, made.diff_ids);
    let r = dst.resolve("example.com/team/app:2").unwrap();
    assert_eq!(r.layer_digests(), made.layers, "layers were recompressed");
    for d in made.blobs() {
        assert_eq!(blob(&dst, &d), blob(&src, &d), "blob {d} differs");
    }
    let media: Vec<&str> = r
        .manifest
        .layers
        .iter()
        .map(|l| l.media_type.as_str())
        .collect();
    assert_eq!(media, [mt::OCI_LAYER_GZIP, mt::OCI_LAYER_ZSTD]);
}

#[test]
fn save_merges_names_of_one_image_and_saves_ids_unnamed() {
    let (_s, src) = temp_store();
    let a = make_image(&src, Some("a:1"), &Platform::host(), 3);
    src.tag("a:also", &a.manifest).unwrap();
    let b = make_image(&src, Some("b:1"), &Platform::host(), 4);
    let args: Vec<String> = vec!["a:1".into(), "a:also".into(), b.id.hex()[..12].to_string()];
    for format in [SaveFormat::DockerArchive, SaveFormat::OciArchive] {
        let mut out = Vec::new();
        let report = save(&src, &args, format, &mut out).unwrap();
        assert_eq!(
            report.images,
            vec![
                (a.id, vec!["a:1".to_string(), "a:also".to_string()]),
                (b.id, vec![])
            ],
            "{format:?}"
        );
        let (_d, dst) = temp_store();
        let loaded = load_bytes(&dst, &out, &LoadOptions::default()).unwrap();
        let got: Vec<(Digest, Vec<String>)> = loaded
            .images
            .iter()
            .map(|i| (i.id, i.names.clone()))
            .collect();
        assert_eq!(got, report.images, "{format:?}");
        let mut tags: Vec<String> = snapshot(&dst).into_iter().filter_map(|(_, n)| n).collect();
        tags.sort();
        assert_eq!(tags, ["a:1", "a:also"], "{format:?}");
        assert_eq!(
            dst.image_entries().unwrap().len(),
            3,
            "{format:?}: b not listed untagged"
        );
    }
}

#[test]
fn multi_platform_index_is_saved_whole_and_loaded_for_one_platform() {
    let (_s, src) = temp_store();
    let here = make_image(&src, None, &Platform::host(), 5);
    let there = make_image(&src, None, &other_platform(), 6);
    let mut d_here = named(&here.manifest, &[]);
    d_here.platform = Some(Platform::host());
    let mut d_there = named(&there.manifest, &[]);
    d_there.platform = Some(other_platform());
    let index = ImageIndex::new_oci(vec![d_here, d_there]).to_json();
    let index_digest = src.put_blob(&index, None).unwrap();
    let top = Descriptor::new(mt::OCI_INDEX, index_digest, index.len() as u64);
    src.tag("multi:1", &top).unwrap();

    let mut out = Vec::new();
    save(&src, &["multi:1".into()], SaveFormat::OciArchive, &mut out).unwrap();
    let (_d, dst) = temp_store();
    let loaded = load_bytes(&dst, &out, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.images[0].manifest.digest, here.manifest.digest);
    let opts = LoadOptions {
        platform: Some(other_platform()),
        ..Default::default()
    };
    let loaded = load_bytes(&dst, &out, &opts).unwrap();
    assert_eq!(loaded.images[0].manifest.digest, there.manifest.digest);
    assert_eq!(loaded.images[0].names, ["multi:1"]);
}

// ------------------------------------------------------------------- naming

#[test]
fn oci_names_follow_docker_and_skopeo() {
    let (_s, src) = temp_store();
    let made = make_image(&src, None, &Platform::host(), 7);
    let containerd = "io.containerd.image.name";
    // (annotations, --name, expected names, a note that must mention this)
    type Case<'a> = (
        Vec<(&'a str, &'a str)>,
        Option<&'a str>,
        Vec<&'a str>,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            vec![(REF_NAME_ANNOTATION, "example.com/team/app:2")],
            None,
            vec!["example.com/team/app:2"],
            None,
        ),
        (
            vec![(REF_NAME_ANNOTATION, "docker.io/library/alpine:3")],
            None,
            vec!["alpine:3"],
            None,
        ),
        (
            vec![(REF_NAME_ANNOTATION, "localhost:5000/app")],
            None,
            vec!["localhost:5000/app:latest"],
            None,
        ),
        (
            vec![(REF_NAME_ANNOTATION, "v1")],
            Some("example.com/repo"),
            vec!["example.com/repo:v1"],
            None,
        ),
        (
            vec![(REF_NAME_ANNOTATION, "v1")],
            None,
            vec![],
            Some("--name"),
        ),
        (
            vec![(REF_NAME_ANNOTATION, "latest")],
            Some("repo"),
            vec!["repo:latest"],
            None,
        ),
        (vec![], None, vec![], None),
        (
            vec![],
            Some("repo"),
            vec![],
            Some("--name repo was not used"),
        ),
        (
            vec![
                (REF_NAME_ANNOTATION, "v2"),
                (containerd, "docker.io/library/hello:v2"),
            ],
            None,
            vec!["hello:v2"],
            None,
        ),
        (
            vec![(REF_NAME_ANNOTATION, "1.0+build")],
            None,
            vec![],
            Some("1.0+build"),
        ),
    ];
    for (annotations, repo, want, note) in cases {
        let case = format!("{annotations:?} --name {repo:?}");
        let archive = layout_tar(
            &src,
            &made.blobs(),
            vec![named(&made.manifest, &annotations)],
        );
        let (_d, dst) = temp_store();
        let opts = repo.map(with_name).unwrap_or_default();
        let report = load_bytes(&dst, &archive, &opts).unwrap();
        assert_eq!(report.images.len(), 1, "{case}");
        assert_eq!(report.images[0].names, want, "{case}");
        let tags: Vec<String> = snapshot(&dst).into_iter().filter_map(|(_, n)| n).collect();
        assert_eq!(tags, want, "{case}");
        match note {
            Some(n) => assert!(
                report.notes.iter().any(|x| x.contains(n)),
                "{case}: no note about {n:?} in {:?}",
                report.notes
            ),
            None => assert!(report.notes.is_empty(), "{case}: {:?}", report.notes),
        }
        if want.is_empty() {
            assert_eq!(
                dst.image_entries().unwrap().len(),
                1,
                "{case}: not listed untagged"
            );
        }
    }
}

#[test]
fn docker_repo_tags_are_read_as_docker_reads_them() {
    let cases: Vec<(Option<Vec<&'static str>>, Vec<&str>)> = vec![
        (Some(vec!["img"]), vec!["img:latest"]),
        (Some(vec!["docker.io/library/img:2"]), vec!["img:2"]),
        (
            Some(vec!["reg:5000/a/b:t", "c:d"]),
            vec!["reg:5000/a/b:t", "c:d"],
        ),
        (Some(vec![]), vec![]),
        (None, vec![]),
    ];
    for (tags, want) in cases {
        let (archive, id) = simple_docker_tar(tags.clone(), &[1, 2], &Platform::host());
        let (_d, dst) = temp_store();
        let report = load_bytes(&dst, &archive, &LoadOptions::default()).unwrap();
        assert_eq!(report.images.len(), 1);
        assert_eq!(report.images[0].names, want, "{tags:?}");
        assert_eq!(
            report.images[0].id, id,
            "{tags:?}: the config was not kept verbatim"
        );
        assert_eq!(dst.image_entries().unwrap().len(), want.len().max(1));
    }
    let (archive, _) = simple_docker_tar(Some(vec!["Bad Name"]), &[1], &Platform::host());
    let (_d, dst) = temp_store();
    let err = load_bytes(&dst, &archive, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("manifest.json") && err.contains("RepoTags"),
        "{err}"
    );
}

#[test]
fn a_tag_in_repository_option_is_refused() {
    let (_d, dst) = temp_store();
    let (archive, _) = simple_docker_tar(None, &[1], &Platform::host());
    let err = load_bytes(&dst, &archive, &with_name("repo:tag")).unwrap_err();
    assert!(matches!(err, ArchiveError::BadRepository(_)), "{err}");
    assert!(dst.image_entries().unwrap().is_empty());
}

// ------------------------------------------------------ docker-archive shapes

#[test]
fn docker_archive_variants_load() {
    let host = Platform::host();
    let base = layer_tar(10);
    let top = layer_tar(11);
    let (base_id, top_id) = (Digest::of(&base), Digest::of(&top));
    let top_gz = gzip(&top);
    // Image 1: legacy `<id>/layer.tar`; image 2 reuses it through a symlink
    // (old docker save dedup) and adds a ggcr-style gzip layer; the config
    // of image 2 is named `sha256:<hex>` as ggcr names it.
    let c1 = docker_config(&[base_id], &host);
    let c2 = docker_config(&[base_id, top_id], &host);
    let (id1, id2) = (Digest::of(&c1), Digest::of(&c2));
    let mut t = TarBuilder::new();
    t.file(&format!("./{}.json", id1.hex()), 0o644, &c1)
        .file(&format!("sha256:{}", id2.hex()), 0o644, &c2)
        .dir("aaaa/", 0o755)
        .file("aaaa/layer.tar", 0o644, &base)
        .file("aaaa/VERSION", 0o644, b"1.0")
        .dir("bbbb/", 0o755)
        .symlink("bbbb/layer.tar", "../aaaa/layer.tar")
        .hardlink("cccc.tar", "aaaa/layer.tar")
        .file(
            &format!("{}.tar.gz", Digest::of(&top_gz).hex()),
            0o644,
            &top_gz,
        );
    let manifest = serde_json::json!([
        {"Config": format!("{}.json", id1.hex()), "RepoTags": ["one"], "Layers": ["aaaa/layer.tar"]},
        {"Config": format!("sha256:{}", id2.hex()), "RepoTags": ["two:2"],
         "Layers": ["bbbb/layer.tar", format!("{}.tar.gz", Digest::of(&top_gz).hex())],
         "Parent": format!("sha256:{}", id1.hex()),
         "LayerSources": {base_id.to_string(): {"mediaType": mt::DOCKER_LAYER_GZIP, "size": 1, "digest": base_id}}},
        {"Config": format!("{}.json", id1.hex()), "RepoTags": ["one-again"], "Layers": ["./cccc.tar"]}
    ]);
    t.file(
        "manifest.json",
        0o644,
        &serde_json::to_vec(&manifest).unwrap(),
    )
    .file("repositories", 0o644, b"{}");
    let archive = t.finish();

    let (_d, dst) = temp_store();
    let report = load_bytes(&dst, &archive, &LoadOptions::default()).unwrap();
    let got: Vec<(Digest, Vec<String>)> = report
        .images
        .iter()
        .map(|i| (i.id, i.names.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (id1, vec!["one:latest".into(), "one-again:latest".into()]),
            (id2, vec!["two:2".into()])
        ]
    );
    let two = dst.resolve("two:2").unwrap();
    assert_eq!(two.config.rootfs.diff_ids, [base_id, top_id]);
    // The base is stored once, uncompressed; the gzip layer as it came.
    assert_eq!(two.layer_digests(), [base_id, Digest::of(&top_gz)]);
    assert_eq!(two.manifest.layers[1].media_type, mt::OCI_LAYER_GZIP);
    assert_eq!(dst.resolve("one").unwrap().layer_digests(), [base_id]);
    // 2 layers + 2 configs + 2 manifests.
    assert_eq!(dst.list_blobs().unwrap().len(), 6);
}

#[test]
fn docker25_archive_keeps_manifest_digest_and_takes_repo_tags() {
    let (_s, src) = temp_store();
    let made = make_image(&src, None, &Platform::host(), 8);
    let mut t = TarBuilder::new();
    t.file("oci-layout", 0o644, LAYOUT);
    let entry = named(&made.manifest, &[(REF_NAME_ANNOTATION, "latest")]);
    t.file(
        "index.json",
        0o644,
        &ImageIndex::new_oci(vec![entry]).to_json(),
    );
    for d in made.blobs() {
        t.file(&format!("blobs/sha256/{}", d.hex()), 0o644, &blob(&src, &d));
    }
    let manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", made.id.hex()),
        "RepoTags": ["docker.io/library/hello:latest", "hello:other"],
        "Layers": made.layers.iter().map(|d| format!("blobs/sha256/{}", d.hex())).collect::<Vec<_>>(),
    }]);
    t.file(
        "manifest.json",
        0o644,
        &serde_json::to_vec(&manifest).unwrap(),
    );
    let archive = t.finish();
    let (_d, dst) = temp_store();
    let report = load_bytes(&dst, &archive, &LoadOptions::default()).unwrap();
    assert_eq!(report.images.len(), 1);
    assert_eq!(report.images[0].manifest.digest, made.manifest.digest);
    assert_eq!(report.images[0].names, ["hello:latest", "hello:other"]);
    assert!(report.notes.is_empty(), "{:?}", report.notes);

    // Saved by ID, Docker 25 leaves index.json empty ("manifests": null):
    // manifest.json alone says what to load.
    let mut t = TarBuilder::new();
    t.file("oci-layout", 0o644, LAYOUT).file(
        "index.json",
        0o644,
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":null}"#,
    );
    for d in made.blobs() {
        t.file(&format!("blobs/sha256/{}", d.hex()), 0o644, &blob(&src, &d));
    }
    let manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", made.id.hex()),
        "RepoTags": null,
        "Layers": made.layers.iter().map(|d| format!("blobs/sha256/{}", d.hex())).collect::<Vec<_>>(),
    }]);
    t.file(
        "manifest.json",
        0o644,
        &serde_json::to_vec(&manifest).unwrap(),
    );
    let (_d, dst) = temp_store();
    let report = load_bytes(&dst, &t.finish(), &LoadOptions::default()).unwrap();
    assert_eq!(report.images.len(), 1);
    assert_eq!(report.images[0].id, made.id);
    assert!(report.images[0].names.is_empty());
    assert_eq!(
        dst.resolve(&made.id.to_string()).unwrap().layer_digests(),
        made.layers
    );
}

// ------------------------------------------------------------- platforms

/// A layout with one entry: an OCI index over `children` (each a manifest
/// made for that platform, described with or without its platform).
fn index_layout(
    src: &Store,
    children: &[(&Made, Option<Platform>)],
    nested: bool,
) -> (Vec<u8>, Digest) {
    let mut blobs = Vec::new();
    let mut descs = Vec::new();
    for (m, p) in children {
        blobs.extend(m.blobs());
        let mut d = named(&m.manifest, &[]);
        d.platform = p.clone();
        descs.push(d);
    }
    let mut index = ImageIndex::new_oci(descs).to_json();
    let mut digest = src.put_blob(&index, None).unwrap();
    blobs.push(digest);
    if nested {
        let inner = Descriptor::new(mt::OCI_INDEX, digest, index.len() as u64);
        index = ImageIndex::new_oci(vec![inner]).to_json();
        digest = src.put_blob(&index, None).unwrap();
        blobs.push(digest);
    }
    let entry = named(
        &Descriptor::new(mt::OCI_INDEX, digest, index.len() as u64),
        &[(REF_NAME_ANNOTATION, "multi:1")],
    );
    (layout_tar(src, &blobs, vec![entry]), digest)
}

#[test]
fn an_index_resolves_to_this_platform_or_the_one_asked_for() {
    let (_s, src) = temp_store();
    let here = make_image(&src, None, &Platform::host(), 20);
    let there = make_image(&src, None, &other_platform(), 21);
    for nested in [false, true] {
        for described in [true, false] {
            let case = format!("nested {nested}, platforms in index {described}");
            let plat = |p: Platform| described.then_some(p);
            let (archive, index) = index_layout(
                &src,
                &[
                    (&there, plat(other_platform())),
                    (&here, plat(Platform::host())),
                ],
                nested,
            );
            let (_d, dst) = temp_store();
            let report = load_bytes(&dst, &archive, &LoadOptions::default()).unwrap();
            assert_eq!(report.images.len(), 1, "{case}");
            assert_eq!(
                report.images[0].manifest.digest, here.manifest.digest,
                "{case}"
            );
            assert_eq!(report.images[0].names, ["multi:1"], "{case}");
            // The platform's manifest is the image, byte for byte; the index is not kept.
            let entry = dst.find_entry("multi:1").unwrap().descriptor;
            assert_eq!(entry.digest, here.manifest.digest, "{case}");
            assert_eq!(
                blob(&dst, &here.manifest.digest),
                blob(&src, &here.manifest.digest)
            );
            assert!(!dst.has_blob(&index), "{case}");
            assert!(
                !dst.has_blob(&there.layers[0]),
                "{case}: other platform stored"
            );

            let opts = LoadOptions {
                platform: Some(other_platform()),
                ..Default::default()
            };
            let report = load_bytes(&dst, &archive, &opts).unwrap();
            assert_eq!(
                report.images[0].manifest.digest, there.manifest.digest,
                "{case}"
            );
            assert_eq!(
                dst.find_entry("multi:1").unwrap().descriptor.digest,
                there.manifest.digest
            );
        }
    }
}

#[test]
fn docker_manifest_list_is_an_index_too() {
    let (_s, src) = temp_store();
    let here = make_image(&src, None, &Platform::host(), 22);
    let mut child = named(&here.manifest, &[]);
    child.platform = Some(Platform::host());
    let mut list = ImageIndex::new_oci(vec![child]);
    list.media_type = Some(mt::DOCKER_MANIFEST_LIST.into());
    let bytes = list.to_json();
    let d = src.put_blob(&bytes, None).unwrap();
    let mut blobs = here.blobs();
    blobs.push(d);
    let entry = named(
        &Descriptor::new(mt::DOCKER_MANIFEST_LIST, d, bytes.len() as u64),
        &[(REF_NAME_ANNOTATION, "list:1")],
    );
    let (_d, dst) = temp_store();
    let report = load_bytes(
        &dst,
        &layout_tar(&src, &blobs, vec![entry]),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(report.images[0].manifest.digest, here.manifest.digest);
    assert_eq!(report.images[0].names, ["list:1"]);
}

/// A platform that is neither this machine's nor `other_platform()`.
fn third_platform() -> Platform {
    Platform::parse("linux/s390x").unwrap()
}

#[test]
fn an_image_only_for_another_platform_loads_with_a_note() {
    let (_s, src) = temp_store();
    let there = make_image(&src, None, &other_platform(), 23);
    let archive = layout_tar(
        &src,
        &there.blobs(),
        vec![named(&there.manifest, &[(REF_NAME_ANNOTATION, "x:1")])],
    );
    let (single_index, _) = index_layout(&src, &[(&there, Some(other_platform()))], false);
    let (docker, _) = simple_docker_tar(Some(vec!["y"]), &[1], &other_platform());
    let cases = [
        ("a manifest", &archive, "x:1"),
        ("an index of one", &single_index, "multi:1"),
        ("a docker-archive", &docker, "y:latest"),
    ];
    for (case, archive, name) in cases {
        let (_d, dst) = temp_store();
        let report = load_bytes(&dst, archive, &LoadOptions::default()).unwrap();
        assert_eq!(report.images.len(), 1, "{case}");
        assert_eq!(report.images[0].names, [name], "{case}");
        let note = report.notes.join("; ");
        assert!(
            note.contains(&other_platform().to_string()) && note.contains("not"),
            "{case}: {note}"
        );
        assert!(dst.resolve_for(name, &other_platform()).is_ok(), "{case}");

        // A platform asked for is a filter, as before.
        let (_d, dst) = temp_store();
        let opts = LoadOptions {
            platform: Some(third_platform()),
            ..Default::default()
        };
        let err = load_bytes(&dst, archive, &opts).unwrap_err().to_string();
        assert!(err.contains("--platform"), "{case}: {err}");
        assert!(dst.list_blobs().unwrap().is_empty(), "{case}");
    }
}

#[test]
fn an_index_of_several_other_platforms_needs_the_platform_option() {
    let (_s, src) = temp_store();
    let a = make_image(&src, None, &other_platform(), 25);
    let b = make_image(&src, None, &third_platform(), 26);
    let (archive, _) = index_layout(
        &src,
        &[(&a, Some(other_platform())), (&b, Some(third_platform()))],
        false,
    );
    let (_d, dst) = temp_store();
    let err = load_bytes(&dst, &archive, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--platform") && err.contains(&other_platform().to_string()),
        "{err}"
    );
    assert!(dst.image_entries().unwrap().is_empty());
    assert!(
        dst.list_blobs().unwrap().is_empty(),
        "blobs stored for a refused image"
    );
    let opts = LoadOptions {
        platform: Some(third_platform()),
        ..Default::default()
    };
    let report = load_bytes(&dst, &archive, &opts).unwrap();
    assert_eq!(report.images[0].manifest.digest, b.manifest.digest);
}

#[test]
fn artifacts_and_unknown_entries_are_skipped_with_a_note() {
    let (_s, src) = temp_store();
    let made = make_image(&src, None, &Platform::host(), 24);
    // An artifact manifest: its config is not an image config.
    let art_config = src.put_blob(b"{}", None).unwrap();
    let mut art = Manifest::new_oci(Descriptor::new(mt::OCI_EMPTY, art_config, 2), vec![]);
    art.artifact_type = Some("application/vnd.example.sbom+json".into());
    art.subject = Some(named(&made.manifest, &[]));
    let art_bytes = art.to_json();
    let art_digest = src.put_blob(&art_bytes, None).unwrap();
    let mut blobs = made.blobs();
    blobs.extend([art_config, art_digest]);
    let entries = vec![
        named(
            &Descriptor::new(mt::OCI_MANIFEST, art_digest, art_bytes.len() as u64),
            &[(REF_NAME_ANNOTATION, "sbom")],
        ),
        named(&made.manifest, &[(REF_NAME_ANNOTATION, "app:1")]),
        named(
            &Descriptor::new(
                "application/vnd.oci.descriptor.v1+json",
                made.manifest.digest,
                made.manifest.size,
            ),
            &[(REF_NAME_ANNOTATION, "2")],
        ),
        named(
            &Descriptor::new("application/x-unknown", Digest::of(b"absent"), 6),
            &[],
        ),
    ];
    let (_d, dst) = temp_store();
    let report = load_bytes(
        &dst,
        &layout_tar(&src, &blobs, entries),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(report.images.len(), 1);
    assert_eq!(report.images[0].names, ["app:1"]);
    assert_eq!(report.notes.len(), 3, "{:?}", report.notes);
    assert!(report.notes[0].contains("artifact"), "{:?}", report.notes);
    assert!(
        report.notes[1].contains("vnd.oci.descriptor"),
        "{:?}",
        report.notes
    );
    assert!(
        report.notes[2].contains("application/x-unknown"),
        "{:?}",
        report.notes
    );
    assert!(!dst.has_blob(&art_digest));
    assert_eq!(dst.image_entries().unwrap().len(), 1);

    // Nothing but artifacts: an error, not an empty success.
    let only = layout_tar(
        &src,
        &blobs,
        vec![Descriptor::new(
            mt::OCI_MANIFEST,
            art_digest,
            art_bytes.len() as u64,
        )],
    );
    let err = load_bytes(&dst, &only, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no image") && err.contains("artifact"),
        "{err}"
    );
}

// ---------------------------------------------------------- inputs and reuse

#[test]
fn layout_directories_compressed_archives_and_stdin_load() {
    let (_s, src) = temp_store();
    let made = make_image(&src, Some("app:1"), &Platform::host(), 30);
    let mut oci = Vec::new();
    save(&src, &["app:1".into()], SaveFormat::OciArchive, &mut oci).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A layout directory: unpack the archive with the tar crate.
    let layout = dir.path().join("layout");
    tar::Archive::new(&oci[..]).unpack(&layout).unwrap();
    let inputs: Vec<(&str, Vec<u8>)> = vec![("gzip", gzip(&oci)), ("zstd", zstd(&oci))];
    let (_d, dst) = temp_store();
    let r = load(&dst, &layout, &LoadOptions::default()).unwrap();
    assert_eq!(
        r.images[0].manifest.digest, made.manifest.digest,
        "directory"
    );
    for (what, bytes) in inputs {
        let (_d, dst) = temp_store();
        let path = write_file(dir.path(), &format!("a.{what}"), &bytes);
        let r = load(&dst, &path, &LoadOptions::default()).unwrap();
        assert_eq!(r.images[0].manifest.digest, made.manifest.digest, "{what}");
        let (_d, dst) = temp_store();
        let r = load_reader(&dst, &bytes[..], "stdin", &LoadOptions::default()).unwrap();
        assert_eq!(r.images[0].names, ["app:1"], "{what} stdin");
        assert_untouched(&dst, &snapshot(&dst), what);
    }
}

#[test]
fn shared_layers_are_stored_once_across_archives() {
    let host = Platform::host();
    let (_d, dst) = temp_store();
    // Three docker-archives that each carry their own copy of layer 1.
    let (a, _) = simple_docker_tar(Some(vec!["a"]), &[40], &host);
    let (b, _) = simple_docker_tar(Some(vec!["b"]), &[40, 41], &host);
    let (c, _) = simple_docker_tar(Some(vec!["c"]), &[40, 42], &host);
    for archive in [&a, &b, &c] {
        load_bytes(&dst, archive, &LoadOptions::default()).unwrap();
    }
    let base = Digest::of(&layer_tar(40));
    for name in ["a", "b", "c"] {
        assert_eq!(dst.resolve(name).unwrap().layer_digests()[0], base);
    }
    // 3 distinct layers + 3 configs + 3 manifests.
    assert_eq!(dst.list_blobs().unwrap().len(), 9);
    let u = usage(&dst).unwrap();
    let base_size = dst.blob_size(&base).unwrap();
    let sum: u64 = u.images.iter().map(|i| i.total).sum();
    assert_eq!(sum, u.images_total + 2 * base_size, "base not counted once");
    assert!(u.images.iter().all(|i| i.shared >= base_size));
}

// ------------------------------------------------------------------ bad input

#[test]
fn bad_input_is_refused_and_leaves_the_store_as_it_was() {
    let host = Platform::host();
    let (_s, src) = temp_store();
    let made = make_image(&src, None, &host, 50);
    let good_oci = layout_tar(
        &src,
        &made.blobs(),
        vec![named(&made.manifest, &[(REF_NAME_ANNOTATION, "new:1")])],
    );
    // A layout whose blob under the name of `target` holds other bytes.
    let tampered = |target: Digest| {
        let mut t = TarBuilder::new();
        t.file("oci-layout", 0o644, LAYOUT).file(
            "index.json",
            0o644,
            &ImageIndex::new_oci(vec![named(
                &made.manifest,
                &[(REF_NAME_ANNOTATION, "new:1")],
            )])
            .to_json(),
        );
        for d in made.blobs() {
            let mut bytes = blob(&src, &d);
            if d == target {
                let last = bytes.len() - 1;
                bytes[last] ^= 0xff;
            }
            t.file(&format!("blobs/sha256/{}", d.hex()), 0o644, &bytes);
        }
        t.finish()
    };
    let (good_docker, good_id) = simple_docker_tar(Some(vec!["new"]), &[51, 52], &host);
    let docker_with = |manifest: &[u8], drop_member: Option<&str>| {
        let archive = Source::from_reader(&good_docker[..], "t", &std::env::temp_dir()).unwrap();
        let mut t = TarBuilder::new();
        let mut names = vec![format!("{}.json", good_id.hex())];
        for s in [51, 52] {
            names.push(format!("{}.tar", Digest::of(&layer_tar(s)).hex()));
        }
        for n in names {
            if Some(n.as_str()) != drop_member {
                t.file(&n, 0o644, &archive.read_small(&n).unwrap());
            }
        }
        t.file("manifest.json", 0o644, manifest);
        t.finish()
    };
    let good_manifest = {
        let a = Source::from_reader(&good_docker[..], "t", &std::env::temp_dir()).unwrap();
        a.read_small("manifest.json").unwrap()
    };
    let wrong_diff_id = {
        // The config lists a diff_id its (gzip) layer does not have.
        let layer = gzip(&layer_tar(53));
        let config = docker_config(&[Digest::of(b"not this")], &host);
        docker_tar(
            &[
                Member("c.json".into(), config),
                Member("l.tar.gz".into(), layer),
            ],
            &[DockerImage {
                config: "c.json".into(),
                tags: Some(vec!["new"]),
                layers: vec!["l.tar.gz".into()],
            }],
        )
    };
    let second_broken = {
        // Image 1 is whole and stored first; image 2's second layer is not
        // what its config says. Image 1 must not be tagged either.
        let layer = layer_tar(54);
        let c1 = docker_config(&[Digest::of(&layer)], &host);
        let c2 = docker_config(&[Digest::of(&layer), Digest::of(b"x")], &host);
        docker_tar(
            &[
                Member("c1.json".into(), c1),
                Member("c2.json".into(), c2),
                Member("l.tar".into(), layer),
                Member("l2.tar.gz".into(), gzip(&layer_tar(56))),
            ],
            &[
                DockerImage {
                    config: "c1.json".into(),
                    tags: Some(vec!["new:1"]),
                    layers: vec!["l.tar".into()],
                },
                DockerImage {
                    config: "c2.json".into(),
                    tags: Some(vec!["new:2"]),
                    layers: vec!["l.tar".into(), "l2.tar.gz".into()],
                },
            ],
        )
    };
    let dangling_hardlink = {
        let mut l = TarBuilder::new();
        l.file("a", 0o644, b"a").hardlink("b", "nowhere");
        let layer = l.finish();
        let config = docker_config(&[Digest::of(&layer)], &host);
        docker_tar(
            &[
                Member("c.json".into(), config),
                Member("l.tar".into(), layer),
            ],
            &[DockerImage {
                config: "c.json".into(),
                tags: Some(vec!["new"]),
                layers: vec!["l.tar".into()],
            }],
        )
    };
    let escaping_link = {
        let mut t = TarBuilder::new();
        let layer = layer_tar(55);
        let config = docker_config(&[Digest::of(&layer)], &host);
        t.file("c.json", 0o644, &config)
            .symlink("x/layer.tar", "../../../etc/passwd")
            .file(
                "manifest.json",
                0o644,
                br#"[{"Config":"c.json","RepoTags":["new"],"Layers":["x/layer.tar"]}]"#,
            );
        t.finish()
    };
    let tampered_plain = {
        // One byte of file data flipped: still a valid tar, but not the
        // layer the config's diff_id names.
        let layer = layer_tar(57);
        let mut bad = layer.clone();
        bad[2000] ^= 1;
        let config = docker_config(&[Digest::of(&layer)], &host);
        let path = format!("{}.tar", Digest::of(&layer).hex());
        docker_tar(
            &[Member("c.json".into(), config), Member(path.clone(), bad)],
            &[DockerImage {
                config: "c.json".into(),
                tags: Some(vec!["new"]),
                layers: vec![path],
            }],
        )
    };
    let mut neither = TarBuilder::new();
    neither.file("hello.txt", 0o644, b"hello");
    let neither = neither.finish();
    let cut_at_member = {
        // Whole members, but no end-of-archive blocks.
        let mut t = TarBuilder::new();
        t.file("manifest.json", 0o644, b"[]");
        let bytes = t.finish();
        bytes[..1024].to_vec()
    };

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty file", vec![], "empty"),
        ("not a tar", noise(5000, 1), "not a tar archive"),
        ("neither format", neither, "neither an OCI layout"),
        (
            "manifest.json not JSON",
            docker_with(b"{nope", None),
            "manifest.json: not valid JSON: key must be a string",
        ),
        (
            "manifest.json of the wrong shape",
            docker_with(br#"[{"Layers": []}]"#, None),
            "manifest.json: not a valid docker-archive manifest: missing field `Config`",
        ),
        (
            "layer missing",
            docker_with(
                &good_manifest,
                Some(&format!("{}.tar", Digest::of(&layer_tar(52)).hex())),
            ),
            "is not in the archive",
        ),
        (
            "config missing",
            docker_with(&good_manifest, Some(&format!("{}.json", good_id.hex()))),
            "is not in the archive",
        ),
        (
            "index.json not JSON",
            {
                let mut t = TarBuilder::new();
                t.file("oci-layout", 0o644, LAYOUT)
                    .file("index.json", 0o644, b"[1,2");
                t.finish()
            },
            "index.json: not valid JSON: EOF while parsing",
        ),
        (
            "index.json of the wrong shape",
            {
                let mut t = TarBuilder::new();
                t.file("oci-layout", 0o644, LAYOUT).file(
                    "index.json",
                    0o644,
                    br#"{"manifests": 3}"#,
                );
                t.finish()
            },
            "index.json: not a valid OCI image index: invalid type: integer `3`",
        ),
        (
            "manifest blob tampered",
            tampered(made.manifest.digest),
            "does not match its digest",
        ),
        (
            "config blob tampered",
            tampered(made.id),
            "does not match its digest",
        ),
        (
            "zstd layer tampered",
            tampered(made.layers[1]),
            "corrupt zstd stream",
        ),
        (
            "plain layer tampered",
            tampered_plain,
            "does not match its digest",
        ),
        (
            "truncated in a member",
            good_oci[..good_oci.len() / 2].to_vec(),
            "truncated",
        ),
        ("truncated after a member", cut_at_member, "end-of-archive"),
        (
            "truncated gzip",
            {
                let g = gzip(&good_oci);
                g[..g.len() / 2].to_vec()
            },
            "gzip stream is corrupt or truncated",
        ),
        ("diff_id mismatch", wrong_diff_id, "diff_id"),
        (
            "second image broken",
            second_broken,
            "l2.tar.gz, layer 2 of manifest.json entry 2: its diff_id is",
        ),
        ("hard link to nothing", dangling_hardlink, "hard link"),
        (
            "link out of the archive",
            escaping_link,
            "outside the archive",
        ),
    ];
    let (_d, dst) = temp_store();
    make_image(&dst, Some("existing:1"), &host, 99);
    let before = snapshot(&dst);
    let dir = tempfile::tempdir().unwrap();
    for (case, bytes, want) in cases {
        let path = write_file(dir.path(), "in.tar", &bytes);
        let err = load(&dst, &path, &LoadOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{case}: loaded"))
            .to_string();
        assert!(err.contains(want), "{case}: {err}");
        assert!(
            err.contains(&path.display().to_string()),
            "{case}: file not named: {err}"
        );
        assert!(!err.contains('\n'), "{case}: {err}");
        assert_untouched(&dst, &before, case);
        // Through stdin too: the spooled copy must go as well.
        let err = load_reader(&dst, &bytes[..], "stdin", &LoadOptions::default()).unwrap_err();
        assert!(err.to_string().starts_with("stdin"), "{case}: {err}");
        assert_untouched(&dst, &before, case);
    }
    let missing = dir.path().join("missing.tar");
    let err = load(&dst, &missing, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing.tar") && err.contains("No such file"),
        "{err}"
    );
    assert_untouched(&dst, &before, "missing file");
    // The good archives do load into the same store afterwards.
    load_bytes(&dst, &good_oci, &LoadOptions::default()).unwrap();
    load_bytes(&dst, &good_docker, &LoadOptions::default()).unwrap();
    assert!(dst.resolve("new:1").is_ok() && dst.resolve("new").is_ok());
}

#[test]
fn failed_saves_leave_no_file() {
    let (_s, src) = temp_store();
    let made = make_image(&src, Some("app:1"), &Platform::host(), 60);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.tar");
    let err = save_to_path(&src, &["nope:1".into()], SaveFormat::DockerArchive, &target)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope:1"), "{err}");
    // A damaged layer in the store: neither format copies it silently.
    let layer = src.blob_path(&made.layers[1]);
    let mut bytes = fs::read(&layer).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&layer, &bytes).unwrap();
    for format in [SaveFormat::DockerArchive, SaveFormat::OciArchive] {
        let err = save_to_path(&src, &["app:1".into()], format, &target)
            .unwrap_err()
            .to_string();
        assert!(err.contains("app:1"), "{format:?}: {err}");
    }
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn save_replaces_an_existing_file_only_when_done() {
    let (_s, src) = temp_store();
    make_image(&src, Some("app:1"), &Platform::host(), 61);
    let dir = tempfile::tempdir().unwrap();
    let target = write_file(dir.path(), "out.tar", b"old");
    assert!(save_to_path(&src, &["gone".into()], SaveFormat::OciArchive, &target).is_err());
    assert_eq!(fs::read(&target).unwrap(), b"old");
    save_to_path(&src, &["app:1".into()], SaveFormat::OciArchive, &target).unwrap();
    let (_d, dst) = temp_store();
    assert_eq!(
        load(&dst, &target, &LoadOptions::default()).unwrap().images[0].names,
        ["app:1"]
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

// -------------------------------------------------------------------- skopeo

#[test]
fn skopeo_reads_what_save_writes() {
    let Some(skopeo) = external_tool("skopeo", "archive::tests::skopeo_reads_what_save_writes")
    else {
        return;
    };
    let (_s, src) = temp_store();
    let made = make_image(&src, Some("example.com/app:1"), &Platform::host(), 70);
    let dir = tempfile::tempdir().unwrap();
    let inspect = |arg: String| -> serde_json::Value {
        let out = std::process::Command::new(&skopeo)
            .args(["inspect", &arg])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo inspect {arg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let digests = |v: &serde_json::Value| -> Vec<String> {
        v["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect()
    };
    let docker = dir.path().join("d.tar");
    save_to_path(
        &src,
        &["example.com/app:1".into()],
        SaveFormat::DockerArchive,
        &docker,
    )
    .unwrap();
    let v = inspect(format!("docker-archive:{}", docker.display()));
    let want: Vec<String> = made.diff_ids.iter().map(Digest::to_string).collect();
    assert_eq!(
        digests(&v),
        want,
        "docker-archive layers are not the uncompressed tars"
    );
    assert_eq!(v["Architecture"], Platform::host().architecture);
    assert_eq!(v["Env"], serde_json::json!(["SEED=70"]));

    let oci = dir.path().join("o.tar");
    save_to_path(
        &src,
        &["example.com/app:1".into()],
        SaveFormat::OciArchive,
        &oci,
    )
    .unwrap();
    let v = inspect(format!("oci-archive:{}:example.com/app:1", oci.display()));
    assert_eq!(v["Digest"], made.manifest.digest.to_string());
    let want: Vec<String> = made.layers.iter().map(Digest::to_string).collect();
    assert_eq!(digests(&v), want);
}

#[test]
fn docker_archive_lists_one_config_once() {
    let (_s, src) = temp_store();
    let made = make_image(&src, Some("a:1"), &Platform::host(), 80);
    // A second manifest over the same config and layers.
    let mut copy = src.read_manifest(&made.manifest.digest).unwrap();
    copy.annotations = Some([("x".to_string(), "y".to_string())].into());
    let bytes = copy.to_json();
    let digest = src.put_blob(&bytes, None).unwrap();
    src.tag(
        "a:copy",
        &Descriptor::new(mt::OCI_MANIFEST, digest, bytes.len() as u64),
    )
    .unwrap();
    let mut out = Vec::new();
    save(
        &src,
        &["a:1".into(), "a:copy".into()],
        SaveFormat::DockerArchive,
        &mut out,
    )
    .unwrap();
    let mut names = Vec::new();
    for e in tar::Archive::new(&out[..]).entries().unwrap() {
        names.push(e.unwrap().path().unwrap().display().to_string());
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "duplicate members: {names:?}");
    let dir = tempfile::tempdir().unwrap();
    let archive = Source::open(&write_file(dir.path(), "a.tar", &out), dir.path()).unwrap();
    let items: serde_json::Value =
        serde_json::from_slice(&archive.read_small("manifest.json").unwrap()).unwrap();
    assert_eq!(items.as_array().unwrap().len(), 1);
    assert_eq!(items[0]["RepoTags"], serde_json::json!(["a:1", "a:copy"]));
}

#[test]
fn a_fifo_or_symlink_in_a_layout_directory_is_refused_not_waited_on() {
    let (_s, src) = temp_store();
    make_image(&src, Some("app:1"), &Platform::host(), 60);
    let mut oci = Vec::new();
    save(&src, &["app:1".into()], SaveFormat::OciArchive, &mut oci).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    tar::Archive::new(&oci[..]).unpack(&layout).unwrap();
    let manifest = src.resolve("app:1").unwrap().manifest_digest;
    let blob = layout.join(format!("blobs/sha256/{}", manifest.hex()));
    let fifo = nix::sys::stat::Mode::from_bits_truncate(0o644);
    let cases: Vec<(PathBuf, &str)> = vec![
        (layout.join("index.json"), "is not a regular file"),
        (blob, "is not a regular file"),
        (layout.join("index.json"), "is a symlink"),
    ];
    for (i, (path, want)) in cases.into_iter().enumerate() {
        let saved = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        if want == "is a symlink" {
            let target = dir.path().join("elsewhere.json");
            fs::write(&target, &saved).unwrap();
            std::os::unix::fs::symlink(&target, &path).unwrap();
        } else {
            nix::unistd::mkfifo(&path, fifo).unwrap();
        }
        let (_d, dst) = temp_store();
        let err = load(&dst, &layout, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "case {i}: {err}");
        assert!(dst.image_entries().unwrap().is_empty(), "case {i}");
        fs::remove_file(&path).unwrap();
        fs::write(&path, saved).unwrap();
    }
}

#[test]
fn an_id_load_printed_names_its_image_whatever_the_layer_compression() {
    let layer = layer_tar(70);
    let config = docker_config(&[Digest::of(&layer)], &Platform::host());
    let id = Digest::of(&config);
    let archive = |layer_bytes: Vec<u8>| {
        docker_tar(
            &[
                Member("config.json".into(), config.clone()),
                Member("layer".into(), layer_bytes),
            ],
            &[DockerImage {
                config: "config.json".into(),
                tags: None,
                layers: vec!["layer".into()],
            }],
        )
    };
    let (_d, dst) = temp_store();
    let mut manifests = Vec::new();
    for bytes in [layer.clone(), gzip(&layer), zstd(&layer)] {
        let report = load_bytes(&dst, &archive(bytes), &LoadOptions::default()).unwrap();
        assert_eq!(report.images[0].id, id, "one image ID");
        manifests.push(report.images[0].manifest.digest);
    }
    assert_eq!(dst.image_entries().unwrap().len(), 3, "three manifests");
    for what in [id.to_string(), id.hex(), id.short()] {
        let image = dst.resolve(&what).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(image.id(), id, "{what}");
        assert_eq!(image.manifest_digest, manifests[2], "{what}: the newest");
    }
    // A manifest digest still names its own manifest.
    let image = dst.resolve(&manifests[0].to_string()).unwrap();
    assert_eq!(image.manifest_digest, manifests[0]);
}

#[test]
fn a_prefix_of_two_images_is_ambiguous_and_says_what_it_names() {
    let (_d, dst) = temp_store();
    // Seventeen images: two of them share the first digit of their ID.
    let mut ids = Vec::new();
    for seed in 0..17 {
        let (archive, id) = simple_docker_tar(None, &[80 + seed], &Platform::host());
        load_bytes(&dst, &archive, &LoadOptions::default()).unwrap();
        ids.push(id);
    }
    let digit = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|d| {
            ids.iter()
                .filter(|id| id.hex().starts_with(d.as_str()))
                .count()
                > 1
        })
        .unwrap();
    let err = dst.resolve(&digit).unwrap_err().to_string();
    assert!(
        err.contains("ambiguous") && err.contains("more digits"),
        "{err}"
    );
    assert!(err.contains("manifest sha256:"), "{err}");
}
