//! The store: content-addressed blobs and image tags, kept as an OCI image
//! layout so that skopeo, umoci and other OCI tools read and write it as is.
//!
//! ```text
//! ROOT/
//!   oci-layout                 {"imageLayoutVersion":"1.0.0"}
//!   index.json                 one entry per image; a tag is the entry's
//!                              org.opencontainers.image.ref.name annotation
//!   blobs/sha256/<hex>         layers, configs, manifests, indexes; each once
//!   layerfs/                   our own data, all of it rebuildable or small;
//!                              0700: containers' upper dirs hold whatever a
//!                              container made (setuid files, device nodes),
//!                              which no other host user may reach
//!     lock                     flock: shared while blobs are written, exclusive for gc
//!     refs.lock                flock: exclusive around each update of index.json
//!     tmp/                     blobs being written: temp file, fsync, rename
//!     index/<hex>.idx          layer indexes, derived from the blob of that digest
//!     partial/<hex>[.ranges|.json]  blobs present in part (lazy images): partial.rs
//!     holds/<id>.json          what mounts, containers and builds use (kept by gc)
//!     cache/<diff_id>-<offset>-<size>  decoded lower files for passthrough, bounded
//!                              (mount/filecache.rs); removable at any time
//!     containers/, mounts/     owned by the modules of those names
//! ```
//!
//! Modes: a root layerfs creates is 0700 (as Docker's /var/lib/docker); a
//! root it adopts keeps its mode, so skopeo and umoci read it as before.
//! `layerfs/` and every folder in it are 0700, tightened on each open for
//! stores made before that rule.
//!
//! Crash safety: a blob becomes visible only by rename after fsync, and
//! index.json is replaced the same way, after the blobs it names. So at any
//! moment every image listed is whole; a crash leaves at worst a temp file,
//! which `gc` removes.

mod blobs;
mod error;
mod gc;
mod holds;
mod lock;
pub mod partial;
mod refs;
#[cfg(test)]
mod tests;

pub use blobs::BlobWriter;
pub use error::StoreError;
pub use gc::GcReport;
pub use holds::{Hold, process_alive};
pub use lock::StoreLock;
pub use partial::{BlobFetcher, BlobSpan, FetchError, PartialBlob, PartialInfo, SpanTable};
pub use refs::{ImageEntry, ResolvedImage};

use std::fs;
use std::path::{Path, PathBuf};

pub type Result<T> = std::result::Result<T, StoreError>;

const OCI_LAYOUT: &str = "oci-layout";
const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_JSON: &str = "index.json";
const EMPTY_INDEX: &[u8] =
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
const OWN_DIR: &str = "layerfs";
const PRIVATE_DIR_MODE: u32 = 0o700;

#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the store at `root`, creating its layout if it is missing. An
    /// existing OCI layout (made by skopeo or umoci) is adopted as it is.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store {
            root: root.to_path_buf(),
        };
        create_private_dir(&store.root)?;
        fs::create_dir_all(store.root.join("blobs/sha256"))
            .map_err(|e| StoreError::io(&store.root.join("blobs/sha256"), e))?;
        for dir in [store.own_dir(), store.tmp_dir(), store.index_dir()] {
            create_private_dir(&dir)?;
        }
        tighten(&store.own_dir());
        store.create_if_missing(OCI_LAYOUT, OCI_LAYOUT_CONTENT)?;
        store.create_if_missing(INDEX_JSON, EMPTY_INDEX)?;
        Ok(store)
    }

    /// `/var/lib/layerfs` for root, `$XDG_DATA_HOME/layerfs` (or
    /// `~/.local/share/layerfs`) for anyone else.
    pub fn default_root() -> PathBuf {
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/layerfs");
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        data.join("layerfs")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder for layerfs's own data of a kind (`containers`, `mounts`, …).
    pub fn own_dir_for(&self, kind: &str) -> Result<PathBuf> {
        let dir = self.own_dir().join(kind);
        create_private_dir(&dir)?;
        Ok(dir)
    }

    fn own_dir(&self) -> PathBuf {
        self.root.join(OWN_DIR)
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.own_dir().join("tmp")
    }

    pub(crate) fn index_dir(&self) -> PathBuf {
        self.own_dir().join("index")
    }

    /// Where the layer index derived from blob `digest` lives.
    pub fn layer_index_path(&self, digest: &crate::oci::Digest) -> PathBuf {
        self.index_dir().join(format!("{}.idx", digest.hex()))
    }

    fn create_if_missing(&self, name: &str, content: &[u8]) -> Result<()> {
        let path = self.root.join(name);
        if path.exists() {
            return Ok(());
        }
        blobs::write_atomic(&self.tmp_dir(), &path, content)
    }
}

/// Creates `dir` and any missing parent with mode 0700; what exists is left
/// as it is.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(|e| StoreError::io(dir, e))
}

/// Takes group and other permissions off `dir` (a store made before its
/// private parts were 0700); one stat when it is already right. Best effort:
/// a store on read-only media, or another user's, still opens.
fn tighten(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(md) = fs::symlink_metadata(dir) else {
        return;
    };
    if md.permissions().mode() & 0o077 == 0 {
        return;
    }
    if let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE)) {
        log::warn!(
            "{}: cannot make it private (mode 0700): {e}; other users may reach containers' files",
            dir.display()
        );
    }
}
