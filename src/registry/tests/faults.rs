//! Bad input and failures: fake registries that answer 404, 401, 5xx in
//! the middle of a blob, wrong bytes, an oversized manifest or a lying
//! Content-Length; refused connections and unknown hosts; and a real
//! registry whose connection breaks mid-pull. Each gives a one-line error
//! naming the registry, and leaves no tag and no half-stored blob.

use super::harness::{Action, Registry, RegistryKind, Request, Server, free_port, respond};
use super::*;
use crate::registry::{Deadlines, RegistryError, Silent, TIMEOUT_ENV, pull};
use crate::testutil::{noise, temp_store};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// An image's blobs, served by a fake registry.
#[derive(Clone)]
pub(super) struct Served {
    pub manifest: Digest,
    pub blobs: HashMap<String, Vec<u8>>,
    pub layers: Vec<Digest>,
}

/// An image built in a throwaway store: a small layer and a larger one
/// (uncompressed, so other bytes of the same length are still a valid tar).
pub(super) fn served(big: usize) -> Served {
    let (_d, store) = temp_store();
    let small = layer(&store, Compression::Gzip, &[("small", b"small")]);
    let large = layer(&store, Compression::None, &[("large", &noise(big, 4))]);
    let desc = image(&store, &[small, large], None, None);
    let m = store.read_manifest(&desc.digest).unwrap();
    let mut blobs = HashMap::new();
    for d in [desc.digest, m.config.digest, small.digest, large.digest] {
        blobs.insert(d.to_string(), blob_bytes(&store, &d));
    }
    Served {
        manifest: desc.digest,
        blobs,
        layers: vec![small.digest, large.digest],
    }
}

pub(super) type Special = dyn Fn(&Request, &Served) -> Option<Action> + Send + Sync;

/// A fake registry serving `img` as `app:1`, with `special` answering first.
pub(super) fn fake(img: Served, special: Arc<Special>) -> Server {
    Server::start(
        None,
        Arc::new(move |req: &Request| {
            if let Some(a) = special(req, &img) {
                return a;
            }
            let path = req.path();
            let head = req.method == "HEAD";
            let body_of = |b: &[u8]| if head { Vec::new() } else { b.to_vec() };
            if path == "/v2/" {
                return Action::Respond(respond("200 OK", &[], b"{}"));
            }
            if path.contains("/manifests/") {
                let bytes = &img.blobs[&img.manifest.to_string()];
                let d = img.manifest.to_string();
                let mut r = respond(
                    "200 OK",
                    &[
                        ("Content-Type", mt::OCI_MANIFEST),
                        ("Docker-Content-Digest", &d),
                    ],
                    &body_of(bytes),
                );
                if head {
                    r = fix_head_length(r, bytes.len());
                }
                return Action::Respond(r);
            }
            if let Some(d) = req.blob_digest()
                && let Some(b) = img.blobs.get(d)
            {
                return Action::Respond(respond("200 OK", &[], b));
            }
            Action::Respond(respond(
                "404 Not Found",
                &[],
                br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#,
            ))
        }),
    )
}

/// A HEAD answer carries the length of the body a GET would have.
fn fix_head_length(raw: Vec<u8>, len: usize) -> Vec<u8> {
    String::from_utf8(raw)
        .unwrap()
        .replacen("Content-Length: 0", &format!("Content-Length: {len}"), 1)
        .into_bytes()
}

/// Pulls `app:1` from `server` into a fresh store; returns the error and
/// checks nothing was tagged or left half-written.
fn pull_fails(addr: &str) -> (RegistryError, tempfile::TempDir, Store) {
    let cfg = tempfile::tempdir().unwrap();
    let (dir, store) = temp_store();
    let r = Reference::parse(&format!("{addr}/app:1")).unwrap();
    let e = pull(&store, &r, &pull_opts(cfg.path()), &Silent).unwrap_err();
    assert!(
        store.image_entries().unwrap().is_empty(),
        "{addr}: a tag was written"
    );
    assert_no_temp_files(&store);
    assert_fsck_clean(&store);
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg}");
    assert!(
        msg.contains(addr),
        "the error does not name the registry: {msg}"
    );
    (e, dir, store)
}

