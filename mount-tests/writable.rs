//! Writable mounts (containers): a chroot session's changes committed and
//! mounted again show the same tree, and the traps of design.md that apply
//! to writes — whiteouts under renames, lower directory renames, inode
//! numbers across copy-up, link counts, lower hard links at commit, rmdir
//! then mkdir, a full disk.

use crate::support::debian::{ChrootBinds, chroot, debian3_env};
use crate::support::tree::{self, assert_same_tree};
use crate::support::writable::{Tmpfs, top_layer_members};
use crate::support::{Env, Noise, Tar, can_mount};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirEntryExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// The small image of the trap tests: a directory of files, a tree, a hard
/// linked pair, and a second layer that edits and deletes.
fn small_image(env: &Env, name: &str) {
    let base = Tar::new()
        .dir("d", 0o755)
        .file("d/a", 0o644, b"lower a\n")
        .file("d/b", 0o640, b"lower b\n")
        .dir("tree", 0o750)
        .dir("tree/x", 0o755)
        .dir("tree/x/y", 0o700)
        .file("tree/x/y/z", 0o600, b"deep\n")
        .file("tree/x/file", 0o644, b"in x\n")
        .file("tree/top", 0o755, b"#!/bin/sh\n")
        .symlink("tree/link", "x/file")
        .dir("links", 0o755)
        .file("links/h1", 0o644, b"linked\n")
        .hardlink("links/h2", "links/h1")
        .dir("other", 0o755)
        .finish();
    let top = Tar::new()
        .file("d/c", 0o644, b"upper layer c\n")
        .file("d/.wh.gone", 0o644, b"")
        .finish();
    env.image(name, &[base, top]);
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Commits `container` as `image`, then checks that the image mounted and
/// the container mounted again both show `want`.
fn check_commit_and_remount(env: &Env, container: &str, image: &str, want: &str) {
    env.ok(&["commit", container, image]);
    let img = env.mount(image, &[]);
    assert_same_tree(
        want,
        &tree::listing(&img.path),
        "the committed image differs from the container ('-' container, '+' image)",
    );
    img.unmount();
    let again = env.mount_container(container);
    assert_same_tree(
        want,
        &tree::listing(&again.path),
        "the container mounted again differs ('-' before, '+' after)",
    );
}

#[test]
fn a_chroot_session_commits_to_an_image_that_shows_the_same_tree() {
    const T: &str = "a_chroot_session_commits_to_an_image_that_shows_the_same_tree";
    let Some((env, _)) = debian3_env(T) else {
        return;
    };
    let m = env.mount_writable("debian:3layer", "session");
    {
        let _binds = ChrootBinds::new(&m.path);
        let script = r#"set -e
echo created > /root/created.txt
mkdir -p /opt/app/conf && printf 'a=1\n' > /opt/app/conf/app.ini
echo edited >> /etc/hostname
chmod 0600 /etc/debian_version
chown 1000:100 /etc/host.conf
chown -h 1000:1000 /usr/bin/awk
touch -d '2001-02-03 04:05:06' /etc/login.defs
mv /etc/motd /etc/motd.moved
mv /usr/share/doc/bash /usr/share/doc/bash2
echo more >> /usr/share/doc/bash2/README.layer2
mv /usr/share/doc/gzip /opt/gzip-doc
rm /opt/gzip-doc/TODO
ln /usr/bin/gzip /usr/bin/gzip-again
ln /usr/bin/cat /root/cat-link
ln /root/created.txt /root/created-link.txt
ln -s /etc/hostname /root/hostname-link
mkfifo -m 0640 /root/fifo
rm /etc/shells
rm -r /usr/share/locale
rm -r /usr/share/doc/tar
mkdir /usr/share/doc/tar
echo new > /usr/share/doc/tar/NEW
"#;
        let (ok, _, err) = chroot(&m.path, script);
        assert!(ok, "the chroot session failed: {err}");
    }
    xattr::set(m.join("root/created.txt"), "user.note", b"v\x00x").unwrap();

    // What the session did, checked by hand first.
    let p = |rel: &str| m.join(rel);
    assert_eq!(
        fs::read_to_string(p("etc/hostname")).unwrap(),
        "layer2-host\nedited\n"
    );
    assert_eq!(
        fs::metadata(p("etc/debian_version")).unwrap().mode() & 0o7777,
        0o600
    );
    let hc = fs::metadata(p("etc/host.conf")).unwrap();
    assert_eq!((hc.uid(), hc.gid()), (1000, 100));
    assert_eq!(
        fs::metadata(p("etc/login.defs")).unwrap().mtime(),
        981173106
    );
    assert!(!p("etc/motd").exists() && p("etc/motd.moved").exists());
    assert!(!p("usr/share/doc/bash").exists());
    assert_eq!(names(&p("usr/share/doc/bash2")), ["README.layer2"]);
    assert_eq!(
        names(&p("opt/gzip-doc")),
        [
            "NEWS.gz",
            "README.gz",
            "changelog.Debian.gz",
            "changelog.gz",
            "copyright"
        ]
    );
    let gz = fs::metadata(p("usr/bin/gzip")).unwrap();
    assert_eq!(gz.nlink(), 3, "gzip, gzip-hardlink and gzip-again");
    assert_eq!(
        fs::metadata(p("usr/bin/gzip-again")).unwrap().ino(),
        gz.ino()
    );
    assert_eq!(fs::metadata(p("root/cat-link")).unwrap().nlink(), 2);
    assert!(!p("etc/shells").exists() && !p("usr/share/locale").exists());
    assert_eq!(names(&p("usr/share/doc/tar")), ["NEW"]);

    let want = tree::listing(&m.path);
    assert!(want.lines().count() > 3000);
    env.ok(&[
        "commit",
        m.path.to_str().unwrap(),
        "debian:session",
        "-m",
        "the round-trip session",
    ]);
    let img = env.mount("debian:session", &[]);
    assert_same_tree(
        &want,
        &tree::listing(&img.path),
        "the committed image differs from the writable mount ('-' mount, '+' image)",
    );
    let history = env.ok(&["history", "--no-trunc", "debian:session"]);
    assert!(
        history
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("the round-trip session")),
        "history does not show the message on top:\n{history}"
    );
    // The container keeps its changes across an unmount.
    m.unmount();
    let again = env.mount_container("session");
    assert_same_tree(
        &want,
        &tree::listing(&again.path),
        "the container mounted again differs ('-' before, '+' after)",
    );
}

