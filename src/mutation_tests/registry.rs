//! What registries and the user's credentials file hand the client:
//! auth.json, `WWW-Authenticate` values and response bodies. Responses
//! served over HTTP through the real client are in
//! `registry/tests/mutation.rs`.

use crate::fuzzing::registry;
use crate::testutil::mutate::{count, mutate_json, run, run_with};

/// The glue's first byte picks the parser: even an auth.json, odd a header
/// line then a body.
fn tagged(kind: u8, text: &str) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(text.as_bytes());
    v
}

pub(super) fn auth_seeds() -> Vec<Vec<u8>> {
    vec![
        tagged(
            0,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"dXNlcjpwYXNz"},"https://index.docker.io/v1/":{"auth":"YTpiOmM="}}}"#,
        ),
        tagged(
            0,
            r#"{"auths":{"http://127.0.0.1:5000/v2/":{"username":"u","password":"p","email":"e"}},"credsStore":"desktop","HttpHeaders":{"X":"1"}}"#,
        ),
        tagged(0, "  \n"),
    ]
}

pub(super) fn response_seeds() -> Vec<Vec<u8>> {
    vec![
        tagged(
            1,
            "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/alpine:pull\"\n{\"token\":\"abc\",\"access_token\":\"def\",\"expires_in\":300,\"issued_at\":\"2024-01-01T00:00:00Z\"}",
        ),
        tagged(
            1,
            "basic realm=x, charset=\"UTF-8\"\n{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\",\"detail\":[{\"Type\":\"repository\",\"Name\":\"a\",\"Action\":\"pull\"}]}]}",
        ),
        tagged(
            1,
            "Bearer realm=http://127.0.0.1:1/t, scope=\"repository:a/b:pull,push\", error=\"insufficient_scope\", k=\"\\\"q\\\"\"\n<html>404 page\nnot found</html>",
        ),
    ]
}

#[test]
fn mutated_auth_json() {
    run_with(
        "auth.json",
        auth_seeds(),
        count(2000),
        mutate_json,
        registry,
    );
}

#[test]
fn mutated_www_authenticate_and_bodies() {
    run(
        "WWW-Authenticate, token and error bodies",
        response_seeds(),
        count(4000),
        registry,
    );
}
