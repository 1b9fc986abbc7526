//! What mount tests share: a throwaway store driven through the `layerfs`
//! binary, a mount guard that waits for the mount and unmounts on drop, a
//! kernel overlayfs to compare with, images built in code, and a tree
//! listing in treelist.py's format.

pub mod containers;
pub mod debian;
pub mod debs;
pub mod rootless;
pub mod tree;
pub mod writable;

// Shared with the library's tests (src/testutil is #[cfg(test)], so out of
// reach of this crate): one copy of the skip rule and of gzip/zstd.
#[path = "../../src/testutil/shared.rs"]
mod shared;
pub use shared::{
    Containerd, external_tool, gzip, have_tool, self_signed, skip, stub_credential_helper, zstd,
};

use layerfs::image::{layer_descriptor, new_config, write_image};
use layerfs::layer::{LayerInfo, ingest};
use layerfs::oci::Reference;
use layerfs::store::Store;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Whether this machine can mount: root and /dev/fuse; else `skip`.
pub fn can_mount(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let fuse = Path::new("/dev/fuse").exists();
    if root && fuse {
        return true;
    }
    let why = if !root {
        "not root (mount tests need root and /dev/fuse)"
    } else {
        "no /dev/fuse"
    };
    skip(test, why, true);
    false
}

/// A temporary store and the `layerfs` binary pointed at it.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: Store,
}

impl Env {
    pub fn new() -> Env {
        Env::within(Path::new("/var/tmp"))
    }

    /// A temporary store inside `parent` (a tmpfs of limited size, say).
    pub fn within(parent: &Path) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("layerfs-test-")
            .tempdir_in(parent)
            .expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("store");
        Env { dir, store }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A fresh empty directory inside the test's temp dir.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_layerfs"));
        c.arg("--root").arg(self.root()).args(args);
        c
    }

    /// Runs `layerfs ARGS`; returns its output whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run layerfs")
    }

    /// Runs `layerfs ARGS` and fails the test unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "layerfs {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stores an image of `layers` (tar bytes, any compression) as `name`.
    pub fn image(&self, name: &str, layers: &[Vec<u8>]) -> Vec<LayerInfo> {
        let infos: Vec<LayerInfo> = layers
            .iter()
            .map(|l| ingest(&self.store, &l[..], None).expect("ingest"))
            .collect();
        self.tag_layers(name, infos)
    }

    /// Stores an image of the layer files at `paths` (streamed, not read
    /// into memory: real layers are hundreds of MB) as `name`.
    pub fn image_files(&self, name: &str, paths: &[PathBuf]) -> Vec<LayerInfo> {
        let infos: Vec<LayerInfo> = paths
            .iter()
            .map(|p| {
                let f =
                    std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
                ingest(
                    &self.store,
                    std::io::BufReader::with_capacity(1 << 20, f),
                    None,
                )
                .unwrap_or_else(|e| panic!("ingest {}: {e}", p.display()))
            })
            .collect();
        self.tag_layers(name, infos)
    }

    fn tag_layers(&self, name: &str, infos: Vec<LayerInfo>) -> Vec<LayerInfo> {
        let mut config = new_config();
        config.rootfs.diff_ids = infos.iter().map(|i| i.diff_id).collect();
        let descs: Vec<_> = infos.iter().map(layer_descriptor).collect();
        write_image(
            &self.store,
            &config,
            &descs,
            Some(&Reference::parse(name).expect("name")),
        )
        .expect("write image");
        infos
    }

    /// Mounts `image` (extra `layerfs mount` flags in `flags`) on a new dir.
    pub fn mount(&self, image: &str, flags: &[&str]) -> Mounted<'_> {
        let mut args = vec!["mount"];
        args.extend_from_slice(flags);
        args.push(image);
        self.mount_with(&args)
    }

    /// The pid of the daemon serving `mountpoint`.
    pub fn daemon_pid(&self, mountpoint: &Path) -> u32 {
        let canon = mountpoint.canonicalize().expect("canonical mountpoint");
        layerfs::mount::records::find(&self.store, &canon)
            .expect("mount records")
            .unwrap_or_else(|| panic!("no mount record for {}", canon.display()))
            .pid
    }

    /// Runs `layerfs ARGS DIR` on a new directory and waits for the mount.
    fn mount_with(&self, args: &[&str]) -> Mounted<'_> {
        let mnt = self.mkdir(&format!("mnt-{}", rand_suffix()));
        let mut args = args.to_vec();
        args.push(mnt.to_str().expect("utf-8 path"));
        self.ok(&args);
        wait_until(|| is_mounted(&mnt), "the mount to appear");
        Mounted {
            env: self,
            path: mnt,
        }
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A mounted image; unmounted on drop (lazily if a test left it busy).
pub struct Mounted<'a> {
    env: &'a Env,
    pub path: PathBuf,
}

