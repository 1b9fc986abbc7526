//! The index's entry records: every field reads back as the builder got it,
//! the ones past what a record packs included, and an entry costs the index
//! its record and its name.

use super::Compression;
use super::index::{EntryKind, IndexBuilder, IndexMeta, LayerIndex, NewEntry};
use crate::oci::Digest;
use crate::store::SpanTable;
use crate::testutil::{TarBuilder, alloc, temp_store};

fn entry(path: &str, kind: EntryKind) -> NewEntry {
    NewEntry {
        path: path.as_bytes().to_vec(),
        kind,
        flags: 0,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
        mtime_nsec: 0,
        size: 0,
        data_offset: 0,
        link: Vec::new(),
        rdev_major: 0,
        rdev_minor: 0,
        xattrs: Vec::new(),
        sparse: Vec::new(),
    }
}

/// The index of `entries` (in archive order), written and opened.
fn built(entries: Vec<NewEntry>) -> (tempfile::NamedTempFile, LayerIndex) {
    let mut b = IndexBuilder::new();
    for e in entries {
        b.add(e).unwrap();
    }
    let digest = Digest::from_bytes([7; 32]);
    let meta = IndexMeta {
        digest,
        diff_id: Digest::from_bytes([8; 32]),
        compression: Compression::Gzip,
        blob_size: 1,
        uncompressed_size: 1,
    };
    let bytes = b
        .finish(&meta, &[], &[], &SpanTable::new(Vec::new()).unwrap())
        .unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let index = LayerIndex::open(file.path(), &digest).unwrap();
    (file, index)
}

fn find<'a>(index: &'a LayerIndex, path: &str) -> super::Entry<'a> {
    (0..index.len())
        .map(|i| index.entry(i))
        .find(|e| e.path() == path.as_bytes())
        .unwrap_or_else(|| panic!("no entry {path}"))
}

/// What a mount or an export reads of an entry.
type Fields = (
    EntryKind,
    u32,
    (u32, u32),
    (i64, u32),
    u64,
    u64,
    Vec<u8>,
    (u32, u32),
    Vec<(Vec<u8>, Vec<u8>)>,
    Vec<(u64, u64)>,
);

fn fields(e: &super::Entry<'_>) -> Fields {
    (
        e.kind(),
        e.mode(),
        (e.uid(), e.gid()),
        e.mtime(),
        e.size(),
        e.data_offset(),
        e.link().to_vec(),
        e.rdev(),
        e.xattrs().map(|(k, v)| (k.to_vec(), v.to_vec())).collect(),
        e.sparse(),
    )
}

