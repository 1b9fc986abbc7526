//! Cold reads of gzip layers: what a read costs in inflating (the cache's
//! counters), checkpoint density, and decoding ahead of sequential reads.

use super::*;
use crate::testutil::{TarBuilder, gzip, noise, temp_store, text};
use std::sync::Arc;

fn entry<'a>(layer: &'a Layer, name: &str) -> Entry<'a> {
    layer.index.root().lookup(name.as_bytes()).0.expect(name)
}

/// A gzip layer of `files` stored, opened with a cache of its own.
fn layer_of(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Layer, Arc<SpanCache>, u64) {
    let mut t = TarBuilder::new();
    for (name, data) in files {
        t.file(name, 0o644, data);
    }
    let blob = gzip(&t.finish());
    let (dir, store) = temp_store();
    let info = ingest(&store, &blob[..], None).unwrap();
    let cache = SpanCache::new(64 << 20);
    let layer = Layer::open(&store, &info.digest, Arc::clone(&cache)).unwrap();
    (dir, layer, cache, blob.len() as u64)
}

#[test]
fn a_small_read_inflates_only_up_to_what_it_reads() {
    let big = text(8 << 20, 1);
    let (_d, layer, cache, _) = layer_of(&[("big", &big)]);
    let e = entry(&layer, "big");
    let mut buf = vec![0u8; 4096];
    assert_eq!(layer.read_at(&e, 0, &mut buf).unwrap(), 4096);
    assert_eq!(buf, big[..4096]);
    // The span's CRC check inflates the rest on another thread, counted
    // apart (read in this order, a check under way is never counted here).
    let inflated = cache.decoded_bytes();
    let inflated = inflated.saturating_sub(cache.checked_bytes());
    assert!(
        inflated <= 256 << 10,
        "inflated {inflated} bytes for a 4 KiB read"
    );
    assert_eq!(cache.served_bytes(), 4096);
}

#[test]
fn a_file_read_in_order_is_inflated_once() {
    let big = text(12 << 20, 2);
    let (_d, layer, cache, _) = layer_of(&[("big", &big)]);
    let e = entry(&layer, "big");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 128 << 10];
    while got.len() < big.len() {
        let n = layer.read_at(&e, got.len() as u64, &mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == big, "the file reads back as written");
    assert_eq!(cache.served_bytes(), big.len() as u64);
    let inflated = cache.decoded_bytes();
    let inflated = inflated.saturating_sub(cache.checked_bytes());
    let stream = layer.index.meta().uncompressed_size;
    assert!(
        inflated <= stream,
        "inflated {inflated} bytes of a {stream}-byte layer to read it once"
    );
}

#[test]
fn gzip_checkpoints_are_dense_and_the_index_stays_small() {
    let files: Vec<(String, Vec<u8>)> = (0..64)
        .map(|k| (format!("f{k}"), text(256 << 10, k)))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let (_d, layer, cache, blob_len) = layer_of(&refs);
    // 16 MiB: 4 spans at the old fixed 4 MiB.
    let cps = layer.index.checkpoints();
    assert!(cps >= 8, "{cps} checkpoints for 16 MiB");
    let index_len = layer.index.file_size();
    assert!(
        index_len * 20 < blob_len,
        "index {index_len} bytes for a {blob_len}-byte layer"
    );
    // A small file in the middle costs at most the spans it touches.
    let e = entry(&layer, "f40");
    assert_eq!(
        {
            let mut b = vec![0u8; e.size() as usize];
            layer.read_at(&e, 0, &mut b).unwrap();
            b
        },
        files[40].1
    );
    let inflated = cache.decoded_bytes();
    assert!(inflated < 3 << 20, "inflated {inflated} for a 256 KiB file");
}

