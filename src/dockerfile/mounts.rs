//! `RUN --mount=...`, as BuildKit spells it: what each mount is (parsed
//! without I/O), what it adds to the step's cache key, and the host side of
//! it for the time the command runs (bound in as `run` volumes).
//!
//! ```text
//! ROOT/layerfs/build-mounts/
//!   cache/<key of id>/id      the cache id, for people reading the store
//!   cache/<key of id>/lock    flock: shared while a RUN uses it, exclusive
//!                             for sharing=locked and for prune
//!   cache/<key of id>/dir/    the cache directory, kept across builds
//! ROOT/layerfs/build-run/<pid>-<step>/
//!   tmp/                      a tmpfs of our own: secrets and type=tmpfs
//!   bind-N/                   a copy of a context bind's source
//! ```
//!
//! Nothing a mount holds reaches the step's layer: the command's writes
//! there go to the host side, and the mountpoints `run` creates are removed
//! before the commit. A secret's bytes live only in the tmpfs, which is
//! unmounted and removed when the step ends.

use super::StepError;
use super::cache;
use super::context::{Context, Kind as EntryKind};
use super::secrets::SecretSpec;
use crate::container::{self, Container};
use crate::oci::Digest;
use crate::run::{self, Session, rules::Volume};
use crate::store::Store;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Bind {
        /// A stage or image; None: the build context.
        from: Option<String>,
        source: String,
        rw: bool,
    },
    Cache {
        id: String,
        sharing: Sharing,
        read_only: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Tmpfs,
    Secret {
        id: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
        /// Also (or, without a target, only) as this environment variable.
        env: Option<String>,
        /// Mounted as a file (a target given, or no env=).
        file: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunMount {
    /// Where the command sees it (absolute, or relative to WORKDIR).
    pub target: String,
    pub kind: Kind,
}

fn bool_value(k: &str, v: Option<&str>) -> Result<bool, String> {
    match v {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(o) => Err(format!("{k}={o}: expected true or false")),
    }
}

fn number(k: &str, v: Option<&str>, radix: u32) -> Result<u32, String> {
    v.and_then(|v| u32::from_str_radix(v, radix).ok())
        .ok_or_else(|| format!("{k}: expected a number, got {:?}", v.unwrap_or("")))
}

/// Parses one `--mount` value (`type=cache,target=/root/.cache,...`).
pub fn parse_mount(spec: &str) -> Result<RunMount, String> {
    let mut fields: Vec<(String, Option<String>)> = Vec::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k, Some(v.trim_matches('"').to_string())),
            None => (part, None),
        };
        fields.push((k.trim().to_ascii_lowercase(), v));
    }
    let get = |names: &[&str]| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.as_deref())
    };
    let known: &[&str] = &[
        "type",
        "target",
        "dst",
        "destination",
        "source",
        "src",
        "from",
        "id",
        "sharing",
        "mode",
        "uid",
        "gid",
        "ro",
        "readonly",
        "rw",
        "readwrite",
        "required",
        "size",
        "env",
    ];
    if let Some((k, _)) = fields.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(format!("--mount {spec}: unknown option {k:?}"));
    }
    let kind = get(&["type"]).flatten().unwrap_or("bind");
    let target = get(&["target", "dst", "destination"])
        .flatten()
        .map(str::to_string);
    let need_target = || {
        target
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("--mount {spec}: target= is required"))
    };
    let owner = |default_mode: u32| -> Result<(u32, u32, u32), String> {
        Ok((
            match get(&["mode"]) {
                Some(v) => number("mode", v, 8)?,
                None => default_mode,
            },
            match get(&["uid"]) {
                Some(v) => number("uid", v, 10)?,
                None => 0,
            },
            match get(&["gid"]) {
                Some(v) => number("gid", v, 10)?,
                None => 0,
            },
        ))
    };
    let read_only = || -> Result<Option<bool>, String> {
        if let Some(v) = get(&["ro", "readonly"]) {
            return bool_value("readonly", v).map(Some);
        }
        if let Some(v) = get(&["rw", "readwrite"]) {
            return bool_value("rw", v).map(|rw| Some(!rw));
        }
        Ok(None)
    };
    let (target, kind) = match kind {
        "bind" => {
            let ro = read_only()?.unwrap_or(true);
            (
                need_target()?,
                Kind::Bind {
                    from: get(&["from"]).flatten().map(str::to_string),
                    source: get(&["source", "src"]).flatten().unwrap_or("").to_string(),
                    rw: !ro,
                },
            )
        }
        "cache" => {
            let target = need_target()?;
            if get(&["from"]).is_some() || get(&["source", "src"]).is_some() {
                return Err(format!(
                    "--mount {spec}: a cache mount's from= and source= are not supported"
                ));
            }
            let sharing = match get(&["sharing"]).flatten() {
                None | Some("shared") => Sharing::Shared,
                Some("private") => Sharing::Private,
                Some("locked") => Sharing::Locked,
                Some(o) => {
                    return Err(format!(
                        "--mount {spec}: sharing={o}: expected shared, private or locked"
                    ));
                }
            };
            let (mode, uid, gid) = owner(0o755)?;
            let id = get(&["id"])
                .flatten()
                .filter(|i| !i.is_empty())
                .unwrap_or(&target)
                .to_string();
            (
                target,
                Kind::Cache {
                    id,
                    sharing,
                    read_only: read_only()?.unwrap_or(false),
                    mode,
                    uid,
                    gid,
                },
            )
        }
        "tmpfs" => (need_target()?, Kind::Tmpfs),
        "secret" => {
            let env = get(&["env"]).flatten().map(str::to_string);
            let id = match (get(&["id"]).flatten(), &target) {
                (Some(i), _) if !i.is_empty() => i.to_string(),
                (_, Some(t)) => t.rsplit('/').next().unwrap_or_default().to_string(),
                _ => String::new(),
            };
            if id.is_empty() {
                return Err(format!("--mount {spec}: a secret needs id= or target="));
            }
            if !super::secrets::valid_id(&id) {
                return Err(format!(
                    "--mount {spec}: a secret's id is a file name, not {id:?}"
                ));
            }
            let file = target.is_some() || env.is_none();
            let (mode, uid, gid) = owner(0o400)?;
            let required = match get(&["required"]) {
                Some(v) => bool_value("required", v)?,
                None => false,
            };
            (
                target.unwrap_or_else(|| format!("/run/secrets/{id}")),
                Kind::Secret {
                    id,
                    required,
                    mode,
                    uid,
                    gid,
                    env,
                    file,
                },
            )
        }
        "ssh" => return Err(format!("--mount {spec}: type=ssh is not supported")),
        o => return Err(format!("--mount {spec}: unknown type {o:?}")),
    };
    Ok(RunMount { target, kind })
}

