//! A real Debian image in three layers (support/debian.rs): layerfs must show
//! exactly the tree kernel overlayfs shows over the same layers extracted.

use crate::support::Overlay;
use crate::support::debian::debian3_env;
use crate::support::tree::{self, assert_same_tree};
use std::fs;
use std::os::unix::fs::MetadataExt;

/// The fields of `path`'s line in a listing: path, type, mode, owner, size,
/// content, xattrs, hardlink group, mtime.
fn row<'a>(listing: &'a str, path: &str) -> Option<Vec<&'a str>> {
    let prefix = format!("./{path}\t");
    listing
        .lines()
        .find(|l| l.starts_with(&prefix))
        .map(|l| l.split('\t').collect())
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_debian_image_in_three_layers_matches_kernel_overlayfs() {
    const T: &str = "a_debian_image_in_three_layers_matches_kernel_overlayfs";
    let Some((env, deb)) = debian3_env(T) else {
        return;
    };
    let m = env.mount("debian:3layer", &[]);
    let ovl = Overlay::mount(&deb.lowerdirs(), &env.mkdir("overlay"), None);

    // What the layers did, seen through layerfs (so that a reference broken
    // the same way cannot hide a bug).
    let p = |rel: &str| m.join(rel);
    assert_eq!(fs::read(p("etc/hostname")).unwrap(), b"layer2-host\n");
    assert!(
        fs::read_to_string(p("etc/passwd"))
            .unwrap()
            .ends_with("app:x:1000:1000:App user:/home/app:/bin/bash\n")
    );
    for gone in [
        "usr/bin/users",
        "usr/sbin/rmt",
        "opt/layer2/short-lived",
        "usr/share/zoneinfo/America/New_York",
    ] {
        assert!(
            fs::symlink_metadata(p(gone)).is_err(),
            "{gone} is whited out"
        );
    }
    assert!(
        fs::read_to_string(p("usr/bin/pinky"))
            .unwrap()
            .contains("re-created in layer3")
    );
    assert_eq!(names(&p("usr/share/zoneinfo/America")), ["README"]);
    assert_eq!(names(&p("etc/apt/apt.conf.d")), ["99layer2"]);
    assert_eq!(names(&p("usr/share/doc/bash")), ["README.layer2"]);
    assert!(
        fs::metadata(p("usr/share/zoneinfo/Arctic"))
            .unwrap()
            .is_file()
    );
    assert_eq!(names(&p("etc/issue.net")), ["README"]);
    let gz = fs::metadata(p("usr/bin/gzip")).unwrap();
    let hl = fs::metadata(p("usr/local/bin/gzip-hardlink")).unwrap();
    assert_eq!((gz.ino(), gz.nlink()), (hl.ino(), 2));
    assert_eq!(fs::metadata(p("data/big.bin")).unwrap().len(), 64 << 20);

    let want = tree::listing(&ovl.path);
    let got = tree::listing(&m.path);
    for (rel, field, value) in [
        ("etc/issue", 2, "0600"),
        ("etc/motd", 3, "0:4"),
        ("home/app", 2, "0700"),
        ("home/app", 3, "1000:1000"),
        ("opt/layer2/fifo", 1, "p"),
        ("opt/layer2/fifo", 2, "0620"),
        (
            "opt/layer2/cap-tool",
            6,
            "security.capability=0100000200200000000000000000000000000000",
        ),
        (
            "opt/layer2/tagged",
            6,
            "user.layerfs.note=6c617965722074776f",
        ),
        ("usr/local/bin/gzip-hardlink", 7, "./usr/bin/gzip"),
        ("usr/share/zoneinfo/Arctic", 1, "f"),
    ] {
        let r = row(&got, rel).unwrap_or_else(|| panic!("{rel} missing from the mount"));
        assert_eq!(r[field], value, "{rel}: {r:?}");
    }
    let entries = want.lines().count();
    assert!(entries > 3000, "the reference has only {entries} entries");

    assert_same_tree(
        &want,
        &got,
        "layerfs and kernel overlayfs differ ('-' overlayfs only, '+' layerfs only)",
    );
}
