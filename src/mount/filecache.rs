//! The decoded-file cache: lower files that are read repeatedly, executed
//! or read whole are decoded once into a plain file under the store
//! (`layerfs/cache/<diff_id>-<data offset>-<size>`), which the FUSE adapter
//! hands to the kernel for passthrough: their reads, page faults and execs
//! then run on the host filesystem's page cache, never reaching the daemon.
//!
//! A cache file is named by the layer data it holds, not by path or inode:
//! hard links share one, every mount of the store shares them, and a copy-up
//! never touches one (an upper file is served from the upper dir instead).
//!
//! Bounded on disk: past `limit` bytes the least recently opened files are
//! removed (a passthrough open keeps its unlinked file). A file is only ever
//! made from bytes the mount decodes for a reader: whole at an open that
//! asks for it (an exec, or a repeated open, of at most `SYNC_MAX` bytes), or
//! collected from the reads themselves when a reader reads the file through
//! (`tee`). A failure to write (a full disk) drops the file being made and
//! readers stay on the daemon's path.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Files below this size stay in FUSE's page cache: a cache file costs a
/// create, and their reads are few.
pub const MIN_SIZE: u64 = 64 * 1024;
/// The largest file decoded whole while its open waits.
pub const SYNC_MAX: u64 = 64 << 20;
/// Files being collected from reads at once; an older one is dropped.
const MAX_PARTIAL: usize = 4;
/// Inodes whose opens are counted (to spot repeated opens); forgotten past it.
const MAX_SEEN: usize = 65536;
const CHUNK: usize = 1 << 20;

/// The layer data a lower file holds: what names its cache file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub diff_id_hex: String,
    pub data_offset: u64,
    pub size: u64,
}

impl Key {
    fn file_name(&self) -> String {
        format!("{}-{}-{}", self.diff_id_hex, self.data_offset, self.size)
    }

    fn parse(name: &str) -> Option<Key> {
        let mut it = name.rsplitn(3, '-');
        let size = it.next()?.parse().ok()?;
        let data_offset = it.next()?.parse().ok()?;
        let hex = it.next()?;
        (hex.len() == 64 && hex.bytes().all(|c| c.is_ascii_hexdigit())).then(|| Key {
            diff_id_hex: hex.to_string(),
            data_offset,
            size,
        })
    }
}

/// A file being collected from reads: the ranges written so far.
struct Partial {
    key: Key,
    file: File,
    tmp: PathBuf,
    have: Vec<(u64, u64)>,
    born: u64,
}

#[derive(Default)]
struct State {
    /// Whole cache files: size and when last opened (a tick).
    done: HashMap<Key, (u64, u64)>,
    total: u64,
    tick: u64,
    partial: HashMap<u64, Partial>,
    seen: HashMap<u64, u32>,
    tmp_seq: u64,
}

pub struct FileCache {
    dir: PathBuf,
    limit: u64,
    state: Mutex<State>,
}

