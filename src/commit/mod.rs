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
//! every change only while the commit snapshots it: the walk of the upper
//! directory writes the uncompressed tar into an unnamed file beside the
//! container (a copy of what changed, consistent because nothing changes
//! meanwhile); compressing it into the layer blob comes after the thaw, so
//! a write into the mount waits for the copy at most, never for gzip. The
//! image is stored unnamed; the caller names it (`image::name_image`) or
//! keeps it as a build step, so an interrupted commit leaves no half image
//! and the container as it was (the unnamed file goes with the process).

use crate::container::{Container, ContainerError, Freeze};
use crate::flatten::{Flatten, FlattenError, ViewReader};
use crate::image::{
    ChangeError, ImageError, StoredImage, apply_change, layer_descriptor, name_image, push_layer,
    store_image,
};
use crate::layer::{Compression, LayerError, LayerWriter, SpanCache, TarMeta, TarWriter};
use crate::oci::{Descriptor, HistoryEntry, ImageConfig, Reference, time};
use crate::store::{Store, StoreError};
use crate::union::upper::{
    OPAQUE, WHITEOUT_PREFIX, XATTR_METACOPY, XATTR_ORIGIN, XATTR_REDIRECT, join,
};
use crate::union::{FileKind, ROOT_INO, Stack, UnionError, UnionFs, UpperDir};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

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
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Flatten(#[from] FlattenError),
    #[error("{path:?} in the container: {source}")]
    Union { path: String, source: UnionError },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Clone, Debug)]
pub struct CommitOptions {
    pub message: Option<String>,
    pub author: Option<String>,
    pub changes: Vec<String>,
    pub compression: Compression,
    /// Write the layer as eStargz (gzip; `compression` is then unused).
    pub estargz: bool,
    /// The history entry's `created_by` (a build names its instruction);
    /// `layerfs commit NAME --change ...` when not given.
    pub created_by: Option<String>,
}

impl Default for CommitOptions {
    fn default() -> Self {
        CommitOptions {
            message: None,
            author: None,
            changes: Vec::new(),
            compression: Compression::Gzip,
            estargz: false,
            created_by: None,
        }
    }
}

/// An image a commit stored (not yet named), with what it holds.
#[derive(Clone, Debug)]
pub struct Committed {
    pub image: StoredImage,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
}

/// Commits container `c` and names the new image `tag` (or lists it
/// untagged), the store lock held shared from the first blob to the name,
/// so gc cannot take the image in between.
pub fn commit_as(
    store: &Store,
    c: &Container,
    opts: &CommitOptions,
    tag: Option<&Reference>,
) -> Result<Committed, CommitError> {
    let _lock = store.lock_shared()?;
    let made = commit(store, c, opts)?;
    name_image(store, &made.image.manifest, tag)?;
    Ok(made)
}

/// Commits container `c` as a new, unnamed image. Hold the store lock
/// (shared) until the image is named or otherwise referenced.
pub fn commit(
    store: &Store,
    c: &Container,
    opts: &CommitOptions,
) -> Result<Committed, CommitError> {
    let _lock = store.lock_shared()?;
    let manifest = c.image_manifest(store)?;
    let mut config = store.read_config(&manifest.config.digest)?;
    for change in &opts.changes {
        apply_change(&mut config, change)?;
    }
    let layers = manifest.layer_digests();
    if layers.iter().any(|d| store.has_partial(d)) {
        // A lazy image: fetch what the snapshot reads of its layers (the data
        // of files whose metadata changed, renamed directories) before the
        // container is frozen, since a fetch waits for the network.
        let stack = Stack::open(store, &layers, SpanCache::new(16 << 20))?;
        if let Err(e) = warm(c, stack) {
            log::debug!("commit {}: fetching ahead: {e}", c.name);
        }
    }
    let stack = Stack::open(store, &layers, SpanCache::new(16 << 20))?;
    let staged = snapshot(c, stack)?;
    let size = staged.metadata().map_or(0, |m| m.len());
    log::info!(
        "commit {}: snapshot taken ({size} bytes of tar); changes resume while the layer is written",
        c.name
    );
    let staged = BufReader::with_capacity(1 << 20, staged);
    let info = if opts.estargz {
        LayerWriter::from_tar_estargz(store, staged)?
    } else {
        LayerWriter::from_tar(store, opts.compression, staged)?
    };
    let now = time::now_rfc3339();
    config.created = Some(now.clone());
    if opts.author.is_some() {
        config.author = opts.author.clone();
    }
    push_layer(
        &mut config,
        info.diff_id,
        HistoryEntry {
            created: Some(now),
            created_by: Some(created_by(c, opts)),
            author: opts.author.clone(),
            comment: opts.message.clone(),
            empty_layer: false,
        },
    );
    let mut descs: Vec<Descriptor> = manifest
        .layers
        .iter()
        .map(crate::image::oci_layer_descriptor)
        .collect();
    descs.push(layer_descriptor(&info));
    let image = store_image(store, &config.to_json(), &descs)?;
    Ok(Committed {
        image,
        config,
        layers: descs,
    })
}

