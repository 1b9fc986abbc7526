//! Commit: a container's changes become one new OCI layer over its image's
//! layers, and a new config and manifest name the result.
//!
//! Only the upper directory is read (its cost grows with the change, not the
//! image): directories, files, links and devices as they are, whiteouts as
//! `.wh.` entries, an opaque marker before its siblings. Two kinds of change
//! need lower data, and only for what they touch: a file whose metadata
//! alone changed is written whole, and a renamed lower directory is written
//! with all its contents under an opaque marker. Entries go in sorted order
//! with only the metadata that matters, so the same changes commit to the
//! same digest; hard links are kept within the layer only.
//!
//! A live container's daemon is asked (over its control socket) to hold
//! every change for the moment of the read. Nothing is tagged until the
//! layer, config and manifest are stored, so an interrupted commit leaves no
//! half image and the container as it was.

use crate::container::{Container, FREEZE, FROZEN, THAW};
use crate::image::{
    ChangeError, ImageError, StoredImage, apply_change, layer_descriptor, write_image,
};
use crate::layer::{Compression, LayerError, LayerWriter, SpanCache, TarMeta};
use crate::oci::{Descriptor, HistoryEntry, Platform, Reference, media_type as mt, time};
use crate::store::{Store, StoreError};
use crate::union::upper::{
    OPAQUE, WHITEOUT_PREFIX, XATTR_METACOPY, XATTR_ORIGIN, XATTR_REDIRECT, join,
};
use crate::union::{FileKind, ROOT_INO, Stack, UnionError, UnionFs, UpperDir};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error("{path:?} in the container: {source}")]
    Union { path: String, source: UnionError },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the container's daemon did not hold its changes: {0}")]
    Freeze(String),
}

#[derive(Clone, Debug)]
pub struct CommitOptions {
    pub tag: Option<Reference>,
    pub message: Option<String>,
    pub author: Option<String>,
    pub changes: Vec<String>,
    pub compression: Compression,
}

impl Default for CommitOptions {
    fn default() -> Self {
        CommitOptions {
            tag: None,
            message: None,
            author: None,
            changes: Vec::new(),
            compression: Compression::Gzip,
        }
    }
}

/// Holds a live container's changes while it lives (dropping it thaws).
struct Freeze(Option<UnixStream>);

impl Freeze {
    fn take(c: &Container) -> Result<Freeze, CommitError> {
        let sock = c.control_socket();
        let mut stream = match UnixStream::connect(&sock) {
            Ok(s) => s,
            // Not mounted (or its daemon is gone): nothing changes it.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(Freeze(None));
            }
            Err(e) => {
                return Err(CommitError::Io {
                    path: sock,
                    source: e,
                });
            }
        };
        writeln!(stream, "{FREEZE}").map_err(|e| CommitError::Freeze(e.to_string()))?;
        let mut line = String::new();
        BufReader::new(
            stream
                .try_clone()
                .map_err(|e| CommitError::Freeze(e.to_string()))?,
        )
        .read_line(&mut line)
        .map_err(|e| CommitError::Freeze(e.to_string()))?;
        if line.trim() != FROZEN {
            return Err(CommitError::Freeze(format!("it answered {line:?}")));
        }
        Ok(Freeze(Some(stream)))
    }
}

impl Drop for Freeze {
    fn drop(&mut self) {
        if let Some(s) = &mut self.0 {
            let _ = writeln!(s, "{THAW}");
        }
    }
}

