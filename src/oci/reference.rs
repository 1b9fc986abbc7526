//! `Reference`: an image name as users write it — `name`, `name:tag`,
//! `name@sha256:…`, `registry:port/path/name:tag` — following the grammar of
//! distribution's reference package. Docker Hub names are kept in their short
//! ("familiar") form, so `docker.io/library/alpine:3` is stored as `alpine:3`.

use super::digest::Digest;
use std::fmt;
use std::str::FromStr;

pub const DEFAULT_TAG: &str = "latest";
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";
const MAX_NAME_LEN: usize = 255;

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Reference {
    /// The repository name in familiar form, e.g. `alpine`, `127.0.0.1:5000/me/app`.
    name: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference format {0:?}: {1}")]
    Invalid(String, &'static str),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let bad = |why| ReferenceError::Invalid(s.to_string(), why);
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|_| bad("bad digest"))?)),
            None => (s, None),
        };
        // A ':' after the last '/' separates the tag; one before it is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(bad("tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
        }
        let name = familiar(name);
        validate_name(&name).map_err(bad)?;
        Ok(Reference {
            name,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// A reference that names `name` with `tag`.
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        Reference::parse(&format!("{}:{}", self.name, tag))
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `latest` when the reference names neither a tag nor a digest.
    pub fn tag_or_default(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some(DEFAULT_TAG),
            (None, Some(_)) => None,
        }
    }

    /// The form stored as a tag in index.json and shown by `images`:
    /// `name:tag`, or `name@digest` for a digest-only reference.
    pub fn canonical(&self) -> String {
        match (self.tag_or_default(), &self.digest) {
            (Some(t), _) => format!("{}:{}", self.name, t),
            (None, Some(d)) => format!("{}@{}", self.name, d),
            (None, None) => unreachable!("tag_or_default gives a tag when there is no digest"),
        }
    }

    /// The registry host (with port) that serves this repository.
    pub fn registry(&self) -> &str {
        match self.domain() {
            Some(d) if d == DOCKER_HUB || d == "index.docker.io" => DOCKER_HUB_API,
            Some(d) => d,
            None => DOCKER_HUB_API,
        }
    }

    /// The repository path on its registry (`library/alpine` on Docker Hub).
    pub fn repository(&self) -> String {
        match self.domain() {
            Some(d) => self.name[d.len() + 1..].to_string(),
            None if !self.name.contains('/') => format!("library/{}", self.name),
            None => self.name.clone(),
        }
    }

    fn domain(&self) -> Option<&str> {
        let (first, _) = self.name.split_once('/')?;
        is_domain(first).then_some(first)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn is_domain(component: &str) -> bool {
    component.contains('.')
        || component.contains(':')
        || component == "localhost"
        || component.chars().any(|c| c.is_ascii_uppercase())
}

/// Strips `docker.io/` and `library/` the way Docker prints Hub names.
fn familiar(name: &str) -> String {
    let rest = name
        .strip_prefix("docker.io/")
        .or_else(|| name.strip_prefix("index.docker.io/"));
    match rest {
        Some(r) => match r.strip_prefix("library/") {
            Some(short) if !short.contains('/') => short.to_string(),
            _ => r.to_string(),
        },
        None => name.to_string(),
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.len() > MAX_NAME_LEN {
        return Err("repository name longer than 255 characters");
    }
    let mut parts = name.split('/').peekable();
    let first = parts.peek().copied().unwrap_or("");
    if name.contains('/') && is_domain(first) {
        if !valid_domain(first) {
            return Err("bad registry host");
        }
        parts.next();
    }
    let mut any = false;
    for part in parts {
        any = true;
        if !valid_path_component(part) {
            return Err("repository name must be lowercase letters, digits and separators");
        }
    }
    if any {
        Ok(())
    } else {
        Err("missing repository name")
    }
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || d.starts_with('[') => (h, Some(p)),
        _ => (d, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    let host_ok = if host.starts_with('[') {
        host.ends_with(']') && host.len() > 2
    } else {
        !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    };
    port_ok && host_ok
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn valid_path_component(p: &str) -> bool {
    let b = p.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_users_write() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<&'a str>,
            bool,
            &'a str,
            &'a str,
            &'a str,
        );
        let cases: &[Case] = &[
            // input, name, tag, has digest, canonical, registry, repository
            (
                "alpine",
                "alpine",
                None,
                false,
                "alpine:latest",
                "registry-1.docker.io",
                "library/alpine",
            ),
            (
                "alpine:3.20",
                "alpine",
                Some("3.20"),
                false,
                "alpine:3.20",
                "registry-1.docker.io",
                "library/alpine",
            ),
            (
                "docker.io/library/debian:12",
                "debian",
                Some("12"),
                false,
                "debian:12",
                "registry-1.docker.io",
                "library/debian",
            ),
            (
                "me/app",
                "me/app",
                None,
                false,
                "me/app:latest",
                "registry-1.docker.io",
                "me/app",
            ),
            (
                "127.0.0.1:5000/library/debian:12",
                "127.0.0.1:5000/library/debian",
                Some("12"),
                false,
                "127.0.0.1:5000/library/debian:12",
                "127.0.0.1:5000",
                "library/debian",
            ),
            (
                "localhost/x/y:t",
                "localhost/x/y",
                Some("t"),
                false,
                "localhost/x/y:t",
                "localhost",
                "x/y",
            ),
            (
                "ghcr.io/a/b-c__d.e",
                "ghcr.io/a/b-c__d.e",
                None,
                false,
                "ghcr.io/a/b-c__d.e:latest",
                "ghcr.io",
                "a/b-c__d.e",
            ),
        ];
        for (input, name, tag, has_digest, canonical, registry, repo) in cases {
            let r = Reference::parse(input).unwrap();
            assert_eq!(r.name(), *name, "{input}");
            assert_eq!(r.tag(), *tag, "{input}");
            assert_eq!(r.digest().is_some(), *has_digest, "{input}");
            assert_eq!(r.canonical(), *canonical, "{input}");
            assert_eq!(r.registry(), *registry, "{input}");
            assert_eq!(r.repository(), *repo, "{input}");
        }
        let r = Reference::parse(&format!("127.0.0.1:5000/app@{d}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.canonical(), format!("127.0.0.1:5000/app@{d}"));
        let r = Reference::parse(&format!("app:1@{d}")).unwrap();
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.to_string(), format!("app:1@{d}"));
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Alpine",
            "alpine:",
            "alpine:-x",
            "a//b",
            "-a",
            "a-",
            "a@sha256:12",
            "a:b:c",
            "/a",
            "a/",
            "foo bar",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
