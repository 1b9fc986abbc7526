//! The OCI image model: digests, references, media types, descriptors,
//! manifests, image indexes and image configs, for both the OCI and the
//! Docker schema2 media types. Pure data and parsing; no I/O.

mod config;
mod digest;
mod json;
mod manifest;
pub mod media_type;
mod platform;
mod reference;
pub mod time;

pub use config::{ContainerConfig, Healthcheck, HistoryEntry, ImageConfig, RootFs};
pub use digest::{Digest, DigestError, Sha256Writer, is_hex_prefix};
pub use json::{JsonError, from_json, from_json_value};
pub use manifest::{Descriptor, ImageIndex, Manifest, ManifestKind, ParseError};
pub use platform::Platform;
pub use reference::{Reference, ReferenceError};

/// The annotation that names a tag in an OCI image layout's index.json.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
