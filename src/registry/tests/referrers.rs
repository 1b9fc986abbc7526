//! The published layerfs index: pushed with the image as an artifact whose
//! subject is the image manifest, found through the referrers tag schema
//! on the real distribution 2.8 and through the referrers API where a
//! registry has it (the harness adds one in front of the real registry),
//! added by `index push` to an image pushed without it, and refused when it
//! does not describe the layer.

use super::harness::{Registry, RegistryKind, Server, referrers_api};
use super::*;
use crate::registry::auth::Scopes;
use crate::registry::client::Client;
use crate::registry::referrers::{fetch_indexes, publish};
use crate::registry::{fetch_published_indexes, index_push, referrers_tag};
use crate::testutil::{noise, temp_store, text};

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

/// A three-layer image (gzip, zstd, gzip) tagged `local/idx:1`.
fn three_layers(store: &Store) -> (Descriptor, Vec<Descriptor>) {
    let l1 = layer(store, Compression::Gzip, &[("a", &text(300_000, 1))]);
    let l2 = layer(store, Compression::Zstd, &[("b", &noise(80_000, 2))]);
    let l3 = layer(store, Compression::Gzip, &[("c", b"sea")]);
    let desc = image(store, &[l1, l2, l3], None, Some("local/idx:1"));
    let layers = store.read_manifest(&desc.digest).unwrap().layers;
    (desc, layers)
}

/// The indexes installed in `dst` are the source store's, byte for byte.
fn assert_same_indexes(src: &Store, dst: &Store, layers: &[Descriptor], got: &[Digest]) {
    let want: Vec<Digest> = layers.iter().map(|l| l.digest).collect();
    assert_eq!(got, &want[..]);
    for l in layers {
        let a = std::fs::read(src.layer_index_path(&l.digest)).unwrap();
        let b = std::fs::read(dst.layer_index_path(&l.digest)).unwrap();
        assert_eq!(a, b, "index of {}", l.digest);
        crate::layer::LayerIndex::open(&dst.layer_index_path(&l.digest), &l.digest).unwrap();
        assert!(!dst.has_blob(&l.digest), "only the index is fetched");
    }
}

/// The three-layer image in a store of its own, pushed to `addr/repo:1`
/// (with its indexes or without).
struct Pushed {
    _cfg: tempfile::TempDir,
    _dir: tempfile::TempDir,
    src: Store,
    desc: Descriptor,
    layers: Vec<Descriptor>,
    target: Reference,
    o: ClientOptions,
    report: PushReport,
}

fn pushed(addr: &str, repo: &str, indexes: bool) -> Pushed {
    let cfg = tempfile::tempdir().unwrap();
    let (dir, src) = temp_store();
    let (desc, layers) = three_layers(&src);
    let target = r(&format!("{addr}/{repo}:1"));
    let o = opts(cfg.path());
    let mut po = PushOptions::new(o.clone());
    po.indexes = indexes;
    let report = push(&src, "local/idx:1", &target, &po, &Silent).unwrap();
    Pushed {
        _cfg: cfg,
        _dir: dir,
        src,
        desc,
        layers,
        target,
        o,
        report,
    }
}

