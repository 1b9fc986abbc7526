//! `OpenFile`: what an open file handle of the union reads and writes.

use super::stack::LowerRef;
use std::fs::File;
use std::sync::Arc;

/// An open file: lower data (read through its layer) or a host file of the
/// upper directory.
pub enum OpenFile {
    Lower(LowerRef),
    Upper(File),
}

/// What `open` and `create` hand back.
pub struct Opened {
    pub fh: u64,
    /// The open file, as the handle `fh` holds it.
    pub file: Arc<OpenFile>,
}

impl Opened {
    /// The upper file, for the FUSE layer to register for passthrough.
    pub fn upper(&self) -> Option<&File> {
        match &*self.file {
            OpenFile::Upper(f) => Some(f),
            OpenFile::Lower(_) => None,
        }
    }
}
