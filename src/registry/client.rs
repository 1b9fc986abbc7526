//! `Client`: one registry over HTTP(S). It owns the transport choice (HTTPS
//! with the system trust store plus an optional CA; plain HTTP only for
//! `--insecure` or a loopback host, as Docker treats localhost), the auth
//! dance, retries with backoff, and the Distribution API calls themselves.
//! Only this module talks to the HTTP client crate.

use super::RegistryError;
use super::auth::{Auth, Challenge, Header, Scopes, TokenResponse, parse_challenge};
use super::config::RegistryConfig;
use super::credentials::Credentials;
use super::tls;
use crate::oci::{Descriptor, Digest, ManifestKind, media_type as mt};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::fs::File;
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;
use ureq::http::{Method, Request, Response};
use ureq::tls::TlsConfig;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{ConnectProxyConnector, Connector, TcpConnector};
use ureq::{Agent, Body, SendBody};

/// Manifests and indexes larger than this are refused (as containerd does):
/// they are read into memory, and no real one comes near.
const MAX_MANIFEST: u64 = 4 << 20;

/// Retries for connection errors, 5xx and 429 answers.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// Wait before the second try; doubled for each further one.
    pub delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            delay: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    pub fn backoff(&self, failures: u32) -> Duration {
        self.delay * 2u32.saturating_pow(failures.saturating_sub(1).min(6))
    }

    /// Calls `attempt` until `retry_why` finds no reason to try again in its
    /// outcome, or the tries are used up; returns the last outcome.
    fn run<T>(
        &self,
        mut attempt: impl FnMut() -> T,
        retry_why: impl Fn(&T) -> Option<String>,
    ) -> T {
        let mut failures = 0;
        loop {
            let out = attempt();
            match retry_why(&out) {
                Some(why) if failures + 1 < self.attempts => {
                    failures += 1;
                    log::info!("{why}; retrying ({failures}/{})", self.attempts - 1);
                    std::thread::sleep(self.backoff(failures));
                }
                _ => return out,
            }
        }
    }
}

/// How long a registry may take. A request that is not a blob transfer
/// (ping, token, manifest, HEAD, upload session) has an overall deadline,
/// headers to last byte; a blob download, which may rightly take hours,
/// must instead keep a minimum rate: it fails when fewer than `min_bytes`
/// arrive in a `window`. So a registry trickling 1 byte/s cannot keep a
/// pull busy forever. A connection silent for `idle` is cut in any case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    pub request: Duration,
    pub window: Duration,
    pub min_bytes: u64,
    /// The socket timeouts: connecting (at most 30 s), waiting for the
    /// answer, and each read of its body.
    pub idle: Duration,
    /// Whether a request cut for silence is sent again. Lazy reads say no:
    /// their reader has given up by then, and another try would hold a
    /// fetch thread for another `idle`.
    pub retry_idle: bool,
}

/// Sets `Deadlines::request`, in seconds.
pub const TIMEOUT_ENV: &str = "LAYERFS_REGISTRY_TIMEOUT";

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            request: Duration::from_secs(120),
            window: Duration::from_secs(30),
            min_bytes: 32 << 10,
            idle: Duration::from_secs(120),
            retry_idle: true,
        }
    }
}

impl Deadlines {
    /// The defaults, with `request` from LAYERFS_REGISTRY_TIMEOUT when it
    /// holds a positive number of seconds (else a warning, and the default).
    pub fn from_env() -> Deadlines {
        let mut d = Deadlines::default();
        if let Ok(v) = std::env::var(TIMEOUT_ENV) {
            match v.trim().parse::<u64>() {
                Ok(secs) if secs > 0 => d.request = Duration::from_secs(secs),
                _ => log::warn!(
                    "{TIMEOUT_ENV}={v:?} is not a positive number of seconds; using {}",
                    d.request.as_secs()
                ),
            }
        }
        d
    }
}

/// How to reach a registry.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Plain HTTP allowed, and TLS certificates not verified (`--insecure`).
    pub insecure: bool,
    /// A CA to trust besides the system's (`--ca-cert`); the one remembered
    /// by `login` is used when this is unset.
    pub ca_cert: Option<PathBuf>,
    pub config: RegistryConfig,
    /// Used instead of the saved ones (login checks new credentials with it).
    pub credentials: Option<Credentials>,
    pub retry: RetryPolicy,
    pub deadlines: Deadlines,
}

impl ClientOptions {
    pub fn new(config: RegistryConfig) -> ClientOptions {
        ClientOptions {
            insecure: false,
            ca_cert: None,
            config,
            credentials: None,
            retry: RetryPolicy::default(),
            deadlines: Deadlines::from_env(),
        }
    }
}

/// A request body that can be sent again on a retry.
#[derive(Clone, Copy)]
pub enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of `file` from `offset`.
    File {
        file: &'a File,
        offset: u64,
        len: u64,
    },
}

