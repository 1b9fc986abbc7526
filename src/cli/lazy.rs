//! What the commands share for lazy images: the `--prefetch` choice, the
//! registry fetcher every process installs, and pulling an image lazily
//! when a command names one the store lacks.

use super::transfer::TransportArgs;
use anyhow::{Context, Result};
use layerfs::oci::Reference;
use layerfs::registry::{PullOptions, RangeFetcher, RegistryConfig, Silent, pull};
use layerfs::store::{Store, StoreError, partial};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Prefetch {
    /// Fetch the rest of every layer behind the reads
    All,
    /// Fetch only what is read
    None,
}

/// Lets every reader of a partial blob in this process fetch what it lacks
/// from the registry it came from (credentials as `login` saved them).
pub fn install_fetcher() {
    install_fetcher_with(layerfs::registry::ClientOptions::new(
        RegistryConfig::from_env(),
    ));
}

/// As `install_fetcher`, with a command's transport flags (`--insecure`,
/// `--ca-cert`), so that reads reach the registry the pull did.
pub fn install_fetcher_with(opts: layerfs::registry::ClientOptions) {
    partial::set_fetcher(Arc::new(RangeFetcher::new(opts)));
}

/// `image` as the store names it: itself when the store has it, else the
/// name a lazy pull of it from its registry gave (manifest, config and each
/// layer's index local; layer data fetched as read).
pub fn pull_if_missing(store: &Store, image: &str, transport: &TransportArgs) -> Result<String> {
    match store.resolve(image) {
        Ok(_) => return Ok(image.to_string()),
        Err(StoreError::ImageNotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    // Only a name that says its registry is looked for on one.
    let Ok(reference) = Reference::parse(image) else {
        return Ok(image.to_string());
    };
    if !image.contains('/') || !image.split('/').next().is_some_and(is_registry_host) {
        return Ok(image.to_string());
    }
    let mut opts = PullOptions::new(transport.client_options());
    opts.lazy = true;
    let report =
        pull(store, &reference, &opts, &Silent).with_context(|| format!("pull {image}"))?;
    Ok(report.name)
}

fn is_registry_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}
