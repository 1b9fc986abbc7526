//! Inputs that once broke a parser, kept as they were found (each failed
//! before its fix).

use crate::fuzzing::{IndexFixture, layer_blob};
use crate::testutil::alloc;
use crate::testutil::mutate::watchdog;

/// Where checkpoint `i`'s `out_len` sits in an index file: after the header
/// and the entry, dir, group, member, external and sparse sections (the
/// layout `layer::index` writes, lengths from its header).
fn checkpoint_out_len_at(index: &[u8], i: usize) -> usize {
    let count = |k: usize| {
        let at = 96 + 4 * k;
        u32::from_le_bytes(index[at..at + 4].try_into().unwrap()) as usize
    };
    let (entries, dirs, groups, members, sparse, externals) =
        (count(0), count(1), count(2), count(3), count(4), count(6));
    let start =
        192 + entries * 48 + dirs * 24 + groups * 8 + members * 4 + externals * 4 + sparse * 16;
    start + i * 40 + 24
}

/// How many checkpoints an index file has (from its header).
fn checkpoints(index: &[u8]) -> usize {
    u32::from_le_bytes(index[116..120].try_into().unwrap()) as usize
}

/// The last checkpoint: the one the read of the big file's tail starts from
/// (checkpoints are dense, so reads from the start never pass through it).
fn last_checkpoint_at(index: &[u8]) -> usize {
    let last = checkpoints(index) - 1;
    assert!(last >= 1, "the fixture has one checkpoint");
    checkpoint_out_len_at(index, last) - 24
}

/// Found by `mutated_layer_index_files_resealed`: a span length from the
/// index was allocated before a byte was decoded, so an index claiming a
/// 4 GiB span reserved 4 GiB. The buffer now grows with what the blob yields.
#[test]
fn a_span_length_from_the_index_is_not_allocated_up_front() {
    let f = IndexFixture::new();
    let mut index = f.seed();
    let at = checkpoint_out_len_at(&index, 0);
    let real = u32::from_le_bytes(index[at..at + 4].try_into().unwrap());
    let seed = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(seed.path(), &index).unwrap();
    let opened = crate::layer::LayerIndex::open(seed.path(), &seed_digest(&index)).unwrap();
    assert_eq!(
        real,
        opened.checkpoint(0).out_len,
        "not the first span's length"
    );
    index[at..at + 4].copy_from_slice(&0xffff_ff00u32.to_le_bytes());
    alloc::reset_peak();
    // Reads decode only as far as they need, so they may succeed (the
    // span's real bytes end where the next checkpoint starts) or fail on the
    // span; either way nothing is reserved from the claimed length.
    if let Err(e) = f.read(&index, true) {
        assert!(e.contains("span"), "{e}");
    }
    let peak = alloc::peak();
    assert!(peak < 64 << 20, "one allocation of {peak} bytes");
}

/// The id of entry `name` in the seed index, and where its record starts.
fn entry_at(f: &IndexFixture, name: &str) -> usize {
    let seed = f.seed();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &seed).unwrap();
    let index = crate::layer::LayerIndex::open(file.path(), &seed_digest(&seed)).unwrap();
    let id = (0..index.len())
        .find(|&i| index.entry(i).name() == name.as_bytes())
        .unwrap_or_else(|| panic!("no entry {name}"));
    192 + id as usize * 48
}

fn seed_digest(index: &[u8]) -> crate::oci::Digest {
    crate::oci::Digest::from_bytes(index[32..64].try_into().unwrap())
}

/// Where the extras of the entry whose record is at `at` start (the
/// extras section follows the checkpoints and strings).
fn extras_at(index: &[u8], at: usize) -> usize {
    let count = |k: usize| u32::from_le_bytes(index[96 + 4 * k..100 + 4 * k].try_into().unwrap());
    let strings = u64::from_le_bytes(index[128..136].try_into().unwrap()) as usize;
    let checkpoints = checkpoint_out_len_at(index, count(5) as usize) - 24;
    let own = u32::from_le_bytes(index[at + 44..at + 48].try_into().unwrap()) as usize;
    checkpoints + strings + own
}

