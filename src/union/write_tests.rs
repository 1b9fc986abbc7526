//! Changes to a container's view, without mounting: copy-up, whiteouts,
//! renames, links; and that a fresh view over the same upper dir shows the
//! same tree. They need root (owners and trusted.* xattrs in the upper dir).

use super::test_helpers::{list, walk};
use super::*;
use crate::layer::{SpanCache, ingest};
use crate::oci::Digest;
use crate::testutil::{TarBuilder, temp_store};

const ME: Caller = Caller { uid: 0, gid: 0 };
/// A valid v2 file capability (cap_net_raw=p).
const CAP: &[u8] =
    b"\x00\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

struct Fixture {
    _dir: tempfile::TempDir,
    store: crate::store::Store,
    digests: Vec<Digest>,
    upper: std::path::PathBuf,
    work: std::path::PathBuf,
    /// Where upper and work are, when not beside the store.
    _own_fs: Option<OwnExt4>,
}

/// A small ext4 of the test's own, loop-mounted (lazily unmounted on drop).
/// Nothing else creates files in it and it has one block group, so the
/// next inode number handed out is the lowest free one: a number just freed
/// comes back at once, as on a busy shared host it does only by chance.
struct OwnExt4 {
    mnt: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl OwnExt4 {
    fn new() -> OwnExt4 {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mountpoint");
        let f = std::fs::File::create(&image).expect("image file");
        f.set_len(16 << 20).expect("size the image");
        let image = image.to_str().expect("utf-8");
        // 4k blocks: 16M is one block group (32768 blocks a group).
        run("mkfs.ext4", &["-q", "-F", "-b", "4096", image]);
        run(
            "mount",
            &["-o", "loop", image, mnt.to_str().expect("utf-8")],
        );
        OwnExt4 { mnt, _dir: dir }
    }
}

impl Drop for OwnExt4 {
    fn drop(&mut self) {
        // Lazy: a mount namespace another test made meanwhile may still
        // hold it; the loop device goes with the last of them (autoclear).
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mnt)
            .status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Fixture {
    fn new() -> Option<Fixture> {
        if !crate::testutil::is_root("union write tests") {
            return None;
        }
        let (dir, store) = temp_store();
        let mut base = TarBuilder::new();
        base.dir("etc", 0o755)
            .file("etc/motd", 0o644, b"hello\n")
            .file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n")
            .file("usr/share/doc/a/README", 0o644, b"doc a")
            .file("usr/share/doc/a/sub/deep", 0o644, b"deep")
            .file("usr/share/doc/b/README", 0o644, b"doc b")
            .file("bin/h1", 0o755, b"linked")
            .hardlink("bin/h2", "bin/h1")
            .xattr_file("bin/cap", &[("security.capability", CAP)], b"cap");
        let base = base.finish();
        let digests = vec![ingest(&store, &base[..], None).unwrap().digest];
        let upper = dir.path().join("c/upper");
        let work = dir.path().join("c/work");
        Some(Fixture {
            _dir: dir,
            store,
            digests,
            upper,
            work,
            _own_fs: None,
        })
    }

    /// The same, with upper and work on an ext4 of their own.
    fn on_own_ext4() -> Option<Fixture> {
        let mut fx = Fixture::new()?;
        let own = OwnExt4::new();
        fx.upper = own.mnt.join("c/upper");
        fx.work = own.mnt.join("c/work");
        fx._own_fs = Some(own);
        Some(fx)
    }

    fn fs(&self) -> UnionFs {
        let stack = Stack::open(&self.store, &self.digests, SpanCache::new(8 << 20)).unwrap();
        UnionFs::new(
            stack,
            Some(UpperDir::open(&self.upper, &self.work).unwrap()),
        )
    }
}

fn parent_and_name(fs: &UnionFs, path: &str) -> (u64, Vec<u8>) {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    (walk(fs, dir).unwrap().ino, name.as_bytes().to_vec())
}

fn read(fs: &UnionFs, path: &str) -> Vec<u8> {
    let a = walk(fs, path).unwrap();
    let o = fs.open(a.ino, libc::O_RDONLY).unwrap();
    let mut buf = vec![0u8; a.size as usize + 16];
    let n = fs.read_fh(o.fh, 0, &mut buf).unwrap();
    fs.release(o.fh);
    buf.truncate(n);
    buf
}

fn write(fs: &UnionFs, path: &str, data: &[u8], flags: i32) {
    let a = walk(fs, path).unwrap();
    let o = fs.open(a.ino, libc::O_WRONLY | flags).unwrap();
    fs.write_fh(o.fh, 0, data).unwrap();
    fs.release(o.fh);
}

/// Every path with its kind, mode, size and content, for comparing views.
fn snapshot(fs: &UnionFs) -> Vec<String> {
    fn rec(fs: &UnionFs, path: &str, out: &mut Vec<String>) {
        for name in list(fs, path) {
            let p = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            let a = walk(fs, &p).unwrap();
            let content = if a.kind == FileKind::Regular {
                String::from_utf8_lossy(&read(fs, &p)).into_owned()
            } else {
                String::new()
            };
            out.push(format!(
                "{p} {:?} {:o} {} {} {content:?}",
                a.kind, a.perm, a.size, a.nlink
            ));
            if a.kind == FileKind::Directory {
                rec(fs, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    rec(fs, "", &mut out);
    out
}

#[test]
fn writing_copies_up_and_keeps_the_inode() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let before = walk(&fs, "etc/motd").unwrap();
    write(&fs, "etc/motd", b"changed\n", libc::O_TRUNC);
    assert_eq!(read(&fs, "etc/motd"), b"changed\n");
    assert_eq!(walk(&fs, "etc/motd").unwrap().ino, before.ino);
    assert!(fx.upper.join("etc/motd").is_file());
    assert!(
        !fx.upper.join("etc/passwd").exists(),
        "only the changed file comes up"
    );
}

#[test]
fn chmod_copies_metadata_only() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let a = walk(&fs, "etc/passwd").unwrap();
    let after = fs
        .setattr(
            a.ino,
            SetAttr {
                mode: Some(0o600),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(after.perm, 0o600);
    assert_eq!(after.size, a.size);
    let meta = std::fs::metadata(fx.upper.join("etc/passwd")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.blocks(), 0, "no data was copied");
    assert!(
        xattr::get(fx.upper.join("etc/passwd"), upper::XATTR_METACOPY)
            .unwrap()
            .is_some()
    );
    assert_eq!(read(&fs, "etc/passwd"), b"root:x:0:0::/root:/bin/sh\n");
    // Writing fills the data in.
    let o = fs.open(a.ino, libc::O_WRONLY).unwrap();
    fs.write_fh(o.fh, 0, b"ROOT").unwrap();
    fs.release(o.fh);
    assert_eq!(read(&fs, "etc/passwd"), b"ROOT:x:0:0::/root:/bin/sh\n");
    assert!(
        xattr::get(fx.upper.join("etc/passwd"), upper::XATTR_METACOPY)
            .unwrap()
            .is_none()
    );
    // The capability xattr comes up with the file.
    let c = walk(&fs, "bin/cap").unwrap();
    fs.setattr(
        c.ino,
        SetAttr {
            mtime: Some(SetTime::At(1_000_000, 0)),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(fs.getxattr(c.ino, b"security.capability").unwrap(), CAP);
    assert_eq!(
        fs.listxattr(c.ino).unwrap(),
        b"security.capability\0",
        "our own marks are hidden"
    );
    assert_eq!(walk(&fs, "bin/cap").unwrap().mtime.secs, 1_000_000);
    // chown drops file capabilities, as on any Linux filesystem.
    fs.setattr(
        c.ino,
        SetAttr {
            uid: Some(7),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        fs.getxattr(c.ino, b"security.capability"),
        Err(UnionError::NoData)
    ));
}

#[test]
fn unlink_rmdir_and_recreate() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let (etc, motd) = parent_and_name(&fs, "etc/motd");
    fs.unlink(etc, &motd).unwrap();
    assert!(matches!(walk(&fs, "etc/motd"), Err(UnionError::NotFound)));
    assert!(fx.upper.join("etc/.wh.motd").is_file());
    let (doc, a) = parent_and_name(&fs, "usr/share/doc/a");
    assert!(matches!(fs.rmdir(doc, &a), Err(UnionError::NotEmpty)));
    let (sub_p, sub) = parent_and_name(&fs, "usr/share/doc/a/sub");
    let (deep_p, deep) = parent_and_name(&fs, "usr/share/doc/a/sub/deep");
    fs.unlink(deep_p, &deep).unwrap();
    fs.rmdir(sub_p, &sub).unwrap();
    let (readme_p, readme) = parent_and_name(&fs, "usr/share/doc/a/README");
    fs.unlink(readme_p, &readme).unwrap();
    fs.rmdir(doc, &a).unwrap();
    assert_eq!(list(&fs, "usr/share/doc"), vec!["b"]);
    // rmdir then mkdir gives an empty directory.
    fs.mkdir(doc, &a, 0o750, ME).unwrap();
    assert_eq!(list(&fs, "usr/share/doc/a"), Vec::<String>::new());
    assert_eq!(walk(&fs, "usr/share/doc/a").unwrap().perm, 0o750);
    let before = snapshot(&fs);
    drop(fs);
    assert_eq!(snapshot(&fx.fs()), before, "the same tree after a restart");
}

#[test]
fn renames_of_files_and_lower_directories() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let motd = walk(&fs, "etc/motd").unwrap();
    let (etc, name) = parent_and_name(&fs, "etc/motd");
    fs.rename(etc, &name, etc, b"motd.old", 0).unwrap();
    assert_eq!(read(&fs, "etc/motd.old"), b"hello\n");
    assert_eq!(
        walk(&fs, "etc/motd.old").unwrap().ino,
        motd.ino,
        "same inode after rename"
    );
    assert!(matches!(walk(&fs, "etc/motd"), Err(UnionError::NotFound)));
    // A directory that exists only in the lower layer: no EXDEV.
    let a = walk(&fs, "usr/share/doc/a").unwrap();
    let (doc, an) = parent_and_name(&fs, "usr/share/doc/a");
    let root_ino = ROOT_INO;
    fs.rename(doc, &an, root_ino, b"moved", 0).unwrap();
    assert_eq!(list(&fs, "moved"), vec!["README", "sub"]);
    assert_eq!(read(&fs, "moved/sub/deep"), b"deep");
    assert_eq!(walk(&fs, "moved").unwrap().ino, a.ino);
    assert_eq!(list(&fs, "usr/share/doc"), vec!["b"]);
    // A new file inside the moved directory, then a rename over an existing file.
    let moved = walk(&fs, "moved").unwrap().ino;
    let (_, o) = fs.create(moved, b"new", 0o644, ME).unwrap();
    fs.write_fh(o.fh, 0, b"fresh").unwrap();
    fs.release(o.fh);
    fs.rename(moved, b"new", moved, b"README", 0).unwrap();
    assert_eq!(read(&fs, "moved/README"), b"fresh");
    // Renaming a directory onto a deleted lower directory's name shows only it.
    let (doc, b) = parent_and_name(&fs, "usr/share/doc/b");
    let (bp, readme) = parent_and_name(&fs, "usr/share/doc/b/README");
    fs.unlink(bp, &readme).unwrap();
    fs.rmdir(doc, &b).unwrap();
    fs.mkdir(root_ino, b"other", 0o755, ME).unwrap();
    fs.rename(root_ino, b"other", doc, b"b", 0).unwrap();
    assert_eq!(list(&fs, "usr/share/doc/b"), Vec::<String>::new());
    let before = snapshot(&fs);
    drop(fs);
    assert_eq!(snapshot(&fx.fs()), before, "the same tree after a restart");
}

#[test]
fn hard_links_stay_one_file() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let h1 = walk(&fs, "bin/h1").unwrap();
    assert_eq!(h1.nlink, 2);
    // Writing one name of a lower hard link changes both.
    write(&fs, "bin/h1", b"LINKED", 0);
    assert_eq!(read(&fs, "bin/h2"), b"LINKED");
    assert_eq!(walk(&fs, "bin/h2").unwrap().ino, h1.ino);
    assert_eq!(walk(&fs, "bin/h2").unwrap().nlink, 2);
    // A new link to a lower file.
    let motd = walk(&fs, "etc/motd").unwrap();
    let etc = walk(&fs, "etc").unwrap().ino;
    let l = fs.link(motd.ino, etc, b"motd.link").unwrap();
    assert_eq!((l.ino, l.nlink), (motd.ino, 2));
    assert_eq!(read(&fs, "etc/motd.link"), b"hello\n");
    let before = snapshot(&fs);
    drop(fs);
    assert_eq!(snapshot(&fx.fs()), before);
}

#[test]
fn new_entries_of_every_kind() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let etc = walk(&fs, "etc").unwrap().ino;
    fs.symlink(etc, b"sym", b"motd", ME).unwrap();
    assert_eq!(
        fs.readlink(walk(&fs, "etc/sym").unwrap().ino).unwrap(),
        b"motd"
    );
    fs.mknod(etc, b"fifo", libc::S_IFIFO | 0o600, 0, ME)
        .unwrap();
    assert_eq!(walk(&fs, "etc/fifo").unwrap().kind, FileKind::Fifo);
    let me = Caller {
        uid: 1000,
        gid: 1000,
    };
    let (a, o) = fs.create(etc, b"owned", 0o640, me).unwrap();
    fs.release(o.fh);
    assert_eq!((a.uid, a.gid, a.perm), (1000, 1000, 0o640));
    assert!(matches!(
        fs.create(etc, b"owned", 0o640, me),
        Err(UnionError::Exists)
    ));
    assert!(matches!(
        fs.mkdir(etc, b".wh.x", 0o755, ME),
        Err(UnionError::NotPermitted)
    ));
}

#[test]
fn a_hard_link_stays_reachable_after_the_name_last_looked_up_goes() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let h1 = walk(&fs, "bin/h1").unwrap();
    let (bin, _) = parent_and_name(&fs, "bin/h1");
    fs.link(h1.ino, bin, b"h3").unwrap();
    // The kernel's latest lookup is h2; then h2 goes, by unlink and by a
    // rename over it.
    assert_eq!(walk(&fs, "bin/h2").unwrap().ino, h1.ino);
    fs.unlink(bin, b"h2").unwrap();
    let a = fs.getattr(h1.ino).expect("h1 and h3 still name the file");
    assert_eq!(a.nlink, 2);
    assert_eq!(walk(&fs, "bin/h3").unwrap().ino, h1.ino);
    fs.create(bin, b"new", 0o644, ME).unwrap();
    fs.rename(bin, b"new", bin, b"h3", 0).unwrap();
    assert_eq!(fs.getattr(h1.ino).unwrap().nlink, 1);
    assert_eq!(read(&fs, "bin/h1"), b"linked");
}

#[test]
fn a_lower_directory_moved_out_of_a_moved_parent_keeps_its_contents() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let (doc, a) = parent_and_name(&fs, "usr/share/doc/a");
    fs.rename(doc, &a, ROOT_INO, b"moved", 0).unwrap();
    let moved = walk(&fs, "moved").unwrap().ino;
    // `sub` is still only in the layer, under its old path.
    fs.rename(moved, b"sub", ROOT_INO, b"sub2", 0).unwrap();
    assert_eq!(list(&fs, "sub2"), vec!["deep"]);
    let before = snapshot(&fs);
    drop(fs);
    let fs = fx.fs();
    assert_eq!(read(&fs, "sub2/deep"), b"deep");
    assert_eq!(snapshot(&fs), before, "the same tree after a restart");
}

/// Inode numbers of a renamed lower directory: it keeps its number through
/// renames (there and back, into another parent, over its own whiteout),
/// lookup and readdir agree, and no two directories of the view share one
/// (`find` takes a directory with its ancestor's number for a loop); the
/// same numbers after a remount.
/// Every directory of the view (path → number), walked by readdirplus; each
/// number checked against lookup, getattr and the directory's own ".", and
/// the walk fails if a directory has the number of another one.
fn dir_numbers(fs: &UnionFs) -> std::collections::HashMap<String, u64> {
    fn rec(fs: &UnionFs, path: &str, ino: u64, out: &mut std::collections::HashMap<String, u64>) {
        assert_eq!(fs.getattr(ino).unwrap().ino, ino, "getattr of {path:?}");
        if let Some((other, _)) = out.iter().find(|&(_, &i)| i == ino) {
            panic!("{path:?} has the number {ino:#x} of {other:?}");
        }
        out.insert(path.to_string(), ino);
        let fh = fs.opendir(ino).unwrap();
        let mut subdirs = Vec::new();
        fs.readdir(ino, fh, 0, true, |e, a| {
            let a = a.expect("readdirplus gives attributes");
            assert_eq!(a.ino, e.ino, "readdirplus attr of {path}/{:?}", e.name);
            match e.name {
                b"." => assert_eq!(e.ino, ino, "\".\" of {path:?}"),
                b".." => {}
                name if e.kind == FileKind::Directory => {
                    subdirs.push((String::from_utf8_lossy(name).into_owned(), e.ino))
                }
                _ => {}
            }
            true
        })
        .unwrap();
        fs.releasedir(fh);
        for (name, readdir_ino) in subdirs {
            let looked_up = fs.lookup(ino, name.as_bytes()).unwrap().ino;
            let p = format!("{path}/{name}");
            assert_eq!(looked_up, readdir_ino, "lookup and readdir of {p:?}");
            rec(fs, &p, looked_up, out);
        }
    }
    let mut out = std::collections::HashMap::new();
    rec(fs, "", ROOT_INO, &mut out);
    out
}

fn ino_of(fs: &UnionFs, path: &str) -> u64 {
    walk(fs, path).unwrap().ino
}

#[test]
fn a_renamed_lower_directory_keeps_its_own_number() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let before = dir_numbers(&fs);
    let a = before["/usr/share/doc/a"];
    let doc = ino_of(&fs, "usr/share/doc");
    let steps: &[(&str, &str)] = &[
        ("usr/share/doc/a", "usr/share/doc/a.moved"),
        (
            "usr/share/doc/a.moved/README",
            "usr/share/doc/a.moved/README.renamed",
        ),
        ("usr/share/doc/a.moved", "usr/share/doc/a"),
        ("usr/share/doc/a", "a"),
        ("a", "usr/share/doc/a.moved"),
        ("usr/share/doc/b", "usr/share/doc/b.moved"),
        ("usr/share/doc/a.moved", "usr/share/doc/a"),
    ];
    for (i, &(from, to)) in steps.iter().enumerate() {
        let (fd, fname) = from.rsplit_once('/').unwrap_or(("", from));
        let (td, tname) = to.rsplit_once('/').unwrap_or(("", to));
        let (fp, tp) = (ino_of(&fs, fd), ino_of(&fs, td));
        fs.rename(fp, fname.as_bytes(), tp, tname.as_bytes(), 0)
            .unwrap_or_else(|e| panic!("step {i}: rename {from} {to}: {e}"));
        let now = dir_numbers(&fs);
        let dir = ["usr/share/doc/a", "usr/share/doc/a.moved", "a"]
            .into_iter()
            .find(|p| now.contains_key(&format!("/{p}")))
            .expect("a somewhere");
        assert_eq!(now[&format!("/{dir}")], a, "step {i}: a renumbered");
        // A new directory where a renamed one was: a number of its own.
        if i == 0 {
            let fresh = fs.mkdir(doc, b"a", 0o755, ME).unwrap().ino;
            assert!(!before.values().any(|&n| n == fresh), "step {i}");
            dir_numbers(&fs);
            fs.rmdir(doc, b"a").unwrap();
        }
    }
    let after = dir_numbers(&fs);
    drop(fs);
    let fs = fx.fs();
    assert_eq!(dir_numbers(&fs), after, "the same numbers after a remount");
    assert_eq!(after["/usr/share/doc/a"], a);
    assert_eq!(
        after["/usr/share/doc/a/sub"],
        before["/usr/share/doc/a/sub"]
    );
}

#[test]
fn names_longer_than_name_max_are_enametoolong() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let long = vec![b'n'; 256];
    let (etc, _) = parent_and_name(&fs, "etc/motd");
    assert!(matches!(
        fs.lookup(etc, &long),
        Err(UnionError::NameTooLong)
    ));
    assert!(matches!(
        fs.mkdir(etc, &long, 0o755, ME),
        Err(UnionError::NameTooLong)
    ));
    assert_eq!(UnionError::NameTooLong.errno(), libc::ENAMETOOLONG);
    assert!(fs.mkdir(etc, &long[..255], 0o755, ME).is_ok());
}

