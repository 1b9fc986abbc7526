//! Round trips through a real registry: digests kept byte for byte for
//! every layer compression and for an index, skopeo interop, shared layers
//! fetched once, cross-repository mounts and chunked uploads.

use super::harness::{Action, Registry, RegistryKind, Server};
use super::*;
use crate::registry::{PushOptions, RegistryError, Silent, pull, push};
use crate::testutil::{have_tool, noise, temp_store, text};
use std::process::Command;
use std::sync::Arc;

fn push_opts(cfg: &Path) -> PushOptions {
    PushOptions::new(opts(cfg))
}

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

/// Every blob of `manifest` (the manifest, its config and layers) is the
/// same in both stores.
fn assert_same_image(a: &Store, b: &Store, manifest: &Digest) {
    let bytes = blob_bytes(a, manifest);
    assert_eq!(blob_bytes(b, manifest), bytes, "manifest {manifest}");
    let m = a.read_manifest(manifest).unwrap();
    for d in std::iter::once(m.config.digest).chain(m.layers.iter().map(|l| l.digest)) {
        assert_eq!(blob_bytes(b, &d), blob_bytes(a, &d), "blob {d}");
    }
}

#[test]
fn push_then_pull_keeps_the_manifest_digest_for_gzip_zstd_and_plain_layers() {
    let Some(reg) = Registry::start("push_then_pull_keeps_digests", RegistryKind::default()) else {
        return;
    };
    let cfg = tempfile::tempdir().unwrap();
    for (c, name) in [
        (Compression::Gzip, "gz"),
        (Compression::Zstd, "zst"),
        (Compression::None, "plain"),
    ] {
        let (_d1, src) = temp_store();
        let l1 = layer(&src, c, &[("a", &text(200_000, 1)), ("b", b"bee")]);
        let l2 = layer(&src, c, &[("c", &noise(50_000, 2))]);
        let local = format!("local/{name}:1");
        let desc = image(&src, &[l1, l2], None, Some(&local));
        let target = r(&format!("{}/rt/{name}:v1", reg.addr));
        let (pushed, pulled, _d2, dst) =
            push_then_pull(&src, &local, &target, &opts(cfg.path()), &desc);
        assert_eq!(pushed.size, desc.size);
        assert_eq!(pushed.tag, "v1");
        assert_eq!(pushed.blobs_pushed, 3, "{name}: config and two layers");
        assert_eq!(pulled.tagged.digest, desc.digest);
        assert_eq!(pulled.blobs_downloaded, 3);
        assert_same_image(&src, &dst, &desc.digest);
        let found = dst.find_entry(&target.canonical()).unwrap();
        assert_eq!(found.descriptor.digest, desc.digest);
        assert_eq!(found.name(), Some(target.canonical().as_str()));
        let m = dst.read_manifest(&desc.digest).unwrap();
        assert_eq!(m.layers[0].media_type, c.oci_media_type());
        assert_fsck_clean(&dst);
        assert_no_temp_files(&dst);

        // Asking for another platform than the image's fetches its config only.
        if c == Compression::Gzip {
            let (_d3, other) = temp_store();
            let mut o = pull_opts(cfg.path());
            o.platform = Platform::parse("linux/s390x");
            let e = pull(&other, &target, &o, &Silent).unwrap_err();
            assert!(matches!(e, RegistryError::NoPlatform { .. }), "{e}");
            assert!(e.to_string().contains("linux/s390x"), "{e}");
            assert!(other.image_entries().unwrap().is_empty());
            let m = src.read_manifest(&desc.digest).unwrap();
            assert!(m.layers.iter().all(|l| !other.has_blob(&l.digest)));

            // By digest: verified against it, and named by it.
            let by_digest = r(&format!("{}/rt/{name}@{}", reg.addr, desc.digest));
            let rep = pull(&other, &by_digest, &pull_opts(cfg.path()), &Silent).unwrap();
            assert_eq!(rep.digest, desc.digest);
            assert_eq!(rep.name, by_digest.canonical());
            let found = other.find_entry(&by_digest.to_string()).unwrap();
            assert_eq!(found.descriptor.digest, desc.digest);
        }

        // Pushing again finds everything there.
        let again = push(&src, &local, &target, &push_opts(cfg.path()), &Silent).unwrap();
        assert_eq!((again.blobs_pushed, again.blobs_existing), (0, 3));
        assert_eq!(again.digest, desc.digest);
    }
}

