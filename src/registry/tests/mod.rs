//! Registry tests: against a real registry started by the test (round
//! trips, skopeo interop, auth, TLS), and against small fake servers and
//! proxies that misbehave on purpose (faults).

mod auth;
mod estargz;
mod faults;
mod harness;
mod helpers;
mod lazy;
mod mutation;
mod referrers;
mod roundtrip;

use super::{
    ClientOptions, PullOptions, PullReport, PushOptions, PushReport, RegistryConfig, RetryPolicy,
    Silent, pull, push,
};
use crate::image::{layer_descriptor, new_config, write_image};
use crate::layer::{Compression, LayerInfo, LayerWriter, TarMeta};
use crate::oci::{
    Descriptor, Digest, ImageIndex, ManifestKind, Platform, Reference, media_type as mt,
};
use crate::store::Store;
use crate::testutil::temp_store;
use std::path::Path;
use std::time::Duration;

/// Client options with their own config dir and quick retries.
pub fn opts(cfg: &Path) -> ClientOptions {
    let mut o = ClientOptions::new(RegistryConfig::in_dir(cfg));
    o.retry = RetryPolicy {
        attempts: 3,
        delay: Duration::from_millis(20),
    };
    o
}

pub fn pull_opts(cfg: &Path) -> PullOptions {
    PullOptions::new(opts(cfg))
}

/// Pushes `image` from `src` to `target`, then pulls it into a new store;
/// both must report `want`'s digest. Returns the reports and that store.
pub fn push_then_pull(
    src: &Store,
    image: &str,
    target: &Reference,
    o: &ClientOptions,
    want: &Descriptor,
) -> (PushReport, PullReport, tempfile::TempDir, Store) {
    let pushed = push(src, image, target, &PushOptions::new(o.clone()), &Silent).unwrap();
    assert_eq!(pushed.digest, want.digest, "{target}: pushed digest");
    let (dir, dst) = temp_store();
    let pulled = pull(&dst, target, &PullOptions::new(o.clone()), &Silent).unwrap();
    assert_eq!(pulled.digest, want.digest, "{target}: pulled digest");
    (pushed, pulled, dir, dst)
}

/// A layer with a directory and the given files.
pub fn layer(store: &Store, c: Compression, files: &[(&str, &[u8])]) -> LayerInfo {
    let meta = TarMeta {
        mode: 0o755,
        mtime: 1_700_000_000,
        ..Default::default()
    };
    let mut w = LayerWriter::new(store, c).unwrap();
    w.add_dir(b"data", &meta).unwrap();
    for (name, bytes) in files {
        let path = format!("data/{name}");
        let fmeta = TarMeta {
            mode: 0o644,
            ..meta.clone()
        };
        w.add_file(path.as_bytes(), &fmeta, bytes.len() as u64, *bytes)
            .unwrap();
    }
    w.finish().unwrap()
}

/// An image over `layers` for `platform` (this machine's when None).
pub fn image(
    store: &Store,
    layers: &[LayerInfo],
    platform: Option<&str>,
    tag: Option<&str>,
) -> Descriptor {
    let mut config = new_config();
    if let Some(p) = platform.and_then(Platform::parse) {
        config.os = p.os;
        config.architecture = p.architecture;
        config.variant = p.variant;
    }
    config.created = Some("2024-01-01T00:00:00Z".into());
    config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id).collect();
    let descs: Vec<Descriptor> = layers.iter().map(layer_descriptor).collect();
    let tag = tag.map(|t| Reference::parse(t).unwrap());
    write_image(store, &config, &descs, tag.as_ref())
        .unwrap()
        .manifest
}

/// An index over images for two platforms, tagged `tag`.
pub fn two_platform_index(store: &Store, tag: &str) -> (Descriptor, Descriptor, Descriptor) {
    let base = layer(
        store,
        Compression::Gzip,
        &[("base", &crate::testutil::noise(100_000, 1))],
    );
    let amd = layer(store, Compression::Gzip, &[("amd64", b"x86 bits")]);
    let arm = layer(store, Compression::Zstd, &[("arm64", b"arm bits")]);
    let mut a = image(store, &[base, amd], Some("linux/amd64"), None);
    let mut b = image(store, &[base, arm], Some("linux/arm64/v8"), None);
    a.platform = Platform::parse("linux/amd64");
    b.platform = Platform::parse("linux/arm64/v8");
    let index = ImageIndex::new_oci(vec![a.clone(), b.clone()]);
    let bytes = index.to_json();
    let d = store.put_blob(&bytes, None).unwrap();
    let desc = Descriptor::new(mt::OCI_INDEX, d, bytes.len() as u64);
    store
        .tag(&Reference::parse(tag).unwrap().canonical(), &desc)
        .unwrap();
    // The children are reachable through the index only, as after a pull.
    for child in [&a, &b] {
        store.remove_image_entries(&child.digest).unwrap();
    }
    (desc, a, b)
}

pub fn blob_bytes(store: &Store, d: &Digest) -> Vec<u8> {
    std::fs::read(store.blob_path(d)).unwrap()
}

/// The store's temp folder holds nothing: no half-written blob was left.
pub fn assert_no_temp_files(store: &Store) {
    let tmp = store.tmp_dir();
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

pub fn assert_fsck_clean(store: &Store) {
    let r = crate::image::fsck(store).unwrap();
    assert!(r.damaged.is_empty(), "fsck: {:?}", r.damaged);
}
