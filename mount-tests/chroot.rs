//! A mounted Debian image used as people use one: the usual tools walk it,
//! and a chroot into it runs bash, dpkg, perl and the dynamic linker; a
//! setuid binary takes effect only when the mount is made with `--suid`.

use crate::support::debian::{ChrootBinds, chroot, debian_layers, debian3_env};
use crate::support::{Env, Overlay, Tar, can_mount, sh};
use std::path::{Path, PathBuf};

fn run(cmd: &str, dir: &Path) -> String {
    let line = cmd.replace("{}", &dir.display().to_string());
    let (ok, out, err) = sh(&line);
    assert!(ok, "{line}: {err}");
    assert!(err.is_empty(), "{line} complained: {err}");
    out
}

#[test]
fn everyday_tools_walk_a_mounted_debian_image() {
    const T: &str = "everyday_tools_walk_a_mounted_debian_image";
    let Some((env, deb)) = debian3_env(T) else {
        return;
    };
    let m = env.mount("debian:3layer", &[]);
    let ovl = Overlay::mount(&deb.lowerdirs(), &env.mkdir("overlay"), None);

    let ls = run("ls -laR {}", &m.path);
    assert!(ls.contains("gzip-hardlink"), "ls -laR misses entries");
    // ls prints '?' fields for an entry it cannot stat.
    assert!(!ls.contains("? ?"), "ls -laR could not stat some entries");
    for (cmd, what) in [
        ("cd {} && find . | wc -l", "entries"),
        (
            "cd {} && find . -printf '%y %m %U %G %p\\n' | LC_ALL=C sort | sha256sum",
            "find -printf of types, modes and owners",
        ),
        (
            // Directory sizes and link counts differ between filesystems.
            "cd {} && find . ! -type d -printf '%s %n %p\\n' | LC_ALL=C sort | sha256sum",
            "find -printf of sizes and link counts",
        ),
        (
            "cd {} && tar -cf - . | wc -c",
            "bytes of a tar of the whole tree",
        ),
    ] {
        let want = run(cmd, &ovl.path);
        let got = run(cmd, &m.path);
        assert_eq!(
            got.trim(),
            want.trim(),
            "{what}: layerfs vs kernel overlayfs"
        );
    }
    let tar_bytes: u64 = run("cd {} && tar -cf - . | wc -c", &m.path)
        .trim()
        .parse()
        .unwrap();
    assert!(tar_bytes > 150 << 20, "tar read only {tar_bytes} bytes");
    let du_kib: u64 = run("du -sk {}", &m.path)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(du_kib > 150 << 10, "du -s says {du_kib} KiB");
}

#[test]
fn a_chroot_of_a_mounted_debian_image_runs_its_programs() {
    const T: &str = "a_chroot_of_a_mounted_debian_image_runs_its_programs";
    let Some((env, _)) = debian3_env(T) else {
        return;
    };
    let m = env.mount("debian:3layer", &[]);
    let _binds = ChrootBinds::new(&m.path);

    let expect = |script: &str| -> String {
        let (ok, out, err) = chroot(&m.path, script);
        assert!(ok, "chroot {script}: {err}");
        out
    };
    assert_eq!(
        expect("/bin/bash -c 'echo hello from bash $BASH_VERSINFO'").trim(),
        "hello from bash 5"
    );
    let packages: usize = expect("dpkg -l | grep -c '^ii'").trim().parse().unwrap();
    assert!(packages > 50, "dpkg -l lists {packages} packages");
    assert_eq!(expect("perl -e 'print 6*7'"), "42");
    let ldd = expect("ldd /bin/ls");
    assert!(
        ldd.lines()
            .any(|l| l.contains("libc.so.6 => /lib/") || l.contains("libc.so.6 => /usr/lib/")),
        "ldd /bin/ls: {ldd}"
    );
    // Programs and files from the upper layers, and /proc through the bind.
    assert!(expect("/usr/bin/pinky").contains("re-created in layer3"));
    assert_eq!(expect("cat /etc/hostname"), "layer2-host\n");
    assert_eq!(
        expect("echo layerfs | gzip -c | /usr/local/bin/gzip-hardlink -dc"),
        "layerfs\n"
    );
    assert_eq!(expect("cat /proc/self/comm"), "cat\n");
    assert_eq!(expect("id -un"), "root\n");
}

#[test]
fn a_setuid_binary_takes_effect_only_with_suid() {
    const T: &str = "a_setuid_binary_takes_effect_only_with_suid";
    if !can_mount(T) {
        return;
    }
    let Some(deb) = debian_layers(T) else { return };
    let env = Env::new();
    let id = std::fs::read(deb.base_file("usr/bin/id")).unwrap();
    let suid_layer = Tar::new()
        .dir("usr", 0o755)
        .dir("usr/local", 0o755)
        .dir("usr/local/bin", 0o755)
        .file("usr/local/bin/suid-id", 0o4755, &id)
        .finish();
    let l4: PathBuf = env.dir.path().join("suid-layer.tar");
    std::fs::write(&l4, suid_layer).unwrap();
    let mut layers = deb.gz();
    layers.push(l4);
    env.image_files("debian:suid", &layers);

    let as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups /usr/local/bin/suid-id";
    for (flags, want_euid0) in [(&["--suid"][..], true), (&[][..], false)] {
        let m = env.mount("debian:suid", flags);
        let _binds = ChrootBinds::new(&m.path);
        let (ok, out, err) = chroot(&m.path, as_nobody);
        assert!(ok, "mount {flags:?}: {as_nobody}: {err}");
        assert!(
            out.starts_with("uid=65534(nobody) gid=65534(nogroup)"),
            "mount {flags:?}: not run as nobody: {out}"
        );
        assert_eq!(
            out.contains(" euid=0(root)"),
            want_euid0,
            "mount {flags:?}: {out}"
        );
    }
}