fn set_u32(index: &mut [u8], at: usize, v: u32) {
    index[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Found by `mutated_layer_index_files_resealed`: an entry's extent count
/// was believed, so a read collected 4 billion extents (64 GiB, a hang).
/// Extents now come from the sparse section only.
#[test]
fn a_sparse_extent_count_past_the_section_is_not_believed() {
    let f = IndexFixture::new();
    let mut index = f.seed();
    // Its extras hold only its extents: (first, count).
    let at = extras_at(&index, entry_at(&f, "sparse"));
    assert_eq!(index[at + 4..at + 8], 2u32.to_le_bytes(), "not its count");
    set_u32(&mut index, at + 4, 0xffff_fff0);
    alloc::reset_peak();
    let _ = f.read(&index, true);
    let peak = alloc::peak();
    assert!(peak < 64 << 20, "one allocation of {peak} bytes");
}

/// Found by `mutated_layer_index_files_resealed`: an extent near 2^64
/// overflowed the sum of its offset and length in a read (a panic).
#[test]
fn a_sparse_extent_near_the_end_of_u64_does_not_overflow() {
    let f = IndexFixture::new();
    let mut index = f.seed();
    let at = entry_at(&f, "sparse");
    let count =
        |k: usize| u32::from_le_bytes(index[96 + 4 * k..100 + 4 * k].try_into().unwrap()) as usize;
    let x = extras_at(&index, at);
    let first = u32::from_le_bytes(index[x..x + 4].try_into().unwrap()) as usize;
    let sparse_section =
        192 + count(0) * 48 + count(1) * 24 + count(2) * 8 + count(3) * 4 + count(6) * 4;
    let ext = sparse_section + first * 16;
    index[ext..ext + 8].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
    let _ = f.read(&index, true);
}

/// Found by `mutated_layer_index_files_resealed`: a checkpoint with a bit
/// offset at byte 0 of the blob read the byte before it (an underflow).
#[test]
fn a_checkpoint_with_bits_before_the_blob_is_an_error() {
    let f = IndexFixture::new();
    let mut index = f.seed();
    let cp1 = last_checkpoint_at(&index);
    index[cp1 + 8..cp1 + 16].copy_from_slice(&0u64.to_le_bytes());
    index[cp1 + 32..cp1 + 36].copy_from_slice(&1u32.to_le_bytes()); // a window
    index[cp1 + 36] = 3;
    let e = f.read(&index, true).unwrap_err();
    assert!(e.contains("span"), "{e}");
}

/// Found by `mutated_layer_index_files_resealed` once the index's checksum
/// covered the windows: a bit offset of 8 or more shifted a byte by a
/// negative amount (an overflow panic in the reader).
#[test]
fn a_checkpoint_bit_offset_past_a_byte_is_an_error() {
    let f = IndexFixture::new();
    let mut index = f.seed();
    let cp1 = last_checkpoint_at(&index);
    index[cp1 + 32..cp1 + 36].copy_from_slice(&1u32.to_le_bytes()); // a window
    index[cp1 + 36] = 9;
    let e = f.read(&index, true).unwrap_err();
    assert!(e.contains("span"), "{e}");
}

/// Found by `mutated_archives`: the tar crate quotes a bad header field
/// byte for byte, newlines included, and the error spanned several lines.
#[test]
fn a_tar_error_quoting_header_bytes_is_one_line() {
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(2);
    t.append_data(&mut h, "a", &b"hi"[..]).unwrap();
    let mut bytes = t.into_inner().unwrap();
    bytes.truncate(bytes.len() - 1024); // the end marker
    let second = bytes.len();
    bytes.extend_from_slice(&[0u8; 512]);
    bytes[second..second + 5].copy_from_slice(b"a\nb\nc");
    bytes[second + 148..second + 156].copy_from_slice(b"zz\nzz\nzz");
    bytes.extend_from_slice(&[0u8; 1024]);
    let e = crate::fuzzing::archive(&bytes).unwrap_err();
    assert!(e.contains("tar"), "{e}");
}

/// A tar of one member behind a PAX header `records`, with `data`.
fn pax_member(records: &[(&str, &[u8])], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    super::layer::pax_member(&mut out, records, b"GNUSparseFile.0/f", data);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A PAX 1.0 sparse map was parsed again from its start at each new block:
/// 8 MiB of map lines (a few KiB of zstd) took minutes. Now it is parsed
/// once, and a map of more extents than any real file has is refused.
#[test]
fn a_long_pax_sparse_map_is_parsed_in_linear_time() {
    let mut map = b"999999999\n".to_vec();
    while map.len() < 8 << 20 {
        map.extend_from_slice(b"1\n");
    }
    let tar = pax_member(
        &[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"f"),
            ("GNU.sparse.realsize", b"10"),
        ],
        &map,
    );
    let blob = crate::testutil::zstd(&tar);
    let e = watchdog("a long PAX sparse map", move || layer_blob(&blob)).unwrap_err();
    assert!(e.contains("sparse map"), "{e}");
}

/// Each `SCHILY.xattr` record searched all earlier ones: 300,000 xattrs in
/// one PAX header (a few hundred KiB of gzip) took minutes. No file can
/// carry that many (the kernel's list of names is 64 KiB), so it is refused.
#[test]
fn a_pax_header_with_a_huge_number_of_xattrs_is_refused_quickly() {
    let names: Vec<String> = (0..300_000)
        .map(|i| format!("SCHILY.xattr.user.{i:x}"))
        .collect();
    let records: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"v"[..])).collect();
    let tar = pax_member(&records, b"");
    let blob = crate::testutil::gzip(&tar);
    let e = watchdog("300,000 xattrs", move || layer_blob(&blob)).unwrap_err();
    assert!(e.contains("extended attributes"), "{e}");
}

/// An extension header's claimed size was allocated before its bytes were
/// read: 60 MiB reserved for a 1.5 KiB input.
#[test]
fn an_extension_header_size_is_not_allocated_before_its_bytes_arrive() {
    use super::layer::{header, member};
    let mut tar = Vec::new();
    member(
        &mut tar,
        &header(b"PaxHeaders/a", b'x', 60 << 20),
        b"12 path=abc\n",
    );
    alloc::reset_peak();
    let e = layer_blob(&tar).unwrap_err();
    let peak = alloc::peak();
    assert!(e.contains("tar"), "{e}");
    assert!(peak < 16 << 20, "one allocation of {peak} bytes");
}
