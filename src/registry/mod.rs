//! The registry client: `pull` and `push` over the OCI Distribution API,
//! and the `login` credentials they use. Works with any registry that
//! speaks the API (distribution, Harbor, zot, GHCR, Docker Hub).
//!
//! ```text
//! pull  -> Client (scheme, auth, retries)  -> BlobReader (resumable GET) -> layer::ingest
//! push  -> Client                          -> HEAD / mount / POST+PUT (or PATCH chunks)
//! login -> Client::check_login             -> RegistryConfig (auth.json, 0600)
//! ```
//!
//! Only this module uses the HTTP client crate; the CLI gets progress
//! through [`Progress`] and never sees HTTP.

mod auth;
mod blob_reader;
mod client;
mod config;
mod error;
mod progress;
mod pull;
mod push;
mod sources;
mod tls;

pub use client::{ClientOptions, RetryPolicy};
pub use config::{Credentials, RegistryConfig};
pub use error::RegistryError;
pub use progress::{BlobKind, BlobOutcome, Event, Progress, Silent};
pub use pull::{PullOptions, PullReport, pull};
pub use push::{PushOptions, PushReport, push};

/// Manifests in a chain of nested image indexes, the image's own included,
/// beyond which pull and push refuse the image: no real one nests this deep,
/// and a registry must not lead a pull down an endless chain.
const MAX_INDEX_DEPTH: usize = 8;

/// Checks `creds` against `registry` and saves them (and `opts.ca_cert`,
/// to be trusted for that registry from now on) when it accepts them.
pub fn login(
    registry: &str,
    creds: &Credentials,
    opts: &ClientOptions,
) -> Result<(), RegistryError> {
    let mut opts = opts.clone();
    opts.credentials = Some(creds.clone());
    let client = client::Client::connect(registry, &opts)?;
    client.check_login()?;
    if let Some(ca) = &opts.ca_cert {
        let pem = std::fs::read(ca).map_err(|e| RegistryError::Config {
            path: ca.clone(),
            why: e.to_string(),
        })?;
        opts.config.save_ca_cert(registry, &pem)?;
    }
    opts.config.save_credentials(registry, creds)
}

/// Pulls image `name` with the saved settings (credentials, CAs), as `docker
/// run` and `docker build` do for an image they lack.
pub fn pull_missing(store: &crate::store::Store, name: &str) -> Result<PullReport, RegistryError> {
    let reference =
        crate::oci::Reference::parse(name).map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let opts = PullOptions::new(ClientOptions::new(RegistryConfig::from_env()));
    pull(store, &reference, &opts, &Silent)
}

/// Forgets the saved credentials of `registry`; false when there were none.
pub fn logout(registry: &str, config: &RegistryConfig) -> Result<bool, RegistryError> {
    config.remove_credentials(registry)
}

#[cfg(test)]
mod tests;
