//! layerfs: container images kept as shared, content-addressed OCI layers and
//! served as FUSE filesystems.
//!
//! Dependencies point one way:
//! `cli → build, run, registry, commit, mount → union, layer → store → oci`.

pub mod image;
pub mod layer;
pub mod oci;
pub mod registry;
pub mod store;

#[cfg(test)]
mod testutil;
