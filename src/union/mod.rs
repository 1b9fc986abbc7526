//! The union: a stack of layers merged into one tree the way the OCI layer
//! spec says (whiteouts hide, opaque markers cut, upper layers win), served
//! through a small filesystem-shaped API. No FUSE types here; `mount` adapts
//! this to fuser.

mod attr;
mod error;
mod handle;
mod merge;
mod name;
mod stack;
mod tree;
pub mod upper;
mod write;

pub use attr::{Attr, FileKind, Timestamp};
pub use error::{Result, UnionError};
pub use handle::{OpenFile, Opened};
pub use stack::{LowerRef, Stack};
pub use tree::{DirEntry, LowerData, ROOT_INO, UnionFs};
pub use upper::{Form, UpperDir};
pub use write::{Caller, SetAttr, SetTime};

#[cfg(test)]
mod test_helpers;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod write_tests;

#[cfg(test)]
mod rootless_tests;

#[cfg(test)]
mod table_tests;