#[test]
fn an_open_file_outlives_its_last_name() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let (etc, _) = parent_and_name(&fs, "etc/motd");
    let (a, o) = fs.create(etc, b"tmpfile", 0o600, ME).unwrap();
    fs.write_fh(o.fh, 0, b"still here").unwrap();
    fs.unlink(etc, b"tmpfile").unwrap();
    let st = fs.getattr(a.ino).expect("stat of an open, unlinked file");
    assert_eq!((st.nlink, st.size), (0, 10));
    let mut buf = [0u8; 10];
    assert_eq!(fs.read_fh(o.fh, 0, &mut buf).unwrap(), 10);
    assert_eq!(&buf, b"still here");
    fs.release(o.fh);
}

#[test]
fn a_new_entry_on_a_reused_inode_number_is_a_new_file() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let (etc, _) = parent_and_name(&fs, "etc/motd");
    // As tar extracts a symlink it defers: a placeholder file, removed, then
    // the link, which the host often gives the placeholder's inode number.
    let (placeholder, o) = fs.create(etc, b"link", 0o600, ME).unwrap();
    fs.release(o.fh);
    drop(o);
    fs.unlink(etc, b"link").unwrap();
    let link = fs.symlink(etc, b"link", b"../target", ME).unwrap();
    assert_eq!(link.kind, FileKind::Symlink);
    assert_eq!(fs.readlink(link.ino).unwrap(), b"../target");
    assert_eq!(walk(&fs, "etc/link").unwrap().kind, FileKind::Symlink);
    if link.ino == placeholder.ino {
        assert_ne!(link.generation, placeholder.generation);
    }
}

