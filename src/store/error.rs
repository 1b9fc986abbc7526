//! Errors of the store, each naming the path or digest it concerns.

use crate::oci::Digest;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {0} is not in the store")]
    BlobNotFound(Digest),
    #[error("blob {digest} is larger than {limit} bytes")]
    BlobTooLarge { digest: Digest, limit: u64 },
    #[error("{}: {why}", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("no such image: {0}")]
    ImageNotFound(String),
    #[error("{what} is ambiguous: it names {candidates}; {hint}")]
    Ambiguous {
        what: String,
        candidates: String,
        hint: &'static str,
    },
    #[error("blob {digest}: {why}")]
    BadBlob { digest: Digest, why: String },
}

impl StoreError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the error is the disk being full (ENOSPC or EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    }
}
