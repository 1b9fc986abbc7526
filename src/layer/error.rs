//! Errors of layer ingest, indexing, reading and writing.

use crate::store::StoreError;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("empty file: a layer is a tar archive, plain, gzip or zstd")]
    Empty,
    /// A corrupt or truncated gzip/zstd stream, or a read error of the source.
    #[error("{0}")]
    Stream(std::io::Error),
    #[error(transparent)]
    Tar(#[from] super::tar::TarError),
    /// `path` is shortened by `short_name`, as in every variant below.
    #[error("bad entry path {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("entry {path:?} is under {parent:?}, which this layer made a non-directory")]
    UnderNonDir { path: String, parent: String },
    #[error("hard link {path:?} names {target:?}, which comes later in the archive")]
    LinkForward { path: String, target: String },
    #[error("entry {path:?}: {why}")]
    BadXattr { path: String, why: &'static str },
    #[error("layer index {}: {why}", path.display())]
    BadIndex { path: PathBuf, why: String },
    #[error("writing the tar stream: {0}")]
    Write(std::io::Error),
    #[error(transparent)]
    Estargz(Box<EstargzError>),
    /// A layer held in part could not be made whole (lazy images).
    #[error(transparent)]
    Fetch(Box<crate::store::FetchError>),
}

/// A path or name for a one-line message: lossy UTF-8, at most 64 bytes of
/// it (a hostile name can be megabytes long).
pub fn short_name(raw: &[u8]) -> String {
    const SHOWN: usize = 64;
    if raw.len() <= SHOWN {
        return String::from_utf8_lossy(raw).into_owned();
    }
    format!("{}…", String::from_utf8_lossy(&raw[..SHOWN]))
}

impl LayerError {
    pub fn bad_path(raw: &[u8], why: &'static str) -> Self {
        LayerError::BadPath {
            path: short_name(raw),
            why,
        }
    }

    pub fn io(path: &Path, source: std::io::Error) -> Self {
        LayerError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn is_disk_full(&self) -> bool {
        match self {
            LayerError::Store(s) => s.is_disk_full(),
            LayerError::Io { source, .. } | LayerError::Write(source) => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EDQUOT)
                )
            }
            _ => false,
        }
    }
}

/// What is wrong with an eStargz layer (here, not in `estargz.rs`, so that
/// this module depends on no reader or writer).
#[derive(Debug, thiserror::Error)]
pub enum EstargzError {
    #[error("eStargz footer: {0}")]
    Footer(&'static str),
    #[error("eStargz TOC: {0}")]
    Toc(String),
    #[error("eStargz TOC digest is {actual}, the layer descriptor says {expected}")]
    TocDigest {
        expected: crate::oci::Digest,
        actual: crate::oci::Digest,
    },
    #[error("eStargz chunk of {path:?} at {offset}: {why}")]
    Chunk {
        path: String,
        offset: u64,
        why: String,
    },
    #[error("eStargz chunk of {path:?} at {offset}: digest is {actual}, the TOC says {expected}")]
    ChunkDigest {
        path: String,
        offset: u64,
        expected: crate::oci::Digest,
        actual: crate::oci::Digest,
    },
    #[error("eStargz: {path:?} is a sparse file, which eStargz cannot hold")]
    Sparse { path: String },
    #[error(transparent)]
    Tar(#[from] super::tar::TarError),
    #[error("eStargz: {0}")]
    Io(#[from] std::io::Error),
}
