//! The command line on a store, no mount needed: a real rootfs imported and
//! exported unchanged, other OCI tools reading the store as it stands,
//! bad input refused in one line with nothing left behind, and kill -9 of
//! an import at random moments.

use crate::support::debian::debian_layers;
use crate::support::writable::Tmpfs;
use crate::support::{Env, Noise, Tar, gzip, have_tool, sh};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;
use std::time::Duration;

/// Every member of a tar as "type mode uid:gid size content mtime", by path,
/// with hard links resolved to their target's content so two tars that link
/// different names of one file compare equal.
fn tar_listing(bytes: &[u8]) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut contents: BTreeMap<Vec<u8>, String> = BTreeMap::new();
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path: Vec<u8> = {
            let p = e.path_bytes().to_vec();
            let p = p.strip_prefix(b"./").map(<[u8]>::to_vec).unwrap_or(p);
            p.strip_suffix(b"/").map(<[u8]>::to_vec).unwrap_or(p)
        };
        if path.is_empty() || path == b"." {
            continue;
        }
        let h = e.header().clone();
        let kind = h.entry_type();
        let (t, content) = match kind {
            tar::EntryType::Regular => {
                let mut d = Vec::new();
                e.read_to_end(&mut d).unwrap();
                let hash: String = Sha256::digest(&d)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let c = format!("{} {hash}", d.len());
                contents.insert(path.clone(), c.clone());
                ("f", c)
            }
            tar::EntryType::Link => {
                let target = e.link_name_bytes().unwrap().to_vec();
                let target = target
                    .strip_prefix(b"./")
                    .map(<[u8]>::to_vec)
                    .unwrap_or(target);
                (
                    "f",
                    contents
                        .get(&target)
                        .cloned()
                        .unwrap_or_else(|| "missing link target".into()),
                )
            }
            tar::EntryType::Symlink => (
                "l",
                String::from_utf8_lossy(&e.link_name_bytes().unwrap()).into_owned(),
            ),
            tar::EntryType::Directory => ("d", String::new()),
            other => ("?", format!("{other:?}")),
        };
        let mtime = if t == "d" { 0 } else { h.mtime().unwrap() };
        out.insert(
            path,
            format!(
                "{t} {:o} {}:{} {content} {mtime}",
                h.mode().unwrap() & 0o7777,
                h.uid().unwrap(),
                h.gid().unwrap()
            ),
        );
    }
    out
}

#[test]
fn a_debian_rootfs_imports_and_exports_unchanged() {
    let Some(deb) = debian_layers("a_debian_rootfs_imports_and_exports_unchanged") else {
        return;
    };
    let env = Env::new();
    let tarball = deb.dir.join("layer1.tar.gz");
    let out = env.ok(&[
        "import",
        tarball.to_str().unwrap(),
        "debian:12",
        "-m",
        "debootstrap",
    ]);
    assert!(out.trim().starts_with("sha256:"), "{out}");
    let exported = env.dir.path().join("export.tar");
    env.ok(&["export", "debian:12", "-o", exported.to_str().unwrap()]);
    let want = tar_listing(&std::fs::read(deb.dir.join("layer1.tar")).unwrap());
    let got = tar_listing(&std::fs::read(&exported).unwrap());
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .take(10)
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, v)| want.get(*k) != Some(v))
        .take(10)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "differs:\n-{missing:?}\n+{extra:?}"
    );
    assert!(want.len() > 5000, "a whole rootfs: {} entries", want.len());
    let fsck = env.ok(&["fsck"]);
    assert!(fsck.contains("checked"), "{fsck}");
}

