//! Other tools read what commit writes: umoci unpacks a committed image to
//! the tree its mount shows, and skopeo copies it through a registry and
//! back with its manifest digest unchanged (then `load` and a mount show
//! the same tree again).

use crate::support::debian::debian3_env;
use crate::support::tree::{self, assert_same_tree};
use crate::support::writable::Registry;
use crate::support::{Env, have_tool};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// The Debian image of `debian3_env` committed with every kind of change:
/// edits, chmod, chown, an xattr, renames of a base directory and file, hard
/// links to base files, deletes (file, tree) and a directory made again.
fn committed_debian(env: &Env, tag: &str) -> String {
    let m = env.mount_writable("debian:3layer", "interop");
    let p = |rel: &str| m.join(rel);
    fs::write(p("etc/hostname"), b"interop\n").unwrap();
    fs::set_permissions(p("etc/debian_version"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(p("etc/host.conf"), Some(1000), Some(100)).unwrap();
    xattr::set(p("etc/hostname"), "user.origin", b"interop\x00test").unwrap();
    fs::rename(p("usr/share/doc/bash"), p("usr/share/doc/bash2")).unwrap();
    fs::rename(p("etc/motd"), p("etc/motd.moved")).unwrap();
    fs::hard_link(p("usr/bin/gzip"), p("usr/bin/gzip-again")).unwrap();
    fs::hard_link(p("usr/bin/cat"), p("root/cat-link")).unwrap();
    fs::remove_file(p("etc/shells")).unwrap();
    fs::remove_dir_all(p("usr/share/locale")).unwrap();
    fs::remove_dir_all(p("usr/share/doc/tar")).unwrap();
    fs::create_dir(p("usr/share/doc/tar")).unwrap();
    fs::write(p("usr/share/doc/tar/NEW"), b"new\n").unwrap();
    let name = format!("debian:{tag}");
    env.ok(&["commit", m.path.to_str().unwrap(), &name, "-m", "interop"]);
    name
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn umoci_unpacks_a_committed_image_to_the_tree_its_mount_shows() {
    const T: &str = "umoci_unpacks_a_committed_image_to_the_tree_its_mount_shows";
    if !have_tool("umoci", T) {
        return;
    }
    let Some((env, _)) = debian3_env(T) else {
        return;
    };
    let image = committed_debian(&env, "umoci");
    let m = env.mount(&image, &[]);
    let want = tree::listing(&m.path);

    let archive = env.dir.path().join("image.tar");
    env.ok(&[
        "save",
        &image,
        "-o",
        archive.to_str().unwrap(),
        "--format",
        "oci-archive",
    ]);
    let layout = env.mkdir("layout");
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout));
    let bundle = env.dir.path().join("bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{image}", layout.display()))
        .arg(&bundle));
    // Nothing is left out: umoci (as root) restores owners, modes, xattrs,
    // hard links, devices and fifos, and the listing compares mtimes of
    // non-directories only, in whole seconds (what a layer stores).
    assert_same_tree(
        &want,
        &tree::listing(&bundle.join("rootfs")),
        "umoci's rootfs differs from the layerfs mount ('-' mount, '+' umoci's rootfs)",
    );
}

#[test]
fn skopeo_copies_a_committed_image_through_a_registry_with_its_digest() {
    const T: &str = "skopeo_copies_a_committed_image_through_a_registry_with_its_digest";
    if !have_tool("skopeo", T) || !have_tool("docker-registry", T) {
        return;
    }
    let Some((env, _)) = debian3_env(T) else {
        return;
    };
    let image = committed_debian(&env, "skopeo");
    let digest = env
        .store
        .resolve(&image)
        .unwrap()
        .manifest_digest
        .to_string();
    let registry = Registry::start(&env.mkdir("registry"));
    let remote = format!("docker://{}/layerfs/interop:1", registry.addr);
    run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &format!("oci:{}:{image}", env.root().display()),
        &remote,
    ]));
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &remote]));
    let pushed = {
        use sha2::Digest;
        let h = sha2::Sha256::digest(raw.as_bytes());
        format!(
            "sha256:{}",
            h.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    };
    assert_eq!(pushed, digest, "the registry holds another manifest");
    let back = env.dir.path().join("back");
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &remote,
        &format!("oci:{}:copied:back", back.display()),
    ]));
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"].as_str(),
        Some(digest.as_str()),
        "the copy back has another manifest digest"
    );

    // Loaded into another store, it mounts to the same tree.
    let m = env.mount(&image, &[]);
    let want = tree::listing(&m.path);
    let other = Env::new();
    other.ok(&["load", "-i", back.to_str().unwrap()]);
    let loaded = other.mount("copied:back", &[]);
    assert_same_tree(
        &want,
        &tree::listing(&loaded.path),
        "the image copied back differs from the layerfs mount ('-' mount, '+' the copy)",
    );
}