#[test]
fn an_index_round_trips_whole_and_by_platform() {
    let Some(reg) = Registry::start("index_round_trip", RegistryKind::default()) else {
        return;
    };
    let cfg = tempfile::tempdir().unwrap();
    let (_d1, src) = temp_store();
    let (index, amd, arm) = two_platform_index(&src, "multi:1");
    let target = r(&format!("{}/multi/app:1", reg.addr));
    let pushed = push(&src, "multi:1", &target, &push_opts(cfg.path()), &Silent).unwrap();
    assert_eq!(pushed.digest, index.digest);
    // Shared base once, two own layers, two configs.
    assert_eq!(pushed.blobs_pushed, 5);

    // --all-platforms keeps the index and both images.
    let (_d2, all) = temp_store();
    let mut o = pull_opts(cfg.path());
    o.all_platforms = true;
    let rep = pull(&all, &target, &o, &Silent).unwrap();
    assert_eq!(rep.digest, index.digest);
    assert_eq!(rep.tagged.digest, index.digest);
    assert_eq!(rep.tagged.media_type, mt::OCI_INDEX);
    assert_eq!(
        blob_bytes(&all, &index.digest),
        blob_bytes(&src, &index.digest)
    );
    assert_same_image(&src, &all, &amd.digest);
    assert_same_image(&src, &all, &arm.digest);
    let arm_img = all
        .resolve_for(
            &target.canonical(),
            &Platform::parse("linux/arm64/v8").unwrap(),
        )
        .unwrap();
    assert_eq!(arm_img.manifest_digest, arm.digest);
    assert_eq!(arm_img.config.architecture, "arm64");
    assert_fsck_clean(&all);

    // A platform picks one image; only its blobs come down.
    let (_d3, one) = temp_store();
    let mut o = pull_opts(cfg.path());
    o.platform = Platform::parse("linux/arm64");
    let rep = pull(&one, &target, &o, &Silent).unwrap();
    assert_eq!(rep.digest, index.digest, "the reference names the index");
    assert_eq!(
        rep.tagged.digest, arm.digest,
        "the tag names the arm64 image"
    );
    assert_eq!(rep.blobs_downloaded, 3, "base, arm layer, arm config");
    assert!(!one.has_blob(&amd.digest));
    assert_same_image(&src, &one, &arm.digest);
    assert_fsck_clean(&one);

    // A platform the index lacks is a clear error naming what it has.
    let (_d4, none) = temp_store();
    let mut o = pull_opts(cfg.path());
    o.platform = Platform::parse("linux/s390x");
    let e = pull(&none, &target, &o, &Silent).unwrap_err();
    assert!(matches!(e, RegistryError::NoPlatform { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&reg.addr) && msg.contains("linux/s390x") && msg.contains("linux/arm64/v8"),
        "{msg}"
    );

    // The whole index pulled pushes back to the same digest.
    let back = r(&format!("{}/multi/copy:1", reg.addr));
    let rep = push(
        &all,
        &target.canonical(),
        &back,
        &push_opts(cfg.path()),
        &Silent,
    )
    .unwrap();
    assert_eq!(rep.digest, index.digest);
    // A single-platform pull pushes as that image alone.
    let rep = push(
        &one,
        &target.canonical(),
        &back,
        &push_opts(cfg.path()),
        &Silent,
    )
    .unwrap();
    assert_eq!(rep.digest, arm.digest);
}

/// skopeo reads what we push, and we read what skopeo pushes (as Docker
/// schema2, which exercises the Docker media types).
#[test]
fn skopeo_interop_both_ways() {
    if !have_tool("skopeo", "skopeo_interop_both_ways") {
        return;
    }
    let Some(reg) = Registry::start("skopeo_interop_both_ways", RegistryKind::default()) else {
        return;
    };
    let cfg = tempfile::tempdir().unwrap();
    let (d1, src) = temp_store();
    let l1 = layer(&src, Compression::Gzip, &[("one", &text(80_000, 5))]);
    let l2 = layer(&src, Compression::Zstd, &[("two", &noise(30_000, 6))]);
    let desc = image(&src, &[l1, l2], None, Some("ours:1"));
    let target = r(&format!("{}/inter/ours:1", reg.addr));
    push(&src, "ours:1", &target, &push_opts(cfg.path()), &Silent).unwrap();

    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let st = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/inter/ours:1", reg.addr))
        .arg(format!("oci:{}:ours", layout.display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let index: ImageIndex =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index.manifests[0].digest, desc.digest,
        "skopeo sees our digest"
    );
    let theirs = std::fs::read(layout.join("blobs/sha256").join(desc.digest.hex())).unwrap();
    assert_eq!(theirs, blob_bytes(&src, &desc.digest));
    for d in [l1.digest, l2.digest] {
        let b = std::fs::read(layout.join("blobs/sha256").join(d.hex())).unwrap();
        assert_eq!(b, blob_bytes(&src, &d), "layer {d}");
    }

    // skopeo pushes an OCI layout (our store is one) as Docker schema2,
    // which has no zstd: an image of gzip layers.
    let l3 = layer(&src, Compression::Gzip, &[("three", &noise(20_000, 7))]);
    image(&src, &[l1, l3], None, Some("sk:1"));
    let st = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--format", "v2s2"])
        .arg(format!("oci:{}:sk:1", d1.path().display()))
        .arg(format!("docker://{}/inter/theirs:2", reg.addr))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "skopeo push: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/inter/theirs:2", reg.addr))
        .output()
        .unwrap();
    assert!(raw.status.success());
    let their_digest = Digest::of(&raw.stdout);

    let (_d2, dst) = temp_store();
    let theirs_ref = r(&format!("{}/inter/theirs:2", reg.addr));
    let rep = pull(&dst, &theirs_ref, &pull_opts(cfg.path()), &Silent).unwrap();
    assert_eq!(rep.digest, their_digest);
    assert_eq!(
        blob_bytes(&dst, &their_digest),
        raw.stdout,
        "manifest stored byte for byte"
    );
    assert_eq!(rep.tagged.media_type, mt::DOCKER_MANIFEST);
    let m = dst.read_manifest(&their_digest).unwrap();
    assert_eq!(m.config.media_type, mt::DOCKER_CONFIG);
    let got: Vec<Digest> = m.layers.iter().map(|l| l.digest).collect();
    assert_eq!(got, vec![l1.digest, l3.digest], "layers kept as they were");
    let img = dst.resolve(&theirs_ref.canonical()).unwrap();
    assert_eq!(img.config.rootfs.diff_ids, vec![l1.diff_id, l3.diff_id]);
    assert_fsck_clean(&dst);
}

