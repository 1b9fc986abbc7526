//! eStargz through a real registry: layers layerfs writes read back with
//! skopeo + umoci (the tree unpacked equals the source) and lazily by range
//! (TOC from the blob's end, each chunk alone, every one verified); layers
//! that containerd's `ctr-remote` converts (a writer nobody here wrote)
//! read lazily by range and equal the full pull.

use super::harness::{Action, Request, Server, respond};
use super::harness::{Registry, RegistryKind};
use super::*;
use crate::layer::estargz::{TOC_DIGEST_ANNOTATION, TOC_NAME, UNCOMPRESSED_SIZE_ANNOTATION};
use crate::layer::{EntryKind, Layer, SpanCache};
use crate::registry::{EstargzSource, RangeFetcher};
use crate::store::partial;
use crate::testutil::Containerd;
use crate::testutil::{have_tool, noise, temp_store, text};
use std::collections::HashMap;
use std::io::Read;
use std::process::Command;

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

/// The regular files of a stored layer, read through a plain gzip reader.
fn files_of_blob(store: &Store, d: &Digest) -> HashMap<String, Vec<u8>> {
    let blob = std::fs::File::open(store.blob_path(d)).unwrap();
    let tar = crate::layer::decompressed(blob).unwrap();
    let mut out = HashMap::new();
    for e in tar::Archive::new(tar).entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let name = crate::layer::estargz::clean_name(&e.path().unwrap().to_string_lossy());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(name, data);
        }
    }
    out
}

/// Every regular file of every eStargz layer of `manifest`, put together
/// from chunks fetched one by one by range, each checked against its digest.
fn files_by_range(src: &EstargzSource, layers: &[Descriptor]) -> HashMap<String, Vec<u8>> {
    let mut out: HashMap<String, Vec<u8>> = HashMap::new();
    for l in layers {
        let (toc, at) = src.toc(l).unwrap().expect("an eStargz layer");
        let mut files: HashMap<String, Vec<u8>> = HashMap::new();
        for c in toc.chunks(at).unwrap() {
            let data = src.chunk(&l.digest, &c).unwrap();
            let f = files.entry(c.path.clone()).or_default();
            assert_eq!(f.len() as u64, c.file_offset);
            f.extend_from_slice(&data);
        }
        for e in toc
            .entries
            .iter()
            .filter(|e| e.kind == "reg" && e.size == 0)
        {
            files.insert(crate::layer::estargz::clean_name(&e.name), Vec::new());
        }
        // A file of an upper layer replaces a lower one's.
        out.extend(files);
    }
    out
}

