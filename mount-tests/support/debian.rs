//! The Debian image of the acceptance tests: a real bookworm minbase rootfs
//! (debootstrap, run once) made into three OCI layers with edits, whiteouts,
//! opaque dirs, type changes and hard links by `debian-layers.sh`, all cached
//! under /var/tmp/layerfs-test-cache; plus a chroot's /proc and /dev,
//! mounted beside layerfs.
//!
//! Cache layout (LAYERFS_TEST_CACHE overrides the root):
//!   debian-rootfs-<ROOTFS_VERSION>/            debootstrap output, never edited
//!   debian-layers-<LAYERS_VERSION>-<script hash>/
//!       layer{1,2,3}.tar, layer{1,2,3}.tar.gz  the OCI layers
//!       ovl/l{1,2,3}/                          overlayfs lowerdirs of the same tars
//!   debian-lazy-<LAZY_VERSION>-<script hash>/  the ~150 MB image of the lazy
//!       layer{1,2,3}.tar, layer{1,2,3}.tar.gz  proof (debian-lazy-layers.sh)
//! Each is built beside its final name and renamed into place, so a cache
//! directory is whole or absent; a file lock keeps two test processes from
//! building at once.

use super::{Env, can_mount, have_tool, unmount_or_detach};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Bump when the debootstrap command changes.
const ROOTFS_VERSION: &str = "bookworm-minbase-1";
/// Bump when the layer recipe changes (its hash is in the key as well, so an
/// edit that forgets the bump still rebuilds).
const LAYERS_VERSION: &str = "1";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mount-tests/debian-layers.sh");
const SCRIPT_TEXT: &str = include_str!("../debian-layers.sh");
/// Bump when the lazy image's recipe changes (its hash is in the key too).
const LAZY_VERSION: &str = "1";
const LAZY_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/mount-tests/debian-lazy-layers.sh"
);
const LAZY_TEXT: &str = include_str!("../debian-lazy-layers.sh");
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

pub struct DebianLayers {
    pub dir: PathBuf,
}

impl DebianLayers {
    /// The gzip layers, bottom first, as an image lists them.
    pub fn gz(&self) -> Vec<PathBuf> {
        (1..=3)
            .map(|i| self.dir.join(format!("layer{i}.tar.gz")))
            .collect()
    }

    /// The overlayfs lowerdirs, top first, as `lowerdir=` lists them.
    pub fn lowerdirs(&self) -> Vec<PathBuf> {
        (1..=3)
            .rev()
            .map(|i| self.dir.join(format!("ovl/l{i}")))
            .collect()
    }

    /// A file of the base layer (layer 1) on the host.
    pub fn base_file(&self, rel: &str) -> PathBuf {
        self.dir.join("ovl/l1").join(rel)
    }
}

/// The test cache: LAYERFS_TEST_CACHE, else /var/tmp/layerfs-test-cache.
pub fn cache_root() -> PathBuf {
    std::env::var_os("LAYERFS_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/layerfs-test-cache"))
}

/// The cached Debian layers, built on first use (minutes: a debootstrap
/// download). None (after a loud skip) when debootstrap or setfattr is
/// missing; under LAYERFS_CI=1 that fails the test instead.
pub fn debian_layers(test: &str) -> Option<&'static DebianLayers> {
    for tool in ["debootstrap", "setfattr", "mknod"] {
        if !have_tool(tool, test) {
            return None;
        }
    }
    static BUILT: OnceLock<DebianLayers> = OnceLock::new();
    Some(BUILT.get_or_init(|| build("debian-layers", LAYERS_VERSION, SCRIPT, SCRIPT_TEXT)))
}

/// A store holding the Debian layers as image "debian:3layer", and the
/// layers; None after a loud skip when the machine cannot mount or the
/// layers cannot be built.
pub fn debian3_env(test: &str) -> Option<(Env, &'static DebianLayers)> {
    env_of(test, "debian:3layer", debian_layers)
}

fn env_of(
    test: &str,
    image: &str,
    layers: fn(&str) -> Option<&'static DebianLayers>,
) -> Option<(Env, &'static DebianLayers)> {
    if !can_mount(test) {
        return None;
    }
    let deb = layers(test)?;
    let env = Env::new();
    env.image_files(image, &deb.gz());
    Some((env, deb))
}

/// The ~150 MB (compressed) image of the lazy-image proof and bench-lazy.sh:
/// the minbase rootfs, then python3 and perl, then gcc, make and libc6-dev,
/// each layer what apt-get left in an overlayfs upper dir
/// (`debian-lazy-layers.sh`; cached beside the others as
/// `debian-lazy-<LAZY_VERSION>-<script hash>/layer{1,2,3}.tar{,.gz}`, no `ovl/`).
/// Built on first use: minutes, apt-get in a chroot fetches ~60 MB of packages.
pub fn debian_lazy_layers(test: &str) -> Option<&'static DebianLayers> {
    for tool in ["debootstrap", "getfattr", "chroot"] {
        if !have_tool(tool, test) {
            return None;
        }
    }
    static BUILT: OnceLock<DebianLayers> = OnceLock::new();
    Some(BUILT.get_or_init(|| build("debian-lazy", LAZY_VERSION, LAZY_SCRIPT, LAZY_TEXT)))
}

