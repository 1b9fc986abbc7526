//! `layerfs run` of a real Debian minbase image: the command's output and
//! exit code, its own PID namespace, the image config applied, containers
//! kept for commit, volumes, signals, and nothing left behind when the run
//! is killed.

use crate::support::containers::{
    Running, in_mount_ns, layer_paths, layers_of, minbase_env, mount_ns, processes,
};
use crate::support::{Env, wait_until};
use nix::sys::signal::Signal;

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Containers and run directories left in the store.
fn leftovers(env: &Env) -> Vec<String> {
    let own = env.root().join("layerfs");
    let mut v = Vec::new();
    for kind in ["containers", "run"] {
        if let Ok(rd) = std::fs::read_dir(own.join(kind)) {
            v.extend(
                rd.flatten()
                    .map(|e| format!("{kind}/{}", e.file_name().to_string_lossy())),
            );
        }
    }
    v
}

#[test]
fn run_rm_of_debian_minbase() {
    const T: &str = "run_rm_of_debian_minbase";
    let env = minbase_env(T, "debian:conf", |c| {
        c.set_env("GREETING", "from the image config");
        let cc = c.container_config();
        cc.working_dir = Some("/srv/app".into());
        cc.cmd = Some(vec![
            "sh".into(),
            "-c".into(),
            "echo \"$GREETING\"; pwd".into(),
        ]);
    });
    let Some(env) = env else { return };

    let out = env.ok(&["run", "--rm", "debian:conf", "cat", "/etc/os-release"]);
    assert!(
        out.contains("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\""),
        "{out}"
    );

    let out = env.run(&["run", "--rm", "debian:conf", "sh", "-c", "exit 7"]);
    assert_eq!(code(&out), 7, "{}", String::from_utf8_lossy(&out.stderr));

    // Only the container's processes: its init (pid 1) and the command
    // (whose pid the runtime's threads before it decide).
    let out = env.ok(&[
        "run",
        "--rm",
        "debian:conf",
        "sh",
        "-c",
        "for d in /proc/[0-9]*; do echo \"${d#/proc/} $(cat $d/comm)\"; done",
    ]);
    let procs: Vec<&str> = out.lines().collect();
    assert_eq!(procs.len(), 2, "processes seen inside: {out}");
    assert_eq!(procs[0], "1 layerfs-init", "processes seen inside");
    assert!(procs[1].ends_with(" sh"), "processes seen inside: {out}");

    // Env, WorkingDir (created, as Docker does) and Cmd from the config.
    let out = env.ok(&["run", "--rm", "debian:conf"]);
    assert_eq!(out, "from the image config\n/srv/app\n");
    // ... and the flags over them; a user by name from the image's passwd.
    let out = env.ok(&[
        "run",
        "--rm",
        "-e",
        "GREETING=from a flag",
        "-w",
        "/tmp",
        "-u",
        "nobody",
        "debian:conf",
        "sh",
        "-c",
        "echo \"$GREETING\"; pwd; id; echo \"$HOME $PATH\"; umask; hostname",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "from a flag");
    assert_eq!(lines[1], "/tmp");
    assert_eq!(
        lines[2],
        "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)"
    );
    assert_eq!(
        lines[3],
        "/nonexistent /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    assert_eq!(lines[4], "0022");
    assert_ne!(
        lines[5],
        nix::unistd::gethostname().unwrap().to_string_lossy(),
        "its own UTS namespace"
    );

    let out = env.run(&["run", "--rm", "debian:conf", "no-such-command"]);
    assert_eq!(code(&out), 127);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("executable file not found in $PATH"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(leftovers(&env).is_empty(), "{:?}", leftovers(&env));
}

#[test]
fn run_keeps_a_container_whose_commit_has_only_the_commands_changes() {
    const T: &str = "run_keeps_a_container_whose_commit_has_only_the_commands_changes";
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    let ro = env.mkdir("host-ro");
    std::fs::write(ro.join("data.txt"), b"from the host\n").unwrap();
    let rw = env.mkdir("host-rw");
    let out = env.ok(&[
        "run",
        "--name",
        "keep",
        "-v",
        &format!("{}:/data:ro", ro.display()),
        "-v",
        &format!("{}:/srv/out", rw.display()),
        "debian:minbase",
        "sh",
        "-c",
        "cat /data/data.txt; echo new > /data/x 2>/dev/null || echo read-only; \
         echo written > /srv/out/result; echo hi > /etc/motd2",
    ]);
    assert_eq!(out, "from the host\nread-only\n");
    assert_eq!(std::fs::read(rw.join("result")).unwrap(), b"written\n");
    assert!(env.ok(&["ps"]).contains("keep"));

    env.ok(&["commit", "keep", "kept:1"]);
    let layers = layers_of(&env, "kept:1");
    let mut paths = layer_paths(&env, layers.last().unwrap());
    paths.sort();
    // No /data, /srv/out, /etc/hosts, /etc/resolv.conf: only what the command did.
    assert_eq!(paths, ["etc/", "etc/motd2"]);
    assert_eq!(
        env.ok(&["run", "--rm", "kept:1", "cat", "/etc/motd2"]),
        "hi\n"
    );
    env.ok(&["rm", "keep"]);
    assert!(leftovers(&env).is_empty(), "{:?}", leftovers(&env));
}

/// Starts `layerfs ARGS` in the background; the command's first line is
/// "ready" (nothing of layerfs's own comes before it on stdout).
fn start(env: &Env, args: &[&str]) -> Running {
    let run = Running::start(env, args);
    assert!(run.before_ready.is_empty(), "{:?}", run.before_ready);
    run
}

#[test]
fn signals_reach_the_command_and_a_killed_run_leaves_nothing() {
    const T: &str = "signals_reach_the_command_and_a_killed_run_leaves_nothing";
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    // SIGTERM to the run reaches the command, whose handler decides the code.
    let mut run = start(
        &env,
        &[
            "run",
            "--rm",
            "debian:minbase",
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done",
        ],
    );
    run.kill(Signal::SIGTERM);
    assert_eq!(run.wait(), Some(42));

    // A command killed by a signal: 128 + its number.
    let mut run = start(
        &env,
        &[
            "run",
            "--rm",
            "debian:minbase",
            "sh",
            "-c",
            "echo ready; exec sleep 1000",
        ],
    );
    wait_until(
        || processes(&["sleep", "1000"]).len() == 1,
        "the command to run",
    );
    run.kill(Signal::SIGINT);
    assert_eq!(run.wait(), Some(130));

    // SIGKILL of the run itself: no process of it survives, so its mount
    // namespaces (and every mount in them, the FUSE mount included) are gone.
    let mut run = start(
        &env,
        &[
            "run",
            "--name",
            "killed",
            "debian:minbase",
            "sh",
            "-c",
            "echo ready; exec sleep 1001",
        ],
    );
    wait_until(
        || processes(&["sleep", "1001"]).len() == 1,
        "the command to run",
    );
    let sleeper = processes(&["sleep", "1001"])[0];
    let run_ns = mount_ns(run.pid()).unwrap();
    let cmd_ns = mount_ns(sleeper).unwrap();
    let ours = mount_ns(std::process::id()).unwrap();
    assert!(run_ns != ours && cmd_ns != ours && cmd_ns != run_ns);
    run.kill(Signal::SIGKILL);
    run.wait();
    wait_until(
        || processes(&["sleep", "1001"]).is_empty(),
        "the command to die with the run",
    );
    wait_until(
        || in_mount_ns(&run_ns).is_empty() && in_mount_ns(&cmd_ns).is_empty(),
        "the run's mount namespaces to empty",
    );
    // The container stays (as after a crash of docker run), usable and removable.
    assert!(env.ok(&["ps"]).contains("killed"));
    env.ok(&["rm", "killed"]);
    env.ok(&["run", "--rm", "debian:minbase", "true"]);
    assert!(leftovers(&env).is_empty(), "{:?}", leftovers(&env));
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_runtime_confines_the_container_as_docker_does() {
    const T: &str = "the_runtime_confines_the_container_as_docker_does";
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    let img = "debian:minbase";
    // The default seccomp filter is on; --privileged turns it off.
    let out = env.ok(&["run", "--rm", img, "grep", "^Seccomp:", "/proc/self/status"]);
    assert_eq!(out, "Seccomp:\t2\n");
    let out = env.ok(&[
        "run",
        "--rm",
        "--privileged",
        img,
        "grep",
        "^Seccomp:",
        "/proc/self/status",
    ]);
    assert_eq!(out, "Seccomp:\t0\n");
    let out = env.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        img,
        "grep",
        "^Seccomp:",
        "/proc/self/status",
    ]);
    assert_eq!(out, "Seccomp:\t0\n");

    // A memory limit: a program that wants 256 MiB is killed (137).
    let out = env.run(&[
        "run",
        "--rm",
        "--memory",
        "64m",
        img,
        "sh",
        "-c",
        "head -c 256m /dev/zero | tail > /dev/null",
    ]);
    assert_eq!(code(&out), 137, "{}", stderr(&out));
    let out = env.ok(&[
        "run",
        "--rm",
        "--memory",
        "64m",
        img,
        "sh",
        "-c",
        "head -c 16m /dev/zero | tail | wc -c",
    ]);
    assert_eq!(out, "16777216\n");

    // A pids limit stops a fork loop; the host forks on.
    let out = env.run(&[
        "run",
        "--rm",
        "--pids-limit",
        "32",
        img,
        "sh",
        "-c",
        "for i in $(seq 64); do sleep 30 & done; echo all started",
    ]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("fork"), "{}", stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("all started"));
    assert!(crate::support::sh("true").0, "the host still forks");

    // The limits as the container's cgroups show them.
    let out = env.ok(&[
        "run",
        "--rm",
        "--cpus",
        "0.5",
        "--memory",
        "64m",
        "--pids-limit",
        "32",
        "--security-opt",
        "no-new-privileges",
        img,
        "sh",
        "-c",
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/memory/memory.limit_in_bytes \
         /sys/fs/cgroup/pids/pids.max; grep NoNewPrivs /proc/self/status",
    ]);
    assert_eq!(out, "50000\n67108864\n32\nNoNewPrivs:\t1\n");

    // Capabilities: Docker's set; --cap-drop ALL takes chown away.
    let chown = "touch /tmp/f && chown 1:1 /tmp/f && echo chowned";
    assert_eq!(
        env.ok(&["run", "--rm", img, "sh", "-c", chown]),
        "chowned\n"
    );
    let out = env.run(&["run", "--rm", "--cap-drop", "ALL", img, "sh", "-c", chown]);
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&[
        "run",
        "--rm",
        "--cap-drop",
        "chown",
        "--cap-add",
        "sys_admin",
        img,
        "sh",
        "-c",
        chown,
    ]);
    assert_ne!(code(&out), 0);

    // mount, unshare -U (seccomp) and reboot are refused; reboot asks only
    // to turn Ctrl-Alt-Del off (harmless even if it were allowed).
    let out = env.ok(&[
        "run",
        "--rm",
        img,
        "sh",
        "-c",
        "mount -t tmpfs t /mnt 2>/dev/null || echo mount refused; \
         unshare -U true 2>/dev/null || echo unshare refused; \
         perl -e 'syscall(169, 0xfee1dead, 672274793, 0, 0) == -1 and print \"reboot: $!\\n\"'",
    ]);
    assert_eq!(
        out,
        "mount refused\nunshare refused\nreboot: Operation not permitted\n"
    );
    // The masked and read-only parts of /proc.
    let out = env.ok(&[
        "run",
        "--rm",
        img,
        "sh",
        "-c",
        "stat -c %F /proc/keys /proc/timer_list; \
         echo 1 > /proc/sysrq-trigger 2>/dev/null || echo sysrq read-only",
    ]);
    assert_eq!(
        out,
        "character special file\ncharacter special file\nsysrq read-only\n"
    );

    // --read-only: / cannot be written; volumes and /dev/shm still can.
    let rw = env.mkdir("rw");
    let out = env.ok(&[
        "run",
        "--rm",
        "--read-only",
        "-v",
        &format!("{}:/out", rw.display()),
        img,
        "sh",
        "-c",
        "echo x > /x 2>/dev/null || echo root read-only; echo y > /out/y && echo volume written",
    ]);
    assert_eq!(out, "root read-only\nvolume written\n");

    // --user, --workdir, --hostname, --entrypoint, -e.
    let out = env.ok(&[
        "run",
        "--rm",
        "--user",
        "nobody",
        "--workdir",
        "/tmp",
        "--hostname",
        "probe",
        "--entrypoint",
        "sh",
        "-e",
        "X=1",
        img,
        "-c",
        "id -u; pwd; hostname; cat /etc/hostname; echo $X; grep CapEff /proc/self/status",
    ]);
    assert_eq!(
        out,
        "65534\n/tmp\nprobe\nprobe\n1\nCapEff:\t0000000000000000\n"
    );

    // -i passes stdin on; without it the command reads nothing.
    let mut child = env
        .cmd(&["run", "--rm", "-i", img, "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"through stdin\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"through stdin\n");
    assert_eq!(env.ok(&["run", "--rm", img, "cat"]), "");

    // -t: a terminal through the runtime's console socket (its line
    // discipline turns \n into \r\n); the exit code still comes through.
    let out = env.run(&[
        "run",
        "--rm",
        "-t",
        img,
        "sh",
        "-c",
        "tty; test -t 1 && echo is a tty; exit 4",
    ]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/dev/pts/0\r\nis a tty\r\n"
    );

    // Bad flags are run's own errors: 125, as docker run.
    for bad in [
        &["run", "--rm", "--cap-add", "FLY", img, "true"][..],
        &["run", "--rm", "--memory", "lots", img, "true"],
        &["run", "--rm", "--network", "bridge0", img, "true"],
        &["run", "--rm", "--security-opt", "apparmor=x", img, "true"],
    ] {
        let out = env.run(bad);
        assert_eq!(code(&out), 125, "{bad:?}: {}", stderr(&out));
    }
    let out = env.run(&["run", "--rm", "--runtime", "no-such-runtime", img, "true"]);
    assert!(stderr(&out).contains("no-such-runtime"), "{}", stderr(&out));
    assert_ne!(code(&out), 0);
    let out = env.run(&["run", "--rm", "--debug", img, "true"]);
    let err = stderr(&out);
    assert!(
        err.contains("layerfs: runtime /") && err.contains("runc version"),
        "{err}"
    );
    // No runtime on PATH: the error names the package.
    let out = env
        .cmd(&["run", "--rm", img, "true"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains("apt-get install runc"),
        "{}",
        stderr(&out)
    );
    assert!(leftovers(&env).is_empty(), "{:?}", leftovers(&env));
}

#[test]
fn networks_none_host_and_default() {
    const T: &str = "networks_none_host_and_default";
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    // A server on the host's loopback.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let probe = format!(
        "(echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo reached || echo unreachable; \
         tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '; echo"
    );
    let on = |net: &str| {
        env.ok(&[
            "run",
            "--rm",
            "--network",
            net,
            "debian:minbase",
            "bash",
            "-c",
            &probe,
        ])
    };
    let host = on("host");
    assert!(host.starts_with("reached\n"), "{host}");
    assert_eq!(on("none"), "unreachable\nlo \n");
    assert_eq!(on("default"), "unreachable\nlo tap0 \n");
    // Behind slirp4netns: an address and a default route.
    let out = env.ok(&[
        "run",
        "--rm",
        "debian:minbase",
        "sh",
        "-c",
        "grep -c '^tap0\t00000000' /proc/net/route; grep nameserver /etc/resolv.conf | head -1",
    ]);
    assert!(out.starts_with("1\nnameserver "), "{out}");
    // No slirp4netns outlives its container (other tests' may be running).
    let orphans = || {
        processes_named("slirp4netns")
            .into_iter()
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = cmdline
                    .split(|&b| b == 0)
                    .filter(|a| !a.is_empty())
                    .collect();
                let target = args
                    .len()
                    .checked_sub(2)
                    .map(|i| String::from_utf8_lossy(args[i]).into_owned());
                target.is_some_and(|t| !std::path::Path::new(&format!("/proc/{t}")).exists())
            })
            .count()
    };
    wait_until(|| orphans() == 0, "no slirp4netns without its container");
}

