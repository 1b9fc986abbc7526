//! Rootless: an ordinary user (support/rootless.rs) mounts images, changes
//! a writable mount of Debian minbase from a chroot inside `layerfs
//! unshare`, and commits; root then sees exactly the owners and modes the
//! container saw, and the change commits to the same layer digest as the
//! same change made by root.

use crate::support::debian::{chroot, debian_layers};
use crate::support::rootless::{Home, User, user, user_without_subids};
use crate::support::{Env, Tar, is_mounted, wait_until};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The change, made in a chroot of the container's mount as its root. The
/// mtimes of everything it touched are then set to one instant, so that
/// two runs give the same layer.
const CHANGE: &str = r#"set -e
T0=$(date +%s)
echo hello > /etc/rootless-new
mkdir -p /srv/www
echo page > /srv/www/index.html
chown -R 33:33 /srv/www
cp /bin/true /usr/local/bin/suid-true
chown 0:33 /usr/local/bin/suid-true
chmod 4755 /usr/local/bin/suid-true
mkfifo /var/fifo
chmod 0640 /var/fifo
chmod 2775 /opt
rm -r /usr/share/doc/apt
rm /etc/debian_version
mv /etc/issue /etc/issue.moved
mv /usr/share/doc/bash /usr/share/doc/bash-moved
find / -xdev -newermt "@$T0" -exec touch -h -d @1700000000 {} +
"#;

fn top_layer(store: &Path, image: &str) -> layerfs::oci::Digest {
    let store = layerfs::store::Store::open(store).expect("open store");
    *store
        .resolve(image)
        .expect("resolve image")
        .layer_digests()
        .last()
        .expect("a layer")
}

/// (path, uid, gid) of every member of a stored layer.
fn owners(store: &Path, digest: &layerfs::oci::Digest) -> Vec<(String, u64, u64)> {
    let store = layerfs::store::Store::open(store).expect("open store");
    let f = store.open_blob(digest).expect("open the layer blob");
    let r = layerfs::layer::decompressed(f).expect("decompress the layer");
    let mut ar = tar::Archive::new(r);
    ar.entries()
        .expect("tar entries")
        .map(|e| {
            let e = e.expect("tar entry");
            let h = e.header();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                h.uid().expect("uid"),
                h.gid().expect("gid"),
            )
        })
        .collect()
}

