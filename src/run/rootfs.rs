//! A mounted image made into a root filesystem: which mounts go where, as a
//! list of steps the container's first process carries out (a fresh /proc
//! with its dangerous files read-only or masked, a small /dev of bound host
//! nodes, read-only /sys, the host's resolv.conf and hosts, `-v` volumes),
//! and the mountpoints the image lacked.
//!
//! Those mountpoints are created through the container's mount before the
//! command starts, so they land in its upper directory; they are only
//! there because of the run, so once the mount is gone they are removed
//! from the upper directory again — with any directory that was copied up
//! or created for them and stayed empty — and a commit never sees them.

use super::inroot::{HostTree, Node, resolve};
use super::{RunError, io};
use crate::union::UpperDir;
use nix::mount::MsFlags;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// One step of preparing the root, carried out in the container's mount
/// namespace before it pivots into the root. Paths are absolute host paths.
#[derive(Clone, Debug)]
pub enum Op {
    Mount {
        src: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: MsFlags,
        data: Option<CString>,
        /// Skipped when the target does not exist (files some kernels lack).
        optional: bool,
    },
    Remount {
        target: CString,
        flags: MsFlags,
        optional: bool,
    },
    Mkdir {
        path: CString,
        mode: u32,
    },
    Touch {
        path: CString,
        mode: u32,
    },
    Symlink {
        target: CString,
        path: CString,
    },
}

impl Op {
    /// What the step does, for an error message.
    pub fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Op::Mount {
                src,
                target,
                fstype,
                ..
            } => match fstype {
                Some(t) => format!("mounting {} on {}", s(t), s(target)),
                None => format!(
                    "binding {} on {}",
                    src.as_ref().map(s).unwrap_or_default(),
                    s(target)
                ),
            },
            Op::Remount { target, .. } => format!("making {} read-only", s(target)),
            Op::Mkdir { path, .. } => format!("creating directory {}", s(path)),
            Op::Touch { path, .. } => format!("creating {}", s(path)),
            Op::Symlink { path, .. } => format!("creating symlink {}", s(path)),
        }
    }
}

fn cstr(p: &Path) -> Result<CString, RunError> {
    super::cstring(&p.display().to_string(), p.as_os_str().as_bytes())
}

fn lit(s: &str) -> CString {
    // Our literals hold no NUL.
    CString::new(s).unwrap_or_default()
}

/// Where the root's mounts go: canonical paths inside the root.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    pub proc: Vec<u8>,
    pub dev: Vec<u8>,
    pub sys: Vec<u8>,
    /// (target, host file to bind there)
    pub files: Vec<(Vec<u8>, PathBuf)>,
    /// (target, host path, read-only)
    pub volumes: Vec<(Vec<u8>, PathBuf, bool)>,
}

