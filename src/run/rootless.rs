//! What differs when an ordinary user runs a container, as rootless Podman
//! runs them: `run` and `build` act as root of a user namespace that maps
//! the user to 0 and their subordinate ids above it, and the mount, the
//! runtime and slirp4netns all run there. runc, as root of a user
//! namespace, binds the host's device nodes instead of making them (mknod
//! needs the host's root). The rest is here:
//! - no cgroup of its own: runc ignores a cgroup it cannot make only when
//!   the spec names none, so the spec names none, and `--memory`, `--cpus`
//!   and `--pids-limit` (which need one) are refused in one line;
//! - the host's network namespace belongs to the host's root, so with
//!   `--network host` sysfs cannot be mounted: the host's /sys is bound
//!   read-only instead, as Podman does;
//! - devpts gets `gid=5` (tty) only where gid 5 is mapped;
//! - the container's user and group must be mapped ids; supplementary
//!   groups that are not are left out.

use super::{Network, RunError, RunSpec};
use serde_json::{Value, json};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// One `/proc/PID/uid_map` (or gid_map): ranges of (inside, outside, count).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMap(pub Vec<(u32, u32, u32)>);

impl IdMap {
    pub fn parse(text: &str) -> IdMap {
        IdMap(
            text.lines()
                .filter_map(|l| {
                    let mut f = l.split_whitespace().map(|n| n.parse::<u32>().ok());
                    Some((f.next()??, f.next()??, f.next()??))
                })
                .collect(),
        )
    }

    /// Whether id `id` of the namespace maps to an id outside it.
    pub fn contains(&self, id: u32) -> bool {
        self.0
            .iter()
            .any(|&(inside, _, n)| id >= inside && u64::from(id) < u64::from(inside) + u64::from(n))
    }
}

/// The user namespace we run in, when it is not the host's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub uids: IdMap,
    pub gids: IdMap,
}

/// The namespace of this process, or None in the host's.
pub fn current() -> Option<Namespace> {
    if !crate::userns::in_user_namespace() {
        return None;
    }
    let map = |p: &str| IdMap::parse(&std::fs::read_to_string(p).unwrap_or_default());
    Some(Namespace {
        uids: map("/proc/self/uid_map"),
        gids: map("/proc/self/gid_map"),
    })
}

/// Refuses what needs the host's root.
pub fn check(spec: &RunSpec) -> Result<(), RunError> {
    let limits: Vec<&str> = [
        (spec.memory.is_some(), "--memory"),
        (spec.cpus.is_some(), "--cpus"),
        (spec.pids_limit.is_some(), "--pids-limit"),
    ]
    .into_iter()
    .filter_map(|(given, flag)| given.then_some(flag))
    .collect();
    if !limits.is_empty() {
        return Err(RunError::NeedsRoot {
            what: limits.join(", "),
            why: "an ordinary user's container has no cgroup of its own to limit",
        });
    }
    Ok(())
}

/// The container's ids, checked against the namespace: its user and group
/// must be mapped; returns the supplementary groups that are.
pub fn mapped_ids(
    ns: &Namespace,
    uid: u32,
    gid: u32,
    groups: &[u32],
) -> Result<Vec<u32>, RunError> {
    let unmapped = |what: &str, id: u32| {
        RunError::User(format!(
            "{what} {id} of the container is not mapped in this user namespace: give the \
             user subordinate ids (usermod --add-subuids 100000-165535 --add-subgids \
             100000-165535 USER)"
        ))
    };
    if !ns.uids.contains(uid) {
        return Err(unmapped("uid", uid));
    }
    if !ns.gids.contains(gid) {
        return Err(unmapped("gid", gid));
    }
    Ok(groups
        .iter()
        .copied()
        .filter(|g| ns.gids.contains(*g))
        .collect())
}

/// Turns a root's `config.json` into one runc can run as root of `ns`.
pub fn adjust(config: &mut Value, ns: &Namespace, network: Network) {
    if let Some(linux) = config["linux"].as_object_mut() {
        linux.remove("cgroupsPath");
        if let Some(r) = linux.get_mut("resources").and_then(Value::as_object_mut) {
            r.retain(|k, _| k == "devices");
        }
    }
    let Some(mounts) = config["mounts"].as_array_mut() else {
        return;
    };
    for m in mounts.iter_mut() {
        match m["type"].as_str() {
            Some("sysfs") if network == Network::Host => {
                let ro = m["options"]
                    .as_array()
                    .is_none_or(|o| !o.contains(&json!("rw")));
                let mut options = vec!["rbind", "rslave", "nosuid", "noexec", "nodev"];
                options.push(if ro { "ro" } else { "rw" });
                *m = json!({"destination": m["destination"], "type": "bind",
                            "source": "/sys", "options": options});
            }
            Some("devpts") if !ns.gids.contains(5) => {
                if let Some(o) = m["options"].as_array_mut() {
                    o.retain(|x| x != "gid=5");
                }
            }
            _ => {}
        }
    }
}

/// The user namespace of process `pid`, opened, when it is not ours (None
/// also when the process is gone): a detached rootless container's runtime
/// commands must run in the namespace its monitor made, which owns the
/// container's.
pub fn other_userns(pid: u32) -> std::io::Result<Option<OwnedFd>> {
    let theirs = match std::fs::File::open(format!("/proc/{pid}/ns/user")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        r => r?,
    };
    let ours = std::fs::metadata("/proc/self/ns/user")?;
    let md = theirs.metadata()?;
    if (md.dev(), md.ino()) == (ours.dev(), ours.ino()) {
        return Ok(None);
    }
    Ok(Some(OwnedFd::from(theirs)))
}

