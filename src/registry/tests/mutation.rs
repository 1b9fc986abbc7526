//! Hostile registries: answers mutated by `testutil::mutate` and served by a
//! fake registry to the real client during a pull: manifests, image configs
//! (behind a manifest that names them rightly, so they get parsed), whole
//! raw answers (status line, headers, `WWW-Authenticate`, body) and token
//! answers. Each pull succeeds or fails with a one-line error; the store is
//! fsck-clean after it, with no temp file, and with no tag after a failure.

use super::faults::{Served, fake, served};
use super::harness::{Action, Request, respond};
use super::*;
use crate::registry::Silent;
use crate::testutil::mutate::{count, mutate_json, run_with};
use std::sync::{Arc, Mutex};

/// The bytes of the case being served, set by the test before each pull.
type Case = Arc<Mutex<Vec<u8>>>;

fn current(case: &Case) -> Vec<u8> {
    case.lock().unwrap().clone()
}

/// Pulls `app:1` from `addr` into a new store; checks what must hold
/// whatever the registry sent.
fn pull_checked(addr: &str) -> Result<(), String> {
    let cfg = tempfile::tempdir().unwrap();
    let (_dir, store) = temp_store();
    let r = Reference::parse(&format!("{addr}/app:1")).unwrap();
    let out = pull(&store, &r, &pull_opts(cfg.path()), &Silent);
    assert_no_temp_files(&store);
    assert_fsck_clean(&store);
    match out {
        Ok(_) => Ok(()),
        Err(e) => {
            assert!(
                store.image_entries().unwrap().is_empty(),
                "a tag was written: {e}"
            );
            Err(e.to_string())
        }
    }
}

/// Runs the mutations (`mutate_json`: structural for JSON seeds, bytes for
/// the rest) of `seeds` against the server at `addr`, each case served from `case`.
fn run_served(name: &str, seeds: Vec<Vec<u8>>, n: u64, case: Case, addr: String) {
    run_with(name, seeds, count(n), mutate_json, move |bytes| {
        *case.lock().unwrap() = bytes.to_vec();
        pull_checked(&addr)
    });
}

fn manifest_answer(body: &[u8], head: bool) -> Action {
    let len = body.len().to_string();
    let body = if head { &b""[..] } else { body };
    let mut raw = respond("200 OK", &[("Content-Type", mt::OCI_MANIFEST)], body);
    if head {
        let at = raw
            .windows(17)
            .position(|w| w == b"Content-Length: 0")
            .unwrap();
        raw.splice(at + 16..at + 17, len.bytes());
    }
    Action::Respond(raw)
}

#[test]
fn mutated_manifests_from_a_registry() {
    let img = served(2000);
    let manifest = img.blobs[&img.manifest.to_string()].clone();
    let mut child = Descriptor::new(mt::OCI_MANIFEST, img.manifest, manifest.len() as u64);
    child.platform = Some(Platform::host());
    let index = ImageIndex::new_oci(vec![child]).to_json();
    let case: Case = Default::default();
    let c2 = case.clone();
    let server = fake(
        img,
        Arc::new(move |req: &Request, _: &Served| {
            // By tag: the case. By digest: the real manifest, from `fake`.
            req.path()
                .ends_with("/manifests/1")
                .then(|| manifest_answer(&current(&c2), req.method == "HEAD"))
        }),
    );
    run_served(
        "registry: manifests",
        vec![manifest, index],
        200,
        case,
        server.addr.clone(),
    );
}

#[test]
fn mutated_image_configs_from_a_registry() {
    let img = served(2000);
    let manifest = img.blobs[&img.manifest.to_string()].clone();
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let config_digest = m["config"]["digest"].as_str().unwrap().to_string();
    let config = img.blobs[&config_digest].clone();
    let case: Case = Default::default();
    let c2 = case.clone();
    let server = fake(
        img,
        Arc::new(move |req: &Request, _: &Served| {
            let bytes = current(&c2);
            let digest = Digest::of(&bytes).to_string();
            if req.path().ends_with("/manifests/1") {
                let mut m = m.clone();
                m["config"]["digest"] = digest.into();
                m["config"]["size"] = bytes.len().into();
                let body = serde_json::to_vec(&m).unwrap();
                return Some(manifest_answer(&body, req.method == "HEAD"));
            }
            (req.blob_digest() == Some(digest.as_str()))
                .then(|| Action::Respond(respond("200 OK", &[], &bytes)))
        }),
    );
    run_served(
        "registry: image configs",
        vec![config],
        200,
        case,
        server.addr.clone(),
    );
}

/// Whole answers to the manifest request. None names a URL: a mutated host
/// name would send the client (and a DNS query) off this machine. Bearer
/// challenges, with their realm URL, are in the token test, unmutated.
#[test]
fn mutated_raw_answers_from_a_registry() {
    let img = served(2000);
    let manifest = img.blobs[&img.manifest.to_string()].clone();
    let digest = img.manifest.to_string();
    let seeds = vec![
        respond(
            "200 OK",
            &[
                ("Content-Type", mt::OCI_MANIFEST),
                ("Docker-Content-Digest", &digest),
            ],
            &manifest,
        ),
        respond(
            "401 Unauthorized",
            &[("WWW-Authenticate", r#"Basic realm="fake", charset="UTF-8""#)],
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        ),
        respond(
            "404 Not Found",
            &[("Content-Type", "application/json")],
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"1"}}]}"#,
        ),
    ];
    let case: Case = Default::default();
    let c2 = case.clone();
    let server = fake(
        img,
        Arc::new(move |req: &Request, _: &Served| {
            req.path()
                .ends_with("/manifests/1")
                .then(|| Action::Respond(current(&c2)))
        }),
    );
    run_served(
        "registry: raw answers",
        seeds,
        200,
        case,
        server.addr.clone(),
    );
}

/// Token answers after a Bearer challenge.
#[test]
fn mutated_token_answers_from_a_registry() {
    let seeds = vec![
        respond(
            "200 OK",
            &[("Content-Type", "application/json")],
            br#"{"token":"t1","access_token":"t2","expires_in":300,"issued_at":"2024-01-01T00:00:00Z"}"#,
        ),
        respond("401 Unauthorized", &[], br#"{"details":"incorrect username or password"}"#),
    ];
    let case: Case = Default::default();
    let c2 = case.clone();
    let addr: Arc<Mutex<String>> = Default::default();
    let a2 = addr.clone();
    let server = fake(
        served(2000),
        Arc::new(move |req: &Request, _: &Served| {
            if req.path() == "/token" {
                return Some(Action::Respond(current(&c2)));
            }
            if req.header("Authorization").is_some() {
                return None;
            }
            let challenge = format!(
                r#"Bearer realm="http://{}/token",service="fake""#,
                a2.lock().unwrap()
            );
            Some(Action::Respond(respond(
                "401 Unauthorized",
                &[("WWW-Authenticate", &challenge)],
                b"",
            )))
        }),
    );
    *addr.lock().unwrap() = server.addr.clone();
    run_served(
        "registry: token answers",
        seeds,
        200,
        case,
        server.addr.clone(),
    );
}
