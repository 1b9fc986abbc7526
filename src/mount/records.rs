//! Mount records: one small JSON file per live mount under the store, so
//! `mounts`, `umount`, `rmi` and `gc` know what is mounted where and by
//! which daemon. A record whose daemon died is pruned when listed.

use super::MountError;
use crate::oci::Digest;
use crate::store::{Store, process_alive};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MountRecord {
    pub id: String,
    pub mountpoint: PathBuf,
    /// The image as the user named it.
    pub image: String,
    pub manifest: Digest,
    pub pid: u32,
    pub writable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub started: String,
    /// MiB of decoded spans in memory, and of decoded files on disk (0: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_cache_mib: Option<u64>,
}

impl MountRecord {
    pub fn hold_id(&self) -> String {
        format!("mount-{}", self.id)
    }
}

/// A stable id for a mountpoint path.
pub fn mount_id(mountpoint: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    Digest::of(mountpoint.as_os_str().as_bytes()).hex()[..16].to_string()
}

pub fn dir(store: &Store) -> Result<PathBuf, MountError> {
    Ok(store.own_dir_for("mounts")?)
}

pub fn write(store: &Store, r: &MountRecord) -> Result<(), MountError> {
    let path = dir(store)?.join(format!("{}.json", r.id));
    let bytes = serde_json::to_vec_pretty(r)
        .map_err(|e| MountError::io(&path, std::io::Error::other(e)))?;
    Ok(store.write_file(&path, &bytes)?)
}

pub fn remove(store: &Store, id: &str) {
    if let Ok(d) = dir(store) {
        let _ = fs::remove_file(d.join(format!("{id}.json")));
        let _ = fs::remove_file(d.join(format!("{id}.stats")));
    }
}

/// Every recorded mount, with whether its daemon still lives.
pub fn list(store: &Store) -> Result<Vec<(MountRecord, bool)>, MountError> {
    let d = dir(store)?;
    let mut out = Vec::new();
    for entry in fs::read_dir(&d).map_err(|e| MountError::io(&d, e))? {
        let entry = entry.map_err(|e| MountError::io(&d, e))?;
        if entry.path().extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(bytes) = fs::read(entry.path()) else {
            continue;
        };
        let Ok(r) = serde_json::from_slice::<MountRecord>(&bytes) else {
            continue;
        };
        let alive = process_alive(r.pid);
        if !alive && !is_mounted(&r.mountpoint) {
            let _ = fs::remove_file(entry.path());
            let _ = fs::remove_file(entry.path().with_extension("stats"));
            continue;
        }
        out.push((r, alive));
    }
    out.sort_by(|a, b| a.0.mountpoint.cmp(&b.0.mountpoint));
    Ok(out)
}

pub fn find(store: &Store, mountpoint: &Path) -> Result<Option<MountRecord>, MountError> {
    Ok(list(store)?
        .into_iter()
        .map(|(r, _)| r)
        .find(|r| r.mountpoint == mountpoint))
}

/// Where container `name` is mounted, and whether that mount's daemon
/// lives (a live mount is preferred to one whose daemon died).
pub fn find_container(
    store: &Store,
    name: &str,
) -> Result<Option<(MountRecord, bool)>, MountError> {
    let mut found = None;
    for (r, alive) in list(store)? {
        if r.container.as_deref() == Some(name) && (alive || found.is_none()) {
            found = Some((r, alive));
            if alive {
                break;
            }
        }
    }
    Ok(found)
}

/// Whether something is mounted at `path` (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    mount_fstype(path).is_some()
}

/// The filesystem type mounted at `path`, if any.
pub fn mount_fstype(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let info = fs::read("/proc/self/mountinfo").ok()?;
    let want = path.as_os_str().as_bytes();
    let mut found = None;
    for line in info.split(|&c| c == b'\n') {
        let fields: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
        if fields.len() < 10 || unescape(fields[4]) != want {
            continue;
        }
        // Fields after the "-" separator: fstype, source, options.
        if let Some(sep) = fields.iter().position(|f| *f == b"-") {
            found = fields
                .get(sep + 1)
                .map(|t| String::from_utf8_lossy(t).into_owned());
        }
    }
    found
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// The container `target` names: a writable mount's mountpoint (anything
/// with a `/`, or an existing directory), else a container's name.
pub fn container_named(store: &Store, target: &str) -> Result<String, MountError> {
    let path = Path::new(target);
    // A bare name is a container's unless it is a directory we mounted:
    // `commit web` works in a directory that happens to hold `web/`.
    let bare = !target.contains('/');
    if bare && !path.is_dir() {
        return Ok(target.to_string());
    }
    let canon = match path.canonicalize() {
        Ok(c) => c,
        Err(_) if bare => return Ok(target.to_string()),
        Err(_) => return Err(MountError::NotAContainer(target.to_string())),
    };
    match find(store, &canon)? {
        Some(r) => r.container.ok_or(MountError::ReadOnlyMount(canon)),
        None if bare => Ok(target.to_string()),
        None => Err(MountError::NotAMount(canon)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::temp_store;

    #[test]
    fn a_target_is_a_container_name_or_a_recorded_mountpoint() {
        let (dir, store) = temp_store();
        assert_eq!(container_named(&store, "web").unwrap(), "web");
        let rw = dir.path().join("rw");
        let ro = dir.path().join("ro");
        for (at, container) in [(&rw, Some("c1")), (&ro, None)] {
            fs::create_dir(at).unwrap();
            let at = at.canonicalize().unwrap();
            let r = MountRecord {
                id: mount_id(&at),
                mountpoint: at,
                image: "i:1".into(),
                manifest: Digest::of(b"m"),
                pid: std::process::id(),
                writable: container.is_some(),
                container: container.map(String::from),
                started: String::new(),
                cache_mib: None,
                file_cache_mib: None,
            };
            write(&store, &r).unwrap();
        }
        let name = |p: &Path| container_named(&store, p.to_str().unwrap());
        assert_eq!(name(&rw).unwrap(), "c1");
        assert!(matches!(name(&ro), Err(MountError::ReadOnlyMount(_))));
        assert!(matches!(name(dir.path()), Err(MountError::NotAMount(_))));
        assert!(matches!(
            container_named(&store, "no/such/dir"),
            Err(MountError::NotAContainer(_))
        ));
    }
}