fn processes_named(comm: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

#[test]
fn detached_containers_logs_exec_stop_kill_and_rm() {
    const T: &str = "detached_containers_logs_exec_stop_kill_and_rm";
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    let img = "debian:minbase";
    let name = env.ok(&[
        "run",
        "-d",
        "--name",
        "bg",
        img,
        "sh",
        "-c",
        "trap 'echo got TERM; exit 3' TERM; echo started; while :; do sleep 0.1; done",
    ]);
    assert_eq!(name, "bg\n");
    let ps = env.ok(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("bg ") && l.contains("running")),
        "{ps}"
    );
    wait_until(|| env.ok(&["logs", "bg"]) == "started\n", "the log");
    // exec: its output, exit code, user, environment and working directory.
    let out = env.ok(&[
        "exec",
        "-e",
        "Y=2",
        "-w",
        "/tmp",
        "bg",
        "sh",
        "-c",
        "echo $Y; pwd; hostname",
    ]);
    assert_eq!(out, "2\n/tmp\nbg\n");
    let out = env.run(&["exec", "bg", "sh", "-c", "exit 5"]);
    assert_eq!(code(&out), 5);
    assert_eq!(
        env.ok(&["exec", "-u", "nobody", "bg", "id", "-un"]),
        "nobody\n"
    );
    // Changes made by exec land in the container.
    env.ok(&["exec", "bg", "sh", "-c", "echo kept > /kept"]);
    // rm of a running container needs --force.
    let out = env.run(&["rm", "bg"]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("running"), "{}", stderr(&out));
    // stop: SIGTERM reaches the command, whose trap decides the exit code.
    assert_eq!(env.ok(&["stop", "bg"]), "bg\n");
    let ps = env.ok(&["ps", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&ps).unwrap();
    assert_eq!(v[0]["Status"], "exited (3)", "{ps}");
    assert_eq!(env.ok(&["logs", "bg"]), "started\ngot TERM\n");
    let out = env.run(&["exec", "bg", "true"]);
    assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
    env.ok(&["commit", "bg", "bg:1"]);
    assert_eq!(env.ok(&["run", "--rm", "bg:1", "cat", "/kept"]), "kept\n");
    env.ok(&["rm", "bg"]);

    // A command that ignores SIGTERM: stop -t 1 kills it.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        img,
        "sh",
        "-c",
        "trap '' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    wait_until(|| env.ok(&["logs", "stubborn"]) == "ready\n", "the trap");
    env.ok(&["stop", "-t", "1", "stubborn"]);
    assert!(env.ok(&["ps"]).contains("exited (137)"));
    env.ok(&["rm", "stubborn"]);

    // kill with a signal, rm -f of a running container, run -d --rm.
    env.ok(&["run", "-d", "--name", "k", img, "sleep", "1000"]);
    env.ok(&["kill", "-s", "INT", "k"]);
    wait_until(
        || env.ok(&["ps"]).contains("exited (130)"),
        "the container to end",
    );
    env.ok(&["rm", "k"]);
    env.ok(&["run", "-d", "--rm", "--name", "gone", img, "sleep", "1000"]);
    wait_until(
        || processes(&["sleep", "1000"]).len() == 1,
        "the command to run",
    );
    env.ok(&["rm", "-f", "gone"]);
    assert!(processes(&["sleep", "1000"]).is_empty());
    assert!(!env.ok(&["ps"]).contains("gone"));
    let out = env.run(&["stop", "no-such"]);
    assert_ne!(code(&out), 0);
    assert!(leftovers(&env).is_empty(), "{:?}", leftovers(&env));
}

/// What a container sees of its confinement, in lines both runtimes'
/// users can compare (nothing that names the image store or the init).
pub(crate) const PROBE: &str = r#"
echo "== status"; grep -E '^(Seccomp|NoNewPrivs|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status
echo "== who"; id; hostname; echo "$(cat /etc/hostname)"; pwd; umask
echo "== mounts"
for m in /proc /dev /dev/pts /dev/shm /dev/mqueue /sys /sys/fs/cgroup; do
  awk -v m=$m '$2==m {split($4,o,","); print $2, $3, o[1]}' /proc/self/mounts
done
echo "== devices"; stat -c '%n %F %t:%T %a' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty
echo "== masked"; stat -c '%n %F %s' /proc/keys /proc/timer_list
echo "$(ls -A /proc/acpi 2>/dev/null | wc -l) in /proc/acpi, $(ls -A /sys/firmware | wc -l) in /sys/firmware"
echo "== read-only"
for f in /proc/sysrq-trigger /proc/sys/kernel/domainname /sys/kernel/uevent_helper; do
  (echo x > $f) 2>/dev/null && echo "$f written" || echo "$f refused"
done
echo "== refused"
mount -t tmpfs t /mnt 2>/dev/null && echo mounted || echo mount refused
perl -e 'syscall(169, 0xfee1dead, 672274793, 0, 0) == -1 and print "reboot: $!\n"'
perl -e '$p = "/dev/null"; syscall(167, $p, 0) == -1 and print "swapon: $!\n"'
echo "== allowed"
touch /tmp/f && chown 1:1 /tmp/f && echo chown ok
mknod /tmp/n c 1 3 && echo mknod ok
chroot / true && echo chroot ok
echo "== network"; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '
echo "== env"; echo "PATH=$PATH HOME=$HOME"
"#;

#[test]
fn podman_and_layerfs_run_give_the_same_answers() {
    const T: &str = "podman_and_layerfs_run_give_the_same_answers";
    if !crate::support::sh("command -v podman && command -v runc").0 {
        assert!(
            std::env::var_os("LAYERFS_CI").is_none(),
            "{T}: podman or runc is not installed"
        );
        eprintln!("SKIPPED {T}: podman or runc is not installed");
        return;
    }
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    // The same image, in podman's own store.
    let dir = env.mkdir("podman");
    let archive = dir.join("image.tar");
    env.ok(&["save", "debian:minbase", "-o", archive.to_str().unwrap()]);
    let podman = |args: &[&str]| {
        let out = std::process::Command::new("podman")
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            // Its own tmpdir: /run/libpod is shared with other tests' podman runs.
            .arg("--tmpdir")
            .arg(dir.join("tmp"))
            .args([
                "--storage-driver",
                "overlay",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                "--runtime",
                "runc",
            ])
            .args(args)
            .output()
            .expect("podman");
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    podman(&["load", "-i", archive.to_str().unwrap()]);
    // Podman's own defaults differ from Docker's in three capabilities;
    // this machine's hard limits need its --ulimit (see design.md).
    let theirs = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--hostname",
        "probe",
        "--cap-add",
        "MKNOD,NET_RAW,AUDIT_WRITE",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=4096:4096",
        "localhost/debian:minbase",
        "sh",
        "-c",
        PROBE,
    ]);
    let ours = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--hostname",
        "probe",
        "debian:minbase",
        "sh",
        "-c",
        PROBE,
    ]);
    assert!(theirs.contains("Seccomp:\t2"), "{theirs}");
    for (n, (a, b)) in theirs.lines().zip(ours.lines()).enumerate() {
        assert_eq!(
            a,
            b,
            "line {}: podman vs layerfs\n{theirs}\n---\n{ours}",
            n + 1
        );
    }
    assert_eq!(
        theirs.lines().count(),
        ours.lines().count(),
        "{theirs}\n---\n{ours}"
    );
    podman(&["rmi", "-a", "-f"]);
    assert!(leftovers(&env).is_empty(), "{:?}", leftovers(&env));
}