#[test]
fn push_publishes_indexes_found_through_the_referrers_tag() {
    let Some(reg) = Registry::start("indexes_via_tag_schema", RegistryKind::default()) else {
        return;
    };
    let p = pushed(&reg.addr, "lazy/app", true);
    let (src, desc, layers, target, o) = (&p.src, &p.desc, &p.layers, &p.target, &p.o);
    assert_eq!(p.report.index_artifacts, 1);
    // Again: the referrers tag still lists one layerfs index.
    push(
        src,
        "local/idx:1",
        target,
        &PushOptions::new(o.clone()),
        &Silent,
    )
    .unwrap();
    let client = Client::connect(&reg.addr, o).unwrap();
    let scopes = Scopes::pull("lazy/app");
    let tag = client
        .get_manifest("lazy/app", &referrers_tag(&desc.digest), &scopes)
        .unwrap();
    let ManifestKind::Index(listed) = ManifestKind::parse(&tag.bytes).unwrap() else {
        panic!("the referrers tag holds no index")
    };
    assert_eq!(listed.manifests.len(), 1);
    assert_eq!(
        listed.manifests[0].artifact_type.as_deref(),
        Some(crate::registry::INDEX_ARTIFACT_TYPE)
    );

    let (_d2, dst) = temp_store();
    let got = fetch_published_indexes(&dst, target, &desc.digest, layers, o).unwrap();
    assert_same_indexes(src, &dst, layers, &got);
    // The index is small beside its layer (the text layer is 300 kB).
    let idx = std::fs::metadata(src.layer_index_path(&layers[0].digest))
        .unwrap()
        .len();
    assert!(
        idx * 20 < layers[0].size.max(100_000) * 2,
        "{idx} vs {}",
        layers[0].size
    );

    // An image without indexes has none to find.
    let bare = r(&format!("{}/lazy/bare:1", reg.addr));
    let mut no_index = PushOptions::new(o.clone());
    no_index.indexes = false;
    push(src, "local/idx:1", &bare, &no_index, &Silent).unwrap();
    let (_d3, other) = temp_store();
    let none = fetch_published_indexes(&other, &bare, &desc.digest, layers, o).unwrap();
    assert!(none.is_empty());
}

#[test]
fn the_referrers_api_is_used_where_the_registry_has_it() {
    let Some(reg) = Registry::start("indexes_via_referrers_api", RegistryKind::default()) else {
        return;
    };
    let proxy = Server::start(Some(reg.addr.clone()), referrers_api(reg.addr.clone()));
    let p = pushed(&proxy.addr, "lazy/api", true);
    let (src, desc, layers, target, o) = (&p.src, &p.desc, &p.layers, &p.target, &p.o);
    assert_eq!(p.report.index_artifacts, 1);
    let tag = referrers_tag(&desc.digest);
    let tag_puts = proxy
        .logged()
        .iter()
        .filter(|l| l.target.contains(&tag))
        .count();
    assert_eq!(tag_puts, 0, "the registry keeps referrers: no tag schema");

    proxy.clear_log();
    let (_d2, dst) = temp_store();
    let got = fetch_published_indexes(&dst, target, &desc.digest, layers, o).unwrap();
    assert_same_indexes(src, &dst, layers, &got);
    let log = proxy.logged();
    assert!(
        log.iter()
            .any(|l| l.target.contains("/referrers/") && l.status == 200),
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.target.contains(&tag)), "{log:?}");
}

#[test]
fn index_push_adds_indexes_to_an_image_pushed_without_them() {
    let Some(reg) = Registry::start("index_push", RegistryKind::default()) else {
        return;
    };
    let proxy = Server::start(
        Some(reg.addr.clone()),
        std::sync::Arc::new(|_: &super::harness::Request| super::harness::Action::Forward),
    );
    let p = pushed(&proxy.addr, "other/tool", false);
    let (src, desc, layers, target, o) = (&p.src, &p.desc, &p.layers, &p.target, &p.o);
    proxy.clear_log();

    let published = index_push(target, o).unwrap();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].indexes.len(), 3);
    assert!(!published[0].referrers_api);
    // Published gzipped: each blob is smaller than the index file it holds.
    for (layer, size) in &published[0].indexes {
        let local = std::fs::metadata(src.layer_index_path(layer))
            .unwrap()
            .len();
        assert!(
            *size < local,
            "index of {layer}: {size} bytes published, {local} local"
        );
    }
    for l in layers {
        let gets = proxy
            .logged()
            .iter()
            .filter(|g| g.method == "GET" && g.target.ends_with(&l.digest.to_string()))
            .count();
        assert_eq!(gets, 1, "layer {} read once", l.digest);
    }
    let (_d2, dst) = temp_store();
    let got = fetch_published_indexes(&dst, target, &desc.digest, layers, o).unwrap();
    assert_same_indexes(src, &dst, layers, &got);
}