#[test]
fn every_field_reads_back_including_those_a_record_has_no_room_for() {
    let big = 1u64 << 50;
    let mut cases = Vec::new();
    let mut add = |path: &str, kind: EntryKind, f: &dyn Fn(&mut NewEntry)| {
        let mut e = entry(path, kind);
        f(&mut e);
        cases.push(e);
    };
    add("plain", EntryKind::Regular, &|e| {
        (e.size, e.data_offset) = (12_345, 1 << 40)
    });
    add("past-48-bits", EntryKind::Regular, &|e| {
        (e.size, e.data_offset) = (big + 3, big + 512)
    });
    add("offset-past-48-bits", EntryKind::Regular, &|e| {
        (e.size, e.data_offset) = (5, (1 << 48) + 1)
    });
    add("nanoseconds", EntryKind::Regular, &|e| {
        e.mtime_nsec = 999_999_999
    });
    add("before-1970", EntryKind::Regular, &|e| {
        (e.mtime, e.mtime_nsec) = (-86_400, 5)
    });
    add("year-3000", EntryKind::Regular, &|e| {
        (e.mtime, e.mtime_nsec) = (32_503_680_000, 7)
    });
    add("far-past", EntryKind::Regular, &|e| e.mtime = i64::MIN);
    add("odd-nanoseconds", EntryKind::Regular, &|e| {
        e.mtime_nsec = u32::MAX
    });
    add("owners-and-mode", EntryKind::Regular, &|e| {
        (e.uid, e.gid, e.mode) = (u32::MAX - 1, 3_000_000, 0o7777)
    });
    add("everything", EntryKind::Regular, &|e| {
        (e.size, e.data_offset) = (big, big);
        (e.mtime, e.mtime_nsec) = (-(1 << 40), 1);
        e.sparse = vec![(0, 4), (big - 4, 4)];
        e.xattrs = vec![
            (b"user.z".to_vec(), vec![0; 300]),
            (b"security.capability".to_vec(), b"\0\x01".to_vec()),
        ];
    });
    add("sym", EntryKind::Symlink, &|e| e.link = vec![b'l'; 4000]);
    add("char", EntryKind::CharDevice, &|e| {
        (e.rdev_major, e.rdev_minor) = (u32::MAX, 0x1234_5678)
    });
    add("block", EntryKind::BlockDevice, &|e| {
        (e.rdev_major, e.rdev_minor) = (8, 1)
    });
    add("fifo", EntryKind::Fifo, &|_| {});
    add("dir", EntryKind::Directory, &|e| {
        e.mode = 0o1777;
        e.xattrs = vec![(b"trusted.overlay.opaque".to_vec(), b"y".to_vec())];
    });
    add("dir/in", EntryKind::Regular, &|e| e.size = 1);
    let (_f, index) = built(cases.clone());
    for want in &cases {
        let e = find(&index, std::str::from_utf8(&want.path).unwrap());
        let mut xattrs = want.xattrs.clone();
        xattrs.sort();
        assert_eq!(
            fields(&e),
            (
                want.kind,
                want.mode,
                (want.uid, want.gid),
                (want.mtime, want.mtime_nsec),
                want.size,
                want.data_offset,
                want.link.clone(),
                (want.rdev_major, want.rdev_minor),
                xattrs,
                want.sparse.clone(),
            ),
            "{}",
            String::from_utf8_lossy(&want.path)
        );
        assert_eq!(e.has_xattrs(), !want.xattrs.is_empty());
        assert_eq!(e.is_sparse(), !want.sparse.is_empty());
    }
    let dir = find(&index, "dir").as_dir().unwrap();
    assert_eq!(dir.path(), b"dir");
    assert_eq!(index.entry(dir.children().start).name(), b"in");
}

#[test]
fn hard_links_keep_their_path_target_and_group_beside_xattrs() {
    let mut target = entry("t", EntryKind::Regular);
    target.size = 3;
    target.xattrs = vec![(b"user.a".to_vec(), b"1".to_vec())];
    let mut link = entry("l", EntryKind::HardLink);
    link.link = b"t".to_vec();
    let mut below = entry("below", EntryKind::HardLink);
    below.link = b"usr/lib/x".to_vec();
    let (_f, index) = built(vec![target, link, below]);
    let (t, l, below) = (find(&index, "t"), find(&index, "l"), find(&index, "below"));
    assert_eq!((l.target(), l.link()), (t.id(), &b"t"[..]));
    let g = t.group().unwrap();
    assert_eq!(l.group(), Some(g));
    let mut members: Vec<u32> = index.group_members(g).collect();
    members.sort();
    assert_eq!(members, vec![l.id().min(t.id()), l.id().max(t.id())]);
    assert_eq!(t.xattrs().count(), 1);
    assert_eq!(t.size(), 3);
    assert_eq!(
        (below.target(), below.link()),
        (super::NONE, &b"usr/lib/x"[..])
    );
    assert_eq!(below.group(), None);
}

/// An entry record was 96 bytes, most of them zeros or repeats (a
/// directory's size, a file's link and rdev, 64-bit sizes and offsets), so
/// the mapped entries of a 303,000-file layer alone were 29 MB of a
/// walk's RSS. Now a record is 48 bytes and the rare fields live apart.
#[test]
fn an_entry_costs_the_index_48_bytes_and_its_name() {
    let index_of = |files: usize| {
        let mut t = TarBuilder::new();
        for i in 0..files {
            t.file(&format!("d{:02}/f{i:05}", i % 50), 0o644, b"x");
        }
        let (_d, store) = temp_store();
        let info = super::ingest(&store, &t.finish()[..], None).unwrap();
        let index = super::open_index(&store, &info.digest).unwrap();
        (index.len(), index.file_size())
    };
    let (n1, s1) = index_of(2_000);
    let (n2, s2) = index_of(6_000);
    let per_entry = (s2 - s1) / u64::from(n2 - n1);
    // 48 bytes of record and 6 of name ("f01234"), and a byte's share of
    // the checkpoints the growing tar adds (one window per 256 KiB).
    assert!(per_entry <= 48 + 6 + 2, "{per_entry} bytes per entry");
}

