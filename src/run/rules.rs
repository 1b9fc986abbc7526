//! Docker's rules for turning an image config and `run` flags into a
//! process: the argv (Entrypoint and Cmd), the environment, the user (by
//! name from the image's /etc/passwd and /etc/group), the working directory
//! and `-v` volumes. Pure functions over text, tested as tables.

use super::RunError;
use std::path::PathBuf;

/// The PATH a container gets when its image sets none (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Entrypoint followed by the arguments given to `run`, or by the image's
/// Cmd when none are given.
pub fn argv(
    entrypoint: Option<&[String]>,
    cmd: Option<&[String]>,
    args: &[String],
) -> Result<Vec<String>, RunError> {
    let mut out: Vec<String> = entrypoint.unwrap_or_default().to_vec();
    if args.is_empty() {
        out.extend_from_slice(cmd.unwrap_or_default());
    } else {
        out.extend_from_slice(args);
    }
    if out.is_empty() {
        return Err(RunError::NoCommand);
    }
    Ok(out)
}

/// As Docker builds it: PATH (its default) and HOSTNAME, replaced or
/// extended by the image's Env, then by each `-e KEY=VALUE` (or `-e KEY`,
/// taken from `host` when set there); HOME from /etc/passwd last, when
/// nothing set it (as runc does).
pub fn environment(
    image: &[String],
    extra: &[String],
    hostname: &str,
    home: &str,
    host: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    fn key(kv: &str) -> &str {
        kv.split('=').next().unwrap_or_default()
    }
    fn set(env: &mut Vec<String>, kv: String) {
        match env.iter_mut().find(|e| key(e) == key(&kv)) {
            Some(slot) => *slot = kv,
            None => env.push(kv),
        }
    }
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    for kv in image {
        set(&mut env, kv.clone());
    }
    for e in extra {
        match e.split_once('=') {
            Some(_) => set(&mut env, e.clone()),
            None => {
                if let Some(v) = host(e) {
                    set(&mut env, format!("{e}={v}"));
                }
            }
        }
    }
    if !env.iter().any(|e| key(e) == "HOME") {
        env.push(format!("HOME={home}"));
    }
    env
}

/// A `-e` flag as Docker takes it: `KEY=VALUE` or `KEY`, the key not empty
/// (`-e =x` is refused, as Docker does) and nothing holding a NUL byte.
pub fn check_env(kv: &str) -> Result<(), RunError> {
    let bad = |why| Err(RunError::BadEnv(kv.to_string(), why));
    let key = kv.split_once('=').map_or(kv, |(k, _)| k);
    if key.is_empty() {
        return bad("invalid environment variable: the name is empty");
    }
    if kv.contains('\0') {
        return bad("invalid environment variable: it holds a NUL byte");
    }
    Ok(())
}

/// The PATH directories to look a command up in, from an environment.
pub fn search_path(env: &[String]) -> Vec<String> {
    env.iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .split(':')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// Who the command runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one included).
    pub groups: Vec<u32>,
    pub home: String,
}

pub(crate) struct PasswdEntry<'a> {
    pub(crate) name: &'a str,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) home: &'a str,
}

/// Each well-formed line of an /etc/passwd.
pub(crate) fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || l.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

