//! The default seccomp filter: the profile of Debian's containers-common
//! (the one Podman applies), made into the runtime-spec's `linux.seccomp`
//! for this architecture and the container's capabilities, then tightened
//! the way Docker's default profile is: the system calls that only a
//! holder of a capability may make (namespaces and mounts for
//! CAP_SYS_ADMIN, reboot for CAP_SYS_BOOT, ...) are refused without it, and
//! `clone` may not make namespaces. A pure function over the profile text.

use serde_json::{Value, json};

/// Where Debian's containers-common (golang-github-containers-common) puts it.
pub const DEFAULT_PROFILE: &str = "/usr/share/containers/seccomp.json";

const EPERM: i64 = 1;
const ENOSYS: i64 = 38;
/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
const CLONE_NAMESPACES: u64 = 0x7E02_0000;

/// Docker's rule: these calls only with the capability.
const CAP_ONLY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_adjtime"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYSLOG", &["syslog"]),
];

#[derive(Debug, thiserror::Error)]
#[error("seccomp profile {path}: {why}")]
pub struct SeccompError {
    pub path: String,
    pub why: String,
}

/// The architecture names a profile's `arches` use, for this machine.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn scmp_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "SCMP_ARCH_X86_64",
        "aarch64" => "SCMP_ARCH_AARCH64",
        "x86" => "SCMP_ARCH_X86",
        _ => "",
    }
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The filter for a container with capabilities `caps` (names as
/// `CAP_CHOWN`), from a profile in the containers/Docker JSON format.
/// `tighten` applies Docker's capability rules on top (for the default
/// profile; a profile the user gives is taken as written).
pub fn filter(
    profile: &[u8],
    path: &str,
    caps: &[String],
    tighten: bool,
) -> Result<Value, SeccompError> {
    let bad = |why: String| SeccompError {
        path: path.to_string(),
        why,
    };
    let p: Value = serde_json::from_slice(profile).map_err(|e| bad(e.to_string()))?;
    let default_action = p
        .get("defaultAction")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no defaultAction".into()))?;
    let has = |c: &str| caps.iter().any(|x| x == c);
    let arch = go_arch();

    // The architectures: ours and its sub-architectures from archMap.
    let mut arches: Vec<String> = Vec::new();
    for m in p
        .get("archMap")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if m.get("architecture").and_then(Value::as_str) == Some(scmp_arch()) {
            arches.push(scmp_arch().to_string());
            arches.extend(
                strings(m.get("subArchitectures"))
                    .iter()
                    .map(|s| s.to_string()),
            );
        }
    }
    if arches.is_empty() {
        arches.extend(
            strings(p.get("architectures"))
                .iter()
                .map(|s| s.to_string()),
        );
    }

    let restricted = |name: &str| -> Option<&'static str> {
        CAP_ONLY
            .iter()
            .find(|(_, calls)| calls.contains(&name))
            .map(|(cap, _)| *cap)
    };
    let mut rules = Vec::new();
    for s in p
        .get("syscalls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let inc = s.get("includes");
        let exc = s.get("excludes");
        let inc_caps = strings(inc.and_then(|o| o.get("caps")));
        let inc_arches = strings(inc.and_then(|o| o.get("arches")));
        let exc_caps = strings(exc.and_then(|o| o.get("caps")));
        let exc_arches = strings(exc.and_then(|o| o.get("arches")));
        if !inc_caps.iter().all(|c| has(c))
            || (!inc_arches.is_empty() && !inc_arches.contains(&arch))
            || exc_caps.iter().any(|c| has(c))
            || exc_arches.contains(&arch)
        {
            continue;
        }
        let action = s.get("action").and_then(Value::as_str).unwrap_or_default();
        let mut names = strings(s.get("names"));
        if tighten && action == "SCMP_ACT_ALLOW" {
            names.retain(|n| {
                restricted(n).is_none_or(&has) && (*n != "clone" || has("CAP_SYS_ADMIN"))
            });
        }
        if names.is_empty() {
            continue;
        }
        let mut rule = json!({ "names": names, "action": action });
        if let Some(args) = s
            .get("args")
            .filter(|a| a.as_array().is_some_and(|a| !a.is_empty()))
        {
            rule["args"] = args.clone();
        }
        if let Some(e) = s.get("errnoRet").filter(|e| e.is_number()) {
            rule["errnoRet"] = e.clone();
        }
        rules.push(rule);
    }
    if tighten {
        let refused: Vec<&str> = CAP_ONLY
            .iter()
            .filter(|(cap, _)| !has(cap))
            .flat_map(|(_, calls)| calls.iter().copied())
            .filter(|n| *n != "clone3")
            .collect();
        if !refused.is_empty() {
            rules.push(json!({ "names": refused, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM }));
        }
        if !has("CAP_SYS_ADMIN") {
            // clone only without namespace flags; clone3 (whose flags a filter
            // cannot see) as unknown, so that libc falls back to clone.
            rules.push(json!({
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{ "index": 0, "value": CLONE_NAMESPACES, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }],
            }));
            rules.push(
                json!({ "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS }),
            );
        }
    }
    let mut out = json!({
        "defaultAction": default_action,
        "architectures": arches,
        "syscalls": rules,
    });
    if let Some(e) = p.get("defaultErrnoRet").filter(|e| e.is_number()) {
        out["defaultErrnoRet"] = e.clone();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = r#"{
      "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
      "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                  {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
      "syscalls": [
        {"names": ["read", "unshare", "mount", "clone", "reboot"], "action": "SCMP_ACT_ALLOW", "args": []},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
        {"names": ["s390_pci_mmio_read"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}},
        {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_PTRACE"]}},
        {"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "excludes": {"caps": ["CAP_SYS_BOOT"]}}
      ]}"#;

    fn names(f: &Value, action: &str) -> Vec<String> {
        f["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == action && r.get("args").is_none())
            .flat_map(|r| {
                r["names"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap().to_string())
            })
            .collect()
    }

    #[test]
    fn default_caps_refuse_namespaces_mounts_and_reboot() {
        let caps = vec!["CAP_CHOWN".to_string()];
        let f = filter(PROFILE.as_bytes(), "p", &caps, true).unwrap();
        assert_eq!(f["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(f["defaultErrnoRet"], 38);
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(
                f["architectures"],
                json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
            );
            assert!(names(&f, "SCMP_ACT_ALLOW").contains(&"arch_prctl".to_string()));
        }
        let allowed = names(&f, "SCMP_ACT_ALLOW");
        assert!(allowed.contains(&"read".to_string()));
        for refused in [
            "unshare",
            "mount",
            "reboot",
            "ptrace",
            "s390_pci_mmio_read",
            "clone",
        ] {
            assert!(!allowed.contains(&refused.to_string()), "{refused}");
        }
        let errno = names(&f, "SCMP_ACT_ERRNO");
        for n in ["unshare", "mount", "reboot", "kexec_load", "clone3"] {
            assert!(errno.contains(&n.to_string()), "{n}");
        }
        // clone is allowed only without namespace flags.
        let clone = f["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["names"] == json!(["clone"]))
            .unwrap();
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    }

    #[test]
    fn capabilities_bring_their_calls_back_and_untightened_is_as_written() {
        let caps: Vec<String> = ["CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_PTRACE"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = filter(PROFILE.as_bytes(), "p", &caps, true).unwrap();
        let allowed = names(&f, "SCMP_ACT_ALLOW");
        for n in ["unshare", "mount", "reboot", "ptrace", "clone"] {
            assert!(allowed.contains(&n.to_string()), "{n}");
        }
        assert!(!names(&f, "SCMP_ACT_ERRNO").contains(&"kexec_load".to_string()));
        let f = filter(PROFILE.as_bytes(), "p", &[], false).unwrap();
        assert!(names(&f, "SCMP_ACT_ALLOW").contains(&"unshare".to_string()));
        assert!(filter(b"{}", "p", &[], true).is_err());
        assert!(filter(b"not json", "p", &[], true).is_err());
    }
}
