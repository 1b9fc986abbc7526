//! `layerfs run` and `build` by an ordinary user with subordinate ids, as
//! rootless Podman and Buildah run them: in the user's own store, the
//! command is root of a user namespace (and of its PID namespace: it sees
//! its own processes only), the exit code passes through, a detached
//! container takes exec and stop from the user outside any namespace, what
//! needs the host's root is refused in one line; the build tests'
//! Dockerfile built by the user gives the same tree as root's build.

use crate::build::{context, untimed};
use crate::support::containers::{minbase_env, processes};
use crate::support::debian::debian_layers;
use crate::support::rootless::{Home, User, user};
use crate::support::{Env, have_tool, is_mounted, sh, tree, unmount_or_detach, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A store of the user's own, holding Debian minbase as `debian:minbase`
/// (imported by the user).
struct UserStore {
    user: &'static User,
    home: Home,
}

impl UserStore {
    fn new(test: &str) -> Option<UserStore> {
        let user = user(test)?;
        let deb = debian_layers(test)?;
        // slirp4netns opens /dev/net/tun as the user; some VMs ship it 0600
        // where Debian has 0666.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o666));
        let s = UserStore {
            user,
            home: user.home(),
        };
        s.ok(&[
            "import",
            deb.gz()[0].to_str().expect("utf-8 path"),
            "debian:minbase",
        ]);
        Some(s)
    }

    fn root(&self) -> &Path {
        &self.home.store
    }

    /// `layerfs ARGS` as the user, in its store.
    fn run(&self, args: &[&str]) -> Output {
        let quoted: Vec<String> = args
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        self.user.sh(
            &self.home,
            &format!("exec \"$L\" {}", quoted.join(" ")),
            None,
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "layerfs {args:?} as the test user failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the user left behind: mounts of the store, processes.
fn assert_nothing_left(s: &UserStore) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let root = s.root();
    let ours: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(root.to_str().unwrap_or("-")))
        .collect();
    assert!(ours.is_empty(), "mounts left: {ours:?}");
    // (The test user is shared with other tests running beside: only the
    // processes of this store's binary count.)
    let procs = processes_of(&s.home.bin);
    assert!(procs.is_empty(), "layerfs processes left: {procs:?}");
    let runs = std::fs::read_dir(s.root().join("layerfs/run"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(runs, 0, "run directories left");
}

#[test]
fn rootless_run_of_debian_minbase() {
    const T: &str = "rootless_run_of_debian_minbase";
    let Some(s) = UserStore::new(T) else { return };

    let out = s.run(&["run", "--rm", "debian:minbase", "cat", "/etc/os-release"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\""),
        "{text}"
    );
    // Nothing to warn about (passthrough is for the host's root alone).
    assert_eq!(stderr(&out), "");
    let out = s.run(&["run", "--rm", "debian:minbase", "sh", "-c", "exit 7"]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));

    // Root of its namespace: uid 0, a chown to a mapped id works, a device
    // node does not (the host's root only).
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "debian:minbase",
        "sh",
        "-c",
        "id -u; mkdir /d && chown 33:33 /d && stat -c '%u:%g' /d; \
         mknod /c c 1 3 2>/dev/null || echo no mknod",
    ]);
    assert_eq!(out, "0\n33:33\nno mknod\n");

    // Its own PID namespace: its init (pid 1) and the command.
    let out = s.ok(&[
        "run",
        "--rm",
        "debian:minbase",
        "sh",
        "-c",
        "for d in /proc/[0-9]*; do echo \"${d#/proc/} $(cat $d/comm)\"; done",
    ]);
    let procs: Vec<&str> = out.lines().collect();
    assert_eq!(procs.len(), 2, "processes seen inside: {out}");
    assert_eq!(procs[0], "1 layerfs-init", "processes seen inside");
    assert!(procs[1].ends_with(" sh"), "processes seen inside: {out}");

    // An image user is one of the subordinate ids; every network mode runs.
    for net in ["default", "none", "host"] {
        let out = s.ok(&[
            "run",
            "--rm",
            "--network",
            net,
            "-u",
            "nobody",
            "debian:minbase",
            "sh",
            "-c",
            "id; ls /sys/class/net | grep -c lo",
        ]);
        assert_eq!(
            out, "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n1\n",
            "--network {net}"
        );
    }

    // Without subordinate ids (a namespace of the user alone, as `unshare
    // -r` makes): the image's root still runs, with a terminal (devpts
    // without the unmapped tty group); an unmapped image user is named.
    let alone = s.user.sh(
        &s.home,
        "unshare --user --map-root-user --mount \"$L\" run --rm --network none \
         debian:minbase sh -c 'id -u; grep -c devpts /proc/mounts'; echo \"code $?\"; \
         unshare --user --map-root-user --mount \"$L\" run --rm -u nobody debian:minbase id; \
         echo \"code $?\"",
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&alone.stdout),
        "0\n1\ncode 0\ncode 125\n"
    );
    assert!(
        stderr(&alone).contains(
            "uid 65534 of the container is not mapped in this user namespace: give the user \
             subordinate ids (usermod --add-subuids"
        ),
        "{}",
        stderr(&alone)
    );

    // What needs the host's root says so in one line.
    let out = s.run(&["run", "--rm", "--memory", "64m", "debian:minbase", "true"]);
    assert_eq!(code(&out), 125);
    assert_eq!(
        stderr(&out).trim(),
        "layerfs: run debian:minbase: --memory: needs root (an ordinary user's container \
         has no cgroup of its own to limit)"
    );
    assert_nothing_left(&s);
}

