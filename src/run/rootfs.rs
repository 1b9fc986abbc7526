//! The mountpoints a container's root filesystem needs (/proc, /dev, /sys,
//! /etc/hosts, /etc/resolv.conf, /etc/hostname, volumes) where the image
//! lacks them.
//!
//! Those mountpoints are created through the container's mount before the
//! command starts, so they land in its upper directory; they are only
//! there because of the run, so once the mount is gone they are removed
//! from the upper directory again — with any directory that was copied up
//! or created for them and stayed empty — and a commit never sees them.

use super::inroot::{HostTree, Node, resolve};
use super::{RunError, io};
use crate::union::UpperDir;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Something the run created in the container (through its mount).
#[derive(Clone, Debug)]
pub struct Created {
    pub rel: Vec<u8>,
    pub dir: bool,
    /// For a directory of the image copied up because something was created
    /// inside it: its (mode, uid, gid) before, to tell it was not changed since.
    pub copied_up: Option<(u32, u32, u32)>,
}

/// Makes sure `path` exists in the mounted root `root` (a directory when
/// `dir`), creating what is missing; records what it created, in order, and
/// returns the canonical path.
pub fn ensure(
    root: &Path,
    upper: &UpperDir,
    path: &str,
    dir: bool,
    created: &mut Vec<Created>,
) -> Result<Vec<u8>, RunError> {
    let mut tree = HostTree::new(root);
    let r = resolve(&mut tree, path.as_bytes(), true).map_err(|e| RunError::Path {
        path: path.to_string(),
        why: e.to_string(),
    })?;
    let wrong = |why: &str| RunError::Path {
        path: path.to_string(),
        why: why.to_string(),
    };
    match (&r.node, dir) {
        (Some(Node::Dir), true) => return Ok(r.path),
        (Some(Node::Dir), false) => return Err(wrong("is a directory in the image")),
        (Some(_), true) => return Err(wrong("is not a directory in the image")),
        (Some(_), false) => return Ok(r.path),
        (None, _) => {}
    }
    let comps = r.components();
    // The image's directories above the first missing one are copied up
    // when something is created inside; remember which were not yet.
    for n in 1..=r.existing {
        let rel = comps[..n].join(&b'/');
        if upper
            .lstat(&rel)
            .map_err(|e| io(&tree.host_path(&rel), e))?
            .is_none()
        {
            let md = std::fs::symlink_metadata(tree.host_path(&rel))
                .map_err(|e| io(&tree.host_path(&rel), e))?;
            created.push(Created {
                rel,
                dir: true,
                copied_up: Some((md.mode() & 0o7777, md.uid(), md.gid())),
            });
        }
    }
    let missing = r.missing();
    for (i, rel) in missing.iter().enumerate() {
        let host = tree.host_path(rel);
        let last = i + 1 == missing.len();
        if last && !dir {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&host)
                .map_err(|e| io(&tree.host_path(rel), e))?;
        } else {
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&host)
                .map_err(|e| io(&tree.host_path(rel), e))?;
        }
        created.push(Created {
            rel: rel.clone(),
            dir: !last || dir,
            copied_up: None,
        });
    }
    Ok(r.path)
}

/// Removes from the upper directory (the mount is gone) what `ensure`
/// created, newest first: files still empty, directories still empty, and
/// copied-up directories that stayed empty and unchanged.
pub fn remove_created(upper: &UpperDir, created: &[Created]) -> Result<(), RunError> {
    let io = |rel: &[u8], e| io(&upper.root().join(std::ffi::OsStr::from_bytes(rel)), e);
    for c in created.iter().rev() {
        let Some(st) = upper.lstat(&c.rel).map_err(|e| io(&c.rel, e))? else {
            continue;
        };
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if c.dir {
            if !is_dir
                || !upper
                    .read_dir(&c.rel)
                    .map_err(|e| io(&c.rel, e))?
                    .is_empty()
            {
                continue;
            }
            if let Some(before) = c.copied_up
                && before != (st.st_mode & 0o7777, st.st_uid, st.st_gid)
            {
                continue;
            }
            upper.rmdir(&c.rel).map_err(|e| io(&c.rel, e))?;
        } else if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size == 0 {
            upper.unlink(&c.rel).map_err(|e| io(&c.rel, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_mountpoints_are_removed_again() {
        let dir = tempfile::tempdir().unwrap();
        // The root stands for the mount; with no lower layers, its upper dir
        // is the same directory.
        let root = dir.path().join("upper");
        let work = dir.path().join("work");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("../run/resolv.conf", root.join("etc/resolv.conf")).unwrap();
        let upper = UpperDir::open_existing(&root, &{
            std::fs::create_dir_all(&work).unwrap();
            work
        })
        .unwrap();
        let mut created = Vec::new();
        let p = ensure(&root, &upper, "/etc/resolv.conf", false, &mut created).unwrap();
        assert_eq!(p, b"run/resolv.conf");
        assert!(root.join("run/resolv.conf").is_file());
        let p = ensure(&root, &upper, "/proc", true, &mut created).unwrap();
        assert_eq!(p, b"proc");
        assert_eq!(
            ensure(&root, &upper, "/etc/passwd", false, &mut created).unwrap(),
            b"etc/passwd"
        );
        assert!(ensure(&root, &upper, "/etc/passwd", true, &mut created).is_err());
        // Something the command made beside a created mountpoint stays.
        std::fs::create_dir_all(root.join("data/sub")).unwrap();
        ensure(&root, &upper, "/data/sub/mnt", true, &mut created).unwrap();
        remove_created(&upper, &created).unwrap();
        assert!(!root.join("run").exists());
        assert!(!root.join("proc").exists());
        assert!(root.join("etc/passwd").is_file());
        assert!(root.join("data/sub").is_dir());
        assert!(!root.join("data/sub/mnt").exists());
    }
}
