//! Where registry credentials and CA certificates are kept, independent of
//! the store root (one login serves every store, as with Docker).
//!
//! ```text
//! $LAYERFS_CONFIG_DIR, else $XDG_CONFIG_HOME/layerfs, else ~/.config/layerfs  (0700)
//!   auth.json                   {"auths":{"REGISTRY":{"auth":"base64(user:pass)"}}}  (0600)
//!   certs.d/REGISTRY/ca.crt     the CA given to `login --ca-cert`, used for every
//!                               later connection to REGISTRY
//! ```
//!
//! auth.json has the layout of Docker's config.json (and Podman's auth.json),
//! so either tool's file can be copied in. The files Podman, skopeo and
//! Docker share are read after ours, in the order Podman reads them:
//! `$REGISTRY_AUTH_FILE` (else `${XDG_RUNTIME_DIR}/containers/auth.json`),
//! `${XDG_CONFIG_HOME:-~/.config}/containers/auth.json`, then Docker's `$DOCKER_CONFIG/config.json`
//! (default `~/.docker/config.json`). In each file, as Docker reads it:
//! `credHelpers[REGISTRY]`, else the `auths` entry (`auth` as base64
//! user:password, or `identitytoken`), else `credsStore`; a helper is the
//! program `docker-credential-NAME` (see credentials.rs). `login` stores
//! into the helper the files name for the registry, if any, else into ours.
//! The same rule holds for root: credentials follow the user's home, not a
//! system-wide file, so one user's login never serves another.

use super::RegistryError;
use super::credentials::{Credentials, Helper, IDENTITY_TOKEN_USER};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    /// The helper that keeps every registry's credentials.
    #[serde(
        default,
        rename = "credsStore",
        skip_serializing_if = "Option::is_none"
    )]
    creds_store: Option<String>,
    /// A helper per registry, over `credsStore`.
    #[serde(
        default,
        rename = "credHelpers",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    cred_helpers: BTreeMap<String, String>,
    /// Whatever else a copied Docker config holds, kept on rewrite.
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Default, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identitytoken: Option<String>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

impl AuthFile {
    /// The helper named for registry `key` (normalized), if any:
    /// `credHelpers` first, then `credsStore`.
    fn helper_for(&self, key: &str) -> Option<&str> {
        self.cred_helpers
            .iter()
            .find(|(k, _)| normalize_key(k) == key)
            .map(|(_, v)| v.as_str())
            .or(self.creds_store.as_deref())
            .filter(|h| !h.is_empty())
    }
}

impl AuthEntry {
    fn credentials(&self) -> Option<Credentials> {
        if let Some(t) = self.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Some(Credentials {
                username: IDENTITY_TOKEN_USER.into(),
                password: t.to_string(),
            });
        }
        if let Some(a) = self.auth.as_deref().filter(|a| !a.is_empty()) {
            return Credentials::from_auth_field(a);
        }
        Some(Credentials {
            username: self.username.clone()?,
            password: self.password.clone()?,
        })
    }
}

/// The folder of our registry settings and the other tools' files, as found.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub dir: PathBuf,
    /// Podman's, skopeo's and Docker's credential files, read after ours
    /// in this order (see the module comment).
    pub shared_files: Vec<PathBuf>,
    /// Where `docker-credential-NAME` programs are looked for (None: `$PATH`).
    pub helper_path: Option<OsString>,
}

const AUTH_FILE: &str = "auth.json";
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