impl Payload<'_> {
    fn len(&self) -> u64 {
        match self {
            Payload::Empty => 0,
            Payload::Bytes(b) => b.len() as u64,
            Payload::File { len, .. } => *len,
        }
    }
}

/// Reads a range of a file with pread, so several requests can share it.
struct FileRange<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for FileRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the blob file is shorter than its size",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// One request, described so it can be rebuilt for a retry or after auth.
pub struct Req<'a> {
    pub method: Method,
    /// A path (`/v2/...`) or an absolute URL (upload locations, redirects).
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Payload<'a>,
    pub scopes: &'a Scopes,
    /// For error messages: `GET manifest me/app:1`.
    pub what: String,
    /// Whether the request may be repeated on a connection error or 5xx.
    pub idempotent: bool,
    /// A blob download: kept to a minimum rate, not to `Deadlines::request`.
    pub transfer: bool,
}

impl<'a> Req<'a> {
    pub fn new(method: Method, url: String, scopes: &'a Scopes, what: String) -> Req<'a> {
        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::PUT);
        Req {
            method,
            url,
            headers: Vec::new(),
            body: Payload::Empty,
            scopes,
            what,
            idempotent,
            transfer: false,
        }
    }
    pub fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
    pub fn body(mut self, b: Payload<'a>) -> Self {
        self.body = b;
        self
    }
    pub fn once(mut self) -> Self {
        self.idempotent = false;
        self
    }
    pub fn transfer(mut self) -> Self {
        self.transfer = true;
        self
    }
}

pub struct Client {
    registry: String,
    base: String,
    agent: Agent,
    auth: Auth,
    retry: RetryPolicy,
    deadlines: Deadlines,
    /// One token request at a time, so parallel transfers needing the same
    /// scope wait for the first one's token instead of each asking.
    token_fetch: std::sync::Mutex<()>,
}

/// A manifest as the registry served it.
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

impl Client {
    /// Connects to `registry` (`host[:port]`): picks the scheme and learns
    /// how it wants to be authenticated from `GET /v2/`.
    pub fn connect(registry: &str, opts: &ClientOptions) -> Result<Client, RegistryError> {
        let creds = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None => opts.config.credentials(registry)?,
        };
        let ca = opts
            .ca_cert
            .clone()
            .or_else(|| opts.config.ca_cert(registry));
        let agent = make_agent(registry, ca.as_ref(), opts.insecure, opts.deadlines.idle)?;
        let mut client = Client {
            registry: registry.to_string(),
            base: String::new(),
            agent,
            auth: Auth::new(creds),
            retry: opts.retry,
            deadlines: opts.deadlines,
            token_fetch: std::sync::Mutex::new(()),
        };
        let plain_allowed = opts.insecure || is_loopback(registry);
        let retry = client.retry;
        retry.run(
            || {
                client.base = format!("https://{registry}");
                match client.ping() {
                    Err(https_err) if plain_allowed => {
                        // The server may speak plain HTTP. It is taken for a
                        // registry only if /v2/ answers as one, so a TLS server's
                        // "400: HTTP request to an HTTPS server" keeps the TLS error.
                        client.base = format!("http://{registry}");
                        client.ping().map_err(|_| https_err)
                    }
                    r => r,
                }
            },
            |r| {
                r.as_ref()
                    .err()
                    .filter(|e| e.is_transient())
                    .map(|e| e.to_string())
            },
        )?;
        Ok(client)
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    pub fn deadlines(&self) -> Deadlines {
        self.deadlines
    }

    fn ping(&self) -> Result<(), RegistryError> {
        let what = "GET /v2/".to_string();
        let resp = self.raw(&Req::new(
            Method::GET,
            "/v2/".into(),
            &Scopes::none(),
            what.clone(),
        ))?;
        match resp.status().as_u16() {
            200 => Ok(()),
            401 => {
                let c = challenge_of(&resp).ok_or_else(|| {
                    self.bad(
                        &what,
                        "401 without a WWW-Authenticate challenge we understand",
                    )
                })?;
                self.auth.set_challenge(c);
                Ok(())
            }
            s => Err(self.bad(
                &what,
                &format!("answered {s}; this does not look like an OCI registry"),
            )),
        }
    }

    /// Checks that the credentials are accepted: Basic on `/v2/`, or a
    /// token from the realm for Bearer registries (what `login` verifies).
    pub fn check_login(&self) -> Result<(), RegistryError> {
        let what = "login".to_string();
        match self.auth.challenge() {
            Challenge::None => Ok(()),
            Challenge::Basic => {
                let resp = self.send(Req::new(
                    Method::GET,
                    "/v2/".into(),
                    &Scopes::none(),
                    what.clone(),
                ))?;
                self.expect(resp, &[200], &what).map(|_| ())
            }
            Challenge::Bearer { realm, service, .. } => {
                self.fetch_token(&realm, service.as_deref(), &Scopes::none(), &what)?;
                Ok(())
            }
        }
    }

