//! Containers: an image plus a writable upper directory, kept under the
//! store until removed, whether mounted or not.
//!
//! ```text
//! ROOT/layerfs/containers/<name>/
//!   container.json   name, ID, image, manifest digest, created, form
//!   upper/           the changes (see union::upper for their form, which
//!                    its root's user.layerfs.form xattr repeats)
//!   work/            scratch on the same filesystem, for atomic copy-ups
//!   control.sock     while mounted: commit asks the daemon to hold changes
//! ```
//!
//! The control protocol is one line at a time: the client sends `freeze`,
//! the daemon stops every change and answers `frozen`; while frozen the
//! client sends `hold` at least every `HOLD_EVERY`, and `thaw`, which the
//! daemon answers with `thawed` once changes resume. A client that stays
//! silent (before `freeze` or while frozen) is dropped and its freeze ends;
//! the missing `thawed` then tells it its snapshot was not held throughout.

use crate::oci::{Digest, Manifest, Platform, time};
use crate::store::{Hold, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("a container named {0} already exists")]
    Exists(String),
    #[error("invalid container name {0:?}: use letters, digits, '_', '.' and '-'")]
    BadName(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what} names several containers ({names}); use more digits or a name")]
    Ambiguous { what: String, names: String },
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    #[error("the container's daemon did not hold its changes: {0}")]
    Freeze(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError + '_ {
    move |source| ContainerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub const FREEZE: &str = "freeze";
pub const FROZEN: &str = "frozen";
pub const HOLD: &str = "hold";
pub const THAW: &str = "thaw";
pub const THAWED: &str = "thawed";
/// How often a frozen client says `hold`; the daemon drops one silent for
/// `control::SILENCE` (several of these).
pub const HOLD_EVERY: Duration = Duration::from_secs(1);

/// A live container's changes held by its daemon while this lives (dropping
/// it thaws them). A container that is not mounted needs no holding.
pub struct Freeze {
    conn: Option<(UnixStream, BufReader<UnixStream>)>,
    last_hold: Cell<Instant>,
}

impl Freeze {
    pub fn take(c: &Container) -> Result<Freeze, ContainerError> {
        let sock = c.control_socket();
        let mut stream = match UnixStream::connect(&sock) {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(Freeze {
                    conn: None,
                    last_hold: Cell::new(Instant::now()),
                });
            }
            Err(e) => return Err(io(&sock)(e)),
        };
        let failed = |e: std::io::Error| ContainerError::Freeze(e.to_string());
        writeln!(stream, "{FREEZE}").map_err(failed)?;
        let mut reader = BufReader::new(stream.try_clone().map_err(failed)?);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(failed)?;
        if line.trim() != FROZEN {
            return Err(ContainerError::Freeze(format!("it answered {line:?}")));
        }
        Ok(Freeze {
            conn: Some((stream, reader)),
            last_hold: Cell::new(Instant::now()),
        })
    }

    /// Tells the daemon the holder is still at work (at most every
    /// `HOLD_EVERY`; cheap to call often). A failure shows at `release`.
    pub fn keep(&self) {
        if let Some((s, _)) = &self.conn
            && self.last_hold.get().elapsed() >= HOLD_EVERY
        {
            self.last_hold.set(Instant::now());
            let _ = writeln!(&*s, "{HOLD}");
        }
    }

    /// Ends the freeze; fails if the daemon had stopped holding the changes
    /// before now (it dropped this client as silent, or went away).
    pub fn release(mut self) -> Result<(), ContainerError> {
        let Some((mut s, mut reader)) = self.conn.take() else {
            return Ok(());
        };
        let lost = |why: String| {
            ContainerError::Freeze(format!(
                "it stopped holding the changes before the end ({why})"
            ))
        };
        writeln!(s, "{THAW}").map_err(|e| lost(e.to_string()))?;
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| lost(e.to_string()))?;
        if line.trim() != THAWED {
            return Err(lost(format!("it answered {line:?}")));
        }
        Ok(())
    }
}