#[test]
fn a_missing_manifest_is_not_found() {
    let s = fake(
        served(1000),
        Arc::new(|req: &Request, _: &Served| {
            req.path().contains("/manifests/").then(|| {
                Action::Respond(respond(
                    "404 Not Found",
                    &[],
                    br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
                ))
            })
        }),
    );
    let (e, _d, _s) = pull_fails(&s.addr);
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("manifest app:1: not found"), "{msg}");
}

#[test]
fn a_401_without_credentials_asks_for_login() {
    let s = fake(
        served(1000),
        Arc::new(|_: &Request, _: &Served| {
            Some(Action::Respond(respond(
                "401 Unauthorized",
                &[("WWW-Authenticate", r#"Basic realm="fake""#)],
                b"",
            )))
        }),
    );
    let (e, _d, _s) = pull_fails(&s.addr);
    assert!(matches!(e, RegistryError::AuthRequired { .. }), "{e}");
    assert!(e.to_string().contains("layerfs login"), "{e}");
}

#[test]
fn a_5xx_in_the_middle_of_a_blob_fails_after_retries_and_stores_nothing() {
    let img = served(400_000);
    let big = img.layers[1];
    let gets = Arc::new(AtomicUsize::new(0));
    let g2 = gets.clone();
    let s = fake(
        img,
        Arc::new(move |req: &Request, img: &Served| {
            if req.blob_digest() != Some(&big.to_string()) {
                return None;
            }
            if g2.fetch_add(1, Ordering::SeqCst) == 0 {
                // Headers for the whole blob, half of it, then the connection drops.
                let bytes = &img.blobs[&big.to_string()];
                let mut r = respond("200 OK", &[], bytes);
                let full = r.len();
                r.truncate(full - bytes.len() / 2);
                return Some(Action::Respond(r));
            }
            Some(Action::Respond(respond(
                "500 Internal Server Error",
                &[],
                b"storage backend down",
            )))
        }),
    );
    let (e, _d, store) = pull_fails(&s.addr);
    let msg = e.to_string();
    assert!(
        msg.contains("500") && msg.contains(&big.to_string()),
        "{msg}"
    );
    assert!(msg.contains("storage backend down"), "{msg}");
    assert!(!store.has_blob(&big));
    // One broken GET, then the resume and its retries.
    assert!(gets.load(Ordering::SeqCst) >= 3, "no retries");
    let ranges: Vec<_> = s.logged().into_iter().filter_map(|l| l.range).collect();
    assert!(
        ranges
            .iter()
            .all(|r| r.starts_with("bytes=") && r != "bytes=0-"),
        "resumed from the byte reached: {ranges:?}"
    );
    assert!(!ranges.is_empty());
}

#[test]
fn bytes_that_do_not_match_the_digest_are_refused() {
    let img = served(3000);
    let big = img.layers[1];
    // The same layer with other file contents: a valid tar of the same size.
    let (_d, other) = temp_store();
    let forged = layer(&other, Compression::None, &[("large", &noise(3000, 99))]);
    let forged_bytes = blob_bytes(&other, &forged.digest);
    assert_eq!(forged_bytes.len(), img.blobs[&big.to_string()].len());
    let s = fake(
        img,
        Arc::new(move |req: &Request, _: &Served| {
            (req.blob_digest() == Some(&big.to_string()))
                .then(|| Action::Respond(respond("200 OK", &[], &forged_bytes)))
        }),
    );
    let (e, _d, store) = pull_fails(&s.addr);
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&forged.digest.to_string()), "{e}");
    assert!(!store.has_blob(&big) && !store.has_blob(&forged.digest));
}