/// The RUN's `--mount` flags, parsed.
pub fn of_flags(flags: &[(String, Option<String>)]) -> Result<Vec<RunMount>, StepError> {
    flags
        .iter()
        .filter(|(n, _)| n == "mount")
        .map(|(_, v)| parse_mount(v.as_deref().unwrap_or("")).map_err(StepError::Msg))
        .collect()
}

fn absolute(target: &str, workdir: &str) -> String {
    if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{}/{target}", workdir.trim_end_matches('/'))
    }
}

/// The stages and images the mounts bind from (`from=`), by name.
pub fn from_names(mounts: &[RunMount]) -> Vec<String> {
    let mut names: Vec<String> = mounts
        .iter()
        .filter_map(|m| match &m.kind {
            Kind::Bind { from: Some(f), .. } => Some(f.clone()),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// What the mounts add to the step's cache key: what they are and, for a
/// context bind, a digest of what it shows; for a stage or image, its
/// manifest (`from_ids`). A cache mount's contents, a tmpfs and a secret's
/// value are no part of it (as BuildKit keys them).
pub fn key_text(
    mounts: &[RunMount],
    ctx: &Context,
    workdir: &str,
    from_ids: &BTreeMap<String, (Digest, Vec<Digest>)>,
) -> Result<String, StepError> {
    let mut out = String::new();
    for m in mounts {
        let target = absolute(&m.target, workdir);
        let line = match &m.kind {
            Kind::Bind {
                from: None,
                source,
                rw,
            } => {
                let sources = ctx.sources(&[source_pattern(source)])?;
                format!("bind {target} {source} rw={rw} {}", ctx.digest(&sources)?)
            }
            Kind::Bind {
                from: Some(f),
                source,
                rw,
            } => format!(
                "bind {target} from={f} {} {source} rw={rw}",
                from_ids
                    .get(f)
                    .map(|(m, _)| m.to_string())
                    .unwrap_or_default()
            ),
            Kind::Cache {
                id,
                sharing,
                read_only,
                mode,
                uid,
                gid,
            } => format!("cache {target} id={id} {sharing:?} ro={read_only} {mode:o} {uid}:{gid}"),
            Kind::Tmpfs => format!("tmpfs {target}"),
            Kind::Secret {
                id,
                mode,
                uid,
                gid,
                env,
                file,
                ..
            } => format!("secret {target} id={id} {mode:o} {uid}:{gid} env={env:?} file={file}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// A context path as `Context::sources` takes it (`""`/`/` is the whole
/// context).
fn source_pattern(source: &str) -> String {
    let s = source.trim_start_matches('/');
    if s.is_empty() { ".".into() } else { s.into() }
}

/// The host side of a RUN's mounts, while the command runs. Dropping it
/// releases the cache locks, unmounts the tmpfs and removes the copies.
pub struct Prepared {
    pub volumes: Vec<Volume>,
    /// `KEY=VALUE` for secrets asked for as environment variables.
    pub env: Vec<String>,
    scratch: Option<Scratch>,
    _locks: Vec<nix::fcntl::Flock<File>>,
}

struct Scratch {
    dir: PathBuf,
    tmpfs: bool,
}

impl Scratch {
    fn tmp(&mut self) -> Result<PathBuf, StepError> {
        let t = self.dir.join("tmp");
        if !self.tmpfs {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&t)
                .map_err(|e| io(&t, e))?;
            nix::mount::mount(
                Some("tmpfs"),
                &t,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some("mode=0700"),
            )
            .map_err(|e| io(&t, e.into()))?;
            self.tmpfs = true;
        }
        Ok(t)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.tmpfs {
            let _ = nix::mount::umount2(&self.dir.join("tmp"), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn io(p: &Path, e: std::io::Error) -> StepError {
    StepError::Io {
        path: p.display().to_string(),
        source: e,
    }
}

/// The directory of the cache mounts.
pub fn cache_root(store: &Store) -> Result<PathBuf, StepError> {
    Ok(store.own_dir_for("build-mounts")?.join("cache"))
}

/// The directory of the RUN steps' scratch dirs.
pub fn run_root(store: &Store) -> Result<PathBuf, StepError> {
    Ok(store.own_dir_for("build-run")?)
}

fn lock_file(
    path: &Path,
    exclusive: bool,
    wait: bool,
) -> Result<Option<nix::fcntl::Flock<File>>, StepError> {
    use nix::fcntl::{Flock, FlockArg};
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| io(path, e))?;
    let how = match (exclusive, wait) {
        (true, true) => FlockArg::LockExclusive,
        (true, false) => FlockArg::LockExclusiveNonblock,
        (false, true) => FlockArg::LockShared,
        (false, false) => FlockArg::LockSharedNonblock,
    };
    match Flock::lock(f, how) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) if !wait => Ok(None),
        Err((_, e)) => Err(io(path, e.into())),
    }
}

/// What the build tells `prepare` beyond the mounts.
pub struct Inputs<'a> {
    pub store: &'a Store,
    pub ctx: &'a Context,
    pub secrets: &'a [SecretSpec],
    pub workdir: &'a str,
    /// A unique name for this step's scratch dir.
    pub step: String,
    /// The host directory showing a stage's or image's tree, for `from=`.
    pub tree_of: &'a mut dyn FnMut(&str) -> Result<PathBuf, StepError>,
}

/// Makes the host side of `mounts`.
pub fn prepare(mounts: &[RunMount], inp: Inputs<'_>) -> Result<Prepared, StepError> {
    let mut p = Prepared {
        volumes: Vec::new(),
        env: Vec::new(),
        scratch: None,
        _locks: Vec::new(),
    };
    if mounts.is_empty() {
        return Ok(p);
    }
    let dir = run_root(inp.store)?.join(&inp.step);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| io(&dir, e))?;
    p.scratch = Some(Scratch { dir, tmpfs: false });
    for (n, m) in mounts.iter().enumerate() {
        let container = absolute(&m.target, inp.workdir);
        let (host, read_only) = match &m.kind {
            Kind::Bind {
                from: None,
                source,
                rw,
            } => {
                let scratch = p
                    .scratch
                    .as_mut()
                    .map(|s| s.dir.clone())
                    .unwrap_or_default();
                let copy = scratch.join(format!("bind-{n}"));
                copy_from_context(inp.ctx, &source_pattern(source), &copy)?;
                (copy, !rw)
            }
            Kind::Bind {
                from: Some(f),
                source,
                rw,
            } => {
                let root = (inp.tree_of)(f)?;
                let rel = super::ignore::clean(source);
                let host = if rel.is_empty() {
                    root.clone()
                } else {
                    root.join(&rel)
                };
                // The image's own symlinks are not followed out of it.
                let canon = host.canonicalize().map_err(|e| io(&host, e))?;
                let root_canon = root.canonicalize().map_err(|e| io(&root, e))?;
                if !canon.starts_with(&root_canon) {
                    return Err(StepError::Msg(format!(
                        "--mount from={f}: {source} leaves the image"
                    )));
                }
                (canon, !rw)
            }
            Kind::Cache {
                id,
                sharing,
                read_only,
                mode,
                uid,
                gid,
            } => {
                let base = cache_root(inp.store)?.join(cache::key(&["cache mount", id]));
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&base)
                    .map_err(|e| io(&base, e))?;
                let lock = lock_file(
                    &base.join("lock"),
                    *sharing != Sharing::Shared,
                    *sharing != Sharing::Private,
                )?;
                let host = match lock {
                    Some(l) => {
                        p._locks.push(l);
                        base.join("dir")
                    }
                    // private, and in use: a fresh one of our own.
                    None => p
                        .scratch
                        .as_ref()
                        .map(|s| s.dir.join(format!("cache-{n}")))
                        .unwrap_or_default(),
                };
                if !host.exists() {
                    let _ = std::fs::write(base.join("id"), id.as_bytes());
                    std::fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&host)
                        .map_err(|e| io(&host, e))?;
                    std::os::unix::fs::chown(&host, Some(*uid), Some(*gid))
                        .map_err(|e| io(&host, e))?;
                    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(*mode))
                        .map_err(|e| io(&host, e))?;
                }
                (host, *read_only)
            }
            Kind::Tmpfs => {
                let scratch = p
                    .scratch
                    .as_mut()
                    .ok_or_else(|| StepError::Msg("no scratch".into()))?;
                let t = scratch.tmp()?.join(format!("tmpfs-{n}"));
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&t)
                    .map_err(|e| io(&t, e))?;
                std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o1777))
                    .map_err(|e| io(&t, e))?;
                (t, false)
            }
            Kind::Secret {
                id,
                required,
                mode,
                uid,
                gid,
                env,
                file,
            } => {
                let Some(spec) = inp.secrets.iter().rev().find(|s| &s.id == id) else {
                    if *required {
                        return Err(StepError::Msg(format!(
                            "secret {id} is required: pass it with build --secret id={id},src=PATH"
                        )));
                    }
                    continue;
                };
                let bytes = spec.read()?;
                if let Some(var) = env {
                    p.env
                        .push(format!("{var}={}", String::from_utf8_lossy(&bytes)));
                }
                if !file {
                    continue;
                }
                let scratch = p
                    .scratch
                    .as_mut()
                    .ok_or_else(|| StepError::Msg("no scratch".into()))?;
                let f = scratch.tmp()?.join(format!("secret-{n}"));
                std::fs::write(&f, &bytes).map_err(|e| io(&f, e))?;
                std::os::unix::fs::chown(&f, Some(*uid), Some(*gid)).map_err(|e| io(&f, e))?;
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| io(&f, e))?;
                (f, true)
            }
        };
        p.volumes.push(Volume {
            host,
            container,
            read_only,
        });
    }
    Ok(p)
}