/// Commits container `c` as a new image; returns it.
pub fn commit(
    store: &Store,
    c: &Container,
    opts: &CommitOptions,
) -> Result<StoredImage, CommitError> {
    let _lock = store.lock_shared()?;
    let top = Descriptor::new(mt::OCI_MANIFEST, c.manifest, 0);
    let (_, manifest) = store.manifest_for_platform(&top, &Platform::host())?;
    let mut config = store.read_config(&manifest.config.digest)?;
    for change in &opts.changes {
        apply_change(&mut config, change)?;
    }
    let layers: Vec<_> = manifest.layers.iter().map(|l| l.digest).collect();
    let stack = Stack::open(store, &layers, SpanCache::new(16 << 20))?;
    let info = {
        let freeze = Freeze::take(c)?;
        let upper =
            UpperDir::open_existing(&c.upper(), &c.work()).map_err(|e| CommitError::Io {
                path: c.upper(),
                source: e,
            })?;
        let reader =
            UpperDir::open_existing(&c.upper(), &c.work()).map_err(|e| CommitError::Io {
                path: c.upper(),
                source: e,
            })?;
        let view = UnionFs::new(stack, Some(reader));
        let mut w = Walker {
            upper: &upper,
            view: &view,
            out: LayerWriter::new(store, opts.compression)?,
            links: HashMap::new(),
        };
        w.upper_dir(b"")?;
        let info = w.out.finish()?;
        drop(freeze);
        info
    };
    let now = time::now_rfc3339();
    config.created = Some(now.clone());
    if opts.author.is_some() {
        config.author = opts.author.clone();
    }
    // History steps that made layers pair with the layers in order: a
    // parent without history for some of its layers (an imported rootfs)
    // gets blank steps for them, or this commit's step would be shown
    // against its base layer.
    let described = config.history.iter().filter(|h| !h.empty_layer).count();
    for _ in described..config.rootfs.diff_ids.len() {
        config.history.push(HistoryEntry::default());
    }
    config.rootfs.diff_ids.push(info.diff_id);
    config.history.push(HistoryEntry {
        created: Some(now),
        created_by: Some(created_by(c, opts)),
        author: opts.author.clone(),
        comment: opts.message.clone(),
        empty_layer: false,
    });
    let mut descs: Vec<Descriptor> = manifest.layers.iter().map(oci_layer).collect();
    descs.push(layer_descriptor(&info));
    let manifest = write_image(store, &config, &descs, opts.tag.as_ref())?;
    Ok(StoredImage {
        id: store.image_id(&manifest)?,
        manifest,
    })
}

fn created_by(c: &Container, opts: &CommitOptions) -> String {
    let mut s = format!("layerfs commit {}", c.name);
    for ch in &opts.changes {
        s.push_str(&format!(" --change '{ch}'"));
    }
    s
}

/// The parent's layer descriptor in the OCI manifest we write (Docker's
/// layer media types have OCI equivalents; the bytes do not change).
fn oci_layer(d: &Descriptor) -> Descriptor {
    let media = match d.media_type.as_str() {
        mt::DOCKER_LAYER_GZIP => mt::OCI_LAYER_GZIP,
        mt::DOCKER_LAYER_TAR => mt::OCI_LAYER,
        other => other,
    };
    Descriptor {
        media_type: media.to_string(),
        annotations: d.annotations.clone(),
        urls: d.urls.clone(),
        ..Descriptor::new(media, d.digest, d.size)
    }
}

struct Walker<'a> {
    upper: &'a UpperDir,
    view: &'a UnionFs,
    out: LayerWriter<'a>,
    /// First path written for each multiply-linked file (host or union inode).
    links: HashMap<u64, Vec<u8>>,
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

