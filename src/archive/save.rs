//! `save`: images of the store written as a docker-archive or an
//! oci-archive, to any writer or to a file (a temp file beside it, renamed
//! over it only once the archive is whole). Every blob is verified as it is
//! copied, so a damaged store gives an error, never a damaged archive.

use super::{ArchiveError, Output, docker, oci};
use crate::oci::{
    Descriptor, Digest, Manifest, ManifestKind, Reference, Sha256Writer, media_type as mt,
};
use crate::store::{ResolvedImage, Store, StoreError};
use std::collections::{HashSet, VecDeque};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveFormat {
    /// What `docker save` and `skopeo copy ... docker-archive:` write.
    DockerArchive,
    /// A tar of an OCI image layout.
    OciArchive,
}

#[derive(Clone, Debug, Default)]
pub struct SaveReport {
    /// Image IDs written, each with the names saved for it.
    pub images: Vec<(Digest, Vec<String>)>,
    /// Bytes of the archive.
    pub bytes: u64,
}

/// One image to save, with the names it is saved under.
pub struct SaveItem {
    /// The user's words for it, for messages.
    pub what: String,
    pub image: ResolvedImage,
    pub names: Vec<Reference>,
    /// What index.json lists for it (oci-archive): the store's image index
    /// when every platform's blobs are here, else this platform's manifest.
    pub top: Descriptor,
    /// Every blob under `top`, each once, parents before children.
    pub blobs: Vec<Digest>,
}

/// Writes `images` (names or IDs, for this machine's platform) to `out`.
pub fn save(
    store: &Store,
    images: &[String],
    format: SaveFormat,
    out: impl Write,
) -> Result<SaveReport, ArchiveError> {
    // Keeps gc from removing what is being copied.
    let _lock = store.lock_shared().map_err(|e| ArchiveError::Store {
        archive: "save".into(),
        source: e,
    })?;
    let items = resolve_all(store, images)?;
    let mut tar = TarOut::new(out);
    match format {
        SaveFormat::DockerArchive => docker::write(store, &items, &mut tar)?,
        SaveFormat::OciArchive => oci::write(store, &items, &mut tar)?,
    }
    let bytes = tar.finish().map_err(|e| ArchiveError::SaveBroken {
        image: "archive".into(),
        why: format!("cannot finish writing: {e}"),
    })?;
    Ok(SaveReport {
        images: items
            .iter()
            .map(|i| {
                (
                    i.image.id(),
                    i.names.iter().map(Reference::canonical).collect(),
                )
            })
            .collect(),
        bytes,
    })
}

/// Writes `images` to the file `path`: a regular file is replaced only on
/// success, a FIFO or character device written into (see `Output`).
pub fn save_to_path(
    store: &Store,
    images: &[String],
    format: SaveFormat,
    path: &Path,
) -> Result<SaveReport, ArchiveError> {
    let output = Output::create(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, output.file());
    let report = save(store, images, format, &mut w)?;
    w.flush().map_err(|e| ArchiveError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    drop(w);
    output.finish()?;
    Ok(report)
}

/// Resolves each argument; the same image named twice is saved once, under
/// both names. An image given by ID or digest is saved without a name.
fn resolve_all(store: &Store, images: &[String]) -> Result<Vec<SaveItem>, ArchiveError> {
    let mut items: Vec<SaveItem> = Vec::new();
    for what in images {
        let image = store.resolve(what).map_err(|e| ArchiveError::SaveImage {
            image: what.clone(),
            source: e,
        })?;
        let name = Reference::parse(what)
            .ok()
            .filter(|r| r.digest().is_none() && image.name.as_deref() == Some(&r.canonical()));
        let (top, blobs) = save_top(store, &image).map_err(|e| ArchiveError::SaveImage {
            image: what.clone(),
            source: e,
        })?;
        match items.iter_mut().find(|i| i.top.digest == top.digest) {
            Some(item) => {
                if let Some(n) = name
                    && !item.names.contains(&n)
                {
                    item.names.push(n);
                }
            }
            None => items.push(SaveItem {
                what: what.clone(),
                image,
                names: name.into_iter().collect(),
                top,
                blobs,
            }),
        }
    }
    Ok(items)
}

/// What to save for `image` (see `SaveItem::top`), with its blobs.
fn save_top(store: &Store, image: &ResolvedImage) -> Result<(Descriptor, Vec<Digest>), StoreError> {
    if mt::is_index(&image.top.media_type)
        && let Ok(blobs) = blobs_of(store, &image.top)
        && blobs.iter().all(|d| store.has_blob(d))
    {
        let mut top = image.top.clone();
        top.annotations = None;
        return Ok((top, blobs));
    }
    let size = store.blob_size(&image.manifest_digest)?;
    let top = Descriptor::new(image.manifest.media_type(), image.manifest_digest, size);
    let mut blobs = vec![image.manifest_digest];
    let mut seen = HashSet::from([image.manifest_digest]);
    push_image_blobs(&image.manifest, &mut seen, &mut blobs);
    Ok((top, blobs))
}

/// Every blob under `top` (indexes, manifests, configs, layers), each once,
/// parents before children.
fn blobs_of(store: &Store, top: &Descriptor) -> Result<Vec<Digest>, StoreError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = VecDeque::from([top.digest]);
    while let Some(d) = todo.pop_front() {
        if !seen.insert(d) {
            continue;
        }
        out.push(d);
        match store.read_manifest_kind(&d)? {
            ManifestKind::Image(m) => push_image_blobs(&m, &mut seen, &mut out),
            ManifestKind::Index(i) => todo.extend(i.manifests.iter().map(|m| m.digest)),
        }
    }
    Ok(out)
}