impl RegistryConfig {
    /// The locations the environment names (see the module comment).
    pub fn from_env() -> RegistryConfig {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = var("HOME");
        let dir = var("LAYERFS_CONFIG_DIR")
            .or_else(|| var("XDG_CONFIG_HOME").map(|d| d.join("layerfs")))
            .or_else(|| home.as_ref().map(|h| h.join(".config/layerfs")))
            .unwrap_or_else(|| PathBuf::from(".layerfs"));
        let mut shared_files = Vec::new();
        shared_files.extend(
            var("REGISTRY_AUTH_FILE")
                .or_else(|| var("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json"))),
        );
        shared_files.extend(
            var("XDG_CONFIG_HOME")
                .or_else(|| home.as_ref().map(|h| h.join(".config")))
                .map(|d| d.join("containers/auth.json")),
        );
        shared_files.extend(
            var("DOCKER_CONFIG")
                .or_else(|| home.map(|h| h.join(".docker")))
                .map(|d| d.join("config.json")),
        );
        RegistryConfig {
            dir,
            shared_files,
            helper_path: None,
        }
    }

    /// Settings kept in `dir` alone, other tools' files not consulted and
    /// no helper program run (tests, fuzzing).
    pub fn in_dir(dir: &Path) -> RegistryConfig {
        RegistryConfig {
            dir: dir.to_path_buf(),
            shared_files: Vec::new(),
            helper_path: Some(OsString::new()),
        }
    }

    pub fn auth_file(&self) -> PathBuf {
        self.dir.join(AUTH_FILE)
    }

    /// Ours, then the shared files.
    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.auth_file()];
        files.extend(self.shared_files.iter().cloned());
        files
    }

    /// The credentials for `registry`: ours first, then the shared files;
    /// in each, a helper it names for the registry or its `auths` entry.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        let key = normalize_key(registry);
        for path in self.files() {
            let Some(file) = read_auth_file(&path)? else {
                continue;
            };
            let per_registry = file
                .cred_helpers
                .iter()
                .find(|(k, _)| normalize_key(k) == key)
                .map(|(_, v)| v.as_str());
            if let Some(name) = per_registry
                && let Some(c) = self.ask_helper(name, &path, registry)?
            {
                return Ok(Some(c));
            }
            for (k, entry) in &file.auths {
                if normalize_key(k) == key
                    && let Some(c) = entry.credentials()
                {
                    return Ok(Some(c));
                }
            }
            if let Some(name) = file.creds_store.as_deref().filter(|n| !n.is_empty())
                && let Some(c) = self.ask_helper(name, &path, registry)?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Asks helper `name` (named in `config`); one that is not installed
    /// (a config copied from another machine) is passed over with a warning,
    /// so public images still pull.
    fn ask_helper(
        &self,
        name: &str,
        config: &Path,
        registry: &str,
    ) -> Result<Option<Credentials>, RegistryError> {
        match Helper::find(name, self.helper_path.as_ref(), config) {
            Ok(h) => h.get(&storage_key(registry)),
            Err(e) => {
                log::warn!("{e}; going on without its credentials");
                Ok(None)
            }
        }
    }

    /// The helper that keeps `registry`'s credentials, as the first file
    /// naming one says, and that file.
    fn helper_for(&self, registry: &str) -> Result<Option<(Helper, PathBuf)>, RegistryError> {
        let key = normalize_key(registry);
        for path in self.files() {
            let Some(file) = read_auth_file(&path)? else {
                continue;
            };
            if let Some(name) = file.helper_for(&key) {
                let h = Helper::find(name, self.helper_path.as_ref(), &path)?;
                return Ok(Some((h, path)));
            }
        }
        Ok(None)
    }

    /// Saves `creds` for `registry`: into the credential helper a config
    /// names for it, else into our auth.json. Says where.
    pub fn store_credentials(
        &self,
        registry: &str,
        creds: &Credentials,
    ) -> Result<String, RegistryError> {
        match self.helper_for(registry)? {
            Some((h, _)) => {
                h.store(&storage_key(registry), creds)?;
                // A password of ours for the registry would shadow the helper's.
                self.remove_credentials(registry)?;
                Ok(format!(
                    "the credential helper docker-credential-{}",
                    h.name()
                ))
            }
            None => {
                self.save_credentials(registry, creds)?;
                Ok(self.auth_file().display().to_string())
            }
        }
    }

    /// Forgets `registry`'s credentials in our auth.json and in the helper
    /// a config names for it; false when there were none.
    pub fn forget_credentials(&self, registry: &str) -> Result<bool, RegistryError> {
        let mut removed = self.remove_credentials(registry)?;
        if let Some((h, _)) = self.helper_for(registry)? {
            removed |= h.erase(&storage_key(registry))?;
        }
        Ok(removed)
    }

    /// Saves `creds` for `registry` in our auth.json, readable by its owner only.
    pub fn save_credentials(
        &self,
        registry: &str,
        creds: &Credentials,
    ) -> Result<(), RegistryError> {
        let path = self.auth_file();
        let mut file = read_auth_file(&path)?.unwrap_or_default();
        let key = normalize_key(registry);
        file.auths.retain(|k, _| normalize_key(k) != key);
        file.auths.insert(
            storage_key(registry),
            AuthEntry {
                auth: Some(creds.basic_value()),
                ..Default::default()
            },
        );
        self.write_private(&path, &file)
    }

    /// Forgets `registry`'s credentials; false when there were none.
    pub fn remove_credentials(&self, registry: &str) -> Result<bool, RegistryError> {
        let path = self.auth_file();
        let Some(mut file) = read_auth_file(&path)? else {
            return Ok(false);
        };
        let key = normalize_key(registry);
        let before = file.auths.len();
        file.auths.retain(|k, _| normalize_key(k) != key);
        if file.auths.len() == before {
            return Ok(false);
        }
        self.write_private(&path, &file)?;
        Ok(true)
    }

    /// The CA certificate remembered for `registry`, if any.
    pub fn ca_cert(&self, registry: &str) -> Option<PathBuf> {
        let p = self.cert_path(registry);
        p.is_file().then_some(p)
    }

    /// Remembers `pem` as the CA of `registry`.
    pub fn save_ca_cert(&self, registry: &str, pem: &[u8]) -> Result<(), RegistryError> {
        let path = self.cert_path(registry);
        let dir = path.parent().unwrap_or(&self.dir).to_path_buf();
        create_private_dir(&dir)?;
        write_atomic(&dir, &path, pem, 0o644)
    }

    fn cert_path(&self, registry: &str) -> PathBuf {
        // A registry name is host[:port]; ':' is fine in a file name, '/' is not.
        let safe: String = normalize_key(registry)
            .chars()
            .map(|c| if c == '/' { '_' } else { c })
            .collect();
        self.dir.join("certs.d").join(safe).join("ca.crt")
    }

    fn write_private(&self, path: &Path, file: &AuthFile) -> Result<(), RegistryError> {
        create_private_dir(&self.dir)?;
        let mut bytes = serde_json::to_vec_pretty(file).map_err(|e| RegistryError::Config {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        bytes.push(b'\n');
        write_atomic(&self.dir, path, &bytes, 0o600)
    }
}

/// The form registries are compared in: no scheme, no path, Docker Hub's
/// aliases folded into one.
fn normalize_key(k: &str) -> String {
    let k = k.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

/// The key written to auth.json: Docker's spelling for Docker Hub, so
/// Docker and skopeo read our file as well.
fn storage_key(registry: &str) -> String {
    match normalize_key(registry).as_str() {
        "docker.io" => DOCKER_HUB_KEY.into(),
        h => h.to_string(),
    }
}

fn read_auth_file(path: &Path) -> Result<Option<AuthFile>, RegistryError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RegistryError::Config {
                path: path.to_path_buf(),
                why: e.to_string(),
            });
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(AuthFile::default()));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RegistryError::Config {
            path: path.to_path_buf(),
            why: format!("not a valid credentials file: {e}"),
        })
}