#[test]
fn estargz_written_by_layerfs_reads_back_with_skopeo_umoci_and_by_range() {
    let test = "estargz_written_by_layerfs";
    if !have_tool("skopeo", test) || !have_tool("umoci", test) {
        return;
    }
    let Some(reg) = Registry::start(test, RegistryKind::default()) else {
        return;
    };
    let (_d, src) = temp_store();
    let big = noise(5 << 20, 3);
    let small = text(100_000, 4);
    let l1 = layer(&src, Compression::Gzip, &[("big", &big), ("small", &small)]);
    let l2 = layer(&src, Compression::Zstd, &[("zst", b"from a zstd layer")]);
    image(&src, &[l1, l2], None, Some("local/e:1"));
    let conv = crate::image::to_estargz(&src, "local/e:1").unwrap();
    let m = src.read_manifest(&conv.manifest.digest).unwrap();
    let config = src.read_config(&m.config.digest).unwrap();
    for (l, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
        assert_eq!(l.media_type, mt::OCI_LAYER_GZIP);
        assert!(l.annotation(TOC_DIGEST_ANNOTATION).is_some(), "{l:?}");
        let index = crate::layer::open_index(&src, &l.digest).unwrap();
        assert_eq!(
            index.diff_id(),
            diff_id,
            "the config follows the new layers"
        );
        let size = index.meta().uncompressed_size.to_string();
        assert_eq!(
            l.annotation(UNCOMPRESSED_SIZE_ANNOTATION),
            Some(size.as_str())
        );
    }
    assert_fsck_clean(&src);

    let cfg = tempfile::tempdir().unwrap();
    let o = opts(cfg.path());
    let target = r(&format!("{}/es/app:1", reg.addr));
    let hex = conv.manifest.digest.hex();
    push(&src, &hex, &target, &PushOptions::new(o.clone()), &Silent).unwrap();

    // skopeo + umoci: the unpacked tree holds the source's files (and the TOC).
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "-q"])
        .arg(format!("docker://{}/es/app:1", reg.addr))
        .arg(format!("oci:{}:app", layout.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = work.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:app", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(std::fs::read(rootfs.join("data/big")).unwrap(), big);
    assert_eq!(std::fs::read(rootfs.join("data/small")).unwrap(), small);
    assert_eq!(
        std::fs::read(rootfs.join("data/zst")).unwrap(),
        b"from a zstd layer"
    );
    assert!(rootfs.join(TOC_NAME).is_file());

    // By range: TOC from the end, every chunk alone.
    let es = EstargzSource::connect(&target, &o).unwrap();
    let got = files_by_range(&es, &m.layers);
    assert_eq!(got["data/big"], big);
    assert_eq!(got["data/small"], small);
    assert_eq!(got["data/zst"], b"from a zstd layer");

    // Lazily with layerfs: a lazy pull (its published index), then reads
    // that fetch only what they need.
    crate::store::partial::set_fetcher_for(
        &reg.addr,
        std::sync::Arc::new(crate::registry::RangeFetcher::new(o.clone())),
    );
    let (_d3, lazy) = temp_store();
    let mut po = PullOptions::new(o.clone());
    po.lazy = true;
    let report = pull(&lazy, &target, &po, &Silent).unwrap();
    assert_eq!(report.layers_lazy, 2);
    let top = &m.layers[0].digest;
    assert!(!lazy.has_blob(top) && lazy.has_partial(top));
    let l = crate::layer::Layer::open(&lazy, top, crate::layer::SpanCache::new(1 << 20)).unwrap();
    let dir = l.index.find_dir(b"data").unwrap();
    let (e, _) = dir.lookup(b"small");
    let e = e.unwrap();
    let mut buf = vec![0u8; e.size() as usize];
    assert_eq!(l.read_at(&e, 0, &mut buf).unwrap(), small.len());
    assert_eq!(buf, small);
}

/// An image converted to eStargz by ctr-remote (a private containerd), as
/// a full pull stores it: layer 1 holds `data/big` (9 MiB, 3 chunks) and
/// `data/a`, layer 2 `data/b`. None when root or the tools are missing.
struct CtrImage {
    _dirs: [tempfile::TempDir; 2],
    full: Store,
    manifest: Digest,
    m: crate::oci::Manifest,
    big: Vec<u8>,
}

fn ctr_remote_image(test: &str) -> Option<CtrImage> {
    if !nix::unistd::geteuid().is_root()
        || !have_tool("containerd", test)
        || !have_tool("ctr-remote", test)
    {
        return None;
    }
    let (_d, src) = temp_store();
    let big = noise(9 << 20, 5);
    let l1 = layer(&src, Compression::Gzip, &[("big", &big), ("a", b"alpha\n")]);
    let l2 = layer(&src, Compression::Gzip, &[("b", &text(300_000, 6))]);
    image(&src, &[l1, l2], None, Some("local/plain:1"));
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("plain.tar");
    crate::archive::save_to_path(
        &src,
        &["local/plain:1".to_string()],
        crate::archive::SaveFormat::OciArchive,
        &archive,
    )
    .unwrap();

    let ctrd = Containerd::start();
    let a = archive.to_string_lossy().into_owned();
    ctrd.ok(&[
        "images",
        "import",
        "--base-name",
        "docker.io/library/plain",
        "--digests",
        &a,
    ]);
    let listed = ctrd.ok(&["images", "ls", "-q"]);
    let plain = listed
        .lines()
        .next()
        .expect("an imported image")
        .to_string();
    let esgz = "docker.io/library/plain:esgz";
    ctrd.ok(&["image", "convert", "--estargz", "--oci", &plain, esgz]);
    let converted = work.path().join("esgz.tar");
    let c = converted.to_string_lossy().into_owned();
    ctrd.ok(&["images", "export", &c, esgz]);
    drop(ctrd);

    // Loaded whole: the full pull.
    let (d2, full) = temp_store();
    let loaded = crate::archive::load(&full, &converted, &Default::default()).unwrap();
    let manifest = loaded.images[0].manifest.digest;
    let m = full.read_manifest(&manifest).unwrap();
    assert!(
        m.layers
            .iter()
            .all(|l| l.annotation(TOC_DIGEST_ANNOTATION).is_some()),
        "ctr-remote annotates every layer: {m:?}"
    );
    Some(CtrImage {
        _dirs: [work, d2],
        full,
        manifest,
        m,
        big,
    })
}

#[test]
fn estargz_made_by_ctr_remote_reads_by_range_and_equals_its_full_pull() {
    let test = "estargz_made_by_ctr_remote";
    let Some(img) = ctr_remote_image(test) else {
        return;
    };
    let Some(reg) = Registry::start(test, RegistryKind::default()) else {
        return;
    };
    let (full, manifest, m, big) = (&img.full, img.manifest, &img.m, &img.big);
    let cfg = tempfile::tempdir().unwrap();
    let o = opts(cfg.path());
    let target = r(&format!("{}/es/ctr:1", reg.addr));
    push(
        full,
        &manifest.hex(),
        &target,
        &PushOptions::new(o.clone()),
        &Silent,
    )
    .unwrap();

    let es = EstargzSource::connect(&target, &o).unwrap();
    let lazy = files_by_range(&es, &m.layers);
    let mut whole: HashMap<String, Vec<u8>> = HashMap::new();
    for l in &m.layers {
        whole.extend(files_of_blob(full, &l.digest));
    }
    // ctr-remote adds its landmark and TOC as files; the TOC lists neither itself.
    whole.remove(TOC_NAME);
    assert_eq!(lazy.keys().len(), whole.keys().len(), "{:?}", lazy.keys());
    for (name, data) in &whole {
        assert!(lazy.get(name) == Some(data), "{name} differs");
    }
    assert_eq!(&lazy["data/big"], big);
    assert_eq!(lazy["data/a"], b"alpha\n");
}

type TreeEntry = (
    EntryKind,
    u32,
    u32,
    u32,
    (i64, u32),
    Vec<u8>,
    (u32, u32),
    Vec<u8>,
);

/// Every entry of a layer by path: kind, mode, owner, mtime, link target,
/// device numbers and, for a regular file, its contents, read through the
/// layer (for a lazy layer: fetched by range).
fn tree_of(store: &Store, layer: &Digest) -> std::collections::BTreeMap<Vec<u8>, TreeEntry> {
    let l = Layer::open(store, layer, SpanCache::new(8 << 20)).unwrap();
    let mut out = std::collections::BTreeMap::new();
    let mut dirs = vec![(Vec::new(), l.index.root())];
    while let Some((path, dir)) = dirs.pop() {
        for id in dir.children() {
            let e = l.index.entry(id);
            let mut p = path.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(e.name());
            let mut data = Vec::new();
            if e.kind() == EntryKind::Regular {
                data = vec![0u8; e.size() as usize];
                let n = l.read_at(&e, 0, &mut data).unwrap();
                assert_eq!(n as u64, e.size(), "{}", String::from_utf8_lossy(&p));
            }
            if let Some(d) = e.as_dir() {
                dirs.push((p.clone(), d));
            }
            let v = (
                e.kind(),
                e.mode(),
                e.uid(),
                e.gid(),
                e.mtime(),
                e.link().to_vec(),
                e.rdev(),
                data,
            );
            out.insert(p, v);
        }
    }
    out
}

fn read_data_file(store: &Store, layer: &Digest, name: &str) -> Result<Vec<u8>, String> {
    let l = Layer::open(store, layer, SpanCache::new(1 << 20)).map_err(|e| e.to_string())?;
    let dir = l.index.find_dir(b"data").ok_or("no data directory")?;
    let e = dir.lookup(name.as_bytes()).0.ok_or("no such file")?;
    let mut out = vec![0u8; e.size() as usize];
    let n = l.read_at(&e, 0, &mut out).map_err(|e| e.to_string())?;
    out.truncate(n);
    Ok(out)
}

#[test]
fn estargz_made_by_ctr_remote_without_an_index_pulls_lazily_through_its_toc() {
    let test = "estargz_lazily_through_its_toc";
    let Some(img) = ctr_remote_image(test) else {
        return;
    };
    let Some(reg) = Registry::start(test, RegistryKind::default()) else {
        return;
    };
    let cfg = tempfile::tempdir().unwrap();
    let o = opts(cfg.path());
    let mut po = PushOptions::new(o.clone());
    po.indexes = false;
    let target = r(&format!("{}/es/noindex:1", reg.addr));
    push(&img.full, &img.manifest.hex(), &target, &po, &Silent).unwrap();

    let proxy = Server::start(
        Some(reg.addr.clone()),
        std::sync::Arc::new(|_: &Request| Action::Forward),
    );
    partial::set_fetcher_for(
        &proxy.addr,
        std::sync::Arc::new(RangeFetcher::new(o.clone())),
    );
    let (_d, store) = temp_store();
    let mut pull_opts = PullOptions::new(o.clone());
    pull_opts.lazy = true;
    let via = r(&format!("{}/es/noindex:1", proxy.addr));
    let report = pull(&store, &via, &pull_opts, &Silent).unwrap();
    let layers: Vec<Digest> = img.m.layers.iter().map(|l| l.digest).collect();
    assert_eq!(report.layers_lazy, layers.len());
    for d in &layers {
        assert!(!store.has_blob(d) && store.has_partial(d));
    }
    let total: u64 = img.m.layers.iter().map(|l| l.size).sum();
    let blob_bytes_served = || -> u64 {
        proxy
            .logged()
            .iter()
            .filter(|l| l.method == "GET" && l.target.contains("/blobs/"))
            .map(|l| l.body_bytes)
            .sum()
    };
    assert!(
        blob_bytes_served() < total / 4,
        "{} of {total}",
        blob_bytes_served()
    );
    proxy.clear_log();

    // A small file fetches its chunk, not the 9 MiB beside it.
    assert_eq!(read_data_file(&store, &layers[0], "a").unwrap(), b"alpha\n");
    let served = blob_bytes_served();
    assert!(served > 0 && served < total / 4, "{served} of {total}");

    // The tree and every file equal the full pull's.
    for d in &layers {
        assert!(
            tree_of(&store, d) == tree_of(&img.full, d),
            "layer {d} differs"
        );
    }
    assert_eq!(read_data_file(&store, &layers[0], "big").unwrap(), img.big);

    // Prefetch completes the layers: the very blobs a full pull stores.
    for d in &layers {
        let l = Layer::open(&store, d, SpanCache::new(1 << 20)).unwrap();
        assert!(l.prefetch(4 << 20, &|| true).unwrap());
        assert!(store.has_blob(d) && !store.has_partial(d));
        assert!(blob_bytes(&store, d) == blob_bytes(&img.full, d));
    }
    assert_fsck_clean(&store);
}

#[test]
fn a_wrong_estargz_chunk_fails_the_read_and_stores_nothing() {
    let Some(img) = ctr_remote_image("a_wrong_estargz_chunk") else {
        return;
    };
    let cfg = tempfile::tempdir().unwrap();
    let o = opts(cfg.path());
    let mut blobs = HashMap::new();
    for d in [img.manifest, img.m.config.digest]
        .into_iter()
        .chain(img.m.layers.iter().map(|l| l.digest))
    {
        blobs.insert(d.to_string(), blob_bytes(&img.full, &d));
    }
    let layer_d = img.m.layers[0].digest;
    let blob = blobs[&layer_d.to_string()].clone();
    let key = layer_d.to_string();
    // Where the TOC starts: ranges that end before it are chunks.
    let toc_at = crate::layer::estargz::parse_footer(
        &blob[blob.len() - crate::layer::estargz::FOOTER_SIZE as usize..],
    )
    .unwrap() as usize;
    let served = super::faults::Served {
        manifest: img.manifest,
        blobs,
        layers: img.m.layers.iter().map(|l| l.digest).collect(),
    };
    let s = super::faults::fake(
        served,
        std::sync::Arc::new(move |req: &Request, _: &super::faults::Served| {
            // Ranges of chunks (past the head, before the TOC) come with
            // one byte flipped; the TOC, the footer and the head come right.
            let range = req.header("Range")?.strip_prefix("bytes=")?.to_string();
            let (a, b) = range.split_once('-')?;
            let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
            (req.blob_digest()? == key && a > 0 && b < toc_at).then(|| {
                let mut body = blob[a..=b].to_vec();
                let mid = body.len() / 2;
                body[mid] ^= 1;
                let cr = format!("bytes {a}-{b}/{}", blob.len());
                Action::Respond(respond(
                    "206 Partial Content",
                    &[("Content-Range", &cr)],
                    &body,
                ))
            })
        }),
    );
    partial::set_fetcher_for(&s.addr, std::sync::Arc::new(RangeFetcher::new(o.clone())));
    let (_d, store) = temp_store();
    let mut po = PullOptions::new(o.clone());
    po.lazy = true;
    let report = pull(&store, &r(&format!("{}/app:1", s.addr)), &po, &Silent).unwrap();
    assert_eq!(report.layers_lazy, img.m.layers.len());
    let e = read_data_file(&store, &layer_d, "big").unwrap_err();
    assert!(e.contains("do not match"), "{e}");
    assert_eq!(store.partial_status(&layer_d).unwrap().unwrap().1, 0);
    // The other layer's chunks are right and read.
    let b = read_data_file(&store, &img.m.layers[1].digest, "b").unwrap();
    assert_eq!(b, text(300_000, 6));
}

#[test]
fn estargz_written_by_layerfs_without_an_index_pulls_lazily_through_its_toc() {
    let test = "estargz_by_layerfs_lazily_through_its_toc";
    let Some(reg) = Registry::start(test, RegistryKind::default()) else {
        return;
    };
    let (_d, src) = temp_store();
    let big = noise(5 << 20, 3);
    let l1 = layer(&src, Compression::Gzip, &[("big", &big), ("a", b"alpha\n")]);
    let l2 = layer(&src, Compression::Zstd, &[("zst", b"from a zstd layer")]);
    image(&src, &[l1, l2], None, Some("local/e:1"));
    let conv = crate::image::to_estargz(&src, "local/e:1").unwrap();
    let m = src.read_manifest(&conv.manifest.digest).unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let o = opts(cfg.path());
    let mut po = PushOptions::new(o.clone());
    po.indexes = false;
    let target = r(&format!("{}/es/layerfs:1", reg.addr));
    push(&src, &conv.manifest.digest.hex(), &target, &po, &Silent).unwrap();

    partial::set_fetcher_for(&reg.addr, std::sync::Arc::new(RangeFetcher::new(o.clone())));
    let (_d2, store) = temp_store();
    let mut pull_opts = PullOptions::new(o.clone());
    pull_opts.lazy = true;
    let report = pull(&store, &target, &pull_opts, &Silent).unwrap();
    assert_eq!(report.layers_lazy, m.layers.len());
    for l in &m.layers {
        assert!(!store.has_blob(&l.digest));
        assert!(
            tree_of(&store, &l.digest) == tree_of(&src, &l.digest),
            "layer {}",
            l.digest
        );
    }
    assert_eq!(
        read_data_file(&store, &m.layers[0].digest, "big").unwrap(),
        big
    );
}
