//! Paths resolved inside a root as if it were `/`: symlinks are followed
//! (absolute ones from the root, relative ones from their directory) and
//! `..` never climbs above the root, so whatever an image's symlinks say,
//! the answer is a canonical path made only of real directories of that
//! root. `run` resolves its mount targets and the image's /etc/passwd this
//! way; `build` resolves COPY destinations through an image's tree.
//!
//! The walk asks a [`Tree`] about one canonical path at a time, so the same
//! rules serve a directory on the host and an image's union view.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

/// How many symlinks one resolution may follow (the kernel's limit).
pub const MAX_LINKS: usize = 40;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir,
    Symlink(Vec<u8>),
    /// A file, device, fifo or socket.
    Other,
}

/// A tree to resolve paths in. `path` is canonical (no `.`, `..` or symlink
/// among its parents), relative to the root, `b""` for the root itself.
pub trait Tree {
    fn node(&mut self, path: &[u8]) -> io::Result<Option<Node>>;
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}: too many levels of symbolic links")]
    Loop(String),
    #[error("{0}: a component of the path is not a directory")]
    NotDir(String),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The canonical path, relative to the root (`b""` for the root).
    pub path: Vec<u8>,
    /// What is there, if it exists (a symlink only when not followed).
    pub node: Option<Node>,
    /// How many leading components of `path` exist; the rest are missing.
    pub existing: usize,
}

impl Resolved {
    pub fn components(&self) -> Vec<&[u8]> {
        components(&self.path)
    }

    /// The canonical paths of the components that do not exist yet, outermost first.
    pub fn missing(&self) -> Vec<Vec<u8>> {
        let comps = self.components();
        (self.existing..comps.len())
            .map(|n| comps[..=n].join(&b'/'))
            .collect()
    }
}

pub fn components(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&c| c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}

/// A canonical path (relative to the root) as messages show it.
pub(crate) fn lossy(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(p))
}

/// Resolves `path` (absolute or not, always taken from the root) in `tree`.
/// A symlink as the last component is followed only when `follow_last`.
pub fn resolve(
    tree: &mut impl Tree,
    path: &[u8],
    follow_last: bool,
) -> Result<Resolved, ResolveError> {
    let mut todo: VecDeque<Vec<u8>> = components(path).into_iter().map(<[u8]>::to_vec).collect();
    let mut cur: Vec<Vec<u8>> = Vec::new();
    // Leading components of `cur` known to exist, and the node of the last one.
    let mut existing = 0usize;
    let mut last = Some(Node::Dir);
    let mut links = 0usize;
    while let Some(c) = todo.pop_front() {
        if c == b".." {
            cur.pop();
            existing = existing.min(cur.len());
            // Every parent on the way down was a directory.
            last = (existing == cur.len()).then_some(Node::Dir);
            continue;
        }
        cur.push(c);
        let here = cur.join(&b'/');
        if existing + 1 != cur.len() {
            // Below something missing: nothing to ask.
            last = None;
            continue;
        }
        let node = tree.node(&here).map_err(|source| ResolveError::Io {
            path: lossy(&here),
            source,
        })?;
        match node {
            None => last = None,
            Some(Node::Symlink(target)) if follow_last || !todo.is_empty() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(ResolveError::Loop(lossy(&here)));
                }
                cur.pop();
                if target.first() == Some(&b'/') {
                    cur.clear();
                    existing = 0;
                }
                for c in components(&target).into_iter().rev() {
                    todo.push_front(c.to_vec());
                }
                last = Some(Node::Dir);
            }
            Some(Node::Dir) => {
                existing += 1;
                last = Some(Node::Dir);
            }
            Some(other) => {
                if !todo.is_empty() {
                    return Err(ResolveError::NotDir(lossy(&here)));
                }
                existing += 1;
                last = Some(other);
            }
        }
    }
    let path = cur.join(&b'/');
    let node = if existing == cur.len() { last } else { None };
    Ok(Resolved {
        path,
        node,
        existing,
    })
}

/// A directory of the host seen as a root. Only canonical paths are asked,
/// so the host's own resolution of them never meets a symlink.
pub struct HostTree {
    pub root: PathBuf,
}

impl HostTree {
    pub fn new(root: &Path) -> HostTree {
        HostTree {
            root: root.to_path_buf(),
        }
    }

    /// The host path of a canonical path of this tree.
    pub fn host_path(&self, rel: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        if rel.is_empty() {
            return self.root.clone();
        }
        self.root.join(std::ffi::OsStr::from_bytes(rel))
    }
}