/// The most the builder holds at once while it indexes `files` files in
/// 100 directories, from the first entry to the last byte written.
fn builder_peak(files: u32) -> isize {
    let dir = tempfile::tempdir().unwrap();
    let meta = IndexMeta {
        digest: Digest::from_bytes([7; 32]),
        diff_id: Digest::from_bytes([8; 32]),
        compression: Compression::Gzip,
        blob_size: 1,
        uncompressed_size: 1,
    };
    let spans = SpanTable::new(Vec::new()).unwrap();
    let start = alloc::live();
    alloc::reset_live_peak();
    let mut b = IndexBuilder::spilling_to(Some(dir.path().to_path_buf()));
    for i in 0..files {
        let mut e = entry(&format!("d{:03}/file-{i:07}", i % 100), EntryKind::Regular);
        (e.size, e.data_offset) = (1, u64::from(i) * 1024);
        b.add(e).unwrap();
    }
    let mut out = std::io::sink();
    b.finish_to(
        &meta,
        &[],
        &[],
        &spans,
        &mut out,
        std::path::Path::new("index"),
    )
    .unwrap();
    alloc::live_peak_since(start)
}

/// Found by the 303,000-file layer: importing it held 162 bytes per
/// entry (trie nodes, names and their hash, and the layout's vectors), so a
/// 5-million-file image needed most of a gigabyte. Now only directories are
/// kept in memory; the other entries are sorted by directory on disk, in
/// runs merged at the end.
#[test]
fn the_builder_holds_no_more_for_twice_the_files() {
    let (one, two) = (builder_peak(150_000), builder_peak(300_000));
    assert!(
        two < one + (1 << 20),
        "150,000 files: {one} bytes held at most; 300,000: {two}"
    );
    assert!(one < 16 << 20, "150,000 files: {one} bytes held at most");
}

/// An index of an older version is rebuilt from the blob when a layer is
/// opened, not read with the wrong record layout.
#[test]
fn an_index_of_the_last_version_is_rebuilt_from_the_blob() {
    let mut t = TarBuilder::new();
    t.file("etc/hostname", 0o644, b"box\n");
    let (_d, store) = temp_store();
    let info = super::ingest(&store, &t.finish()[..], None).unwrap();
    let path = store.layer_index_path(&info.digest);
    let mut b = std::fs::read(&path).unwrap();
    b[8..12].copy_from_slice(&4u32.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let err = LayerIndex::open(&path, &info.digest)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("index version 4, this layerfs reads version 5 only"),
        "{err}"
    );
    let index = super::open_index(&store, &info.digest).unwrap();
    assert_eq!(find(&index, "etc/hostname").size(), 4);
    assert_eq!(std::fs::read(&path).unwrap()[8..12], 5u32.to_le_bytes());
}

/// An image's check of hard links into lower layers reads only the links
/// each index lists as external.
#[test]
fn a_hard_link_into_a_lower_layer_must_find_its_target_there() {
    let mut t = TarBuilder::new();
    t.file("a", 0o644, b"x")
        .hardlink("here", "a")
        .hardlink("below", "usr/lib/x");
    let (_d, store) = temp_store();
    let top = super::ingest(&store, &t.finish()[..], None).unwrap();
    let err = crate::image::check_hardlinks(&store, &[top.digest])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("hard link \"below\" names \"usr/lib/x\", which no layer"),
        "{err}"
    );
    let mut t = TarBuilder::new();
    t.file("usr/lib/x", 0o644, b"lib");
    let base = super::ingest(&store, &t.finish()[..], None).unwrap();
    crate::image::check_hardlinks(&store, &[base.digest, top.digest]).unwrap();
}
