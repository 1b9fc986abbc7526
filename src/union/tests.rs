//! The union's semantics on stacks built in code (the design's list of traps).

use super::test_helpers::{list, walk};
use super::*;
use crate::layer::{SpanCache, ingest};
use crate::testutil::{TarBuilder, temp_store};

fn union_of(layers: Vec<Vec<u8>>) -> (tempfile::TempDir, UnionFs) {
    let (dir, store) = temp_store();
    let digests: Vec<_> = layers
        .iter()
        .map(|l| ingest(&store, &l[..], None).unwrap().digest)
        .collect();
    let stack = Stack::open(&store, &digests, SpanCache::new(8 << 20)).unwrap();
    (dir, UnionFs::new(stack, None))
}

fn read(fs: &UnionFs, path: &str) -> Vec<u8> {
    let a = walk(fs, path).unwrap();
    let mut buf = vec![0u8; a.size as usize + 10];
    let n = fs.read(a.ino, 0, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn layer(f: impl FnOnce(&mut TarBuilder)) -> Vec<u8> {
    let mut t = TarBuilder::new();
    f(&mut t);
    t.finish()
}

#[test]
fn upper_layers_win_and_whiteouts_are_scoped() {
    let base = layer(|t| {
        t.file("x", 0o644, b"root x")
            .file("a/x", 0o644, b"a/x")
            .file("keep", 0o644, b"base")
            .file("f", 0o644, b"old");
    });
    let top = layer(|t| {
        t.file(".wh.x", 0o644, b"").file("f", 0o600, b"new");
    });
    let (_d, fs) = union_of(vec![base, top]);
    assert_eq!(
        list(&fs, ""),
        vec!["a", "f", "keep"],
        "a .wh.x at / hides only /x"
    );
    assert_eq!(list(&fs, "a"), vec!["x"]);
    assert_eq!(read(&fs, "f"), b"new");
    assert_eq!(walk(&fs, "f").unwrap().perm, 0o600);
    assert!(matches!(walk(&fs, "x"), Err(UnionError::NotFound)));
}

#[test]
fn symlinks_show_mode_0777_whatever_the_tar_says() {
    // ggcr's overwritten_file image stores foo.txt -> bar.txt with mode 0755.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_link(&mut h, "foo.txt", "bar.txt").unwrap();
    let (_d, fs) = union_of(vec![b.into_inner().unwrap()]);
    let a = walk(&fs, "foo.txt").unwrap();
    assert_eq!((a.kind, a.perm), (FileKind::Symlink, 0o777));
}

#[test]
fn opaque_markers_apply_wherever_they_sit() {
    let base = layer(|t| {
        t.file("d/old1", 0o644, b"1")
            .file("d/old2", 0o644, b"2")
            .file("e/keep", 0o644, b"k");
    });
    let top = layer(|t| {
        t.file("d/new", 0o644, b"n")
            .file("d/.wh..wh..opq", 0o644, b"");
    });
    let (_d, fs) = union_of(vec![base, top]);
    assert_eq!(list(&fs, "d"), vec!["new"]);
    assert_eq!(list(&fs, "e"), vec!["keep"]);
}

#[test]
fn a_whiteout_hides_lower_layers_only() {
    let base = layer(|t| {
        t.file("dir/old", 0o644, b"old").file("f", 0o644, b"base f");
    });
    let top = layer(|t| {
        t.file(".wh.dir", 0o644, b"")
            .file("dir/new", 0o644, b"new")
            .file(".wh.f", 0o644, b"")
            .file("f", 0o644, b"top f");
    });
    let (_d, fs) = union_of(vec![base, top]);
    assert_eq!(
        list(&fs, "dir"),
        vec!["new"],
        "re-created dir shows only its own layer"
    );
    assert_eq!(read(&fs, "f"), b"top f");
}

#[test]
fn type_changes_cut_the_chain() {
    let l1 = layer(|t| {
        t.file("d/deep", 0o644, b"l1");
    });
    let l2 = layer(|t| {
        t.file("d", 0o644, b"now a file");
    });
    let l3 = layer(|t| {
        t.file("d/fresh", 0o644, b"l3");
    });
    let (_d, fs) = union_of(vec![l1, l2, l3]);
    assert_eq!(
        list(&fs, "d"),
        vec!["fresh"],
        "the file in l2 hides l1's directory"
    );
}

#[test]
fn implicit_parents_do_not_override_metadata() {
    let base = layer(|t| {
        t.dir("usr", 0o700).dir("usr/share", 0o711);
    });
    let top = layer(|t| {
        t.file("usr/share/doc/README", 0o644, b"r");
    });
    let (_d, fs) = union_of(vec![base, top]);
    assert_eq!(walk(&fs, "usr").unwrap().perm, 0o700);
    assert_eq!(walk(&fs, "usr/share").unwrap().perm, 0o711);
    assert_eq!(walk(&fs, "usr/share/doc").unwrap().perm, 0o755);
}

#[test]
fn hardlink_counts_come_from_the_merged_view() {
    let base = layer(|t| {
        t.file("h1", 0o644, b"shared")
            .hardlink("h2", "h1")
            .hardlink("sub/h3", "h1")
            .file("solo", 0o644, b"s");
    });
    let top = layer(|t| {
        t.file(".wh.h2", 0o644, b"").hardlink("up", "h1");
    });
    let (_d, fs) = union_of(vec![base, top]);
    let h1 = walk(&fs, "h1").unwrap();
    let h3 = walk(&fs, "sub/h3").unwrap();
    let up = walk(&fs, "up").unwrap();
    assert_eq!(h1.ino, h3.ino);
    assert_eq!(
        h1.ino, up.ino,
        "a link to a lower layer's file is the same inode"
    );
    assert_eq!(h1.nlink, 3, "h1, sub/h3 and up: h2 is whited out");
    assert_eq!(h3.nlink, 3);
    assert_eq!(read(&fs, "up"), b"shared");
    assert_eq!(walk(&fs, "solo").unwrap().nlink, 1);
}

#[test]
fn inode_numbers_agree_between_lookup_and_readdirplus() {
    let base = layer(|t| {
        t.file("a", 0o644, b"a").dir("d", 0o755).symlink("l", "a");
    });
    let (_d, fs) = union_of(vec![base]);
    let fh = fs.opendir(ROOT_INO).unwrap();
    let mut seen = Vec::new();
    fs.readdir(ROOT_INO, fh, 0, true, |e, a| {
        seen.push((
            String::from_utf8_lossy(e.name).into_owned(),
            e.ino,
            a.unwrap().ino,
        ));
        true
    })
    .unwrap();
    for (name, ino, attr_ino) in seen.iter().filter(|s| s.0 != "." && s.0 != "..") {
        assert_eq!(ino, attr_ino);
        assert_eq!(walk(&fs, name).unwrap().ino, *ino, "{name}");
    }
    assert_eq!(walk(&fs, "").unwrap().nlink, 3, "root: . .. and d");
    // Resuming from every offset gives the rest of the listing.
    let mut all = Vec::new();
    fs.readdir(ROOT_INO, 0, 0, false, |e, _| {
        all.push(e.offset);
        true
    })
    .unwrap();
    for (i, off) in all.iter().enumerate() {
        let mut rest = 0;
        fs.readdir(ROOT_INO, fh, *off, false, |_, _| {
            rest += 1;
            true
        })
        .unwrap();
        assert_eq!(rest, all.len() - i - 1);
    }
}

#[test]
fn xattrs_and_links() {
    let cap: &[u8] = b"\x00\x00\x00\x02\x20";
    let base = layer(|t| {
        t.xattr_file("bin/ping", &[("security.capability", cap)], b"elf")
            .symlink("sh", "bin/ping")
            .file("plain", 0o644, b"");
    });
    let (_d, fs) = union_of(vec![base]);
    let p = walk(&fs, "bin/ping").unwrap();
    assert_eq!(fs.getxattr(p.ino, b"security.capability").unwrap(), cap);
    assert_eq!(fs.listxattr(p.ino).unwrap(), b"security.capability\0");
    let plain = walk(&fs, "plain").unwrap();
    assert!(matches!(
        fs.getxattr(plain.ino, b"user.x"),
        Err(UnionError::NoData)
    ));
    let sh = walk(&fs, "sh").unwrap();
    assert_eq!(sh.kind, FileKind::Symlink);
    assert_eq!(fs.readlink(sh.ino).unwrap(), b"bin/ping");
}
