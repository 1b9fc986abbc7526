//! Test helpers: tar layers written in code, and throwaway stores.

pub mod alloc;
pub mod mutate;
mod shared;

#[global_allocator]
static ALLOC: alloc::PeakTracking = alloc::PeakTracking;

pub use shared::{
    Containerd, external_tool, gzip, have_tool, self_signed, skip, stub_credential_helper, zstd,
};

use crate::store::Store;

pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open store");
    (dir, store)
}

/// Builds a tar archive member by member, with full control over names
/// (whiteouts, duplicates, `./` prefixes) and metadata.
pub struct TarBuilder {
    tar: tar::Builder<Vec<u8>>,
    pub mtime: u64,
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Complete);
        TarBuilder {
            tar,
            mtime: 1_700_000_000,
        }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h.set_size(size);
        h
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        let mut h = self.header(tar::EntryType::Regular, mode, data.len() as u64);
        self.tar.append_data(&mut h, path, data).expect("append");
        self
    }

    pub fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> &mut Self {
        let mut h = self.header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.tar.append_data(&mut h, path, data).expect("append");
        self
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let mut h = self.header(tar::EntryType::Directory, mode, 0);
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .expect("append");
        self
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = self.header(tar::EntryType::Symlink, 0o777, 0);
        self.tar.append_link(&mut h, path, target).expect("append");
        self
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = self.header(tar::EntryType::Link, 0o644, 0);
        self.tar.append_link(&mut h, path, target).expect("append");
        self
    }

    pub fn fifo(&mut self, path: &str) -> &mut Self {
        let mut h = self.header(tar::EntryType::Fifo, 0o644, 0);
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .expect("append");
        self
    }

    pub fn xattr_file(&mut self, path: &str, xattrs: &[(&str, &[u8])], data: &[u8]) -> &mut Self {
        let keys: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.tar
            .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))
            .expect("pax");
        self.file(path, 0o644, data)
    }

    /// Appends a member whose name is written raw (for names the tar crate
    /// would refuse, such as `../x`).
    pub fn raw(&mut self, name: &[u8], kind: tar::EntryType, data: &[u8]) -> &mut Self {
        let mut h = self.header(kind, 0o644, data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        self.tar.append(&h, data).expect("append");
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.tar.into_inner().expect("finish tar")
    }
}

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text-like bytes that compress about 3:1.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "layer ", "image ", "the ", "of ", "and ", "mount ", "fuse ", "index ", "gzip ", "span ",
        "debian ", "root ", "file ", "\n", "config ", "tar ",
    ];
    let n = noise(len, seed);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(WORDS[(n[i % n.len()] & 15) as usize].as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// The shared fixtures folder, or `None` (with a loud SKIPPED line) when it
/// is not there. Fixture tests are an extra tier, so CI does not fail them.
pub fn fixtures_dir(test: &str) -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures"));
    if dir.is_dir() {
        return Some(dir.to_path_buf());
    }
    skip(test, &format!("{} not found", dir.display()), false);
    None
}

/// Whether the test runs as root; if not, `skip`.
pub fn is_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip(test, "needs root", true);
    false
}