/// Joins the user namespace of process `pid` (a container's monitor) when
/// it is not ours, so that the container's files, served by a FUSE mount
/// made there, can be read. Call while this process has one thread.
pub fn join(pid: u32) -> Result<(), RunError> {
    let cannot = |why: String| {
        RunError::Runtime(format!(
            "cannot join the user namespace of the container's monitor (pid {pid}): {why} \
             (run this outside `layerfs unshare`, as the user who started the container)"
        ))
    };
    let Some(ns) = other_userns(pid).map_err(|e| cannot(e.to_string()))? else {
        return Ok(());
    };
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| cannot(e.desc().to_string()))
}

/// Makes `cmd` join user namespace `ns` before it runs (the owner of a
/// namespace may; a process with one thread, as a fork's child is, can).
pub fn enter_on_exec(cmd: &mut Command, ns: OwnedFd) {
    let fd = ns.as_raw_fd();
    // SAFETY: between fork and exec the closure makes one setns call; `ns`
    // is moved in, so its descriptor stays open until then.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &ns;
            if libc::setns(fd, libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn podman_like() -> Namespace {
        let map =
            IdMap::parse("         0       1001          1\n         1     100000      65536\n");
        Namespace {
            uids: map.clone(),
            gids: map,
        }
    }

    #[test]
    fn id_maps_read_as_the_kernel_writes_them() {
        let host = IdMap::parse("         0          0 4294967295\n");
        assert!(host.contains(0) && host.contains(u32::MAX - 1));
        let ns = podman_like();
        assert_eq!(ns.uids.0, vec![(0, 1001, 1), (1, 100000, 65536)]);
        for (id, mapped) in [
            (0, true),
            (1, true),
            (33, true),
            (65536, true),
            (65537, false),
        ] {
            assert_eq!(ns.uids.contains(id), mapped, "{id}");
        }
        let single = IdMap::parse("0 1001 1\n");
        assert!(single.contains(0) && !single.contains(5));
        assert_eq!(IdMap::parse("junk\n"), IdMap(vec![]));
    }

    #[test]
    fn limits_need_root_and_unmapped_ids_say_what_to_do() {
        let spec = RunSpec {
            memory: Some(64 << 20),
            pids_limit: Some(32),
            ..Default::default()
        };
        let e = check(&spec).unwrap_err().to_string();
        assert!(e.starts_with("--memory, --pids-limit: needs root ("), "{e}");
        assert!(check(&RunSpec::default()).is_ok());

        let ns = podman_like();
        assert_eq!(mapped_ids(&ns, 1001, 1001, &[5, 70000]).unwrap(), vec![5]);
        let single = Namespace {
            uids: IdMap::parse("0 1001 1\n"),
            gids: IdMap::parse("0 1001 1\n"),
        };
        let e = mapped_ids(&single, 1001, 0, &[]).unwrap_err().to_string();
        assert!(e.contains("uid 1001") && e.contains("--add-subuids"), "{e}");
        assert!(mapped_ids(&single, 0, 0, &[]).is_ok());
    }

    #[test]
    fn the_spec_loses_its_cgroup_and_binds_sys_with_the_hosts_network() {
        let input = crate::run::spec::Input {
            args: vec!["sh".into()],
            env: vec![],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            groups: vec![],
            terminal: false,
            hostname: "box".into(),
            caps: vec![],
            no_new_privileges: false,
            seccomp: None,
            read_only: false,
            privileged: false,
            memory: None,
            memory_swap: false,
            cpus: None,
            pids_limit: None,
            network: Network::Host,
            cgroups_path: "/layerfs/box".into(),
            binds: vec![],
        };
        let mut c = crate::run::spec::config(&input);
        let mount = |c: &Value, dest: &str| -> Value {
            c["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["destination"] == dest)
                .unwrap()
                .clone()
        };
        assert_eq!(mount(&c, "/sys")["type"], "sysfs");
        let single = Namespace {
            uids: IdMap::parse("0 1001 1\n"),
            gids: IdMap::parse("0 1001 1\n"),
        };
        adjust(&mut c, &single, Network::Host);
        assert!(c["linux"].get("cgroupsPath").is_none());
        assert_eq!(
            c["linux"]["resources"],
            json!({"devices": [{"allow": false, "access": "rwm"}]})
        );
        let sys = mount(&c, "/sys");
        assert_eq!(sys["type"], "bind");
        assert_eq!(sys["source"], "/sys");
        assert!(sys["options"].as_array().unwrap().contains(&json!("ro")));
        assert!(
            !mount(&c, "/dev/pts")["options"]
                .as_array()
                .unwrap()
                .contains(&json!("gid=5"))
        );

        // Its own network: sysfs as root has it; gid 5 mapped: devpts keeps it.
        let mut c = crate::run::spec::config(&crate::run::spec::Input {
            network: Network::None,
            ..input
        });
        adjust(&mut c, &podman_like(), Network::None);
        assert_eq!(mount(&c, "/sys")["type"], "sysfs");
        assert!(
            mount(&c, "/dev/pts")["options"]
                .as_array()
                .unwrap()
                .contains(&json!("gid=5"))
        );
    }
}
