//! layerfs as installed on a host: `scripts/install.sh` puts the binary,
//! completions, man pages and the mount helper in place; `mount -t
//! fuse.layerfs`, an fstab line and mount(8)'s call of the helper mount an
//! image, and a plain `umount` ends the daemon.

use crate::support::{
    Env, Tar, can_mount, have_tool, is_mounted, sh, unmount_or_detach, wait_until,
};
use std::path::{Path, PathBuf};

const BIN: &str = env!("CARGO_BIN_EXE_layerfs");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `scripts/install.sh` with the test's binary into `prefix`, the
/// mount helper into `sbin`.
fn install(prefix: &Path, sbin: &Path, destdir: Option<&Path>) {
    let mut cmd = std::process::Command::new(repo().join("scripts/install.sh"));
    cmd.env("PREFIX", prefix)
        .env("SBINDIR", sbin)
        .env("LAYERFS_BIN", BIN);
    if let Some(d) = destdir {
        cmd.env("DESTDIR", d);
    }
    let out = cmd.output().expect("run install.sh");
    assert!(
        out.status.success(),
        "install.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn install_puts_completions_man_pages_and_the_mount_helper_in_place() {
    const T: &str = "install_puts_completions_man_pages_and_the_mount_helper_in_place";
    if !have_tool("man", T) || !have_tool("bash", T) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("usr");
    let sbin = tmp.path().join("sbin");
    install(&prefix, &sbin, None);

    assert!(prefix.join("bin/layerfs").is_file());
    let helper = sbin.join("mount.fuse.layerfs");
    assert_eq!(
        std::fs::read_link(&helper).unwrap(),
        prefix.join("bin/layerfs")
    );

    let bash = prefix.join("share/bash-completion/completions/layerfs");
    let (ok, out, err) = sh(&format!(
        "bash -c '. {}; complete -p layerfs'",
        bash.display()
    ));
    assert!(ok, "{err}");
    assert!(out.trim_end().ends_with(" layerfs"), "complete -p: {out}");
    assert!(out.contains("-F _layerfs"), "complete -p: {out}");
    // The completion offers the commands.
    let (_, out, _) = sh(&format!(
        "bash -c '. {}; COMP_WORDS=(layerfs mou); COMP_CWORD=1; _layerfs layerfs mou layerfs; \
         printf \"%s\\n\" \"${{COMPREPLY[@]}}\"'",
        bash.display()
    ));
    assert!(
        out.lines().any(|l| l == "mount") && out.lines().any(|l| l == "mounts"),
        "{out}"
    );

    let zsh = std::fs::read_to_string(prefix.join("share/zsh/site-functions/_layerfs")).unwrap();
    assert!(
        zsh.starts_with("#compdef layerfs"),
        "{}",
        &zsh[..40.min(zsh.len())]
    );
    let fish = std::fs::read_to_string(prefix.join("share/fish/vendor_completions.d/layerfs.fish"))
        .unwrap();
    assert!(fish.contains("complete -c layerfs"), "fish completions");

    let man = prefix.join("share/man/man1");
    for page in [
        "layerfs.1",
        "layerfs-mount.1",
        "layerfs-run.1",
        "layerfs-pull.1",
    ] {
        assert!(man.join(page).is_file(), "{page} missing");
    }
    assert!(
        !man.join("layerfs-man-pages.1").exists(),
        "a hidden command got a page"
    );
    let (ok, out, err) = sh(&format!(
        "MANWIDTH=100 man -l {} 2>&1",
        man.join("layerfs-mount.1").display()
    ));
    assert!(ok, "man -l: {out}{err}");
    assert!(out.contains("layerfs-mount - Mount an image"), "{out}");
    assert!(out.contains("--writable"), "{out}");

    // DESTDIR stages the same tree; the helper still names the final path.
    let stage = tmp.path().join("stage");
    install(Path::new("/usr"), Path::new("/sbin"), Some(&stage));
    assert!(stage.join("usr/bin/layerfs").is_file());
    assert_eq!(
        std::fs::read_link(stage.join("sbin/mount.fuse.layerfs")).unwrap(),
        Path::new("/usr/bin/layerfs")
    );
}

/// A store with image `img:1` holding /etc/greeting.
fn greeting_env() -> Env {
    let env = Env::new();
    let layer = Tar::new()
        .dir("etc", 0o755)
        .file("etc/greeting", 0o644, b"hello\n")
        .finish();
    env.image("img:1", &[layer]);
    env
}

/// Runs the mount helper `helper` with `args`; it must succeed.
fn helper_mounts(helper: &Path, args: &[&str]) {
    let out = std::process::Command::new(helper)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unmounts what a test mounted outside the Mounted guard, should it fail
/// before it unmounts.
struct Unmounts<'a>(&'a Path);

impl Drop for Unmounts<'_> {
    fn drop(&mut self) {
        if is_mounted(self.0) {
            unmount_or_detach(self.0);
        }
    }
}

/// umount(8) of `mnt`, then its daemon must exit and its record go.
fn umount_ends_the_daemon(env: &Env, mnt: &Path) {
    let pid = env.daemon_pid(mnt);
    let (ok, _, err) = sh(&format!("umount {}", mnt.display()));
    assert!(ok, "umount: {err}");
    wait_until(
        || !Path::new(&format!("/proc/{pid}")).exists(),
        "the mount daemon to exit",
    );
    assert!(!is_mounted(mnt));
    assert!(
        env.ok(&["mounts"]).lines().count() <= 1,
        "a mount record stayed"
    );
}

