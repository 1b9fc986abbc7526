//! Test servers: a real registry (Debian's `docker-registry`, distribution
//! v2.8) started on 127.0.0.1 with its own port and storage and killed on
//! drop, and a tiny HTTP/1.1 server that either answers by itself (fake
//! registries that misbehave) or forwards to a real one (counting,
//! breaking connections, or demanding Bearer tokens on the way).

use crate::testutil::{have_tool, self_signed};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const USER: &str = "testuser";
pub const PASS: &str = "testpass";

#[derive(Default, Clone, Copy)]
pub struct RegistryKind {
    pub htpasswd: bool,
    pub tls: bool,
    /// With `tls`: a CA:FALSE leaf certificate, instead of the CA:TRUE one
    /// that `openssl req -x509` makes by default (Docker's documented way).
    pub leaf_cert: bool,
}

pub struct Registry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// The self-signed certificate with `tls`.
    pub ca: Option<PathBuf>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Registry {
    /// Starts a registry, or returns None (after a SKIPPED line) when the
    /// tools it needs are missing.
    pub fn start(test: &str, kind: RegistryKind) -> Option<Registry> {
        if !have_tool("docker-registry", test)
            || (kind.htpasswd && !have_tool("htpasswd", test))
            || (kind.tls && !have_tool("openssl", test))
        {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut extra = String::new();
        let mut ca = None;
        if kind.tls {
            let (cert, key) = self_signed(dir.path(), kind.leaf_cert);
            extra.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
            ca = Some(cert);
        }
        let mut auth = String::new();
        if kind.htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASS])
                .output()
                .expect("htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: lfs-test-realm\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n  secret: lfs-test-secret\n{extra}{auth}",
                dir.path().join("data").display()
            );
            let cfg = dir.path().join("config.yml");
            std::fs::write(&cfg, config).unwrap();
            let log_path = dir.path().join("registry.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn docker-registry");
            if wait_ready(&mut child, &addr, kind.tls) {
                return Some(Registry {
                    addr,
                    ca,
                    child,
                    _dir: dir,
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            // Another process took the port in the meantime: try another one.
            assert!(
                log.contains("address already in use"),
                "docker-registry did not start on {addr}: {log}"
            );
        }
        panic!("docker-registry found no free port")
    }
}

/// Polls until `/v2/` answers (for TLS, until the port accepts: the
/// handshake needs a client we do not want here).
fn wait_ready(child: &mut Child, addr: &str, tls: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut s) = TcpStream::connect(addr) {
            if tls {
                return true;
            }
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            let mut head = [0u8; 12];
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_exact(&mut head).is_ok()
                && (head.ends_with(b"200") || head.ends_with(b"401"))
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

// ---- a tiny HTTP server / proxy ----

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    /// A blob GET's digest, `sha256:...`.
    pub fn blob_digest(&self) -> Option<&str> {
        let p = self.path();
        p.contains("/blobs/sha256:")
            .then(|| p.rsplit('/').next().unwrap_or(""))
    }
}

/// What the server does with a request.
pub enum Action {
    /// Pass it to the backend and its answer back.
    Forward,
    /// Forward, but cut the answer's body after this many bytes and close.
    ForwardTruncated(u64),
    /// Answer with these raw bytes (status line, headers, body), then close.
    Respond(Vec<u8>),
    /// Answer with these raw bytes: the status line and headers at once,
    /// then the body `chunk` bytes at a time, one chunk per `every` (a slow
    /// or stalling registry), until done or the client hangs up.
    Trickle {
        raw: Vec<u8>,
        chunk: usize,
        every: Duration,
    },
}

/// One request seen: what was asked and what went back.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub target: String,
    pub range: Option<String>,
    pub status: u16,
    pub body_bytes: u64,
}

pub type Hook = Arc<dyn Fn(&Request) -> Action + Send + Sync>;

pub struct Server {
    pub addr: String,
    pub log: Arc<Mutex<Vec<Logged>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Server {
    /// Serves on a free loopback port; `backend` is the registry to forward to.
    pub fn start(backend: Option<String>, hook: Hook) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop2, log2) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (hook, log, backend) = (hook.clone(), log2.clone(), backend.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, backend.as_deref(), &hook, &log);
                });
            }
        });
        Server {
            addr,
            log,
            stop,
            thread: Some(thread),
        }
    }

    pub fn logged(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    pub fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }
}

/// Serves one request per connection: every answer closes it, so a cut or
/// dropped answer is seen by the client as a broken connection.
fn serve(
    conn: TcpStream,
    backend: Option<&str>,
    hook: &Hook,
    log: &Mutex<Vec<Logged>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    // A TLS ClientHello (our client tries HTTPS first): refuse at once.
    if reader.fill_buf()?.first() == Some(&0x16) {
        return Ok(());
    }
    let mut out = conn;
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    let mut entry = Logged {
        method: req.method.clone(),
        target: req.target.clone(),
        range: req.header("Range").map(str::to_string),
        status: 0,
        body_bytes: 0,
    };
    let result = match hook(&req) {
        Action::Respond(raw) => {
            entry.status = status_of(&raw);
            entry.body_bytes = raw.len() as u64;
            out.write_all(&raw).and_then(|_| out.flush())
        }
        Action::Trickle { raw, chunk, every } => {
            entry.status = status_of(&raw);
            let head = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(raw.len(), |p| p + 4);
            let mut sent = out.write_all(&raw[..head]).and_then(|_| out.flush());
            for part in raw[head..].chunks(chunk.max(1)) {
                if sent.is_err() {
                    break;
                }
                std::thread::sleep(every);
                sent = out.write_all(part).and_then(|_| out.flush());
                entry.body_bytes += part.len() as u64;
            }
            sent
        }
        Action::Forward => forward(
            &req,
            backend.expect("no backend"),
            &mut out,
            None,
            &mut entry,
        ),
        Action::ForwardTruncated(n) => forward(
            &req,
            backend.expect("no backend"),
            &mut out,
            Some(n),
            &mut entry,
        ),
    };
    log.lock().unwrap().push(entry);
    let _ = out.shutdown(Shutdown::Both);
    result
}

