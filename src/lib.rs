//! layerfs: container images kept as shared, content-addressed OCI layers and
//! served as FUSE filesystems.
//!
//! Dependencies point one way (checked by a test, `depcheck`):
//! `build → run → commit, export, mount, registry → archive, container,
//! flatten → image, union → layer → store → oci`; `cli` (the binary) on top.

pub mod archive;
pub mod commit;
pub mod container;
pub mod dockerfile;
pub mod export;
pub mod flatten;
#[doc(hidden)]
pub mod fuzzing;
pub mod image;
pub mod layer;
pub mod mount;
pub mod oci;
pub mod registry;
pub mod run;
pub mod store;
pub mod union;
pub mod userns;

#[cfg(test)]
mod depcheck;
#[cfg(test)]
mod mutation_tests;
#[cfg(test)]
mod testutil;
