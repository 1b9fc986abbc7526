//! Credentials from other tools' configs, against an auth-protected
//! registry: a `docker-credential-NAME` program named by `credsStore` or
//! `credHelpers` supplies them to pull and push, `login` stores into it and
//! `logout` erases there; an identity token is exchanged at the token realm
//! as an OAuth2 refresh token.

use super::harness::{Action, PASS, Registry, RegistryKind, Request, Server, USER, respond};
use super::*;
use crate::registry::{Credentials, RegistryError, Silent, login, logout, pull};
use crate::testutil::stub_credential_helper as stub_helper;
use crate::testutil::temp_store;
use std::sync::{Arc, Mutex, OnceLock};

/// Client options reading `docker_config` after our own (empty) config
/// dir, with helpers looked for in `helpers`.
fn shared_opts(dir: &Path, docker_config: &Path, helpers: &Path) -> ClientOptions {
    let mut o = opts(&dir.join("ours"));
    o.config.shared_files = vec![docker_config.to_path_buf()];
    o.config.helper_path = Some(helpers.into());
    o
}

/// What the stub helper `name` in `dir` keeps for `server`.
fn seed(dir: &Path, name: &str, server: &str, user: &str, secret: &str) {
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::json!({"ServerURL": server, "Username": user, "Secret": secret}).to_string(),
    )
    .unwrap();
}