impl FileCache {
    /// Opens the cache in `dir`, counting what other mounts left there and
    /// removing their unfinished files.
    pub fn open(dir: &Path, limit: u64) -> io::Result<FileCache> {
        fs::create_dir_all(dir)?;
        let mut st = State::default();
        let mut found = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = e.metadata() else { continue };
            match Key::parse(&name) {
                Some(k) if meta.is_file() && meta.len() == k.size => {
                    found.push((meta.modified().ok(), k))
                }
                _ if name.starts_with("tmp-") && !tmp_owner_alive(&name) => {
                    let _ = fs::remove_file(e.path());
                }
                _ => {}
            }
        }
        found.sort_by_key(|(t, _)| *t);
        for (_, k) in found {
            st.tick += 1;
            st.total += k.size;
            st.done.insert(k.clone(), (k.size, st.tick));
        }
        let c = FileCache {
            dir: dir.to_path_buf(),
            limit,
            state: Mutex::new(st),
        };
        c.evict(&mut c.state());
        Ok(c)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes of whole cache files this mount knows of.
    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.state().total
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, k: &Key) -> PathBuf {
        self.dir.join(k.file_name())
    }

    /// Counts an open of inode `ino`; true when it was opened before.
    pub fn note_open(&self, ino: u64) -> bool {
        let mut st = self.state();
        if st.seen.len() >= MAX_SEEN && !st.seen.contains_key(&ino) {
            st.seen.clear();
        }
        let n = st.seen.entry(ino).or_default();
        *n += 1;
        *n > 1
    }

    /// The whole cache file of `k`, opened for reading, if there is one.
    pub fn get(&self, k: &Key) -> Option<File> {
        let mut st = self.state();
        if !st.done.contains_key(k) {
            return None;
        }
        match File::open(self.path(k)) {
            Ok(f) => {
                st.tick += 1;
                let t = st.tick;
                if let Some(e) = st.done.get_mut(k) {
                    e.1 = t;
                }
                Some(f)
            }
            Err(_) => {
                // Evicted by another mount of the store.
                if let Some((size, _)) = st.done.remove(k) {
                    st.total -= size;
                }
                None
            }
        }
    }

    /// Decodes `k` whole through `read` (offset, buffer → bytes) into a new
    /// cache file and opens it; holes that `data_from` (SEEK_DATA) skips
    /// stay holes. None when it cannot be made (too big, disk full).
    pub fn fill(
        &self,
        k: &Key,
        mut read: impl FnMut(u64, &mut [u8]) -> io::Result<usize>,
        mut data_from: impl FnMut(u64) -> Option<(u64, u64)>,
    ) -> Option<File> {
        if let Some(f) = self.get(k) {
            return Some(f);
        }
        if k.size > SYNC_MAX || k.size > self.limit {
            return None;
        }
        let (tmp, file) = self.create_tmp().ok()?;
        let written = (|| -> io::Result<()> {
            let mut buf = vec![0u8; CHUNK];
            let mut off = 0;
            while off < k.size {
                // The next data region: a sparse file keeps its holes.
                let Some((start, end)) = data_from(off) else {
                    break;
                };
                let mut at = start.max(off);
                while at < end.min(k.size) {
                    let want = ((end.min(k.size) - at) as usize).min(CHUNK);
                    let n = read(at, &mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                    }
                    file.write_all_at(&buf[..n], at)?;
                    at += n as u64;
                }
                off = end.max(off + 1);
            }
            file.set_len(k.size)
        })();
        if let Err(e) = written {
            log::warn!("file cache: {}: {e}; served without it", k.file_name());
            let _ = fs::remove_file(&tmp);
            return None;
        }
        self.publish(k, &tmp)?;
        self.get(k)
    }

    /// Collects bytes a reader was served from lower file `ino` (of `k`):
    /// when a read at offset 0 starts it, the file is written as the reads
    /// go; once every byte is there it becomes a cache file for the next
    /// open. Sparse files are not collected (their holes would be filled).
    pub fn tee(&self, ino: u64, k: &Key, offset: u64, data: &[u8]) {
        if data.is_empty() || k.size < MIN_SIZE || k.size > self.limit {
            return;
        }
        let mut st = self.state();
        if !st.partial.contains_key(&ino) {
            if offset != 0 || st.done.contains_key(k) {
                return;
            }
            if st.partial.len() >= MAX_PARTIAL {
                let oldest = st
                    .partial
                    .iter()
                    .min_by_key(|(_, p)| p.born)
                    .map(|(i, _)| *i);
                if let Some(p) = oldest.and_then(|i| st.partial.remove(&i)) {
                    let _ = fs::remove_file(&p.tmp);
                }
            }
            drop(st);
            let Ok((tmp, file)) = self.create_tmp() else {
                return;
            };
            st = self.state();
            st.tick += 1;
            let born = st.tick;
            st.partial.insert(
                ino,
                Partial {
                    key: k.clone(),
                    file,
                    tmp,
                    have: Vec::new(),
                    born,
                },
            );
        }
        let Some(p) = st.partial.get_mut(&ino) else {
            return;
        };
        if p.key != *k {
            return;
        }
        if let Err(e) = p.file.write_all_at(data, offset) {
            log::warn!("file cache: {}: {e}; served without it", k.file_name());
            if let Some(p) = st.partial.remove(&ino) {
                let _ = fs::remove_file(&p.tmp);
            }
            return;
        }
        add_range(&mut p.have, offset, offset + data.len() as u64);
        if p.have.first() == Some(&(0, k.size))
            && let Some(p) = st.partial.remove(&ino)
        {
            drop(st);
            let _ = p.file.set_len(k.size);
            if self.publish(k, &p.tmp).is_none() {
                let _ = fs::remove_file(&p.tmp);
            }
        }
    }

    fn create_tmp(&self) -> io::Result<(PathBuf, File)> {
        let seq = {
            let mut st = self.state();
            st.tmp_seq += 1;
            st.tmp_seq
        };
        let tmp = self.dir.join(format!("tmp-{}-{seq}", std::process::id()));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        Ok((tmp, f))
    }

    /// Renames a finished temp file into place and accounts it; evicts past
    /// the bound.
    fn publish(&self, k: &Key, tmp: &Path) -> Option<()> {
        // On disk before its name: after a crash a cache file of the right
        // size is taken as it is, so it must never be one of zeros.
        let synced = fs::File::open(tmp).and_then(|f| f.sync_data());
        if let Err(e) = synced.and_then(|()| fs::rename(tmp, self.path(k))) {
            log::warn!("file cache: {}: {e}", k.file_name());
            let _ = fs::remove_file(tmp);
            return None;
        }
        let mut st = self.state();
        st.tick += 1;
        let t = st.tick;
        if st.done.insert(k.clone(), (k.size, t)).is_none() {
            st.total += k.size;
        }
        self.evict(&mut st);
        Some(())
    }

    /// Removes least recently opened files until the total fits the bound.
    fn evict(&self, st: &mut State) {
        while st.total > self.limit {
            let Some(k) = st
                .done
                .iter()
                .min_by_key(|(_, v)| v.1)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((size, _)) = st.done.remove(&k) {
                st.total -= size;
            }
            let _ = fs::remove_file(self.path(&k));
        }
    }
}

