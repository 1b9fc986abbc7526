//! What pull and push tell their caller as they go, so the CLI can draw
//! progress bars or print lines without the library knowing which.

use crate::oci::Digest;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobKind {
    Layer,
    Config,
}

/// How a blob ended up where it had to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Pull: the store had it; push: the registry had it.
    Exists,
    Downloaded,
    Pushed,
    /// Push: linked from another repository of the registry.
    Mounted,
}

#[derive(Debug)]
pub enum Event<'a> {
    /// A line of status, such as `Pulling from me/app`.
    Status(&'a str),
    /// A blob transfer starts (total size in bytes).
    Start {
        digest: &'a Digest,
        kind: BlobKind,
        size: u64,
    },
    /// Bytes done so far of a started blob.
    Bytes { digest: &'a Digest, done: u64 },
    /// A transfer broke and is being resumed or retried.
    Retry { digest: &'a Digest, why: &'a str },
    /// A blob is done (or was never needed).
    Done {
        digest: &'a Digest,
        kind: BlobKind,
        size: u64,
        outcome: BlobOutcome,
        /// For `Mounted`, the repository it came from.
        from: Option<&'a str>,
    },
}

/// Receives events from several download threads at once.
pub trait Progress: Sync {
    fn event(&self, e: Event<'_>);
}

/// Discards every event.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event<'_>) {}
}
