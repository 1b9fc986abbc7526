//! Docker's credential helpers: programs named `docker-credential-NAME`
//! that keep passwords in a keychain (pass, secretservice, osxkeychain, a
//! cloud's token service). A config names them in `credsStore` (all
//! registries) or `credHelpers` (one registry each). The protocol:
//!
//! ```text
//! docker-credential-NAME get     stdin: SERVER        stdout: {"ServerURL","Username","Secret"}
//! docker-credential-NAME store   stdin: {"ServerURL","Username","Secret"}
//! docker-credential-NAME erase   stdin: SERVER
//! ```
//!
//! A helper that knows no such server exits non-zero saying "credentials not
//! found in native keychain". The username `<token>` marks the secret as an
//! identity token (an OAuth2 refresh token), not a password.

use super::RegistryError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A username and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Never prints the password, so a `{:?}` in a log line leaks nothing.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The username that marks the password as an identity token (Docker's).
pub const IDENTITY_TOKEN_USER: &str = "<token>";

impl Credentials {
    /// The identity token (an OAuth2 refresh token) these stand for, if any.
    pub fn identity_token(&self) -> Option<&str> {
        (self.username == IDENTITY_TOKEN_USER).then_some(self.password.as_str())
    }

    /// `base64(user:password)`, the value of Basic auth and of a config `auth` field.
    pub fn basic_value(&self) -> String {
        B64.encode(format!("{}:{}", self.username, self.password))
    }

    pub(super) fn from_auth_field(auth: &str) -> Option<Credentials> {
        let raw = B64.decode(auth.trim()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, pass) = text.split_once(':')?;
        Some(Credentials {
            username: user.to_string(),
            password: pass.to_string(),
        })
    }
}

/// What a helper says when it has nothing for the server.
const NOT_FOUND: &str = "credentials not found";

/// Most bytes read from a helper: a credential, not a stream.
const MAX_OUTPUT: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
struct Message {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// One helper, found on `search_path` (`$PATH` when None).
pub struct Helper {
    name: String,
    program: PathBuf,
}

impl Helper {
    /// The program `docker-credential-NAME`; an error naming `config`
    /// (where the name came from) when it is not there.
    pub fn find(
        name: &str,
        search_path: Option<&OsString>,
        config: &Path,
    ) -> Result<Helper, RegistryError> {
        let program = format!("docker-credential-{name}");
        let bad = |why: String| RegistryError::Config {
            path: config.to_path_buf(),
            why,
        };
        if name.is_empty() || name.contains('/') {
            return Err(bad(format!("{name:?} is not a credential helper's name")));
        }
        let path = search_path
            .cloned()
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        // An empty entry would mean the current directory: never searched.
        std::env::split_paths(&path)
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.join(&program))
            .find(|p| is_executable(p))
            .map(|program| Helper {
                name: name.to_string(),
                program,
            })
            .ok_or_else(|| bad(format!("the credential helper {program} is not on PATH")))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The credentials the helper keeps for `server`, if any.
    pub fn get(&self, server: &str) -> Result<Option<Credentials>, RegistryError> {
        let (ok, out) = self.call("get", server.as_bytes())?;
        if !ok {
            if out.contains(NOT_FOUND) {
                return Ok(None);
            }
            return Err(self.failed("get", &out));
        }
        let m: Message = serde_json::from_str(&out)
            .map_err(|e| self.failed("get", &format!("an answer that is not JSON ({e})")))?;
        if m.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(Credentials {
            username: m.username,
            password: m.secret,
        }))
    }

    pub fn store(&self, server: &str, creds: &Credentials) -> Result<(), RegistryError> {
        let msg = serde_json::to_vec(&Message {
            server_url: server.to_string(),
            username: creds.username.clone(),
            secret: creds.password.clone(),
        })
        .map_err(|e| self.failed("store", &e.to_string()))?;
        match self.call("store", &msg)? {
            (true, _) => Ok(()),
            (false, out) => Err(self.failed("store", &out)),
        }
    }

    /// Forgets `server`; false when the helper had nothing for it.
    pub fn erase(&self, server: &str) -> Result<bool, RegistryError> {
        match self.call("erase", server.as_bytes())? {
            (true, _) => Ok(true),
            (false, out) if out.contains(NOT_FOUND) => Ok(false),
            (false, out) => Err(self.failed("erase", &out)),
        }
    }

    /// Runs `program verb` with `input` on stdin; whether it succeeded and
    /// what it printed (stdout, else stderr), trimmed.
    fn call(&self, verb: &str, input: &[u8]) -> Result<(bool, String), RegistryError> {
        let mut child = Command::new(&self.program)
            .arg(verb)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.failed(verb, &e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading is judged by its status.
            let _ = stdin.write_all(input);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| self.failed(verb, &e.to_string()))?;
        let text = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(MAX_OUTPUT)]).into_owned();
        let mut said = text(&out.stdout).trim().to_string();
        if said.is_empty() || !out.status.success() && !said.contains(NOT_FOUND) {
            let err = text(&out.stderr).trim().to_string();
            if !err.is_empty() {
                said = if said.is_empty() {
                    err
                } else {
                    format!("{said}; {err}")
                };
            }
        }
        Ok((out.status.success(), said))
    }

    fn failed(&self, verb: &str, why: &str) -> RegistryError {
        let first = why.lines().next().unwrap_or("").trim();
        RegistryError::CredentialHelper {
            program: self.program.clone(),
            why: format!(
                "{verb}: {}",
                if first.is_empty() { "failed" } else { first }
            ),
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::stub_credential_helper as stub_helper;

    #[test]
    fn get_store_erase_through_a_helper_program() {
        let dir = tempfile::tempdir().unwrap();
        stub_helper(dir.path(), "stub");
        let path = OsString::from(dir.path());
        let h = Helper::find("stub", Some(&path), Path::new("config.json")).unwrap();
        assert_eq!(h.get("reg.example:5000").unwrap(), None);
        let c = Credentials {
            username: "ann".into(),
            password: "s3cret".into(),
        };
        h.store("reg.example:5000", &c).unwrap();
        assert_eq!(h.get("reg.example:5000").unwrap(), Some(c));
        assert_eq!(h.get("other.example").unwrap(), None);
        assert!(h.erase("reg.example:5000").unwrap());
        assert!(!h.erase("reg.example:5000").unwrap());
        assert_eq!(h.get("reg.example:5000").unwrap(), None);
    }

    #[test]
    fn a_missing_or_broken_helper_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = OsString::from(dir.path());
        let e = Helper::find("nothere", Some(&path), Path::new("/h/config.json"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("docker-credential-nothere") && e.contains("/h/config.json"),
            "{e}"
        );
        assert!(Helper::find("../x", Some(&path), Path::new("c")).is_err());

        let broken = dir.path().join("docker-credential-broken");
        std::fs::write(&broken, "#!/bin/sh\necho 'not json at all'\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
        let h = Helper::find("broken", Some(&path), Path::new("c")).unwrap();
        let e = h.get("x").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-broken") && e.contains("not JSON"),
            "{e}"
        );

        std::fs::write(
            &broken,
            "#!/bin/sh\necho 'gpg: decryption failed' >&2; exit 1\n",
        )
        .unwrap();
        let e = h.get("x").unwrap_err().to_string();
        assert!(e.contains("gpg: decryption failed"), "{e}");
    }
}
