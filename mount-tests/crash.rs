//! Crashes: kill -9 of a writable mount's daemon in the middle of writes
//! loses no file that was fsynced, and kill -9 of `layerfs commit` at
//! random moments leaves no half image, a clean store and the container as
//! it was (still writable when it is mounted), and a later commit works.

use crate::support::tree::{self, assert_same_tree};
use crate::support::{Env, Noise, Tar, can_mount};
use std::fs;
use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const LOWER_FILES: usize = 40;

fn lower_content(i: usize) -> Vec<u8> {
    format!("lower file {i}\n").repeat(1000).into_bytes()
}

/// A layer of `LOWER_FILES` files to copy up, in a directory to write beside.
fn crash_image(env: &Env, name: &str) {
    let mut t = Tar::new().dir("lower", 0o755).dir("new", 0o755);
    for i in 0..LOWER_FILES {
        t = t.file(&format!("lower/f{i}"), 0o644, &lower_content(i));
    }
    env.image(name, &[t.finish()]);
}

/// What the writer finished: (path, full content) of each file it fsynced.
type Done = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Creates new files and appends to lower ones (a copy-up), fsyncing each
/// before recording it, until a call fails (the daemon is gone).
fn writer(root: std::path::PathBuf, done: Done) -> std::io::Error {
    for i in 0usize.. {
        let r = if i % 3 == 2 && i / 3 < LOWER_FILES {
            let rel = format!("lower/f{}", i / 3);
            let line = format!("appended by the writer, step {i}\n");
            fs::OpenOptions::new()
                .append(true)
                .open(root.join(&rel))
                .and_then(|mut f| f.write_all(line.as_bytes()).and_then(|()| f.sync_all()))
                .map(|()| {
                    let mut want = lower_content(i / 3);
                    want.extend_from_slice(line.as_bytes());
                    (rel, want)
                })
        } else {
            let rel = format!("new/w{i}");
            let data = Noise::bytes(i as u64, 4096 + (i * 7919) % 200_000);
            fs::File::create(root.join(&rel))
                .and_then(|mut f| {
                    for chunk in data.chunks(16 << 10) {
                        f.write_all(chunk)?;
                    }
                    f.sync_all()
                })
                .map(|()| (rel, data))
        };
        match r {
            Ok(entry) => done.lock().unwrap().push(entry),
            Err(e) => return e,
        }
    }
    unreachable!()
}

#[test]
fn a_killed_daemon_loses_no_fsynced_file() {
    const T: &str = "a_killed_daemon_loses_no_fsynced_file";
    if !can_mount(T) {
        return;
    }
    let env = Env::new();
    crash_image(&env, "crash:1");
    let m = env.mount_writable("crash:1", "crash");
    let pid = env.daemon_pid(&m.path);
    let done: Done = Arc::default();
    let w = {
        let (root, done) = (m.path.clone(), done.clone());
        std::thread::spawn(move || writer(root, done))
    };
    let start = Instant::now();
    while done.lock().unwrap().len() < 60 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the writer is stuck"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    let err = w.join().unwrap();
    // A request in flight is aborted; later ones find no daemon.
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ECONNABORTED) | Some(libc::ENOTCONN)
        ),
        "the writer saw {err} after the kill"
    );
    let done = done.lock().unwrap().clone();
    // The dead mount goes with umount; the container mounts again.
    m.unmount();
    let again = env.mount_container("crash");
    for (rel, want) in &done {
        let got = fs::read(again.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(
            got == *want,
            "{rel}: {} bytes, want {} (fsynced before the kill)",
            got.len(),
            want.len()
        );
    }
    // And it still works: write, read back.
    fs::write(again.join("new/after"), b"after the crash\n").unwrap();
    assert_eq!(
        fs::read(again.join("new/after")).unwrap(),
        b"after the crash\n"
    );
    eprintln!("{} files fsynced before the kill, all intact", done.len());
}

/// Runs `f` on another thread; fails the test if it takes over `secs`.
fn within<R: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what} did not finish in {secs} s"))
}

#[test]
fn a_killed_commit_leaves_no_half_image_and_the_container_intact() {
    const T: &str = "a_killed_commit_leaves_no_half_image_and_the_container_intact";
    if !can_mount(T) {
        return;
    }
    let env = Env::new();
    crash_image(&env, "crash:1");
    let m = env.mount_writable("crash:1", "big");
    // A large change (incompressible, so gzip takes a while), with deletes
    // and copy-ups beside it.
    for i in 0..48u64 {
        fs::write(m.join(&format!("new/big{i}")), Noise::bytes(i, 1 << 20)).unwrap();
    }
    for i in 0..LOWER_FILES / 2 {
        fs::OpenOptions::new()
            .append(true)
            .open(m.join(&format!("lower/f{i}")))
            .unwrap()
            .write_all(b"changed\n")
            .unwrap();
    }
    fs::remove_file(m.join("lower/f39")).unwrap();
    let before = tree::listing(&m.path);
    // How long a whole commit takes, to kill within it.
    let t0 = Instant::now();
    env.ok(&["commit", "big", "crash:timed"]);
    let full = t0.elapsed();
    let images = env.images();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    eprintln!("a whole commit takes {full:?}; kill delays from seed {seed}");
    let mut rng = Noise::new(seed);
    let mut killed = 0;
    for round in 0..20 {
        if killed == 5 {
            break;
        }
        let mut b = [0u8; 8];
        std::io::Read::read_exact(&mut rng, &mut b).unwrap();
        let delay = Duration::from_micros(u64::from_le_bytes(b) % full.as_micros().max(1) as u64);
        let tag = format!("crash:killed{round}");
        let mut child = env
            .cmd(&["commit", "big", &tag])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        eprintln!("round {round}: killed after {delay:?} ({status})");
        if status.success() {
            // It finished first (the machine is shared): a whole image, then.
            let img = env.mount(&tag, &[]);
            assert_same_tree(
                &before,
                &tree::listing(&img.path),
                &format!("{tag} is not whole ('-' container, '+' image)"),
            );
            drop(img);
            env.ok(&["rmi", &tag]);
        } else {
            killed += 1;
        }
        assert_eq!(env.images(), images, "round {round}: the images changed");
        env.ok(&["fsck"]);
        // The daemon thawed: a change goes through, and is undone.
        let probe = m.join("probe");
        within(20, "a write after the killed commit", move || {
            fs::write(&probe, b"x").unwrap();
            fs::remove_file(&probe).unwrap();
        });
        assert_same_tree(
            &before,
            &tree::listing(&m.path),
            &format!("round {round}: the container changed ('-' before, '+' now)"),
        );
    }
    assert_eq!(
        killed, 5,
        "too few commits were killed before they finished"
    );
    // gc removes what the killed commits left, and nothing an image needs.
    env.ok(&["gc"]);
    env.ok(&["fsck"]);
    assert_eq!(env.images(), images);
    env.ok(&["commit", "big", "crash:after"]);
    let img = env.mount("crash:after", &[]);
    assert_same_tree(
        &before,
        &tree::listing(&img.path),
        "crash:after differs from the container ('-' container, '+' image)",
    );
}