#[test]
fn a_credential_helper_supplies_credentials_to_pull() {
    let kind = RegistryKind {
        htpasswd: true,
        ..Default::default()
    };
    let Some(reg) = Registry::start("credential_helper", kind) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    stub_helper(dir, "stub");
    let docker = dir.join("config.json");
    std::fs::write(&docker, r#"{"auths":{},"credsStore":"stub"}"#).unwrap();
    let o = shared_opts(dir, &docker, dir);

    let (_d, src) = temp_store();
    let l = layer(&src, Compression::Gzip, &[("f", b"helper test")]);
    let desc = image(&src, &[l], None, Some("h:1"));
    let target = Reference::parse(&format!("{}/helped/app:1", reg.addr)).unwrap();

    // The helper has nothing yet: asked, and the pull is anonymous.
    let (_d1, dst) = temp_store();
    let e = pull(&dst, &target, &PullOptions::new(o.clone()), &Silent).unwrap_err();
    assert!(matches!(e, RegistryError::AuthRequired { .. }), "{e}");

    // login stores into the helper (credsStore), not into our file.
    let creds = Credentials {
        username: USER.into(),
        password: PASS.into(),
    };
    let at = login(&reg.addr, &creds, &o).unwrap();
    assert!(at.contains("docker-credential-stub"), "{at}");
    assert!(!o.config.auth_file().exists(), "saved in our file as well");
    let kept = std::fs::read_to_string(dir.join("stub.json")).unwrap();
    assert!(kept.contains(&reg.addr) && kept.contains(PASS), "{kept}");
    let docker_after = std::fs::read_to_string(&docker).unwrap();
    assert_eq!(docker_after, r#"{"auths":{},"credsStore":"stub"}"#);

    push_then_pull(&src, "h:1", &target, &o, &desc);

    // credHelpers names a helper for this registry alone, over credsStore.
    stub_helper(dir, "other");
    seed(dir, "other", &reg.addr, USER, "wrong");
    std::fs::write(
        &docker,
        format!(
            r#"{{"credsStore":"stub","credHelpers":{{"{}":"other"}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let (_d2, dst2) = temp_store();
    let e = pull(&dst2, &target, &PullOptions::new(o.clone()), &Silent).unwrap_err();
    assert!(matches!(e, RegistryError::BadCredentials { .. }), "{e}");
    seed(dir, "other", &reg.addr, USER, PASS);
    let rep = pull(&dst2, &target, &PullOptions::new(o.clone()), &Silent).unwrap();
    assert_eq!(rep.digest, desc.digest);

    // logout erases in the helper the config names for the registry.
    assert!(logout(&reg.addr, &o.config).unwrap());
    assert!(!dir.join("other.json").exists(), "not erased in the helper");
    let (_d3, dst3) = temp_store();
    std::fs::write(
        &docker,
        format!(r#"{{"credHelpers":{{"{}":"other"}}}}"#, reg.addr),
    )
    .unwrap();
    let e = pull(&dst3, &target, &PullOptions::new(o.clone()), &Silent).unwrap_err();
    assert!(matches!(e, RegistryError::AuthRequired { .. }), "{e}");

    // A helper that is not installed (a config from another machine) is
    // passed over: anonymous access still works where the registry allows it.
    std::fs::write(&docker, r#"{"credsStore":"desktop"}"#).unwrap();
    assert_eq!(o.config.credentials(&reg.addr).unwrap(), None);
}

/// An `application/x-www-form-urlencoded` body's pairs, decoded.
fn form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

#[test]
fn an_identity_token_is_exchanged_as_a_refresh_token() {
    const REFRESH: &str = "refresh-me";
    let Some(reg) = Registry::start("identity_token", RegistryKind::default()) else {
        return;
    };
    let token_requests: Arc<Mutex<Vec<Request>>> = Arc::default();
    let realm: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let (seen, realm2) = (token_requests.clone(), realm.clone());
    let front = Server::start(
        Some(reg.addr.clone()),
        Arc::new(move |req: &Request| {
            if req.path() == "/token" {
                seen.lock().unwrap().push(req.clone());
                let form = form(&req.body);
                let ok = req.method == "POST"
                    && form.contains(&("grant_type".into(), "refresh_token".into()))
                    && form.contains(&("refresh_token".into(), REFRESH.into()));
                return Action::Respond(if ok {
                    respond("200 OK", &[], br#"{"access_token":"granted"}"#)
                } else {
                    respond("401 Unauthorized", &[], b"{}")
                });
            }
            if req.header("Authorization") == Some("Bearer granted") {
                return Action::Forward;
            }
            let h = format!(
                r#"Bearer realm="{}",service="lfs-test""#,
                realm2.get().cloned().unwrap_or_default()
            );
            Action::Respond(respond(
                "401 Unauthorized",
                &[("WWW-Authenticate", &h)],
                b"{}",
            ))
        }),
    );
    realm.set(format!("http://{}/token", front.addr)).unwrap();

    // The image goes in straight to the registry behind the front.
    let (_d, src) = temp_store();
    let l = layer(&src, Compression::Gzip, &[("t", b"token test")]);
    let desc = image(&src, &[l], None, Some("t:1"));
    let cfg = tempfile::tempdir().unwrap();
    let direct = Reference::parse(&format!("{}/tok/app:1", reg.addr)).unwrap();
    crate::registry::push(
        &src,
        "t:1",
        &direct,
        &crate::registry::PushOptions::new(opts(cfg.path())),
        &Silent,
    )
    .unwrap();
    let target = Reference::parse(&format!("{}/tok/app:1", front.addr)).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // From an auths entry's identitytoken, and from a helper's `<token>` user.
    let docker = dir.join("config.json");
    std::fs::write(
        &docker,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"","identitytoken":"{REFRESH}"}}}}}}"#,
            front.addr
        ),
    )
    .unwrap();
    let o = shared_opts(dir, &docker, dir);
    let (_d1, dst) = temp_store();
    let rep = pull(&dst, &target, &PullOptions::new(o.clone()), &Silent).unwrap();
    assert_eq!(rep.digest, desc.digest);

    stub_helper(dir, "tok");
    seed(dir, "tok", &front.addr, "<token>", REFRESH);
    std::fs::write(&docker, r#"{"credsStore":"tok"}"#).unwrap();
    let (_d2, dst2) = temp_store();
    let rep = pull(&dst2, &target, &PullOptions::new(o.clone()), &Silent).unwrap();
    assert_eq!(rep.digest, desc.digest);

    let reqs = token_requests.lock().unwrap();
    assert!(!reqs.is_empty());
    for r in reqs.iter() {
        assert_eq!(r.method, "POST");
        assert!(
            r.header("Authorization").is_none(),
            "the token went out as a password"
        );
        let form = form(&r.body);
        assert!(
            form.contains(&("service".into(), "lfs-test".into()))
                && form.contains(&("scope".into(), "repository:tok/app:pull".into())),
            "{form:?}"
        );
    }
}
