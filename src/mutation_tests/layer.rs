//! Layer blobs: tar headers (ustar, GNU long names and old sparse, PAX
//! records, PAX sparse 0.1 and 1.0), then the gzip and zstd streams around
//! them, ingested into a store and read back; and layer index files.

use super::fixture_seeds;
use crate::fuzzing::{IndexFixture, layer_blob, sample_tar};
use crate::testutil::mutate::{count, mutate_in_place, run, run_with};
use crate::testutil::{gzip, zstd};
use std::sync::Arc;

const BLOCK: usize = 512;

/// A 512-byte header: name, typeflag, size and mode, checksum set.
pub fn header(name: &[u8], typeflag: u8, size: u64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 1000);
    octal(&mut h[116..124], 1000);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    checksum(&mut h);
    h
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0w$o}\0", w = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

fn checksum(h: &mut [u8; BLOCK]) {
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

/// A member: its header then its data padded to whole blocks.
pub fn member(out: &mut Vec<u8>, hdr: &[u8; BLOCK], data: &[u8]) {
    out.extend_from_slice(hdr);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(BLOCK), 0);
}

/// PAX records, each `"<len> key=value\n"` with its own length counted.
pub fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

fn end(mut out: Vec<u8>) -> Vec<u8> {
    out.extend_from_slice(&[0u8; 2 * BLOCK]);
    out
}

/// PAX headers for long paths and links, sizes, fractional mtimes, big ids
/// and xattrs, plus a global header.
pub fn pax_tar() -> Vec<u8> {
    let mut out = Vec::new();
    let global = pax_records(&[("SCHILY.xattr.user.global", b"g")]);
    member(
        &mut out,
        &header(b"pax_global", b'g', global.len() as u64),
        &global,
    );
    member(&mut out, &header(b"dir/", b'5', 0), b"");
    let long = format!("dir/{}", "p".repeat(200));
    let rec = pax_records(&[
        ("path", long.as_bytes()),
        ("mtime", b"1700000000.123456789"),
        ("uid", b"4294967294"),
        ("gid", b"42"),
        ("size", b"11"),
        ("SCHILY.xattr.security.capability", b"\0\0\0\x02caps"),
    ]);
    member(
        &mut out,
        &header(b"PaxHeaders/x", b'x', rec.len() as u64),
        &rec,
    );
    member(&mut out, &header(b"short", b'0', 11), b"hello world");
    let rec = pax_records(&[
        ("path", b"dir/sym"),
        ("linkpath", "t".repeat(300).as_bytes()),
    ]);
    member(
        &mut out,
        &header(b"PaxHeaders/y", b'x', rec.len() as u64),
        &rec,
    );
    member(&mut out, &header(b"sym", b'2', 0), b"");
    let rec = pax_records(&[("linkpath", long.as_bytes())]);
    member(
        &mut out,
        &header(b"PaxHeaders/z", b'x', rec.len() as u64),
        &rec,
    );
    member(&mut out, &header(b"dir/hard", b'1', 0), b"");
    member(&mut out, &header(b"dir/.wh.gone", b'0', 0), b"");
    end(out)
}

/// GNU long names (`L`, `K`) and an old GNU sparse file (`S`) with an
/// extension block.
pub fn gnu_tar() -> Vec<u8> {
    let mut out = Vec::new();
    let name = format!("{}\0", "n".repeat(150));
    member(
        &mut out,
        &header(b"././@LongLink", b'L', name.len() as u64),
        name.as_bytes(),
    );
    member(&mut out, &header(b"short", b'0', 3), b"abc");
    let link = format!("{}\0", "l".repeat(150));
    member(
        &mut out,
        &header(b"././@LongLink", b'K', link.len() as u64),
        link.as_bytes(),
    );
    member(&mut out, &header(b"lnk", b'2', 0), b"");
    // Sparse: 4 extents in the header, one more in an extension block.
    let mut h = header(b"sparse", b'S', 20);
    for (i, off) in [0u64, 8192, 16384, 24576].iter().enumerate() {
        let e = 386 + i * 24;
        octal(&mut h[e..e + 12], *off);
        octal(&mut h[e + 12..e + 24], 4);
    }
    h[482] = 1;
    octal(&mut h[483..495], 40960);
    checksum(&mut h);
    out.extend_from_slice(&h);
    let mut ext = [0u8; BLOCK];
    octal(&mut ext[0..12], 32768);
    octal(&mut ext[12..24], 4);
    out.extend_from_slice(&ext);
    out.extend_from_slice(b"aaaabbbbccccddddeeee");
    out.resize(out.len().next_multiple_of(BLOCK), 0);
    member(&mut out, &header(b"dev", b'3', 0), b"");
    member(&mut out, &header(b"fifo", b'6', 0), b"");
    end(out)
}

/// A regular member `name` with `data`, behind a PAX header of `records`.
pub fn pax_member(out: &mut Vec<u8>, records: &[(&str, &[u8])], name: &[u8], data: &[u8]) {
    let rec = pax_records(records);
    member(out, &header(b"PaxHeaders/p", b'x', rec.len() as u64), &rec);
    member(out, &header(name, b'0', data.len() as u64), data);
}