    /// Sends `req` with authentication, answering challenges and retrying
    /// transient failures. Any final status is returned to the caller except
    /// 401, which becomes an auth error.
    pub fn send(&self, req: Req<'_>) -> Result<Response<Body>, RegistryError> {
        let mut reauthed = false;
        self.retry.run(
            || self.send_once(&req, &mut reauthed),
            |r| match r {
                Ok(r) if req.idempotent => self.retry_why(&req.what, r),
                _ => None,
            },
        )?
    }

    /// One try of `send`, answering a 401 challenge once per `send`. The
    /// outer error is final (auth); the inner result may be worth a retry.
    #[allow(clippy::type_complexity)]
    fn send_once(
        &self,
        req: &Req<'_>,
        reauthed: &mut bool,
    ) -> Result<Result<Response<Body>, RegistryError>, RegistryError> {
        loop {
            // Credentials go to this registry only, never to an upload
            // Location on another host.
            let ours = origin(&self.url(&req.url)) == origin(&self.base);
            let auth = match ours {
                true => self.auth_header(req.scopes, &req.what)?,
                false => None,
            };
            let sent = auth.clone();
            let resp = match self.raw_with(req, auth) {
                Ok(resp) if resp.status().as_u16() == 401 => resp,
                other => return Ok(other),
            };
            if !ours {
                return Err(RegistryError::Denied {
                    registry: self.registry.clone(),
                    what: req.what.clone(),
                    detail: format!(
                        ": {} asks for credentials, which go to the registry only",
                        origin(&self.url(&req.url))
                    ),
                });
            }
            if *reauthed || !self.on_unauthorized(&resp, req, sent.as_deref())? {
                return Err(self.auth_error(&req.what, sent.is_some()));
            }
            *reauthed = true;
        }
    }

    /// Why an answer to `what` is worth another try (a 5xx or 429, a broken
    /// connection), for the log; None when it is not.
    fn retry_why(&self, what: &str, r: &Result<Response<Body>, RegistryError>) -> Option<String> {
        match r {
            Ok(resp) => {
                let s = resp.status().as_u16();
                (s >= 500 || s == 429).then(|| format!("{}: {what}: answered {s}", self.registry))
            }
            Err(e) => e.is_transient().then(|| e.to_string()),
        }
    }

    /// The Authorization value for `scopes`, fetching a token if needed.
    fn auth_header(&self, scopes: &Scopes, what: &str) -> Result<Option<String>, RegistryError> {
        let mut held = None;
        loop {
            let h = self.auth.header(scopes);
            if matches!(h, Header::NeedToken { .. }) && held.is_none() {
                // Another thread may be fetching this very token: wait, look again.
                held = Some(self.token_fetch.lock().unwrap_or_else(|p| p.into_inner()));
                continue;
            }
            return self.header_value(h, what);
        }
    }

    fn header_value(&self, h: Header, what: &str) -> Result<Option<String>, RegistryError> {
        match h {
            Header::None => Ok(None),
            Header::Basic(v) => Ok(Some(format!("Basic {v}"))),
            Header::Bearer(t) => Ok(Some(format!("Bearer {t}"))),
            Header::NeedToken {
                realm,
                service,
                scopes,
            } => {
                let t = self.fetch_token(&realm, service.as_deref(), &scopes, what)?;
                self.auth.store_token(&scopes, t.clone());
                Ok(Some(format!("Bearer {t}")))
            }
        }
    }

