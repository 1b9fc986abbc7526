//! Authentication and TLS against a real registry: HTTP Basic (htpasswd)
//! with login and logout, TLS with a self-signed CA, and Bearer tokens
//! through a token-issuing front (distribution itself needs an external
//! token server for that, so the test plays it).

use super::harness::{Action, PASS, Registry, RegistryKind, Request, Server, USER, respond};
use super::*;
use crate::registry::{
    Credentials, PullOptions, PushOptions, RegistryError, Silent, login, logout, pull, push,
};
use crate::testutil::temp_store;
use base64::Engine as _;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex, OnceLock};

fn creds(pass: &str) -> Credentials {
    Credentials {
        username: USER.into(),
        password: pass.into(),
    }
}

fn small_image(store: &Store, tag: &str) -> Descriptor {
    let l = layer(store, Compression::Gzip, &[("f", b"auth test")]);
    let l2 = layer(store, Compression::Gzip, &[("g", b"second layer")]);
    image(store, &[l, l2], None, Some(tag))
}

#[test]
fn basic_auth_needs_a_login_and_refuses_a_wrong_password() {
    let kind = RegistryKind {
        htpasswd: true,
        ..Default::default()
    };
    let Some(reg) = Registry::start("basic_auth", kind) else {
        return;
    };
    let cfg = tempfile::tempdir().unwrap();
    let o = opts(cfg.path());
    let (_d, src) = temp_store();
    let desc = small_image(&src, "local:1");
    let target = Reference::parse(&format!("{}/priv/app:1", reg.addr)).unwrap();

    let e = push(
        &src,
        "local:1",
        &target,
        &PushOptions::new(o.clone()),
        &Silent,
    )
    .unwrap_err();
    assert!(matches!(e, RegistryError::AuthRequired { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&reg.addr) && msg.contains(&format!("layerfs login {}", reg.addr)),
        "{msg}"
    );

    let e = login(&reg.addr, &creds("wrong"), &o).unwrap_err();
    assert!(matches!(e, RegistryError::BadCredentials { .. }), "{e}");
    assert!(e.to_string().contains(&reg.addr), "{e}");
    assert!(!e.to_string().contains("wrong"), "the password leaked: {e}");
    assert!(
        !o.config.auth_file().exists(),
        "refused credentials were saved"
    );

    login(&reg.addr, &creds(PASS), &o).unwrap();
    let meta = std::fs::metadata(o.config.auth_file()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(o.config.auth_file()).unwrap();
    assert!(!text.contains(PASS), "password in clear text");
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    assert!(text.contains(&b64) && text.contains(&reg.addr), "{text}");

    push_then_pull(&src, "local:1", &target, &o, &desc);

    assert!(logout(&reg.addr, &o.config).unwrap());
    let (_d3, dst2) = temp_store();
    let e = pull(&dst2, &target, &PullOptions::new(o.clone()), &Silent).unwrap_err();
    assert!(matches!(e, RegistryError::AuthRequired { .. }), "{e}");
    assert!(dst2.image_entries().unwrap().is_empty());
}

/// Both kinds of self-signed certificate: the CA:TRUE one `openssl req
/// -x509` makes (and Docker's docs and registry.sh use), which webpki alone
/// refuses as a server's own, and a CA:FALSE leaf.
#[test]
fn tls_with_a_self_signed_ca() {
    for leaf_cert in [false, true] {
        let kind = RegistryKind {
            htpasswd: true,
            tls: true,
            leaf_cert,
        };
        let Some(reg) = Registry::start("tls_self_signed", kind) else {
            return;
        };
        tls_case(&reg);
    }
}

fn tls_case(reg: &Registry) {
    let ca = reg.ca.clone().unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let o = opts(cfg.path());

    // Without the CA: a TLS error that says what to do, and no plain-HTTP
    // fallback even on loopback.
    let e = login(&reg.addr, &creds(PASS), &o).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::Connect { .. }), "{msg}");
    assert!(
        msg.contains(&reg.addr) && msg.contains("certificate") && msg.contains("--ca-cert"),
        "{msg}"
    );

    let mut with_ca = o.clone();
    with_ca.ca_cert = Some(ca.clone());
    login(&reg.addr, &creds(PASS), &with_ca).unwrap();

    // The CA is remembered for the registry: no --ca-cert needed any more.
    let (_d, src) = temp_store();
    let desc = small_image(&src, "tls:1");
    let target = Reference::parse(&format!("{}/sec/app:1", reg.addr)).unwrap();
    push_then_pull(&src, "tls:1", &target, &o, &desc);

    // --ca-cert on pull itself, with credentials given directly.
    let cfg2 = tempfile::tempdir().unwrap();
    let mut o2 = opts(cfg2.path());
    o2.credentials = Some(creds(PASS));
    o2.ca_cert = Some(ca);
    let (_d3, dst3) = temp_store();
    let rep = pull(&dst3, &target, &PullOptions::new(o2.clone()), &Silent).unwrap();
    assert_eq!(rep.digest, desc.digest);

    // --insecure skips verification instead.
    o2.ca_cert = None;
    o2.insecure = true;
    let (_d4, dst4) = temp_store();
    let rep = pull(&dst4, &target, &PullOptions::new(o2), &Silent).unwrap();
    assert_eq!(rep.digest, desc.digest);
}

/// The token server's books: which scopes each token grants, and each
/// token request's scopes.
#[derive(Default)]
struct Tokens {
    granted: HashMap<String, Vec<String>>,
    requests: Vec<Vec<String>>,
}