/// A copy-up whose lower read is held up: lookups, getattr and readdir of
/// other paths still complete, and a second writer of the same file waits
/// for the first copy instead of making another. The 20 s bound only turns
/// a hang into a failure.
#[test]
fn a_copy_up_in_progress_blocks_only_its_own_file() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, mpsc};
    use std::time::Duration;
    const HANG: Duration = Duration::from_secs(20);
    let Some(fx) = Fixture::new() else { return };
    let fs = Arc::new(fx.fs());
    let motd = walk(&fs, "etc/motd").unwrap().ino;
    let copies = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let counted = copies.clone();
    *fs.copy_hook.lock().unwrap() = Some(Arc::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let _ = started_tx.send(());
        // Returns when released, or when the test gave up (sender dropped).
        let _ = release_rx.lock().unwrap().recv();
    }));
    let writer = |fs: Arc<UnionFs>| {
        std::thread::spawn(move || {
            let o = fs.open(motd, libc::O_WRONLY)?;
            fs.write_fh(o.fh, 0, b"H")?;
            fs.release(o.fh);
            Ok::<_, UnionError>(())
        })
    };
    let first = writer(fs.clone());
    started_rx.recv_timeout(HANG).expect("the copy-up started");
    let second = writer(fs.clone());
    let (done_tx, done_rx) = mpsc::channel();
    let reader = fs.clone();
    std::thread::spawn(move || {
        let r = (|| {
            let passwd = walk(&reader, "etc/passwd")?;
            reader.getattr(passwd.ino)?;
            walk(&reader, "usr/share/doc/b/README")?;
            Ok::<_, UnionError>((list(&reader, "etc"), list(&reader, "usr/share/doc")))
        })();
        let _ = done_tx.send(r);
    });
    let others = done_rx.recv_timeout(HANG);
    drop(release_tx);
    first.join().unwrap().unwrap();
    second.join().unwrap().unwrap();
    let (etc, doc) = others
        .expect("other paths were served while a copy-up ran")
        .unwrap();
    assert!(etc.contains(&"passwd".to_string()));
    assert_eq!(doc, ["a", "b"]);
    assert_eq!(copies.load(Ordering::SeqCst), 1, "the file was copied once");
    assert_eq!(read(&fs, "etc/motd"), b"Hello\n");
}

