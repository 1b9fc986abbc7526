//! Errors of the registry client. Each names the registry and what was being
//! done, so one line tells a user which server failed at what.

use crate::layer::LayerError;
use crate::oci::Digest;
use crate::store::StoreError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Unknown host, refused connection, TLS failure, timeout.
    #[error("{registry}: {what}: {why}")]
    Connect {
        registry: String,
        what: String,
        why: String,
        /// Worth another try (a refused or broken connection, a timeout),
        /// unlike an unknown host or a certificate that is not trusted.
        transient: bool,
    },
    #[error("{registry}: {what}: authentication required; log in with `layerfs login {registry}`")]
    AuthRequired { registry: String, what: String },
    #[error("{registry}: {what}: the registry refused the username or password")]
    BadCredentials { registry: String, what: String },
    #[error("{registry}: {what}: access denied{detail}")]
    Denied {
        registry: String,
        what: String,
        detail: String,
    },
    #[error("{registry}: {what}: not found{detail}")]
    NotFound {
        registry: String,
        what: String,
        detail: String,
    },
    #[error("{registry}: {what}: the registry answered {status}{detail}")]
    Status {
        registry: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{registry}: {what}: the manifest is larger than {limit} bytes")]
    ManifestTooLarge {
        registry: String,
        what: String,
        limit: u64,
    },
    /// The registry answered, but not what the protocol says it should.
    #[error("{registry}: {what}: {why}")]
    BadResponse {
        registry: String,
        what: String,
        why: String,
    },
    #[error(
        "{registry}: {what}: digest mismatch: expected {expected}, the bytes received hash to {actual}"
    )]
    DigestMismatch {
        registry: String,
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{registry}: {what}: the download broke after {got} of {size} bytes: {why}")]
    Transfer {
        registry: String,
        what: String,
        got: u64,
        size: u64,
        why: String,
    },
    #[error("{registry}: {what}: no image for platform {platform} (the index has {available})")]
    NoPlatform {
        registry: String,
        what: String,
        platform: String,
        available: String,
    },
    #[error("{registry}: {what} is not a container image: {why}")]
    NotAnImage {
        registry: String,
        what: String,
        why: String,
    },
    #[error("{}: {why}", path.display())]
    Config { path: PathBuf, why: String },
    #[error("credential helper {}: {why}", program.display())]
    CredentialHelper { program: PathBuf, why: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cancelled after another download failed")]
    Cancelled,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layer(#[from] LayerError),
}

impl RegistryError {
    /// Whether trying the same request again may help (network trouble, a
    /// registry that is restarting), as opposed to an answer that will not change.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Connect { transient, .. } => *transient,
            RegistryError::Transfer { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}