/// A manifest's config and layers, those not `seen` yet.
fn push_image_blobs(m: &Manifest, seen: &mut HashSet<Digest>, out: &mut Vec<Digest>) {
    for b in std::iter::once(m.config.digest).chain(m.layers.iter().map(|l| l.digest)) {
        if seen.insert(b) {
            out.push(b);
        }
    }
}

/// Copies blob `d` into the archive as `path`, verified on the way.
pub fn copy_blob<W: Write>(
    store: &Store,
    out: &mut TarOut<W>,
    d: &Digest,
    path: &str,
    what: &str,
) -> Result<(), ArchiveError> {
    let file = store.open_blob(d).map_err(|e| ArchiveError::SaveImage {
        image: what.to_string(),
        source: e,
    })?;
    let size = file
        .metadata()
        .map_err(|e| ArchiveError::Io {
            path: store.blob_path(d),
            source: e,
        })?
        .len();
    let reader = Checked::new(
        BufReader::with_capacity(1 << 20, file),
        size,
        *d,
        format!("blob {d}"),
    );
    out.stream(path, size, reader)
        .map_err(|e| ArchiveError::SaveBroken {
            image: what.to_string(),
            why: format!("{path}: {e}"),
        })
}

/// Passes exactly `size` bytes through and fails the read that would end
/// the stream unless they hash to `expected` and nothing follows: a tar
/// member must be as long as its header says, and must be what it claims.
pub struct Checked<R> {
    inner: R,
    remaining: u64,
    hash: Option<Sha256Writer>,
    expected: Digest,
    what: String,
}

impl<R: Read> Checked<R> {
    pub fn new(inner: R, size: u64, expected: Digest, what: String) -> Self {
        Checked {
            inner,
            remaining: size,
            hash: Some(Sha256Writer::new()),
            expected,
            what,
        }
    }

    fn invalid(&self, why: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("{} {why}", self.what))
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            let Some(hash) = self.hash.take() else {
                return Ok(0);
            };
            let mut extra = [0u8; 1];
            if self.inner.read(&mut extra)? != 0 {
                return Err(self.invalid("is longer than its recorded size"));
            }
            let actual = hash.finish();
            if actual != self.expected {
                return Err(self.invalid(&format!(
                    "is damaged: it hashes to {actual}, not {}",
                    self.expected
                )));
            }
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.remaining) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} is shorter than its recorded size", self.what),
            ));
        }
        if let Some(h) = &mut self.hash {
            h.update(&buf[..n]);
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Counts what passes, for the report.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The archive being written: plain ustar members, root-owned, mtime 0, so
/// the same images give the same bytes.
pub struct TarOut<W: Write> {
    tar: tar::Builder<Counting<W>>,
}

impl<W: Write> TarOut<W> {
    fn new(out: W) -> Self {
        TarOut {
            tar: tar::Builder::new(Counting {
                inner: out,
                bytes: 0,
            }),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h
    }

    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.tar
            .append_data(&mut h, format!("{path}/"), io::empty())
    }

    pub fn bytes(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        self.tar.append_data(&mut h, path, data)
    }

    /// A member of `size` bytes read from `data`, which must yield exactly that.
    pub fn stream(&mut self, path: &str, size: u64, data: impl Read) -> io::Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, size);
        self.tar.append_data(&mut h, path, data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar.append_link(&mut h, path, target)
    }

    /// Ends the archive; returns its length.
    fn finish(self) -> io::Result<u64> {
        let mut counting = self.tar.into_inner()?;
        counting.flush()?;
        Ok(counting.bytes)
    }
}
