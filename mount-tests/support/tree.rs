//! A tree listing in the format of ../shared/interop/treelist.py (with
//! --mtime): path, type, mode, uid:gid, size, sha256 or link target, xattrs,
//! hardlink group, mtime — so a mount compares with the fixtures' expected
//! listings and with kernel overlayfs line by line.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The names in directory `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

pub fn listing(root: &Path) -> String {
    let mut paths: Vec<Vec<u8>> = Vec::new();
    walk(root, b".", &mut paths);
    paths.sort();
    let mut first_of_inode: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut out = String::new();
    for rel in paths {
        let full = root.join(std::ffi::OsStr::from_bytes(&rel[2..]));
        let md = fs::symlink_metadata(&full).expect("lstat");
        let ft = md.file_type();
        let t = if ft.is_file() {
            "f"
        } else if ft.is_dir() {
            "d"
        } else if ft.is_symlink() {
            "l"
        } else if ft.is_fifo() {
            "p"
        } else if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else {
            "s"
        };
        let (size, content) = match t {
            "f" => (md.len().to_string(), sha256_file(&full)),
            "l" => (
                "-".into(),
                String::from_utf8_lossy(
                    fs::read_link(&full)
                        .expect("readlink")
                        .as_os_str()
                        .as_bytes(),
                )
                .into_owned(),
            ),
            "c" | "b" => (
                "-".into(),
                format!("{},{}", libc::major(md.rdev()), libc::minor(md.rdev())),
            ),
            _ => ("-".into(), "-".into()),
        };
        let mut names: Vec<Vec<u8>> = xattr::list(&full)
            .map(|it| it.map(|n| n.as_bytes().to_vec()).collect())
            .unwrap_or_default();
        names.sort();
        let xa: Vec<String> = names
            .iter()
            .map(|n| {
                let v = xattr::get(&full, std::ffi::OsStr::from_bytes(n))
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                format!("{}={}", String::from_utf8_lossy(n), hex(&v))
            })
            .collect();
        let xa = if xa.is_empty() {
            "-".to_string()
        } else {
            xa.join(",")
        };
        let hl = if t != "d" && md.nlink() > 1 {
            String::from_utf8_lossy(
                first_of_inode
                    .entry((md.dev(), md.ino()))
                    .or_insert_with(|| rel.clone()),
            )
            .into_owned()
        } else {
            "-".into()
        };
        let mtime = if t == "d" {
            "-".to_string()
        } else {
            md.mtime().to_string()
        };
        let row = [
            String::from_utf8_lossy(&rel).into_owned(),
            t.into(),
            format!("{:04o}", md.mode() & 0o7777),
            format!("{}:{}", md.uid(), md.gid()),
            size,
            content,
            xa,
            hl,
            mtime,
        ];
        out.push_str(&row.join("\t"));
        out.push('\n');
    }
    out
}

fn walk(dir: &Path, rel: &[u8], out: &mut Vec<Vec<u8>>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry"))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let mut p = rel.to_vec();
        p.push(b'/');
        p.extend_from_slice(e.file_name().as_bytes());
        let is_dir = e.file_type().expect("file type").is_dir();
        out.push(p.clone());
        if is_dir {
            walk(&e.path(), &p, out);
        }
    }
}

fn sha256_file(p: &Path) -> String {
    let mut f = fs::File::open(p).expect("open");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Fails the test unless listings `want` and `got` are the same, showing
/// the lines that differ; `what` says what is compared and which side is
/// '-' (`want`) and which '+' (`got`).
#[track_caller]
pub fn assert_same_tree(want: &str, got: &str, what: &str) {
    assert!(
        got == want,
        "{what} ({} vs {} entries):\n{}",
        want.lines().count(),
        got.lines().count(),
        diff(want, got)
    );
}

/// The first differing lines of two listings, for a readable failure.
pub fn diff(want: &str, got: &str) -> String {
    let w: std::collections::BTreeSet<&str> = want.lines().collect();
    let g: std::collections::BTreeSet<&str> = got.lines().collect();
    let mut out = String::new();
    for l in w.difference(&g).take(15) {
        out.push_str(&format!("- {l}\n"));
    }
    for l in g.difference(&w).take(15) {
        out.push_str(&format!("+ {l}\n"));
    }
    out
}
