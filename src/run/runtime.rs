//! The OCI runtime that runs containers (runc or crun), found on PATH or
//! named with `--runtime`, and its commands: create, start, exec, kill,
//! delete. Its state lives under the store (`ROOT/layerfs/runtime/`), apart
//! from the system's. crun 1.8 refuses hosts whose cgroups are v1 or hybrid
//! (v1 controllers with a v2 "unified" hierarchy beside them); runc runs
//! there, so there runc is the choice, and crun only where cgroups are v2.

use super::RunError;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Clone, Debug)]
pub struct Runtime {
    pub path: PathBuf,
    /// Where it keeps the state of our containers.
    pub root: PathBuf,
    /// A process in the user namespace the runtime must run in (that of a
    /// rootless container's monitor), when it is not ours.
    pub userns_of: Option<u32>,
}

pub(super) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// cgroup v2 alone (no v1 controllers) is mounted on /sys/fs/cgroup.
pub fn cgroup_v2_only() -> bool {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The runtime to use: `choice` (a name on PATH or a path), else the one
/// that works on this host.
pub fn find(choice: Option<&str>, root: PathBuf) -> Result<Runtime, RunError> {
    let path = match choice {
        Some(c) if c.contains('/') => {
            let p = PathBuf::from(c);
            if !p.is_file() {
                return Err(RunError::Runtime(format!("--runtime {c}: no such file")));
            }
            p
        }
        Some(c) => on_path(c)
            .ok_or_else(|| RunError::Runtime(format!("--runtime {c}: not found on PATH")))?,
        None => {
            let order: &[&str] = if cgroup_v2_only() {
                &["crun", "runc"]
            } else {
                &["runc"]
            };
            order.iter().find_map(|n| on_path(n)).ok_or_else(|| {
                RunError::Runtime(if cgroup_v2_only() {
                    "no OCI runtime found: install runc or crun (Debian: apt-get install runc)"
                        .into()
                } else {
                    "no OCI runtime found: install runc (Debian: apt-get install runc; \
                     crun 1.8 does not run on this host's v1/hybrid cgroups)"
                        .into()
                })
            })?
        }
    };
    Ok(Runtime {
        path,
        root,
        userns_of: None,
    })
}

impl Runtime {
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// `runc --version`'s first line.
    pub fn version(&self) -> String {
        Command::new(&self.path)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_string)
            })
            .unwrap_or_default()
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.path);
        c.arg("--root").arg(&self.root);
        let userns = self.userns_of.map(super::rootless::other_userns);
        if let Some(Ok(Some(ns))) = userns {
            super::rootless::enter_on_exec(&mut c, ns);
        }
        c
    }

    fn failed(&self, what: &str, id: &str, out: &std::process::Output) -> RunError {
        let text = String::from_utf8_lossy(&out.stderr);
        let why = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("it failed")
            .trim()
            .to_string();
        RunError::Runtime(format!("{} {what} {id}: {why}", self.name()))
    }

    /// Runs `runtime ARGS` (which name container `id`), its output kept for the error.
    fn quiet(&self, args: &[&str], id: &str) -> Result<(), RunError> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| super::io(&self.path, e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(self.failed(args[0], id, &out))
        }
    }

    /// Creates container `id` from `bundle`: the container's init waits for
    /// `start`; it gets the given stdio (or, with `console`, a terminal
    /// whose master end the runtime sends over that socket).
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console: Option<&Path>,
        stdio: [Stdio; 3],
    ) -> Result<(), RunError> {
        let [i, o, e] = stdio;
        let mut c = self.command();
        c.arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file);
        if let Some(sock) = console {
            c.arg("--console-socket").arg(sock);
        }
        let status = c
            .arg(id)
            .stdin(i)
            .stdout(o)
            .stderr(e)
            .status()
            .map_err(|e| super::io(&self.path, e))?;
        if status.success() {
            Ok(())
        } else {
            Err(RunError::Runtime(format!(
                "{} create {id} failed ({status})",
                self.name()
            )))
        }
    }

    pub fn start(&self, id: &str) -> Result<(), RunError> {
        self.quiet(&["start", id], id)
    }

    pub fn kill(&self, id: &str, signal: &str) -> Result<(), RunError> {
        self.quiet(&["kill", id, signal], id)
    }

    /// Removes the container's state (and kills what is left of it).
    pub fn delete(&self, id: &str) -> Result<(), RunError> {
        self.quiet(&["delete", "--force", id], id)
    }
}