#[test]
fn a_manifest_over_4_mib_is_refused_with_or_without_content_length() {
    for with_length in [true, false] {
        let s = fake(
            served(1000),
            Arc::new(move |req: &Request, _: &Served| {
                if !req.path().contains("/manifests/") {
                    return None;
                }
                let mut big = br#"{"schemaVersion":2,"x":""#.to_vec();
                big.resize(5 << 20, b'a');
                big.extend_from_slice(b"\"}");
                if req.method == "HEAD" {
                    return Some(Action::Respond(respond("405 Method Not Allowed", &[], b"")));
                }
                let mut r = if with_length {
                    respond("200 OK", &[("Content-Type", mt::OCI_MANIFEST)], &big)
                } else {
                    // No length: the body ends when the connection closes.
                    let mut r = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
                    r.extend_from_slice(&big);
                    r
                };
                r.shrink_to_fit();
                Some(Action::Respond(r))
            }),
        );
        let (e, _d, _s) = pull_fails(&s.addr);
        assert!(matches!(e, RegistryError::ManifestTooLarge { .. }), "{e}");
        assert!(e.to_string().contains("4194304"), "{e}");
    }
}

#[test]
fn a_lying_content_length_is_an_error() {
    for delta in [-100i64, 100] {
        let img = served(5000);
        let big = img.layers[1];
        let s = fake(
            img,
            Arc::new(move |req: &Request, img: &Served| {
                if req.blob_digest() != Some(&big.to_string()) {
                    return None;
                }
                let bytes = &img.blobs[&big.to_string()];
                let told = (bytes.len() as i64 + delta) as usize;
                let mut r =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {told}\r\n\r\n").into_bytes();
                r.extend_from_slice(bytes);
                Some(Action::Respond(r))
            }),
        );
        let (e, _d, store) = pull_fails(&s.addr);
        let msg = e.to_string();
        assert!(
            msg.contains("Content-Length") && msg.contains(&big.to_string()),
            "{msg}"
        );
        assert!(!store.has_blob(&big));
    }
}

#[test]
fn a_refused_connection_and_an_unknown_host_are_named() {
    let cfg = tempfile::tempdir().unwrap();
    let (_d, store) = temp_store();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let e = pull(
        &store,
        &Reference::parse(&format!("{addr}/app:1")).unwrap(),
        &pull_opts(cfg.path()),
        &Silent,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&addr) && msg.contains("connection refused"),
        "{msg}"
    );

    let host = "nosuchhost.invalid:5000";
    let e = pull(
        &store,
        &Reference::parse(&format!("{host}/app:1")).unwrap(),
        &pull_opts(cfg.path()),
        &Silent,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(host) && msg.contains("cannot resolve"),
        "{msg}"
    );
    assert!(store.image_entries().unwrap().is_empty());
}

#[test]
fn garbage_instead_of_a_manifest_is_a_clear_error() {
    let s = fake(
        served(1000),
        Arc::new(|req: &Request, _: &Served| {
            req.path().contains("/manifests/").then(|| {
                if req.method == "HEAD" {
                    Action::Respond(respond("404 Not Found", &[], b""))
                } else {
                    Action::Respond(respond("200 OK", &[], b"<html>hello</html>"))
                }
            })
        }),
    );
    // A HEAD 404 already tells the image is not there.
    let (e, _d, _s) = pull_fails(&s.addr);
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");

    let s = fake(
        served(1000),
        Arc::new(|req: &Request, _: &Served| {
            req.path().contains("/manifests/").then(|| {
                if req.method == "HEAD" {
                    Action::Respond(respond("405 Method Not Allowed", &[], b""))
                } else {
                    Action::Respond(respond("200 OK", &[], b"<html>hello</html>"))
                }
            })
        }),
    );
    let (e, _d, _s) = pull_fails(&s.addr);
    assert!(e.to_string().contains("bad manifest"), "{e}");
}