#[test]
fn a_rootless_detached_container_takes_exec_and_stop() {
    const T: &str = "a_rootless_detached_container_takes_exec_and_stop";
    let Some(s) = UserStore::new(T) else { return };
    let name = s.ok(&[
        "run",
        "-d",
        "--name",
        "bg",
        "debian:minbase",
        "sh",
        "-c",
        "trap 'exit 3' TERM; echo started; while :; do sleep 0.1; done",
    ]);
    assert_eq!(name, "bg\n");
    // exec from the user's shell, outside the container's namespace: it
    // joins it, and reads the container's passwd through its mount.
    let out = s.ok(&[
        "exec",
        "-u",
        "nobody",
        "bg",
        "sh",
        "-c",
        "id -un; echo x > /tmp/x",
    ]);
    assert_eq!(out, "nobody\n");
    assert_eq!(s.ok(&["exec", "bg", "id", "-u"]), "0\n");
    s.ok(&["stop", "-t", "10", "bg"]);
    let ps = s.ok(&["ps"]);
    assert!(ps.contains("exited (3)"), "{ps}");
    assert!(s.ok(&["logs", "bg"]).starts_with("started\n"));
    s.ok(&["rm", "bg"]);
    // rm -f of a running one (its runtime reached from outside too).
    s.ok(&[
        "run",
        "-d",
        "--name",
        "bg2",
        "debian:minbase",
        "sleep",
        "7102",
    ]);
    s.ok(&["rm", "-f", "bg2"]);
    assert!(!s.ok(&["ps"]).contains("bg2"));
    assert_nothing_left(&s);
}

#[test]
fn rootless_signals_reach_the_command_and_a_killed_run_leaves_nothing() {
    const T: &str = "rootless_signals_reach_the_command_and_a_killed_run_leaves_nothing";
    let Some(s) = UserStore::new(T) else { return };
    // `run` re-enters itself in a user namespace: the process the user
    // started passes SIGTERM on, and its SIGKILL takes the rest with it.
    let script = r#"
        "$L" run --rm debian:minbase sh -c "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done" > term.out &
        P=$!
        until grep -q ready term.out; do sleep 0.05; done
        kill -TERM $P; wait $P; echo "term $?"
        "$L" run --name killed debian:minbase sh -c 'echo ready; exec sleep 7101' > kill.out &
        P=$!
        until grep -q ready kill.out; do sleep 0.05; done
        kill -KILL $P; wait $P; echo "kill $?"
    "#;
    let out = s.user.ok(&s.home, script, None);
    assert_eq!(out, "term 42\nkill 137\n");
    wait_until(
        || processes(&["sleep", "7101"]).is_empty() && processes_of(&s.home.bin).is_empty(),
        "the container to die with the run",
    );
    // The container stays (as after a crash of docker run), and goes with rm.
    assert!(s.ok(&["ps"]).contains("killed"));
    s.ok(&["rm", "killed"]);
    s.ok(&["run", "--rm", "debian:minbase", "true"]);
    assert_nothing_left(&s);
}

/// The run tests' probe of a container's confinement, run by rootless
/// podman (runc, fuse-overlayfs) and by layerfs as the same user.
#[test]
fn rootless_podman_and_layerfs_run_give_the_same_answers() {
    const T: &str = "rootless_podman_and_layerfs_run_give_the_same_answers";
    if !have_tool("podman", T) || !have_tool("fuse-overlayfs", T) {
        return;
    }
    let Some(s) = UserStore::new(T) else { return };
    s.ok(&["save", "debian:minbase", "-o", "image.tar"]);
    s.home
        .file(s.user, "probe.sh", crate::run::PROBE.as_bytes());
    // Podman's own defaults differ from Docker's in three capabilities;
    // this machine's hard limits need its --ulimit (see design.md). Its
    // pause process, which holds its namespace, goes at the end.
    let script = r#"
        export XDG_RUNTIME_DIR="$HOME/run"
        mkdir -m 700 "$XDG_RUNTIME_DIR"
        pod() {
            podman --root "$HOME/podman" --runroot "$XDG_RUNTIME_DIR/podman" \
                --storage-driver overlay --storage-opt overlay.mount_program=/usr/bin/fuse-overlayfs \
                --cgroup-manager cgroupfs --events-backend file --runtime runc "$@"
        }
        pod load -i image.tar > /dev/null &&
        pod run --rm --network none --hostname probe --cap-add MKNOD,NET_RAW,AUDIT_WRITE \
            --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 localhost/debian:minbase \
            sh -c "$(cat probe.sh)" > theirs
        code=$?
        pod rmi -a -f > /dev/null
        kill "$(cat "$XDG_RUNTIME_DIR/libpod/tmp/pause.pid")"
        exit $code
    "#;
    s.user.ok(&s.home, script, None);
    let theirs =
        std::fs::read_to_string(s.home.dir.path().join("theirs")).expect("podman's answers");
    let probe = std::fs::read_to_string(s.home.dir.path().join("probe.sh")).expect("probe");
    let ours = s.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--hostname",
        "probe",
        "debian:minbase",
        "sh",
        "-c",
        &probe,
    ]);
    assert!(
        theirs.contains("Seccomp:\t2") && theirs.contains("uid=0(root)"),
        "{theirs}"
    );
    assert_eq!(theirs, ours, "rootless podman, then layerfs");
    assert_nothing_left(&s);
}