/// A stage's or image's tree on the host for a `from=` bind: a container of
/// it mounted by a thread of ours (so an rw bind's writes go to its upper
/// dir, and away with it).
pub struct ImageMount<'s> {
    store: &'s Store,
    session: Option<Session>,
    container: Option<Container>,
    pub path: PathBuf,
}

impl<'s> ImageMount<'s> {
    pub fn start(
        store: &'s Store,
        name: &str,
        what: &str,
        manifest: Digest,
        layers: &[Digest],
    ) -> Result<ImageMount<'s>, StepError> {
        let path = run_root(store)?.join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| io(&path, e))?;
        let mut m = ImageMount {
            store,
            session: None,
            container: None,
            path,
        };
        let c = run::create_container(
            store,
            Some(name),
            what,
            manifest,
            layers,
            Some(std::process::id()),
        )?;
        let c_name = c.name.clone();
        m.container = Some(c);
        m.session = Some(Session::start(store, &c_name, &m.path)?);
        Ok(m)
    }
}

impl Drop for ImageMount<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.finish();
        }
        if let Some(c) = self.container.take() {
            let _ = container::remove(self.store, &c);
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Copies a context path (a file, or a directory with what .dockerignore
/// leaves of it) to `dest`.
fn copy_from_context(ctx: &Context, pattern: &str, dest: &Path) -> Result<(), StepError> {
    let sources = ctx.sources(&[pattern.to_string()])?;
    let Some(src) = sources.first() else {
        return Err(StepError::Msg(format!(
            "{pattern}: not in the build context"
        )));
    };
    let mode = |m: u32| std::fs::Permissions::from_mode(m & 0o7777);
    match &src.kind {
        EntryKind::File => {
            let mut from = ctx.open_file(src)?;
            let mut to = File::create(dest).map_err(|e| io(dest, e))?;
            std::io::copy(&mut from, &mut to).map_err(|e| io(dest, e))?;
            std::fs::set_permissions(dest, mode(src.stat.st_mode)).map_err(|e| io(dest, e))?;
            return Ok(());
        }
        EntryKind::Dir => {
            std::fs::create_dir(dest).map_err(|e| io(dest, e))?;
        }
        _ => {
            return Err(StepError::Msg(format!(
                "{pattern}: a bind mount's source is a file or a directory"
            )));
        }
    }
    let mut dirs = vec![(dest.to_path_buf(), src.stat.st_mode)];
    ctx.walk::<StepError>(src, &mut |e| {
        use std::os::unix::ffi::OsStrExt;
        let path = dest.join(std::ffi::OsStr::from_bytes(&e.rel));
        match &e.kind {
            EntryKind::Dir => {
                std::fs::create_dir(&path).map_err(|err| io(&path, err))?;
                dirs.push((path, e.stat.st_mode));
            }
            EntryKind::File => {
                let mut from = e.open().map_err(|err| io(&path, err))?;
                let mut to = File::create(&path).map_err(|err| io(&path, err))?;
                std::io::copy(&mut from, &mut to).map_err(|err| io(&path, err))?;
                std::fs::set_permissions(&path, mode(e.stat.st_mode))
                    .map_err(|err| io(&path, err))?;
            }
            EntryKind::Symlink(t) => {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(t), &path)
                    .map_err(|err| io(&path, err))?;
            }
            // Devices, FIFOs and sockets are left out, as COPY of a bind would.
            _ => {}
        }
        Ok(())
    })?;
    // Modes last, so a read-only directory could still be filled.
    for (d, m) in dirs {
        std::fs::set_permissions(&d, mode(m)).map_err(|e| io(&d, e))?;
    }
    Ok(())
}

/// `build prune`: removes the cache mounts no build uses now, and the
/// scratch dirs of builds that died; returns the bytes freed.
pub fn prune(store: &Store) -> Result<u64, StepError> {
    let mut freed = 0;
    let root = cache_root(store)?;
    if let Ok(rd) = std::fs::read_dir(&root) {
        for e in rd.flatten() {
            let base = e.path();
            // A cache in use by a running build stays.
            let Some(_lock) = lock_file(&base.join("lock"), true, false)? else {
                continue;
            };
            freed += du(&base.join("dir"));
            let dir = base.join("dir");
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|err| io(&dir, err))?;
            }
            let _ = std::fs::remove_file(base.join("id"));
        }
    }
    let runs = run_root(store)?;
    if let Ok(rd) = std::fs::read_dir(&runs) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !crate::store::process_alive(p)) {
                let _ =
                    nix::mount::umount2(&e.path().join("tmp"), nix::mount::MntFlags::MNT_DETACH);
                freed += du(&e.path());
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(freed)
}

