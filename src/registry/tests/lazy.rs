//! Lazy pulls and range fetches: a layer whose index the store has is not
//! downloaded; reads fetch the spans they need with Range requests, each
//! verified. Against a real registry behind a counting proxy, and against
//! fake registries that ignore Range or send wrong bytes.

use super::faults::{Served, fake};
use super::harness::{Action, Registry, RegistryKind, Request, Server, respond};
use super::*;
use crate::layer::{Layer, SpanCache};
use crate::registry::RangeFetcher;
use crate::store::partial;
use crate::testutil::text;
use std::collections::HashMap;
use std::sync::Arc;

/// An image of one gzip layer of ~18 MiB of text with a small file in the
/// middle, in a store of its own (which keeps its index: what a published
/// index gives a lazy pull).
fn big_image() -> (tempfile::TempDir, Store, Descriptor, Digest) {
    let (dir, store) = temp_store();
    let a = text(9 << 20, 1);
    let b = text(9 << 20, 3);
    let l = layer(
        &store,
        Compression::Gzip,
        &[("a", &a), ("small", b"small file\n"), ("b", &b)],
    );
    let desc = image(&store, &[l], None, None);
    store.tag("app:1", &desc).unwrap();
    (dir, store, desc, l.digest)
}

/// A store with only `src`'s index of `layer`: the lazy pull's index source.
fn store_with_index(src: &Store, layer: &Digest) -> (tempfile::TempDir, Store) {
    let (dir, store) = temp_store();
    std::fs::copy(src.layer_index_path(layer), store.layer_index_path(layer)).unwrap();
    (dir, store)
}

fn read_file(store: &Store, layer: &Digest, name: &str) -> Result<Vec<u8>, String> {
    let l = Layer::open(store, layer, SpanCache::new(1 << 20)).map_err(|e| e.to_string())?;
    let dir = l.index.find_dir(b"data").ok_or("no data directory")?;
    let (e, _) = dir.lookup(name.as_bytes());
    let e = e.ok_or("no such file")?;
    let mut out = vec![0u8; e.size() as usize];
    let n = l.read_at(&e, 0, &mut out).map_err(|e| e.to_string())?;
    out.truncate(n);
    Ok(out)
}

fn blob_bytes_served(s: &Server) -> u64 {
    s.logged()
        .iter()
        .filter(|l| l.method == "GET" && l.target.contains("/blobs/"))
        .map(|l| l.body_bytes)
        .sum()
}

/// `big_image` pushed to a real registry as `repo`, a counting proxy in
/// front of it, and a store that pulled it lazily through the proxy.
struct ViaProxy {
    _reg: Registry,
    proxy: Server,
    o: ClientOptions,
    _cfg: tempfile::TempDir,
    src: (tempfile::TempDir, Store),
    desc: Descriptor,
    layer_d: Digest,
    store: (tempfile::TempDir, Store),
    report: PullReport,
}

fn lazy_via_proxy(test: &str, repo: &str) -> Option<ViaProxy> {
    let reg = Registry::start(test, RegistryKind::default())?;
    let cfg = tempfile::tempdir().unwrap();
    let o = opts(cfg.path());
    let (d, src, desc, layer_d) = big_image();
    let target = Reference::parse(&format!("{}/{repo}", reg.addr)).unwrap();
    push(
        &src,
        "app:1",
        &target,
        &PushOptions::new(o.clone()),
        &Silent,
    )
    .unwrap();
    let proxy = Server::start(
        Some(reg.addr.clone()),
        Arc::new(|_: &Request| Action::Forward),
    );
    partial::set_fetcher_for(&proxy.addr, Arc::new(RangeFetcher::new(o.clone())));
    let (d2, store) = store_with_index(&src, &layer_d);
    let via_proxy = Reference::parse(&format!("{}/{repo}", proxy.addr)).unwrap();
    let mut po = PullOptions::new(o.clone());
    po.lazy = true;
    let report = pull(&store, &via_proxy, &po, &Silent).unwrap();
    Some(ViaProxy {
        _reg: reg,
        proxy,
        o,
        _cfg: cfg,
        src: (d, src),
        desc,
        layer_d,
        store: (d2, store),
        report,
    })
}

