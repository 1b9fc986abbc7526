//! A stress test on a live writable mount of the Debian image: readers
//! (find, tar, sha256sum), writers (untar, rm -r, renames, hard links), an
//! fsx-style checker on a copied-up lower file, commits and gc, all at once
//! for LAYERFS_STRESS_SECS seconds (40 by default, a minute in all; 600 by hand). No worker
//! may see an error, no operation may take over `BOUND` (that catches a
//! stall, it is no speed bar), each commit mounts as the tree the container
//! showed at its moment, and fsck is clean at the end. The figures (ops and
//! latencies per kind) are printed.
//!
//! How a commit is checked exactly while writers run: writers hold the read
//! side of a RwLock for each change they make. Every other commit takes the
//! write side, so nothing changes while it lists every area the writers
//! touch and commits; the image must show exactly that listing. The other
//! commits run beside the writers (the daemon holds their changes for the
//! moment of the read); they are checked on a directory the committer
//! fills just before and nobody touches after, and on lower areas nobody
//! writes. At the end, with every worker stopped, a last commit is compared
//! over the whole tree.

use crate::support::debian::debian3_env;
use crate::support::tree::{self, assert_same_tree};
use crate::support::{Env, Noise, Tar, can_mount};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The longest any one operation may take: a stall or a hang, not slowness
/// (the machine is shared and slow).
const BOUND: Duration = Duration::from_secs(30);
const DEFAULT_SECS: u64 = 40;
/// Seconds between commits.
const COMMIT_EVERY: Duration = Duration::from_secs(3);

/// Lower areas the readers read and nobody writes: a reader must see them
/// exactly as they were before the workers started.
const FIND_AREAS: &[&str] = &["usr/bin", "usr/lib", "etc", "var/lib"];
const TAR_AREAS: &[&str] = &["etc", "usr/bin", "var/lib", "usr/lib/x86_64-linux-gnu"];
const SUM_AREAS: &[&str] = &["usr/bin", "usr/lib/x86_64-linux-gnu", "data"];
/// Lower doc dirs renamed back and forth, with a file inside renamed too.
const DIR_RENAMES: &[&str] = &["coreutils", "findutils", "grep", "sed"];
/// A lower doc dir that files move into and out of.
const MOVES_DIR: &str = "usr/share/doc/diffutils";
/// Lower files (one link each) that get hard links and lose them again.
const LINK_TARGETS: &[&str] = &["usr/sbin/zic", "usr/sbin/groupadd", "usr/sbin/killall5"];
/// The lower file the fsx checker copies up and works on.
const FSX_FILE: &str = "var/cache/debconf/templates.dat";
const FSX_MAX: u64 = 2 << 20;
/// Every area any writer changes: what a paused commit compares.
const CHANGED_AREAS: &[&str] = &["stress", "usr/share/doc", "usr/sbin", "var/cache/debconf"];

