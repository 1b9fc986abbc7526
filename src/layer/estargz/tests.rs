use super::*;
use crate::layer::{TarMeta, TarWriter};
use crate::testutil::noise;
use std::io::Cursor;

fn meta(mode: u32) -> TarMeta {
    TarMeta {
        mode,
        mtime: 1_700_000_000,
        ..Default::default()
    }
}

/// A tar with every kind of entry and a file of three chunks.
fn sample_tar(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    w.add_dir(b"etc", &meta(0o755)).unwrap();
    for (name, data) in files {
        let mut m = meta(0o644);
        if *name == "etc/caps" {
            m.xattrs = vec![(b"user.note".to_vec(), b"\0bin\xff".to_vec())];
        }
        w.add_file(name.as_bytes(), &m, data.len() as u64, &data[..])
            .unwrap();
    }
    w.add_symlink(b"etc/link", &meta(0o777), b"small").unwrap();
    w.add_hardlink(b"etc/hard", &meta(0o644), b"etc/small")
        .unwrap();
    w.finish().unwrap()
}

fn convert(tar: &[u8]) -> (Vec<u8>, Written) {
    let mut blob = Vec::new();
    let written = write(Cursor::new(tar), &mut blob).unwrap();
    (blob, written)
}

fn read_toc(blob: &[u8], w: &Written) -> Toc {
    let at = parse_footer(&blob[blob.len() - FOOTER_SIZE as usize..]).unwrap();
    assert_eq!(at, w.toc_offset);
    let member = &blob[at as usize..blob.len() - FOOTER_SIZE as usize];
    let (toc, digest) = parse_toc(member, Some(&w.toc_digest)).unwrap();
    assert_eq!(digest, w.toc_digest);
    toc
}

/// Each file's bytes put together from its chunks alone, each verified.
fn files_from_chunks(blob: &[u8], chunks: &[Chunk]) -> HashMap<String, Vec<u8>> {
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for c in chunks {
        let data = verify_chunk(&blob[c.start as usize..c.end as usize], c).unwrap();
        let f = files.entry(c.path.clone()).or_default();
        assert_eq!(f.len() as u64, c.file_offset, "{}: chunk order", c.path);
        f.extend_from_slice(&data);
    }
    files
}

#[test]
fn a_written_layer_is_one_gzip_tar_of_the_same_entries_plus_the_toc() {
    let big = noise(2 * CHUNK_SIZE as usize + 1000, 7);
    let files = vec![
        ("etc/small".to_string(), b"hello\n".to_vec()),
        ("etc/empty".to_string(), Vec::new()),
        ("etc/caps".to_string(), b"x".to_vec()),
        ("usr/big".to_string(), big.clone()),
    ];
    let named: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    let tar = sample_tar(&named);
    let (blob, w) = convert(&tar);
    assert_eq!(w.size, blob.len() as u64);

    // Any gzip reader: the source's bytes up to its end blocks, then the TOC entry.
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(&blob[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(Digest::of(&plain), w.diff_id);
    assert_eq!(plain.len() as u64, w.uncompressed_size);
    let body = tar.len() - 1024;
    assert_eq!(&plain[..body], &tar[..body], "the source's bytes are kept");
    let mut ar = tar::Archive::new(&plain[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "etc/",
            "etc/small",
            "etc/empty",
            "etc/caps",
            "usr/big",
            "etc/link",
            "etc/hard",
            TOC_NAME
        ]
    );

    // The TOC: every entry, the big file in three chunks tiling it.
    let toc = read_toc(&blob, &w);
    let kinds: Vec<(&str, &str)> = toc
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("etc/", "dir"),
            ("etc/small", "reg"),
            ("etc/empty", "reg"),
            ("etc/caps", "reg"),
            ("usr/big", "reg"),
            ("usr/big", "chunk"),
            ("usr/big", "chunk"),
            ("etc/link", "symlink"),
            ("etc/hard", "hardlink"),
        ]
    );
    let big_entry = &toc.entries[4];
    assert_eq!(big_entry.size, big.len() as u64);
    assert_eq!(big_entry.digest, Digest::of(&big).to_string());
    assert_eq!(big_entry.chunk_size, CHUNK_SIZE);
    assert_eq!(
        toc.entries[6].chunk_size, 0,
        "the last chunk runs to the end"
    );
    assert_eq!(toc.entries[7].link_name, "small");
    assert_eq!(toc.entries[8].link_name, "etc/small");
    assert_eq!(toc.entries[0].mode, 0o755);
    assert_eq!(toc.entries[0].modtime, "2023-11-14T22:13:20Z");
    assert_eq!(toc.entries[3].xattrs["user.note"], "AGJpbv8=");

    let chunks = toc.chunks(w.toc_offset).unwrap();
    assert_eq!(chunks.len(), 5);
    let got = files_from_chunks(&blob, &chunks);
    for (name, data) in &files {
        if !data.is_empty() {
            assert_eq!(&got[name], data, "{name}");
        }
    }
}