fn create_private_dir(dir: &Path) -> Result<(), RegistryError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| RegistryError::Config {
            path: dir.to_path_buf(),
            why: e.to_string(),
        })
}

/// Temp file with `mode` from the start (the secret is never readable by
/// others, not even for a moment), fsync, rename.
fn write_atomic(dir: &Path, dest: &Path, bytes: &[u8], mode: u32) -> Result<(), RegistryError> {
    let err = |p: &Path, e: std::io::Error| RegistryError::Config {
        path: p.to_path_buf(),
        why: e.to_string(),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".auth-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|e| err(dir, e))?;
    tmp.write_all(bytes).map_err(|e| err(tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| err(tmp.path(), e))?;
    tmp.persist(dest).map_err(|e| err(dest, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;

    #[test]
    fn saves_with_mode_0600_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RegistryConfig::in_dir(&dir.path().join("cfg"));
        let c = Credentials {
            username: "ann".into(),
            password: "s3cret:with:colons".into(),
        };
        cfg.save_credentials("127.0.0.1:5000", &c).unwrap();
        let mode = fs::metadata(cfg.auth_file()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = fs::metadata(&cfg.dir).unwrap().permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
        assert_eq!(cfg.credentials("127.0.0.1:5000").unwrap(), Some(c.clone()));
        assert_eq!(
            cfg.credentials("https://127.0.0.1:5000/v2/").unwrap(),
            Some(c)
        );
        assert_eq!(cfg.credentials("127.0.0.1:5001").unwrap(), None);
        let text = fs::read_to_string(cfg.auth_file()).unwrap();
        assert!(!text.contains("s3cret"), "password stored in clear: {text}");
        assert!(cfg.remove_credentials("127.0.0.1:5000").unwrap());
        assert!(!cfg.remove_credentials("127.0.0.1:5000").unwrap());
        assert_eq!(cfg.credentials("127.0.0.1:5000").unwrap(), None);
    }

    #[test]
    fn reads_docker_config_json() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("config.json");
        fs::write(
            &docker,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"reg.example:443":{{"auth":"{}"}}}},"credsStore":"desktop"}}"#,
                B64.encode("hubuser:hubpass"),
                B64.encode("u:p")
            ),
        )
        .unwrap();
        let cfg = RegistryConfig {
            dir: dir.path().join("ours"),
            shared_files: vec![docker],
            helper_path: Some(dir.path().into()),
        };
        let hub = cfg.credentials("registry-1.docker.io").unwrap().unwrap();
        assert_eq!(hub.username, "hubuser");
        assert_eq!(hub.password, "hubpass");
        let other = cfg.credentials("reg.example:443").unwrap().unwrap();
        assert_eq!(other.username, "u");
        // Ours wins over Docker's.
        let mine = Credentials {
            username: "me".into(),
            password: "x".into(),
        };
        cfg.save_credentials("reg.example:443", &mine).unwrap();
        assert_eq!(cfg.credentials("reg.example:443").unwrap(), Some(mine));
    }

    /// Ours, then each shared file in order; in one file, `credHelpers`
    /// over `auths` over `credsStore`, as Docker reads its config.
    #[test]
    fn the_first_file_that_knows_the_registry_wins() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        crate::testutil::stub_credential_helper(d, "kc");
        std::fs::write(
            d.join("kc.json"),
            r#"{"ServerURL":"r.example","Username":"from-helper","Secret":"h"}"#,
        )
        .unwrap();
        let entry = |user: &str| format!(r#"{{"auth":"{}"}}"#, B64.encode(format!("{user}:p")));
        let podman = d.join("podman.json");
        let docker = d.join("docker.json");
        let cfg = RegistryConfig {
            dir: d.join("ours"),
            shared_files: vec![podman.clone(), docker.clone()],
            helper_path: Some(d.into()),
        };
        let user = |cfg: &RegistryConfig| cfg.credentials("r.example").unwrap().map(|c| c.username);
        std::fs::write(
            &docker,
            format!(
                r#"{{"auths":{{"r.example":{}}},"credHelpers":{{"r.example":"kc"}}}}"#,
                entry("docker")
            ),
        )
        .unwrap();
        assert_eq!(user(&cfg).as_deref(), Some("from-helper"));
        std::fs::write(
            &docker,
            format!(
                r#"{{"auths":{{"r.example":{}}},"credsStore":"kc"}}"#,
                entry("docker")
            ),
        )
        .unwrap();
        assert_eq!(user(&cfg).as_deref(), Some("docker"));
        std::fs::write(
            &podman,
            format!(r#"{{"auths":{{"r.example":{}}}}}"#, entry("podman")),
        )
        .unwrap();
        assert_eq!(user(&cfg).as_deref(), Some("podman"));
        let creds = Credentials {
            username: "ours".into(),
            password: "p".into(),
        };
        cfg.save_credentials("r.example", &creds).unwrap();
        assert_eq!(user(&cfg).as_deref(), Some("ours"));
        // An identity token reads as the `<token>` user.
        std::fs::write(&podman, r#"{"auths":{"t.example":{"identitytoken":"rt"}}}"#).unwrap();
        let t = cfg.credentials("t.example").unwrap().unwrap();
        assert_eq!(t.identity_token(), Some("rt"));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = Credentials {
            username: "ann".into(),
            password: "hunter2".into(),
        };
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2") && s.contains("ann"), "{s}");
    }

    #[test]
    fn a_broken_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RegistryConfig::in_dir(dir.path());
        fs::write(cfg.auth_file(), "{not json").unwrap();
        let e = cfg.credentials("x.example").unwrap_err().to_string();
        assert!(e.contains("auth.json") && e.contains("not a valid"), "{e}");
    }
}