impl Walker<'_> {
    fn io(&self, path: &[u8]) -> impl FnOnce(std::io::Error) -> CommitError + '_ {
        let p = self.upper.root().join(std::ffi::OsStr::new(&lossy(path)));
        move |source| CommitError::Io { path: p, source }
    }

    fn meta(&self, rel: &[u8], st: &libc::stat) -> Result<TarMeta, CommitError> {
        Ok(TarMeta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: st.st_mtime,
            xattrs: self.upper.xattrs(rel).map_err(self.io(rel))?,
        })
    }

    /// Writes the upper directory `dir`: its opaque marker, its whiteouts,
    /// then its entries, each sorted by name.
    fn upper_dir(&mut self, dir: &[u8]) -> Result<(), CommitError> {
        let mut entries = self.upper.read_dir(dir).map_err(self.io(dir))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        if entries.iter().any(|e| e.name == OPAQUE) {
            self.out.add_opaque(dir)?;
        }
        for e in entries.iter().filter(|e| e.name != OPAQUE) {
            if let Some(hidden) = e.name.strip_prefix(WHITEOUT_PREFIX) {
                self.out.add_whiteout(&join(dir, hidden))?;
            }
        }
        for e in entries
            .iter()
            .filter(|e| !e.name.starts_with(WHITEOUT_PREFIX))
        {
            let rel = join(dir, &e.name);
            let st = &e.stat;
            match FileKind::from_mode(st.st_mode) {
                Some(FileKind::Directory) => {
                    let meta = self.meta(&rel, st)?;
                    self.out.add_dir(&rel, &meta)?;
                    if self
                        .upper
                        .get_xattr(&rel, XATTR_REDIRECT)
                        .map_err(self.io(&rel))?
                        .is_some()
                    {
                        // A renamed lower directory: all of it, and nothing of
                        // what the layers below have at its new path.
                        self.out.add_opaque(&rel)?;
                        let ino = self.union_ino(&rel)?;
                        self.union_dir(ino, &rel)?;
                    } else {
                        self.upper_dir(&rel)?;
                    }
                }
                Some(FileKind::Regular) => {
                    let meta = self.meta(&rel, st)?;
                    if st.st_nlink > 1 && self.linked(st.st_ino, &rel, &meta)? {
                        continue;
                    }
                    if self
                        .upper
                        .get_xattr(&rel, XATTR_METACOPY)
                        .map_err(self.io(&rel))?
                        .is_some()
                    {
                        let origin = self
                            .upper
                            .get_xattr(&rel, XATTR_ORIGIN)
                            .map_err(self.io(&rel))?
                            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                            .map(u64::from_le_bytes)
                            .ok_or_else(|| CommitError::Union {
                                path: lossy(&rel),
                                source: UnionError::NotFound,
                            })?;
                        let size = st.st_size as u64;
                        self.out.add_file(
                            &rel,
                            &meta,
                            size,
                            UnionReader {
                                view: self.view,
                                ino: origin,
                                off: 0,
                                path: lossy(&rel),
                            },
                        )?;
                    } else {
                        let f = self
                            .upper
                            .open_file(&rel, nix::fcntl::OFlag::O_RDONLY, 0)
                            .map_err(self.io(&rel))?;
                        let size = st.st_size as u64;
                        self.out.add_file(&rel, &meta, size, f)?;
                    }
                }
                Some(FileKind::Symlink) => {
                    let meta = self.meta(&rel, st)?;
                    let target = self.upper.read_link(&rel).map_err(self.io(&rel))?;
                    self.out.add_symlink(&rel, &meta, &target)?;
                }
                Some(FileKind::CharDevice) | Some(FileKind::BlockDevice) => {
                    let meta = self.meta(&rel, st)?;
                    let block = st.st_mode & libc::S_IFMT == libc::S_IFBLK;
                    self.out.add_device(
                        &rel,
                        &meta,
                        block,
                        libc::major(st.st_rdev),
                        libc::minor(st.st_rdev),
                    )?;
                }
                Some(FileKind::Fifo) => {
                    let meta = self.meta(&rel, st)?;
                    self.out.add_fifo(&rel, &meta)?;
                }
                Some(FileKind::Socket) | None => log::warn!(
                    "{}: sockets cannot be stored in a layer; left out",
                    lossy(&rel)
                ),
            }
        }
        Ok(())
    }

    /// For a file with several names: a link to the first name written, if
    /// there was one (then true).
    fn linked(&mut self, key: u64, rel: &[u8], meta: &TarMeta) -> Result<bool, CommitError> {
        match self.links.get(&key) {
            Some(first) => {
                let first = first.clone();
                self.out.add_hardlink(rel, meta, &first)?;
                Ok(true)
            }
            None => {
                self.links.insert(key, rel.to_vec());
                Ok(false)
            }
        }
    }

    fn union_ino(&self, rel: &[u8]) -> Result<u64, CommitError> {
        let mut ino = ROOT_INO;
        for c in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            ino = self
                .view
                .lookup(ino, c)
                .map_err(|e| CommitError::Union {
                    path: lossy(rel),
                    source: e,
                })?
                .ino;
        }
        Ok(ino)
    }

    /// Writes directory `ino` of the union view (a renamed lower directory)
    /// whole: every entry below it, whatever layer or the container holds it.
    fn union_dir(&mut self, ino: u64, rel: &[u8]) -> Result<(), CommitError> {
        let uerr = |path: &[u8]| {
            let p = lossy(path);
            move |e| CommitError::Union { path: p, source: e }
        };
        let mut names: Vec<Vec<u8>> = Vec::new();
        self.view
            .readdir(ino, 0, 0, false, |e, _| {
                if e.name != b"." && e.name != b".." {
                    names.push(e.name.to_vec());
                }
                true
            })
            .map_err(uerr(rel))?;
        for name in names {
            let path = join(rel, &name);
            let a = self.view.lookup(ino, &name).map_err(uerr(&path))?;
            let xattrs: Vec<(Vec<u8>, Vec<u8>)> = {
                let list = self.view.listxattr(a.ino).map_err(uerr(&path))?;
                let mut v = Vec::new();
                for n in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
                    v.push((
                        n.to_vec(),
                        self.view.getxattr(a.ino, n).map_err(uerr(&path))?,
                    ));
                }
                v
            };
            let meta = TarMeta {
                mode: a.perm,
                uid: a.uid,
                gid: a.gid,
                mtime: a.mtime.secs,
                xattrs,
            };
            match a.kind {
                FileKind::Directory => {
                    self.out.add_dir(&path, &meta)?;
                    self.union_dir(a.ino, &path)?;
                }
                FileKind::Regular => {
                    if a.nlink > 1 && self.linked(a.ino, &path, &meta)? {
                        continue;
                    }
                    let mut opened = self.view.open(a.ino, libc::O_RDONLY).map_err(uerr(&path))?;
                    let r = FhReader {
                        view: self.view,
                        fh: opened.fh,
                        off: 0,
                        path: lossy(&path),
                    };
                    let res = self.out.add_file(&path, &meta, a.size, r);
                    self.view.release(opened.fh);
                    opened.upper.take();
                    res?;
                }
                FileKind::Symlink => {
                    let target = self.view.readlink(a.ino).map_err(uerr(&path))?;
                    self.out.add_symlink(&path, &meta, &target)?;
                }
                FileKind::CharDevice | FileKind::BlockDevice => {
                    let block = a.kind == FileKind::BlockDevice;
                    self.out.add_device(
                        &path,
                        &meta,
                        block,
                        libc::major(a.rdev),
                        libc::minor(a.rdev),
                    )?;
                }
                FileKind::Fifo => self.out.add_fifo(&path, &meta)?,
                FileKind::Socket => log::warn!(
                    "{}: sockets cannot be stored in a layer; left out",
                    lossy(&path)
                ),
            }
        }
        Ok(())
    }
}

/// Reads a lower file by inode number (a metadata-only copy's data).
struct UnionReader<'a> {
    view: &'a UnionFs,
    ino: u64,
    off: u64,
    path: String,
}

impl Read for UnionReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self
            .view
            .read(self.ino, self.off, buf)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", self.path)))?;
        self.off += n as u64;
        Ok(n)
    }
}

/// Reads an open file of the union view.
struct FhReader<'a> {
    view: &'a UnionFs,
    fh: u64,
    off: u64,
    path: String,
}

impl Read for FhReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self
            .view
            .read_fh(self.fh, self.off, buf)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", self.path)))?;
        self.off += n as u64;
        Ok(n)
    }
}