#[test]
fn mount_helper_called_as_mount_calls_it() {
    const T: &str = "mount_helper_called_as_mount_calls_it";
    if !can_mount(T) {
        return;
    }
    let env = greeting_env();
    let sbin = env.mkdir("sbin");
    let helper = sbin.join("mount.fuse.layerfs");
    std::os::unix::fs::symlink(BIN, &helper).unwrap();
    let mnt = env.mkdir("mnt");
    let _guard = Unmounts(&mnt);
    let store = env.root();
    let opts = format!("rw,name=web,store={}", store.display());
    let m = mnt.to_str().unwrap();
    // As mount(8) runs /sbin/mount.fuse.layerfs: SOURCE DIR -n -o OPTS -t TYPE.
    helper_mounts(
        &helper,
        &["img:1", m, "-n", "-o", &opts, "-t", "fuse.layerfs"],
    );
    assert!(is_mounted(&mnt));
    // Listed with the type it was mounted as.
    let (_, listed, _) = sh(&format!("findmnt -n -o FSTYPE {m}"));
    assert_eq!(listed.trim(), "fuse.layerfs");
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/greeting")).unwrap(),
        "hello\n"
    );
    std::fs::write(mnt.join("etc/motd"), "kept\n").unwrap();
    umount_ends_the_daemon(&env, &mnt);

    // The same line again brings back container web, with its change.
    helper_mounts(&helper, &["img:1", m, "-o", &opts]);
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/motd")).unwrap(),
        "kept\n"
    );
    umount_ends_the_daemon(&env, &mnt);
    let ps = env.ok(&["ps"]);
    assert_eq!(
        ps.lines().filter(|l| l.starts_with("web ")).count(),
        1,
        "{ps}"
    );

    // Bad options: a usage error, nothing mounted.
    let out = std::process::Command::new(&helper)
        .args(["img:1", m, "-o", "ro,writable"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!is_mounted(&mnt));
}

/// `mount -t fuse.layerfs` and an fstab line, through mount(8) and
/// mount.fuse3, which runs `layerfs` from the standard PATH: a private
/// mount namespace puts our binary in /usr/local/sbin for the script only.
#[test]
fn mount_t_fuse_layerfs_and_an_fstab_line() {
    const T: &str = "mount_t_fuse_layerfs_and_an_fstab_line";
    if !can_mount(T) || !have_tool("mount.fuse3", T) || !have_tool("unshare", T) {
        return;
    }
    let env = greeting_env();
    let path_dir = env.mkdir("path");
    std::os::unix::fs::symlink(BIN, path_dir.join("layerfs")).unwrap();
    let mnt = env.mkdir("mnt");
    let fstab = env.dir.path().join("fstab");
    let store = env.root();
    std::fs::write(
        &fstab,
        format!(
            "# a line as a user writes it\n\
             img:1 {m} fuse.layerfs defaults,noauto,nofail,_netdev,x-systemd.automount,\
             name=app,store={s} 0 0\n",
            m = mnt.display(),
            s = store.display()
        ),
    )
    .unwrap();
    // Each mount: what is served, then the daemon's pid from `layerfs
    // mounts`, then umount(8) and a wait for that pid to end.
    let script = format!(
        r#"set -e
# A failed step leaves no daemon serving in this namespace.
trap 'umount {m} 2>/dev/null || true' EXIT
mount --bind {path} /usr/local/sbin
stop() {{
    pid=$({bin} --root {s} mounts | awk -v m={m} '$1 == m {{ print $4 }}')
    umount {m}
    n=0; while [ -d /proc/$pid ] && [ $n -lt 1000 ]; do sleep 0.01; n=$((n+1)); done
    [ -d /proc/$pid ] && echo "daemon $pid still running"
    grep -q " {m} " /proc/self/mountinfo && echo "still mounted"
    true
}}
mount -t fuse.layerfs img:1 {m} -o ro,noexec,store={s}
grep " {m} " /proc/self/mountinfo | grep -q " ro,.*noexec" && echo read-only noexec
cat {m}/etc/greeting
touch {m}/etc/x 2>/dev/null || echo refused
stop
mount --fstab {fstab} {m}
echo changed > {m}/etc/greeting
stop
mount --fstab {fstab} {m}
cat {m}/etc/greeting
stop
"#,
        path = path_dir.display(),
        bin = BIN,
        s = store.display(),
        m = mnt.display(),
        fstab = fstab.display(),
    );
    let (ok, out, err) = sh(&format!(
        "unshare -m --propagation private sh -c '{}'",
        script.replace('\'', r"'\''")
    ));
    assert!(ok, "{out}{err}");
    assert_eq!(
        out, "read-only noexec\nhello\nrefused\nchanged\n",
        "stderr: {err}"
    );
    let ps = env.ok(&["ps"]);
    assert_eq!(
        ps.lines().filter(|l| l.starts_with("app ")).count(),
        1,
        "{ps}"
    );
    assert!(
        env.ok(&["mounts"]).lines().count() <= 1,
        "a mount record stayed"
    );
}
