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
