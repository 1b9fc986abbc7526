//! Lazy layers: a layer whose blob the store holds in part is read through
//! a fetcher, each fetched span verified before it is stored or served.

use super::*;
use crate::oci::Digest;
use crate::store::{BlobFetcher, FetchError, Store, partial};
use crate::testutil::{TarBuilder, gzip, noise, temp_store, text};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Serves blobs from memory, counting bytes; can lie or go away.
#[derive(Default)]
struct FakeRegistry {
    blobs: Mutex<Vec<(Digest, Vec<u8>)>>,
    served: AtomicU64,
    lie: AtomicBool,
    gone: AtomicBool,
    /// Every request, in order: blob, offset, length.
    asked: Mutex<Vec<(Digest, u64, u64)>>,
}

impl BlobFetcher for FakeRegistry {
    fn fetch_range(
        &self,
        origin: &str,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, FetchError> {
        let failed = |why: &str| FetchError::Failed {
            origin: origin.to_string(),
            why: why.to_string(),
        };
        if self.gone.load(Ordering::SeqCst) {
            return Err(failed("connection refused"));
        }
        let blobs = self.blobs.lock().unwrap();
        let (_, blob) = blobs
            .iter()
            .find(|(d, _)| d == digest)
            .ok_or_else(|| failed("404"))?;
        let mut out = blob[offset as usize..(offset + len) as usize].to_vec();
        if self.lie.load(Ordering::SeqCst) {
            out[0] ^= 0xff;
        }
        self.served.fetch_add(len, Ordering::SeqCst);
        self.asked.lock().unwrap().push((*digest, offset, len));
        Ok(out)
    }
}

/// A gzip layer of 18 MiB of text (three 4 MiB spans before the small file), ingested, then its blob
/// taken away so that only the index and a partial blob remain.
fn lazy_layer(origin: &str) -> (tempfile::TempDir, Store, Digest, Vec<u8>, Arc<FakeRegistry>) {
    let (dir, store) = temp_store();
    let mut t = TarBuilder::new();
    t.file("./a/first", 0o644, &text(9 << 20, 1))
        .file("./etc/small", 0o644, &text(100, 2))
        .file("./b/last", 0o644, &text(9 << 20, 3));
    let blob = gzip(&t.finish());
    let info = ingest(&store, &blob[..], None).unwrap();
    let fake = make_lazy(&store, info.digest, &blob, origin);
    (dir, store, info.digest, blob, fake)
}

fn read(layer: &Layer, path: &str) -> Result<Vec<u8>, ReadError> {
    let (dir, name) = path.rsplit_once('/').unwrap();
    let d = layer.index.find_dir(dir.as_bytes()).unwrap();
    let e = d.lookup(name.as_bytes()).0.unwrap();
    let mut out = vec![0u8; e.size() as usize];
    let n = layer.read_at(&e, 0, &mut out)?;
    out.truncate(n);
    Ok(out)
}

#[test]
fn a_lazy_layer_fetches_only_what_is_read_and_never_twice() {
    let (_d, store, digest, blob, fake) = lazy_layer("lazy-test-1/repo");
    let layer = Layer::open(&store, &digest, SpanCache::new(1 << 20)).unwrap();
    assert!(layer.partial().is_some());
    assert_eq!(read(&layer, "etc/small").unwrap(), text(100, 2));
    let first = fake.served.load(Ordering::SeqCst);
    assert!(
        first < blob.len() as u64 / 2,
        "{first} of {} bytes",
        blob.len()
    );
    // Again, from a fresh process's view (new cache, reopened layer): nothing fetched.
    let layer = Layer::open(&store, &digest, SpanCache::new(1 << 20)).unwrap();
    assert_eq!(read(&layer, "etc/small").unwrap(), text(100, 2));
    assert_eq!(fake.served.load(Ordering::SeqCst), first);
    // Prefetch makes it an ordinary blob, the very bytes of the original.
    assert!(layer.prefetch(1 << 20, &|| true).unwrap());
    assert!(store.has_blob(&digest) && !store.has_partial(&digest));
    assert!(std::fs::read(store.blob_path(&digest)).unwrap() == blob);
    assert!(read(&layer, "b/last").unwrap() == text(9 << 20, 3));
    let layer = Layer::open(&store, &digest, SpanCache::new(1 << 20)).unwrap();
    assert!(layer.partial().is_none());
}

#[test]
fn wrong_bytes_fail_the_read_and_store_nothing_then_good_bytes_read() {
    let (_d, store, digest, _blob, fake) = lazy_layer("lazy-test-2/repo");
    let layer = Layer::open(&store, &digest, SpanCache::new(1 << 20)).unwrap();
    fake.lie.store(true, Ordering::SeqCst);
    let Err(e) = read(&layer, "b/last") else {
        panic!("wrong bytes were served");
    };
    assert!(e.to_string().contains("do not match"), "{e}");
    assert_eq!(store.partial_status(&digest).unwrap().unwrap().1, 0);
    fake.lie.store(false, Ordering::SeqCst);
    assert!(read(&layer, "b/last").unwrap() == text(9 << 20, 3));
}

#[test]
fn a_registry_gone_fails_reads_of_missing_data_only_until_it_is_back() {
    let (_d, store, digest, _blob, fake) = lazy_layer("lazy-test-3/repo");
    let layer = Layer::open(&store, &digest, SpanCache::new(1 << 20)).unwrap();
    assert_eq!(read(&layer, "etc/small").unwrap(), text(100, 2));
    fake.gone.store(true, Ordering::SeqCst);
    let Err(e) = read(&layer, "a/first") else {
        panic!("a read of data not local succeeded with the registry gone");
    };
    assert!(e.to_string().contains("connection refused"), "{e}");
    // Local data is still served (a new cache: not from memory).
    let layer = Layer::open(&store, &digest, SpanCache::new(1 << 20)).unwrap();
    assert_eq!(read(&layer, "etc/small").unwrap(), text(100, 2));
    fake.gone.store(false, Ordering::SeqCst);
    assert!(read(&layer, "a/first").unwrap() == text(9 << 20, 1));
}

/// The index a lazy mount makes of eStargz `blob` from its TOC.
fn index_from_toc(blob: &[u8], digest: Digest, diff_id: Digest) -> Vec<u8> {
    use super::estargz::{FOOTER_SIZE, TocParts, parse_footer, parse_toc};
    let footer_at = blob.len() - FOOTER_SIZE as usize;
    let at = parse_footer(&blob[footer_at..]).unwrap();
    let toc_member = &blob[at as usize..footer_at];
    let (toc, _) = parse_toc(toc_member, None).unwrap();
    let first = toc.chunks(at).unwrap()[0].start as usize;
    let parts = TocParts {
        toc: &toc,
        toc_offset: at,
        head: &blob[..first],
        toc_member,
        footer: &blob[footer_at..],
    };
    let meta = index::IndexMeta {
        digest,
        diff_id,
        compression: Compression::Gzip,
        blob_size: blob.len() as u64,
        uncompressed_size: 0,
    };
    estargz::index_from_toc(&parts, &meta).unwrap()
}

#[test]
fn the_prefetch_fetches_every_estargz_layers_prioritized_files_before_any_layers_rest() {
    use super::estargz::PREFETCH_LANDMARK;
    use super::prefetch::{prefetch_layers, prioritized_end};
    let (_d, store) = temp_store();
    let origin = "lazy-test-landmark/repo";
    let fake = Arc::new(FakeRegistry::default());
    partial::set_fetcher_for(origin, fake.clone());
    let mut layers = Vec::new();
    let mut blobs = Vec::new();
    for seed in [1, 2] {
        // Prioritized files, the landmark, then the rest (eStargz order).
        let mut t = TarBuilder::new();
        t.file("./usr/bin/first", 0o755, &noise(3 << 20, seed))
            .file(&format!("./{PREFETCH_LANDMARK}"), 0o644, &[0xf])
            .file("./usr/share/rest", 0o644, &noise(12 << 20, seed + 10));
        let mut blob = Vec::new();
        estargz::write(std::io::Cursor::new(t.finish()), &mut blob).unwrap();
        let info = ingest(&store, &blob[..], None).unwrap();
        std::fs::remove_file(store.blob_path(&info.digest)).unwrap();
        if seed == 2 {
            // This one's index made from its TOC, as for a layer another
            // tool wrote and published no index for.
            let index = index_from_toc(&blob, info.digest, info.diff_id);
            std::fs::write(store.layer_index_path(&info.digest), index).unwrap();
        }
        store
            .add_partial(&info.digest, blob.len() as u64, origin)
            .unwrap();
        fake.blobs.lock().unwrap().push((info.digest, blob.clone()));
        let layer = Layer::open(&store, &info.digest, SpanCache::new(1 << 20)).unwrap();
        let end = prioritized_end(&layer.index).unwrap();
        assert!(end >= 3 << 20 && end < blob.len() as u64 / 2, "{end}");
        blobs.push((info.digest, blob, end));
        layers.push(layer);
    }
    assert!(prefetch_layers(&layers, 1 << 20, &|| true));
    let asked = fake.asked.lock().unwrap().clone();
    let first =
        |(d, off, _): &(Digest, u64, u64)| blobs.iter().any(|(b, _, end)| b == d && off < end);
    let firsts = asked.iter().filter(|a| first(a)).count();
    assert!(firsts >= 2, "{asked:?}");
    assert!(
        asked[..firsts].iter().all(first),
        "a layer's rest was fetched before another's prioritized files: {asked:?}"
    );
    for (digest, blob, _) in &blobs {
        assert!(std::fs::read(store.blob_path(digest)).unwrap() == *blob);
        assert!(!store.has_partial(digest));
    }
}

/// Takes blob `digest` (of bytes `blob`) out of the store, leaving its
/// index and a partial blob fetched from a fake registry at `origin`.
fn make_lazy(store: &Store, digest: Digest, blob: &[u8], origin: &str) -> Arc<FakeRegistry> {
    std::fs::remove_file(store.blob_path(&digest)).unwrap();
    store
        .add_partial(&digest, blob.len() as u64, origin)
        .unwrap();
    let fake = Arc::new(FakeRegistry::default());
    fake.blobs.lock().unwrap().push((digest, blob.to_vec()));
    partial::set_fetcher_for(origin, fake.clone());
    fake
}

/// A tar of 24 MiB of text with a small file in the middle.
fn small_in_the_middle() -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.file("./a/first", 0o644, &text(12 << 20, 4))
        .file("./etc/small", 0o644, &text(100, 5))
        .file("./b/last", 0o644, &text(12 << 20, 6));
    t.finish()
}