/// A proxy in front of the registry that counts what passes.
fn counting_proxy(reg: &Registry) -> Server {
    Server::start(Some(reg.addr.clone()), Arc::new(|_| Action::Forward))
}

fn blob_gets(p: &Server) -> Vec<String> {
    p.logged()
        .into_iter()
        .filter(|l| l.method == "GET" && l.target.contains("/blobs/"))
        .map(|l| l.target.rsplit('/').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_shared_base_layer_is_downloaded_once_and_a_second_pull_downloads_nothing() {
    let Some(reg) = Registry::start("shared_base_layer", RegistryKind::default()) else {
        return;
    };
    let cfg = tempfile::tempdir().unwrap();
    let (_d1, src) = temp_store();
    let base = layer(&src, Compression::Gzip, &[("base", &noise(300_000, 9))]);
    let a = layer(&src, Compression::Gzip, &[("a", b"only in a")]);
    let b = layer(&src, Compression::Gzip, &[("b", b"only in b")]);
    let ia = image(&src, &[base, a], None, Some("app-a:1"));
    let ib = image(&src, &[base, b], None, Some("app-b:1"));
    for (img, name) in [("app-a:1", "app-a"), ("app-b:1", "app-b")] {
        let t = r(&format!("{}/shared/{name}:1", reg.addr));
        push(&src, img, &t, &push_opts(cfg.path()), &Silent).unwrap();
    }
    let proxy = counting_proxy(&reg);
    let (_d2, dst) = temp_store();
    let ca = src.read_manifest(&ia.digest).unwrap().config.digest;
    let cb = src.read_manifest(&ib.digest).unwrap().config.digest;

    let ra = pull(
        &dst,
        &r(&format!("{}/shared/app-a:1", proxy.addr)),
        &pull_opts(cfg.path()),
        &Silent,
    )
    .unwrap();
    assert_eq!(ra.digest, ia.digest);
    let mut got = blob_gets(&proxy);
    got.sort();
    let mut want = vec![
        base.digest.to_string(),
        a.digest.to_string(),
        ca.to_string(),
    ];
    want.sort();
    assert_eq!(got, want, "app-a: its config and two layers");

    proxy.clear_log();
    let rb = pull(
        &dst,
        &r(&format!("{}/shared/app-b:1", proxy.addr)),
        &pull_opts(cfg.path()),
        &Silent,
    )
    .unwrap();
    assert_eq!(rb.digest, ib.digest);
    let mut got = blob_gets(&proxy);
    got.sort();
    let mut want = vec![b.digest.to_string(), cb.to_string()];
    want.sort();
    assert_eq!(got, want, "app-b: only its own layer and config");
    assert_eq!((rb.blobs_present, rb.blobs_downloaded), (1, 2));

    // Pulling app-a again: a HEAD, no manifest GET, no blob GET.
    proxy.clear_log();
    let again = pull(
        &dst,
        &r(&format!("{}/shared/app-a:1", proxy.addr)),
        &pull_opts(cfg.path()),
        &Silent,
    )
    .unwrap();
    assert!(again.up_to_date);
    let gets: Vec<_> = proxy
        .logged()
        .into_iter()
        .filter(|l| l.method == "GET" && l.target != "/v2/")
        .collect();
    assert!(gets.is_empty(), "an up-to-date pull downloaded {gets:?}");
    assert_eq!(again.bytes_downloaded, 0);
    assert_fsck_clean(&dst);
}

#[test]
fn blobs_are_mounted_across_repositories_and_large_ones_go_up_in_chunks() {
    let Some(reg) = Registry::start("mount_and_chunks", RegistryKind::default()) else {
        return;
    };
    let cfg = tempfile::tempdir().unwrap();
    let (_d1, src) = temp_store();
    let big = layer(&src, Compression::Gzip, &[("big", &noise(700_000, 3))]);
    let desc = image(&src, &[big], None, Some("big:1"));
    let proxy = counting_proxy(&reg);
    let mut o = push_opts(cfg.path());
    o.chunk_size = 256 << 10;
    let first = r(&format!("{}/one/big:1", proxy.addr));
    let rep = push(&src, "big:1", &first, &o, &Silent).unwrap();
    assert_eq!(rep.digest, desc.digest);
    let patches = proxy
        .logged()
        .iter()
        .filter(|l| l.method == "PATCH")
        .count();
    assert_eq!(patches, 3, "700 kB in 256 KiB chunks");

    let second = r(&format!("{}/two/big:1", proxy.addr));
    let rep = push(&src, "big:1", &second, &o, &Silent).unwrap();
    assert_eq!(
        rep.blobs_mounted, 2,
        "layer and config mounted from one/big"
    );
    assert_eq!((rep.blobs_pushed, rep.bytes_pushed), (0, 0));
    assert!(
        proxy.logged().iter().any(|l| l.method == "POST"
            && l.target.contains("mount=")
            && l.target.contains("from=one%2Fbig")
            && l.status == 201),
        "a 201 mount"
    );
    let (_d2, dst) = temp_store();
    let rep = pull(&dst, &second, &pull_opts(cfg.path()), &Silent).unwrap();
    assert_eq!(rep.digest, desc.digest);
    assert_same_image(&src, &dst, &desc.digest);
}

#[test]
fn build_pulls_a_from_image_the_store_lacks() {
    let Some(reg) = Registry::start(
        "build_pulls_a_from_image_the_store_lacks",
        RegistryKind::default(),
    ) else {
        return;
    };
    let cfg = tempfile::tempdir().unwrap();
    let (_d1, src) = temp_store();
    let l1 = layer(
        &src,
        Compression::Gzip,
        &[("base.txt", b"from the registry")],
    );
    let desc = image(&src, &[l1], None, Some("local/base:1"));
    let remote = r(&format!("{}/lib/base:1", reg.addr));
    push(
        &src,
        "local/base:1",
        &remote,
        &push_opts(cfg.path()),
        &Silent,
    )
    .unwrap();

    let (_d2, dst) = temp_store();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {remote}\nENV PULLED=yes\n"),
    )
    .unwrap();
    let opts = crate::dockerfile::BuildOptions {
        context: ctx.path().to_path_buf(),
        tag: Some(r("app:1")),
        ..Default::default()
    };
    let mut out = Vec::new();
    crate::dockerfile::build(&dst, &opts, &mut out).unwrap();
    let log = String::from_utf8_lossy(&out);
    assert!(log.contains("pulling"), "{log}");
    assert_eq!(
        dst.find_entry(&remote.canonical())
            .unwrap()
            .descriptor
            .digest,
        desc.digest
    );
    let app = dst.resolve("app:1").unwrap();
    assert_eq!(app.manifest.layers.len(), 1);
    let env = app.config.config.unwrap().env.unwrap();
    assert!(env.iter().any(|e| e == "PULLED=yes"), "{env:?}");
}

#[test]
fn a_pull_downloads_the_largest_layers_first() {
    let Some(reg) = Registry::start("largest_first", RegistryKind::default()) else {
        return;
    };
    let cfg = tempfile::tempdir().unwrap();
    let (_d1, src) = temp_store();
    // In the manifest smallest first: a pull in that order would leave the
    // largest layer to run alone at the end.
    let small = layer(&src, Compression::Gzip, &[("small", &noise(10_000, 1))]);
    let mid = layer(&src, Compression::Gzip, &[("mid", &noise(100_000, 2))]);
    let large = layer(&src, Compression::Gzip, &[("large", &noise(400_000, 3))]);
    let desc = image(&src, &[small, mid, large], None, Some("sizes:1"));
    let t = r(&format!("{}/sizes/app:1", reg.addr));
    push(&src, "sizes:1", &t, &push_opts(cfg.path()), &Silent).unwrap();

    let proxy = counting_proxy(&reg);
    let (_d2, dst) = temp_store();
    let mut o = pull_opts(cfg.path());
    o.jobs = 1;
    let got = pull(
        &dst,
        &r(&format!("{}/sizes/app:1", proxy.addr)),
        &o,
        &Silent,
    )
    .unwrap();
    assert_eq!(got.digest, desc.digest);
    let config = src.read_manifest(&desc.digest).unwrap().config.digest;
    let layers: Vec<String> = blob_gets(&proxy)
        .into_iter()
        .filter(|d| *d != config.to_string())
        .collect();
    let want: Vec<String> = [large, mid, small]
        .iter()
        .map(|l| l.digest.to_string())
        .collect();
    assert_eq!(layers, want);
    assert_same_image(&src, &dst, &desc.digest);
    assert_fsck_clean(&dst);
}