#[test]
fn a_live_container_under_stress_commits_exact_images() {
    const T: &str = "a_live_container_under_stress_commits_exact_images";
    let Some((env, _)) = debian3_env(T) else {
        return;
    };
    let secs: u64 = std::env::var("LAYERFS_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECS);
    let seed: u64 = std::env::var("LAYERFS_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("stress: {secs} s, seed {seed} (LAYERFS_STRESS_SECS, LAYERFS_STRESS_SEED)");
    let env = Arc::new(env);
    let m = env.mount_writable("debian:3layer", "stress");
    let refs = Arc::new(References::take(&env, &m.path, seed));

    let sh = Arc::new(Shared {
        mnt: m.path.clone(),
        stop: AtomicBool::new(false),
        pause: RwLock::new(()),
        busy: Mutex::new(Vec::new()),
    });
    let with_refs = |f: fn(&mut Worker, &References) -> Result<(), String>| -> Body {
        let r = refs.clone();
        Box::new(move |w: &mut Worker| f(w, &r))
    };
    let with_env = |f: fn(&mut Worker, &Env) -> Result<(), String>| -> Body {
        let e = env.clone();
        Box::new(move |w: &mut Worker| f(w, &e))
    };
    let bodies: Vec<(&'static str, Body)> = vec![
        ("find", with_refs(find_reader)),
        ("tar", with_refs(tar_reader)),
        ("sha256sum", with_refs(sum_reader)),
        ("untar", with_refs(untar_writer)),
        ("rename", with_refs(rename_writer)),
        ("link", with_refs(link_writer)),
        ("fsx", with_refs(fsx)),
        ("commit", with_env(committer)),
        ("gc", with_env(gc_worker)),
    ];
    let workers: Vec<JoinHandle<Report>> = bodies
        .into_iter()
        .enumerate()
        .map(|(id, (kind, body))| spawn(&sh, id, kind, body))
        .collect();

    // The watchdog: no operation may be in flight longer than BOUND. A hung
    // one fails the test here (the mount guard then detaches the mount).
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !workers.iter().all(|w| w.is_finished()) {
        if Instant::now() >= deadline || workers.iter().any(|w| w.is_finished()) {
            sh.stop.store(true, Ordering::Relaxed);
        }
        if let Some((kind, op, t)) = sh.longest_busy()
            && t > BOUND
        {
            sh.stop.store(true, Ordering::Relaxed);
            let pid = env.daemon_pid(&m.path);
            let waits = waits_of(pid);
            // Killed, the daemon fails the stuck calls: the workers end and
            // the mount goes, rather than a hung test.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::SIGKILL,
            );
            panic!(
                "the {kind} worker is stuck in {op} for {t:?} (bound {BOUND:?}); \
                 the daemon's threads (pid {pid}, now killed) were waiting in: {waits}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let reports: Vec<Report> = workers
        .into_iter()
        .map(|w| w.join().expect("a worker's report"))
        .collect();
    print_figures(&reports);
    let errors: Vec<&String> = reports.iter().filter_map(|r| r.error.as_ref()).collect();
    assert!(errors.is_empty(), "workers failed:\n{errors:#?}");
    let slow: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.ops
                .iter()
                .filter(|(_, d)| d.iter().max().is_some_and(|m| *m > BOUND))
                .map(move |(op, d)| format!("{} {op}: {:?}", r.kind, d.iter().max()))
        })
        .collect();
    assert!(slow.is_empty(), "operations over {BOUND:?}: {slow:?}");
    let commits = reports
        .iter()
        .find(|r| r.kind == "commit")
        .map(|r| {
            r.ops.get("commit-live").map_or(0, Vec::len)
                + r.ops.get("commit-paused").map_or(0, Vec::len)
        })
        .unwrap_or(0);
    assert!(commits >= 2, "only {commits} commits in {secs} s");

    // Everything stopped: the last commit must show the whole tree.
    let want = tree::listing(&m.path);
    env.ok(&["commit", m.path.to_str().expect("utf-8"), "stress:final"]);
    let img = env.mount("stress:final", &[]);
    assert_same_tree(
        &want,
        &tree::listing(&img.path),
        "the final commit differs from the container ('-' container, '+' image)",
    );
    img.unmount();
    m.unmount();
    env.ok(&["gc"]);
    let fsck = env.ok(&["fsck"]);
    assert!(!fsck.contains("damaged"), "fsck: {fsck}");
    eprintln!(
        "stress: {commits} commits checked while running, the final one over the whole tree; {}",
        fsck.trim()
    );
}

/// Where the threads of process `pid` wait in the kernel, counted.
fn waits_of(pid: u32) -> String {
    let mut waits: BTreeMap<String, usize> = BTreeMap::new();
    for t in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let w = fs::read_to_string(t.path().join("wchan")).unwrap_or_default();
        *waits.entry(w).or_default() += 1;
    }
    format!("{waits:?}")
}

/// What a worker does, until the run ends or it fails.
type Body = Box<dyn FnOnce(&mut Worker) -> Result<(), String> + Send>;

/// The operation a worker is in, and since when.
type InFlight = Option<(&'static str, Instant)>;

/// What the workers share.
struct Shared {
    mnt: PathBuf,
    stop: AtomicBool,
    /// Writers hold the read side for each change; a paused commit the write side.
    pause: RwLock<()>,
    /// Per worker: its kind, and the operation it is in since when.
    busy: Mutex<Vec<(&'static str, InFlight)>>,
}

impl Shared {
    /// The operation in flight the longest: (worker kind, op, for how long).
    fn longest_busy(&self) -> Option<(&'static str, &'static str, Duration)> {
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.iter()
            .filter_map(|(kind, b)| b.map(|(op, t)| (*kind, op, t.elapsed())))
            .max_by_key(|(_, _, t)| *t)
    }
}

/// One worker: its kind and the latencies of its operations.
struct Worker {
    id: usize,
    sh: Arc<Shared>,
    ops: BTreeMap<&'static str, Vec<Duration>>,
}

/// What a worker ends with.
struct Report {
    kind: &'static str,
    ops: BTreeMap<&'static str, Vec<Duration>>,
    error: Option<String>,
}

fn spawn(sh: &Arc<Shared>, id: usize, kind: &'static str, body: Body) -> JoinHandle<Report> {
    sh.busy.lock().expect("busy").push((kind, None));
    let sh = sh.clone();
    std::thread::spawn(move || {
        let mut w = Worker {
            id,
            sh,
            ops: BTreeMap::new(),
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut w)));
        let error = match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{kind}: {e}")),
            Err(p) => Some(format!(
                "{kind} panicked: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        };
        // One worker failing ends the run: its error is what counts.
        if error.is_some() {
            w.sh.stop.store(true, Ordering::Relaxed);
        }
        Report {
            kind,
            ops: std::mem::take(&mut w.ops),
            error,
        }
    })
}

impl Worker {
    fn running(&self) -> bool {
        !self.sh.stop.load(Ordering::Relaxed)
    }

    fn mnt(&self, rel: &str) -> PathBuf {
        self.sh.mnt.join(rel)
    }

    /// Runs operation `op`, timed and visible to the watchdog.
    fn op<R>(
        &mut self,
        op: &'static str,
        f: impl FnOnce() -> Result<R, String>,
    ) -> Result<R, String> {
        struct Clear<'a>(&'a Shared, usize);
        impl Drop for Clear<'_> {
            fn drop(&mut self) {
                self.0.busy.lock().unwrap_or_else(|e| e.into_inner())[self.1].1 = None;
            }
        }
        let start = Instant::now();
        self.sh.busy.lock().unwrap_or_else(|e| e.into_inner())[self.id].1 = Some((op, start));
        let r = {
            let _clear = Clear(&self.sh, self.id);
            f()
        };
        self.ops.entry(op).or_default().push(start.elapsed());
        r.map_err(|e| format!("{op}: {e}"))
    }

    /// Runs operation `op`, which changes the tree: not while a commit
    /// pauses the writers (the wait is not part of its time).
    fn change<R>(
        &mut self,
        op: &'static str,
        f: impl FnOnce() -> Result<R, String>,
    ) -> Result<R, String> {
        let sh = self.sh.clone();
        let _g = sh.pause.read().unwrap_or_else(|e| e.into_inner());
        self.op(op, f)
    }

    /// Sleeps up to `d`, less when the run ends.
    fn nap(&self, d: Duration) {
        let end = Instant::now() + d;
        while self.running() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs a command; its stdout, or an error unless it succeeded silently.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stderr.is_empty() {
        return Err(format!("{cmd:?} ({}): {}", out.status, stderr.trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A pipeline (bash, pipefail) with positional arguments $1, $2...
fn pipeline(script: &str, args: &[&Path]) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(format!("set -o pipefail; {script}"))
        .arg("bash")
        .args(args);
    c
}

fn io<T>(what: impl std::fmt::Display, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// What readers and writers check against, taken before they start.
struct References {
    /// Per FIND_AREAS: the sorted `find -printf` lines.
    finds: Vec<String>,
    /// Per TAR_AREAS: the sha256 of `tar -c` of it.
    tars: Vec<String>,
    /// Per SUM_AREAS: a `sha256sum` check file of its regular files.
    sums: Vec<PathBuf>,
    /// The untar writer's tarball.
    tarball: PathBuf,
    /// Per DIR_RENAMES: the content of its copyright file.
    copyrights: Vec<Vec<u8>>,
    moved_file: Vec<u8>,
    link_contents: Vec<Vec<u8>>,
    fsx_start: Vec<u8>,
    /// What the fsx checker's random choices start from.
    seed: u64,
}

const FIND_FORMAT: &str = "%P\\t%y\\t%m\\t%n\\t%s\\t%U:%G\\t%T@\\t%l\\n";

fn find_lines(dir: &Path) -> Result<String, String> {
    let out = run(Command::new("find")
        .arg(dir)
        .arg("-printf")
        .arg(FIND_FORMAT))?;
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    Ok(lines.join("\n"))
}

fn tar_sum(mnt: &Path, area: &str) -> Result<String, String> {
    run(&mut pipeline(
        r#"tar --numeric-owner -cf - -C "$1" "$2" | sha256sum"#,
        &[mnt, Path::new(area)],
    ))
}

impl References {
    fn take(env: &Env, mnt: &Path, seed: u64) -> References {
        let finds = FIND_AREAS
            .iter()
            .map(|a| find_lines(&mnt.join(a)).expect("find"))
            .collect();
        let tars = TAR_AREAS
            .iter()
            .map(|a| tar_sum(mnt, a).expect("tar"))
            .collect();
        let sums = SUM_AREAS
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut files: Vec<String> = fs::read_dir(mnt.join(a))
                    .expect("read_dir")
                    .map(|e| e.expect("entry"))
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .map(|e| format!("{a}/{}", e.file_name().to_string_lossy()))
                    .collect();
                files.sort();
                let out = run(Command::new("sha256sum").args(&files).current_dir(mnt))
                    .expect("sha256sum");
                let p = env.dir.path().join(format!("sums{i}"));
                fs::write(&p, out).expect("write sums");
                p
            })
            .collect();

        let mut t = Tar::new().dir("pkg", 0o755);
        for d in 0..4 {
            t = t.dir(&format!("pkg/d{d}"), 0o750 + d);
            for f in 0..15u64 {
                let size = (f * 2749 + d as u64 * 911) % 40_000;
                let mode = [0o644, 0o600, 0o755][(f % 3) as usize];
                t = t.file(
                    &format!("pkg/d{d}/f{f}"),
                    mode,
                    &Noise::bytes(f + 100 * d as u64, size as usize),
                );
            }
        }
        let t = t
            .symlink("pkg/link", "d0/f1")
            .hardlink("pkg/d1/hard", "pkg/d0/f2")
            .file("pkg/empty", 0o444, b"");
        let tarball = env.dir.path().join("pkg.tar");
        fs::write(&tarball, t.finish()).expect("write the tarball");

        let read = |rel: &str| fs::read(mnt.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let copyrights = DIR_RENAMES
            .iter()
            .map(|d| read(&format!("usr/share/doc/{d}/copyright")))
            .collect();
        let link_contents = LINK_TARGETS
            .iter()
            .map(|t| {
                let n = fs::symlink_metadata(mnt.join(t)).expect("lstat").nlink();
                assert_eq!(n, 1, "{t} has {n} links before the test");
                read(t)
            })
            .collect();
        for d in [
            "stress/untar",
            "stress/ren/a/sub",
            "stress/links",
            "stress/frozen",
        ] {
            fs::create_dir_all(mnt.join(d)).expect("mkdir");
        }
        fs::write(mnt.join("stress/ren/a/one"), b"one\n").expect("write");
        fs::write(mnt.join("stress/ren/a/sub/two"), b"two\n").expect("write");
        fs::write(mnt.join("stress/ren/note"), b"a note that moves\n").expect("write");
        fs::write(
            mnt.join("stress/links/upper"),
            b"an upper file with links\n",
        )
        .expect("write");
        References {
            finds,
            tars,
            sums,
            tarball,
            copyrights,
            moved_file: read(&format!("{MOVES_DIR}/changelog.Debian.gz")),
            link_contents,
            fsx_start: read(FSX_FILE),
            seed,
        }
    }
}

/// `find -printf` walks: the lower areas exactly as before; the whole tree
/// with only entries that vanished under the walk (renames) forgiven, and
/// the loops find's own race makes up (`find_errors`). After each whole
/// walk, no renamed doc dir may have the number of an ancestor.
fn find_reader(w: &mut Worker, r: &References) -> Result<(), String> {
    let mut i = 0;
    while w.running() {
        let k = i % (FIND_AREAS.len() + 1);
        if k < FIND_AREAS.len() {
            let dir = w.mnt(FIND_AREAS[k]);
            let got = w.op("find-area", || find_lines(&dir))?;
            if got != r.finds[k] {
                return Err(format!(
                    "find {} changed:\n{}",
                    FIND_AREAS[k],
                    tree::diff(&r.finds[k], &got)
                ));
            }
        } else {
            let root = w.mnt("");
            w.op("find-all", || {
                let out = Command::new("find")
                    .arg(&root)
                    .args(["-printf", FIND_FORMAT])
                    .env("LC_ALL", "C")
                    .output()
                    .map_err(|e| e.to_string())?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                let other = find_errors(&root, &stderr);
                if !other.is_empty() || (!out.status.success() && stderr.is_empty()) {
                    return Err(format!(
                        "find {} ({}): {other:?}",
                        root.display(),
                        out.status
                    ));
                }
                DIR_RENAMES
                    .iter()
                    .try_for_each(|name| number_clash(&root, &doc_dir(name, false)))
            })?;
        }
        i += 1;
    }
    Ok(())
}

/// The lines of a whole-tree find's stderr that are failures: all but
/// entries that vanished under the walk and the loops of find's own race.
///
/// GNU find 4.9 (its gnulib fts) opens a directory, then stats it again by
/// name. When the directory was renamed or removed in between, that stat
/// fails, fts files the directory under (dev 0, ino 0) in its table of open
/// directories and never takes it out; the next directory whose second stat
/// fails is then "part of the same file system loop" as that stale,
/// already freed entry. The partner find prints is a prefix of the path as
/// long as the freed entry said: the directory itself, '', a cut name, or an
/// ancestor. tmpfs shows each with no layerfs at all, the ancestor form too
/// (an LD_PRELOAD that renames two directories between find's open and its
/// stat, the freed entry reused by a file whose path is as long as the
/// second directory's parent). Newer gnulib stats the open descriptor.
///
/// So the partner tells nothing: a loop is forgiven when its directory is
/// one the writers rename or remove, and the numbers themselves show no
/// loop (`number_clash`); a real clash still fails, whatever find printed.
fn find_errors(root: &Path, stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| !l.ends_with("No such file or directory"))
        .filter_map(|l| {
            let Some(dir) = loop_dir(l) else {
                return Some(l.to_string());
            };
            let Some(rel) = Path::new(&dir)
                .strip_prefix(root)
                .ok()
                .and_then(Path::to_str)
            else {
                return Some(l.to_string());
            };
            if !changes_under_walk(rel) {
                return Some(l.to_string());
            }
            match number_clash(root, rel) {
                Ok(()) => {
                    eprintln!("stress: find's re-stat race, forgiven: {l}");
                    None
                }
                Err(e) => Some(format!("{l} ({e})")),
            }
        })
        .collect()
}

/// The directory of a "File system loop detected" line of GNU find.
fn loop_dir(line: &str) -> Option<String> {
    let unquote = |s: &str| {
        s.trim_matches(|c| matches!(c, '\'' | '‘' | '’' | '`'))
            .to_string()
    };
    line.strip_prefix("find: File system loop detected; ")
        .and_then(|l| l.strip_suffix('.'))
        .and_then(|l| l.split_once(" is part of the same file system loop as "))
        .map(|(d, _)| unquote(d))
}

/// Whether the writers rename or remove directory `rel` (or one above it).
fn changes_under_walk(rel: &str) -> bool {
    rel.starts_with("stress/")
        || DIR_RENAMES.iter().any(|name| {
            [false, true]
                .iter()
                .any(|&moved| rel == doc_dir(name, moved))
        })
}

/// An error when directory `rel` (under each name it takes, for a renamed
/// doc dir) has the (st_dev, st_ino) of one of its ancestors: the loop find
/// would rightly report. A name that is not there now has nothing to say.
fn number_clash(root: &Path, rel: &str) -> Result<(), String> {
    let names: Vec<String> = match DIR_RENAMES
        .iter()
        .find(|name| rel == doc_dir(name, false) || rel == doc_dir(name, true))
    {
        Some(name) => vec![doc_dir(name, false), doc_dir(name, true)],
        None => vec![rel.to_string()],
    };
    let number = |p: &Path| fs::symlink_metadata(p).ok().map(|m| (m.dev(), m.ino()));
    for name in names {
        let Some(mine) = number(&root.join(&name)) else {
            continue;
        };
        let mut up = Path::new(&name).parent();
        while let Some(a) = up {
            if number(&root.join(a)) == Some(mine) {
                return Err(format!(
                    "{name} has the number of its ancestor '{}': {mine:?}",
                    a.display()
                ));
            }
            up = a.parent();
        }
    }
    Ok(())
}

#[test]
fn find_loop_lines_name_their_directory() {
    let m = "/tmp/m/usr/share/doc";
    for (line, dir) in [
        (
            format!(
                "find: File system loop detected; '{m}/sed' is part of the same file system loop as '{m}'."
            ),
            Some(format!("{m}/sed")),
        ),
        (
            format!(
                "find: File system loop detected; \u{2018}{m}/findutils.moved\u{2019} is part of the same file system loop as \u{2018}\u{2019}."
            ),
            Some(format!("{m}/findutils.moved")),
        ),
        (format!("find: '{m}/sed': Permission denied"), None),
    ] {
        assert_eq!(loop_dir(&line), dir, "{line}");
    }
    assert!(changes_under_walk("usr/share/doc/grep.moved"));
    assert!(changes_under_walk("stress/untar/3/etc"));
    assert!(!changes_under_walk("usr/share/doc/other"));
    assert!(!changes_under_walk("usr/share/doc"));
}

/// find's race prints any prefix of the path as the partner, the parent
/// too: forgiven when the numbers show no loop, for directories the
/// writers change only.
#[test]
fn loops_of_finds_race_are_forgiven_whatever_partner_find_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let doc = root.join("usr/share/doc");
    fs::create_dir_all(doc.join("coreutils.moved")).expect("mkdir");
    fs::create_dir_all(doc.join("other")).expect("mkdir");
    let line = |dir: &str, partner: &str| {
        format!(
            "find: File system loop detected; '{}/{dir}' is part of the same file system loop as '{partner}'.",
            doc.display()
        )
    };
    let d = doc.display().to_string();
    let race = [
        line("coreutils.moved", &format!("{d}/coreutils.moved")),
        line("coreutils.moved", ""),
        line("coreutils.moved", &format!("{d}/coreutils.mov")),
        line("coreutils.moved", &d),
        // Renamed back meanwhile: only the other name is there.
        line("coreutils", &d),
        line("grep", &d),
    ]
    .join("\n");
    assert_eq!(find_errors(root, &race), Vec::<String>::new());
    // The whole-tree walk starts at the mount with a trailing slash.
    assert_eq!(find_errors(&root.join(""), &race), Vec::<String>::new());
    let unchanged = line("other", &d);
    assert_eq!(find_errors(root, &unchanged), vec![unchanged.clone()]);
}

/// A real loop (a directory with its parent's number, here by a bind
/// mount) is never forgiven, though the writers change the directory and
/// whatever partner find names.
#[test]
fn a_real_file_system_loop_is_not_forgiven() {
    const T: &str = "a_real_file_system_loop_is_not_forgiven";
    if !can_mount(T) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let (parent, child) = (root.join("stress/ren"), root.join("stress/ren/a"));
    fs::create_dir_all(&child).expect("mkdir");
    let flags = nix::mount::MsFlags::MS_BIND;
    nix::mount::mount(Some(&parent), &child, None::<&str>, flags, None::<&str>)
        .expect("bind mount");
    let out = Command::new("find")
        .arg(root)
        .env("LC_ALL", "C")
        .output()
        .expect("find");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors = find_errors(root, &stderr);
    let _ = nix::mount::umount2(&child, nix::mount::MntFlags::MNT_DETACH);
    assert!(stderr.contains("File system loop detected"), "{stderr}");
    assert!(
        errors.len() == 1 && errors[0].contains("has the number of its ancestor 'stress/ren'"),
        "{errors:?}"
    );
}

/// `tar -c` of lower areas: the same bytes every time.
fn tar_reader(w: &mut Worker, r: &References) -> Result<(), String> {
    let mut i = 0;
    while w.running() {
        let k = i % TAR_AREAS.len();
        let mnt = w.mnt("");
        let got = w.op("tar", || tar_sum(&mnt, TAR_AREAS[k]))?;
        if got != r.tars[k] {
            return Err(format!(
                "tar of {} changed: {got} vs {}",
                TAR_AREAS[k], r.tars[k]
            ));
        }
        i += 1;
    }
    Ok(())
}

/// `sha256sum --check` of lower files.
fn sum_reader(w: &mut Worker, r: &References) -> Result<(), String> {
    let mut i = 0;
    while w.running() {
        let sums = &r.sums[i % r.sums.len()];
        let mnt = w.mnt("");
        w.op("sha256sum", || {
            run(Command::new("sha256sum")
                .args(["--check", "--quiet", "--strict"])
                .arg(sums)
                .current_dir(&mnt))
        })?;
        i += 1;
    }
    Ok(())
}

/// Untars a tarball into a fresh upper dir, compares it with `tar -d`,
/// removes the one from two rounds ago with `rm -r`.
fn untar_writer(w: &mut Worker, r: &References) -> Result<(), String> {
    let mut i = 0u64;
    while w.running() {
        let dir = w.mnt(&format!("stress/untar/{i}"));
        w.change("untar", || {
            io(dir.display(), fs::create_dir(&dir))?;
            run(Command::new("tar")
                .arg("-xpf")
                .arg(&r.tarball)
                .arg("-C")
                .arg(&dir))
        })?;
        // Read only, but the tree must not move under it.
        w.change("tar-compare", || {
            run(Command::new("tar")
                .arg("-df")
                .arg(&r.tarball)
                .arg("-C")
                .arg(&dir))
        })?;
        if i >= 2 {
            let old = w.mnt(&format!("stress/untar/{}", i - 2));
            w.change("rm-r", || run(Command::new("rm").arg("-r").arg(&old)))?;
        }
        i += 1;
    }
    Ok(())
}

/// The path a dir of DIR_RENAMES has now.
fn doc_dir(name: &str, moved: bool) -> String {
    if moved {
        format!("usr/share/doc/{name}.moved")
    } else {
        format!("usr/share/doc/{name}")
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), String> {
    io(
        format!("rename {} {}", from.display(), to.display()),
        fs::rename(from, to),
    )?;
    if fs::symlink_metadata(from).is_ok() {
        return Err(format!(
            "{} is still there after its rename",
            from.display()
        ));
    }
    Ok(())
}

fn check_content(p: &Path, want: &[u8]) -> Result<(), String> {
    let got = io(p.display(), fs::read(p))?;
    if got != want {
        return Err(format!(
            "{}: {} bytes, want {} (other content)",
            p.display(),
            got.len(),
            want.len()
        ));
    }
    Ok(())
}

/// Renames of lower dirs, lower files (in place and out of their dir and
/// back), upper dirs and an upper file into a lower dir and back, each
/// checked by reading what moved.
fn rename_writer(w: &mut Worker, r: &References) -> Result<(), String> {
    let mut dir_moved = vec![false; DIR_RENAMES.len()];
    let mut file_moved = vec![false; DIR_RENAMES.len()];
    let (mut a_is_b, mut note_in, mut cl_out) = (false, false, false);
    let mut i = 0;
    while w.running() {
        let k = (i / 5) % DIR_RENAMES.len();
        match i % 5 {
            0 => {
                let (from, to) = (
                    w.mnt(&doc_dir(DIR_RENAMES[k], dir_moved[k])),
                    w.mnt(&doc_dir(DIR_RENAMES[k], !dir_moved[k])),
                );
                let name = if file_moved[k] {
                    "copyright.renamed"
                } else {
                    "copyright"
                };
                w.change("rename-lower-dir", || {
                    rename(&from, &to)?;
                    check_content(&to.join(name), &r.copyrights[k])
                })?;
                dir_moved[k] = !dir_moved[k];
            }
            1 => {
                let dir = w.mnt(&doc_dir(DIR_RENAMES[k], dir_moved[k]));
                let (a, b) = (dir.join("copyright"), dir.join("copyright.renamed"));
                let (from, to) = if file_moved[k] { (b, a) } else { (a, b) };
                w.change("rename-lower-file", || {
                    rename(&from, &to)?;
                    check_content(&to, &r.copyrights[k])
                })?;
                file_moved[k] = !file_moved[k];
            }
            2 => {
                let (a, b) = (w.mnt("stress/ren/a"), w.mnt("stress/ren/b"));
                let (from, to) = if a_is_b { (b, a) } else { (a, b) };
                w.change("rename-upper-dir", || {
                    rename(&from, &to)?;
                    check_content(&to.join("sub/two"), b"two\n")
                })?;
                a_is_b = !a_is_b;
            }
            3 => {
                let (up, low) = (
                    w.mnt("stress/ren/note"),
                    w.mnt(&format!("{MOVES_DIR}/note")),
                );
                let (from, to) = if note_in { (low, up) } else { (up, low) };
                w.change("rename-upper-file", || {
                    rename(&from, &to)?;
                    check_content(&to, b"a note that moves\n")
                })?;
                note_in = !note_in;
            }
            _ => {
                let (low, up) = (
                    w.mnt(&format!("{MOVES_DIR}/changelog.Debian.gz")),
                    w.mnt("stress/ren/changelog.Debian.gz"),
                );
                let (from, to) = if cl_out { (up, low) } else { (low, up) };
                w.change("rename-lower-file-away", || {
                    rename(&from, &to)?;
                    check_content(&to, &r.moved_file)
                })?;
                cl_out = !cl_out;
            }
        }
        i += 1;
    }
    Ok(())
}

fn nlink(p: &Path) -> Result<u64, String> {
    Ok(io(p.display(), fs::symlink_metadata(p))?.nlink())
}

/// Hard links to lower files and to an upper one, up to three each, then
/// unlinked one by one; the link count is checked after every step.
fn link_writer(w: &mut Worker, r: &References) -> Result<(), String> {
    let upper = b"an upper file with links\n".to_vec();
    let targets: Vec<(String, &[u8])> = LINK_TARGETS
        .iter()
        .zip(&r.link_contents)
        .map(|(t, c)| (t.to_string(), &c[..]))
        .chain([("stress/links/upper".to_string(), &upper[..])])
        .collect();
    let mut round = 0;
    while w.running() {
        let (target, content) = &targets[round % targets.len()];
        let t = w.mnt(target);
        let base = Path::new(target)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let links: Vec<PathBuf> = (0..3)
            .map(|k| w.mnt(&format!("stress/links/{base}.{k}")))
            .collect();
        for (k, l) in links.iter().enumerate() {
            w.change("link", || {
                io(
                    format!("ln {} {}", t.display(), l.display()),
                    fs::hard_link(&t, l),
                )?;
                let (nt, nl) = (nlink(&t)?, nlink(l)?);
                if (nt, nl) != (k as u64 + 2, k as u64 + 2) {
                    return Err(format!(
                        "{target} and its link {k} have {nt} and {nl} links, want {}",
                        k + 2
                    ));
                }
                check_content(l, content)
            })?;
        }
        for (k, l) in links.iter().enumerate() {
            w.change("unlink", || {
                io(l.display(), fs::remove_file(l))?;
                let nt = nlink(&t)?;
                if nt != 3 - k as u64 {
                    return Err(format!(
                        "{target} has {nt} links after unlinking {k}, want {}",
                        3 - k
                    ));
                }
                check_content(&t, content)
            })?;
        }
        round += 1;
    }
    Ok(())
}

/// A random number from `rng`.
fn rand(rng: &mut Noise) -> u64 {
    let mut b = [0u8; 8];
    rng.read_exact(&mut b).expect("noise");
    u64::from_le_bytes(b)
}

/// The first offset where `got` and `want` differ, for a readable failure.
fn first_difference(got: &[u8], want: &[u8]) -> String {
    match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(i) => format!(
            "first difference at {i}: {:#04x}, want {:#04x}",
            got[i], want[i]
        ),
        None => format!("{} bytes, want {}", got.len(), want.len()),
    }
}

/// An fsx-style checker: random writes, truncates, reads, mmap reads and
/// fallocates on a copied-up lower file, every result checked against an
/// in-memory model of the file; fsync, close and reopen now and then.
fn fsx(w: &mut Worker, r: &References) -> Result<(), String> {
    let seed = r.seed;
    use nix::fcntl::{FallocateFlags as F, fallocate};
    let path = w.mnt(FSX_FILE);
    let mut model = r.fsx_start.clone();
    let mut rng = Noise::new(seed);
    let open = |p: &Path| {
        io(
            p.display(),
            fs::OpenOptions::new().read(true).write(true).open(p),
        )
    };
    let mut file = w.change("fsx-open", || open(&path))?;
    let mut n = 0u64;
    while w.running() {
        let op = rand(&mut rng) % 10;
        let off = rand(&mut rng) % FSX_MAX;
        let len = (1 + rand(&mut rng) % (64 << 10)).min(FSX_MAX - off);
        let size = model.len() as u64;
        let what = format!("fsx op {n} (seed {seed})");
        match op {
            0..=2 => {
                let data = Noise::bytes(rand(&mut rng), len as usize);
                w.change("fsx-write", || io(&what, file.write_all_at(&data, off)))?;
                let end = (off + len) as usize;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
            }
            3 => {
                // Bias towards sizes near the middle so the file neither
                // empties nor fills for long.
                let to = off / 2 + rand(&mut rng) % (FSX_MAX / 2);
                w.change("fsx-truncate", || io(&what, file.set_len(to)))?;
                model.resize(to as usize, 0);
            }
            4..=5 => {
                let off = if size == 0 { 0 } else { off % size };
                let want = &model[off as usize..(off + len).min(size) as usize];
                let mut got = vec![0u8; want.len()];
                w.op("fsx-read", || io(&what, file.read_exact_at(&mut got, off)))?;
                if got != want {
                    return Err(format!(
                        "{what}: read {len} at {off}: {}",
                        first_difference(&got, want)
                    ));
                }
            }
            6..=7 if size > 0 => {
                let off = off % size;
                let end = (off + len).min(size) as usize;
                let got = w.op("fsx-mmap-read", || {
                    // SAFETY: the map is read only; the file changes only
                    // from this thread, which does not write while it reads.
                    let map = io(&what, unsafe { memmap2::Mmap::map(&file) })?;
                    if map.len() as u64 != size {
                        return Err(format!("{what}: a map of {} bytes, want {size}", map.len()));
                    }
                    Ok(map[off as usize..end].to_vec())
                })?;
                let want = &model[off as usize..end];
                if got != want {
                    return Err(format!(
                        "{what}: mmap read at {off}: {}",
                        first_difference(&got, want)
                    ));
                }
            }
            _ => {
                let modes = [
                    F::empty(),
                    F::FALLOC_FL_KEEP_SIZE,
                    F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_KEEP_SIZE,
                    F::FALLOC_FL_ZERO_RANGE,
                ];
                let mode = modes[(rand(&mut rng) % 4) as usize];
                w.change("fsx-fallocate", || {
                    io(
                        &what,
                        fallocate(&file, mode, off as i64, len as i64)
                            .map_err(std::io::Error::from),
                    )
                })?;
                let end = (off + len) as usize;
                if mode.contains(F::FALLOC_FL_PUNCH_HOLE) {
                    let end = end.min(model.len());
                    if (off as usize) < end {
                        model[off as usize..end].fill(0);
                    }
                } else if mode == F::FALLOC_FL_ZERO_RANGE {
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[off as usize..end].fill(0);
                } else if mode.is_empty() && model.len() < end {
                    model.resize(end, 0);
                }
            }
        }
        let got = w.op("fsx-stat", || Ok(io(&what, file.metadata())?.len()))?;
        if got != model.len() as u64 {
            return Err(format!(
                "{what} (op {op}): size {got}, want {}",
                model.len()
            ));
        }
        n += 1;
        if n.is_multiple_of(50) {
            let got = w.op("fsx-read-all", || io(&what, fs::read(&path)))?;
            if got != model {
                return Err(format!(
                    "{what}: the whole file: {}",
                    first_difference(&got, &model)
                ));
            }
        }
        if n.is_multiple_of(100) {
            w.change("fsx-fsync", || io(&what, file.sync_all()))?;
        }
        if n.is_multiple_of(250) {
            drop(file);
            file = w.change("fsx-open", || open(&path))?;
        }
    }
    let got = w.op("fsx-read-all", || io("fsx at the end", fs::read(&path)))?;
    if got != model {
        return Err(format!(
            "fsx at the end: {}",
            first_difference(&got, &model)
        ));
    }
    Ok(())
}

/// The listings of `areas` under `root`, one after the other, each line's
/// path starting with its area.
fn listings(root: &Path, areas: &[&str]) -> String {
    let mut out = String::new();
    for a in areas {
        for line in tree::listing(&root.join(a)).lines() {
            out.push_str(a);
            out.push_str(line.strip_prefix('.').unwrap_or(line));
            out.push('\n');
        }
    }
    out
}

/// Commits the live container every few seconds: paused commits compare
/// every area writers change, live ones a directory made just before and
/// lower areas nobody writes. Keeps the last two images for gc to free the
/// others.
fn committer(w: &mut Worker, env: &Env) -> Result<(), String> {
    let mnt = w.mnt("");
    let mnt_arg = mnt.to_str().ok_or("a utf-8 mountpoint")?.to_string();
    let mut i = 0u64;
    loop {
        w.nap(COMMIT_EVERY);
        if !w.running() {
            return Ok(());
        }
        let tag = format!("stress:{i}");
        let commit = |w: &mut Worker, op| {
            w.op(op, || {
                let out = env.run(&["commit", &mnt_arg, &tag]);
                if !out.status.success() {
                    return Err(String::from_utf8_lossy(&out.stderr).into_owned());
                }
                Ok(())
            })
        };
        let (areas, want): (&[&str], String) = if i.is_multiple_of(2) {
            let sh = w.sh.clone();
            let _g = sh.pause.write().unwrap_or_else(|e| e.into_inner());
            let want = w.op("list-paused", || Ok(listings(&mnt, CHANGED_AREAS)))?;
            commit(w, "commit-paused")?;
            (CHANGED_AREAS, want)
        } else {
            let dir = mnt.join(format!("stress/frozen/{i}"));
            w.op("fill-frozen", || fill_frozen(&dir, i))?;
            if i >= 9 {
                let old = mnt.join(format!("stress/frozen/{}", i - 8));
                w.op("rm-r-frozen", || {
                    run(Command::new("rm").arg("-r").arg(&old))
                })?;
            }
            let areas: &[&str] = &["stress/frozen", "etc"];
            let want = w.op("list-frozen", || Ok(listings(&mnt, areas)))?;
            commit(w, "commit-live")?;
            (areas, want)
        };
        let img = w.op("mount-image", || Ok(env.mount(&tag, &[])))?;
        let got = w.op("list-image", || Ok(listings(&img.path, areas)))?;
        if got != want {
            return Err(format!(
                "{tag} differs from the container at its commit ('-' container, '+' image):\n{}",
                tree::diff(&want, &got)
            ));
        }
        w.op("umount-image", || {
            img.unmount();
            Ok(())
        })?;
        if i >= 2 {
            let old = format!("stress:{}", i - 2);
            w.op("rmi", || {
                let out = env.run(&["rmi", &old]);
                if !out.status.success() {
                    return Err(String::from_utf8_lossy(&out.stderr).into_owned());
                }
                Ok(())
            })?;
        }
        i += 1;
    }
}

/// A small tree of every kind the committer owns: files, a hard link, a
/// symlink, a renamed file, a subdir, odd modes.
fn fill_frozen(dir: &Path, seed: u64) -> Result<(), String> {
    io(dir.display(), fs::create_dir_all(dir.join("sub")))?;
    for f in 0..6u64 {
        let p = dir.join(format!("f{f}"));
        io(
            p.display(),
            fs::write(&p, Noise::bytes(seed + f, (f * 7001) as usize)),
        )?;
    }
    let p = dir.join("sub/deep");
    io(p.display(), fs::write(&p, b"deep\n"))?;
    io("ln", fs::hard_link(dir.join("f1"), dir.join("sub/f1-link")))?;
    io(
        "symlink",
        std::os::unix::fs::symlink("../f2", dir.join("sub/link")),
    )?;
    io(
        "rename",
        fs::rename(dir.join("f3"), dir.join("sub/f3-moved")),
    )?;
    use std::os::unix::fs::PermissionsExt;
    io(
        "chmod",
        fs::set_permissions(dir.join("f4"), fs::Permissions::from_mode(0o4750)),
    )?;
    io("remove", fs::remove_file(dir.join("f5")))
}

/// `layerfs gc` every second, `layerfs fsck` every fifth time.
fn gc_worker(w: &mut Worker, env: &Env) -> Result<(), String> {
    let mut i = 0;
    while w.running() {
        let args: &[&str] = if i % 5 == 4 { &["fsck"] } else { &["gc"] };
        w.op(if i % 5 == 4 { "fsck" } else { "gc" }, || {
            let out = env.run(args);
            if !out.status.success() {
                return Err(format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(())
        })?;
        w.nap(Duration::from_secs(1));
        i += 1;
    }
    Ok(())
}

/// Prints, per worker and operation: count, p99 and max latency.
fn print_figures(reports: &[Report]) {
    eprintln!(
        "{:<10} {:<24} {:>7} {:>10} {:>10}",
        "worker", "operation", "count", "p99 ms", "max ms"
    );
    for r in reports {
        for (op, d) in &r.ops {
            let mut d = d.clone();
            d.sort_unstable();
            let p99 = d[(d.len() * 99 / 100).min(d.len() - 1)];
            let max = d[d.len() - 1];
            eprintln!(
                "{:<10} {:<24} {:>7} {:>10.1} {:>10.1}",
                r.kind,
                op,
                d.len(),
                p99.as_secs_f64() * 1000.0,
                max.as_secs_f64() * 1000.0
            );
        }
    }
}

/// What the stress test found, made deterministic: a directory handle
/// opened before a change lists (readdirplus) the names it had then, and
/// each stale name it hands the kernel must not become the path of the
/// inode that has since moved on.
fn stale_handle_image(env: &Env) {
    let t = Tar::new()
        .dir("bin", 0o755)
        .file("bin/tool", 0o755, &lower_tool())
        .dir("work", 0o755)
        .finish();
    env.image("stale:1", &[t]);
}

fn lower_tool() -> Vec<u8> {
    Noise::bytes(7, 60_000)
}

#[test]
fn a_directory_listed_on_a_handle_opened_before_a_rename_stays_readable() {
    const T: &str = "a_directory_listed_on_a_handle_opened_before_a_rename_stays_readable";
    if !can_mount(T) {
        return;
    }
    let env = Env::new();
    stale_handle_image(&env);
    let m = env.mount_writable("stale:1", "stale-rename");
    fs::create_dir_all(m.join("work/a/sub")).unwrap();
    fs::write(m.join("work/a/sub/two"), b"two\n").unwrap();
    let handle = fs::read_dir(m.join("work")).unwrap();
    fs::rename(m.join("work/a"), m.join("work/b")).unwrap();
    let names: Vec<_> = handle.map(|e| e.map(|e| e.file_name())).collect();
    assert_eq!(
        fs::read(m.join("work/b/sub/two")).ok(),
        Some(b"two\n".to_vec()),
        "listed: {names:?}"
    );
}

#[test]
fn a_lower_file_survives_a_listing_of_its_unlinked_hard_link() {
    const T: &str = "a_lower_file_survives_a_listing_of_its_unlinked_hard_link";
    if !can_mount(T) {
        return;
    }
    let env = Env::new();
    stale_handle_image(&env);
    let m = env.mount_writable("stale:1", "stale-link");
    fs::create_dir(m.join("new")).unwrap();
    fs::hard_link(m.join("bin/tool"), m.join("new/tool-link")).unwrap();
    let handle = fs::read_dir(m.join("new")).unwrap();
    fs::remove_file(m.join("new/tool-link")).unwrap();
    let names: Vec<_> = handle.map(|e| e.map(|e| e.file_name())).collect();
    let tool = m.join("bin/tool");
    let size = fs::symlink_metadata(&tool).map(|md| md.len());
    assert_eq!(
        size.ok(),
        Some(lower_tool().len() as u64),
        "stat bin/tool; listed: {names:?}"
    );
    assert_eq!(fs::read(&tool).ok(), Some(lower_tool()), "read bin/tool");
}

/// Whether process `pid` waits for a file lock (a "->" line of /proc/locks).
fn waits_for_a_lock(pid: u32) -> bool {
    let locks = fs::read_to_string("/proc/locks").unwrap_or_default();
    let pid = pid.to_string();
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"->") && f.contains(&pid.as_str())
    })
}

/// Found by the stress test: fsck beside gc reported the blobs gc removed
/// under it as damaged (exit 1). It waits for gc now, as writers do.
#[test]
fn fsck_waits_for_gc_rather_than_report_what_gc_removes() {
    let env = Env::new();
    env.image("fsck:1", &[Tar::new().file("f", 0o644, b"x\n").finish()]);
    let gc = env
        .store
        .lock_exclusive()
        .expect("the store lock, as gc takes it");
    let mut fsck = env
        .cmd(&["fsck"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start fsck");
    let mut ended = None;
    crate::support::wait_until(
        || {
            ended = fsck.try_wait().expect("fsck status");
            ended.is_some() || waits_for_a_lock(fsck.id())
        },
        "fsck to wait for the store lock",
    );
    assert!(
        ended.is_none(),
        "fsck ran ({ended:?}) while gc held the store"
    );
    drop(gc);
    let out = fsck.wait_with_output().expect("fsck");
    assert!(
        out.status.success(),
        "fsck: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Found by the stress test: a mount beside gc failed ("holds/mount-...json:
/// No such file or directory") when gc removed the temp file of its hold
/// record as one a crash left. Such records are written under the store
/// lock now, so gc waits for them.
#[test]
fn a_hold_written_beside_gc_waits_for_it() {
    let env = Env::new();
    let gc = env
        .store
        .lock_exclusive()
        .expect("the store lock, as gc takes it");
    let store = layerfs::store::Store::open(&env.root()).expect("store");
    let writer = std::thread::spawn(move || {
        store.add_hold(&layerfs::store::Hold {
            id: "mount-stress".into(),
            manifests: vec![layerfs::oci::Digest::from_hex(&"ab".repeat(32)).expect("digest")],
            what: "a mount beside gc".into(),
            pid: None,
        })
    });
    crate::support::wait_until(
        || writer.is_finished() || waits_for_a_lock(std::process::id()),
        "the hold to wait for the store lock",
    );
    assert!(
        !writer.is_finished(),
        "a hold was written while gc held the store"
    );
    drop(gc);
    writer.join().expect("writer").expect("add_hold");
    let holds = env.store.holds().expect("holds");
    assert_eq!(holds.len(), 1, "{holds:?}");
}