#[test]
fn skopeo_and_umoci_read_the_store_as_it_stands() {
    if !have_tool("skopeo", "skopeo_and_umoci_read_the_store_as_it_stands")
        || !have_tool("umoci", "skopeo_and_umoci_read_the_store_as_it_stands")
    {
        return;
    }
    let env = Env::new();
    let layer = Tar::new()
        .dir("etc", 0o755)
        .file("etc/hostname", 0o644, b"umoci\n")
        .symlink("bin", "usr/bin")
        .finish();
    let tarball = env.dir.path().join("rootfs.tar.gz");
    std::fs::write(&tarball, gzip(&layer)).unwrap();
    env.ok(&["import", tarball.to_str().unwrap(), "alpine:3.20"]);
    let root = env.root();
    let (ok, out, err) = sh(&format!(
        "skopeo inspect oci:{}:alpine:3.20",
        root.display()
    ));
    assert!(ok, "skopeo inspect: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(1), "{out}");
    let bundle = env.dir.path().join("bundle");
    let (ok, _, err) = sh(&format!(
        "umoci unpack --image {}:alpine:3.20 {}",
        root.display(),
        bundle.display()
    ));
    assert!(ok, "umoci unpack: {err}");
    assert_eq!(
        std::fs::read(bundle.join("rootfs/etc/hostname")).unwrap(),
        b"umoci\n"
    );
    assert_eq!(
        std::fs::read_link(bundle.join("rootfs/bin"))
            .unwrap()
            .as_os_str()
            .as_bytes(),
        b"usr/bin"
    );
}

#[test]
fn bad_input_fails_in_one_line_and_leaves_nothing() {
    let env = Env::new();
    let good = Tar::new()
        .file("etc/os-release", 0o644, &Noise::bytes(1, 200_000))
        .finish();
    let gz = gzip(&good);
    let mut corrupt = gz.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid..mid + 32].iter_mut().for_each(|b| *b ^= 0xa5);
    let mut bad_sum = good.clone();
    bad_sum[3] ^= 1;
    let dotdot = Tar::new()
        .raw(b"../escape", tar::EntryType::Regular, b"")
        .finish();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated.tar.gz", gz[..gz.len() / 2].to_vec(), "truncated"),
        ("corrupt.tar.gz", corrupt, "corrupt gzip"),
        ("checksum.tar", bad_sum, "checksum"),
        ("dotdot.tar", dotdot, "'..'"),
        ("empty.tar", Vec::new(), "empty file"),
    ];
    let before = env.ok(&["images", "--format", "json"]);
    for (name, bytes, want) in cases {
        let path = env.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = env.run(&["import", path.to_str().unwrap(), "bad:1"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(want) && err.contains(name), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: one line: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    assert_eq!(
        env.ok(&["images", "--format", "json"]),
        before,
        "no image was added"
    );
    assert_eq!(
        std::fs::read_dir(env.root().join("layerfs/tmp"))
            .unwrap()
            .count(),
        0,
        "no temp file left"
    );
    assert!(
        env.store.list_blobs().unwrap().is_empty(),
        "no blob was stored"
    );
    let out = env.run(&["inspect", "no-such:image"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such image"));
    let out = env.run(&["import", "/no/such/file.tar", "x:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.tar"));
    let out = env.run(&["images", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn a_non_utf8_name_is_kept_as_bytes() {
    let env = Env::new();
    let latin1 = Tar::new()
        .raw(b"caf\xe9.txt", tar::EntryType::Regular, b"abc")
        .finish();
    let path = env.dir.path().join("latin1.tar");
    std::fs::write(&path, latin1).unwrap();
    env.ok(&["import", path.to_str().unwrap(), "latin1:1"]);
    let exported = env.dir.path().join("out.tar");
    env.ok(&["export", "latin1:1", "-o", exported.to_str().unwrap()]);
    let listing = tar_listing(&std::fs::read(&exported).unwrap());
    assert!(
        listing.contains_key(&b"caf\xe9.txt"[..]),
        "{:?}",
        listing.keys().collect::<Vec<_>>()
    );
}

#[test]
fn a_full_disk_fails_cleanly() {
    if !crate::support::can_mount("a_full_disk_fails_cleanly") {
        return;
    }
    let scratch = tempfile::Builder::new()
        .prefix("layerfs-tmpfs-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let tmpfs = Tmpfs::mount(&scratch.path().join("small"), "4m");
    let env = Env::within(&tmpfs.path);
    let big = scratch.path().join("big.tar");
    std::fs::write(&big, Tar::new().big("big", 8 << 20, 3).finish()).unwrap();
    let out = env.run(&["import", big.to_str().unwrap(), "big:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(
        std::fs::read_dir(env.root().join("layerfs/tmp"))
            .unwrap()
            .count(),
        0,
        "no temp file left"
    );
    assert_eq!(
        std::fs::read_dir(env.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0,
        "no blob"
    );
}

#[test]
fn kill_9_of_import_at_random_moments_loses_nothing() {
    let env = Env::new();
    // An image imported before the kills, which must stay whole.
    let keep = Tar::new().file("etc/keep", 0o644, b"kept").finish();
    let keep_path = env.dir.path().join("keep.tar");
    std::fs::write(&keep_path, &keep).unwrap();
    env.ok(&["import", keep_path.to_str().unwrap(), "keep:1"]);
    let keep_id = env.ok(&["images", "-q", "--no-trunc"]);
    let big = env.dir.path().join("big.tar.gz");
    std::fs::write(&big, gzip(&Tar::new().big("data", 96 << 20, 9).finish())).unwrap();
    let mut seed = 12345u64;
    for round in 0..6 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(20 + (seed >> 33) % 700);
        let mut child = env
            .cmd(&["import", big.to_str().unwrap(), &format!("big:{round}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
    }
    let fsck = env.run(&["fsck"]);
    assert!(
        fsck.status.success(),
        "fsck after kills: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let images = env.ok(&["images", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&images).unwrap();
    // Every listed image is whole (fsck checked its blobs); the first is untouched.
    assert!(images.contains(keep_id.trim()), "{images}");
    for img in v.as_array().unwrap() {
        let name = img["Names"][0].as_str().unwrap();
        env.ok(&[
            "export",
            name,
            "-o",
            env.dir.path().join("x.tar").to_str().unwrap(),
        ]);
    }
    env.ok(&["gc"]);
    assert_eq!(
        std::fs::read_dir(env.root().join("layerfs/tmp"))
            .unwrap()
            .count(),
        0,
        "gc removed the temp files"
    );
    // A later import of the same file works.
    env.ok(&["import", big.to_str().unwrap(), "big:after"]);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let env = Env::new();
    for i in 0..40 {
        let layer = Tar::new().file(&format!("f{i}"), 0o644, b"x").finish();
        let path = env.dir.path().join(format!("l{i}.tar"));
        std::fs::write(&path, layer).unwrap();
        env.ok(&["import", path.to_str().unwrap(), &format!("img:{i}")]);
    }
    let bin = env!("CARGO_BIN_EXE_layerfs");
    let (_, out, err) = sh(&format!(
        "{bin} --root {} images --format json | head -c 10",
        env.root().display()
    ));
    assert_eq!(out.len(), 10);
    assert!(!err.contains("panicked"), "{err}");
    let out = env.run(&["images", "--format", "{{.Xml}}"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a template naming no field fails as Docker's does: {err}"
    );
    assert!(err.contains("can't evaluate field Xml"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