#[test]
fn a_wrong_toc_digest_or_damaged_chunk_is_refused() {
    let tar = sample_tar(&[("etc/small", b"hello\n".to_vec())]);
    let (mut blob, w) = convert(&tar);
    let at = w.toc_offset as usize;
    let end = blob.len() - FOOTER_SIZE as usize;
    let other = Digest::of(b"other");
    assert!(matches!(
        parse_toc(&blob[at..end], Some(&other)),
        Err(EstargzError::TocDigest { .. })
    ));
    let toc = read_toc(&blob, &w);
    let chunks = toc.chunks(w.toc_offset).unwrap();
    let c = &chunks[0];
    // Same length, other content: inflates, but to other bytes.
    let mut other_member = Vec::new();
    let mut gz = flate2::GzBuilder::new().write(&mut other_member, flate2::Compression::new(6));
    gz.write_all(b"HELLO\n").unwrap();
    gz.finish().unwrap();
    let err = verify_chunk(&other_member, c).unwrap_err();
    assert!(matches!(err, EstargzError::ChunkDigest { .. }), "{err}");
    // Flipped bits in the member itself.
    blob[c.start as usize + 12] ^= 0x55;
    assert!(verify_chunk(&blob[c.start as usize..c.end as usize], c).is_err());
}

#[test]
fn footers_are_checked() {
    let f = footer_bytes(0x1234);
    assert_eq!(parse_footer(&f).unwrap(), 0x1234);
    // The footer is itself an empty gzip member.
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&f[..])
        .read_to_end(&mut out)
        .unwrap();
    assert!(out.is_empty());
    for (at, v) in [(0usize, 0u8), (12, b'X'), (33, b'x'), (20, b'g')] {
        let mut bad = f.clone();
        bad[at] = v;
        assert!(parse_footer(&bad).is_err(), "byte {at}");
    }
    assert!(parse_footer(&f[1..]).is_err());
}

#[test]
fn files_before_the_prefetch_landmark_come_first() {
    let tar = sample_tar(&[
        ("etc/first", b"1".to_vec()),
        (PREFETCH_LANDMARK, vec![0xf]),
        ("etc/later", b"2".to_vec()),
    ]);
    let (blob, w) = convert(&tar);
    let chunks = read_toc(&blob, &w).chunks(w.toc_offset).unwrap();
    let prefetch: Vec<(&str, bool)> = chunks
        .iter()
        .map(|c| (c.path.as_str(), c.prefetch))
        .collect();
    assert_eq!(
        prefetch,
        [
            ("etc/first", true),
            (PREFETCH_LANDMARK, false),
            ("etc/later", false)
        ]
    );
}

#[test]
fn a_toc_whose_chunks_do_not_tile_the_file_is_refused() {
    let entry = |kind: &str, off: u64, chunk_offset: u64| TocEntry {
        name: "f".into(),
        kind: kind.into(),
        size: if kind == "reg" { 10 } else { 0 },
        offset: off,
        chunk_offset,
        chunk_size: if kind == "reg" { 4 } else { 0 },
        chunk_digest: Digest::of(b"").to_string(),
        ..Default::default()
    };
    let cases = [
        (vec![entry("reg", 10, 0)], "cover"),
        (vec![entry("reg", 10, 0), entry("chunk", 20, 5)], "tile"),
        (vec![entry("reg", 10, 0), entry("chunk", 200, 4)], "outside"),
        (vec![entry("chunk", 20, 0)], "no regular file"),
    ];
    for (entries, want) in cases {
        let toc = Toc {
            version: 1,
            entries,
        };
        let err = toc.chunks(100).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
}