#[test]
fn a_lazy_pull_fetches_only_the_spans_read_then_prefetch_makes_the_pulled_image() {
    let Some(v) = lazy_via_proxy("a_lazy_pull_fetches_only_the_spans_read", "lazy/app:1") else {
        return;
    };
    let (src, store, proxy, layer_d, desc) = (&v.src.1, &v.store.1, &v.proxy, v.layer_d, v.desc);
    let report = &v.report;
    assert_eq!((report.layers_lazy, report.digest), (1, desc.digest));
    assert!(!store.has_blob(&layer_d) && store.has_partial(&layer_d));
    assert_eq!(
        blob_bytes_served(proxy),
        blob_bytes(
            src,
            &store.read_manifest(&desc.digest).unwrap().config.digest
        )
        .len() as u64
    );
    proxy.clear_log();

    assert_eq!(
        read_file(store, &layer_d, "small").unwrap(),
        b"small file\n"
    );
    let size = src.blob_size(&layer_d).unwrap();
    let served = blob_bytes_served(proxy);
    assert!(served > 0 && served < size / 2, "{served} of {size} bytes");
    assert!(
        proxy
            .logged()
            .iter()
            .all(|l| l.range.is_some() || !l.target.contains("/blobs/"))
    );
    // Read again: nothing more fetched.
    assert_eq!(
        read_file(store, &layer_d, "small").unwrap(),
        b"small file\n"
    );
    assert_eq!(blob_bytes_served(proxy), served);

    // Prefetch: the layer becomes the very blob a pull stores.
    let l = Layer::open(store, &layer_d, SpanCache::new(1 << 20)).unwrap();
    assert!(l.prefetch(4 << 20, &|| true).unwrap());
    assert!(store.has_blob(&layer_d) && !store.has_partial(&layer_d));
    assert!(blob_bytes(store, &layer_d) == blob_bytes(src, &layer_d));
    assert!(blob_bytes_served(proxy) < size + (1 << 20));
    assert_fsck_clean(store);
}

/// A fake registry serving `src`'s image as `app:1`, whole bodies only (it
/// ignores Range), with `special` answering first.
fn served_from(src: &Store, desc: &Descriptor) -> Served {
    let m = src.read_manifest(&desc.digest).unwrap();
    let mut blobs = HashMap::new();
    for d in std::iter::once(desc.digest)
        .chain(std::iter::once(m.config.digest))
        .chain(m.layers.iter().map(|l| l.digest))
    {
        blobs.insert(d.to_string(), blob_bytes(src, &d));
    }
    Served {
        manifest: desc.digest,
        blobs,
        layers: m.layers.iter().map(|l| l.digest).collect(),
    }
}

fn lazy_pull_from(addr: &str, store: &Store, o: &ClientOptions) {
    let mut po = PullOptions::new(o.clone());
    po.lazy = true;
    let r = Reference::parse(&format!("{addr}/app:1")).unwrap();
    assert_eq!(pull(store, &r, &po, &Silent).unwrap().layers_lazy, 1);
}

/// `big_image` served by a fake registry (whole bodies: it ignores Range)
/// with `special` answering first, and a store that pulled it lazily.
#[allow(clippy::type_complexity)]
fn lazy_from_fake(
    special: Arc<super::faults::Special>,
) -> (
    [tempfile::TempDir; 3],
    Store,
    Descriptor,
    Digest,
    Server,
    Store,
) {
    let cfg = tempfile::tempdir().unwrap();
    let o = opts(cfg.path());
    let (d, src, desc, layer_d) = big_image();
    let s = fake(served_from(&src, &desc), special);
    partial::set_fetcher_for(&s.addr, Arc::new(RangeFetcher::new(o.clone())));
    let (d2, store) = store_with_index(&src, &layer_d);
    lazy_pull_from(&s.addr, &store, &o);
    ([cfg, d, d2], src, desc, layer_d, s, store)
}