/// A directory removed while the kernel still holds it (a shell's working
/// directory) stays a removed directory when the host gives its inode
/// number to a new file: the new file gets a number of its own (the same
/// one would make the kernel fail every call on the old with EIO), and
/// creating in the removed one is ENOENT.
#[test]
fn a_removed_directory_keeps_its_number_to_itself() {
    use std::os::unix::fs::MetadataExt;
    let Some(fx) = Fixture::on_own_ext4() else {
        return;
    };
    let fs = fx.fs();
    let gone = fs.mkdir(ROOT_INO, b"gone", 0o755, ME).unwrap();
    let host_ino = std::fs::metadata(fx.upper.join("gone")).unwrap().ino();
    fs.rmdir(ROOT_INO, b"gone").unwrap();
    // The host hands that number out again to the next new file.
    let (new, o) = fs.create(ROOT_INO, b"f", 0o644, ME).unwrap();
    fs.release(o.fh);
    let reused = std::fs::metadata(fx.upper.join("f")).unwrap().ino();
    assert_eq!(reused, host_ino, "the host's next number is the freed one");
    assert_ne!(new.ino, gone.ino);
    assert_eq!(fs.getattr(gone.ino).unwrap_err().errno(), libc::ENOENT);
    let e = fs
        .create(gone.ino, b"f", 0o644, ME)
        .err()
        .expect("created in a removed dir");
    assert_eq!(e.errno(), libc::ENOENT);
    // The new number is the file's: lookup and readdir say it too.
    let by_name: Vec<u64> = list(&fs, "")
        .iter()
        .map(|n| walk(&fs, n).unwrap().ino)
        .collect();
    assert!(by_name.contains(&new.ino) && !by_name.contains(&gone.ino));
    // That number means something in this mount only: a rename must not
    // record it on disk as the file's origin, where a later mount would
    // take it up and could give it to another file too.
    fs.rename(ROOT_INO, b"f", ROOT_INO, b"moved", 0).unwrap();
    let origin = xattr::get(fx.upper.join("moved"), super::upper::XATTR_ORIGIN).unwrap();
    assert_eq!(origin, None, "a mount-local number recorded as origin");
}

