//! Blobs: written to a temp file while hashed, fsynced, verified against the
//! expected digest, then renamed into `blobs/sha256/<hex>`. A blob already
//! present is not written twice.

use super::{Result, Store, StoreError};
use crate::oci::{Digest, Sha256Writer};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// Largest JSON blob (manifest, config, index) we read into memory.
pub const MAX_JSON_BLOB: u64 = 16 << 20;

/// Bytes written between requests to the kernel to start writing them out.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// A blob being written. Dropped without `commit`, it leaves nothing behind.
pub struct BlobWriter {
    tmp: NamedTempFile,
    out: io::BufWriter<File>,
    hash: Sha256Writer,
    blobs_dir: PathBuf,
    /// Bytes of the file handed to the kernel's writeback so far.
    written_back: u64,
}

impl BlobWriter {
    pub fn bytes_written(&self) -> u64 {
        self.hash.len()
    }

    /// The temp file the bytes go to until `commit`.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Makes the blob visible if its digest is `expected` (or any, when
    /// `None`). On mismatch nothing is stored.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let tmp_path = self.tmp.path().to_path_buf();
        self.out.flush().map_err(|e| StoreError::io(&tmp_path, e))?;
        let size = self.hash.len();
        let digest = self.hash.finish();
        if let Some(exp) = expected
            && *exp != digest
        {
            return Err(StoreError::DigestMismatch {
                expected: *exp,
                actual: digest,
            });
        }
        let dest = self.blobs_dir.join(digest.hex());
        if dest.exists() {
            return Ok((digest, size));
        }
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| StoreError::io(&tmp_path, e))?;
        self.tmp
            .persist(&dest)
            .map_err(|e| StoreError::io(&dest, e.error))?;
        sync_dir(&self.blobs_dir)?;
        Ok((digest, size))
    }
}

impl BlobWriter {
    /// Makes the written bytes visible at `dest` (derived data named by
    /// something other than its own digest, such as a layer index).
    pub fn commit_to(mut self, dest: &Path) -> Result<()> {
        let tmp_path = self.tmp.path().to_path_buf();
        self.out.flush().map_err(|e| StoreError::io(&tmp_path, e))?;
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| StoreError::io(&tmp_path, e))?;
        self.tmp
            .persist(dest)
            .map_err(|e| StoreError::io(dest, e.error))?;
        if let Some(parent) = dest.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }
}

impl BlobWriter {
    /// Starts writing out what reached the file since the last call, once
    /// there is enough of it: the disk then works while the rest arrives,
    /// and the fsync in `commit` waits for the last few MiB, not the whole
    /// blob. Only a hint; the fsync is what makes the blob durable.
    fn start_writeback(&mut self) {
        let in_file = self.hash.len() - self.out.buffer().len() as u64;
        let len = in_file - self.written_back;
        if len < WRITEBACK_EVERY {
            return;
        }
        let (Ok(offset), Ok(nbytes)) = (
            libc::off64_t::try_from(self.written_back),
            libc::off64_t::try_from(len),
        ) else {
            return;
        };
        let fd = self.out.get_ref().as_raw_fd();
        // SAFETY: fd is our open file for the call; the call reads no memory.
        // A failure costs nothing but the head start, so it is not checked.
        unsafe { libc::sync_file_range(fd, offset, nbytes, libc::SYNC_FILE_RANGE_WRITE) };
        self.written_back = in_file;
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        self.start_writeback();
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Store {
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound(*digest)),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound(*digest),
            _ => StoreError::io(&path, e),
        })
    }

    /// Reads a small blob whole and checks it against its digest (cheap for
    /// JSON, and it keeps a damaged manifest from being trusted).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let file = self.open_blob(digest)?;
        let mut data = Vec::new();
        file.take(MAX_JSON_BLOB + 1)
            .read_to_end(&mut data)
            .map_err(|e| StoreError::io(&path, e))?;
        if data.len() as u64 > MAX_JSON_BLOB {
            return Err(StoreError::BlobTooLarge {
                digest: *digest,
                limit: MAX_JSON_BLOB,
            });
        }
        let actual = Digest::of(&data);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        Ok(data)
    }

    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.tmp_dir();
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&dir)
            .map_err(|e| StoreError::io(&dir, e))?;
        let file = tmp.reopen().map_err(|e| StoreError::io(tmp.path(), e))?;
        Ok(BlobWriter {
            tmp,
            // A write of a whole buffer's worth or more (ingest writes 256 KiB
            // chunks) goes to the file directly, without a copy.
            out: io::BufWriter::with_capacity(256 << 10, file),
            hash: Sha256Writer::new(),
            blobs_dir: self.blobs_dir(),
            written_back: 0,
        })
    }

    /// Stores `data`, verified against `expected` when given.
    pub fn put_blob(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        let digest = Digest::of(data);
        if let Some(exp) = expected
            && *exp != digest
        {
            return Err(StoreError::DigestMismatch {
                expected: *exp,
                actual: digest,
            });
        }
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        let tmp = w.tmp.path().to_path_buf();
        w.write_all(data).map_err(|e| StoreError::io(&tmp, e))?;
        w.commit(Some(&digest)).map(|(d, _)| d)
    }

    /// Every blob digest in the store (files with other names are skipped).
    pub fn list_blobs(&self) -> Result<Vec<Digest>> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))? {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes a blob and its derived layer index.
    pub fn remove_blob(&self, digest: &Digest) -> Result<()> {
        for path in [self.blob_path(digest), self.layer_index_path(digest)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        Ok(())
    }
}

/// Replaces `dest` with `content` atomically: temp file in `tmp_dir`, fsync, rename.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, content: &[u8]) -> Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix("write-")
        .tempfile_in(tmp_dir)
        .map_err(|e| StoreError::io(tmp_dir, e))?;
    tmp.write_all(content)
        .map_err(|e| StoreError::io(tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| StoreError::io(tmp.path(), e))?;
    tmp.persist(dest)
        .map_err(|e| StoreError::io(dest, e.error))?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}
