//! Commit of a live (mounted, writable) container: writes into the mount
//! wait for the commit's snapshot only, never for its compression, and the
//! image is the container as it was at the snapshot; the control socket
//! serves several clients, and one that goes silent delays no commit.

use crate::support::tree::{self, assert_same_tree, names};
use crate::support::{Env, Noise, Tar, can_mount};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Long enough for any commit here on a loaded machine: only a hang (the
/// old one-client control socket) gets near it.
const HANG: Duration = Duration::from_secs(180);

fn blob_count(env: &Env) -> usize {
    fs::read_dir(env.root().join("blobs/sha256"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// Waits for `child`; fails the test if it hangs or fails.
fn finish(mut child: Child, what: &str) -> String {
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on another thread; fails the test if it hangs.
fn without_hang(what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("{what} hung"));
}

/// The listing without the lines of `./later` (what the writes change).
fn without_later(listing: &str) -> String {
    listing
        .lines()
        .filter(|l| !l.starts_with("./later"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn a_live_commit_lets_writes_through_while_it_compresses() {
    const T: &str = "a_live_commit_lets_writes_through_while_it_compresses";
    if !can_mount(T) {
        return;
    }
    let env = Env::new();
    let base = Tar::new()
        .dir("etc", 0o755)
        .file("etc/keep", 0o644, b"kept\n")
        .file("etc/gone", 0o644, b"gone\n")
        .finish();
    env.image("live:1", &[base]);
    let m = env.mount_writable("live:1", "live");
    // 256 MiB of incompressible change: gzip takes seconds over it.
    fs::create_dir(m.join("big")).unwrap();
    for i in 0..8u64 {
        fs::write(m.join(&format!("big/f{i}")), Noise::bytes(i, 32 << 20)).unwrap();
    }
    fs::write(m.join("etc/keep"), b"changed\n").unwrap();
    fs::remove_file(m.join("etc/gone")).unwrap();
    fs::create_dir(m.join("later")).unwrap();

    let blobs_before = blob_count(&env);
    let mut commit = env
        .cmd(&["commit", "live", "live:2", "--compression", "gzip"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Writes one after another until the commit ends; noted: those that
    // returned before the commit had stored any blob (its layer comes first).
    let mut early = Vec::new();
    let mut n = 0usize;
    while commit.try_wait().unwrap().is_none() {
        fs::write(m.join(&format!("later/w{n:06}")), format!("{n}\n")).unwrap();
        if blob_count(&env) == blobs_before {
            early.push(n);
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    let id = finish(commit, "commit live");
    assert!(id.starts_with("sha256:"), "commit printed {id:?}");

    let img = env.mount("live:2", &[]);
    let in_image = names(&img.join("later"));
    let k = in_image.len();
    // The snapshot is one moment: the writes before it, none after.
    let want: Vec<String> = (0..k).map(|i| format!("w{i:06}")).collect();
    assert_eq!(
        in_image, want,
        "the image has writes from after its snapshot"
    );
    for i in 0..k {
        let got = fs::read_to_string(img.join(&format!("later/w{i:06}"))).unwrap();
        // The last may have been created, not yet written, at the snapshot.
        assert!(
            got == format!("{i}\n") || (i + 1 == k && got.is_empty()),
            "later/w{i:06} holds {got:?}"
        );
    }
    assert!(
        early.iter().any(|&i| i >= k),
        "every write after the snapshot waited for the whole commit \
         ({n} writes, {k} before the snapshot, {} returned before any blob was stored)",
        early.len()
    );
    assert_same_tree(
        &without_later(&tree::listing(&m.path)),
        &without_later(&tree::listing(&img.path)),
        "the committed image differs from the container ('-' container, '+' image)",
    );
    eprintln!(
        "{n} writes during the commit, {k} before its snapshot, {} after it and before the layer was stored",
        early.iter().filter(|&&i| i >= k).count()
    );
}

#[test]
fn a_silent_control_client_delays_no_commit_and_two_commits_run_at_once() {
    const T: &str = "a_silent_control_client_delays_no_commit_and_two_commits_run_at_once";
    if !can_mount(T) {
        return;
    }
    let env = Env::new();
    let base = Tar::new()
        .dir("d", 0o755)
        .file("d/a", 0o644, b"lower a\n")
        .finish();
    env.image("quiet:1", &[base]);
    let m = env.mount_writable("quiet:1", "quiet");
    fs::write(m.join("d/a"), b"upper a\n").unwrap();
    for i in 0..50 {
        fs::write(m.join(&format!("d/n{i}")), Noise::bytes(i, 64 << 10)).unwrap();
    }
    let want = tree::listing(&m.path);
    let sock = layerfs::container::load(&env.store, "quiet")
        .unwrap()
        .control_socket();

    // Connects and says nothing.
    let _silent = UnixStream::connect(&sock).unwrap();
    let one = env
        .cmd(&["commit", "quiet", "quiet:2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    finish(one, "a commit beside a silent client");

    // Two at once, beside another silent client.
    let _silent2 = UnixStream::connect(&sock).unwrap();
    let spawn = |tag: &str| {
        env.cmd(&["commit", "quiet", tag])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("quiet:3"), spawn("quiet:4"));
    finish(a, "commit quiet:3");
    finish(b, "commit quiet:4");
    for tag in ["quiet:2", "quiet:3", "quiet:4"] {
        let img = env.mount(tag, &[]);
        assert_same_tree(
            &want,
            &tree::listing(&img.path),
            &format!("{tag} differs from the container ('-' container, '+' image)"),
        );
    }

    // A client that freezes and then goes silent is dropped: writes resume.
    let mut frozen = UnixStream::connect(&sock).unwrap();
    writeln!(frozen, "freeze").unwrap();
    let mut line = String::new();
    BufReader::new(frozen.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "frozen");
    let probe = m.join("d/probe");
    without_hang(
        "a write while a silent client holds the freeze",
        move || fs::write(&probe, b"through\n").unwrap(),
    );
    assert_eq!(fs::read(m.join("d/probe")).unwrap(), b"through\n");
    // The dropped client's thaw is not answered `thawed`.
    let _ = writeln!(frozen, "thaw");
    line.clear();
    let _ = BufReader::new(frozen).read_line(&mut line);
    assert_ne!(
        line.trim(),
        "thawed",
        "a dropped client was told its freeze held"
    );
    fs::remove_file(m.join("d/probe")).unwrap();
    env.ok(&["commit", "quiet", "quiet:5"]);
}
