//! `OpenFile`: what an open file handle of the union reads and writes.

use super::stack::LowerRef;
use std::fs::File;

/// An open file: lower data (read through its layer) or a host file of the
/// upper directory.
pub enum OpenFile {
    Lower(LowerRef),
    Upper(File),
}

/// What `open` and `create` hand back.
pub struct Opened {
    pub fh: u64,
    /// The upper file, for the FUSE layer to register for passthrough.
    pub upper: Option<File>,
}