fn query_values(target: &str, key: &str) -> Vec<String> {
    let q = target.split_once('?').map_or("", |(_, q)| q);
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

/// `repository:NAME:ACTION`s a request needs.
fn needed(req: &Request) -> Vec<(String, &'static str)> {
    let path = req.path().trim_start_matches("/v2/");
    let name = ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .find_map(|m| path.find(m).map(|i| &path[..i]))
        .unwrap_or("");
    let action = if matches!(req.method.as_str(), "GET" | "HEAD") {
        "pull"
    } else {
        "push"
    };
    let mut out = vec![(name.to_string(), action)];
    if let Some(from) = query_values(&req.target, "from").first() {
        out.push((from.clone(), "pull"));
    }
    out
}

fn grants(scopes: &[String], name: &str, action: &str) -> bool {
    scopes.iter().any(|s| {
        let mut p = s.splitn(3, ':');
        p.next() == Some("repository")
            && p.next() == Some(name)
            && p.next()
                .is_some_and(|acts| acts.split(',').any(|a| a == action))
    })
}

#[test]
fn bearer_tokens_from_the_challenge_are_cached_per_scope() {
    let Some(reg) = Registry::start("bearer_tokens", RegistryKind::default()) else {
        return;
    };
    let books = Arc::new(Mutex::new(Tokens::default()));
    let realm: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let (b2, realm2) = (books.clone(), realm.clone());
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"))
    );
    let front = Server::start(
        Some(reg.addr.clone()),
        Arc::new(move |req: &Request| {
            let realm = realm2.get().cloned().unwrap_or_default();
            let mut books = b2.lock().unwrap();
            if req.path() == "/token" {
                let scopes = query_values(&req.target, "scope");
                books.requests.push(scopes.clone());
                if req.header("Authorization") != Some(basic.as_str()) {
                    return Action::Respond(respond("401 Unauthorized", &[], b"{}"));
                }
                let token = format!("tok{}", books.granted.len());
                books.granted.insert(token.clone(), scopes);
                let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
                return Action::Respond(respond("200 OK", &[], body.as_bytes()));
            }
            let token = req
                .header("Authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .and_then(|t| books.granted.get(t));
            let challenge = |scope: &str| {
                let mut h = format!(r#"Bearer realm="{realm}",service="lfs-test""#);
                if !scope.is_empty() {
                    h.push_str(&format!(r#",scope="{scope}""#));
                }
                Action::Respond(respond(
                    "401 Unauthorized",
                    &[("WWW-Authenticate", &h)],
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                ))
            };
            if req.path() == "/v2/" {
                return if token.is_some() {
                    Action::Forward
                } else {
                    challenge("")
                };
            }
            let need = needed(req);
            let ok = token.is_some_and(|granted| need.iter().all(|(n, a)| grants(granted, n, a)));
            if ok {
                Action::Forward
            } else {
                let (n, a) = &need[0];
                let acts = if *a == "pull" { "pull" } else { "pull,push" };
                challenge(&format!("repository:{n}:{acts}"))
            }
        }),
    );
    realm.set(format!("http://{}/token", front.addr)).unwrap();

    let cfg = tempfile::tempdir().unwrap();
    let o = opts(cfg.path());
    let (_d, src) = temp_store();
    let desc = small_image(&src, "b:1");
    let target = Reference::parse(&format!("{}/bearer/app:1", front.addr)).unwrap();

    let e = push(&src, "b:1", &target, &PushOptions::new(o.clone()), &Silent).unwrap_err();
    assert!(matches!(e, RegistryError::AuthRequired { .. }), "{e}");
    let e = login(&front.addr, &creds("nope"), &o).unwrap_err();
    assert!(matches!(e, RegistryError::BadCredentials { .. }), "{e}");
    login(&front.addr, &creds(PASS), &o).unwrap();

    books.lock().unwrap().requests.clear();
    let rep = push(&src, "b:1", &target, &PushOptions::new(o.clone()), &Silent).unwrap();
    assert_eq!(rep.digest, desc.digest);
    assert_eq!(
        books.lock().unwrap().requests,
        vec![vec!["repository:bearer/app:pull,push".to_string()]],
        "one token for the whole push"
    );

    books.lock().unwrap().requests.clear();
    front.clear_log();
    let (_d2, dst) = temp_store();
    let rep = pull(&dst, &target, &PullOptions::new(o.clone()), &Silent).unwrap();
    assert_eq!(rep.digest, desc.digest);
    assert_eq!(
        books.lock().unwrap().requests,
        vec![vec!["repository:bearer/app:pull".to_string()]],
        "one token for the whole pull"
    );
    let blob_gets = front
        .logged()
        .iter()
        .filter(|l| l.method == "GET" && l.target.contains("/blobs/") && l.status == 200)
        .count();
    assert_eq!(
        blob_gets, 3,
        "config and two layers, all with the cached token"
    );

    // A mount needs pull rights on the source too: one more token, with both scopes.
    books.lock().unwrap().requests.clear();
    let other = Reference::parse(&format!("{}/bearer/other:1", front.addr)).unwrap();
    let rep = push(&src, "b:1", &other, &PushOptions::new(o.clone()), &Silent).unwrap();
    assert_eq!(rep.blobs_mounted, 3);
    let reqs = books.lock().unwrap().requests.clone();
    assert!(
        reqs.contains(&vec![
            "repository:bearer/app:pull".to_string(),
            "repository:bearer/other:pull,push".to_string()
        ]),
        "{reqs:?}"
    );
}