fn mount_as_root(store: &Path, image: &str, at: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .arg("--root")
        .arg(store)
        .args(["mount", image])
        .arg(at)
        .output()
        .expect("run layerfs");
    assert!(
        out.status.success(),
        "mount {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(|| is_mounted(at), "the mount to appear");
}

fn umount_as_root(store: &Path, at: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .arg("--root")
        .arg(store)
        .arg("umount")
        .arg(at)
        .output()
        .expect("run layerfs");
    assert!(
        out.status.success(),
        "umount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rootless_read_only_mount_lists_the_image() {
    let Some(u) = user("rootless_read_only_mount_lists_the_image") else {
        return;
    };
    let home = u.home();
    let layer = Tar::new()
        .dir("etc", 0o755)
        .file("etc/motd", 0o644, b"hello\n")
        .owned("etc/shadow", 0o640, 0, 42, b"root:*:1::::::\n")
        .finish();
    let tar = home.file(u, "layer.tar", &layer);
    u.ok(
        &home,
        "$L import - small:1 && mkdir m n",
        Some(tar.as_path()),
    );
    // Outside a namespace: fusermount3; the user is the image's root.
    let out = u.ok(
        &home,
        "$L mount small:1 m && ls -n m/etc | tail -n +2 | awk '{print $1, $3, $4, $NF}'; cat m/etc/motd; $L umount m",
        None,
    );
    assert_eq!(
        out,
        format!(
            "-rw-r--r-- {uid} {gid} motd\n-rw-r----- {uid} 42 shadow\nhello\n",
            uid = u.uid,
            gid = u.gid
        )
    );
    // Inside `layerfs unshare`: the namespace's own ids.
    let out = u.ok(
        &home,
        "$L unshare sh -c '$L mount small:1 n && ls -n n/etc | tail -n +2 | awk \"{print \\$1, \\$3, \\$4, \\$NF}\"; $L umount n'",
        None,
    );
    assert_eq!(out, "-rw-r--r-- 0 0 motd\n-rw-r----- 0 42 shadow\n");
}

#[test]
fn rootless_writable_mount_outside_a_namespace_commits_as_the_containers_root() {
    let Some(u) =
        user("rootless_writable_mount_outside_a_namespace_commits_as_the_containers_root")
    else {
        return;
    };
    let home = u.home();
    let layer = Tar::new()
        .dir("etc", 0o755)
        .file("etc/motd", 0o644, b"hello\n")
        .file("etc/keep", 0o644, b"keep\n")
        .finish();
    let tar = home.file(u, "layer.tar", &layer);
    u.ok(&home, "$L import - small:1 && mkdir w", Some(tar.as_path()));
    // Through fusermount3, no namespace: the user is the container's root.
    let out = u.ok(
        &home,
        "$L mount --writable --name w small:1 w && echo new > w/etc/new && chmod 600 w/etc/new \
         && rm w/etc/motd && mkdir w/d && chmod 4755 w/etc/keep \
         && ls -n w/etc | tail -n +2 | awk '{print $1, $3, $4, $NF}'; $L umount w && $L commit w small:2",
        None,
    );
    let (uid, gid) = (u.uid, u.gid);
    assert_eq!(
        out.lines().take(2).collect::<Vec<_>>(),
        [
            format!("-rwsr-xr-x {uid} {gid} keep"),
            format!("-rw------- {uid} {gid} new"),
        ],
        "{out}"
    );
    let layer = top_layer(&home.store, "small:2");
    let mut got = owners(&home.store, &layer);
    got.sort();
    assert_eq!(
        got,
        [
            ("d/".to_string(), 0, 0),
            ("etc/".to_string(), 0, 0),
            ("etc/.wh.motd".to_string(), 0, 0),
            ("etc/keep".to_string(), 0, 0),
            ("etc/new".to_string(), 0, 0),
        ],
        "uid 0 in the container is 0 in the layer, never the host user"
    );
}

/// The user's change, committed as `rootless:1` in the user's store.
fn change_as_user(u: &User, home: &Home, base: &Path) {
    u.ok(home, "$L import - debian:base >/dev/null", Some(base));
    let script = home.file(u, "change.sh", CHANGE.as_bytes());
    let out = u.sh(
        home,
        &format!(
            "mkdir m && $L unshare sh -c '$L mount --writable --name c debian:base m && chroot m /bin/sh < {s}; rc=$?; $L umount m; exit $rc' && $L commit c rootless:1",
            s = script.display()
        ),
        None,
    );
    assert!(
        out.status.success(),
        "the change as {}: {}{}",
        u.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rootless_change_commits_the_owners_the_container_saw_and_roots_digest() {
    let test = "rootless_change_commits_the_owners_the_container_saw_and_roots_digest";
    let Some(u) = user(test) else { return };
    let Some(deb) = debian_layers(test) else {
        return;
    };
    let base = deb.gz()[0].clone();
    let home = u.home();
    change_as_user(u, &home, &base);

    // The same change by root, in root's own store.
    let env = Env::new();
    let mut import = env.cmd(&["import", "-", "debian:base"]);
    import.stdin(std::fs::File::open(&base).expect("open base"));
    assert!(import.output().expect("import").status.success());
    {
        let m = env.mount("debian:base", &["--writable", "--name", "c"]);
        let (ok, out, err) = chroot(&m.path, CHANGE);
        assert!(ok, "the change as root: {out}{err}");
        m.unmount();
    }
    env.ok(&["commit", "c", "rootful:1"]);

    let user_layer = top_layer(&home.store, "rootless:1");
    let root_layer = top_layer(&env.root(), "rootful:1");
    // Never the host uid or a subordinate id: only what the container set.
    for (path, uid, gid) in owners(&home.store, &user_layer) {
        assert!(
            [0, 33].contains(&uid) && [0, 33].contains(&gid),
            "{path} is {uid}:{gid} in the user's layer"
        );
    }
    assert_eq!(
        user_layer, root_layer,
        "the same change made by root and by a user gives one layer"
    );

    // As root, the user's image shows exactly what the container saw.
    let at = env.mkdir("user-image");
    mount_as_root(&home.store, "rootless:1", &at);
    let st = |rel: &str| std::fs::symlink_metadata(at.join(rel));
    let check = |rel: &str, uid: u32, gid: u32, mode: u32| {
        let m = st(rel).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (uid, gid, mode),
            "{rel}: owner and mode"
        );
        m
    };
    check("srv/www", 33, 33, 0o755);
    check("srv/www/index.html", 33, 33, 0o644);
    check("usr/local/bin/suid-true", 0, 33, 0o4755);
    assert!(
        check("var/fifo", 0, 0, 0o640).file_type().is_fifo(),
        "var/fifo is a fifo"
    );
    check("opt", 0, 0, 0o2775);
    check("etc/issue.moved", 0, 0, 0o644);
    assert!(st("usr/share/doc/bash-moved/copyright").is_ok());
    for gone in [
        "etc/issue",
        "etc/debian_version",
        "usr/share/doc/apt",
        "usr/share/doc/bash",
    ] {
        assert!(st(gone).is_err(), "{gone} was removed");
    }
    assert_eq!(
        std::fs::read(at.join("etc/rootless-new")).expect("read"),
        b"hello\n"
    );
    umount_as_root(&home.store, &at);
}

/// What runs as the user: in one `layerfs unshare`, the layer extracted
/// as the namespace's root, fuse-overlayfs over it, then a writable layerfs
/// mount of the same layer, pjdfstest in each.
const PJDFSTEST: &str = r#"set -e
export H="$PWD"
mkdir lower up wk fovl m secA secB
$L unshare sh -c '
set -e
tar -C lower -xf layer.tar
fuse-overlayfs -o lowerdir=$PWD/lower,upperdir=$PWD/up,workdir=$PWD/wk $PWD/fovl
(cd fovl/work && timeout 900 $H/pjdfstest -c $H/pjdfstest.toml -p $PWD -s $H/secA) > fovl.out 2>&1 || true
umount fovl
$L mount --writable --name posix posix:1 m
(cd m/work && timeout 900 $H/pjdfstest -c $H/pjdfstest.toml -p $PWD -s $H/secB) > lfs.out 2>&1 || true
cat m/work/lower-file
$L umount m
'
"#;

#[test]
fn rootless_pjdfstest_in_unshare_fails_nothing_fuse_overlayfs_passes() {
    use crate::posix::{detail, parse, side_by_side};
    let test = "rootless_pjdfstest_in_unshare_fails_nothing_fuse_overlayfs_passes";
    let Some(u) = user(test) else { return };
    let Some(pjd) = crate::support::external_tool("pjdfstest", test) else {
        return;
    };
    if !crate::support::have_tool("fuse-overlayfs", test) {
        return;
    }
    let home = u.home();
    let layer = Tar::new()
        .dir("work", 0o755)
        .dir("etc", 0o755)
        .file("etc/hostname", 0o644, b"posix\n")
        .file("work/lower-file", 0o644, b"from the layer\n")
        .finish();
    home.file(u, "layer.tar", &layer);
    home.file(u, "pjdfstest.toml", crate::posix::CONFIG.as_bytes());
    let bin = home.file(
        u,
        "pjdfstest",
        &std::fs::read(&pjd).expect("read pjdfstest"),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    u.ok(&home, "$L import layer.tar posix:1 >/dev/null", None);
    let out = u.ok(&home, PJDFSTEST, None);
    assert_eq!(out, "from the layer\n", "the suite ran in the mount");

    let read = |n: &str| std::fs::read_to_string(home.dir.path().join(n)).unwrap_or_default();
    let (fovl_out, lfs_out) = (read("fovl.out"), read("lfs.out"));
    let (want, got) = (parse(&fovl_out), parse(&lfs_out));
    for (what, o, text) in [
        ("fuse-overlayfs", &want, &fovl_out),
        ("layerfs", &got, &lfs_out),
    ] {
        assert!(
            o.len() > 300,
            "pjdfstest in {what} ran only {} cases:\n{text}",
            o.len()
        );
    }
    let (table, regressions) =
        side_by_side(("rootless fuse-overlayfs", &want), ("layerfs", &got), &[]);
    eprintln!("{table}");
    let why: Vec<String> = regressions.iter().map(|r| detail(&lfs_out, r)).collect();
    assert!(
        regressions.is_empty(),
        "rootless layerfs fails {} cases that rootless fuse-overlayfs passes:\n{}",
        regressions.len(),
        why.join("\n")
    );
}

#[test]
fn unshare_without_subordinate_ids_maps_the_user_alone_and_says_how_to_add_some() {
    let test = "unshare_without_subordinate_ids_maps_the_user_alone_and_says_how_to_add_some";
    let Some(u) = user_without_subids(test) else {
        return;
    };
    let home = u.home();
    let out = u.sh(
        &home,
        "$L unshare sh -c 'id -u; cat /proc/self/uid_map'",
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let map: Vec<&str> = stdout
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(stdout.lines().next(), Some("0"), "root of the namespace");
    assert_eq!(
        map,
        ["0", &u.uid.to_string(), "1"],
        "only the user's own id"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no subordinate ids") && stderr.contains("usermod --add-subuids"),
        "the note: {stderr}"
    );
    // The command's exit code comes back.
    let out = u.sh(&home, "$L unshare sh -c 'exit 7'", None);
    assert_eq!(out.status.code(), Some(7));
}