/// The registry's connection breaks in the middle of the big layer, once:
/// the pull resumes with a Range request and completes in one go.
#[test]
fn a_broken_download_resumes_from_where_it_stopped() {
    let Some(reg) = Registry::start("resume", RegistryKind::default()) else {
        return;
    };
    let (_d, src) = temp_store();
    let small = layer(&src, Compression::Gzip, &[("s", b"small")]);
    let big = layer(&src, Compression::Gzip, &[("b", &noise(2_000_000, 7))]);
    let desc = image(&src, &[small, big], None, Some("res:1"));
    let cfg = tempfile::tempdir().unwrap();
    let direct = Reference::parse(&format!("{}/res/app:1", reg.addr)).unwrap();
    crate::registry::push(
        &src,
        "res:1",
        &direct,
        &crate::registry::PushOptions::new(opts(cfg.path())),
        &Silent,
    )
    .unwrap();

    let cut = Arc::new(AtomicBool::new(false));
    let big_d = big.digest.to_string();
    let c2 = cut.clone();
    let proxy = Server::start(
        Some(reg.addr.clone()),
        Arc::new(move |req: &Request| {
            if req.method == "GET"
                && req.blob_digest() == Some(&big_d)
                && !c2.swap(true, Ordering::SeqCst)
            {
                Action::ForwardTruncated(700_000)
            } else {
                Action::Forward
            }
        }),
    );
    let (_d2, dst) = temp_store();
    let r = Reference::parse(&format!("{}/res/app:1", proxy.addr)).unwrap();
    let rep = pull(&dst, &r, &pull_opts(cfg.path()), &Silent).unwrap();
    assert_eq!(rep.digest, desc.digest);
    let config_size = src.read_manifest(&desc.digest).unwrap().config.size;
    assert_eq!(
        rep.bytes_downloaded,
        small.size + big.size + config_size,
        "nothing downloaded twice"
    );
    let big_gets: Vec<_> = proxy
        .logged()
        .into_iter()
        .filter(|l| l.method == "GET" && l.target.ends_with(&big.digest.to_string()))
        .collect();
    assert_eq!(big_gets.len(), 2, "{big_gets:?}");
    assert_eq!(big_gets[0].range, None);
    assert_eq!(big_gets[0].body_bytes, 700_000);
    assert_eq!(big_gets[1].range.as_deref(), Some("bytes=700000-"));
    assert_eq!(big_gets[1].status, 206);
    assert_eq!(blob_bytes(&dst, &big.digest), blob_bytes(&src, &big.digest));
    assert_fsck_clean(&dst);
}

/// The registry dies in the middle of a pull: the pull fails with nothing
/// tagged or half-stored; the next pull fetches only what is missing.
#[test]
fn a_pull_killed_midway_is_completed_by_the_next_one() {
    let Some(reg) = Registry::start("killed_midway", RegistryKind::default()) else {
        return;
    };
    let (_d, src) = temp_store();
    let small = layer(&src, Compression::Gzip, &[("s", b"small")]);
    let big = layer(&src, Compression::Gzip, &[("b", &noise(1_500_000, 8))]);
    let desc = image(&src, &[small, big], None, Some("kill:1"));
    let cfg = tempfile::tempdir().unwrap();
    let direct = Reference::parse(&format!("{}/kill/app:1", reg.addr)).unwrap();
    crate::registry::push(
        &src,
        "kill:1",
        &direct,
        &crate::registry::PushOptions::new(opts(cfg.path())),
        &Silent,
    )
    .unwrap();

    let dead = Arc::new(AtomicBool::new(true));
    let first = Arc::new(AtomicBool::new(true));
    let big_d = big.digest.to_string();
    let (dead2, first2) = (dead.clone(), first.clone());
    let proxy = Server::start(
        Some(reg.addr.clone()),
        Arc::new(move |req: &Request| {
            if !dead2.load(Ordering::SeqCst) || req.blob_digest() != Some(&big_d) {
                return Action::Forward;
            }
            if first2.swap(false, Ordering::SeqCst) {
                // Let the small blobs finish first, then break mid-blob.
                std::thread::sleep(std::time::Duration::from_millis(300));
                return Action::ForwardTruncated(400_000);
            }
            Action::Respond(respond("503 Service Unavailable", &[], b"registry is down"))
        }),
    );
    let (_d2, dst) = temp_store();
    let r = Reference::parse(&format!("{}/kill/app:1", proxy.addr)).unwrap();
    let e = pull(&dst, &r, &pull_opts(cfg.path()), &Silent).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&proxy.addr) && msg.contains("503"), "{msg}");
    assert!(
        dst.image_entries().unwrap().is_empty(),
        "tagged after a failed pull"
    );
    assert!(!dst.has_blob(&big.digest), "a half blob was stored");
    assert!(
        !dst.has_blob(&desc.digest),
        "the manifest was stored before its blobs"
    );
    assert!(dst.has_blob(&small.digest), "the finished layer was kept");
    assert_no_temp_files(&dst);
    assert_fsck_clean(&dst);
    let config = src.read_manifest(&desc.digest).unwrap().config.digest;
    let missing: HashSet<String> = [config, small.digest, big.digest]
        .iter()
        .filter(|d| !dst.has_blob(d))
        .map(|d| d.to_string())
        .collect();

    dead.store(false, Ordering::SeqCst);
    proxy.clear_log();
    let rep = pull(&dst, &r, &pull_opts(cfg.path()), &Silent).unwrap();
    assert_eq!(rep.digest, desc.digest);
    let fetched: HashSet<String> = proxy
        .logged()
        .into_iter()
        .filter(|l| l.method == "GET" && l.target.contains("/blobs/"))
        .map(|l| l.target.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(
        fetched, missing,
        "the second pull fetches only what was missing"
    );
    assert_eq!(blob_bytes(&dst, &big.digest), blob_bytes(&src, &big.digest));
    assert_fsck_clean(&dst);
}