#[test]
fn a_zstd_layer_layerfs_writes_is_read_lazily_one_frame_at_a_time() {
    let (_d, store) = temp_store();
    let tar = small_in_the_middle();
    let info = LayerWriter::from_tar(&store, Compression::Zstd, &tar[..]).unwrap();
    let blob = std::fs::read(store.blob_path(&info.digest)).unwrap();
    // Still one zstd stream for every other tool.
    assert!(zstd::decode_all(&blob[..]).unwrap() == tar);
    let fake = make_lazy(&store, info.digest, &blob, "lazy-test-zstd/repo");
    let layer = Layer::open(&store, &info.digest, SpanCache::new(1 << 20)).unwrap();
    // The small file past the middle: its frame, not the layer from its start.
    assert_eq!(read(&layer, "etc/small").unwrap(), text(100, 5));
    let served = fake.served.load(Ordering::SeqCst);
    assert!(
        served < blob.len() as u64 / 4,
        "{served} of {} bytes",
        blob.len()
    );
    assert!(layer.prefetch(4 << 20, &|| true).unwrap());
    assert!(std::fs::read(store.blob_path(&info.digest)).unwrap() == blob);
}

#[test]
fn a_single_frame_zstd_layer_reads_lazily_past_its_first_span() {
    // As other tools write zstd layers: one frame. A span inside it has no
    // compressed offset of its own, so its read fetches the frame whole.
    let (_d, store) = temp_store();
    let blob = crate::testutil::zstd(&small_in_the_middle());
    let info = ingest(&store, &blob[..], None).unwrap();
    make_lazy(&store, info.digest, &blob, "lazy-test-zstd-one-frame/repo");
    let layer = Layer::open(&store, &info.digest, SpanCache::new(1 << 20)).unwrap();
    assert_eq!(read(&layer, "etc/small").unwrap(), text(100, 5));
    assert!(read(&layer, "b/last").unwrap() == text(12 << 20, 6));
}