    /// Learns from a 401 to a request sent with Authorization `sent` how to
    /// authenticate; true when a retry can succeed.
    fn on_unauthorized(
        &self,
        resp: &Response<Body>,
        req: &Req<'_>,
        sent: Option<&str>,
    ) -> Result<bool, RegistryError> {
        let Some(c) = challenge_of(resp) else {
            return Ok(false);
        };
        let before = self.auth.challenge();
        self.auth.set_challenge(c.clone());
        match c {
            // Only worth a retry if we have credentials we did not send.
            Challenge::Basic => Ok(self.auth.credentials().is_some()
                && !(sent.is_some() && before == Challenge::Basic)),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                // Another thread may have replaced the token already: keep theirs.
                if let Some(t) = sent.and_then(|a| a.strip_prefix("Bearer ")) {
                    self.auth.drop_token(req.scopes, t);
                }
                // The registry may name a scope we did not ask for.
                if let Some(s) = scope {
                    let mut wanted = req.scopes.clone();
                    wanted.add(&s);
                    if wanted != *req.scopes {
                        let _one = self.token_fetch.lock().unwrap_or_else(|p| p.into_inner());
                        let t = self.fetch_token(&realm, service.as_deref(), &wanted, &req.what)?;
                        self.auth.store_token(req.scopes, t);
                    }
                }
                Ok(true)
            }
            Challenge::None => Ok(false),
        }
    }

    /// GET realm?service=..&scope=.. with Basic credentials when we have
    /// them (anonymous tokens otherwise), as Docker's token protocol says.
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &Scopes,
        what: &str,
    ) -> Result<String, RegistryError> {
        let mut url = realm.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(s) = service {
            url.push_str(&format!("{sep}service={}", enc(s)));
            sep = '&';
        }
        for s in scopes.iter() {
            url.push_str(&format!("{sep}scope={}", enc(s)));
            sep = '&';
        }
        let none = Scopes::none();
        let creds = self.auth.credentials();
        // An identity token is an OAuth2 refresh token: POSTed to the realm
        // as Docker does, never sent as a password.
        let form = creds.and_then(|c| c.identity_token()).map(|t| {
            let mut f = format!(
                "grant_type=refresh_token&client_id=layerfs&refresh_token={}",
                enc(t)
            );
            if let Some(s) = service {
                f.push_str(&format!("&service={}", enc(s)));
            }
            let scope: Vec<&str> = scopes.iter().collect();
            if !scope.is_empty() {
                f.push_str(&format!("&scope={}", enc(&scope.join(" "))));
            }
            f
        });
        let mut req = match &form {
            Some(f) => Req::new(
                Method::POST,
                realm.to_string(),
                &none,
                format!("{what}: token from {realm}"),
            )
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(Payload::Bytes(f.as_bytes())),
            None => Req::new(
                Method::GET,
                url,
                &none,
                format!("{what}: token from {realm}"),
            ),
        };
        let auth = creds
            .filter(|_| form.is_none())
            .map(|c| format!("Basic {}", c.basic_value()));
        let mut resp = self.retry.run(
            || self.raw_with(&req, auth.clone()),
            |r| self.retry_why(&req.what, r),
        )?;
        req.what = format!("{what}: token");
        match resp.status().as_u16() {
            200 => {}
            401 | 403 if creds.is_some() => {
                return Err(RegistryError::BadCredentials {
                    registry: self.registry.clone(),
                    what: what.to_string(),
                });
            }
            401 | 403 => {
                return Err(RegistryError::AuthRequired {
                    registry: self.registry.clone(),
                    what: what.to_string(),
                });
            }
            _ => return Err(self.status_error(resp, &req.what)),
        }
        let body = read_limited(&mut resp, 1 << 20).map_err(|e| self.bad(&req.what, &e))?;
        serde_json::from_slice::<TokenResponse>(&body)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| self.bad(&req.what, "the token endpoint answered without a token"))
    }

    /// A 401 that another try will not fix: no credentials, wrong ones, or
    /// a token that does not grant what the request needs.
    fn auth_error(&self, what: &str, sent_auth: bool) -> RegistryError {
        let (registry, what) = (self.registry.clone(), what.to_string());
        match (self.auth.credentials(), self.auth.challenge()) {
            (None, _) => RegistryError::AuthRequired { registry, what },
            (Some(_), Challenge::Bearer { .. }) if sent_auth => RegistryError::Denied {
                registry,
                what,
                detail: ": the token the registry issued does not grant it".into(),
            },
            (Some(_), _) => RegistryError::BadCredentials { registry, what },
        }
    }

    /// One request without auth handling or retries.
    fn raw(&self, req: &Req<'_>) -> Result<Response<Body>, RegistryError> {
        self.raw_with(req, None)
    }

    fn raw_with(
        &self,
        req: &Req<'_>,
        auth: Option<String>,
    ) -> Result<Response<Body>, RegistryError> {
        let url = self.url(&req.url);
        let mut b = Request::builder().method(req.method.clone()).uri(&url);
        for (k, v) in &req.headers {
            b = b.header(*k, v);
        }
        if let Some(a) = auth {
            b = b.header("Authorization", a);
        }
        let has_body = !matches!(req.method, Method::GET | Method::HEAD);
        if has_body {
            b = b.header("Content-Length", req.body.len().to_string());
        }
        let what = &req.what;
        // Blob transfers, down or up, take as long as their size needs.
        let deadline = match (req.transfer, &req.body) {
            (true, _) | (_, Payload::File { .. }) => None,
            _ => Some(self.deadlines.request),
        };
        match req.body {
            Payload::Empty => self.run(b, SendBody::none(), what, deadline),
            Payload::Bytes(bytes) => {
                let mut r = bytes;
                self.run(b, SendBody::from_reader(&mut r), what, deadline)
            }
            Payload::File { file, offset, len } => {
                let mut r = FileRange {
                    file,
                    pos: offset,
                    end: offset + len,
                };
                self.run(b, SendBody::from_reader(&mut r), what, deadline)
            }
        }
    }

    fn run(
        &self,
        b: ureq::http::request::Builder,
        body: SendBody<'_>,
        what: &str,
        deadline: Option<Duration>,
    ) -> Result<Response<Body>, RegistryError> {
        let request = b
            .body(body)
            .map_err(|e| self.bad(what, &format!("cannot build the request: {e}")))?;
        // The deadline also covers reading the body, after this returns.
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(deadline)
            .build();
        self.agent
            .run(request)
            .map_err(|e| self.transport_error(what, e))
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{}", self.base, path_or_url)
        }
    }

    fn transport_error(&self, what: &str, e: ureq::Error) -> RegistryError {
        let (why, transient) = match &e {
            ureq::Error::HostNotFound => ("cannot resolve the host name".to_string(), false),
            ureq::Error::Io(io) if io.to_string().contains("failed to lookup address") => {
                (format!("cannot resolve the host name ({io})"), false)
            }
            // Retrying what already had its whole deadline would only
            // multiply the wait.
            ureq::Error::Timeout(ureq::Timeout::Global) => (self.deadline_passed(), false),
            ureq::Error::Timeout(t) => (format!("timed out ({t})"), self.deadlines.retry_idle),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
                "connection refused; is the registry running?".to_string(),
                true,
            ),
            ureq::Error::BadUri(u) => (format!("bad URL {u}"), false),
            other => {
                let s = other.to_string();
                if s.contains("CaUsedAsEndEntity") {
                    (
                        format!(
                            "TLS: {s}: the server presents a self-signed certificate; \
                             trust that certificate with --ca-cert FILE, or use --insecure"
                        ),
                        false,
                    )
                } else if s.contains("InvalidContentType") || s.contains("corrupt message") {
                    (
                        format!("TLS: {s} (the server may speak plain HTTP: use --insecure)"),
                        false,
                    )
                } else if s.to_ascii_lowercase().contains("certificate") {
                    (
                        format!("TLS: {s} (trust its CA with --ca-cert FILE)"),
                        false,
                    )
                } else {
                    (s, true)
                }
            }
        };
        RegistryError::Connect {
            registry: self.registry.clone(),
            what: what.to_string(),
            why,
            transient,
        }
    }

    fn deadline_passed(&self) -> String {
        format!(
            "no complete answer within {} s (set {TIMEOUT_ENV}=SECONDS to wait longer)",
            self.deadlines.request.as_secs()
        )
    }

    pub fn bad(&self, what: &str, why: &str) -> RegistryError {
        RegistryError::BadResponse {
            registry: self.registry.clone(),
            what: what.to_string(),
            why: why.to_string(),
        }
    }

    /// Passes answers with an expected status; turns others into errors
    /// carrying the registry's own message.
    pub fn expect(
        &self,
        resp: Response<Body>,
        ok: &[u16],
        what: &str,
    ) -> Result<Response<Body>, RegistryError> {
        if ok.contains(&resp.status().as_u16()) {
            Ok(resp)
        } else {
            Err(self.status_error(resp, what))
        }
    }

    pub fn status_error(&self, mut resp: Response<Body>, what: &str) -> RegistryError {
        let status = resp.status().as_u16();
        let detail = read_limited(&mut resp, 64 << 10)
            .ok()
            .map(|b| error_detail(&b))
            .filter(|d| !d.is_empty())
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        let (registry, what) = (self.registry.clone(), what.to_string());
        match status {
            401 => RegistryError::AuthRequired { registry, what },
            403 => RegistryError::Denied {
                registry,
                what,
                detail,
            },
            404 => RegistryError::NotFound {
                registry,
                what,
                detail,
            },
            _ => RegistryError::Status {
                registry,
                what,
                status,
                detail,
            },
        }
    }

    // ---- the Distribution API ----

    /// HEAD of a manifest: its digest, when the registry tells.
    pub fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
        scopes: &Scopes,
    ) -> Result<Option<Digest>, RegistryError> {
        let what = format!("HEAD manifest {repo}:{reference}");
        let resp = self.send(
            Req::new(
                Method::HEAD,
                format!("/v2/{repo}/manifests/{reference}"),
                scopes,
                what.clone(),
            )
            .header("Accept", mt::MANIFEST_ACCEPT.join(", ")),
        )?;
        match resp.status().as_u16() {
            200 => Ok(header(&resp, "Docker-Content-Digest").and_then(|d| d.parse().ok())),
            404 => Err(self.status_error(resp, &format!("manifest {repo}:{reference}"))),
            // Some registries refuse HEAD; the caller falls back to GET.
            _ => Ok(None),
        }
    }

    /// GET a manifest or index by tag or digest, at most [`MAX_MANIFEST`]
    /// bytes, verified against the digest asked for and the registry's own
    /// `Docker-Content-Digest`.
    pub fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        scopes: &Scopes,
    ) -> Result<FetchedManifest, RegistryError> {
        let expected = reference.parse::<Digest>().ok();
        let sep = if expected.is_some() { '@' } else { ':' };
        let what = format!("manifest {repo}{sep}{reference}");
        let resp = self.send(
            Req::new(
                Method::GET,
                format!("/v2/{repo}/manifests/{reference}"),
                scopes,
                format!("GET {what}"),
            )
            .header("Accept", mt::MANIFEST_ACCEPT.join(", ")),
        )?;
        let mut resp = self.expect(resp, &[200], &what)?;
        if let Some(len) = header(&resp, "Content-Length").and_then(|l| l.parse::<u64>().ok())
            && len > MAX_MANIFEST
        {
            return Err(self.too_large(&what));
        }
        let told = header(&resp, "Docker-Content-Digest").and_then(|d| d.parse::<Digest>().ok());
        let bytes = match read_limited(&mut resp, MAX_MANIFEST) {
            Ok(b) => b,
            Err(e) if e.contains("limit") => return Err(self.too_large(&what)),
            Err(e) if e == DEADLINE_PASSED => {
                return Err(RegistryError::Connect {
                    registry: self.registry.clone(),
                    what,
                    why: self.deadline_passed(),
                    transient: false,
                });
            }
            Err(e) => return Err(self.bad(&what, &format!("reading the manifest failed: {e}"))),
        };
        let digest = Digest::of(&bytes);
        for want in [expected, told].into_iter().flatten() {
            if want != digest {
                return Err(RegistryError::DigestMismatch {
                    registry: self.registry.clone(),
                    what,
                    expected: want,
                    actual: digest,
                });
            }
        }
        Ok(FetchedManifest { bytes, digest })
    }

    /// GET the manifest an index's entry `desc` names: its digest and size
    /// checked, parsed. Returns the bytes as served and what they hold.
    pub fn get_child_manifest(
        &self,
        repo: &str,
        desc: &Descriptor,
        scopes: &Scopes,
    ) -> Result<(Vec<u8>, ManifestKind), RegistryError> {
        let m = self.get_manifest(repo, &desc.digest.to_string(), scopes)?;
        let what = format!("manifest {repo}@{}", desc.digest);
        if desc.size != m.bytes.len() as u64 {
            return Err(self.bad(
                &what,
                &format!("{} bytes where the index says {}", m.bytes.len(), desc.size),
            ));
        }
        let kind = ManifestKind::parse(&m.bytes)
            .map_err(|e| self.bad(&what, &format!("bad manifest: {e}")))?;
        Ok((m.bytes, kind))
    }

    fn too_large(&self, what: &str) -> RegistryError {
        RegistryError::ManifestTooLarge {
            registry: self.registry.clone(),
            what: what.to_string(),
            limit: MAX_MANIFEST,
        }
    }

    /// PUT a manifest, and check the digest the registry reports, if it
    /// does, is the one of `bytes`. True when the registry answered with
    /// `OCI-Subject`: it keeps the referrers of the manifest's `subject`.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        scopes: &Scopes,
    ) -> Result<bool, RegistryError> {
        let what = format!("PUT manifest {repo}:{reference}");
        let resp = self.send(
            Req::new(
                Method::PUT,
                format!("/v2/{repo}/manifests/{reference}"),
                scopes,
                what.clone(),
            )
            .header("Content-Type", media_type)
            .body(Payload::Bytes(bytes)),
        )?;
        let resp = self.expect(resp, &[200, 201], &what)?;
        let expected = Digest::of(bytes);
        if let Some(got) = header(&resp, "Docker-Content-Digest").and_then(|d| d.parse().ok())
            && got != expected
        {
            return Err(RegistryError::DigestMismatch {
                registry: self.registry.clone(),
                what,
                expected,
                actual: got,
            });
        }
        Ok(header(&resp, "OCI-Subject").is_some())
    }

    /// The referrers of manifest `digest` (`GET /v2/NAME/referrers/DIGEST`,
    /// image-spec 1.1) of type `artifact_type`, or None when the registry
    /// has no referrers API (it answers 404 or 405).
    pub fn get_referrers(
        &self,
        repo: &str,
        digest: &Digest,
        artifact_type: &str,
        scopes: &Scopes,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let what = format!("GET referrers of {repo}@{digest}");
        let mut resp = self.send(
            Req::new(
                Method::GET,
                format!(
                    "/v2/{repo}/referrers/{digest}?artifactType={}",
                    enc(artifact_type)
                ),
                scopes,
                what.clone(),
            )
            .header("Accept", mt::OCI_INDEX),
        )?;
        match resp.status().as_u16() {
            200 => read_limited(&mut resp, MAX_MANIFEST)
                .map(Some)
                .map_err(|e| self.bad(&what, &e)),
            404 | 405 => Ok(None),
            _ => Err(self.status_error(resp, &what)),
        }
    }

    /// GET a small blob whole (at most `limit` bytes), checked against `desc`.
    pub fn get_small_blob(
        &self,
        repo: &str,
        desc: &Descriptor,
        limit: u64,
        scopes: &Scopes,
    ) -> Result<Vec<u8>, RegistryError> {
        let what = format!("blob {}", desc.digest);
        if desc.size > limit {
            return Err(self.bad(&what, &format!("{} bytes, more than {limit}", desc.size)));
        }
        let (mut resp, _) = self.get_blob(repo, &desc.digest, 0, scopes)?;
        let bytes = read_limited(&mut resp, limit).map_err(|e| self.bad(&what, &e))?;
        let actual = Digest::of(&bytes);
        if actual != desc.digest || bytes.len() as u64 != desc.size {
            return Err(RegistryError::DigestMismatch {
                registry: self.registry.clone(),
                what,
                expected: desc.digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Whether the registry has blob `digest` in `repo`.
    pub fn has_blob(
        &self,
        repo: &str,
        digest: &Digest,
        scopes: &Scopes,
    ) -> Result<bool, RegistryError> {
        let what = format!("HEAD blob {digest} in {repo}");
        let resp = self.send(Req::new(
            Method::HEAD,
            format!("/v2/{repo}/blobs/{digest}"),
            scopes,
            what.clone(),
        ))?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(resp, &what)),
        }
    }

    /// GET a blob from `offset` on (a Range request when not 0). Redirects
    /// to a storage backend are followed, without our Authorization.
    /// Returns the body and whether the server honoured the range.
    pub fn get_blob(
        &self,
        repo: &str,
        digest: &Digest,
        offset: u64,
        scopes: &Scopes,
    ) -> Result<(Response<Body>, bool), RegistryError> {
        let what = format!("blob {digest}");
        let mut req = Req::new(
            Method::GET,
            format!("/v2/{repo}/blobs/{digest}"),
            scopes,
            format!("GET {what}"),
        )
        .transfer();
        if offset > 0 {
            req = req.header("Range", format!("bytes={offset}-"));
        }
        let resp = self.send(req)?;
        let resp = self.expect(resp, &[200, 206], &what)?;
        let ranged = resp.status().as_u16() == 206
            && header(&resp, "Content-Range")
                .is_some_and(|r| r.starts_with(&format!("bytes {offset}-")));
        if resp.status().as_u16() == 206 && !ranged {
            return Err(self.bad(&what, "the registry answered another range than asked"));
        }
        Ok((resp, ranged))
    }

    /// Asks the registry to link `digest` from repository `from` into
    /// `repo`. True when mounted; false when it started an upload instead
    /// (that session is abandoned; the caller starts its own).
    pub fn mount_blob(
        &self,
        repo: &str,
        digest: &Digest,
        from: &str,
        scopes: &Scopes,
    ) -> Result<bool, RegistryError> {
        let what = format!("mount blob {digest} from {from}");
        let resp = self.send(
            Req::new(
                Method::POST,
                format!(
                    "/v2/{repo}/blobs/uploads/?mount={}&from={}",
                    enc(&digest.to_string()),
                    enc(from)
                ),
                scopes,
                what.clone(),
            )
            .once(),
        )?;
        match resp.status().as_u16() {
            201 => Ok(true),
            202 => Ok(false),
            _ => Err(self.status_error(resp, &what)),
        }
    }

    /// Uploads blob `digest` (`size` bytes of `file`): POST a session, then
    /// one PUT, or PATCH chunks of `chunk` bytes and a closing PUT when
    /// larger. Not retried here: a failed session is restarted by the caller.
    #[allow(clippy::too_many_arguments)]
    pub fn upload_blob(
        &self,
        repo: &str,
        digest: &Digest,
        file: &File,
        size: u64,
        chunk: u64,
        scopes: &Scopes,
        on_progress: &dyn Fn(u64),
    ) -> Result<(), RegistryError> {
        let what = format!("upload blob {digest}");
        let resp = self.send(
            Req::new(
                Method::POST,
                format!("/v2/{repo}/blobs/uploads/"),
                scopes,
                what.clone(),
            )
            .once(),
        )?;
        let resp = self.expect(resp, &[202], &what)?;
        let mut location = self.location(&resp, &what)?;
        let mut offset = 0;
        if chunk > 0 && size > chunk {
            while offset < size {
                let len = chunk.min(size - offset);
                let resp = self.send(
                    Req::new(Method::PATCH, location.clone(), scopes, what.clone())
                        .header("Content-Type", "application/octet-stream")
                        .header("Content-Range", format!("{}-{}", offset, offset + len - 1))
                        .body(Payload::File { file, offset, len })
                        .once(),
                )?;
                let resp = self.expect(resp, &[202], &what)?;
                location = self.location(&resp, &what)?;
                offset += len;
                on_progress(offset);
            }
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={}", enc(&digest.to_string()));
        let resp = self.send(
            Req::new(Method::PUT, url, scopes, what.clone())
                .header("Content-Type", "application/octet-stream")
                .body(Payload::File {
                    file,
                    offset,
                    len: size - offset,
                })
                .once(),
        )?;
        let resp = self.expect(resp, &[201, 204], &what)?;
        on_progress(size);
        if let Some(got) = header(&resp, "Docker-Content-Digest").and_then(|d| d.parse().ok())
            && got != *digest
        {
            return Err(RegistryError::DigestMismatch {
                registry: self.registry.clone(),
                what,
                expected: *digest,
                actual: got,
            });
        }
        Ok(())
    }

    /// An upload session's Location: absolute, or a path on this registry.
    fn location(&self, resp: &Response<Body>, what: &str) -> Result<String, RegistryError> {
        let loc = header(resp, "Location")
            .ok_or_else(|| self.bad(what, "the upload answer has no Location header"))?;
        if loc.starts_with("http://") || loc.starts_with("https://") {
            Ok(loc)
        } else if loc.starts_with('/') {
            Ok(format!("{}{loc}", self.base))
        } else {
            Err(self.bad(what, &format!("unusable upload Location {loc:?}")))
        }
    }
}

/// `scheme://host[:port]` of an absolute URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find(['/', '?', '#']) {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn challenge_of(resp: &Response<Body>) -> Option<Challenge> {
    resp.headers()
        .get_all("WWW-Authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(parse_challenge)
        // Prefer Bearer when a registry offers both.
        .max_by_key(|c| matches!(c, Challenge::Bearer { .. }))
}

/// Reads at most `limit` bytes of a body; more is an error naming the limit.
fn read_limited(resp: &mut Response<Body>, limit: u64) -> Result<Vec<u8>, String> {
    resp.body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(n) => format!("body exceeds the limit of {n} bytes"),
            ureq::Error::Timeout(ureq::Timeout::Global) => DEADLINE_PASSED.to_string(),
            other => other.to_string(),
        })
}