/// Blob GETs redirected to storage elsewhere (as registries on S3 do) are
/// followed, and our credentials are not sent to the other host.
#[test]
fn blob_redirects_are_followed_without_our_credentials() {
    let img = served(20_000);
    let seen_auth = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (img2, seen2) = (img.clone(), seen_auth.clone());
    let storage = Server::start(
        None,
        Arc::new(move |req: &Request| {
            seen2
                .lock()
                .unwrap()
                .push(req.header("Authorization").map(str::to_string));
            let d = req.path().rsplit('/').next().unwrap_or("");
            match img2.blobs.get(d) {
                Some(b) => Action::Respond(respond("200 OK", &[], b)),
                None => Action::Respond(respond("404 Not Found", &[], b"")),
            }
        }),
    );
    let storage_addr = storage.addr.clone();
    let expected = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "u:secret-pass")
    );
    let s = fake(
        img,
        Arc::new(move |req: &Request, _: &Served| {
            if req.header("Authorization") != Some(expected.as_str()) {
                return Some(Action::Respond(respond(
                    "401 Unauthorized",
                    &[("WWW-Authenticate", r#"Basic realm="fake""#)],
                    b"",
                )));
            }
            let d = req.blob_digest()?;
            let loc = format!("http://{storage_addr}/bucket/{d}");
            Some(Action::Respond(respond(
                "307 Temporary Redirect",
                &[("Location", &loc)],
                b"",
            )))
        }),
    );
    let cfg = tempfile::tempdir().unwrap();
    let mut o = pull_opts(cfg.path());
    o.client.credentials = Some(crate::registry::Credentials {
        username: "u".into(),
        password: "secret-pass".into(),
    });
    let (_d, store) = temp_store();
    let r = Reference::parse(&format!("{}/app:1", s.addr)).unwrap();
    let rep = pull(&store, &r, &o, &Silent).unwrap();
    assert_eq!(rep.blobs_downloaded, 3);
    let seen = seen_auth.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "config and two layers came from storage");
    assert!(
        seen.iter().all(Option::is_none),
        "credentials leaked: {seen:?}"
    );
    assert_fsck_clean(&store);
}