/// (name, gid, members) of each line of an /etc/group.
pub(crate) fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// Resolves a `USER` value (`name`, `uid`, `name:group`, `uid:gid`, or empty
/// for root) against the image's /etc/passwd and /etc/group, as runc does:
/// a name must exist; a number need not (its group is then 0 and its home
/// `/`); supplementary groups are those that list the user, unless a group
/// is given.
pub fn user_ids(spec: &str, passwd: &str, group: &str) -> Result<Ids, RunError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let numeric = user.parse::<u32>().ok();
    let found = passwd_entries(passwd).find(|e| match numeric {
        Some(n) => e.uid == n,
        None => e.name == user,
    });
    let (uid, mut gid, home, name) = match (&found, numeric) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_string(), Some(e.name)),
        (None, Some(n)) => (n, 0, "/".to_string(), None),
        (None, None) => {
            return Err(RunError::User(format!(
                "unable to find user {user}: no matching entries in /etc/passwd"
            )));
        }
    };
    let mut groups = Vec::new();
    match grp {
        Some(g) if !g.is_empty() => {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => group_entries(group)
                    .find(|(n, _, _)| *n == g)
                    .map(|(_, id, _)| id)
                    .ok_or_else(|| {
                        RunError::User(format!(
                            "unable to find group {g}: no matching entries in /etc/group"
                        ))
                    })?,
            };
        }
        _ => {
            if let Some(name) = name {
                groups.extend(
                    group_entries(group)
                        .filter(|(_, _, members)| members.contains(&name))
                        .map(|(_, id, _)| id),
                );
            }
        }
    }
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    Ok(Ids {
        uid,
        gid,
        groups,
        home,
    })
}

/// A `-v HOST:CONTAINER[:ro|rw]` bind mount.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Volume {
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
}

pub fn parse_volume(s: &str) -> Result<Volume, RunError> {
    let bad = |why: &'static str| RunError::BadVolume(s.to_string(), why);
    let parts: Vec<&str> = s.split(':').collect();
    let (host, container, read_only) = match parts.as_slice() {
        [h, c] => (*h, *c, false),
        [h, c, "ro"] => (*h, *c, true),
        [h, c, "rw"] => (*h, *c, false),
        [_, _, _] => return Err(bad("the mode must be ro or rw")),
        _ => return Err(bad("expected HOST:CONTAINER[:ro]")),
    };
    if !host.starts_with('/') {
        return Err(bad(
            "the host path must be absolute (named volumes are not supported)",
        ));
    }
    if !container.starts_with('/') {
        return Err(bad("the container path must be absolute"));
    }
    if is_root(container) {
        return Err(bad("the container path can't be '/'"));
    }
    Ok(Volume {
        host: PathBuf::from(host),
        container: container.to_string(),
        read_only,
    })
}

/// Whether an absolute path names `/` once `.`, `..` and repeated slashes
/// are taken out.
fn is_root(path: &str) -> bool {
    let mut depth = 0usize;
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => depth = depth.saturating_sub(1),
            _ => depth += 1,
        }
    }
    depth == 0
}

