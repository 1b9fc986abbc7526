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
    assert_eq!(mode(&upper_s), 0o4755, "the setuid file is in the upper dir");
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("layerfs")), 0o700);
    assert_eq!(mode(&root.join("layerfs/containers")), 0o700);
    let err = stat_as_nobody(&upper_s).expect("nobody must not reach the upper dir");
    assert!(err.contains("Permission denied"), "{err}");

    // A store made before the rule: opened again, it is tightened.
    std::fs::set_permissions(root.join("layerfs"), std::fs::Permissions::from_mode(0o755))
        .unwrap();
    std::fs::set_permissions(
        root.join("layerfs/containers"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(stat_as_nobody(&upper_s).is_none(), "reachable before the open");
    env.ok(&["ps"]);
    assert_eq!(mode(&root.join("layerfs")), 0o700);
    let err = stat_as_nobody(&upper_s).expect("tightened by the open");
    assert!(err.contains("Permission denied"), "{err}");
    env.ok(&["rm", "c1"]);
}
