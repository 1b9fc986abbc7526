//! Errors of the union view, each with the errno the filesystem answers.

use crate::layer::{LayerError, ReadError};

#[derive(Debug, thiserror::Error)]
pub enum UnionError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("no such attribute")]
    NoData,
    #[error("buffer too small")]
    Range,
    #[error("invalid argument")]
    Invalid,
    #[error("read-only file system")]
    ReadOnly,
    #[error("directory not empty")]
    NotEmpty,
    #[error("file exists")]
    Exists,
    #[error("file name too long")]
    NameTooLong,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("not supported")]
    NotSupported,
    #[error("stale handle")]
    BadHandle,
    #[error("{0}")]
    Read(#[from] ReadError),
    #[error("{0}")]
    Layer(#[from] LayerError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl UnionError {
    /// The errno a filesystem call answers with: the single table from our
    /// errors to the kernel's.
    pub fn errno(&self) -> i32 {
        match self {
            UnionError::NotFound => libc::ENOENT,
            UnionError::NotDir => libc::ENOTDIR,
            UnionError::IsDir => libc::EISDIR,
            UnionError::NoData => libc::ENODATA,
            UnionError::Range => libc::ERANGE,
            UnionError::Invalid => libc::EINVAL,
            UnionError::ReadOnly => libc::EROFS,
            UnionError::NotEmpty => libc::ENOTEMPTY,
            UnionError::Exists => libc::EEXIST,
            UnionError::NameTooLong => libc::ENAMETOOLONG,
            UnionError::NotPermitted => libc::EPERM,
            UnionError::NotSupported => libc::EOPNOTSUPP,
            UnionError::BadHandle => libc::EBADF,
            // Damaged layer data: the files it holds give EIO, the rest is served.
            UnionError::Read(_) | UnionError::Layer(_) => libc::EIO,
            UnionError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

pub type Result<T> = std::result::Result<T, UnionError>;