impl Drop for Freeze {
    fn drop(&mut self) {
        if let Some((s, _)) = &mut self.conn {
            let _ = writeln!(s, "{THAW}");
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    /// 64 hex digits, as Docker's container IDs (listings show 12). Records
    /// written before IDs existed get one derived from name and creation.
    #[serde(default)]
    pub id: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's top-level manifest (or index) digest, as stored.
    pub manifest: Digest,
    pub created: String,
    /// For a build's RUN-step container: the build process, which removes
    /// it when the step ends (or a later build does, if that process died).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_pid: Option<u32>,
    /// How its upper dir keeps owners and marks, chosen when it is made:
    /// `root`, or `user` for one made by an ordinary user (union::upper).
    #[serde(default)]
    pub form: crate::union::Form,
    #[serde(skip)]
    dir: PathBuf,
}

impl Container {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
    /// The manifest of the container's image for this machine's platform.
    pub fn image_manifest(&self, store: &Store) -> Result<Manifest, StoreError> {
        Ok(store
            .manifest_for_platform(&self.manifest, &Platform::host())?
            .1)
    }

    /// The ID as listings show it: its first 12 digits.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }

    fn hold_id(&self) -> String {
        format!("container-{}", self.name)
    }

    /// Bytes the container's changes use on disk.
    pub fn size(&self) -> u64 {
        fn du(p: &Path) -> u64 {
            let Ok(md) = fs::symlink_metadata(p) else {
                return 0;
            };
            let own = std::os::unix::fs::MetadataExt::blocks(&md) * 512;
            if !md.is_dir() {
                return own;
            }
            own + fs::read_dir(p).map_or(0, |rd| rd.flatten().map(|e| du(&e.path())).sum())
        }
        du(&self.upper())
    }
}

fn containers_dir(store: &Store) -> Result<PathBuf, ContainerError> {
    Ok(store.own_dir_for("containers")?)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A name as Docker gives one: adjective_noun, unused in this store.
fn random_name(store: &Store) -> Result<String, ContainerError> {
    const ADJ: [&str; 16] = [
        "brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nifty", "proud", "quiet", "sharp", "tender", "vivid",
    ];
    const NOUN: [&str; 16] = [
        "archimedes",
        "babbage",
        "curie",
        "darwin",
        "euler",
        "fermat",
        "gauss",
        "hopper",
        "kepler",
        "lovelace",
        "noether",
        "pascal",
        "ritchie",
        "shannon",
        "turing",
        "wozniak",
    ];
    let mut seed = [0u8; 8];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut seed);
    }
    let mut x = u64::from_le_bytes(seed) | 1;
    for _ in 0..64 {
        let name = format!(
            "{}_{}",
            ADJ[(x & 15) as usize],
            NOUN[((x >> 4) & 15) as usize]
        );
        let name = if containers_dir(store)?.join(&name).exists() {
            format!("{name}_{}", (x >> 8) % 1000)
        } else {
            name
        };
        if !containers_dir(store)?.join(&name).exists() {
            return Ok(name);
        }
        x = x.rotate_left(13) ^ 0x9e37_79b9_7f4a_7c15;
    }
    Ok(format!("container_{}", x % 1_000_000))
}

/// 32 random bytes in hex.
fn new_id() -> String {
    let mut bytes = [0u8; 32];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut bytes);
    }
    if bytes == [0u8; 32] {
        // No /dev/urandom: unique enough from the clock and the pid.
        let seed = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
        return crate::oci::Digest::of(seed.as_bytes()).hex();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates a container over image `image` (its top-level manifest `manifest`).
pub fn create(
    store: &Store,
    name: Option<&str>,
    image: &str,
    manifest: Digest,
    build_pid: Option<u32>,
) -> Result<Container, ContainerError> {
    let name = match name {
        Some(n) if !valid_name(n) => return Err(ContainerError::BadName(n.to_string())),
        Some(n) => n.to_string(),
        None => random_name(store)?,
    };
    let dir = containers_dir(store)?.join(&name);
    // Creating the directory claims the name: of two racing creates, one fails here.
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(ContainerError::Exists(name));
        }
        Err(e) => return Err(io(&dir)(e)),
    }
    let c = Container {
        name: name.clone(),
        id: new_id(),
        image: image.to_string(),
        manifest,
        created: time::now_rfc3339(),
        build_pid,
        form: crate::union::Form::for_this_process(),
        dir: dir.clone(),
    };
    let made = (|| {
        store.add_hold(&Hold {
            id: c.hold_id(),
            manifests: vec![manifest],
            what: format!("container {name}"),
            pid: None,
        })?;
        fs::create_dir(c.upper()).map_err(io(&dir))?;
        c.form.stamp(&c.upper()).map_err(io(&c.upper()))?;
        fs::create_dir(c.work()).map_err(io(&dir))?;
        let record = dir.join("container.json");
        let bytes =
            serde_json::to_vec_pretty(&c).map_err(|e| io(&record)(std::io::Error::other(e)))?;
        Ok(store.write_file(&record, &bytes)?)
    })();
    if let Err(e) = made {
        let _ = fs::remove_dir_all(&dir);
        let _ = store.remove_hold(&c.hold_id());
        return Err(e);
    }
    Ok(c)
}