/// Bytes of the regular files under `p` (not following symlinks).
fn du(p: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !md.is_dir() {
        return if md.is_file() { md.len() } else { 0 };
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_flags_as_buildkit_spells_them() {
        let m = parse_mount("type=cache,target=/root/.cache").unwrap();
        assert_eq!(
            m,
            RunMount {
                target: "/root/.cache".into(),
                kind: Kind::Cache {
                    id: "/root/.cache".into(),
                    sharing: Sharing::Shared,
                    read_only: false,
                    mode: 0o755,
                    uid: 0,
                    gid: 0
                }
            }
        );
        let m =
            parse_mount("type=cache,dst=/c,id=go,sharing=locked,mode=0700,uid=5,gid=6,ro").unwrap();
        assert_eq!(
            m.kind,
            Kind::Cache {
                id: "go".into(),
                sharing: Sharing::Locked,
                read_only: true,
                mode: 0o700,
                uid: 5,
                gid: 6
            }
        );
        // bind is the default type, read-only unless rw.
        let m = parse_mount("target=/src,source=app").unwrap();
        assert_eq!(
            m.kind,
            Kind::Bind {
                from: None,
                source: "app".into(),
                rw: false
            }
        );
        let m = parse_mount("type=bind,target=/src,from=builder,src=/out,rw").unwrap();
        assert_eq!(
            m.kind,
            Kind::Bind {
                from: Some("builder".into()),
                source: "/out".into(),
                rw: true
            }
        );
        assert_eq!(
            parse_mount("type=tmpfs,target=/t").unwrap().kind,
            Kind::Tmpfs
        );
        // A secret lands in /run/secrets/ID unless told otherwise.
        let m = parse_mount("type=secret,id=token").unwrap();
        assert_eq!(m.target, "/run/secrets/token");
        assert!(matches!(
            m.kind,
            Kind::Secret { ref id, required: false, mode: 0o400, file: true, .. } if id == "token"
        ));
        let m = parse_mount("type=secret,target=/etc/key,required").unwrap();
        assert!(matches!(
            m.kind,
            Kind::Secret { ref id, required: true, .. } if id == "key"
        ));
        let m = parse_mount("type=secret,id=t,env=TOKEN").unwrap();
        assert!(
            matches!(m.kind, Kind::Secret { file: false, ref env, .. } if env.as_deref() == Some("TOKEN"))
        );
        for bad in [
            "type=cache",
            "type=bind",
            "type=tmpfs",
            "type=secret",
            "type=secret,id=..",
            "type=secret,id=.",
            "type=ssh,target=/x",
            "type=nfs,target=/x",
            "type=cache,target=/c,sharing=sometimes",
            "type=cache,target=/c,mode=rwx",
            "type=cache,target=/c,from=x",
            "type=bind,target=/c,colour=red",
            "type=bind,target=/c,ro=maybe",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }
    }
}
