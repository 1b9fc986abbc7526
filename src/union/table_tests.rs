//! What the inode table keeps: nodes for what needs one, listings bounded.

use super::test_helpers::{list, walk};
use super::*;
use crate::layer::{SpanCache, ingest};
use crate::testutil::{TarBuilder, temp_store};

fn read_only(tar: Vec<u8>) -> (tempfile::TempDir, UnionFs) {
    let (dir, store) = temp_store();
    let digest = ingest(&store, &tar[..], None).unwrap().digest;
    let stack = Stack::open(&store, &[digest], SpanCache::new(8 << 20)).unwrap();
    (dir, UnionFs::new(stack, None))
}

/// Every entry under directory `ino`, as readdirplus gives it (a reference
/// for the kernel each), directories walked into; (path, attr) pairs.
fn walk_plus(fs: &UnionFs, ino: u64, path: &str, out: &mut Vec<(String, Attr)>) {
    let mut here = Vec::new();
    fs.readdir(ino, 0, 0, true, |e, a| {
        if e.name != b"." && e.name != b".." {
            let name = String::from_utf8_lossy(e.name).into_owned();
            here.push((format!("{path}/{name}"), *a.unwrap()));
        }
        true
    })
    .unwrap();
    for (p, a) in here {
        if a.kind == FileKind::Directory {
            walk_plus(fs, a.ino, &p, out);
        }
        out.push((p, a));
    }
}

#[test]
fn a_read_only_walk_keeps_nodes_for_directories_only() {
    let mut t = TarBuilder::new();
    for d in 0..4 {
        for f in 0..50 {
            t.file(&format!("d{d}/f{f}"), 0o640, format!("{d}/{f}").as_bytes());
        }
    }
    t.symlink("d0/link", "f1")
        .hardlink("d1/hard", "d0/f0")
        .xattr_file("d2/cap", &[("security.capability", b"\0\x01")], b"x");
    let (_d, fs) = read_only(t.finish());
    let mut all = Vec::new();
    walk_plus(&fs, ROOT_INO, "", &mut all);
    assert_eq!(all.len(), 4 + 4 * 50 + 3);
    assert_eq!(
        fs.lock().nodes.len(),
        1 + 4,
        "the root and the four directories; no node per file"
    );
    // What the kernel asks of the files it holds is still answered.
    for (path, a) in &all {
        assert_eq!(&fs.getattr(a.ino).unwrap(), a, "{path}");
        assert_eq!(&walk(&fs, path).unwrap(), a, "lookup of {path}");
    }
    let f = walk(&fs, "d3/f7").unwrap();
    assert_eq!((f.perm, f.size), (0o640, 3));
    let mut buf = [0u8; 8];
    let n = fs.read(f.ino, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"3/7");
    assert_eq!(
        fs.readlink(walk(&fs, "d0/link").unwrap().ino).unwrap(),
        b"f1"
    );
    let hard = walk(&fs, "d1/hard").unwrap();
    assert_eq!(hard.ino, walk(&fs, "d0/f0").unwrap().ino);
    assert_eq!(fs.getattr(hard.ino).unwrap().nlink, 2);
    let cap = walk(&fs, "d2/cap").unwrap().ino;
    assert_eq!(fs.getxattr(cap, b"security.capability").unwrap(), b"\0\x01");
    assert_eq!(fs.listxattr(cap).unwrap(), b"security.capability\0");
    // A forget of a file the table never counted changes nothing.
    fs.forget(f.ino, 3);
    assert_eq!(fs.getattr(f.ino).unwrap(), f);
    assert!(matches!(fs.opendir(f.ino), Err(UnionError::NotDir)));
    assert_eq!(fs.lock().nodes.len(), 5);
}

#[test]
fn listings_of_unchanged_directories_are_bounded_and_merged_again() {
    let mut t = TarBuilder::new();
    for d in 0..6 {
        for f in 0..8 {
            t.file(&format!("d{d}/f{f}"), 0o644, b"");
        }
    }
    let (_d, fs) = read_only(t.finish());
    fs.lock().listed_max = 20;
    let names: Vec<Vec<String>> = (0..6).map(|d| list(&fs, &format!("d{d}"))).collect();
    let cached: usize = {
        let t = fs.lock();
        t.nodes
            .values()
            .filter_map(|n| n.listing.as_ref())
            .map(|l| l.children.len())
            .sum()
    };
    assert!(cached <= 20, "{cached} names cached, at most 20 wanted");
    assert!(
        fs.cached_listing(walk(&fs, "d5").unwrap().ino).is_some(),
        "the latest listing stays"
    );
    for (d, before) in names.iter().enumerate() {
        assert_eq!(&list(&fs, &format!("d{d}")), before, "d{d} merged again");
        assert_eq!(before.len(), 8);
        walk(&fs, &format!("d{d}/f7")).unwrap();
    }
}

#[test]
fn a_listing_in_use_survives_the_listings_of_its_subdirectories() {
    // A directory of 12 names whose subdirectories are listed one by one,
    // each listing looked up in the big one between them (as a walk does):
    // over a budget of 20 names the big one stays (it is used), instead of
    // being merged again for every subdirectory.
    let mut t = TarBuilder::new();
    for d in 0..12 {
        t.file(&format!("big/d{d}/f"), 0o644, b"");
    }
    let (_d, fs) = read_only(t.finish());
    fs.lock().listed_max = 20;
    let big = walk(&fs, "big").unwrap().ino;
    list(&fs, "big");
    let first = fs.cached_listing(big).unwrap();
    for d in 0..12 {
        walk(&fs, &format!("big/d{d}")).unwrap();
        list(&fs, &format!("big/d{d}"));
        let now = fs.cached_listing(big).expect("big's listing cached");
        assert!(
            std::sync::Arc::ptr_eq(&first, &now),
            "big merged again by d{d}'s listing"
        );
    }
}