/// PAX sparse files, format 0.1 (map in a record) and 1.0 (map in the data).
pub fn pax_sparse_tar() -> Vec<u8> {
    let mut out = Vec::new();
    let records: &[(&str, &[u8])] = &[
        ("GNU.sparse.major", b"0"),
        ("GNU.sparse.minor", b"1"),
        ("GNU.sparse.name", b"s01"),
        ("GNU.sparse.realsize", b"20000"),
        ("GNU.sparse.map", b"0,4,10000,4"),
    ];
    pax_member(&mut out, records, b"GNUSparseFile.0/s01", b"aaaabbbb");
    let records: &[(&str, &[u8])] = &[
        ("GNU.sparse.major", b"1"),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", b"s10"),
        ("GNU.sparse.realsize", b"30000"),
    ];
    let mut data = b"2\n0\n4\n20000\n4\n".to_vec();
    data.resize(BLOCK, 0);
    data.extend_from_slice(b"ccccdddd");
    pax_member(&mut out, records, b"GNUSparseFile.0/s10", &data);
    end(out)
}

pub(super) fn tar_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![sample_tar(), pax_tar(), gnu_tar(), pax_sparse_tar()];
    seeds.extend(fixture_seeds(
        "mutation: tar headers",
        &[
            "real/tar-edge/pax2.tar",
            "real/tar-edge/sparse.tar",
            "real/tar-edge/xattrs.tar",
            "real/tar-edge/biguid_gnu.tar",
            "real/regclient/layer-wh.tar",
        ],
    ));
    seeds
}

#[test]
fn the_seeds_are_valid_layers() {
    for (i, seed) in tar_seeds().iter().enumerate() {
        layer_blob(seed).unwrap_or_else(|e| panic!("seed {i}: {e}"));
        layer_blob(&gzip(seed)).unwrap_or_else(|e| panic!("seed {i} gzip: {e}"));
    }
}

/// Tar headers mutated, the archive then stored plain, gzip or zstd. Most
/// cases get their header checksums made right again, so the damage reaches
/// the fields behind the checksum.
#[test]
fn mutated_tar_headers() {
    run("tar headers", tar_seeds(), count(3000), |data| {
        let mut data = data.to_vec();
        if data.len() / 3 % 4 != 0 {
            reseal_tar(&mut data);
        }
        match data.len() % 3 {
            0 => layer_blob(&gzip(&data)),
            1 => layer_blob(&zstd(&data)),
            _ => layer_blob(&data),
        }
    });
}

/// Sets the checksum of every block that looks like a header (ustar or GNU
/// magic) to what its bytes sum to.
fn reseal_tar(data: &mut [u8]) {
    for block in data.chunks_exact_mut(BLOCK) {
        if &block[257..262] == b"ustar" {
            let h: &mut [u8; BLOCK] = block.try_into().unwrap();
            checksum(h);
        }
    }
}

/// The compressed streams themselves mutated.
#[test]
fn mutated_gzip_and_zstd_streams() {
    let mut seeds = Vec::new();
    for t in [sample_tar(), pax_sparse_tar()] {
        seeds.push(gzip(&t));
        seeds.push(zstd(&t));
    }
    // Two gzip members one after the other, as pigz and some writers emit.
    let mut two = gzip(&pax_tar()[..BLOCK * 2]);
    two.extend_from_slice(&gzip(&pax_tar()[BLOCK * 2..]));
    seeds.push(two);
    seeds.extend(fixture_seeds(
        "mutation: gzip and zstd streams",
        &["real/ggcr/content.tar.zst"],
    ));
    run("gzip/zstd streams", seeds, count(2000), layer_blob);
}

/// Index files as ingest writes them, damaged as they are on disk: a few
/// cases change the length, most keep it (an index of another length is
/// refused before anything else is looked at).
#[test]
fn mutated_layer_index_files() {
    let f = Arc::new(IndexFixture::new());
    let seeds = vec![f.seed()];
    let g = f.clone();
    run("layer index", seeds.clone(), count(300), move |d| {
        g.read(d, false)
    });
    run_with(
        "layer index, in place",
        seeds,
        count(700),
        mutate_in_place,
        move |d| f.read(d, false),
    );
}

/// Damage the checksum no longer catches (a hostile store): the index is
/// resealed after each mutation, so it reaches the sections themselves.
/// Only the header and tables are mutated: the inflate windows, most of the
/// file's bytes, get their share in `mutated_layer_index_files`.
#[test]
fn mutated_layer_index_files_resealed() {
    let f = IndexFixture::new();
    run_with(
        "layer index, resealed",
        vec![f.seed()],
        count(500),
        mutate_tables,
        move |d| f.read(d, true),
    );
}

/// `mutate_in_place` of an index's header and tables, its windows kept.
fn mutate_tables(seeds: &[Vec<u8>], case: u64) -> Vec<u8> {
    let seed = &seeds[0];
    let windows = u64::from_le_bytes(seed[144..152].try_into().unwrap()) as usize;
    let (tables, rest) = seed.split_at(seed.len() - windows);
    let mut out = mutate_in_place(&[tables.to_vec()], case);
    out.extend_from_slice(rest);
    out
}

/// The seed opens and reads back, checksum resealed or not.
#[test]
fn the_index_seed_reads_back() {
    let f = IndexFixture::new();
    f.read(&f.seed(), false).unwrap();
    f.read(&f.seed(), true).unwrap();
}
