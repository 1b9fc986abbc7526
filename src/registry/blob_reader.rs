//! `BlobReader`: a blob download as one `Read`, which reconnects with a
//! Range request when the connection breaks and goes on from the byte it
//! had reached, so a single ingest pass (store, verify, index) survives a
//! flaky network. It never yields more than the descriptor's size, and
//! gives up on a registry slower than `Deadlines` allow.

use super::RegistryError;
use super::auth::Scopes;
use super::client::Client;
use super::progress::{Event, Progress};
use crate::oci::Digest;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Reconnections allowed in all for one blob, however much each one gained.
const MAX_RECONNECTS: u32 = 20;

pub struct BlobReader<'a> {
    pub client: &'a Client,
    pub repo: &'a str,
    pub scopes: &'a Scopes,
    pub digest: Digest,
    pub size: u64,
    pub progress: &'a dyn Progress,
    /// Bytes received over the network, for reports.
    pub received: &'a AtomicU64,
    /// Set when another download failed: stop early.
    pub cancel: &'a AtomicBool,
    /// The real error behind an `io::Error` this reader returned, since the
    /// ingest pass that reads it only passes the io::Error on.
    pub error: Arc<Mutex<Option<RegistryError>>>,
    offset: u64,
    body: Option<ureq::BodyReader<'static>>,
    /// Failures since the last byte was received.
    failures: u32,
    reconnects: u32,
    /// When the current rate window began, and the bytes received in it.
    window: (Instant, u64),
}

impl<'a> BlobReader<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: &'a Client,
        repo: &'a str,
        scopes: &'a Scopes,
        digest: Digest,
        size: u64,
        progress: &'a dyn Progress,
        received: &'a AtomicU64,
        cancel: &'a AtomicBool,
    ) -> Self {
        BlobReader {
            client,
            repo,
            scopes,
            digest,
            size,
            progress,
            received,
            cancel,
            error: Arc::new(Mutex::new(None)),
            offset: 0,
            body: None,
            failures: 0,
            reconnects: 0,
            window: (Instant::now(), 0),
        }
    }

    /// Records `e` as the reason and returns an io::Error carrying its text.
    fn fail(&self, e: RegistryError) -> io::Error {
        let msg = e.to_string();
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(e);
        }
        io::Error::other(msg)
    }

    fn what(&self) -> String {
        format!("blob {}", self.digest)
    }

    fn transfer_error(&self, why: String) -> RegistryError {
        RegistryError::Transfer {
            registry: self.client.registry().to_string(),
            what: self.what(),
            got: self.offset,
            size: self.size,
            why,
        }
    }

    fn open(&mut self) -> Result<(), RegistryError> {
        let (resp, ranged) =
            self.client
                .get_blob(self.repo, &self.digest, self.offset, self.scopes)?;
        // A length other than the manifest's means another blob, or a
        // registry that lies about it; neither is fixed by another try.
        let left = if ranged {
            self.size - self.offset
        } else {
            self.size
        };
        if let Some(len) = resp.body().content_length()
            && len != left
        {
            return Err(self.client.bad(
                &self.what(),
                &format!(
                    "the registry announced {len} bytes (Content-Length) where {left} were expected from the manifest"
                ),
            ));
        }
        let mut body = resp.into_body().into_reader();
        if self.offset > 0 && !ranged {
            // The server sent the whole blob again: skip what we have.
            let skip = self.offset;
            let copied = io::copy(&mut (&mut body).take(skip), &mut io::sink())
                .map_err(|e| self.transfer_error(e.to_string()))?;
            if copied < skip {
                return Err(self.transfer_error(format!(
                    "the registry ignored the Range request and sent only {copied} bytes"
                )));
            }
        }
        self.body = Some(body);
        self.window = (Instant::now(), 0);
        Ok(())
    }

    /// Counts `n` bytes received; an error when a whole window passed with
    /// fewer than the minimum.
    fn check_rate(&mut self, n: u64) -> Result<(), RegistryError> {
        let d = self.client.deadlines();
        self.window.1 += n;
        if self.window.0.elapsed() < d.window {
            return Ok(());
        }
        let got = self.window.1;
        self.window = (Instant::now(), 0);
        if got >= d.min_bytes {
            return Ok(());
        }
        let why = format!(
            "too slow: {got} bytes in {} s, fewer than the {} a blob transfer needs",
            d.window.as_secs(),
            d.min_bytes
        );
        Err(self.transfer_error(why))
    }

    /// A broken connection: give up, or wait and reconnect from `offset`.
    fn broken(&mut self, e: RegistryError) -> io::Result<()> {
        self.body = None;
        self.failures += 1;
        self.reconnects += 1;
        let retry = self.client.retry();
        if !e.is_transient() || self.failures >= retry.attempts || self.reconnects > MAX_RECONNECTS
        {
            return Err(self.fail(e));
        }
        let why = e.to_string();
        log::info!("{why}; resuming from byte {}", self.offset);
        self.progress.event(Event::Retry {
            digest: &self.digest,
            why: &why,
        });
        std::thread::sleep(retry.backoff(self.failures));
        Ok(())
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(self.fail(RegistryError::Cancelled));
            }
            if self.body.is_none() {
                if self.offset == self.size {
                    return Ok(0);
                }
                // The client has already retried the request itself.
                if let Err(e) = self.open() {
                    return Err(self.fail(e));
                }
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            // One byte more than is left, to notice a blob longer than its size.
            let room = (self.size - self.offset).saturating_add(1);
            let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            match body.read(&mut buf[..want]) {
                Ok(0) if self.offset == self.size => return Ok(0),
                Ok(0) => {
                    let e = self.transfer_error("the connection closed early".into());
                    self.broken(e)?;
                }
                Ok(n) if self.offset + n as u64 > self.size => {
                    let e = self.client.bad(
                        &self.what(),
                        &format!(
                            "the registry sent more than the {} bytes the manifest gives",
                            self.size
                        ),
                    );
                    return Err(self.fail(e));
                }
                Ok(n) => {
                    self.offset += n as u64;
                    // Not retried: a registry this slow stays so.
                    if let Err(e) = self.check_rate(n as u64) {
                        return Err(self.fail(e));
                    }
                    self.failures = 0;
                    self.received.fetch_add(n as u64, Ordering::Relaxed);
                    self.progress.event(Event::Bytes {
                        digest: &self.digest,
                        done: self.offset,
                    });
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let e = self.transfer_error(e.to_string());
                    self.broken(e)?;
                }
            }
        }
    }
}