/// A store holding the lazy-proof layers as image "debian:lazy".
pub fn debian_lazy_env(test: &str) -> Option<(Env, &'static DebianLayers)> {
    env_of(test, "debian:lazy", debian_lazy_layers)
}

/// One recipe's layers of the cached rootfs, made (under the cache's lock)
/// when missing.
fn build(prefix: &str, version: &str, script: &str, text: &str) -> DebianLayers {
    let root = cache_root();
    let _lock = lock(&root);
    let rootfs = rootfs(&root);
    DebianLayers {
        dir: layers(&root, &rootfs, prefix, version, script, text),
    }
}

/// The test cache's lock, held while anything in it is built.
fn lock(root: &Path) -> nix::fcntl::Flock<std::fs::File> {
    std::fs::create_dir_all(root).expect("create the test cache dir");
    let lock_file = std::fs::File::create(root.join("debian.lock")).expect("lock file");
    nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the test cache")
}

/// The debootstrap rootfs, made once.
fn rootfs(root: &Path) -> PathBuf {
    let rootfs = root.join(format!("debian-rootfs-{ROOTFS_VERSION}"));
    if !rootfs.is_dir() {
        let tmp = root.join(format!("debian-rootfs-{ROOTFS_VERSION}.tmp"));
        remove_all(&tmp);
        let mirror =
            std::env::var("LAYERFS_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.into());
        let log = root.join(format!("debian-rootfs-{ROOTFS_VERSION}.log"));
        eprintln!(
            "debootstrap --variant=minbase bookworm {} {mirror} (once; log in {})",
            tmp.display(),
            log.display()
        );
        let status = Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&tmp)
            .arg(&mirror)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(
                std::fs::File::options()
                    .append(true)
                    .open(&log)
                    .expect("log"),
            )
            .status()
            .expect("run debootstrap");
        assert!(
            status.success(),
            "debootstrap failed ({status}); the end of {}:\n{}",
            log.display(),
            tail(&log, 15)
        );
        std::fs::rename(&tmp, &rootfs).expect("rename the rootfs into place");
    }
    rootfs
}

/// The layers `script` makes of `rootfs`, cached as `<prefix>-<version>-<hash>`.
fn layers(
    root: &Path,
    rootfs: &Path,
    prefix: &str,
    version: &str,
    script: &str,
    text: &str,
) -> PathBuf {
    let key = format!("{prefix}-{version}-{}", short_hash(text));
    let dir = root.join(&key);
    if !dir.is_dir() {
        // Older recipes' layers are dead weight (hundreds of MB each).
        for e in std::fs::read_dir(root)
            .expect("read the test cache")
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{prefix}-")) && name != key {
                remove_all(&e.path());
            }
        }
        let tmp = root.join(format!("{key}.tmp"));
        remove_all(&tmp);
        eprintln!("building the Debian test layers in {}", dir.display());
        let out = Command::new("bash")
            .arg(script)
            .arg(rootfs)
            .arg(&tmp)
            .stdin(Stdio::null())
            .output()
            .expect("run the layer script");
        assert!(
            out.status.success(),
            "{script} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, &dir).expect("rename the layers into place");
    }
    dir
}

fn remove_all(p: &Path) {
    if p.exists() {
        std::fs::remove_dir_all(p).unwrap_or_else(|e| panic!("remove {}: {e}", p.display()));
    }
}

fn short_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn tail(p: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// /proc and /dev of the host bind-mounted into a chroot, as chroot users
/// do (an image's /dev is empty); unmounted on drop, before the image is.
pub struct ChrootBinds {
    mounted: Vec<PathBuf>,
}

impl ChrootBinds {
    pub fn new(root: &Path) -> ChrootBinds {
        let mut binds = ChrootBinds {
            mounted: Vec::new(),
        };
        for what in ["proc", "dev"] {
            let target = root.join(what);
            nix::mount::mount(
                Some(Path::new("/").join(what).as_path()),
                &target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .unwrap_or_else(|e| panic!("bind /{what} on {}: {e}", target.display()));
            binds.mounted.push(target);
        }
        binds
    }
}

impl Drop for ChrootBinds {
    fn drop(&mut self) {
        for p in self.mounted.iter().rev() {
            unmount_or_detach(p);
        }
    }
}

/// Runs `/bin/sh -c script` chrooted into `root` with a clean environment;
/// returns (status ok, stdout, stderr).
pub fn chroot(root: &Path, script: &str) -> (bool, String, String) {
    let out = Command::new("chroot")
        .arg(root)
        .args(["/bin/sh", "-c", script])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C")
        .stdin(Stdio::null())
        .output()
        .expect("run chroot");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