#[test]
fn a_sequential_read_has_the_next_spans_decoded_ahead() {
    let big = noise(24 << 20, 3);
    let (_d, layer, cache, _) = layer_of(&[("big", &big)]);
    assert!(layer.index.checkpoints() > 4);
    let e = entry(&layer, "big");
    // 2 MiB read in order: a stream, not a few files side by side.
    let mut buf = vec![0u8; 64 << 10];
    let mut at = 0;
    while at < (2 << 20) + (64 << 10) {
        layer.read_at(&e, at as u64, &mut buf).unwrap();
        assert_eq!(buf, big[at..at + buf.len()]);
        at += buf.len();
    }
    // Nothing more is read here: what is decoded past what the reads took
    // (and the 128 KiB decoded with the last) is decoded ahead, by other
    // threads. The deadline only turns a hang into a failure.
    let past = (at as u64) + (128 << 10) + (1 << 20);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while cache.decoded_bytes() < past {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing decoded ahead ({} bytes inflated)",
            cache.decoded_bytes()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut all = vec![0u8; big.len()];
    layer.read_at(&e, 0, &mut all).unwrap();
    assert!(all == big, "the file reads back as written");
}

#[test]
fn damage_past_what_a_read_inflated_is_caught_by_the_span_check_and_fails_later_reads() {
    let big = text(8 << 20, 3);
    let (dir, layer, cache, _) = layer_of(&[("big", &big)]);
    let e = entry(&layer, "big");
    // Flip a byte late in the first span's compressed bytes: a small read
    // at the start does not inflate that far.
    let (cp0, cp1) = (layer.index.checkpoint(0), layer.index.checkpoint(1));
    let at = cp0.in_offset + (cp1.in_offset - cp0.in_offset) * 9 / 10;
    let store = crate::store::Store::open(dir.path()).unwrap();
    let path = store.blob_path(layer.digest());
    let mut blob = std::fs::read(&path).unwrap();
    blob[at as usize] ^= 0x55;
    std::fs::write(&path, &blob).unwrap();
    let mut buf = vec![0u8; 4096];
    let first = layer.read_at(&e, 0, &mut buf);
    // The rest of the span is inflated on another core to check its CRC;
    // from then on reads of the span fail (EIO), as a whole decode would.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let failed = loop {
        match layer.read_at(&e, 0, &mut buf) {
            Err(e) => break e.to_string(),
            Ok(_) if std::time::Instant::now() > deadline => {
                panic!("the damaged span still reads after 30 s (first read: {first:?})")
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    };
    assert!(failed.contains("layer"), "{failed}");
    let _ = cache;
}

/// 8 KiB of a file: 512 bytes of noise sixteen times, so that deflate's
/// copies reach back 512 bytes, as most do, not across the whole window.
fn local_repeats(k: u64) -> Vec<u8> {
    crate::testutil::noise(512, k).repeat(16)
}

#[test]
fn a_cold_small_read_inflates_from_a_nearer_checkpoint_within_the_same_index_budget() {
    // A checkpoint's stored window keeps only the bytes its span copies
    // from, so within the same window budget checkpoints are denser.
    let (_d, store) = crate::testutil::temp_store();
    let mut t = crate::testutil::TarBuilder::new();
    for k in 0..2000 {
        t.file(&format!("./f/{k:04}"), 0o644, &local_repeats(k));
    }
    let blob = crate::testutil::gzip(&t.finish());
    let info = ingest(&store, &blob[..], None).unwrap();
    let mut inflated = 0;
    let files: Vec<u64> = (100..2000).step_by(150).collect();
    for &k in &files {
        let cache = SpanCache::new(8 << 20);
        let layer = Layer::open(&store, &info.digest, cache.clone()).unwrap();
        let e = layer.index.find_dir(b"f").unwrap();
        let e = e.lookup(format!("{k:04}").as_bytes()).0.unwrap();
        let mut buf = vec![0u8; 8 << 10];
        assert_eq!(layer.read_at(&e, 0, &mut buf).unwrap(), buf.len());
        assert!(buf == local_repeats(k), "{k}");
        // What the read inflated itself (CRC checks of the rest of the
        // span run on another thread, and are counted as checked first).
        inflated += cache.decoded_bytes() - cache.checked_bytes().min(cache.decoded_bytes());
    }
    let per_read = inflated / files.len() as u64;
    assert!(
        per_read <= 900 << 10,
        "a cold read of an 8 KiB file inflated {per_read} bytes on average"
    );
    // The stored windows stay within their budget: 2.5 % of the layer.
    let index = LayerIndex::open(&store.layer_index_path(&info.digest), &info.digest).unwrap();
    let windows: u64 = (0..index.checkpoints())
        .map(|i| u64::from(index.checkpoint(i).window_len))
        .sum();
    assert!(
        windows <= blob.len() as u64 / 40 + (32 << 10),
        "windows of {windows} bytes for a blob of {}",
        blob.len()
    );
    // Files all through the layer read right from a cold cache (from
    // their checkpoints, with trimmed windows).
    let layer = Layer::open(&store, &info.digest, SpanCache::new(1 << 20)).unwrap();
    let dir = layer.index.find_dir(b"f").unwrap();
    for k in (0..2000).step_by(7) {
        let cold = Layer::open(&store, &info.digest, SpanCache::new(1 << 20)).unwrap();
        let e = dir.lookup(format!("{k:04}").as_bytes()).0.unwrap();
        let mut buf = vec![0u8; 8 << 10];
        cold.read_at(&e, 0, &mut buf).unwrap();
        assert!(buf == local_repeats(k), "{k}");
    }
}