#[test]
fn a_rename_over_a_whiteout_keeps_the_hide() {
    const T: &str = "a_rename_over_a_whiteout_keeps_the_hide";
    if !can_mount(T) {
        return;
    }
    let env = Env::new();
    small_image(&env, "small:1");
    let m = env.mount_writable("small:1", "wh");
    // A new file renamed onto a deleted lower name, then deleted in turn.
    fs::remove_file(m.join("d/a")).unwrap();
    fs::write(m.join("d/new"), b"new a\n").unwrap();
    fs::rename(m.join("d/new"), m.join("d/a")).unwrap();
    assert_eq!(fs::read(m.join("d/a")).unwrap(), b"new a\n");
    fs::remove_file(m.join("d/a")).unwrap();
    assert!(!m.join("d/a").exists(), "the lower d/a came back");
    // A lower file renamed onto another deleted lower name.
    fs::remove_file(m.join("d/b")).unwrap();
    fs::rename(m.join("d/c"), m.join("d/b")).unwrap();
    assert_eq!(fs::read(m.join("d/b")).unwrap(), b"upper layer c\n");
    // A new directory renamed onto a deleted lower tree.
    fs::remove_dir_all(m.join("tree")).unwrap();
    fs::create_dir(m.join("fresh")).unwrap();
    fs::write(m.join("fresh/f"), b"f\n").unwrap();
    fs::rename(m.join("fresh"), m.join("tree")).unwrap();
    assert_eq!(names(&m.join("tree")), ["f"]);
    assert_eq!(names(&m.join("d")), ["b"]);
    let want = tree::listing(&m.path);
    m.unmount();
    check_commit_and_remount(&env, "wh", "small:wh", &want);
}