/// Listings merged without the lock while changes come in (a reader lists
/// directories a writer is filling): what is cached in the end is what the
/// upper dir holds, for every directory.
#[test]
fn listings_merged_during_changes_are_not_stale() {
    const DIRS: usize = 40;
    const FILES: usize = 15;
    let Some(fx) = Fixture::new() else { return };
    let fs = std::sync::Arc::new(fx.fs());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (fs, done) = (fs.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                for i in 0..DIRS {
                    let Ok(a) = fs.lookup(ROOT_INO, format!("b{i}").as_bytes()) else {
                        continue;
                    };
                    let _ = fs.readdir(a.ino, 0, 0, false, |_, _| true);
                    fs.forget(a.ino, 1);
                }
            }
        })
    };
    for i in 0..DIRS {
        let dir = fs
            .mkdir(ROOT_INO, format!("b{i}").as_bytes(), 0o755, ME)
            .unwrap();
        for j in 0..FILES {
            let name = format!("f{j}");
            let (_, o) = fs.create(dir.ino, name.as_bytes(), 0o644, ME).unwrap();
            fs.release(o.fh);
            if j % 3 == 0 {
                fs.unlink(dir.ino, name.as_bytes()).unwrap();
            }
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    reader.join().unwrap();
    for i in 0..DIRS {
        let mut on_disk: Vec<String> = std::fs::read_dir(fx.upper.join(format!("b{i}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        assert_eq!(list(&fs, &format!("b{i}")), on_disk, "b{i}");
    }
}

/// The names a handle lists from offset 0, with readdir or readdirplus.
fn names_from_start(fs: &UnionFs, ino: u64, fh: u64, plus: bool) -> Vec<String> {
    let mut names = Vec::new();
    fs.readdir(ino, fh, 0, plus, |e, _| {
        names.push(String::from_utf8_lossy(e.name).into_owned());
        true
    })
    .unwrap();
    names.retain(|n| n != "." && n != "..");
    names
}

/// A listing read from offset 0 is the directory as it is then, not as it
/// was at opendir: the kernel caches what the first readdir of a handle
/// returns (FOPEN_CACHE_DIR) as the directory's contents at that moment, so
/// a change between opendir and that readdir (a file created, a directory
/// renamed) would otherwise stay hidden from later readers (`rm -r` then
/// fails with "Directory not empty").
#[test]
fn readdir_from_start_lists_changes_made_after_opendir() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let doc = walk(&fs, "usr/share/doc").unwrap().ino;
    for plus in [false, true] {
        let fh = fs.opendir(doc).unwrap();
        let (_, o) = fs.create(doc, b"new", 0o644, ME).unwrap();
        fs.release(o.fh);
        fs.rename(doc, b"a", doc, b"a.moved", 0).unwrap();
        assert_eq!(
            names_from_start(&fs, doc, fh, plus),
            ["a.moved", "b", "new"],
            "plus={plus}"
        );
        // A rewind (offset 0 again) sees later changes too.
        fs.rename(doc, b"a.moved", doc, b"a", 0).unwrap();
        fs.unlink(doc, b"new").unwrap();
        assert_eq!(
            names_from_start(&fs, doc, fh, plus),
            ["a", "b"],
            "plus={plus}"
        );
        fs.releasedir(fh);
    }
}

#[test]
fn a_root_container_cannot_set_the_user_forms_xattrs() {
    let Some(f) = Fixture::new() else { return };
    let fs = f.fs();
    // Were `user.layerfs.form` settable on the root, the next mount would
    // read this container's upper dir in the user form.
    for name in [
        &b"user.layerfs.form"[..],
        b"user.layerfs.origin",
        b"user.containers.override_stat",
    ] {
        assert!(
            matches!(
                fs.setxattr(ROOT_INO, name, b"user", 0),
                Err(UnionError::NotPermitted)
            ),
            "{}",
            String::from_utf8_lossy(name)
        );
    }
    drop(fs);
    assert_eq!(
        UpperDir::open(&f.upper, &f.work).unwrap().form(),
        Form::Root
    );
}

#[test]
fn a_new_entry_answers_what_getattr_then_says() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let etc = walk(&fs, "etc").unwrap().ino;
    let me = Caller { uid: 7, gid: 8 };
    let same = |made: Attr| {
        let now = fs.getattr(made.ino).unwrap();
        let key = |a: &Attr| (a.ino, a.kind, a.perm, a.uid, a.gid, a.nlink, a.size);
        assert_eq!(key(&made), key(&now), "{made:?}");
        made
    };
    let sub = same(fs.mkdir(etc, b"sub", 0o2750, me).unwrap());
    let (file, o) = fs.create(sub.ino, b"f", 0o4711, me).unwrap();
    fs.release(o.fh);
    let file = same(file);
    same(fs.symlink(sub.ino, b"l", b"f", me).unwrap());
    same(
        fs.mknod(sub.ino, b"p", libc::S_IFIFO | 0o600, 0, me)
            .unwrap(),
    );
    let inner = same(fs.mkdir(sub.ino, b"d", 0o755, me).unwrap());
    assert_eq!((sub.perm, sub.nlink), (0o2750, 2));
    assert_eq!(file.perm, 0o4711);
    // Made in a setgid directory: its group, and setgid for a directory.
    assert_eq!((inner.gid, inner.perm), (8, 0o2755));
    // A new directory's listing is there without a merge, and right.
    assert!(list(&fs, "etc/sub/d").is_empty());
    assert_eq!(list(&fs, "etc/sub").len(), 4);
}

#[test]
fn setuid_bits_drop_where_the_kernel_leaves_it_to_us() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let etc = walk(&fs, "etc").unwrap().ino;
    let mode = |ino| fs.getattr(ino).unwrap().perm;
    let kill = SetAttr {
        kill_suidgid: true,
        ..Default::default()
    };
    for (made, after) in [(0o6755, 0o755), (0o6745, 0o2745), (0o4700, 0o700)] {
        let name = format!("f{made:o}");
        let (a, o) = fs.create(etc, name.as_bytes(), made, ME).unwrap();
        fs.release(o.fh);
        assert_eq!(mode(a.ino), made);
        // What an empty SETATTR, FUSE_WRITE_KILL_SUIDGID or an
        // unprivileged truncate ask for.
        assert_eq!(fs.setattr(a.ino, kill).unwrap().perm, after, "{name}");
    }
    // A chown drops them too; a chmod in the same call wins.
    let (a, o) = fs.create(etc, b"g", 0o4755, ME).unwrap();
    fs.release(o.fh);
    let chown = SetAttr {
        uid: Some(3),
        kill_suidgid: true,
        ..Default::default()
    };
    assert_eq!(fs.setattr(a.ino, chown).unwrap().perm, 0o755);
    let chmod = SetAttr {
        mode: Some(0o4755),
        kill_suidgid: true,
        ..Default::default()
    };
    assert_eq!(fs.setattr(a.ino, chmod).unwrap().perm, 0o4755);
    // Directories keep theirs.
    let d = fs.mkdir(etc, b"d", 0o2755, ME).unwrap();
    assert_eq!(fs.setattr(d.ino, kill).unwrap().perm, 0o2755);
}

#[test]
fn a_new_files_capability_is_read_once_one_is_set() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let etc = walk(&fs, "etc").unwrap().ino;
    let (a, o) = fs.create(etc, b"tool", 0o755, ME).unwrap();
    fs.release(o.fh);
    let cap = b"security.capability";
    assert!(matches!(fs.getxattr(a.ino, cap), Err(UnionError::NoData)));
    fs.setxattr(a.ino, cap, CAP, 0).unwrap();
    assert_eq!(fs.getxattr(a.ino, cap).unwrap(), CAP);
    // A lower file's is its layer's, kept by a metadata copy-up; a write
    // drops it, as on any Linux filesystem.
    let lower = walk(&fs, "bin/cap").unwrap().ino;
    assert_eq!(fs.getxattr(lower, cap).unwrap(), CAP);
    let chmod = SetAttr {
        mode: Some(0o750),
        ..Default::default()
    };
    fs.setattr(lower, chmod).unwrap();
    assert_eq!(fs.getxattr(lower, cap).unwrap(), CAP);
    write(&fs, "bin/cap", b"changed", 0);
    assert!(matches!(fs.getxattr(lower, cap), Err(UnionError::NoData)));
    let motd = walk(&fs, "etc/motd").unwrap().ino;
    write(&fs, "etc/motd", b"changed", 0);
    assert!(matches!(fs.getxattr(motd, cap), Err(UnionError::NoData)));
    fs.setxattr(motd, cap, CAP, 0).unwrap();
    assert_eq!(fs.getxattr(motd, cap).unwrap(), CAP);
}

