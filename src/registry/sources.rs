//! Where blobs were seen on registries, so a push can ask the registry to
//! mount a blob from another repository instead of uploading it (Docker
//! keeps the same record as "v2 metadata").
//!
//! ```text
//! ROOT/layerfs/registry/sources/<hex>    one "REGISTRY REPOSITORY" line per place
//! ```
//!
//! Hints only: a stale or lost line costs an upload, never correctness, so
//! write failures are logged and ignored, and gc need not know about them.

use crate::oci::Digest;
use crate::store::Store;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

fn path(store: &Store, digest: &Digest) -> Option<PathBuf> {
    let dir = store.own_dir_for("registry/sources").ok()?;
    Some(dir.join(digest.hex()))
}

/// Notes that `registry` has `digest` in `repo`.
pub fn record(store: &Store, digest: &Digest, registry: &str, repo: &str) {
    let Some(p) = path(store, digest) else {
        return;
    };
    let line = format!("{registry} {repo}");
    if lookup_all(store, digest).contains(&line) {
        return;
    }
    // One short append is one write(2); concurrent appenders do not interleave.
    let res = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = res {
        log::debug!(
            "cannot record the source of {digest} in {}: {e}",
            p.display()
        );
    }
}

fn lookup_all(store: &Store, digest: &Digest) -> Vec<String> {
    path(store, digest)
        .and_then(|p| fs::read_to_string(p).ok())
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Repositories of `registry` known to hold `digest`, other than `except`.
pub fn repos_on(store: &Store, digest: &Digest, registry: &str, except: &str) -> Vec<String> {
    lookup_all(store, digest)
        .into_iter()
        .filter_map(|l| {
            let (r, repo) = l.split_once(' ')?;
            (r == registry && repo != except).then(|| repo.to_string())
        })
        .collect()
}
