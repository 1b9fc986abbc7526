//! Read-only mounts: what `ls`, `stat`, `cat`, `find`, `tar` and a program
//! see, the daemon's life (umount, signals, kill -9), and bad requests.

use crate::support::{Env, Noise, Tar, can_mount, gzip, is_mounted, sh, tree, wait_until, zstd};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs;
use std::os::unix::fs::{DirEntryExt, FileTypeExt, MetadataExt};

fn sample_layers() -> Vec<Vec<u8>> {
    let cap: &[u8] =
        b"\x00\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let base = Tar::new()
        .dir("etc", 0o755)
        .file("etc/hostname", 0o644, b"base\n")
        .owned("etc/shadow", 0o640, 0, 42, b"root:*:1::::::\n")
        .dir("tmp", 0o1777)
        .file("usr/bin/su", 0o4755, b"#!/bin/sh\n")
        .xattrs(
            "usr/bin/ping",
            &[("security.capability", cap), ("user.note", b"a\x00b")],
            b"ping",
        )
        .file("usr/lib/h1", 0o644, b"linked")
        .hardlink("usr/lib/h2", "usr/lib/h1")
        .hardlink("usr/lib/h3", "usr/lib/h1")
        .symlink("bin", "usr/bin")
        .symlink("dangling", "/nowhere")
        .special("dev/null", tar::EntryType::Char, 0o666, 1, 3)
        .special("run/fifo", tar::EntryType::Fifo, 0o600, 0, 0)
        .file("gone/file", 0o644, b"hidden later")
        .finish();
    let top = Tar::new()
        .file("etc/hostname", 0o600, b"top\n")
        .file(".wh.gone", 0o644, b"")
        .file("usr/lib/.wh.h3", 0o644, b"")
        .file("new", 0o644, b"added")
        .finish();
    vec![gzip(&base), zstd(&top)]
}