#[test]
fn a_registry_that_ignores_range_still_serves_lazy_reads() {
    let (_dirs, _src, _desc, layer_d, _s, store) =
        lazy_from_fake(Arc::new(|_: &Request, _: &Served| None));
    assert_eq!(
        read_file(&store, &layer_d, "small").unwrap(),
        b"small file\n"
    );
    let b = read_file(&store, &layer_d, "b").unwrap();
    assert!(b == text(9 << 20, 3));
}

#[test]
fn wrong_bytes_for_a_range_fail_the_read_and_store_nothing() {
    let cfg = tempfile::tempdir().unwrap();
    let o = opts(cfg.path());
    let (_d, src, desc, layer_d) = big_image();
    let served = served_from(&src, &desc);
    let blob = served.blobs[&layer_d.to_string()].clone();
    let key = layer_d.to_string();
    let s = fake(
        served,
        Arc::new(move |req: &Request, _: &Served| {
            // Answers the range asked for, one byte of it flipped.
            let range = req.header("Range")?.strip_prefix("bytes=")?.to_string();
            (req.blob_digest()? == key).then(|| {
                let (a, b) = range.split_once('-').unwrap();
                let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
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
    partial::set_fetcher_for(&s.addr, Arc::new(RangeFetcher::new(o.clone())));
    let (_d2, store) = store_with_index(&src, &layer_d);
    lazy_pull_from(&s.addr, &store, &o);
    let e = read_file(&store, &layer_d, "small").unwrap_err();
    assert!(e.contains("do not match"), "{e}");
    assert!(e.contains(&s.addr), "the error names no registry: {e}");
    assert_eq!(store.partial_status(&layer_d).unwrap().unwrap().1, 0);
}

#[test]
fn fsck_df_and_gc_know_partial_layers() {
    let (_dirs, src, desc, layer_d, _s, store) =
        lazy_from_fake(Arc::new(|_: &Request, _: &Served| None));
    read_file(&store, &layer_d, "small").unwrap();
    let size = src.blob_size(&layer_d).unwrap();
    let local = store.local_bytes(&layer_d);
    assert!(local > 0 && local < size / 2, "{local} of {size}");
    // df counts local bytes only.
    let u = crate::image::usage(&store).unwrap();
    let config = store.read_manifest(&desc.digest).unwrap().config.size;
    assert_eq!(u.images[0].total, local + config + desc.size);
    // fsck: clean, then a flipped byte of a fetched span is found.
    assert_fsck_clean(&store);
    let data = store.root().join("layerfs/partial").join(layer_d.hex());
    let p = store.open_partial(&layer_d).unwrap().unwrap();
    let spans = Layer::open(&store, &layer_d, SpanCache::new(1 << 20))
        .unwrap()
        .index
        .span_table()
        .unwrap();
    let first = *spans
        .spans()
        .iter()
        .find(|sp| p.is_local(sp.offset..sp.end()))
        .unwrap();
    drop(p);
    let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"X", first.offset + 7).unwrap();
    let r = crate::image::fsck(&store).unwrap();
    assert!(
        r.damaged.iter().any(|l| l.contains(&layer_d.to_string())),
        "{:?}",
        r.damaged
    );
    // gc keeps a partial layer an image uses, and removes it once none does.
    store.gc(&[]).unwrap();
    assert!(store.has_partial(&layer_d) && store.layer_index_path(&layer_d).is_file());
    for t in store.tags_of(&desc.digest).unwrap() {
        store.untag(&t).unwrap();
    }
    let report = store.gc(&[]).unwrap();
    assert!(report.removed.iter().any(|(d, _)| *d == layer_d));
    assert!(!store.has_partial(&layer_d) && !data.exists());
    assert!(store.list_partials().unwrap().is_empty());
}

#[test]
fn readers_of_one_missing_file_at_once_fetch_it_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const READERS: usize = 6;
    // The registry holds each blob request until every reader has started.
    let started = Arc::new(AtomicUsize::new(READERS));
    let held = Arc::clone(&started);
    // GETs of the layer, counted as they come in: the server's log has an
    // entry only once its answer is written, which may be after the reader
    // took the bytes it wanted and hung up.
    let gets = Arc::new(AtomicUsize::new(0));
    let gets2 = Arc::clone(&gets);
    let layer_gets = || gets.load(Ordering::SeqCst);
    let (dirs, src, _desc, layer_d, s, store) =
        lazy_from_fake(Arc::new(move |req: &Request, img: &Served| {
            if let Some(d) = req.blob_digest()
                && req.method == "GET"
                && img.layers.iter().any(|l| l.to_string() == d)
            {
                gets2.fetch_add(1, Ordering::SeqCst);
            }
            if req.blob_digest().is_some() {
                for _ in 0..500 {
                    if held.load(std::sync::atomic::Ordering::SeqCst) >= READERS {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            None
        }));
    // One reader alone: the requests one read takes.
    let before = layer_gets();
    let (_d, alone) = store_with_index(&src, &layer_d);
    lazy_pull_from(&s.addr, &alone, &opts(dirs[0].path()));
    read_file(&alone, &layer_d, "small").unwrap();
    let one = layer_gets() - before;
    assert!(one > 0);

    // Six readers of one lazy layer at once: the same requests, no more.
    started.store(0, std::sync::atomic::Ordering::SeqCst);
    let before = layer_gets();
    let l = Layer::open(&store, &layer_d, SpanCache::new(1 << 20)).unwrap();
    let dir = l.index.find_dir(b"data").unwrap();
    let e = dir.lookup(b"small").0.unwrap();
    std::thread::scope(|sc| {
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                sc.spawn(|| {
                    started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut out = vec![0u8; e.size() as usize];
                    let n = l.read_at(&e, 0, &mut out).unwrap();
                    out.truncate(n);
                    out
                })
            })
            .collect();
        for r in readers {
            assert_eq!(r.join().unwrap(), b"small file\n");
        }
    });
    assert_eq!(layer_gets() - before, one);
}

#[test]
fn records_a_crash_leaves_beside_a_completed_layer_are_removed_by_fsck_and_gc() {
    let (_dirs, _src, _desc, layer_d, _s, store) =
        lazy_from_fake(Arc::new(|_: &Request, _: &Served| None));
    let dir = store.root().join("layerfs/partial");
    let (json, ranges) = (
        dir.join(format!("{}.json", layer_d.hex())),
        dir.join(format!("{}.ranges", layer_d.hex())),
    );
    read_file(&store, &layer_d, "small").unwrap();
    let saved = (
        std::fs::read(&json).unwrap(),
        std::fs::read(&ranges).unwrap(),
    );
    let l = Layer::open(&store, &layer_d, SpanCache::new(1 << 20)).unwrap();
    assert!(l.prefetch(4 << 20, &|| true).unwrap());
    // A crash between the rename into the blobs and the records' removal.
    let crash = || {
        std::fs::write(&json, &saved.0).unwrap();
        std::fs::write(&ranges, &saved.1).unwrap();
    };
    crash();
    let r = crate::image::fsck(&store).unwrap();
    assert!(r.damaged.is_empty(), "{:?}", r.damaged);
    assert!(
        r.repaired.iter().any(|l| l.contains(&layer_d.to_string())),
        "{:?}",
        r.repaired
    );
    assert!(!json.exists() && !ranges.exists());
    // gc keeps the image's layer and drops the records beside it.
    crash();
    store.gc(&[]).unwrap();
    assert!(store.has_blob(&layer_d));
    assert!(!json.exists() && !ranges.exists());
    assert!(!store.has_partial(&layer_d));
}

#[test]
fn a_changed_lazy_image_is_pushed_without_fetching_its_base_and_save_fetches_it_whole() {
    let test = "a_changed_lazy_image_is_pushed_without_fetching_its_base";
    let Some(v) = lazy_via_proxy(test, "lazy/base:1") else {
        return;
    };
    let (src, store, proxy, layer_d, o) = (&v.src.1, &v.store.1, &v.proxy, v.layer_d, &v.o);

    // A change on top: the base layer as the lazy pull left it, plus a new one.
    let index = Layer::open(store, &layer_d, SpanCache::new(1 << 20))
        .unwrap()
        .index;
    let base_info = crate::layer::LayerInfo::from_index(&index);
    let change = layer(store, Compression::Gzip, &[("new", b"changed\n")]);
    let changed = image(store, &[base_info, change], None, None);
    store.tag("changed:1", &changed).unwrap();
    proxy.clear_log();
    let other = Reference::parse(&format!("{}/other/app:2", proxy.addr)).unwrap();
    let report = push(
        store,
        "changed:1",
        &other,
        &PushOptions::new(o.clone()),
        &Silent,
    )
    .unwrap();
    assert_eq!(
        report.blobs_mounted, 1,
        "the base layer is mounted across repositories"
    );
    let base_gets: Vec<_> = proxy
        .logged()
        .into_iter()
        .filter(|l| l.method == "GET" && l.target.contains(&layer_d.to_string()))
        .collect();
    assert!(base_gets.is_empty(), "{base_gets:?}");
    assert!(!store.has_blob(&layer_d));

    // save fetches the rest first: the archive holds the whole image.
    let mut out = Vec::new();
    crate::archive::save(
        store,
        &["changed:1".to_string()],
        crate::archive::SaveFormat::OciArchive,
        &mut out,
    )
    .unwrap();
    assert!(store.has_blob(&layer_d) && !store.has_partial(&layer_d));
    assert!(blob_bytes(store, &layer_d) == blob_bytes(src, &layer_d));
    assert!(out.len() as u64 > src.blob_size(&layer_d).unwrap());
}

#[test]
fn a_token_that_expires_during_a_lazy_mount_is_renewed() {
    let test = "a_token_that_expires_during_a_lazy_mount_is_renewed";
    let Some(reg) = Registry::start(test, RegistryKind::default()) else {
        return;
    };
    let cfg = tempfile::tempdir().unwrap();
    let o = opts(cfg.path());
    let (_d, src, _desc, layer_d) = big_image();
    let target = Reference::parse(&format!("{}/tok/app:1", reg.addr)).unwrap();
    push(
        &src,
        "app:1",
        &target,
        &PushOptions::new(o.clone()),
        &Silent,
    )
    .unwrap();

    // Anonymous Bearer tokens; `valid` empties when they "expire".
    let valid = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let issued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let realm = Arc::new(std::sync::OnceLock::<String>::new());
    let (v2, i2, r2) = (valid.clone(), issued.clone(), realm.clone());
    let front = Server::start(
        Some(reg.addr.clone()),
        Arc::new(move |req: &Request| {
            if req.path() == "/token" {
                let n = i2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let token = format!("tok{n}");
                v2.lock().unwrap().push(token.clone());
                let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
                return Action::Respond(respond("200 OK", &[], body.as_bytes()));
            }
            let ok = req
                .header("Authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .is_some_and(|t| v2.lock().unwrap().iter().any(|v| v == t));
            if ok {
                return Action::Forward;
            }
            let h = format!(
                r#"Bearer realm="{}",service="lfs-test",scope="repository:tok/app:pull""#,
                r2.get().cloned().unwrap_or_default()
            );
            Action::Respond(respond(
                "401 Unauthorized",
                &[("WWW-Authenticate", &h)],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"token expired"}]}"#,
            ))
        }),
    );
    realm.set(format!("http://{}/token", front.addr)).unwrap();
    partial::set_fetcher_for(&front.addr, Arc::new(RangeFetcher::new(o.clone())));
    let (_d2, store) = store_with_index(&src, &layer_d);
    let via = Reference::parse(&format!("{}/tok/app:1", front.addr)).unwrap();
    let mut po = PullOptions::new(o.clone());
    po.lazy = true;
    pull(&store, &via, &po, &Silent).unwrap();
    assert_eq!(
        read_file(&store, &layer_d, "small").unwrap(),
        b"small file\n"
    );
    let before = issued.load(std::sync::atomic::Ordering::SeqCst);
    valid.lock().unwrap().clear();
    assert!(read_file(&store, &layer_d, "b").unwrap() == text(9 << 20, 3));
    assert!(issued.load(std::sync::atomic::Ordering::SeqCst) > before);
}

/// Sets its flag when dropped, even by a failing test: the fake registry's
/// held connections then end.
struct SetOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn fetch_threads_held_by_a_hung_registry_come_back_within_the_fetch_bound() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    const BOUND: Duration = Duration::from_secs(2);
    let cfg = tempfile::tempdir().unwrap();
    let o = opts(cfg.path());
    let (_d, src, desc, layer_d) = big_image();
    let served = served_from(&src, &desc);
    let blob = Arc::new(served.blobs[&layer_d.to_string()].clone());
    let key = layer_d.to_string();
    // While `hang` is set, the registry accepts requests for the layer and
    // never answers them (until the test ends); otherwise it answers ranges.
    let (hang, over) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let _end = SetOnDrop(Arc::clone(&over));
    let (hang2, over2, blob2) = (Arc::clone(&hang), Arc::clone(&over), Arc::clone(&blob));
    let s = fake(
        served,
        Arc::new(move |req: &Request, _: &Served| {
            if req.blob_digest()? != key {
                return None;
            }
            if hang2.load(Ordering::SeqCst) {
                while !over2.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Some(Action::Respond(Vec::new()));
            }
            let range = req.header("Range")?.strip_prefix("bytes=")?.to_string();
            let (a, b) = range.split_once('-')?;
            let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
            let cr = format!("bytes {a}-{b}/{}", blob2.len());
            Some(Action::Respond(respond(
                "206 Partial Content",
                &[("Content-Range", &cr)],
                &blob2[a..=b],
            )))
        }),
    );
    partial::set_fetcher_for(
        &s.addr,
        Arc::new(RangeFetcher::with_bound(o.clone(), BOUND)),
    );
    let (_d2, store) = store_with_index(&src, &layer_d);
    lazy_pull_from(&s.addr, &store, &o);
    let spans = Layer::open(&store, &layer_d, SpanCache::new(1 << 20))
        .unwrap()
        .index
        .span_table()
        .unwrap();
    let p = store.open_partial(&layer_d).unwrap().unwrap();
    let span = |i: usize| {
        let sp = spans.spans()[i];
        sp.offset..sp.end()
    };

    // The registry hangs: more readers of different spans than there are
    // fetch threads each fail within the bound.
    hang.store(true, Ordering::SeqCst);
    std::thread::scope(|sc| {
        let readers: Vec<_> = (0..12)
            .map(|i| {
                let (p, spans, r) = (&p, &spans, span(2 * i));
                sc.spawn(move || p.ensure(r, spans, BOUND))
            })
            .collect();
        for r in readers {
            let e = r.join().unwrap().unwrap_err();
            assert!(
                matches!(e, crate::store::FetchError::TimedOut { .. }),
                "{e}"
            );
        }
    });
    // It answers again (the requests it held stay unanswered): a read is
    // served within the bound, by a fetch thread that came back.
    hang.store(false, Ordering::SeqCst);
    let r = span(spans.spans().len() - 1);
    p.ensure(r.clone(), &spans, BOUND).unwrap();
    let mut got = vec![0u8; (r.end - r.start) as usize];
    std::os::unix::fs::FileExt::read_exact_at(p.file(), &mut got, r.start).unwrap();
    assert!(got == blob[r.start as usize..r.end as usize]);
    for i in 0..12 {
        assert!(!p.is_local(span(2 * i)));
    }
}
