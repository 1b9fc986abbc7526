//! Writing tar streams: `TarWriter` writes entries (GNU headers, PAX records
//! for xattrs) to any sink; `LayerWriter` is one whose sink compresses (gzip,
//! zstd or none) into a new blob of the store, hashing the tar on the way
//! (the diff_id), and which indexes the blob when finished. Headers carry
//! only what the caller gives, so the same entries in the same order give
//! the same digest.

use super::LayerError;
use super::compression::Compression;
use super::estargz;
use super::ingest::{LayerInfo, index_blob};
use crate::oci::Sha256Writer;
use crate::store::{BlobWriter, Store};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::ops::{Deref, DerefMut};
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

pub struct TarWriter<W: Write> {
    tar: tar::Builder<W>,
}

fn werr(e: io::Error) -> LayerError {
    LayerError::Write(e)
}

impl<W: Write> TarWriter<W> {
    pub fn new(sink: W) -> Self {
        let mut tar = tar::Builder::new(sink);
        tar.mode(tar::HeaderMode::Complete);
        TarWriter { tar }
    }

    fn header(meta: &TarMeta, kind: tar::EntryType) -> tar::Header {
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
            .map_err(werr)
    }

    fn append(
        &mut self,
        mut h: tar::Header,
        path: &[u8],
        data: impl Read,
    ) -> Result<(), LayerError> {
        self.tar
            .append_data(&mut h, OsStr::from_bytes(path), data)
            .map_err(werr)
    }

    pub fn add_dir(&mut self, path: &[u8], meta: &TarMeta) -> Result<(), LayerError> {
        self.pax(meta)?;
        let h = Self::header(meta, tar::EntryType::Directory);
        let mut p = path.to_vec();
        p.push(b'/');
        self.append(h, &p, io::empty())
    }

    /// A regular file of `size` bytes read from `data` (which must give them all).
    pub fn add_file(
        &mut self,
        path: &[u8],
        meta: &TarMeta,
        size: u64,
        data: impl Read,
    ) -> Result<(), LayerError> {
        self.pax(meta)?;
        let mut h = Self::header(meta, tar::EntryType::Regular);
        h.set_size(size);
        let mut data = Exact {
            inner: data.take(size),
            left: size,
        };
        self.append(h, path, &mut data)
    }

    pub fn add_symlink(
        &mut self,
        path: &[u8],
        meta: &TarMeta,
        target: &[u8],
    ) -> Result<(), LayerError> {
        self.pax(meta)?;
        let mut h = Self::header(meta, tar::EntryType::Symlink);
        self.tar
            .append_link(&mut h, OsStr::from_bytes(path), OsStr::from_bytes(target))
            .map_err(werr)
    }

    /// A hard link to `target`, an entry written earlier in this stream.
    pub fn add_hardlink(
        &mut self,
        path: &[u8],
        meta: &TarMeta,
        target: &[u8],
    ) -> Result<(), LayerError> {
        let mut h = Self::header(meta, tar::EntryType::Link);
        self.tar
            .append_link(&mut h, OsStr::from_bytes(path), OsStr::from_bytes(target))
            .map_err(werr)
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
        let mut h = Self::header(meta, kind);
        h.set_device_major(major).map_err(werr)?;
        h.set_device_minor(minor).map_err(werr)?;
        self.append(h, path, io::empty())
    }

    pub fn add_fifo(&mut self, path: &[u8], meta: &TarMeta) -> Result<(), LayerError> {
        self.pax(meta)?;
        let h = Self::header(meta, tar::EntryType::Fifo);
        self.append(h, path, io::empty())
    }

    /// `.wh.NAME` beside `path`: hides `path` in the layers below.
    pub fn add_whiteout(&mut self, path: &[u8]) -> Result<(), LayerError> {
        let (dir, name) = split(path);
        let mut p = dir.to_vec();
        p.extend_from_slice(b".wh.");
        p.extend_from_slice(name);
        let h = Self::header(&TarMeta::default(), tar::EntryType::Regular);
        self.append(h, &p, io::empty())
    }

    /// `DIR/.wh..wh..opq`: hides everything the layers below have in `dir`.
    pub fn add_opaque(&mut self, dir: &[u8]) -> Result<(), LayerError> {
        let mut p = dir.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(b".wh..wh..opq");
        let h = Self::header(&TarMeta::default(), tar::EntryType::Regular);
        self.append(h, &p, io::empty())
    }