#[test]
fn renaming_a_lower_directory_never_gives_exdev() {
    const T: &str = "renaming_a_lower_directory_never_gives_exdev";
    if !can_mount(T) {
        return;
    }
    let env = Env::new();
    small_image(&env, "small:1");
    let m = env.mount_writable("small:1", "mv");
    let before = tree::listing(&m.join("tree"));
    let ino = fs::metadata(m.join("tree/x/y/z")).unwrap().ino();
    fs::rename(m.join("tree"), m.join("other/moved")).expect("rename of a lower directory");
    assert!(!m.join("tree").exists());
    assert_same_tree(
        &before,
        &tree::listing(&m.join("other/moved")),
        "the renamed directory shows other contents ('-' before, '+' after the rename)",
    );
    assert_eq!(
        fs::metadata(m.join("other/moved/x/y/z")).unwrap().ino(),
        ino
    );
    // Moved again, written into, and its old name made anew.
    fs::rename(m.join("other/moved"), m.join("moved2")).expect("second rename");
    fs::rename(m.join("moved2/x"), m.join("d/x")).expect("rename of a lower subdirectory");
    fs::write(m.join("d/x/y/z"), b"rewritten\n").unwrap();
    fs::create_dir(m.join("tree")).unwrap();
    assert!(
        names(&m.join("tree")).is_empty(),
        "the old name shows old contents"
    );
    assert_eq!(names(&m.join("moved2")), ["link", "top"]);
    assert_eq!(names(&m.join("d/x")), ["file", "y"]);
    assert_eq!(fs::read(m.join("d/x/y/z")).unwrap(), b"rewritten\n");
    assert_eq!(
        fs::read_link(m.join("moved2/link")).unwrap().to_str(),
        Some("x/file")
    );
    // The same by mv(1), which gives up on EXDEV only after copying.
    let (ok, _, err) = crate::support::sh(&format!(
        "mv {0}/links {0}/d/links && test ! -e {0}/links",
        m.path.display()
    ));
    assert!(ok, "mv of a lower directory: {err}");
    let want = tree::listing(&m.path);
    m.unmount();
    check_commit_and_remount(&env, "mv", "small:mv", &want);
}