/// What `read_limited` says when the request's deadline passed.
const DEADLINE_PASSED: &str = "the request's deadline passed";

/// The messages of a Distribution error body (`{"errors":[{"code","message"}]}`),
/// or the start of a plain-text one.
pub(super) fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        return e
            .errors
            .iter()
            .map(|i| {
                if i.message.is_empty() {
                    i.code.clone()
                } else {
                    i.message.clone()
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Whether `registry` (`host[:port]`) names this machine: Docker lets such
/// registries speak plain HTTP without being listed as insecure.
fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn make_agent(
    registry: &str,
    ca: Option<&PathBuf>,
    insecure: bool,
    idle: Duration,
) -> Result<Agent, RegistryError> {
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(TlsConfig::builder().disable_verification(insecure).build())
        .user_agent(concat!("layerfs/", env!("CARGO_PKG_VERSION")))
        .accept_encoding("identity")
        .timeout_connect(Some(idle.min(Duration::from_secs(30))))
        .timeout_recv_response(Some(idle))
        .timeout_per_read(Some(idle))
        .max_idle_connections_per_host(8)
        .build();
    if insecure {
        return Ok(config.new_agent());
    }
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped, not fatal: a --ca-cert
    // registry still works without them.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    let mut pinned = Vec::new();
    if let Some(path) = ca {
        let bad = |why: String| RegistryError::Config {
            path: path.clone(),
            why,
        };
        let pem =
            std::fs::read(path).map_err(|e| bad(format!("cannot read the CA certificate: {e}")))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
            roots
                .add(cert.clone())
                .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
            pinned.push(cert);
        }
        if pinned.is_empty() {
            return Err(bad("holds no PEM certificate".into()));
        }
        log::debug!("{registry}: trusting the CA in {}", path.display());
    }
    if roots.is_empty() {
        log::warn!("no system CA certificates found (install ca-certificates)");
    }
    let tls = tls::client_config(roots, pinned)
        .map_err(|e| RegistryError::Invalid(format!("{registry}: TLS setup failed: {e}")))?;
    let connector =
        ().chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(tls::TlsConnector { config: tls });
    Ok(Agent::with_parts(
        config,
        connector,
        DefaultResolver::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for (r, want) in [
            ("127.0.0.1:5000", true),
            ("127.1.2.3", true),
            ("localhost:5000", true),
            ("LOCALHOST", true),
            ("[::1]:5000", true),
            ("registry.example:5000", false),
            ("10.0.0.1:5000", false),
            ("localhost.example", false),
        ] {
            assert_eq!(is_loopback(r), want, "{r}");
        }
    }

    #[test]
    fn error_details_from_registry_bodies() {
        assert_eq!(
            error_detail(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
            ),
            "manifest unknown"
        );
        assert_eq!(error_detail(b"upstream broke\nmore"), "upstream broke");
    }
}