fn status_of(raw: &[u8]) -> u16 {
    std::str::from_utf8(&raw[..raw.len().min(12)])
        .ok()
        .and_then(|s| s.get(9..12))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

fn forward(
    req: &Request,
    backend: &str,
    out: &mut dyn Write,
    cut: Option<u64>,
    entry: &mut Logged,
) -> std::io::Result<()> {
    let mut up = TcpStream::connect(backend)?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (k, v) in &req.headers {
        if k.eq_ignore_ascii_case("connection") {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&req.body)?;
    let mut resp = BufReader::new(up);
    // Status line and headers pass as they are; the body is counted (and cut).
    let mut header_bytes = Vec::new();
    loop {
        let mut line = Vec::new();
        if resp.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        header_bytes.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    entry.status = status_of(&header_bytes);
    out.write_all(&header_bytes)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut sent = 0u64;
    loop {
        let want = match cut {
            Some(c) if sent >= c => break,
            Some(c) => buf.len().min((c - sent) as usize),
            None => buf.len(),
        };
        let n = resp.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        sent += n as u64;
    }
    entry.body_bytes = sent;
    out.flush()
}

/// A raw HTTP answer with a body and Content-Length.
pub fn respond(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut s = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("Connection: close\r\n\r\n");
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The referrers API (image-spec 1.1) in front of a registry that lacks it
/// (distribution 2.8): a manifest PUT whose body has a `subject` is
/// forwarded, remembered, and answered with `OCI-Subject`;
/// `GET /v2/NAME/referrers/DIGEST[?artifactType=T]` lists what was
/// remembered for that subject as an image index. Everything else is forwarded.
pub fn referrers_api(backend: String) -> Hook {
    type Seen = Vec<(String, String, serde_json::Value)>; // repo, subject, descriptor
    let seen: Arc<Mutex<Seen>> = Arc::new(Mutex::new(Vec::new()));
    Arc::new(move |req: &Request| {
        let path = req.path().to_string();
        let repo_of = |marker: &str| {
            path.strip_prefix("/v2/")
                .and_then(|p| p.split_once(marker))
                .map(|(repo, rest)| (repo.to_string(), rest.to_string()))
        };
        if req.method == "PUT"
            && let Some((repo, _)) = repo_of("/manifests/")
            && let Ok(m) = serde_json::from_slice::<serde_json::Value>(&req.body)
            && let Some(subject) = m["subject"]["digest"].as_str()
        {
            let mut answer = Vec::new();
            let mut entry = Logged {
                method: String::new(),
                target: String::new(),
                range: None,
                status: 0,
                body_bytes: 0,
            };
            if forward(req, &backend, &mut answer, None, &mut entry).is_err() {
                return Action::Respond(respond("502 Bad Gateway", &[], b""));
            }
            if entry.status == 201 {
                let digest = crate::oci::Digest::of(&req.body).to_string();
                let mut desc = serde_json::json!({
                    "mediaType": m["mediaType"],
                    "digest": digest,
                    "size": req.body.len(),
                });
                for key in ["artifactType", "annotations"] {
                    if !m[key].is_null() {
                        desc[key] = m[key].clone();
                    }
                }
                let mut seen = seen.lock().unwrap();
                if !seen.iter().any(|(_, _, d)| d["digest"] == desc["digest"]) {
                    seen.push((repo, subject.to_string(), desc));
                }
                let line_end = answer.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
                let extra = format!("OCI-Subject: {subject}\r\n");
                answer.splice(line_end..line_end, extra.into_bytes());
            }
            return Action::Respond(answer);
        }
        if req.method == "GET"
            && let Some((repo, subject)) = repo_of("/referrers/")
        {
            let want = req.target.split_once("artifactType=").map(|(_, t)| {
                let t = t.split('&').next().unwrap_or("");
                percent_encoding::percent_decode_str(t)
                    .decode_utf8_lossy()
                    .into_owned()
            });
            let manifests: Vec<serde_json::Value> = seen
                .lock()
                .unwrap()
                .iter()
                .filter(|(r, s, d)| {
                    *r == repo
                        && *s == subject
                        && want
                            .as_ref()
                            .is_none_or(|w| d["artifactType"] == w.as_str())
                })
                .map(|(_, _, d)| d.clone())
                .collect();
            let body = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": crate::oci::media_type::OCI_INDEX,
                "manifests": manifests,
            })
            .to_string();
            let mut headers = vec![("Content-Type", crate::oci::media_type::OCI_INDEX)];
            if want.is_some() {
                headers.push(("OCI-Filters-Applied", "artifactType"));
            }
            return Action::Respond(respond("200 OK", &headers, body.as_bytes()));
        }
        Action::Forward
    })
}