/// Whether the process that named temp file `tmp-<pid>-<n>` still runs.
fn tmp_owner_alive(name: &str) -> bool {
    let pid = name.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
    pid.is_some_and(|p| p == std::process::id() || Path::new(&format!("/proc/{p}")).exists())
}

/// Adds [start, end) to sorted, disjoint `ranges`, merging what touches.
fn add_range(ranges: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    let (mut s, mut e) = (start, end);
    ranges.retain(|&(a, b)| {
        if b < s || a > e {
            return true;
        }
        s = s.min(a);
        e = e.max(b);
        false
    });
    let at = ranges.partition_point(|&(a, _)| a < s);
    ranges.insert(at, (s, e));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64, size: u64) -> Key {
        Key {
            diff_id_hex: "ab".repeat(32),
            data_offset: n,
            size,
        }
    }

    fn content(size: u64) -> Vec<u8> {
        (0..size).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn reader(data: &[u8]) -> impl FnMut(u64, &mut [u8]) -> io::Result<usize> + '_ {
        move |off, buf| {
            let off = off as usize;
            let n = buf.len().min(data.len().saturating_sub(off));
            buf[..n].copy_from_slice(&data[off..off + n]);
            Ok(n)
        }
    }

    fn read_all(mut f: File) -> Vec<u8> {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut v).unwrap();
        v
    }

    #[test]
    fn fill_then_get_gives_the_same_bytes() {
        let d = tempfile::tempdir().unwrap();
        let c = FileCache::open(d.path(), 10 << 20).unwrap();
        let data = content(300_000);
        let k = key(1, data.len() as u64);
        assert!(c.get(&k).is_none());
        let f = c.fill(&k, reader(&data), |o| Some((o, k.size))).unwrap();
        assert_eq!(read_all(f), data);
        assert_eq!(read_all(c.get(&k).unwrap()), data);
        assert_eq!(c.used(), data.len() as u64);
        // A second mount of the store finds it.
        let c2 = FileCache::open(d.path(), 10 << 20).unwrap();
        assert_eq!(read_all(c2.get(&k).unwrap()), data);
    }

    #[test]
    fn past_the_bound_the_least_recently_opened_goes() {
        let d = tempfile::tempdir().unwrap();
        let c = FileCache::open(d.path(), 250_000).unwrap();
        let data = content(100_000);
        let (a, b, n) = (key(1, 100_000), key(2, 100_000), key(3, 100_000));
        c.fill(&a, reader(&data), |o| Some((o, 100_000))).unwrap();
        c.fill(&b, reader(&data), |o| Some((o, 100_000))).unwrap();
        c.get(&a).unwrap(); // a is now more recent than b
        c.fill(&n, reader(&data), |o| Some((o, 100_000))).unwrap();
        assert!(c.used() <= 250_000);
        assert!(c.get(&b).is_none(), "the least recently opened is evicted");
        assert_eq!(read_all(c.get(&a).unwrap()), data);
        assert_eq!(read_all(c.get(&n).unwrap()), data);
        assert!(!d.path().join(b.file_name()).exists());
    }

    #[test]
    fn an_open_file_keeps_reading_after_eviction() {
        let d = tempfile::tempdir().unwrap();
        let c = FileCache::open(d.path(), 150_000).unwrap();
        let data = content(100_000);
        let held = c.fill(&key(1, 100_000), reader(&data), |o| Some((o, 100_000)));
        c.fill(&key(2, 100_000), reader(&data), |o| Some((o, 100_000)))
            .unwrap();
        assert!(c.get(&key(1, 100_000)).is_none());
        assert_eq!(read_all(held.unwrap()), data);
    }

    #[test]
    fn sparse_files_keep_their_holes() {
        let d = tempfile::tempdir().unwrap();
        let c = FileCache::open(d.path(), 10 << 20).unwrap();
        let size = 4 << 20;
        let mut data = vec![0u8; size];
        data[..4096].fill(1);
        data[size - 4096..].fill(2);
        let k = key(1, size as u64);
        let regions = [(0u64, 4096u64), (size as u64 - 4096, size as u64)];
        let f = c
            .fill(&k, reader(&data), |o| {
                regions.iter().find(|r| r.1 > o).copied()
            })
            .unwrap();
        let m = f.metadata().unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(m.blocks() * 512 < size as u64 / 2, "holes stay holes");
        assert_eq!(read_all(f), data);
    }

    #[test]
    fn reads_through_make_a_cache_file() {
        let d = tempfile::tempdir().unwrap();
        let c = FileCache::open(d.path(), 10 << 20).unwrap();
        let data = content(200_000);
        let k = key(1, data.len() as u64);
        // Out of order, overlapping, as readahead sends them.
        for (o, l) in [(0, 65536), (131072, 68928), (65536, 70000)] {
            assert!(c.get(&k).is_none());
            c.tee(7, &k, o as u64, &data[o..o + l]);
        }
        assert_eq!(read_all(c.get(&k).unwrap()), data);
        // A read that does not start at 0 starts nothing.
        let k2 = key(2, data.len() as u64);
        c.tee(8, &k2, 4096, &data[4096..]);
        assert!(c.get(&k2).is_none());
    }

    #[test]
    fn a_failing_decode_leaves_no_file() {
        let d = tempfile::tempdir().unwrap();
        let c = FileCache::open(d.path(), 10 << 20).unwrap();
        let k = key(1, 200_000);
        let r = c.fill(
            &k,
            |_, _| Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            |o| Some((o, 200_000)),
        );
        assert!(r.is_none());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn ranges_merge() {
        let mut r = Vec::new();
        for (s, e) in [(10, 20), (30, 40), (20, 30), (0, 5)] {
            add_range(&mut r, s, e);
        }
        assert_eq!(r, vec![(0, 5), (10, 40)]);
    }
}
