//! What `save` and its two formats (docker.rs, oci.rs) share: the image to
//! save, the archive being written (plain, reproducible ustar members), and
//! blob copies verified on the way.

use super::ArchiveError;
use crate::oci::{Descriptor, Digest, Reference, Sha256Writer};
use crate::store::{ResolvedImage, Store};
use std::io::{self, BufReader, Read, Write};

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
    pub(super) fn new(out: W) -> Self {
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
    pub(super) fn finish(self) -> io::Result<u64> {
        let mut counting = self.tar.into_inner()?;
        counting.flush()?;
        Ok(counting.bytes)
    }
}