impl Tree for HostTree {
    fn node(&mut self, path: &[u8]) -> io::Result<Option<Node>> {
        use std::os::unix::ffi::OsStrExt;
        let p = self.host_path(path);
        let md = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(if md.is_dir() {
            Node::Dir
        } else if md.file_type().is_symlink() {
            Node::Symlink(std::fs::read_link(&p)?.as_os_str().as_bytes().to_vec())
        } else {
            Node::Other
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A tree given as `path -> node`; parents are implied directories.
    struct Fake(HashMap<Vec<u8>, Node>, usize);

    impl Fake {
        fn new(entries: &[(&str, Node)]) -> Fake {
            let mut m = HashMap::new();
            for (p, n) in entries {
                let comps: Vec<&str> = p.split('/').collect();
                for i in 1..comps.len() {
                    m.entry(comps[..i].join("/").into_bytes())
                        .or_insert(Node::Dir);
                }
                m.insert(p.as_bytes().to_vec(), n.clone());
            }
            Fake(m, 0)
        }
    }

    impl Tree for Fake {
        fn node(&mut self, path: &[u8]) -> io::Result<Option<Node>> {
            self.1 += 1;
            Ok(self.0.get(path).cloned())
        }
    }

    fn link(t: &str) -> Node {
        Node::Symlink(t.as_bytes().to_vec())
    }

    fn image() -> Fake {
        Fake::new(&[
            ("etc/passwd", Node::Other),
            ("etc/resolv.conf", link("../run/resolvconf/resolv.conf")),
            ("run/resolvconf", Node::Dir),
            ("escape", link("/")),
            ("up", link("../../../..")),
            ("abs", link("/etc/passwd")),
            ("loop", link("loop")),
            ("usr/bin/sh", Node::Other),
            ("bin", link("usr/bin")),
            ("dangling", link("/nowhere/deep")),
        ])
    }

    fn ok(path: &str, follow: bool) -> (String, Option<Node>, usize) {
        let r = resolve(&mut image(), path.as_bytes(), follow).unwrap();
        (String::from_utf8(r.path).unwrap(), r.node, r.existing)
    }

    #[test]
    fn resolves_like_a_chroot() {
        let table: &[(&str, bool, &str, Option<Node>, usize)] = &[
            ("/", true, "", Some(Node::Dir), 0),
            ("/etc/passwd", true, "etc/passwd", Some(Node::Other), 2),
            ("etc//./passwd", true, "etc/passwd", Some(Node::Other), 2),
            (
                "/etc/../etc/passwd",
                true,
                "etc/passwd",
                Some(Node::Other),
                2,
            ),
            // A symlink to / is the root, never the host's.
            (
                "/escape/etc/passwd",
                true,
                "etc/passwd",
                Some(Node::Other),
                2,
            ),
            ("/escape/../../etc", true, "etc", Some(Node::Dir), 1),
            ("/up/etc/passwd", true, "etc/passwd", Some(Node::Other), 2),
            (
                "/../../../etc/passwd",
                true,
                "etc/passwd",
                Some(Node::Other),
                2,
            ),
            ("/bin/sh", true, "usr/bin/sh", Some(Node::Other), 3),
            ("/abs", true, "etc/passwd", Some(Node::Other), 2),
            ("/abs", false, "abs", Some(link("/etc/passwd")), 1),
            // A missing target: its canonical path, and how much exists.
            (
                "/etc/resolv.conf",
                true,
                "run/resolvconf/resolv.conf",
                None,
                2,
            ),
            ("/dangling", true, "nowhere/deep", None, 0),
            ("/new/dir/file", true, "new/dir/file", None, 0),
            (
                "/new/../etc/passwd",
                true,
                "etc/passwd",
                Some(Node::Other),
                2,
            ),
        ];
        for (path, follow, want, node, existing) in table {
            assert_eq!(
                ok(path, *follow),
                (want.to_string(), node.clone(), *existing),
                "{path}"
            );
        }
    }

    #[test]
    fn reports_loops_and_files_used_as_dirs() {
        assert!(matches!(
            resolve(&mut image(), b"/loop/x", true),
            Err(ResolveError::Loop(_))
        ));
        assert!(matches!(
            resolve(&mut image(), b"/etc/passwd/x", true),
            Err(ResolveError::NotDir(_))
        ));
        assert!(matches!(
            resolve(&mut image(), b"/etc/passwd/..", true),
            Err(ResolveError::NotDir(_))
        ));
    }

    #[test]
    fn missing_lists_what_to_create() {
        let r = resolve(&mut image(), b"/etc/new/deeper/file", true).unwrap();
        assert_eq!(
            r.missing(),
            vec![
                b"etc/new".to_vec(),
                b"etc/new/deeper".to_vec(),
                b"etc/new/deeper/file".to_vec()
            ]
        );
    }

    #[test]
    fn resolves_in_a_host_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hosts"), b"x").unwrap();
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../../../tmp", root.join("etc/tmp")).unwrap();
        let mut t = HostTree::new(root);
        let r = resolve(&mut t, b"/escape/etc/hosts", true).unwrap();
        assert_eq!(r.path, b"etc/hosts");
        assert_eq!(r.node, Some(Node::Other));
        let r = resolve(&mut t, b"/etc/tmp/x", true).unwrap();
        assert_eq!((r.path.as_slice(), r.node), (&b"tmp/x"[..], None));
    }
}