/// The container's changes as one uncompressed tar, in an unnamed file
/// beside its upper directory, written while its daemon (if it is mounted)
/// holds every change.
fn snapshot(c: &Container, stack: Stack) -> Result<File, CommitError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CommitError::Io { path, source }
    };
    let mut staged = tempfile::tempfile_in(c.dir()).map_err(io(c.dir()))?;
    let freeze = Freeze::take(c)?;
    let upper = UpperDir::open_existing(&c.upper(), &c.work()).map_err(io(&c.upper()))?;
    let view = UnionFs::new(stack, Some(upper));
    // The view was made with the upper dir just above.
    let upper = view.upper.as_ref().ok_or(CommitError::Union {
        path: "/".into(),
        source: UnionError::ReadOnly,
    })?;
    let mut out = TarWriter::new(BufWriter::with_capacity(1 << 20, &staged));
    Walker {
        upper,
        view: &view,
        links: HashMap::new(),
        freeze: Some(&freeze),
    }
    .dir(&mut out, b"")?;
    out.finish()?
        .into_inner()
        .map_err(|e| io(c.dir())(e.into_error()))?;
    freeze.release()?;
    staged.rewind().map_err(io(c.dir()))?;
    Ok(staged)
}

/// Reads everything the snapshot of `c` would, unfrozen, and keeps nothing:
/// what a lazy layer lacks is fetched now. The snapshot itself reports
/// errors, so this one's only go to the log.
fn warm(c: &Container, stack: Stack) -> Result<(), CommitError> {
    let upper =
        UpperDir::open_existing(&c.upper(), &c.work()).map_err(|source| CommitError::Io {
            path: c.upper(),
            source,
        })?;
    let view = UnionFs::new(stack, Some(upper));
    let Some(upper) = view.upper.as_ref() else {
        return Ok(());
    };
    let mut out = TarWriter::new(std::io::sink());
    Walker {
        upper,
        view: &view,
        links: HashMap::new(),
        freeze: None,
    }
    .dir(&mut out, b"")?;
    Ok(())
}

fn created_by(c: &Container, opts: &CommitOptions) -> String {
    if let Some(by) = &opts.created_by {
        return by.clone();
    }
    let mut s = format!("layerfs commit {}", c.name);
    for ch in &opts.changes {
        s.push_str(&format!(" --change '{ch}'"));
    }
    s
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

struct Walker<'a> {
    upper: &'a UpperDir,
    view: &'a UnionFs,
    /// First path written for each host inode with several names.
    links: HashMap<u64, Vec<u8>>,
    /// Told now and then that the snapshot is still going on (None: a
    /// pass that only fetches ahead, nothing frozen).
    freeze: Option<&'a Freeze>,
}

/// Reads `inner`, telling the daemon on the way that the freeze is wanted
/// still (a large file takes a while to copy).
struct Beat<'a, R> {
    inner: R,
    freeze: Option<&'a Freeze>,
}

impl<R: Read> Read for Beat<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(f) = self.freeze {
            f.keep();
        }
        self.inner.read(buf)
    }
}