#[test]
fn a_mount_shows_the_merged_image() {
    if !can_mount("a_mount_shows_the_merged_image") {
        return;
    }
    let env = Env::new();
    env.image("sample:1", &sample_layers());
    let m = env.mount("sample:1", &[]);
    assert_eq!(fs::read(m.join("etc/hostname")).unwrap(), b"top\n");
    let md = fs::metadata(m.join("etc/hostname")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o600);
    let shadow = fs::metadata(m.join("etc/shadow")).unwrap();
    assert_eq!(
        (shadow.uid(), shadow.gid(), shadow.mode() & 0o7777),
        (0, 42, 0o640)
    );
    assert_eq!(fs::metadata(m.join("tmp")).unwrap().mode() & 0o7777, 0o1777);
    assert_eq!(
        fs::metadata(m.join("usr/bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert!(!m.join("gone").exists(), "a whiteout hides the directory");
    assert_eq!(fs::read(m.join("new")).unwrap(), b"added");
    // Hard links: one inode, st_nlink counted over the merged view (h3 is whited out).
    let h1 = fs::metadata(m.join("usr/lib/h1")).unwrap();
    let h2 = fs::metadata(m.join("usr/lib/h2")).unwrap();
    assert_eq!(h1.ino(), h2.ino());
    assert_eq!((h1.nlink(), h2.nlink()), (2, 2));
    assert!(!m.join("usr/lib/h3").exists());
    // Symlinks, devices, fifos.
    assert_eq!(
        fs::read_link(m.join("bin")).unwrap().to_str(),
        Some("usr/bin")
    );
    assert_eq!(fs::read(m.join("bin/ping")).unwrap(), b"ping");
    assert_eq!(
        fs::read_link(m.join("dangling")).unwrap().to_str(),
        Some("/nowhere")
    );
    let null = fs::symlink_metadata(m.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
    assert!(
        fs::symlink_metadata(m.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    // xattrs are bytes (a capability starts with NUL); absent ones are ENODATA.
    let cap = xattr::get(m.join("usr/bin/ping"), "security.capability")
        .unwrap()
        .unwrap();
    assert_eq!(cap.len(), 20);
    assert_eq!(cap[0], 0);
    assert_eq!(
        xattr::get(m.join("usr/bin/ping"), "user.note")
            .unwrap()
            .unwrap(),
        b"a\x00b"
    );
    assert_eq!(xattr::get(m.join("new"), "user.none").unwrap(), None);
    // Whiteout files themselves never show.
    let (ok, out, _) = sh(&format!("find {} -name '.wh.*' | wc -l", m.path.display()));
    assert!(ok);
    assert_eq!(out.trim(), "0");
    // A read-only mount refuses writes.
    let err = fs::write(m.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    // The usual tools walk it.
    for cmd in [
        "ls -laR {} > /dev/null",
        "find {} > /dev/null",
        "du -s {} > /dev/null",
        "tar -C {} -cf - . | wc -c",
    ] {
        let (ok, _, err) = sh(&cmd.replace("{}", &m.path.display().to_string()));
        assert!(ok, "{cmd}: {err}");
    }
    let mounts = env.ok(&["mounts"]);
    assert!(
        mounts.contains(&m.path.display().to_string()) && mounts.contains("serving"),
        "{mounts}"
    );
    m.unmount();
    assert!(!env.ok(&["mounts"]).contains(&m.path.display().to_string()));
}

#[test]
fn inode_numbers_agree_between_readdir_and_stat() {
    if !can_mount("inode_numbers_agree_between_readdir_and_stat") {
        return;
    }
    let env = Env::new();
    env.image("sample:1", &sample_layers());
    let m = env.mount("sample:1", &[]);
    for dir in ["", "etc", "usr/lib", "usr/bin"] {
        for e in fs::read_dir(m.join(dir)).unwrap() {
            let e = e.unwrap();
            let from_readdir = e.ino();
            let from_stat = fs::symlink_metadata(e.path()).unwrap().ino();
            assert_eq!(from_readdir, from_stat, "{:?}", e.path());
        }
    }
    // Stable for the mount's life: the same after the kernel forgets them.
    let before = fs::metadata(m.join("etc/hostname")).unwrap().ino();
    let (ok, _, err) = sh("echo 2 > /proc/sys/vm/drop_caches");
    assert!(ok, "drop_caches: {err}");
    assert_eq!(fs::metadata(m.join("etc/hostname")).unwrap().ino(), before);
}

#[test]
fn big_files_read_whole_and_by_range_and_map() {
    if !can_mount("big_files_read_whole_and_by_range_and_map") {
        return;
    }
    let env = Env::new();
    let size: u64 = 40 << 20;
    let layer = Tar::new()
        .big("big.bin", size, 9)
        .file("after", 0o755, b"#!/bin/sh\necho ran-from-mount\n")
        .finish();
    env.image("big:1", &[gzip(&layer)]);
    let m = env.mount("big:1", &[]);
    let want = Noise::bytes(9, size as usize);
    let got = fs::read(m.join("big.bin")).unwrap();
    assert!(got == want, "content of the 40 MiB file differs");
    // A range deep in the file, through pread.
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(m.join("big.bin")).unwrap();
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, size - 4096).unwrap();
    assert_eq!(&buf[..], &want[want.len() - 4096..]);
    // mmap sees the same bytes.
    let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    assert!(map[..] == want[..]);
    // SEEK_DATA / SEEK_HOLE: a file without holes is data to its end.
    let (ok, out, err) = sh(&format!(
        "python3 -c 'import os; f=os.open(\"{}\", os.O_RDONLY); print(os.lseek(f, 5, os.SEEK_DATA), os.lseek(f, 5, os.SEEK_HOLE))'",
        m.join("big.bin").display()
    ));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("5 {size}"));
    // exec from the mount.
    let (ok, out, err) = sh(&m.join("after").display().to_string());
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "ran-from-mount");
}

#[test]
fn a_100k_entry_directory_lists_with_stable_offsets() {
    if !can_mount("a_100k_entry_directory_lists_with_stable_offsets") {
        return;
    }
    let env = Env::new();
    let mut t = Tar::new();
    for i in 0..100_000 {
        t = t.file(&format!("many/f{i:06}"), 0o644, b"");
    }
    env.image("many:1", &[t.finish()]);
    let m = env.mount("many:1", &[]);
    assert_eq!(fs::read_dir(m.join("many")).unwrap().count(), 100_000);
    // telldir/seekdir: remember a position, read on, seek back, read the same names.
    let script = format!(
        r#"opendir(D, "{}") or die; my @a; for (1..50000) {{ readdir(D) }} my $pos = telldir(D);
           for (1..10) {{ push @a, scalar readdir(D) }} for (1..20000) {{ readdir(D) }}
           seekdir(D, $pos); my @b; for (1..10) {{ push @b, scalar readdir(D) }}
           print "@a" eq "@b" ? "same" : "differ: @a / @b";"#,
        m.join("many").display()
    );
    let (ok, out, err) = sh(&format!("perl -e '{script}'"));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "same");
}

#[test]
fn bad_mount_requests_fail_with_one_line() {
    if !can_mount("bad_mount_requests_fail_with_one_line") {
        return;
    }
    let env = Env::new();
    env.image("sample:1", &sample_layers());
    let file = env.dir.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    let full = env.mkdir("full");
    fs::write(full.join("x"), b"x").unwrap();
    let empty = env.mkdir("empty");
    let missing = env.dir.path().join("missing");
    let cases = [
        (
            vec!["mount", "no-such:image", empty.to_str().unwrap()],
            "no such image",
        ),
        (
            vec!["mount", "sample:1", missing.to_str().unwrap()],
            "does not exist",
        ),
        (
            vec!["mount", "sample:1", file.to_str().unwrap()],
            "not a directory",
        ),
        (
            vec!["mount", "sample:1", full.to_str().unwrap()],
            "not empty",
        ),
    ];
    for (args, want) in cases {
        let out = env.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let m = env.mount("sample:1", &[]);
    let out = env.run(&["mount", "sample:1", m.path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already a mountpoint"));
    let out = env.run(&["umount", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not mounted"));
}

#[test]
fn a_killed_daemon_leaves_nothing_that_hangs() {
    if !can_mount("a_killed_daemon_leaves_nothing_that_hangs") {
        return;
    }
    let env = Env::new();
    env.image("sample:1", &sample_layers());
    let m = env.mount("sample:1", &[]);
    let pid = env.daemon_pid(&m.path);
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    wait_until(
        || !std::path::Path::new(&format!("/proc/{pid}/status")).exists() || zombie(pid),
        "the daemon to die",
    );
    // ls fails at once (ENOTCONN), it does not hang.
    let start = std::time::Instant::now();
    let (ok, _, _) = sh(&format!("timeout 10 ls {}", m.path.display()));
    assert!(!ok);
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    assert!(env.ok(&["mounts"]).contains("dead"));
    env.ok(&["umount", m.path.to_str().unwrap()]);
    assert!(!is_mounted(&m.path));
    assert!(fs::read_dir(&m.path).unwrap().next().is_none());
}

#[test]
fn sigterm_unmounts_cleanly() {
    if !can_mount("sigterm_unmounts_cleanly") {
        return;
    }
    let env = Env::new();
    env.image("sample:1", &sample_layers());
    let m = env.mount("sample:1", &[]);
    let pid = env.daemon_pid(&m.path);
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    wait_until(|| !is_mounted(&m.path), "SIGTERM to unmount");
    // The daemon removes its record as it exits.
    wait_until(
        || !env.ok(&["mounts"]).contains(&m.path.display().to_string()),
        "the record to go",
    );
}

#[test]
fn a_stray_ready_fd_in_the_environment_is_left_alone() {
    if !can_mount("a_stray_ready_fd_in_the_environment_is_left_alone") {
        return;
    }
    let env = Env::new();
    env.image("sample:1", &sample_layers());
    let mnt = env.mkdir("mnt");
    let file = env.dir.path().join("fd5");
    // A foreground mount whose fd 5 is an ordinary file and whose
    // environment names it as the readiness pipe: the file must stay empty.
    let bin = env!("CARGO_BIN_EXE_layerfs");
    let (ok, _, err) = sh(&format!(
        "exec 5>{file}; LAYERFS_READY_FD=5 {bin} --root {root} mount -f sample:1 {mnt} >/dev/null 2>&1 & \
         i=0; until mountpoint -q {mnt} || [ $i -gt 500 ]; do sleep 0.02; i=$((i+1)); done; \
         cat {mnt}/etc/hostname && {bin} --root {root} umount {mnt}",
        file = file.display(),
        root = env.root().display(),
        mnt = mnt.display(),
    ));
    assert!(ok, "{err}");
    wait_until(|| !is_mounted(&mnt), "the unmount");
    assert_eq!(fs::read(&file).unwrap(), b"");
}

#[test]
fn a_damaged_blob_gives_eio_on_its_files_only() {
    if !can_mount("a_damaged_blob_gives_eio_on_its_files_only") {
        return;
    }
    let env = Env::new();
    let layer = Tar::new()
        .big("early.bin", 24 << 20, 5)
        .file("late.txt", 0o644, b"still readable")
        .finish();
    let infos = env.image("dmg:1", &[gzip(&layer)]);
    let blob = env.store.blob_path(&infos[0].digest);
    let mut bytes = fs::read(&blob).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x55;
    fs::write(&blob, &bytes).unwrap();
    let m = env.mount("dmg:1", &[]);
    let err = fs::read(m.join("early.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(fs::read(m.join("late.txt")).unwrap(), b"still readable");
    let out = env.run(&["fsck"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("damaged"));
}

#[test]
fn a_missing_index_is_rebuilt_at_mount() {
    if !can_mount("a_missing_index_is_rebuilt_at_mount") {
        return;
    }
    let env = Env::new();
    let infos = env.image("sample:1", &sample_layers());
    for i in &infos {
        fs::remove_file(env.store.layer_index_path(&i.digest)).unwrap();
    }
    fs::write(env.store.layer_index_path(&infos[1].digest), b"garbage").unwrap();
    let m = env.mount("sample:1", &[]);
    assert_eq!(fs::read(m.join("etc/hostname")).unwrap(), b"top\n");
}

#[test]
fn rmi_and_gc_respect_a_mount() {
    if !can_mount("rmi_and_gc_respect_a_mount") {
        return;
    }
    let env = Env::new();
    env.image("sample:1", &sample_layers());
    let m = env.mount("sample:1", &[]);
    let out = env.run(&["rmi", "sample:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(&["rmi", "--force", "sample:1"]);
    env.ok(&["gc"]);
    // The mounted image's blobs are still there: every file still reads.
    assert_eq!(fs::read(m.join("usr/bin/ping")).unwrap(), b"ping");
    let listing = tree::listing(&m.path);
    assert!(listing.contains("./usr/lib/h1\tf\t0644"));
    m.unmount();
    let report = env.ok(&["gc"]);
    assert!(report.contains("Deleted 4 blobs"), "{report}");
}

fn zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}