    /// Ends the archive and hands back the sink.
    pub fn finish(self) -> Result<W, LayerError> {
        self.tar.into_inner().map_err(werr)
    }
}

/// Fails when the source ends before the size its header promised (a file
/// that shrank while it was read), instead of writing a short member.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a file ended before its size",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Uncompressed bytes per zstd frame. A frame cannot be entered mid-way,
/// so a lazy read of a zstd layer fetches from its frame's start: one frame
/// per span keeps that to one span's compressed bytes (a whole-layer frame
/// would make a read near the end fetch the whole layer). The layer stays
/// one valid zstd stream; the cost is about 1 % in size (1.3 % on the
/// Debian minbase rootfs tar, level 3: 85.0 MB whole, 86.1 MB in frames).
const ZSTD_FRAME: u64 = super::decode::SPAN;

/// A zstd encoder that ends its frame every [`ZSTD_FRAME`] bytes of input
/// (the next frame starts with the next byte, so no frame is empty).
enum ZstdFrames {
    Frame(zstd::Encoder<'static, BlobWriter>, u64),
    Between(BlobWriter),
    /// A frame's end failed: its error was returned; nothing more goes in.
    Failed,
}

impl ZstdFrames {
    fn new(blob: BlobWriter) -> io::Result<Self> {
        Ok(ZstdFrames::Frame(zstd::Encoder::new(blob, 3)?, 0))
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let ZstdFrames::Between(_) = self
            && let ZstdFrames::Between(blob) = std::mem::replace(self, ZstdFrames::Failed)
        {
            *self = ZstdFrames::Frame(zstd::Encoder::new(blob, 3)?, 0);
        }
        let ZstdFrames::Frame(enc, in_frame) = self else {
            return Err(io::Error::other("a zstd frame failed to end"));
        };
        let room = (ZSTD_FRAME - *in_frame).min(buf.len() as u64) as usize;
        let n = enc.write(&buf[..room])?;
        *in_frame += n as u64;
        if *in_frame == ZSTD_FRAME
            && let ZstdFrames::Frame(enc, _) = std::mem::replace(self, ZstdFrames::Failed)
        {
            *self = ZstdFrames::Between(enc.finish()?);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ZstdFrames::Frame(enc, _) => enc.flush(),
            ZstdFrames::Between(blob) => blob.flush(),
            ZstdFrames::Failed => Err(io::Error::other("a zstd frame failed to end")),
        }
    }

    fn finish(self) -> io::Result<BlobWriter> {
        match self {
            ZstdFrames::Frame(enc, _) => enc.finish(),
            ZstdFrames::Between(blob) => Ok(blob),
            ZstdFrames::Failed => Err(io::Error::other("a zstd frame failed to end")),
        }
    }
}

enum Compressor {
    None(BlobWriter),
    Gzip(flate2::write::GzEncoder<BlobWriter>),
    Zstd(ZstdFrames),
    /// eStargz: the tar is spooled to a temp file, then laid out in gzip
    /// members per chunk with its TOC (it is read twice: headers, then bytes).
    Estargz {
        spool: io::BufWriter<std::fs::File>,
        blob: BlobWriter,
    },
}

impl Compressor {
    /// The blob, and for eStargz what the TOC says.
    fn finish(self) -> Result<(BlobWriter, Option<estargz::Written>), LayerError> {
        match self {
            Compressor::None(w) => Ok((w, None)),
            Compressor::Gzip(g) => Ok((g.finish().map_err(werr)?, None)),
            Compressor::Zstd(z) => Ok((z.finish().map_err(werr)?, None)),
            Compressor::Estargz { spool, mut blob } => {
                let file = spool.into_inner().map_err(|e| werr(e.into_error()))?;
                let written = estargz::write(io::BufReader::new(file), &mut blob)
                    .map_err(|e| LayerError::Estargz(Box::new(e)))?;
                Ok((blob, Some(written)))
            }
        }
    }
}

/// The sink of a layer: compresses into a blob and hashes the tar (diff_id).
pub struct LayerSink {
    inner: Compressor,
    hash: Sha256Writer,
}

impl Write for LayerSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.inner {
            Compressor::None(w) => w.write(buf)?,
            Compressor::Gzip(g) => g.write(buf)?,
            Compressor::Zstd(z) => z.write(buf)?,
            Compressor::Estargz { spool, .. } => spool.write(buf)?,
        };
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
            Compressor::Estargz { spool, .. } => spool.flush(),
        }
    }
}

