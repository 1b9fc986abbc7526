//! The user form of an upper dir (a container made by an ordinary user):
//! owners, modes, device numbers and special files live in
//! `user.containers.override_stat`, marks in `user.layerfs.*`; the host
//! files are plain files of the daemon's. No root needed.

use super::test_helpers::walk;
use super::upper::{Override, XATTR_OVERRIDE};
use super::*;
use crate::layer::{SpanCache, ingest};
use crate::testutil::{TarBuilder, temp_store};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const ROOT: Caller = Caller { uid: 0, gid: 0 };

#[test]
fn override_values_round_trip() {
    let dev = libc::makedev(1, 3);
    for (o, text) in [
        ((0, 0, libc::S_IFDIR | 0o755, 0), "0:0:0755:dir"),
        ((33, 33, libc::S_IFREG | 0o4755, 0), "33:33:4755:file"),
        ((0, 5, libc::S_IFCHR | 0o666, dev), "0:5:0666:char-1-3"),
        (
            (0, 0, libc::S_IFBLK | 0o660, libc::makedev(8, 1)),
            "0:0:0660:block-8-1",
        ),
        ((1, 2, libc::S_IFIFO | 0o640, 0), "1:2:0640:pipe"),
        ((1, 2, libc::S_IFSOCK | 0o755, 0), "1:2:0755:socket"),
    ] {
        let o = Override {
            uid: o.0,
            gid: o.1,
            mode: o.2,
            rdev: o.3,
        };
        assert_eq!(String::from_utf8(o.encode()).unwrap(), text);
        assert_eq!(Override::decode(text.as_bytes(), libc::S_IFREG), Some(o));
    }
    // The older three-field form keeps the host file's type.
    assert_eq!(
        Override::decode(b"7:8:0700", libc::S_IFDIR),
        Some(Override {
            uid: 7,
            gid: 8,
            mode: libc::S_IFDIR | 0o700,
            rdev: 0
        })
    );
    for bad in [
        "",
        "1:2",
        "x:2:0644",
        "1:2:0644:tape",
        "1:2:0644:file:extra",
    ] {
        assert_eq!(
            Override::decode(bad.as_bytes(), libc::S_IFREG),
            None,
            "{bad}"
        );
    }
}

fn user_fs(dir: &Path, store: &crate::store::Store, digests: &[crate::oci::Digest]) -> UnionFs {
    let upper = dir.join("upper");
    if !upper.exists() {
        std::fs::create_dir_all(&upper).unwrap();
        Form::User.stamp(&upper).unwrap();
    }
    let stack = Stack::open(store, digests, SpanCache::new(8 << 20)).unwrap();
    let u = UpperDir::open(&upper, &dir.join("work")).unwrap();
    assert_eq!(u.form(), Form::User);
    UnionFs::new(stack, Some(u))
}

fn set(fs: &UnionFs, path: &str, a: SetAttr) {
    let ino = walk(fs, path).unwrap().ino;
    fs.setattr(ino, a).unwrap();
}

