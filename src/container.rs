//! Containers: an image plus a writable upper directory, kept under the
//! store until removed, whether mounted or not.
//!
//! ```text
//! ROOT/layerfs/containers/<name>/
//!   container.json   name, image, manifest digest, created, form
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

pub fn load(store: &Store, name: &str) -> Result<Container, ContainerError> {
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
    c.dir = dir;
    Ok(c)
}

pub fn list(store: &Store) -> Result<Vec<Container>, ContainerError> {
    let dir = containers_dir(store)?;
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
        if let Some(name) = e.file_name().to_str()
            && let Ok(c) = load(store, name)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::temp_store;
    use crate::union::Form;

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
