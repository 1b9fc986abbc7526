//! Authentication as registries ask for it in `WWW-Authenticate`: none,
//! HTTP Basic, or Bearer tokens from the challenge's realm (Docker's token
//! protocol), cached per scope so a pull asks for its token once.

use super::credentials::Credentials;
use std::collections::HashMap;
use std::sync::Mutex;

/// What the registry asked for, from the latest 401 it sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// Nothing asked yet (the `/v2/` ping answered 200).
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        /// The scope the challenged request needs, when the registry says.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value: `Basic realm="x"` or
/// `Bearer realm="https://auth/token",service="reg",scope="repository:a:pull"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

/// `k="v", k2=v2`: quoted values may hold commas and `\"`.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_string();
        if name.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.push((name, value));
    }
    out
}

/// The scopes a request needs, e.g. `repository:me/app:pull`. Kept sorted so
/// the same set is one cache key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scopes(Vec<String>);

impl Scopes {
    pub fn pull(repo: &str) -> Scopes {
        Scopes(vec![format!("repository:{repo}:pull")])
    }
    pub fn push(repo: &str) -> Scopes {
        Scopes(vec![format!("repository:{repo}:pull,push")])
    }
    /// Push to `repo` and read `from` (a cross-repository mount).
    pub fn mount(repo: &str, from: &str) -> Scopes {
        let mut s = Scopes::push(repo);
        s.add(&format!("repository:{from}:pull"));
        s
    }
    pub fn none() -> Scopes {
        Scopes(Vec::new())
    }
    pub fn add(&mut self, scope: &str) {
        for one in scope.split(' ').filter(|s| !s.is_empty()) {
            if !self.0.iter().any(|s| s == one) {
                self.0.push(one.to_string());
            }
        }
        self.0.sort();
    }
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
    fn key(&self) -> String {
        self.0.join(" ")
    }
}

/// The auth state of one registry client, shared by its download threads.
pub struct Auth {
    creds: Option<Credentials>,
    state: Mutex<State>,
}

struct State {
    challenge: Challenge,
    tokens: HashMap<String, String>,
}

/// What to send with a request.
pub enum Header {
    None,
    Basic(String),
    /// Needs a token for these scopes from the realm first.
    NeedToken {
        realm: String,
        service: Option<String>,
        scopes: Scopes,
    },
    Bearer(String),
}

impl Auth {
    pub fn new(creds: Option<Credentials>) -> Auth {
        Auth {
            creds,
            state: Mutex::new(State {
                challenge: Challenge::None,
                tokens: HashMap::new(),
            }),
        }
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.creds.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of a
        // cache; the cache is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn challenge(&self) -> Challenge {
        self.lock().challenge.clone()
    }

    pub fn set_challenge(&self, c: Challenge) {
        self.lock().challenge = c;
    }

    /// The Authorization to send for a request needing `scopes`.
    pub fn header(&self, scopes: &Scopes) -> Header {
        let st = self.lock();
        match &st.challenge {
            Challenge::None => Header::None,
            Challenge::Basic => match &self.creds {
                Some(c) => Header::Basic(c.basic_value()),
                None => Header::None,
            },
            Challenge::Bearer { realm, service, .. } => match st.tokens.get(&scopes.key()) {
                Some(t) => Header::Bearer(t.clone()),
                None => Header::NeedToken {
                    realm: realm.clone(),
                    service: service.clone(),
                    scopes: scopes.clone(),
                },
            },
        }
    }

    pub fn store_token(&self, scopes: &Scopes, token: String) {
        self.lock().tokens.insert(scopes.key(), token);
    }

    /// Forgets the token for `scopes` if it is still `sent`, the one a
    /// registry just refused, and not a newer one another request fetched.
    pub fn drop_token(&self, scopes: &Scopes, sent: &str) {
        let mut st = self.lock();
        if st.tokens.get(&scopes.key()).is_some_and(|t| t == sent) {
            st.tokens.remove(&scopes.key());
        }
    }
}

/// The token endpoint's answer (`token`, or OAuth2's `access_token`).
#[derive(serde::Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
}

impl TokenResponse {
    pub fn into_token(self) -> Option<String> {
        self.token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let cases: &[(&str, Option<Challenge>)] = &[
            (r#"Basic realm="lfs-test-realm""#, Some(Challenge::Basic)),
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
                Some(Challenge::Bearer {
                    realm: "https://auth.docker.io/token".into(),
                    service: Some("registry.docker.io".into()),
                    scope: Some("repository:library/alpine:pull".into()),
                }),
            ),
            (
                // Scope values hold commas; unquoted values and spaces after commas.
                r#"bearer realm=http://127.0.0.1:1/t, scope="repository:a/b:pull,push", error="insufficient_scope""#,
                Some(Challenge::Bearer {
                    realm: "http://127.0.0.1:1/t".into(),
                    service: None,
                    scope: Some("repository:a/b:pull,push".into()),
                }),
            ),
            (r#"Bearer service="x""#, None),
            ("Negotiate", None),
        ];
        for (h, want) in cases {
            assert_eq!(&parse_challenge(h), want, "{h}");
        }
    }

    #[test]
    fn scopes_are_one_key_in_any_order() {
        let mut a = Scopes::push("me/app");
        a.add("repository:base:pull");
        let b = Scopes::mount("me/app", "base");
        assert_eq!(a, b);
        let auth = Auth::new(None);
        auth.set_challenge(Challenge::Bearer {
            realm: "r".into(),
            service: None,
            scope: None,
        });
        auth.store_token(&a, "T".into());
        assert!(matches!(auth.header(&b), Header::Bearer(t) if t == "T"));
        assert!(matches!(
            auth.header(&Scopes::pull("me/app")),
            Header::NeedToken { .. }
        ));
    }

    #[test]
    fn a_refused_token_is_dropped_but_a_newer_one_kept() {
        let auth = Auth::new(None);
        auth.set_challenge(Challenge::Bearer {
            realm: "r".into(),
            service: None,
            scope: None,
        });
        let s = Scopes::pull("me/app");
        auth.store_token(&s, "new".into());
        auth.drop_token(&s, "old");
        assert!(matches!(auth.header(&s), Header::Bearer(t) if t == "new"));
        auth.drop_token(&s, "new");
        assert!(matches!(auth.header(&s), Header::NeedToken { .. }));
    }
}