#[test]
fn user_form_keeps_what_the_container_set_in_the_override_xattr() {
    let (dir, store) = temp_store();
    let mut base = TarBuilder::new();
    base.dir("etc", 0o755)
        .file_owned("etc/shadow", 0o640, 0, 42, b"root:*:1::::::\n")
        .dir("run", 0o755)
        .fifo("run/initctl");
    let digests = vec![ingest(&store, &base.finish()[..], None).unwrap().digest];
    let fs = user_fs(dir.path(), &store, &digests);
    fs.adopt_lower_root().unwrap();

    let srv = fs.mkdir(ROOT_INO, b"srv", 0o755, ROOT).unwrap();
    fs.setattr(
        srv.ino,
        SetAttr {
            uid: Some(33),
            gid: Some(33),
            mode: Some(0o2775),
            ..Default::default()
        },
    )
    .unwrap();
    // Made in a setgid directory: its group is the directory's.
    let (f, _) = fs.create(srv.ino, b"tool", 0o644, ROOT).unwrap();
    fs.setattr(
        f.ino,
        SetAttr {
            uid: Some(5),
            mode: Some(0o4755),
            ..Default::default()
        },
    )
    .unwrap();
    fs.mknod(
        ROOT_INO,
        b"null",
        libc::S_IFCHR | 0o666,
        libc::makedev(1, 3),
        ROOT,
    )
    .unwrap();
    fs.mknod(ROOT_INO, b"fifo", libc::S_IFIFO | 0o640, 0, ROOT)
        .unwrap();
    set(
        &fs,
        "etc/shadow",
        SetAttr {
            uid: Some(7),
            ..Default::default()
        },
    );
    set(
        &fs,
        "run/initctl",
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    );

    let check = |fs: &UnionFs| {
        let a = |p: &str| walk(fs, p).unwrap();
        let s = a("srv");
        assert_eq!(
            (s.kind, s.uid, s.gid, s.perm),
            (FileKind::Directory, 33, 33, 0o2775)
        );
        let t = a("srv/tool");
        assert_eq!(
            (t.kind, t.uid, t.gid, t.perm),
            (FileKind::Regular, 5, 33, 0o4755)
        );
        let n = a("null");
        assert_eq!(
            (n.kind, n.perm, n.rdev),
            (FileKind::CharDevice, 0o666, libc::makedev(1, 3))
        );
        let p = a("fifo");
        assert_eq!((p.kind, p.perm), (FileKind::Fifo, 0o640));
        let sh = a("etc/shadow");
        assert_eq!((sh.uid, sh.gid, sh.perm), (7, 42, 0o640));
        let i = a("run/initctl");
        assert_eq!((i.kind, i.perm), (FileKind::Fifo, 0o600));
        assert_eq!(fs.listxattr(sh.ino).unwrap(), b"", "our xattrs are hidden");
    };
    check(&fs);
    // A new view of the same upper dir (a remount) shows the same.
    check(&user_fs(dir.path(), &store, &digests));

    // On the host: plain files of this process, owner rw, never setuid;
    // no trusted.* xattr anywhere.
    let up = dir.path().join("upper");
    let me = nix::unistd::geteuid().as_raw();
    for (rel, host_mode) in [
        ("srv", 0o40775),
        ("srv/tool", 0o100755),
        ("null", 0o100666),
        ("fifo", 0o100640),
        ("etc/shadow", 0o100640),
        ("run/initctl", 0o100600),
    ] {
        let m = std::fs::symlink_metadata(up.join(rel)).unwrap();
        assert_eq!((m.uid(), m.mode()), (me, host_mode), "{rel} on the host");
        let names: Vec<String> = xattr::list(up.join(rel))
            .unwrap()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| n.starts_with("user.")),
            "{rel}: {names:?}"
        );
    }
    assert_eq!(
        xattr::get(up.join("srv/tool"), XATTR_OVERRIDE)
            .unwrap()
            .unwrap(),
        b"5:33:4755:file"
    );
    assert!(
        xattr::get(up.join("etc/shadow"), "user.layerfs.origin")
            .unwrap()
            .is_some(),
        "a copied-up file's origin mark is a user xattr"
    );
}

/// A user-form view of an image that holds /etc alone, and /etc's inode.
fn etc_only() -> (tempfile::TempDir, UnionFs, u64) {
    let (dir, store) = temp_store();
    let mut base = TarBuilder::new();
    base.dir("etc", 0o755);
    let digests = vec![ingest(&store, &base.finish()[..], None).unwrap().digest];
    let fs = user_fs(dir.path(), &store, &digests);
    let etc = walk(&fs, "etc").unwrap().ino;
    (dir, fs, etc)
}

#[test]
fn a_chown_in_the_user_form_drops_setuid_bits_as_the_kernel_does() {
    let (_dir, fs, etc) = etc_only();
    for (made, after) in [(0o4755, 0o755), (0o2755, 0o755), (0o2745, 0o2745)] {
        let name = format!("f{made:o}");
        let (a, o) = fs.create(etc, name.as_bytes(), made, ROOT).unwrap();
        fs.release(o.fh);
        assert_eq!(a.perm, made);
        let chown = SetAttr {
            uid: Some(5),
            kill_suidgid: true,
            ..Default::default()
        };
        let now = fs.setattr(a.ino, chown).unwrap();
        assert_eq!((now.uid, now.perm), (5, after), "{name}");
        assert_eq!(fs.getattr(a.ino).unwrap().perm, after);
    }
    // A directory keeps its setgid bit.
    let d = fs.mkdir(etc, b"d", 0o2755, ROOT).unwrap();
    let chown = SetAttr {
        gid: Some(5),
        kill_suidgid: true,
        ..Default::default()
    };
    assert_eq!(fs.setattr(d.ino, chown).unwrap().perm, 0o2755);
}

#[test]
fn a_new_entrys_reply_is_its_stat_after_the_override_went_on() {
    let (_dir, fs, etc) = etc_only();
    // An owner other than the container's root needs the override xattr,
    // whose write moves the ctime the kernel then caches from the reply.
    let (a, o) = fs
        .create(etc, b"f", 0o640, Caller { uid: 5, gid: 6 })
        .unwrap();
    fs.release(o.fh);
    let d = fs
        .mkdir(etc, b"d", 0o750, Caller { uid: 5, gid: 6 })
        .unwrap();
    for made in [a, d] {
        let now = fs.getattr(made.ino).unwrap();
        assert_eq!(
            (made.uid, made.gid, made.perm, made.ctime),
            (now.uid, now.gid, now.perm, now.ctime)
        );
    }
}
