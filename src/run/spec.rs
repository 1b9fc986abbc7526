//! The OCI runtime-spec `config.json` of a container, built as Docker and
//! Podman build theirs: Docker's default capabilities, mounts (/proc, a
//! tmpfs /dev with devpts, shm and mqueue, read-only /sys and cgroups),
//! masked and read-only /proc paths, namespaces, cgroup limits, then the
//! flags over them. A pure function of its inputs.

use serde_json::{Value, json};

/// Docker's default capability set.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability this kernel knows (for `--privileged` and `--cap-add ALL`).
pub const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const MASKED: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READ_ONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The capability set from the defaults and `--cap-add` / `--cap-drop`
/// (names with or without `CAP_`, any case, or `ALL`), in Docker's order:
/// drops first, then adds.
pub fn capabilities(
    add: &[String],
    drop: &[String],
    privileged: bool,
) -> Result<Vec<String>, String> {
    let norm = |c: &str| -> Result<String, String> {
        let up = c.to_ascii_uppercase();
        let name = if up.starts_with("CAP_") || up == "ALL" {
            up
        } else {
            format!("CAP_{up}")
        };
        if name == "ALL" || ALL_CAPS.contains(&name.as_str()) {
            Ok(name)
        } else {
            Err(format!("unknown capability {c:?}"))
        }
    };
    let mut caps: Vec<String> = if privileged {
        ALL_CAPS.iter().map(|s| s.to_string()).collect()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    for d in drop {
        match norm(d)?.as_str() {
            "ALL" => caps.clear(),
            n => caps.retain(|c| c != n),
        }
    }
    for a in add {
        match norm(a)?.as_str() {
            "ALL" => caps = ALL_CAPS.iter().map(|s| s.to_string()).collect(),
            n if !caps.iter().any(|c| c == n) => caps.push(n.to_string()),
            _ => {}
        }
    }
    Ok(caps)
}

/// The capabilities of `caps` that a bounding set (`CapBnd:` of
/// /proc/self/status, hex) holds: a container cannot have more than we do.
pub fn within_bounding(caps: Vec<String>, cap_bnd_hex: &str) -> Vec<String> {
    let Ok(mask) = u64::from_str_radix(cap_bnd_hex.trim(), 16) else {
        return caps;
    };
    caps.into_iter()
        .filter(|c| {
            ALL_CAPS
                .iter()
                .position(|a| a == c)
                .is_some_and(|bit| mask & (1 << bit) != 0)
        })
        .collect()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Network {
    /// A namespace of its own; outbound access through user-mode networking.
    #[default]
    Default,
    /// A namespace of its own with loopback only.
    None,
    /// The host's network namespace.
    Host,
}

/// A bind mount into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub source: String,
    pub destination: String,
    pub read_only: bool,
}

/// Everything the config is made of.
#[derive(Clone, Debug)]
pub struct Input {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub terminal: bool,
    pub hostname: String,
    pub caps: Vec<String>,
    pub no_new_privileges: bool,
    /// `linux.seccomp`, or None for unconfined.
    pub seccomp: Option<Value>,
    pub read_only: bool,
    pub privileged: bool,
    pub memory: Option<i64>,
    /// Swap accounting is there to limit (cgroup v1's memsw).
    pub memory_swap: bool,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub network: Network,
    /// The container's cgroup, relative to each hierarchy's root.
    pub cgroups_path: String,
    pub binds: Vec<Bind>,
}

/// `--memory` as Docker reads it: bytes, or a number with b, k, m or g.
pub fn parse_memory(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last()? {
        'b' => (&s[..s.len() - 1], 1),
        'k' => (&s[..s.len() - 1], 1 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s.as_str(), 1),
    };
    let n: f64 = num.parse().ok()?;
    (n > 0.0).then_some((n * mult as f64) as i64)
}

pub fn config(i: &Input) -> Value {
    let nosuid_noexec_nodev = ["nosuid", "noexec", "nodev"];
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": nosuid_noexec_nodev}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", if i.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": nosuid_noexec_nodev}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
    ];
    for b in &i.binds {
        let mut options = vec!["rbind", "rprivate"];
        if b.read_only {
            options.push("ro");
        }
        mounts.push(json!({"destination": b.destination, "type": "bind", "source": b.source, "options": options}));
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if i.network != Network::Host {
        namespaces.push(json!({"type": "network"}));
    }

    let mut resources = json!({
        // Devices: none but the runtime's standard nodes (it adds those).
        "devices": [{"allow": i.privileged, "access": "rwm"}],
    });
    if let Some(m) = i.memory {
        resources["memory"] = json!({"limit": m});
        if i.memory_swap {
            // No swap beyond the limit: the limit is the limit.
            resources["memory"]["swap"] = json!(m);
        }
    }
    if let Some(c) = i.cpus {
        let period = 100_000u64;
        resources["cpu"] = json!({"quota": (c * period as f64) as i64, "period": period});
    }
    if let Some(p) = i.pids_limit {
        resources["pids"] = json!({"limit": p});
    }

    let (eff, perm) = if i.uid == 0 {
        (i.caps.clone(), i.caps.clone())
    } else {
        (vec![], vec![])
    };
    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": i.cgroups_path,
    });
    if !i.privileged {
        linux["maskedPaths"] = json!(MASKED);
        linux["readonlyPaths"] = json!(READ_ONLY);
    }
    if let Some(s) = &i.seccomp {
        linux["seccomp"] = s.clone();
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": i.terminal,
            "user": {"uid": i.uid, "gid": i.gid, "additionalGids": i.groups},
            "args": i.args,
            "env": i.env,
            "cwd": i.cwd,
            "capabilities": {"bounding": i.caps, "effective": eff, "permitted": perm},
            "noNewPrivileges": i.no_new_privileges,
        },
        "root": {"path": "rootfs", "readonly": i.read_only},
        "hostname": i.hostname,
        "mounts": mounts,
        "linux": linux,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> Input {
        Input {
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            groups: vec![0],
            terminal: false,
            hostname: "box".into(),
            caps: DEFAULT_CAPS.iter().map(|s| s.to_string()).collect(),
            no_new_privileges: false,
            seccomp: Some(json!({"defaultAction": "SCMP_ACT_ERRNO"})),
            read_only: false,
            privileged: false,
            memory: None,
            memory_swap: true,
            cpus: None,
            pids_limit: None,
            network: Network::Default,
            cgroups_path: "/layerfs/box".into(),
            binds: vec![],
        }
    }

    #[test]
    fn caps_follow_docker() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let c = capabilities(&[], &[], false).unwrap();
        assert_eq!(c.len(), 14);
        assert!(capabilities(&[], &s(&["all"]), false).unwrap().is_empty());
        assert_eq!(
            capabilities(&s(&["chown"]), &s(&["ALL"]), false).unwrap(),
            s(&["CAP_CHOWN"])
        );
        let c = capabilities(&s(&["SYS_ADMIN"]), &s(&["CAP_CHOWN"]), false).unwrap();
        assert!(c.contains(&"CAP_SYS_ADMIN".to_string()) && !c.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(capabilities(&[], &[], true).unwrap().len(), ALL_CAPS.len());
        assert!(capabilities(&s(&["FLY"]), &[], false).is_err());
        // Bit 24 (CAP_SYS_RESOURCE) missing from ours: not given.
        let all = capabilities(&[], &[], true).unwrap();
        let c = within_bounding(all, "000001fffeffffff");
        assert_eq!(c.len(), ALL_CAPS.len() - 1);
        assert!(!c.contains(&"CAP_SYS_RESOURCE".to_string()));
    }

    #[test]
    fn memory_sizes() {
        for (s, want) in [
            ("64m", Some(64 << 20)),
            ("1g", Some(1 << 30)),
            ("512", Some(512)),
            ("10k", Some(10240)),
            ("x", None),
            ("-1m", None),
        ] {
            assert_eq!(parse_memory(s), want, "{s}");
        }
    }

    #[test]
    fn config_has_docker_defaults_and_the_flags() {
        let c = config(&input());
        assert_eq!(
            c["process"]["capabilities"]["effective"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        assert_eq!(c["linux"]["maskedPaths"][2], "/proc/kcore");
        assert!(
            c["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .contains(&json!({"type": "network"}))
        );
        assert!(c["linux"]["resources"].get("memory").is_none());
        assert_eq!(c["root"]["readonly"], false);
        let mut i = input();
        i.memory = Some(64 << 20);
        i.cpus = Some(1.5);
        i.pids_limit = Some(32);
        i.network = Network::Host;
        i.read_only = true;
        i.uid = 1000;
        i.seccomp = None;
        i.binds = vec![Bind {
            source: "/srv".into(),
            destination: "/data".into(),
            read_only: true,
        }];
        let c = config(&i);
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(c["linux"]["resources"]["memory"]["swap"], 64 << 20);
        assert_eq!(c["linux"]["resources"]["cpu"]["quota"], 150_000);
        assert_eq!(c["linux"]["resources"]["pids"]["limit"], 32);
        assert!(
            !c["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .contains(&json!({"type": "network"}))
        );
        assert_eq!(c["root"]["readonly"], true);
        assert!(c["linux"].get("seccomp").is_none());
        // A user other than root keeps the bounding set, with no effective capability.
        assert!(
            c["process"]["capabilities"]["effective"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        let last = c["mounts"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["options"], json!(["rbind", "rprivate", "ro"]));
    }
}
