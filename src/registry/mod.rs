//! The registry client: `pull` and `push` over the OCI Distribution API,
//! and the `login` credentials they use. Works with any registry that
//! speaks the API (distribution, Harbor, zot, GHCR, Docker Hub).
//!
//! ```text
//! pull  -> Client (scheme, auth, retries)  -> BlobReader (resumable GET) -> layer::ingest
//! push  -> Client                          -> HEAD / mount / POST+PUT (or PATCH chunks)
//! login -> Client::check_login             -> RegistryConfig (auth.json, 0600, or a
//!                                             docker-credential-NAME helper)
//! ```
//!
//! Only this module uses the HTTP client crate; the CLI gets progress
//! through [`Progress`] and never sees HTTP.

mod auth;
mod blob_reader;
mod client;
mod config;
mod credentials;
mod error;
mod estargz;
mod index_sources;
pub mod lazy;
mod progress;
mod pull;
mod push;
mod referrers;
mod sources;
mod tls;

pub use client::{ClientOptions, Deadlines, RetryPolicy, TIMEOUT_ENV};
pub use config::RegistryConfig;
pub use credentials::Credentials;
pub use error::RegistryError;
pub use estargz::EstargzSource;
pub use lazy::RangeFetcher;
pub use progress::{BlobKind, BlobOutcome, Event, Progress, Silent};
pub use pull::{PullOptions, PullReport, pull};
pub use push::{PushOptions, PushReport, push};
pub use referrers::{
    INDEX_ARTIFACT_TYPE, Published, fetch_published_indexes, index_push, referrers_tag,
};

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Manifests in a chain of nested image indexes, the image's own included,
/// beyond which pull and push refuse the image: no real one nests this deep,
/// and a registry must not lead a pull down an endless chain.
const MAX_INDEX_DEPTH: usize = 8;

/// Runs `f` on each of `jobs`, taken in list order, with `threads` threads
/// (1 to 16); returns what each returned, in no set order. The first failure
/// stops the rest: jobs not started are dropped, running ones see `cancel` set.
fn run_parallel<J: Send, T: Send>(
    jobs: Vec<J>,
    threads: usize,
    f: impl Fn(J, &AtomicBool) -> Result<T, RegistryError> + Sync,
) -> Result<Vec<T>, RegistryError> {
    let queue = Mutex::new(VecDeque::from(jobs));
    let outcomes = Mutex::new(Vec::new());
    let cancel = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, 16) {
            s.spawn(|| {
                while !cancel.load(Ordering::Relaxed) {
                    let Some(job) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                        return;
                    };
                    let out = f(job, &cancel);
                    if out.is_err() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut o) = outcomes.lock() {
                        o.push(out);
                    }
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
    // The first real failure, not the jobs it cancelled.
    outcomes.sort_by_key(|o| match o {
        Ok(_) => 2,
        Err(RegistryError::Cancelled) => 1,
        Err(_) => 0,
    });
    outcomes.into_iter().collect()
}

/// Checks `creds` against `registry` and saves them (and `opts.ca_cert`,
/// to be trusted for that registry from now on) when it accepts them: in
/// the credential helper a config names for the registry, else in our
/// auth.json. Returns where they went.
pub fn login(
    registry: &str,
    creds: &Credentials,
    opts: &ClientOptions,
) -> Result<String, RegistryError> {
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
    opts.config.store_credentials(registry, creds)
}

/// Pulls image `name` with the saved settings (credentials, CAs), as `docker
/// run` and `docker build` do for an image they lack.
pub fn pull_missing(store: &crate::store::Store, name: &str) -> Result<PullReport, RegistryError> {
    pull_missing_with(store, name, ClientOptions::new(RegistryConfig::from_env()))
}

/// As `pull_missing`, with the command's transport (`--insecure`, `--ca-cert`).
pub fn pull_missing_with(
    store: &crate::store::Store,
    name: &str,
    client: ClientOptions,
) -> Result<PullReport, RegistryError> {
    let reference =
        crate::oci::Reference::parse(name).map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let mut opts = PullOptions::new(client);
    // Lazy where a layer's index can be had: the data comes as it is read.
    opts.lazy = true;
    pull(store, &reference, &opts, &Silent)
}

/// Forgets the saved credentials of `registry` (ours, and the credential
/// helper's a config names for it); false when there were none.
pub fn logout(registry: &str, config: &RegistryConfig) -> Result<bool, RegistryError> {
    config.forget_credentials(registry)
}

/// The parsers of what a registry sends, reached by `crate::fuzzing` (they
/// stay private otherwise): a `WWW-Authenticate` value, and a body read as
/// a token answer and as an error answer.
#[doc(hidden)]
pub fn fuzz_response(www_authenticate: &str, body: &[u8]) -> (Option<String>, String) {
    let challenge = auth::parse_challenge(www_authenticate).map(|c| format!("{c:?}"));
    let token = serde_json::from_slice::<auth::TokenResponse>(body)
        .ok()
        .and_then(auth::TokenResponse::into_token);
    let detail = client::error_detail(body);
    (challenge, format!("{token:?} {detail}"))
}

#[cfg(test)]
mod tests;
