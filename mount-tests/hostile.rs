//! Hostile input and hostile neighbours (issue 9): a container's changes out
//! of other host users' reach, output paths that are not regular files, a
//! FIFO where a layout expects a file.

use crate::support::{Env, Tar, can_mount, sh};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `stat PATH` as user nobody: its stderr, or None if it succeeded.
fn stat_as_nobody(path: &Path) -> Option<String> {
    let (ok, _, err) = sh(&format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups stat '{}'",
        path.display()
    ));
    (!ok).then_some(err)
}

#[test]
fn a_containers_changes_are_out_of_other_users_reach() {
    if !can_mount("a_containers_changes_are_out_of_other_users_reach") {
        return;
    }
    let env = Env::new();
    // The test's temp dir is 0700 itself; open it so only the store's own
    // modes stand between user nobody and the upper dir.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let layer = Tar::new().file("bin/x", 0o755, b"#!/bin/sh\n").finish();
    env.image("base:1", &[layer]);
    let m = env.mount("base:1", &["--writable", "--name", "c1"]);
    std::fs::copy(m.join("bin/x"), m.join("s")).unwrap();
    std::fs::set_permissions(m.join("s"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    m.unmount();
    let root = env.root();
    let upper_s = root.join("layerfs/containers/c1/upper/s");
    assert_eq!(
        mode(&upper_s),
        0o4755,
        "the setuid file is in the upper dir"
    );
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("layerfs")), 0o700);
    assert_eq!(mode(&root.join("layerfs/containers")), 0o700);
    let err = stat_as_nobody(&upper_s).expect("nobody must not reach the upper dir");
    assert!(err.contains("Permission denied"), "{err}");

    // A store made before the rule: opened again, it is tightened.
    std::fs::set_permissions(root.join("layerfs"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        root.join("layerfs/containers"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        stat_as_nobody(&upper_s).is_none(),
        "reachable before the open"
    );
    env.ok(&["ps"]);
    assert_eq!(mode(&root.join("layerfs")), 0o700);
    let err = stat_as_nobody(&upper_s).expect("tightened by the open");
    assert!(err.contains("Permission denied"), "{err}");
    env.ok(&["rm", "c1"]);
}

/// A char device node like /dev/full, made in `dir` so that a wrong rename
/// can never replace the machine's own.
fn dev_full_in(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("full");
    nix::sys::stat::mknod(
        &p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 7),
    )
    .expect("mknod (needs root)");
    p
}

#[test]
fn export_and_save_write_into_devices_and_fifos_and_refuse_directories() {
    if !can_mount("export_and_save_write_into_devices_and_fifos_and_refuse_directories") {
        return;
    }
    let env = Env::new();
    let layer = Tar::new().file("etc/hello", 0o644, b"hello\n").finish();
    env.image("small:1", &[layer]);
    let full = dev_full_in(env.dir.path());
    let fifo = env.dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out_dir = env.mkdir("out-dir");
    for cmd in [["export", "small:1", "-o"], ["save", "small:1", "-o"]] {
        let out = env.run(&[cmd[0], cmd[1], cmd[2], full.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{cmd:?} to a full device: {err}"
        );
        assert!(err.contains("No space left on device"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        let ft = std::fs::symlink_metadata(&full).unwrap().file_type();
        assert!(ft.is_char_device(), "{cmd:?}: the node is still a device");

        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        env.ok(&[cmd[0], cmd[1], cmd[2], fifo.to_str().unwrap()]);
        let got = reader.join().unwrap();
        let names: Vec<String> = tar::Archive::new(&got[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(!names.is_empty(), "{cmd:?}: the FIFO's reader got a tar");
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );

        let out = env.run(&[cmd[0], cmd[1], cmd[2], out_dir.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd:?} to a directory: {err}");
        assert!(err.contains("is a directory"), "{err}");
        assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);
    }
    // A regular file is still replaced whole.
    let file = env.dir.path().join("out.tar");
    std::fs::write(&file, b"old").unwrap();
    env.ok(&["export", "small:1", "-o", file.to_str().unwrap()]);
    assert!(std::fs::read(&file).unwrap().len() > 512);
}

#[test]
fn an_id_that_load_printed_works_for_mount_and_rmi() {
    if !can_mount("an_id_that_load_printed_works_for_mount_and_rmi") {
        return;
    }
    let src = Env::new();
    let layer = Tar::new().file("etc/hello", 0o644, b"hello\n").finish();
    src.image("one:1", &[crate::support::gzip(&layer)]);
    let id = src.store.resolve("one:1").unwrap().id().to_string();
    let id = id.as_str();
    // One build, two archives: gzip layers (oci-archive, blobs as stored)
    // and plain ones (docker-archive); saved by ID, so loaded unnamed.
    let oci = src.dir.path().join("oci.tar");
    let docker = src.dir.path().join("docker.tar");
    src.ok(&[
        "save",
        id,
        "--format",
        "oci-archive",
        "-o",
        oci.to_str().unwrap(),
    ]);
    src.ok(&["save", id, "-o", docker.to_str().unwrap()]);
    let env = Env::new();
    for archive in [&oci, &docker] {
        let out = env.ok(&["load", "-i", archive.to_str().unwrap()]);
        assert_eq!(out.trim(), format!("Loaded image ID: {id}"));
    }
    assert_eq!(env.store.image_entries().unwrap().len(), 2, "two manifests");
    let m = env.mount(id, &[]);
    assert_eq!(std::fs::read(m.join("etc/hello")).unwrap(), b"hello\n");
    m.unmount();
    let out = env.ok(&["rmi", id]);
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    let out = env.run(&["inspect", id]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "every manifest of the ID is gone"
    );
}

#[test]
fn a_missing_image_is_one_line_for_rmi_and_run() {
    if !can_mount("a_missing_image_is_one_line_for_rmi_and_run") {
        return;
    }
    let env = Env::new();
    // run's own failures exit 125, as docker run's.
    for (args, code) in [
        (&["rmi", "nosuch:1"][..], 1),
        (&["run", "--rm", "localhost:1/nosuch:1", "true"][..], 125),
    ] {
        let out = env.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("nosuch"), "{err}");
    }
}

#[test]
fn run_flags_that_docker_refuses_are_usage_errors() {
    if !can_mount("run_flags_that_docker_refuses_are_usage_errors") {
        return;
    }
    let env = Env::new();
    for (args, want) in [
        (&["run", "--rm", "-e", "=x", "any:1", "true"][..], "-e"),
        (
            &["run", "--rm", "-v", "/tmp:/", "any:1", "true"][..],
            "can't be '/'",
        ),
        (
            &["run", "--rm", "-v", "/tmp:/a/..", "any:1", "true"][..],
            "can't be '/'",
        ),
    ] {
        let out = env.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        // 125: docker run's code for a flag it refuses.
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