#[test]
fn inode_numbers_stay_the_same_across_copy_up() {
    const T: &str = "inode_numbers_stay_the_same_across_copy_up";
    if !can_mount(T) {
        return;
    }
    let env = Env::new();
    small_image(&env, "small:1");
    let m = env.mount_writable("small:1", "ino");
    let ino = |rel: &str| fs::symlink_metadata(m.join(rel)).unwrap().ino();
    let readdir_ino = |dir: &str, name: &str| {
        fs::read_dir(m.join(dir))
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.file_name() == name)
            .unwrap_or_else(|| panic!("{dir}/{name} not listed"))
            .ino()
    };
    let before: Vec<(&str, u64)> = ["d/a", "d/b", "d/c", "links/h1", "tree/link", "tree/x"]
        .into_iter()
        .map(|p| (p, ino(p)))
        .collect();
    assert_eq!(readdir_ino("d", "a"), ino("d/a"));
    // Data copy-up, metadata-only copy-up, a symlink's owner, a directory's mode.
    fs::OpenOptions::new()
        .append(true)
        .open(m.join("d/a"))
        .unwrap()
        .write_all(b"appended\n")
        .unwrap();
    fs::set_permissions(m.join("d/b"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(m.join("d/c"), b"rewritten\n").unwrap();
    fs::write(m.join("links/h2"), b"through h2\n").unwrap();
    std::os::unix::fs::lchown(m.join("tree/link"), Some(7), Some(7)).unwrap();
    fs::set_permissions(m.join("tree/x"), fs::Permissions::from_mode(0o711)).unwrap();
    for (p, i) in &before {
        assert_eq!(ino(p), *i, "{p}: inode changed by copy-up");
    }
    assert_eq!(
        readdir_ino("d", "a"),
        ino("d/a"),
        "readdir and stat disagree"
    );
    assert_eq!(ino("links/h2"), ino("links/h1"));
    assert_eq!(fs::read(m.join("links/h1")).unwrap(), b"through h2\n");
    assert_eq!(fs::read(m.join("d/a")).unwrap(), b"lower a\nappended\n");
    // A rename keeps it too.
    fs::rename(m.join("d/a"), m.join("other/a")).unwrap();
    assert_eq!(ino("other/a"), before[0].1);
    // And a remount of the container (the inode table is rebuilt from disk).
    m.unmount();
    let again = env.mount_container("ino");
    let ino = |rel: &str| fs::symlink_metadata(again.join(rel)).unwrap().ino();
    assert_eq!(ino("other/a"), before[0].1, "other/a after a remount");
    for (p, i) in &before[1..] {
        assert_eq!(ino(p), *i, "{p}: inode changed by a remount");
    }
}

#[test]
fn a_hard_link_to_a_lower_file_counts_every_name() {
    const T: &str = "a_hard_link_to_a_lower_file_counts_every_name";
    if !can_mount(T) {
        return;
    }
    let env = Env::new();
    small_image(&env, "small:1");
    let m = env.mount_writable("small:1", "nlink");
    let st = |rel: &str| fs::metadata(m.join(rel)).unwrap();
    assert_eq!(st("links/h1").nlink(), 2);
    fs::hard_link(m.join("d/a"), m.join("other/a-link")).unwrap();
    assert_eq!((st("d/a").nlink(), st("other/a-link").nlink()), (2, 2));
    assert_eq!(st("d/a").ino(), st("other/a-link").ino());
    fs::write(m.join("other/a-link"), b"via the link\n").unwrap();
    assert_eq!(fs::read(m.join("d/a")).unwrap(), b"via the link\n");
    fs::hard_link(m.join("links/h1"), m.join("links/h3")).unwrap();
    for h in ["links/h1", "links/h2", "links/h3"] {
        assert_eq!(st(h).nlink(), 3, "{h}");
    }
    fs::remove_file(m.join("links/h2")).unwrap();
    assert_eq!((st("links/h1").nlink(), st("links/h3").nlink()), (2, 2));
    fs::remove_file(m.join("d/a")).unwrap();
    assert_eq!(st("other/a-link").nlink(), 1);
    let want = tree::listing(&m.path);
    m.unmount();
    check_commit_and_remount(&env, "nlink", "small:nlink", &want);
}

#[test]
fn a_commit_writes_a_lower_hard_link_target_as_a_whole_file() {
    const T: &str = "a_commit_writes_a_lower_hard_link_target_as_a_whole_file";
    if !can_mount(T) {
        return;
    }
    let env = Env::new();
    small_image(&env, "small:1");
    let m = env.mount_writable("small:1", "hl");
    fs::hard_link(m.join("d/a"), m.join("other/a-link")).unwrap();
    fs::hard_link(m.join("links/h1"), m.join("other/h-link")).unwrap();
    // A chmod copies up metadata only: the data is still the lower layer's.
    fs::hard_link(m.join("tree/top"), m.join("other/top-link")).unwrap();
    fs::set_permissions(m.join("tree/top"), fs::Permissions::from_mode(0o700)).unwrap();
    let want = tree::listing(&m.path);
    env.ok(&["commit", "hl", "small:hl"]);
    let members = top_layer_members(&env, "small:hl");
    let find = |path: &str| members.iter().find(|x| x.path == path);
    for link in members.iter().filter(|x| x.kind == tar::EntryType::Link) {
        let target = link.link.as_deref().unwrap_or_default();
        let pos = |p: &str| members.iter().position(|x| x.path == p);
        assert!(
            find(target).is_some_and(|t| t.kind == tar::EntryType::Regular)
                && pos(target) < pos(&link.path),
            "{} links to {target}, which is not a file earlier in the layer: {members:#?}",
            link.path
        );
    }
    // Each file: one whole copy of its data, its other names linked to it.
    for (group, size) in [
        (&["d/a", "other/a-link"][..], 8),
        (&["links/h1", "links/h2", "other/h-link"][..], 7),
        (&["tree/top", "other/top-link"][..], 10),
    ] {
        let present: Vec<_> = group
            .iter()
            .map(|p| find(p).unwrap_or_else(|| panic!("{p} is not in the layer: {members:#?}")))
            .collect();
        let whole: Vec<_> = present
            .iter()
            .filter(|x| x.kind == tar::EntryType::Regular)
            .collect();
        assert_eq!(whole.len(), 1, "{group:?}: {present:#?}");
        assert_eq!(whole[0].size, size, "{group:?}: {present:#?}");
        for x in present.iter().filter(|x| x.kind != tar::EntryType::Regular) {
            assert_eq!(x.kind, tar::EntryType::Link, "{x:?}");
            assert_eq!(x.link.as_deref(), Some(whole[0].path.as_str()), "{x:?}");
        }
    }
    drop(m);
    let img = env.mount("small:hl", &[]);
    assert_same_tree(
        &want,
        &tree::listing(&img.path),
        "the committed image differs from the container ('-' container, '+' image)",
    );
    assert_eq!(fs::read(img.join("other/a-link")).unwrap(), b"lower a\n");
}

#[test]
fn rmdir_then_mkdir_gives_an_empty_directory() {
    const T: &str = "rmdir_then_mkdir_gives_an_empty_directory";
    if !can_mount(T) {
        return;
    }
    let env = Env::new();
    small_image(&env, "small:1");
    let m = env.mount_writable("small:1", "rmdir");
    fs::remove_dir_all(m.join("tree")).unwrap();
    fs::create_dir(m.join("tree")).unwrap();
    assert!(names(&m.join("tree")).is_empty());
    fs::remove_file(m.join("d/a")).unwrap();
    fs::remove_file(m.join("d/b")).unwrap();
    fs::remove_file(m.join("d/c")).unwrap();
    fs::remove_dir(m.join("d")).unwrap();
    fs::create_dir(m.join("d")).unwrap();
    fs::write(m.join("d/only"), b"only\n").unwrap();
    assert_eq!(names(&m.join("d")), ["only"]);
    // The same name, made again one level down in a directory made anew.
    fs::create_dir(m.join("tree/x")).unwrap();
    assert!(names(&m.join("tree/x")).is_empty());
    let want = tree::listing(&m.path);
    m.unmount();
    check_commit_and_remount(&env, "rmdir", "small:rmdir", &want);
    let img = env.mount("small:rmdir", &[]);
    assert!(names(&img.join("tree/x")).is_empty());
    assert_eq!(names(&img.join("d")), ["only"]);
}

/// Writes pseudo-random files into `dir` until a write fails; returns that error.
fn fill(dir: &Path) -> std::io::Error {
    for i in 0..10_000u64 {
        let data = Noise::bytes(i, 1 << 20);
        let r = fs::File::create(dir.join(format!("fill-{i}")))
            .and_then(|mut f| f.write_all(&data).and_then(|()| f.sync_all()));
        if let Err(e) = r {
            return e;
        }
    }
    panic!("10 GB written into a 20 MB filesystem");
}

#[test]
fn a_full_disk_reaches_the_writer_and_fails_a_commit_cleanly() {
    const T: &str = "a_full_disk_reaches_the_writer_and_fails_a_commit_cleanly";
    if !can_mount(T) {
        return;
    }
    let scratch = tempfile::Builder::new()
        .prefix("layerfs-tmpfs-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let tmpfs = Tmpfs::mount(&scratch.path().join("small"), "20m");
    let env = Env::within(&tmpfs.path);
    let big = Tar::new().big("big.bin", 6 << 20, 9).finish();
    env.image("full:1", &[big]);
    let images = env.images();
    let m = env.mount_writable("full:1", "full");
    let e = fill(&m.path);
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "the writer saw {e}");
    // A copy-up that does not fit fails the same way, and leaves the file.
    let e = fs::OpenOptions::new()
        .append(true)
        .open(m.join("big.bin"))
        .and_then(|mut f| f.write_all(b"more"))
        .expect_err("a 6 MiB copy-up fits in a full disk");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "copy-up: {e}");
    assert_eq!(fs::metadata(m.join("big.bin")).unwrap().len(), 6 << 20);

    let out = env.run(&["commit", "full", "full:2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "commit on a full disk: {err}");
    assert!(
        err.starts_with("layerfs: ") && err.trim().lines().count() == 1,
        "not one clear line: {err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(env.images(), images, "a failed commit changed the images");
    env.ok(&["fsck"]);
    // With room again, the same commit works.
    for n in names(&m.path).iter().filter(|n| n.starts_with("fill-")) {
        fs::remove_file(m.join(n)).unwrap();
    }
    env.ok(&["commit", "full", "full:2"]);
    assert_eq!(env.images().len(), images.len() + 1);
}

#[test]
fn tar_extracts_symlinks_into_a_writable_mount() {
    const T: &str = "tar_extracts_symlinks_into_a_writable_mount";
    if !can_mount(T) {
        return;
    }
    let env = Env::new();
    small_image(&env, "small:1");
    let m = env.mount_writable("small:1", "tar");
    // GNU tar makes a placeholder file for a symlink leading out with "..",
    // deletes it at the end and makes the link, which the host often gives
    // the placeholder's inode number.
    let mut payload = Tar::new().dir("pkg", 0o755).dir("pkg/lib", 0o755);
    for i in 0..20 {
        payload = payload
            .file(&format!("pkg/lib/lib{i}.so.1"), 0o644, b"elf")
            .symlink(
                &format!("pkg/lib/sub{i}/lib.so"),
                &format!("../lib{i}.so.1"),
            );
    }
    let tarball = env.dir.path().join("payload.tar");
    fs::write(&tarball, payload.finish()).unwrap();
    let (ok, _, err) = crate::support::sh(&format!(
        "tar -C {} -xf {}",
        m.join("other").display(),
        tarball.display()
    ));
    assert!(ok, "tar -x: {err}");
    // The same by hand, many times: the kernel forgets the deleted file
    // asynchronously, so the number may come back before it does.
    for i in 0..300 {
        let p = m.join(&format!("other/p{i}"));
        fs::write(&p, b"").unwrap();
        fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("../target", &p).unwrap();
        assert_eq!(
            fs::read_link(&p).unwrap().to_str(),
            Some("../target"),
            "{}",
            p.display()
        );
    }
    for i in 0..20 {
        let link = m.join(&format!("other/pkg/lib/sub{i}/lib.so"));
        assert_eq!(
            fs::read_link(&link).unwrap().to_str(),
            Some(format!("../lib{i}.so.1").as_str()),
            "{}",
            link.display()
        );
        assert_eq!(fs::read(&link).unwrap(), b"elf");
    }
}

#[test]
fn creating_in_a_removed_working_directory_is_enoent() {
    const T: &str = "creating_in_a_removed_working_directory_is_enoent";
    if !can_mount(T) {
        return;
    }
    let env = Env::new();
    small_image(&env, "small:1");
    let m = env.mount_writable("small:1", "cwd");
    let p = m.path.display();
    // A shell in a directory that goes away; new files elsewhere then take
    // its host inode number (the host reuses numbers at once), which must
    // not make the removed directory a broken one (EIO).
    let script = format!(
        "mkdir {p}/gone && cd {p}/gone && rmdir {p}/gone && \
         for i in 1 2 3 4 5 6 7 8; do touch {p}/f$i; mkdir {p}/d$i; done && \
         for op in 'touch f' 'mkdir d' 'ln -s x l' 'mkfifo p' 'stat .'; do $op 2>&1; done; true"
    );
    let (_, out, err) = crate::support::sh(&script);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "every op fails: {out}{err}");
    for l in lines {
        assert!(l.contains("No such file or directory"), "{l}");
    }
    assert!(!m.join("gone").exists());
    assert_eq!(names(&m.join("d1")), Vec::<String>::new());
    m.unmount();
}