/// The build tests' Dockerfile, built by root and by the user.
#[test]
fn a_rootless_build_gives_the_same_tree_as_roots() {
    const T: &str = "a_rootless_build_gives_the_same_tree_as_roots";
    let Some(s) = UserStore::new(T) else { return };
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    let Some(ctx) = context(&env, T) else {
        return;
    };
    env.ok(&["build", "-t", "app:1", ctx.to_str().unwrap()]);

    // The same context, the user's own.
    let theirs = s.home.dir.path().join("ctx");
    let (ok, _, err) = sh(&format!(
        "cp -a {} {} && chown -R {}:{} {}",
        ctx.display(),
        theirs.display(),
        s.user.uid,
        s.user.gid,
        theirs.display()
    ));
    assert!(ok, "{err}");
    let built = s.ok(&["build", "-t", "app:1", theirs.to_str().unwrap()]);
    assert!(built.contains("Setting up hello"), "dpkg ran: {built}");
    assert_eq!(
        s.ok(&["run", "--rm", "app:1"]),
        "Hello, world!\nhello from layerfs\n/opt/app/work\nappuser\nversion 1\n"
    );

    // Both images, mounted by root, list alike: owners, modes, contents.
    let root_tree = untimed(&tree::listing(&env.mount("app:1", &[]).path));
    let user_tree = untimed(&listing_of(&env, s.root(), "app:1"));
    // dpkg's logs and ldconfig's cache record when and where they were
    // written: only their contents may differ.
    const LOGS: [&str; 3] = [
        "./var/log/dpkg.log",
        "./var/log/alternatives.log",
        "./var/cache/ldconfig/aux-cache",
    ];
    let path = |l: &String| l.split('\t').next().unwrap_or_default().to_string();
    let meta = |l: &String| l.split('\t').take(4).collect::<Vec<_>>().join("\t");
    let mut unexplained = Vec::new();
    for l in user_tree.iter().filter(|l| !root_tree.contains(l)) {
        let p = path(l);
        let log = LOGS.contains(&p.as_str())
            && root_tree.iter().any(|o| path(o) == p && meta(o) == meta(l));
        if !log {
            unexplained.push(format!("+ {l}"));
        }
    }
    for l in root_tree.iter().filter(|l| !user_tree.contains(l)) {
        if !LOGS.contains(&path(l).as_str()) {
            unexplained.push(format!("- {l}"));
        }
    }
    assert!(root_tree.len() > 6000, "{} entries", root_tree.len());
    assert!(
        unexplained.is_empty(),
        "the user's build (+) and root's (-) differ:\n{}",
        unexplained.join("\n")
    );
    eprintln!(
        "rootless build: {} entries, alike but for the contents of {:?}",
        user_tree.len(),
        user_tree
            .iter()
            .filter(|l| !root_tree.contains(l))
            .map(path)
            .collect::<Vec<_>>()
    );
    let ls = s.ok(&["run", "--rm", "app:1", "ls", "-ln", "/opt/app/sub"]);
    assert!(ls.contains("-rw------- 1 1001 1001 8 "), "{ls}");
    assert_nothing_left(&s);
}

/// The tree listing of image `image` of the store at `root`, mounted by
/// root on a directory of `env`.
fn listing_of(env: &Env, root: &Path, image: &str) -> String {
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            unmount_or_detach(&self.0);
        }
    }
    let mnt = env.mkdir("user-image");
    let out = Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .arg("--root")
        .arg(root)
        .args(["mount", image])
        .arg(&mnt)
        .output()
        .expect("layerfs mount");
    assert!(out.status.success(), "mount: {}", stderr(&out));
    let _unmount = Unmount(mnt.clone());
    wait_until(|| is_mounted(&mnt), "the user's image to be mounted");
    tree::listing(&mnt)
}

/// Processes running `bin` ("PID ARGV0").
fn processes_of(bin: &Path) -> Vec<String> {
    let want = bin.as_os_str().as_encoded_bytes();
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let zombie = status.lines().any(|l| l.starts_with("State:\tZ"));
        if cmdline.split(|&b| b == 0).next() == Some(want) && !zombie {
            v.push(format!(
                "{} {}",
                e.file_name().to_string_lossy(),
                bin.display()
            ));
        }
    }
    v
}
