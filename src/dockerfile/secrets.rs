//! Build secrets: `build --secret id=ID,src=PATH` (or `env=VAR`, or a bare
//! `id=VAR` naming an environment variable), as Docker spells them. A
//! secret's bytes are read only when a RUN mounts it, onto a tmpfs of the
//! build's own; they never reach a layer, a history entry or a cache key
//! (keys name the secret's id, never its value).

use super::StepError;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretSpec {
    pub id: String,
    pub source: SecretSource,
}

/// Parses one `--secret` value: `id=ID[,type=file|env][,src=PATH|env=VAR]`.
pub fn parse_secret(s: &str) -> Result<SecretSpec, String> {
    let mut id = None;
    let mut kind = None;
    let mut src = None;
    let mut env = None;
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("--secret {s}: expected KEY=VALUE, got {part:?}"))?;
        match k.trim().to_ascii_lowercase().as_str() {
            "id" => id = Some(v.to_string()),
            "type" => kind = Some(v.to_string()),
            "src" | "source" => src = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            other => return Err(format!("--secret {s}: unknown key {other:?}")),
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| format!("--secret {s}: id= is required"))?;
    if !valid_id(&id) {
        return Err(format!(
            "--secret {s}: an id is a file name: no '/', not . or .."
        ));
    }
    let source = match (kind.as_deref(), src, env) {
        (Some("env"), Some(v), None) | (_, None, Some(v)) => SecretSource::Env(v),
        (None | Some("file"), Some(p), None) => SecretSource::File(PathBuf::from(p)),
        (Some("env"), None, None) => SecretSource::Env(id.clone()),
        (None, None, None) => SecretSource::Env(id.clone()),
        (Some(t), _, _) if t != "file" && t != "env" => {
            return Err(format!("--secret {s}: type must be file or env"));
        }
        _ => return Err(format!("--secret {s}: give src= or env=, not both")),
    };
    Ok(SecretSpec { id, source })
}

/// A secret's id names a file in /run/secrets: one path component.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && !id.contains(['/', '\0'])
}

impl SecretSpec {
    /// The secret's bytes, read now.
    pub fn read(&self) -> Result<Vec<u8>, StepError> {
        match &self.source {
            SecretSource::File(p) => std::fs::read(p).map_err(|e| StepError::Io {
                path: format!("secret {}: {}", self.id, p.display()),
                source: e,
            }),
            SecretSource::Env(v) => std::env::var_os(v)
                .map(std::os::unix::ffi::OsStringExt::into_vec)
                .ok_or_else(|| {
                    StepError::Msg(format!(
                        "secret {}: the environment variable {v} is not set",
                        self.id
                    ))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_flags_as_docker_spells_them() {
        let file = |id: &str, p: &str| SecretSpec {
            id: id.into(),
            source: SecretSource::File(p.into()),
        };
        let env = |id: &str, v: &str| SecretSpec {
            id: id.into(),
            source: SecretSource::Env(v.into()),
        };
        for (input, want) in [
            ("id=a,src=/x", file("a", "/x")),
            ("id=a,source=/x", file("a", "/x")),
            ("id=a,type=file,src=/x", file("a", "/x")),
            ("id=a,env=TOKEN", env("a", "TOKEN")),
            ("id=a,type=env,src=TOKEN", env("a", "TOKEN")),
            ("id=TOKEN", env("TOKEN", "TOKEN")),
        ] {
            assert_eq!(parse_secret(input), Ok(want), "{input}");
        }
        for bad in [
            "src=/x",
            "id=",
            "id=a,src=/x,env=Y",
            "id=a,what=1",
            "id=a/b,src=/x",
            "id=..,src=/x",
            "id=.,src=/x",
            "id=a,type=ssh,src=/x",
            "nonsense",
        ] {
            assert!(parse_secret(bad).is_err(), "{bad}");
        }
    }
}