#[test]
fn an_index_of_another_layer_is_refused() {
    let Some(reg) = Registry::start("foreign_index", RegistryKind::default()) else {
        return;
    };
    let p = pushed(&reg.addr, "lazy/bad", false);
    let (src, desc, layers) = (&p.src, &p.desc, &p.layers);
    let client = Client::connect(&reg.addr, &p.o).unwrap();
    let scopes = Scopes::push("lazy/bad");
    // Layer 0 announced with layer 1's index.
    let wrong = std::fs::read(src.layer_index_path(&layers[1].digest)).unwrap();
    let subject = Descriptor::new(mt::OCI_MANIFEST, desc.digest, desc.size);
    publish(
        &client,
        "lazy/bad",
        &scopes,
        &subject,
        &[(layers[0].clone(), wrong)],
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = fetch_indexes(
        &client,
        "lazy/bad",
        &scopes,
        &desc.digest,
        layers,
        tmp.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("belongs to another blob"), "{err}");
}

#[test]
fn a_lazy_pull_takes_each_layer_index_from_the_published_artifact() {
    let Some(reg) = Registry::start("lazy_pull_published_index", RegistryKind::default()) else {
        return;
    };
    let proxy = Server::start(
        Some(reg.addr.clone()),
        std::sync::Arc::new(|_: &super::harness::Request| super::harness::Action::Forward),
    );
    let p = pushed(&proxy.addr, "lazy/pub", true);
    let (src, desc, layers, target, o) = (&p.src, &p.desc, &p.layers, &p.target, &p.o);
    proxy.clear_log();

    let (_d2, dst) = temp_store();
    let mut po = PullOptions::new(o.clone());
    po.lazy = true;
    let report = pull(&dst, target, &po, &Silent).unwrap();
    assert_eq!(report.digest, desc.digest);
    assert_eq!(report.layers_lazy, 3);
    let got: Vec<Digest> = layers.iter().map(|l| l.digest).collect();
    assert_same_indexes(src, &dst, layers, &got);
    for l in layers {
        let whole = proxy
            .logged()
            .iter()
            .filter(|g| g.method == "GET" && g.target.ends_with(&l.digest.to_string()))
            .count();
        assert_eq!(whole, 0, "layer {} not read for its index", l.digest);
    }
}

/// The index ingest made has the checkpoints a published one needs, so the
/// first push publishes it as it is instead of inflating the layer again
/// (which replaced the index file with a denser one).
#[test]
fn push_publishes_the_stored_index_without_rebuilding_it() {
    use std::os::unix::fs::MetadataExt;
    let Some(reg) = Registry::start("stored_index_as_is", RegistryKind::default()) else {
        return;
    };
    let cfg = tempfile::tempdir().unwrap();
    let (_dir, src) = temp_store();
    // 9 MB: more spans than a 4 MiB spacing gives.
    let l = layer(&src, Compression::Gzip, &[("big", &text(9_000_000, 3))]);
    let desc = image(&src, &[l], None, Some("local/big:1"));
    let path = src.layer_index_path(&l.digest);
    let before = std::fs::metadata(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let target = r(&format!("{}/big/app:1", reg.addr));
    let o = opts(cfg.path());
    let report = push(
        &src,
        "local/big:1",
        &target,
        &PushOptions::new(o.clone()),
        &Silent,
    )
    .unwrap();
    assert_eq!(report.index_artifacts, 1);
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec()),
        "the index was rebuilt"
    );
    let (_d2, dst) = temp_store();
    let layers = src.read_manifest(&desc.digest).unwrap().layers;
    let got = fetch_published_indexes(&dst, &target, &desc.digest, &layers, &o).unwrap();
    assert_eq!(got, vec![l.digest]);
    assert_eq!(
        std::fs::read(dst.layer_index_path(&l.digest)).unwrap(),
        bytes
    );
}