#[test]
fn a_directory_moved_or_removed_then_made_again_takes_new_files_where_it_now_is() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let make = |path: &str, data: &[u8]| {
        let (p, name) = parent_and_name(&fs, path);
        let (_, o) = fs.create(p, &name, 0o100644, ME).unwrap();
        fs.write_fh(o.fh, 0, data).unwrap();
        fs.release(o.fh);
    };
    let root = walk(&fs, "").unwrap().ino;
    fs.mkdir(root, b"d", 0o755, ME).unwrap();
    make("d/one", b"1");
    fs.rename(root, b"d", root, b"e", 0).unwrap();
    fs.mkdir(root, b"d", 0o755, ME).unwrap();
    make("d/two", b"2");
    assert!(fx.upper.join("d/two").exists() && !fx.upper.join("e/two").exists());
    // A lower directory copied up (installed) under a name used before.
    let doc = walk(&fs, "usr/share/doc").unwrap().ino;
    make("usr/share/doc/a/three", b"3");
    fs.rename(doc, b"a", root, b"a2", 0).unwrap();
    fs.mkdir(doc, b"a", 0o755, ME).unwrap();
    make("usr/share/doc/a/four", b"4");
    assert!(!fx.upper.join("a2/four").exists());
    let d = walk(&fs, "d").unwrap().ino;
    fs.unlink(d, b"two").unwrap();
    fs.rmdir(root, b"d").unwrap();
    fs.mkdir(root, b"d", 0o755, ME).unwrap();
    make("d/five", b"5");

    let host = |p: &str| std::fs::read(fx.upper.join(p)).ok();
    assert_eq!(host("e/one").as_deref(), Some(&b"1"[..]));
    assert_eq!(host("d/five").as_deref(), Some(&b"5"[..]));
    assert_eq!(host("a2/three").as_deref(), Some(&b"3"[..]));
    assert_eq!(host("usr/share/doc/a/four").as_deref(), Some(&b"4"[..]));
    assert_eq!(list(&fs, "d"), ["five"]);
    assert_eq!(list(&fs, "e"), ["one"]);
    assert_eq!(list(&fs, "usr/share/doc/a"), ["four"]);
    assert_eq!(list(&fs, "a2"), ["README", "sub", "three"]);
    // A fresh view over the same upper dir agrees.
    drop(fs);
    let again = fx.fs();
    assert_eq!(list(&again, "d"), ["five"]);
    assert_eq!(list(&again, "usr/share/doc/a"), ["four"]);
}