/// A new layer blob being written; entries through `TarWriter`'s methods.
pub struct LayerWriter<'s> {
    store: &'s Store,
    tar: TarWriter<LayerSink>,
}

impl LayerSink {
    fn new(store: &Store, compression: Compression) -> Result<Self, LayerError> {
        let blob = store.blob_writer()?;
        let inner = match compression {
            Compression::None => Compressor::None(blob),
            // mtime 0 and no file name in the gzip header: reproducible digests.
            Compression::Gzip => {
                Compressor::Gzip(flate2::GzBuilder::new().write(blob, flate2::Compression::new(6)))
            }
            Compression::Zstd => Compressor::Zstd(ZstdFrames::new(blob).map_err(werr)?),
        };
        Ok(LayerSink {
            inner,
            hash: Sha256Writer::new(),
        })
    }

    /// A sink that writes the layer as eStargz (see `estargz`).
    fn estargz(store: &Store) -> Result<Self, LayerError> {
        let dir = store.tmp_dir();
        let spool = tempfile::tempfile_in(&dir).map_err(|e| LayerError::io(&dir, e))?;
        Ok(LayerSink {
            inner: Compressor::Estargz {
                spool: io::BufWriter::with_capacity(1 << 20, spool),
                blob: store.blob_writer()?,
            },
            hash: Sha256Writer::new(),
        })
    }

    /// Stores the blob and indexes it.
    fn store(self, store: &Store) -> Result<LayerInfo, LayerError> {
        let diff_id = self.hash.finish();
        let (blob, toc) = self.inner.finish()?;
        let (digest, _) = blob.commit(None)?;
        let index = index_blob(store, &digest)?;
        let mut info = LayerInfo::from_index(&index);
        match toc {
            // The TOC's entry makes the stream longer than the tar given.
            Some(w) => {
                debug_assert_eq!(info.diff_id, w.diff_id);
                info.toc_digest = Some(w.toc_digest);
            }
            None => debug_assert_eq!(info.diff_id, diff_id),
        }
        Ok(info)
    }
}

impl<'s> LayerWriter<'s> {
    pub fn new(store: &'s Store, compression: Compression) -> Result<Self, LayerError> {
        Ok(LayerWriter {
            store,
            tar: TarWriter::new(LayerSink::new(store, compression)?),
        })
    }

    /// A layer whose tar stream is already written (a whole archive, its
    /// end blocks included): compressed, stored and indexed as it is.
    pub fn from_tar(
        store: &'s Store,
        compression: Compression,
        mut tar: impl Read,
    ) -> Result<LayerInfo, LayerError> {
        let mut sink = LayerSink::new(store, compression)?;
        io::copy(&mut tar, &mut sink).map_err(werr)?;
        sink.store(store)
    }

    /// A new layer written as eStargz: a gzip tar that lazy readers open
    /// from its end (TOC, chunk digests; see `estargz`).
    pub fn estargz(store: &'s Store) -> Result<Self, LayerError> {
        Ok(LayerWriter {
            store,
            tar: TarWriter::new(LayerSink::estargz(store)?),
        })
    }

    /// `from_tar`, written as eStargz.
    pub fn from_tar_estargz(store: &'s Store, mut tar: impl Read) -> Result<LayerInfo, LayerError> {
        let mut sink = LayerSink::estargz(store)?;
        io::copy(&mut tar, &mut sink).map_err(werr)?;
        sink.store(store)
    }

    /// Ends the archive, stores the blob and indexes it.
    pub fn finish(self) -> Result<LayerInfo, LayerError> {
        self.tar.finish()?.store(self.store)
    }
}

impl<'s> Deref for LayerWriter<'s> {
    type Target = TarWriter<LayerSink>;
    fn deref(&self) -> &Self::Target {
        &self.tar
    }
}

impl<'s> DerefMut for LayerWriter<'s> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tar
    }
}

/// (`dir/` with its trailing slash, or empty; name)
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => (&path[..0], path),
    }
}
