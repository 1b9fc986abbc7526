//! Writing a new layer blob: a tar stream (GNU headers, PAX records for
//! xattrs), compressed with gzip, zstd or not at all, stored as it is written
//! and indexed afterwards. Headers carry only what the caller gives, so the
//! same entries in the same order give the same digest.

use super::LayerError;
use super::compression::Compression;
use super::ingest::{LayerInfo, index_blob};
use crate::oci::Sha256Writer;
use crate::store::{BlobWriter, Store};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

/// Ownership, permissions, mtime and xattrs of an entry to write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TarMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

enum Compressor {
    None(BlobWriter),
    Gzip(flate2::write::GzEncoder<BlobWriter>),
    Zstd(zstd::Encoder<'static, BlobWriter>),
}

impl Compressor {
    fn finish(self) -> io::Result<BlobWriter> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
        }
    }
}

impl Write for Compressor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
        }
    }
}

/// Hashes the uncompressed tar (the diff_id) on its way to the compressor.
struct DiffTee {
    inner: Compressor,
    hash: Sha256Writer,
}

impl Write for DiffTee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub struct LayerWriter<'s> {
    store: &'s Store,
    tar: tar::Builder<DiffTee>,
}

fn io_err(store: &Store, e: io::Error) -> LayerError {
    LayerError::io(&store.root().join("layerfs/tmp"), e)
}

impl<'s> LayerWriter<'s> {
    pub fn new(store: &'s Store, compression: Compression) -> Result<Self, LayerError> {
        let blob = store.blob_writer()?;
        let inner = match compression {
            Compression::None => Compressor::None(blob),
            // mtime 0 and no file name in the gzip header: reproducible digests.
            Compression::Gzip => {
                Compressor::Gzip(flate2::GzBuilder::new().write(blob, flate2::Compression::new(6)))
            }
            Compression::Zstd => {
                Compressor::Zstd(zstd::Encoder::new(blob, 3).map_err(|e| io_err(store, e))?)
            }
        };
        let mut tar = tar::Builder::new(DiffTee {
            inner,
            hash: Sha256Writer::new(),
        });
        tar.mode(tar::HeaderMode::Complete);
        Ok(LayerWriter { store, tar })
    }

    fn header(&self, meta: &TarMeta, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode & 0o7777);
        h.set_uid(meta.uid as u64);
        h.set_gid(meta.gid as u64);
        h.set_mtime(meta.mtime.max(0) as u64);
        h.set_size(0);
        h
    }

    fn pax(&mut self, meta: &TarMeta) -> Result<(), LayerError> {
        if meta.xattrs.is_empty() {
            return Ok(());
        }
        let mut sorted = meta.xattrs.clone();
        sorted.sort();
        let keys: Vec<(String, Vec<u8>)> = sorted
            .into_iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{}", String::from_utf8_lossy(&k)), v))
            .collect();
        self.tar
            .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(|e| io_err(self.store, e))
    }

    fn append(
        &mut self,
        mut h: tar::Header,
        path: &[u8],
        data: impl Read,
    ) -> Result<(), LayerError> {
        self.tar
            .append_data(&mut h, OsStr::from_bytes(path), data)
            .map_err(|e| io_err(self.store, e))
    }

    pub fn add_dir(&mut self, path: &[u8], meta: &TarMeta) -> Result<(), LayerError> {
        self.pax(meta)?;
        let h = self.header(meta, tar::EntryType::Directory);
        let mut p = path.to_vec();
        p.push(b'/');
        self.append(h, &p, io::empty())
    }

    pub fn add_file(
        &mut self,
        path: &[u8],
        meta: &TarMeta,
        size: u64,
        data: impl Read,
    ) -> Result<(), LayerError> {
        self.pax(meta)?;
        let mut h = self.header(meta, tar::EntryType::Regular);
        h.set_size(size);
        let mut data = data.take(size);
        self.append(h, path, &mut data)?;
        Ok(())
    }

    pub fn add_symlink(
        &mut self,
        path: &[u8],
        meta: &TarMeta,
        target: &[u8],
    ) -> Result<(), LayerError> {
        self.pax(meta)?;
        let mut h = self.header(meta, tar::EntryType::Symlink);
        self.tar
            .append_link(&mut h, OsStr::from_bytes(path), OsStr::from_bytes(target))
            .map_err(|e| io_err(self.store, e))
    }

    /// A hard link to `target`, an entry written earlier in this layer.
    pub fn add_hardlink(
        &mut self,
        path: &[u8],
        meta: &TarMeta,
        target: &[u8],
    ) -> Result<(), LayerError> {
        let mut h = self.header(meta, tar::EntryType::Link);
        self.tar
            .append_link(&mut h, OsStr::from_bytes(path), OsStr::from_bytes(target))
            .map_err(|e| io_err(self.store, e))
    }

    pub fn add_device(
        &mut self,
        path: &[u8],
        meta: &TarMeta,
        block: bool,
        major: u32,
        minor: u32,
    ) -> Result<(), LayerError> {
        self.pax(meta)?;
        let kind = if block {
            tar::EntryType::Block
        } else {
            tar::EntryType::Char
        };
        let mut h = self.header(meta, kind);
        h.set_device_major(major)
            .map_err(|e| io_err(self.store, e))?;
        h.set_device_minor(minor)
            .map_err(|e| io_err(self.store, e))?;
        self.append(h, path, io::empty())
    }

    pub fn add_fifo(&mut self, path: &[u8], meta: &TarMeta) -> Result<(), LayerError> {
        self.pax(meta)?;
        let h = self.header(meta, tar::EntryType::Fifo);
        self.append(h, path, io::empty())
    }

    /// `.wh.NAME` beside `path`: hides `path` in the layers below.
    pub fn add_whiteout(&mut self, path: &[u8]) -> Result<(), LayerError> {
        let (dir, name) = split(path);
        let mut p = dir.to_vec();
        p.extend_from_slice(b".wh.");
        p.extend_from_slice(name);
        let h = self.header(&TarMeta::default(), tar::EntryType::Regular);
        self.append(h, &p, io::empty())
    }

    /// `DIR/.wh..wh..opq`: hides everything the layers below have in `dir`.
    pub fn add_opaque(&mut self, dir: &[u8]) -> Result<(), LayerError> {
        let mut p = dir.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(b".wh..wh..opq");
        let h = self.header(&TarMeta::default(), tar::EntryType::Regular);
        self.append(h, &p, io::empty())
    }

    /// Ends the archive, stores the blob and indexes it.
    pub fn finish(self) -> Result<LayerInfo, LayerError> {
        let store = self.store;
        let tee = self.tar.into_inner().map_err(|e| io_err(store, e))?;
        let diff_id = tee.hash.finish();
        let blob = tee.inner.finish().map_err(|e| io_err(store, e))?;
        let (digest, _) = blob.commit(None)?;
        let index = index_blob(store, &digest)?;
        let info = LayerInfo::from_index(&index);
        debug_assert_eq!(info.diff_id, diff_id);
        Ok(info)
    }
}

/// (`dir/` with its trailing slash, or empty; name)
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => (&path[..0], path),
    }
}