/// The working directory: `-w`, else the image's WorkingDir, else `/`.
pub fn workdir(flag: Option<&str>, image: Option<&str>) -> Result<String, RunError> {
    match flag {
        Some(w) if !w.starts_with('/') => Err(RunError::BadWorkdir(w.to_string())),
        Some(w) => Ok(w.to_string()),
        None => match image {
            Some(w) if !w.is_empty() => Ok(if w.starts_with('/') {
                w.to_string()
            } else {
                format!("/{w}")
            }),
            _ => Ok("/".to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn argv_follows_docker() {
        type Case<'a> = (
            Option<&'a [&'a str]>,
            Option<&'a [&'a str]>,
            &'a [&'a str],
            &'a [&'a str],
        );
        let table: &[Case] = &[
            (None, Some(&["bash"]), &[], &["bash"]),
            (None, Some(&["bash"]), &["ls", "-l"], &["ls", "-l"]),
            (
                Some(&["/entry", "-x"]),
                Some(&["def"]),
                &[],
                &["/entry", "-x", "def"],
            ),
            (
                Some(&["/entry"]),
                Some(&["def"]),
                &["arg"],
                &["/entry", "arg"],
            ),
            (Some(&["/entry"]), None, &[], &["/entry"]),
        ];
        for (ep, cmd, args, want) in table {
            let ep = ep.map(v);
            let cmd = cmd.map(v);
            let got = argv(ep.as_deref(), cmd.as_deref(), &v(args)).unwrap();
            assert_eq!(got, v(want));
        }
        assert!(matches!(argv(None, None, &[]), Err(RunError::NoCommand)));
    }

    #[test]
    fn environment_layers_image_defaults_and_flags() {
        let host = |k: &str| (k == "FROM_HOST").then(|| "h".to_string());
        let env = environment(
            &v(&["PATH=/opt/bin", "A=1", "B=2"]),
            &v(&["B=3", "C=4", "FROM_HOST", "UNSET_ON_HOST"]),
            "box",
            "/root",
            host,
        );
        assert_eq!(
            env,
            v(&[
                "PATH=/opt/bin",
                "HOSTNAME=box",
                "A=1",
                "B=3",
                "C=4",
                "FROM_HOST=h",
                "HOME=/root"
            ])
        );
        let env = environment(&v(&["HOME=/srv"]), &[], "h", "/root", |_| None);
        assert_eq!(
            env,
            v(&[&format!("PATH={DEFAULT_PATH}"), "HOSTNAME=h", "HOME=/srv"])
        );
        assert_eq!(
            search_path(&env).first().map(String::as_str),
            Some("/usr/local/sbin")
        );
    }

    #[test]
    fn env_flags_need_a_name() {
        for good in ["A=1", "A=", "A", "A==b", "PATH=/x:/y"] {
            assert!(check_env(good).is_ok(), "{good}");
        }
        for bad in ["=x", "=", "", "A=\0"] {
            let e = check_env(bad).unwrap_err().to_string();
            assert!(e.contains("invalid environment variable"), "{bad:?}: {e}");
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:app\napp:x:1000:\nstaff:x:50:other,app\n";

    #[test]
    fn users_resolve_as_runc_does() {
        let ids = |uid, gid, groups: &[u32], home: &str| Ids {
            uid,
            gid,
            groups: groups.to_vec(),
            home: home.to_string(),
        };
        let table: &[(&str, Ids)] = &[
            ("", ids(0, 0, &[0], "/root")),
            ("root", ids(0, 0, &[0], "/root")),
            ("app", ids(1000, 1000, &[1000, 4, 50], "/home/app")),
            ("1000", ids(1000, 1000, &[1000, 4, 50], "/home/app")),
            ("app:staff", ids(1000, 50, &[50], "/home/app")),
            ("app:7", ids(1000, 7, &[7], "/home/app")),
            ("4242", ids(4242, 0, &[0], "/")),
            ("4242:4243", ids(4242, 4243, &[4243], "/")),
        ];
        for (spec, want) in table {
            assert_eq!(&user_ids(spec, PASSWD, GROUP).unwrap(), want, "{spec}");
        }
        for bad in ["nobody", "app:nogroup"] {
            let e = user_ids(bad, PASSWD, GROUP).unwrap_err().to_string();
            assert!(e.contains("unable to find"), "{bad}: {e}");
        }
    }

    #[test]
    fn volumes_and_workdirs() {
        assert_eq!(
            parse_volume("/srv/data:/data:ro").unwrap(),
            Volume {
                host: "/srv/data".into(),
                container: "/data".into(),
                read_only: true
            }
        );
        assert!(!parse_volume("/a:/b").unwrap().read_only);
        for bad in ["data:/data", "/a:b", "/a:/b:rx", "/a"] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
        for root in ["/x:/", "/x://", "/x:/.", "/x:/a/..", "/x:/../..:ro"] {
            let e = parse_volume(root).unwrap_err().to_string();
            assert!(e.contains("can't be '/'"), "{root}: {e}");
        }
        assert!(parse_volume("/x:/a/../b").is_ok());
        assert_eq!(workdir(None, None).unwrap(), "/");
        assert_eq!(workdir(None, Some("/srv")).unwrap(), "/srv");
        assert_eq!(workdir(Some("/tmp"), Some("/srv")).unwrap(), "/tmp");
        assert!(workdir(Some("rel"), None).is_err());
    }
}