impl Walker<'_> {
    fn io(&self, path: &[u8]) -> impl FnOnce(std::io::Error) -> CommitError {
        let p = self.upper.root().join(lossy(path));
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

    /// Writes upper directory `dir`: its opaque marker, its whiteouts, then
    /// its entries, each sorted by name.
    fn dir<W: Write>(&mut self, out: &mut TarWriter<W>, dir: &[u8]) -> Result<(), CommitError> {
        let mut entries = self.upper.read_dir(dir).map_err(self.io(dir))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        if entries.iter().any(|e| e.name == OPAQUE) {
            out.add_opaque(dir)?;
        }
        for e in entries.iter().filter(|e| e.name != OPAQUE) {
            if let Some(hidden) = e.name.strip_prefix(WHITEOUT_PREFIX) {
                out.add_whiteout(&join(dir, hidden))?;
            }
        }
        for e in entries
            .iter()
            .filter(|e| !e.name.starts_with(WHITEOUT_PREFIX))
        {
            if let Some(f) = self.freeze {
                f.keep();
            }
            let rel = join(dir, &e.name);
            let st = &e.stat;
            let kind = FileKind::from_mode(st.st_mode);
            if kind == Some(FileKind::Socket) || kind.is_none() {
                log::warn!(
                    "{}: sockets cannot be stored in a layer; left out",
                    lossy(&rel)
                );
                continue;
            }
            let meta = self.meta(&rel, st)?;
            match kind {
                Some(FileKind::Directory) => {
                    out.add_dir(&rel, &meta)?;
                    if self
                        .upper
                        .get_xattr(&rel, XATTR_REDIRECT)
                        .map_err(self.io(&rel))?
                        .is_some()
                    {
                        // A renamed lower directory: all of it, and nothing of
                        // what the layers below have at its new path.
                        out.add_opaque(&rel)?;
                        let ino = self.union_ino(&rel)?;
                        Flatten::new(self.view).dir(out, ino, &rel)?;
                    } else {
                        self.dir(out, &rel)?;
                    }
                }
                Some(FileKind::Regular) => self.file(out, &rel, st, &meta)?,
                Some(FileKind::Symlink) => {
                    let target = self.upper.read_link(&rel).map_err(self.io(&rel))?;
                    out.add_symlink(&rel, &meta, &target)?;
                }
                Some(FileKind::CharDevice) | Some(FileKind::BlockDevice) => {
                    let block = st.st_mode & libc::S_IFMT == libc::S_IFBLK;
                    out.add_device(
                        &rel,
                        &meta,
                        block,
                        libc::major(st.st_rdev),
                        libc::minor(st.st_rdev),
                    )?;
                }
                _ => out.add_fifo(&rel, &meta)?,
            }
        }
        Ok(())
    }

    fn file<W: Write>(
        &mut self,
        out: &mut TarWriter<W>,
        rel: &[u8],
        st: &libc::stat,
        meta: &TarMeta,
    ) -> Result<(), CommitError> {
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&st.st_ino) {
                out.add_hardlink(rel, meta, first)?;
                return Ok(());
            }
            self.links.insert(st.st_ino, rel.to_vec());
        }
        let size = st.st_size as u64;
        if self
            .upper
            .get_xattr(rel, XATTR_METACOPY)
            .map_err(self.io(rel))?
            .is_none()
        {
            let f = self
                .upper
                .open_file(rel, nix::fcntl::OFlag::O_RDONLY, 0)
                .map_err(self.io(rel))?;
            let f = Beat {
                inner: f,
                freeze: self.freeze,
            };
            out.add_file(rel, meta, size, f)?;
            return Ok(());
        }
        // Metadata only: the data is the lower file's, named by its inode.
        let origin = self
            .upper
            .get_xattr(rel, XATTR_ORIGIN)
            .map_err(self.io(rel))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| CommitError::Union {
                path: lossy(rel),
                source: UnionError::NotFound,
            })?;
        out.add_file(
            rel,
            meta,
            size,
            Beat {
                inner: ViewReader::new(self.view, origin, None, rel),
                freeze: self.freeze,
            },
        )?;
        Ok(())
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container;
    use crate::image::{layer_descriptor, new_config, write_image};
    use crate::layer::ingest;
    use crate::testutil::{TarBuilder, temp_store};

    #[test]
    fn commit_as_names_an_image_whose_top_layer_is_the_change() {
        let (_d, store) = temp_store();
        let mut t = TarBuilder::new();
        t.dir("etc", 0o755).file("etc/a", 0o644, b"lower\n");
        let info = ingest(&store, &t.finish()[..], None).unwrap();
        let base = Reference::parse("base:1").unwrap();
        let img = write_image(
            &store,
            &new_config(),
            &[layer_descriptor(&info)],
            Some(&base),
        )
        .unwrap();
        let c = container::create(&store, Some("c1"), "base:1", img.manifest.digest, None).unwrap();
        std::fs::write(c.upper().join("new"), b"changed\n").unwrap();

        let opts = CommitOptions {
            compression: Compression::None,
            message: Some("m".into()),
            ..Default::default()
        };
        let tag = Reference::parse("made:1").unwrap();
        let made = commit_as(&store, &c, &opts, Some(&tag)).unwrap();
        let r = store.resolve("made:1").unwrap();
        assert_eq!(r.id(), made.image.id);
        assert_eq!(r.manifest.layers.len(), 2);
        let top = store.open_blob(&r.manifest.layers[1].digest).unwrap();
        let mut members = Vec::new();
        for e in tar::Archive::new(top).entries().unwrap() {
            let mut e = e.unwrap();
            let mut data = String::new();
            std::io::Read::read_to_string(&mut e, &mut data).unwrap();
            members.push((e.path().unwrap().display().to_string(), data));
        }
        assert_eq!(members, [("new".to_string(), "changed\n".to_string())]);
        assert_eq!(
            r.config.history.last().and_then(|h| h.comment.clone()),
            Some("m".into())
        );
        // Nothing half-made is left beside the container.
        let left: Vec<_> = std::fs::read_dir(c.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 3, "{left:?}");
    }

    #[test]
    fn commit_with_estargz_writes_an_annotated_estargz_layer() {
        use crate::layer::estargz;
        let (_d, store) = temp_store();
        let mut t = TarBuilder::new();
        t.dir("etc", 0o755).file("etc/a", 0o644, b"lower\n");
        let info = ingest(&store, &t.finish()[..], None).unwrap();
        let img = write_image(&store, &new_config(), &[layer_descriptor(&info)], None).unwrap();
        let c = container::create(&store, Some("c2"), "base", img.manifest.digest, None).unwrap();
        std::fs::write(c.upper().join("new"), b"changed\n").unwrap();
        let opts = CommitOptions {
            estargz: true,
            ..Default::default()
        };
        let made = commit_as(&store, &c, &opts, None).unwrap();
        let m = store.read_manifest(&made.image.manifest.digest).unwrap();
        let top = &m.layers[1];
        let toc = top
            .annotation(estargz::TOC_DIGEST_ANNOTATION)
            .expect("TOC digest");
        let blob = std::fs::read(store.blob_path(&top.digest)).unwrap();
        let end = blob.len() - estargz::FOOTER_SIZE as usize;
        let at = estargz::parse_footer(&blob[end..]).unwrap();
        let (parsed, _) =
            estargz::parse_toc(&blob[at as usize..end], Some(&toc.parse().unwrap())).unwrap();
        let chunks = parsed.chunks(at).unwrap();
        assert_eq!(chunks.len(), 1);
        let c0 = &chunks[0];
        let data = estargz::verify_chunk(&blob[c0.start as usize..c0.end as usize], c0).unwrap();
        assert_eq!((c0.path.as_str(), &data[..]), ("new", &b"changed\n"[..]));
        let config = store.read_config(&m.config.digest).unwrap();
        let index = crate::layer::open_index(&store, &top.digest).unwrap();
        assert_eq!(config.rootfs.diff_ids.last(), Some(index.diff_id()));
    }
}