/// The container a user's words name: its name, its ID, or a unique prefix
/// of its ID (as Docker takes them).
pub fn load(store: &Store, what: &str) -> Result<Container, ContainerError> {
    match load_named(store, what) {
        Err(ContainerError::NotFound(_)) if crate::oci::is_hex_prefix(what) => {}
        other => return other,
    }
    let mut hits = list(store)?.into_iter().filter(|c| c.id.starts_with(what));
    match (hits.next(), hits.next()) {
        (Some(c), None) => Ok(c),
        (Some(a), Some(b)) => Err(ContainerError::Ambiguous {
            what: what.to_string(),
            names: format!("{}, {}", a.name, b.name),
        }),
        _ => Err(ContainerError::NotFound(what.to_string())),
    }
}

/// The container of exactly that name (never an ID prefix): for names
/// that are being given, as `mount -o name=NAME`.
pub fn load_named(store: &Store, name: &str) -> Result<Container, ContainerError> {
    if !valid_name(name) {
        return Err(ContainerError::NotFound(name.to_string()));
    }
    let dir = containers_dir(store)?.join(name);
    let record = dir.join("container.json");
    let bytes = match fs::read(&record) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ContainerError::NotFound(name.to_string()));
        }
        Err(e) => return Err(io(&record)(e)),
    };
    let mut c: Container =
        serde_json::from_slice(&bytes).map_err(|e| io(&record)(std::io::Error::other(e)))?;
    if c.id.is_empty() {
        c.id = crate::oci::Digest::of(format!("{}\n{}", c.name, c.created).as_bytes()).hex();
    }
    c.dir = dir;
    Ok(c)
}