impl Mounted<'_> {
    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    pub fn unmount(&self) {
        let out = self
            .env
            .run(&["umount", self.path.to_str().expect("utf-8")]);
        assert!(
            out.status.success(),
            "umount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!is_mounted(&self.path), "still mounted after umount");
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            let _ = self.env.run(&["umount", self.path.to_str().unwrap_or("")]);
        }
        if is_mounted(&self.path) {
            let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Unmounts `p`, lazily when it is busy.
pub fn unmount_or_detach(p: &Path) {
    use nix::mount::{MntFlags, umount2};
    if umount2(p, MntFlags::empty()).is_err() {
        let _ = umount2(p, MntFlags::MNT_DETACH);
    }
}

/// A kernel overlayfs of `lowers` (top first) on the empty directory `at`;
/// unmounted on drop.
pub struct Overlay {
    pub path: PathBuf,
}

impl Overlay {
    /// Read-only, or writable with its upper and work dirs made in
    /// `rw_scratch`.
    pub fn mount(lowers: &[PathBuf], at: &Path, rw_scratch: Option<&Path>) -> Overlay {
        let lowers: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let (opts, flags) = match rw_scratch {
            None => (
                format!("ro,lowerdir={}", lowers.join(":")),
                nix::mount::MsFlags::MS_RDONLY,
            ),
            Some(scratch) => {
                let (upper, work) = (scratch.join("upper"), scratch.join("work"));
                for d in [&upper, &work] {
                    std::fs::create_dir_all(d).expect("overlay dirs");
                }
                let opts = format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lowers.join(":"),
                    upper.display(),
                    work.display()
                );
                (opts, nix::mount::MsFlags::empty())
            }
        };
        nix::mount::mount(
            Some("overlay"),
            at,
            Some("overlay"),
            flags,
            Some(opts.as_str()),
        )
        .unwrap_or_else(|e| panic!("mount -t overlay -o {opts} {}: {e}", at.display()));
        Overlay {
            path: at.to_path_buf(),
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        unmount_or_detach(&self.path);
    }
}

pub fn is_mounted(path: &Path) -> bool {
    layerfs::mount::is_mounted(&path.canonicalize().unwrap_or_else(|_| path.to_path_buf()))
}

/// Polls `cond` for up to 10 s (no fixed sleeps: the machine may be slow).
pub fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs a shell command line, returning (status ok, stdout, stderr).
pub fn sh(script: &str) -> (bool, String, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Builds a tar layer member by member (tests of the mount need shapes the
/// layer writer would never produce: whiteouts anywhere, duplicates...).
pub struct Tar {
    b: tar::Builder<Vec<u8>>,
    pub mtime: u64,
}

impl Tar {
    pub fn new() -> Tar {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Complete);
        Tar {
            b,
            mtime: 1_700_000_000,
        }
    }

    fn header(
        &self,
        kind: tar::EntryType,
        mode: u32,
        size: u64,
        uid: u64,
        gid: u64,
    ) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(self.mtime);
        h.set_size(size);
        h
    }

    pub fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
        let mut h = self.header(tar::EntryType::Regular, mode, data.len() as u64, 0, 0);
        self.b.append_data(&mut h, path, data).expect("append");
        self
    }

    pub fn owned(mut self, path: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> Self {
        let mut h = self.header(tar::EntryType::Regular, mode, data.len() as u64, uid, gid);
        self.b.append_data(&mut h, path, data).expect("append");
        self
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = self.header(tar::EntryType::Directory, mode, 0, 0, 0);
        self.b
            .append_data(&mut h, path, std::io::empty())
            .expect("append");
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = self.header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
        self.b.append_link(&mut h, path, target).expect("append");
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = self.header(tar::EntryType::Link, 0o644, 0, 0, 0);
        self.b.append_link(&mut h, path, target).expect("append");
        self
    }

    pub fn special(
        mut self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Self {
        let mut h = self.header(kind, mode, 0, 0, 0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        self.b
            .append_data(&mut h, path, std::io::empty())
            .expect("append");
        self
    }

    pub fn xattrs(mut self, path: &str, xattrs: &[(&str, &[u8])], data: &[u8]) -> Self {
        let keys: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.b
            .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))
            .expect("pax");
        self.file(path, 0o644, data)
    }

    /// A member whose name is written raw (for names the tar crate would
    /// refuse: `../x`, bytes that are not UTF-8).
    pub fn raw(mut self, name: &[u8], kind: tar::EntryType, data: &[u8]) -> Self {
        let mut h = self.header(kind, 0o644, data.len() as u64, 0, 0);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        self.b.append(&h, data).expect("append");
        self
    }

    /// A large file whose content is generated as it is written.
    pub fn big(mut self, path: &str, size: u64, seed: u64) -> Self {
        let mut h = self.header(tar::EntryType::Regular, 0o644, size, 0, 0);
        self.b
            .append_data(&mut h, path, std::io::Read::take(Noise::new(seed), size))
            .expect("append");
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().expect("tar")
    }
}

/// Deterministic pseudo-random bytes as a reader.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed | 1)
    }
    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        std::io::Read::read_exact(&mut Noise::new(seed), &mut v).expect("noise");
        v
    }
}

impl std::io::Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let b = self.0.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        Ok(buf.len())
    }
}
