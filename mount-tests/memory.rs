//! The daemon's memory: beyond the decoded spans its cache holds (bounded by
//! `--cache-size`), it keeps little, however many threads read at once.

use crate::support::{Env, Tar, can_mount, gzip, wait_until};
use std::io::Read;

/// Served bytes and what the cache holds, once the daemon has published
/// counters with at least `served` bytes served.
fn stats_after(env: &Env, served: u64) -> (u64, u64) {
    let mut got = None;
    wait_until(
        || {
            let out = env.ok(&["mounts", "--format", "json"]);
            let rows: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            let s = &rows[0]["ReadStats"];
            got = s["served"]
                .as_u64()
                .zip(s["cached"].as_u64())
                .filter(|(n, _)| *n >= served);
            got.is_some()
        },
        "ReadStats counting every byte read",
    );
    got.unwrap()
}

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn after_reads_on_many_threads_the_daemon_holds_little_beyond_its_cache() {
    if !can_mount("after_reads_on_many_threads_the_daemon_holds_little_beyond_its_cache") {
        return;
    }
    let env = Env::new();
    // Noise keeps gzip's checkpoints dense: spans of 256 KiB and up.
    let (files, size) = (32u64, 3u64 << 20);
    let mut tar = Tar::new();
    for i in 0..files {
        tar = tar.big(&format!("f{i}"), size, i + 1);
    }
    env.image("mem:1", &[gzip(&tar.finish())]);
    let m = env.mount("mem:1", &["--cache-size", "8"]);
    std::thread::scope(|s| {
        for k in 0..4 {
            let m = &m;
            s.spawn(move || {
                let mut buf = vec![0u8; 128 << 10];
                for i in (k..files).step_by(4) {
                    let mut f = std::fs::File::open(m.join(&format!("f{i}"))).unwrap();
                    let mut n = 0;
                    loop {
                        match f.read(&mut buf).unwrap() {
                            0 => break,
                            r => n += r as u64,
                        }
                    }
                    assert_eq!(n, size, "f{i}");
                }
            });
        }
    });
    let (_, cached) = stats_after(&env, files * size);
    let pid = env.daemon_pid(&m.path);
    // What the daemon holds besides the spans: its tables, the FUSE
    // buffers, a decoder per layer. What the reads freed must not stay
    // behind in per-thread malloc arenas once they pause.
    let beyond = || (status_kib(pid, "RssAnon") << 10).saturating_sub(cached);
    let mut last = 0;
    wait_until(
        || {
            last = beyond();
            last <= 4 << 20
        },
        "the daemon's memory beyond its cache to fall under 4 MiB",
    );
    eprintln!("{last} bytes beyond the {cached} bytes of spans cached");
}
