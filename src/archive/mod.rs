//! Image archives: `load` brings OCI layouts (directories), oci-archives and
//! docker-archives (every `docker save` generation, and what ggcr and skopeo
//! write) into the store; `save` writes images out as either archive format.
//!
//! Loading keeps bytes as they are: from an OCI layout the manifest, config
//! and layers are stored byte for byte, so every digest stays; from a
//! docker-archive the layers and config are stored as they are and an OCI
//! manifest is written over them, so the image ID (the config digest) is the
//! one Docker showed. Digests, sizes and diff_ids are all checked, and no
//! name is written until every image of the archive is whole in the store.
//!
//! `source` reads files out of a directory or tar; `oci` and `docker` know
//! one format each, for reading and writing; `load` and `save` drive them,
//! and `save_out` holds what save and both formats share.

mod docker;
mod load;
mod oci;
mod output;
mod save;
mod save_out;
mod source;

pub use load::{LoadOptions, LoadReport, LoadedImage, load, load_reader};
pub use output::Output;
pub use save::{SaveFormat, SaveReport, save, save_to_path};

use crate::image::ImageError;
use crate::layer::LayerError;
use crate::oci::Digest;
use crate::store::StoreError;
use std::path::PathBuf;

#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod tests;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The archive as a whole is unusable.
    #[error("{archive}: {why}")]
    Format { archive: String, why: String },
    /// A file inside the archive is missing, unreadable or malformed.
    #[error("{archive}: {member}: {why}")]
    Member {
        archive: String,
        member: String,
        why: String,
    },
    #[error(
        "{archive}: {member}: content does not match its digest: expected {expected}, got {actual}"
    )]
    DigestMismatch {
        archive: String,
        member: String,
        expected: Digest,
        actual: Digest,
    },
    /// `layer` names the file and its place: `l.tar, layer 2 of manifest.json entry 1`.
    #[error("{archive}: {layer}: its diff_id is {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        archive: String,
        layer: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{archive}: {member}: {source}")]
    Layer {
        archive: String,
        member: String,
        source: LayerError,
    },
    #[error("{archive}: {source}")]
    Image { archive: String, source: ImageError },
    #[error("{archive}: {source}")]
    Store { archive: String, source: StoreError },
    /// Nothing in the archive is an image for the wanted platform.
    #[error("{archive}: {why}")]
    NoImage { archive: String, why: String },
    #[error("{0}: a repository name without tag or digest is needed, e.g. example.com/app")]
    BadRepository(String),
    /// An image to save could not be found or read.
    #[error("{image}: {source}")]
    SaveImage { image: String, source: StoreError },
    #[error("{image}: {why}")]
    SaveBroken { image: String, why: String },
    /// An output path that cannot be written as a file.
    #[error("{}: cannot write the output there: {why}", path.display())]
    Output { path: PathBuf, why: String },
}