/// An upload Location on another host (as registries with separate storage
/// hand out) gets the request, but not our credentials.
#[test]
fn credentials_go_to_the_registry_only() {
    use crate::registry::auth::Scopes;
    use crate::registry::client::{Client, Req};
    // Both ask for credentials when a request comes without them.
    let seen = |log: &Arc<std::sync::Mutex<Vec<Option<String>>>>| {
        let log = log.clone();
        Arc::new(move |req: &Request| {
            let auth = req.header("Authorization").map(str::to_string);
            log.lock().unwrap().push(auth.clone());
            Action::Respond(match auth {
                Some(_) => respond("200 OK", &[], b"{}"),
                None => respond(
                    "401 Unauthorized",
                    &[("WWW-Authenticate", r#"Basic realm="fake""#)],
                    b"",
                ),
            })
        })
    };
    let (at_registry, at_other) = (Arc::default(), Arc::default());
    let registry = Server::start(None, seen(&at_registry));
    let other = Server::start(None, seen(&at_other));
    let cfg = tempfile::tempdir().unwrap();
    let mut o = opts(cfg.path());
    o.credentials = Some(crate::registry::Credentials {
        username: "u".into(),
        password: "p".into(),
    });
    let client = Client::connect(&registry.addr, &o).unwrap();
    let scopes = Scopes::pull("app");
    let put = |url: String| {
        client.send(Req::new(
            ureq::http::Method::PUT,
            url,
            &scopes,
            "PUT".into(),
        ))
    };
    put("/v2/app/blobs/uploads/x".into()).unwrap();
    let at_registry = at_registry.lock().unwrap().clone();
    assert!(at_registry.last().unwrap().is_some(), "{at_registry:?}");
    let err = put(format!("http://{}/upload/x", other.addr)).unwrap_err();
    assert!(matches!(err, RegistryError::Denied { .. }), "{err}");
    assert!(
        at_other.lock().unwrap().iter().all(Option::is_none),
        "credentials leaked to another host"
    );
}

/// Pulls `app:1` from `addr` with `deadlines`; the result.
fn pull_with(addr: &str, deadlines: Deadlines) -> Result<(), RegistryError> {
    let cfg = tempfile::tempdir().unwrap();
    let (_dir, store) = temp_store();
    let mut o = pull_opts(cfg.path());
    o.client.deadlines = deadlines;
    let r = Reference::parse(&format!("{addr}/app:1")).unwrap();
    let result = pull(&store, &r, &o, &Silent).map(drop);
    if result.is_err() {
        assert!(
            store.image_entries().unwrap().is_empty(),
            "a tag was written"
        );
        assert_no_temp_files(&store);
    }
    result
}

#[test]
fn a_manifest_trickling_in_meets_the_request_deadline() {
    let gets = Arc::new(AtomicUsize::new(0));
    let g2 = gets.clone();
    let s = fake(
        served(1000),
        Arc::new(move |req: &Request, img: &Served| {
            if !req.path().contains("/manifests/") || req.method == "HEAD" {
                return None;
            }
            g2.fetch_add(1, Ordering::SeqCst);
            let d = img.manifest.to_string();
            let raw = respond(
                "200 OK",
                &[
                    ("Content-Type", mt::OCI_MANIFEST),
                    ("Docker-Content-Digest", &d),
                ],
                &img.blobs[&d],
            );
            // A byte per 100 ms: the whole manifest would take about a minute.
            Some(Action::Trickle {
                raw,
                chunk: 1,
                every: std::time::Duration::from_millis(100),
            })
        }),
    );
    let deadlines = Deadlines {
        request: std::time::Duration::from_secs(1),
        ..Deadlines::default()
    };
    let e = pull_with(&s.addr, deadlines).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&s.addr) && msg.contains("no complete answer within 1 s"),
        "{msg}"
    );
    assert!(msg.contains(TIMEOUT_ENV), "{msg}");
    assert!(!msg.contains('\n'));
    assert_eq!(
        gets.load(Ordering::SeqCst),
        1,
        "a request that used its whole deadline is not retried"
    );
}

#[test]
fn a_blob_below_the_minimum_rate_fails_and_one_above_it_completes() {
    let img = served(6000);
    let big = img.layers[1];
    let slow = |every_ms: u64, chunk: usize| {
        let big = big.to_string();
        fake(
            img.clone(),
            Arc::new(move |req: &Request, img: &Served| {
                (req.blob_digest() == Some(big.as_str())).then(|| Action::Trickle {
                    raw: respond("200 OK", &[], &img.blobs[&big]),
                    chunk,
                    every: std::time::Duration::from_millis(every_ms),
                })
            }),
        )
    };
    let deadlines = Deadlines {
        request: std::time::Duration::from_secs(1),
        window: std::time::Duration::from_secs(1),
        min_bytes: 1000,
        ..Deadlines::default()
    };
    // 10 bytes per 50 ms: about 200 bytes a second, under the minimum.
    let s = slow(50, 10);
    let e = pull_with(&s.addr, deadlines).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("too slow") && msg.contains(&big.to_string()) && msg.contains(&s.addr),
        "{msg}"
    );
    // 1,000 bytes per 100 ms: above the minimum, and a transfer may take
    // longer than the request deadline.
    let s = slow(100, 1000);
    pull_with(&s.addr, deadlines).unwrap();
}
