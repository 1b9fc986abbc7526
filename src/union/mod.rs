//! The union: a stack of layers merged into one tree the way the OCI layer
//! spec says (whiteouts hide, opaque markers cut, upper layers win), served
//! through a small filesystem-shaped API. No FUSE types here; `mount` adapts
//! this to fuser.

mod attr;
mod error;
mod stack;
mod tree;

pub use attr::{Attr, FileKind, Timestamp};
pub use error::{Result, UnionError};
pub use stack::{LowerRef, Stack};
pub use tree::{DirEntry, ROOT_INO, UnionFs};

#[cfg(test)]
mod tests;