/// Host device nodes bound into the container's /dev (Docker's set).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The steps that make `root` (the mounted image) a root filesystem.
pub fn plan(root: &Path, t: &Targets) -> Result<Vec<Op>, RunError> {
    let tree = HostTree::new(root);
    let at = |rel: &[u8]| tree.host_path(rel);
    let mut ops = Vec::new();
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mount =
        |src: Option<&str>, target: &Path, fstype: Option<&str>, flags, data: Option<&str>| {
            Ok::<Op, RunError>(Op::Mount {
                src: src.map(lit),
                target: cstr(target)?,
                fstype: fstype.map(lit),
                flags,
                data: data.map(lit),
                optional: false,
            })
        };

    // /proc of the container's PID namespace, with Docker's read-only and masked paths.
    let proc = at(&t.proc);
    ops.push(mount(
        Some("proc"),
        &proc,
        Some("proc"),
        nosuid_nodev_noexec,
        None,
    )?);
    for ro in ["sys", "sysrq-trigger", "irq", "bus", "fs"] {
        let p = cstr(&proc.join(ro))?;
        ops.push(Op::Mount {
            src: Some(p.clone()),
            target: p.clone(),
            fstype: None,
            flags: MsFlags::MS_BIND | MsFlags::MS_REC,
            data: None,
            optional: true,
        });
        ops.push(Op::Remount {
            target: p,
            flags: MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | nosuid_nodev_noexec,
            optional: true,
        });
    }
    for masked in ["kcore", "keys", "timer_list", "sched_debug"] {
        ops.push(Op::Mount {
            src: Some(lit("/dev/null")),
            target: cstr(&proc.join(masked))?,
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
            optional: true,
        });
    }
    for masked in ["acpi", "scsi"] {
        ops.push(Op::Mount {
            src: Some(lit("tmpfs")),
            target: cstr(&proc.join(masked))?,
            fstype: Some(lit("tmpfs")),
            flags: MsFlags::MS_RDONLY | nosuid_nodev_noexec,
            data: None,
            optional: true,
        });
    }

    // /dev: a tmpfs where nothing made inside is a device; the host's nodes
    // are bound in (a bind keeps its own mount's flags).
    let dev = at(&t.dev);
    ops.push(mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?);
    for d in DEVICES {
        let target = dev.join(d);
        ops.push(Op::Touch {
            path: cstr(&target)?,
            mode: 0o666,
        });
        ops.push(mount(
            Some(&format!("/dev/{d}")),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        )?);
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        ops.push(Op::Symlink {
            target: lit(target),
            path: cstr(&dev.join(name))?,
        });
    }
    for (name, mode, fstype, flags, data) in [
        (
            "pts",
            0o755,
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ),
        (
            "shm",
            0o1777,
            "tmpfs",
            nosuid_nodev_noexec,
            "mode=1777,size=65536k",
        ),
        ("mqueue", 0o755, "mqueue", nosuid_nodev_noexec, ""),
    ] {
        let p = dev.join(name);
        ops.push(Op::Mkdir {
            path: cstr(&p)?,
            mode,
        });
        ops.push(mount(
            Some(fstype),
            &p,
            Some(fstype),
            flags,
            (!data.is_empty()).then_some(data),
        )?);
    }

    ops.push(mount(
        Some("sysfs"),
        &at(&t.sys),
        Some("sysfs"),
        MsFlags::MS_RDONLY | nosuid_nodev_noexec,
        None,
    )?);

    for (rel, host) in &t.files {
        ops.push(Op::Mount {
            src: Some(cstr(host)?),
            target: cstr(&at(rel))?,
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
            optional: false,
        });
    }
    for (rel, host, ro) in &t.volumes {
        let target = cstr(&at(rel))?;
        ops.push(Op::Mount {
            src: Some(cstr(host)?),
            target: target.clone(),
            fstype: None,
            flags: MsFlags::MS_BIND | MsFlags::MS_REC,
            data: None,
            optional: false,
        });
        if *ro {
            ops.push(Op::Remount {
                target,
                flags: MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                optional: false,
            });
        }
    }
    Ok(ops)
}

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
    fn plan_mounts_proc_first_and_volumes_last() {
        let t = Targets {
            proc: b"proc".to_vec(),
            dev: b"dev".to_vec(),
            sys: b"sys".to_vec(),
            files: vec![(b"etc/hosts".to_vec(), "/run/x/hosts".into())],
            volumes: vec![(b"data".to_vec(), "/srv".into(), true)],
        };
        let ops = plan(Path::new("/r"), &t).unwrap();
        let text: Vec<String> = ops.iter().map(Op::describe).collect();
        assert_eq!(text[0], "mounting proc on /r/proc");
        assert!(text.contains(&"making /r/proc/sys read-only".to_string()));
        assert!(text.contains(&"binding /dev/null on /r/dev/null".to_string()));
        assert!(text.contains(&"mounting devpts on /r/dev/pts".to_string()));
        assert!(text.contains(&"mounting sysfs on /r/sys".to_string()));
        assert!(text.contains(&"binding /run/x/hosts on /r/etc/hosts".to_string()));
        assert_eq!(text[text.len() - 2], "binding /srv on /r/data");
        assert_eq!(text[text.len() - 1], "making /r/data read-only");
        // The /dev tmpfs gives no device of its own; only bound nodes work.
        let dev_flags = ops.iter().find_map(|o| match o {
            Op::Mount { target, flags, .. } if target.as_bytes() == b"/r/dev" => Some(*flags),
            _ => None,
        });
        assert!(dev_flags.unwrap().contains(MsFlags::MS_NODEV));
    }

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