pub fn list(store: &Store) -> Result<Vec<Container>, ContainerError> {
    let dir = containers_dir(store)?;
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
        if let Some(name) = e.file_name().to_str()
            && let Ok(c) = load_named(store, name)
        {
            out.push(c);
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// Deletes a container's changes and record (it must not be mounted).
pub fn remove(store: &Store, c: &Container) -> Result<(), ContainerError> {
    // Rename first, so a crash mid-delete never leaves a half container listed.
    let trash = c.dir.with_file_name(format!(".removing-{}", c.name));
    fs::rename(&c.dir, &trash).map_err(io(&c.dir))?;
    fs::remove_dir_all(&trash).map_err(io(&trash))?;
    store.remove_hold(&c.hold_id())?;
    Ok(())
}

/// A kind of change `diff` lists, with Docker's letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    Added,
    Changed,
    Deleted,
}

impl ChangeKind {
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// The container's changes as `docker diff` lists them, sorted by path
/// (`/etc/motd`): what the upper directory holds, each path `Changed` if
/// the image has it and `Added` if not, each whiteout `Deleted`. A
/// directory holding a change is itself changed, as Docker and Podman list
/// it; a renamed directory lists its whole tree. Needs no mount; the
/// image's layer indexes answer whether it has a path, without reading
/// layer data.
pub fn diff(store: &Store, c: &Container) -> Result<Vec<(ChangeKind, Vec<u8>)>, ContainerError> {
    use crate::layer::SpanCache;
    use crate::union::upper::{OPAQUE, WHITEOUT_PREFIX, XATTR_REDIRECT};
    use crate::union::{ROOT_INO, Stack, UnionFs, UpperDir};
    use std::os::unix::ffi::OsStrExt;

    let layers = c.image_manifest(store)?.layer_digests();
    let lower = UnionFs::new(Stack::open(store, &layers, SpanCache::new(1 << 20))?, None);
    let upper = UpperDir::open_existing(&c.upper(), &c.work()).map_err(io(&c.upper()))?;
    let mut merged: Option<UnionFs> = None;
    let mut out = Vec::new();
    // (upper directory, its path in the container, its inode in the image
    // if it has it, whether it hides all the image has below it)
    let mut todo = vec![(c.upper(), Vec::new(), Some(ROOT_INO), false)];
    while let Some((dir, rel, lower_ino, hides_lower)) = todo.pop() {
        let entries = fs::read_dir(&dir)
            .map_err(io(&dir))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io(&dir))?;
        let names: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| e.file_name().as_bytes().to_vec())
            .collect();
        let child = |name: &[u8]| {
            let mut path = rel.clone();
            path.push(b'/');
            path.extend_from_slice(name);
            path
        };
        // An opaque directory, or one made anew where the image had one
        // (`.wh.NAME` beside `NAME`), hides all the image had in it: each
        // such name is deleted unless the directory holds it again.
        let hides_lower = hides_lower || names.iter().any(|n| n == OPAQUE);
        if let Some(ino) = lower_ino
            && hides_lower
        {
            let mut hidden = Vec::new();
            lower
                .readdir(ino, 0, 0, false, |d, _| {
                    if d.name != b"." && d.name != b".." {
                        hidden.push(d.name.to_vec());
                    }
                    true
                })
                .map_err(|e| io(&dir)(std::io::Error::other(e.to_string())))?;
            for name in hidden {
                if !names.contains(&name) {
                    out.push((ChangeKind::Deleted, child(&name)));
                }
            }
        }
        for (e, name) in entries.iter().zip(&names) {
            if name == OPAQUE {
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                // A name made anew is listed as itself, below.
                if !names.iter().any(|n| n == hidden) {
                    out.push((ChangeKind::Deleted, child(hidden)));
                }
                continue;
            }
            let mut whiteout = WHITEOUT_PREFIX.to_vec();
            whiteout.extend_from_slice(name);
            let made_anew = names.contains(&whiteout);
            let path = child(name);
            let below = lower_ino.and_then(|ino| lower.lookup(ino, name).ok().map(|a| a.ino));
            let is_dir = e.file_type().map_err(io(&dir))?.is_dir();
            let redirected = is_dir
                && upper
                    .get_xattr(&path[1..], XATTR_REDIRECT)
                    .map_err(io(&e.path()))?
                    .is_some();
            if redirected {
                // A renamed directory merges what the image has elsewhere:
                // its whole tree, as the container sees it, is listed.
                let merged = match &merged {
                    Some(m) => m,
                    None => merged.insert(UnionFs::new(
                        Stack::open(store, &layers, SpanCache::new(1 << 20))?,
                        Some(UpperDir::open_existing(&c.upper(), &c.work()).map_err(io(&dir))?),
                    )),
                };
                merged_tree(merged, &lower, &path, below, &mut out).map_err(|e| {
                    io(&dir)(std::io::Error::other(format!(
                        "{}: {e}",
                        String::from_utf8_lossy(&path)
                    )))
                })?;
            } else if is_dir {
                todo.push((e.path(), path.clone(), below, hides_lower || made_anew));
            }
            let kind = match below {
                Some(_) => ChangeKind::Changed,
                None => ChangeKind::Added,
            };
            out.push((kind, path));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// Lists everything below `path` as the container sees it (`merged`, with
/// its changes): each name `Changed` if the image has it at that path
/// (below `lower_ino`), `Added` if not.
fn merged_tree(
    merged: &crate::union::UnionFs,
    lower: &crate::union::UnionFs,
    path: &[u8],
    lower_ino: Option<u64>,
    out: &mut Vec<(ChangeKind, Vec<u8>)>,
) -> crate::union::Result<()> {
    let mut ino = crate::union::ROOT_INO;
    for name in path.split(|b| *b == b'/').filter(|n| !n.is_empty()) {
        ino = merged.lookup(ino, name)?.ino;
    }
    let mut todo = vec![(ino, path.to_vec(), lower_ino)];
    while let Some((ino, path, lower_ino)) = todo.pop() {
        let mut names = Vec::new();
        merged.readdir(ino, 0, 0, false, |d, _| {
            if d.name != b"." && d.name != b".." {
                names.push(d.name.to_vec());
            }
            true
        })?;
        for name in names {
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(&name);
            let attr = merged.lookup(ino, &name)?;
            let below = lower_ino.and_then(|l| lower.lookup(l, &name).ok().map(|a| a.ino));
            if attr.kind == crate::union::FileKind::Directory {
                todo.push((attr.ino, p.clone(), below));
            }
            let kind = match below {
                Some(_) => ChangeKind::Changed,
                None => ChangeKind::Added,
            };
            out.push((kind, p));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{layer_descriptor, new_config, write_image};
    use crate::layer::ingest;
    use crate::oci::Reference;
    use crate::testutil::{TarBuilder, temp_store};
    use crate::union::Form;

    fn image(store: &Store) -> Digest {
        let mut t = TarBuilder::new();
        t.dir("etc", 0o755)
            .file("etc/a", 0o644, b"a")
            .file("etc/gone", 0o644, b"g")
            .dir("old", 0o755)
            .file("old/f", 0o644, b"f")
            .dir("keep", 0o755)
            .file("keep/x", 0o644, b"x")
            .file("keep/y", 0o644, b"y");
        let info = ingest(store, &t.finish()[..], None).unwrap();
        let mut config = new_config();
        config.rootfs.diff_ids = vec![info.diff_id];
        let r = Reference::parse("img:1").unwrap();
        write_image(store, &config, &[layer_descriptor(&info)], Some(&r))
            .unwrap()
            .manifest
            .digest
    }

    #[test]
    fn a_container_is_found_by_name_id_or_unique_id_prefix() {
        let (_d, store) = temp_store();
        let m = image(&store);
        let a = create(&store, Some("a"), "img:1", m, None).unwrap();
        let b = create(&store, Some("b"), "img:1", m, None).unwrap();
        assert_eq!(a.id.len(), 64);
        assert_ne!(a.id, b.id);
        assert_eq!(load(&store, "a").unwrap().id, a.id);
        assert_eq!(load(&store, &a.id).unwrap().name, "a");
        assert_eq!(load(&store, a.short_id()).unwrap().name, "a");
        // A prefix both IDs share is ambiguous: give b an ID starting as a's.
        let record = b.dir().join("container.json");
        let mut json: serde_json::Value =
            serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
        let shared = format!("{}{}", &a.id[..4], "0".repeat(60));
        assert_ne!(shared, a.id);
        json["id"] = shared.clone().into();
        fs::write(&record, serde_json::to_vec(&json).unwrap()).unwrap();
        let e = load(&store, &a.id[..4]).unwrap_err();
        assert!(matches!(e, ContainerError::Ambiguous { .. }), "{e}");
        assert_eq!(load(&store, &shared).unwrap().name, "b");
        // "cx": not a hex prefix (a bare "c" is one, of a random ID).
        for missing in ["cx", "../a", "zz"] {
            assert!(
                matches!(load(&store, missing), Err(ContainerError::NotFound(_))),
                "{missing}"
            );
        }
    }

    #[test]
    fn diff_reads_changes_from_the_upper_dir_as_docker_lists_them() {
        let (_d, store) = temp_store();
        let m = image(&store);
        let c = create(&store, Some("c"), "img:1", m, None).unwrap();
        let up = c.upper();
        fs::create_dir_all(up.join("etc")).unwrap();
        fs::write(up.join("etc/a"), b"changed").unwrap();
        fs::write(up.join("etc/new"), b"n").unwrap();
        fs::write(up.join("etc/.wh.gone"), b"").unwrap();
        fs::write(up.join(".wh.old"), b"").unwrap();
        fs::create_dir_all(up.join("fresh/sub")).unwrap();
        // keep/ removed and made again: its x is gone, its y written anew.
        fs::create_dir_all(up.join("keep")).unwrap();
        fs::write(up.join("keep/.wh..wh..opq"), b"").unwrap();
        fs::write(up.join("keep/y"), b"y2").unwrap();
        fs::write(up.join("fresh/sub/f"), b"f").unwrap();
        let got: Vec<String> = diff(&store, &c)
            .unwrap()
            .into_iter()
            .map(|(k, p)| format!("{} {}", k.letter(), String::from_utf8_lossy(&p)))
            .collect();
        assert_eq!(
            got,
            [
                "C /etc",
                "C /etc/a",
                "D /etc/gone",
                "A /etc/new",
                "A /fresh",
                "A /fresh/sub",
                "A /fresh/sub/f",
                "C /keep",
                "D /keep/x",
                "C /keep/y",
                "D /old",
            ]
        );
    }

    #[test]
    fn a_record_from_before_forms_is_a_root_container() {
        let (_d, store) = temp_store();
        let dir = containers_dir(&store).unwrap().join("old");
        fs::create_dir_all(&dir).unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        fs::write(
            dir.join("container.json"),
            format!(
                r#"{{"name":"old","image":"x:1","manifest":"{digest}","created":"2026-01-01T00:00:00Z"}}"#
            ),
        )
        .unwrap();
        assert_eq!(load(&store, "old").unwrap().form, Form::Root);
    }

    #[test]
    fn a_new_container_records_the_form_of_its_maker() {
        let (_d, store) = temp_store();
        let digest: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
        let c = create(&store, Some("new"), "x:1", digest, None).unwrap();
        assert_eq!(c.form, Form::for_this_process());
        assert_eq!(load(&store, "new").unwrap().form, c.form);
        let upper = crate::union::UpperDir::open_existing(&c.upper(), &c.work()).unwrap();
        assert_eq!(upper.form(), c.form, "the upper dir knows its form too");
    }
}