#[test]
fn a_small_files_read_fetches_from_its_checkpoint_to_its_end_and_little_more() {
    // 600 files of 8 KiB noise: compressed as large as they are, so the
    // compressed bytes between a checkpoint and a file's end are known from
    // the uncompressed ones.
    let (_d, store) = temp_store();
    let mut t = TarBuilder::new();
    for k in 0..600 {
        t.file(&format!("./f/{k:04}"), 0o644, &noise(8 << 10, k));
    }
    let blob = gzip(&t.finish());
    let info = ingest(&store, &blob[..], None).unwrap();
    let fake = make_lazy(&store, info.digest, &blob, "lazy-test-small-bound/repo");
    for k in [123u64, 301, 555] {
        let layer = Layer::open(&store, &info.digest, SpanCache::new(1 << 20)).unwrap();
        let name = format!("{k:04}");
        let e = layer
            .index
            .find_dir(b"f")
            .unwrap()
            .lookup(name.as_bytes())
            .0
            .unwrap();
        let end = e.data_offset() + e.size();
        let i = layer.index.checkpoint_for(e.data_offset()).unwrap();
        let cp = layer.index.checkpoint(i);
        let next_in = if i + 1 < layer.index.checkpoints() {
            layer.index.checkpoint(i + 1).in_offset
        } else {
            blob.len() as u64
        };
        // Compressed bytes from the checkpoint to the file's end.
        let needed = (end - cp.out_offset) * (next_in - cp.in_offset) / u64::from(cp.out_len) + 1;
        let before = fake.served.load(Ordering::SeqCst);
        assert_eq!(
            read(&layer, &format!("f/{name}")).unwrap(),
            noise(8 << 10, k)
        );
        let fetched = fake.served.load(Ordering::SeqCst) - before;
        assert!(
            fetched <= needed + (96 << 10),
            "file {k}: fetched {fetched} bytes for {needed} from its checkpoint to its end"
        );
    }
}
