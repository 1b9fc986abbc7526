//! The decoded-file cache (`--file-cache`): lower files executed, opened
//! again or read through are decoded once into the store's layerfs/cache and
//! passed through to the kernel. What a user sees must not change: the same
//! bytes (also after eviction), the upper copy after a write, programs that
//! run, and the bounds in `layerfs mounts`.

use crate::support::debian::{ChrootBinds, chroot, debian3_env};
use crate::support::{Env, Noise, Tar, can_mount, gzip};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

const KIB: usize = 1024;

fn cache_files(env: &Env) -> Vec<(String, u64)> {
    let dir = env.root().join("layerfs/cache");
    let mut v: Vec<(String, u64)> = fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| {
                    let len = e.metadata().map_or(0, |m| m.len());
                    (e.file_name().to_string_lossy().into_owned(), len)
                })
                .filter(|(n, _)| !n.starts_with("tmp-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Three 600 KiB files, a hard link to the first, and a small one.
fn big_files_image(env: &Env) -> Vec<Vec<u8>> {
    let files: Vec<Vec<u8>> = (1..=3).map(|s| Noise::bytes(s, 600 * KIB)).collect();
    let layer = Tar::new()
        .file("a", 0o644, &files[0])
        .file("b", 0o755, &files[1])
        .file("c", 0o600, &files[2])
        .hardlink("a-link", "a")
        .file("small", 0o644, b"small")
        .finish();
    env.image("big:1", &[gzip(&layer)]);
    files
}

fn read_twice(p: &Path) -> Vec<u8> {
    let first = fs::read(p).unwrap();
    let second = fs::read(p).unwrap();
    assert_eq!(first, second, "{}", p.display());
    second
}

#[test]
fn cached_files_read_the_same_bytes_before_and_after_eviction() {
    if !can_mount("cached_files_read_the_same_bytes_before_and_after_eviction") {
        return;
    }
    let env = Env::new();
    let files = big_files_image(&env);
    // Room for one of the three files only.
    let m = env.mount("big:1", &["--file-cache", "1"]);
    for round in 0..2 {
        for (name, want) in ["a", "b", "c"].iter().zip(&files) {
            assert_eq!(&read_twice(&m.join(name)), want, "{name}, round {round}");
            let cached = cache_files(&env);
            assert!(
                cached.iter().map(|(_, l)| l).sum::<u64>() <= 1 << 20,
                "the bound holds: {cached:?}"
            );
        }
    }
    assert_eq!(
        cache_files(&env).len(),
        1,
        "the last file read again is cached, the others were evicted"
    );
    // A hard link shares its target's cache file.
    assert_eq!(read_twice(&m.join("a-link")), files[0]);
    assert_eq!(read_twice(&m.join("a")), files[0]);
    let cached = cache_files(&env);
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert_eq!(cached[0].1, 600 * KIB as u64);
    // Small files stay in the daemon; modes are the image's.
    assert_eq!(read_twice(&m.join("small")), b"small");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(m.join("b")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(fs::metadata(m.join("c")).unwrap().mode() & 0o7777, 0o600);
    // mmap and partial reads of a cached file.
    let mut f = fs::File::open(m.join("a")).unwrap();
    f.seek(SeekFrom::Start(300 * KIB as u64)).unwrap();
    let mut buf = vec![0; 4096];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, files[0][300 * KIB..300 * KIB + 4096]);
    let (ok, out, err) = crate::support::sh(&format!(
        "python3 -c 'import mmap,sys; f=open(sys.argv[1],\"rb\"); m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ); print(len(m), m[599*1024:599*1024+4].hex())' {}",
        m.join("a").display()
    ));
    assert!(ok, "{err}");
    let tail: String = files[0][599 * KIB..599 * KIB + 4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(out.trim(), format!("{} {tail}", 600 * KIB));
}

#[test]
fn a_file_read_through_once_is_cached_for_the_next_open() {
    if !can_mount("a_file_read_through_once_is_cached_for_the_next_open") {
        return;
    }
    let env = Env::new();
    let files = big_files_image(&env);
    let m = env.mount("big:1", &["--file-cache", "64"]);
    assert_eq!(fs::read(m.join("b")).unwrap(), files[1]);
    assert_eq!(cache_files(&env).len(), 1, "the reads made the cache file");
    assert_eq!(fs::read(m.join("b")).unwrap(), files[1]);
    // Reading only part of a file caches nothing of it.
    let mut part = vec![0; 4096];
    fs::File::open(m.join("c"))
        .unwrap()
        .read_exact(&mut part)
        .unwrap();
    assert_eq!(part, files[2][..4096]);
    assert_eq!(cache_files(&env).len(), 1);
}

#[test]
fn a_writable_mount_refuses_the_file_cache_and_writes_as_ever() {
    if !can_mount("a_writable_mount_refuses_the_file_cache_and_writes_as_ever") {
        return;
    }
    let env = Env::new();
    let files = big_files_image(&env);
    // The kernel allows one backing file per inode: a file passed through
    // from its cache file could not be opened for writing meanwhile.
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().display().to_string();
    let out = env.run(&[
        "mount",
        "--writable",
        "--file-cache",
        "64",
        "big:1",
        &dir_arg,
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--file-cache serves read-only mounts only"),
        "{err}"
    );
    // Without it, a reader keeps its open while a writer appends.
    let m = env.mount("big:1", &["--writable"]);
    let mut reader = fs::File::open(m.join("a")).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(m.join("a"))
        .unwrap()
        .write_all(b"appended")
        .unwrap();
    let mut old = Vec::new();
    reader.read_to_end(&mut old).unwrap();
    let mut want = files[0].clone();
    want.extend_from_slice(b"appended");
    assert_eq!(fs::read(m.join("a")).unwrap(), want);
    assert_eq!(fs::read(m.join("a-link")).unwrap(), want);
    assert!(cache_files(&env).is_empty());
}

#[test]
fn mounts_shows_the_cache_bounds() {
    if !can_mount("mounts_shows_the_cache_bounds") {
        return;
    }
    let env = Env::new();
    big_files_image(&env);
    let ro = env.mount("big:1", &[]);
    let cached = env.mount("big:1", &["--file-cache", "200", "--cache-size", "8"]);
    let table = env.ok(&["mounts"]);
    let line = |p: &Path| {
        table
            .lines()
            .find(|l| l.contains(&p.display().to_string()))
            .unwrap_or_else(|| panic!("{} in {table}", p.display()))
            .to_string()
    };
    assert!(line(&ro.path).contains("mem 32M disk off"), "{table}");
    assert!(line(&cached.path).contains("mem 8M disk 200M"), "{table}");
}

#[test]
fn a_cached_program_runs_in_a_chroot() {
    const T: &str = "a_cached_program_runs_in_a_chroot";
    let Some((env, _)) = debian3_env(T) else {
        return;
    };
    let m = env.mount("debian:3layer", &["--file-cache", "256"]);
    let _binds = ChrootBinds::new(&m.path);
    for _ in 0..3 {
        let (ok, out, err) = chroot(&m.path, "/bin/ls / && /bin/bash -c 'echo $((6*7))'");
        assert!(ok, "{err}");
        assert!(out.contains("usr\n") && out.ends_with("42\n"), "{out}");
    }
    let cached = cache_files(&env);
    assert!(
        cached.len() >= 3,
        "ls, bash and their libraries are cached: {cached:?}"
    );
    let (ok, out, err) = chroot(&m.path, "dpkg -l | grep -c '^ii'");
    assert!(ok, "{err}");
    assert!(out.trim().parse::<usize>().unwrap() > 50);
}
