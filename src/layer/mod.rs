//! Layers: ingest (one streaming pass that verifies a blob's digest, computes
//! its diff_id and builds its index), the index itself, random-access reads
//! into a layer's files, and writing new layers.
//!
//! Nothing here knows about images or mounts; `union` stacks layers.

mod compression;
mod decode;
mod error;
pub mod estargz;
pub mod index;
mod ingest;
pub mod prefetch;
mod reader;
mod tar;
mod writer;
mod zlib;

pub use compression::{Compression, decompressed};
pub use decode::SPAN;
pub use error::{LayerError, short_name};
pub use index::{Dir, Entry, EntryKind, LayerIndex, NONE};
pub use ingest::{
    INDEX_SPAN, LayerInfo, PUBLISH_SPAN, index_blob, index_blob_with_span, index_only, ingest,
    normalize_path, open_index,
};
pub use reader::{Layer, ReadError, SpanCache, fetch_whole};
pub use writer::{LayerSink, LayerWriter, TarMeta, TarWriter};

#[cfg(test)]
mod index_tests;
#[cfg(test)]
mod lazy_tests;
#[cfg(test)]
mod read_tests;
#[cfg(test)]
mod tests;
