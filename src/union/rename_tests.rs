//! Inode numbers of renamed lower directories: a directory keeps its number
//! through renames (there and back, into another parent, over a whiteout),
//! lookup and readdir agree on it, and no two directories of the view ever
//! share one — `find` takes a directory that has its ancestor's (st_dev,
//! st_ino) for a file system loop. The same numbers after a remount.

use super::test_helpers::walk;
use super::*;
use crate::layer::{SpanCache, ingest};
use crate::testutil::{TarBuilder, temp_store};
use std::collections::HashMap;

const ME: Caller = Caller { uid: 0, gid: 0 };

/// Two layers, so that the doc directories span a chain.
struct Fixture {
    _dir: tempfile::TempDir,
    store: crate::store::Store,
    digests: Vec<crate::oci::Digest>,
    upper: std::path::PathBuf,
    work: std::path::PathBuf,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        if !crate::testutil::is_root("union rename tests") {
            return None;
        }
        let (dir, store) = temp_store();
        let mut base = TarBuilder::new();
        base.file("usr/share/doc/findutils/copyright", 0o644, b"find")
            .file("usr/share/doc/findutils/examples/x", 0o644, b"x")
            .file("usr/share/doc/grep/copyright", 0o644, b"grep");
        let mut top = TarBuilder::new();
        top.file("usr/share/doc/findutils/NEWS", 0o644, b"news")
            .file("usr/share/doc/sed/copyright", 0o644, b"sed");
        let digests = [base.finish(), top.finish()]
            .iter()
            .map(|t| ingest(&store, &t[..], None).unwrap().digest)
            .collect();
        let upper = dir.path().join("c/upper");
        let work = dir.path().join("c/work");
        Some(Fixture {
            _dir: dir,
            store,
            digests,
            upper,
            work,
        })
    }

    fn fs(&self) -> UnionFs {
        let stack = Stack::open(&self.store, &self.digests, SpanCache::new(8 << 20)).unwrap();
        UnionFs::new(
            stack,
            Some(UpperDir::open(&self.upper, &self.work).unwrap()),
        )
    }
}

/// Every directory of the view (path → number), walked by readdirplus; each
/// number checked against lookup, getattr and the directory's own ".", and
/// the walk fails if a directory has the number of another one.
fn dir_numbers(fs: &UnionFs) -> HashMap<String, u64> {
    fn rec(fs: &UnionFs, path: &str, ino: u64, out: &mut HashMap<String, u64>) {
        assert_eq!(fs.getattr(ino).unwrap().ino, ino, "getattr of {path:?}");
        if let Some((other, _)) = out.iter().find(|&(_, &i)| i == ino) {
            panic!("{path:?} has the number {ino:#x} of {other:?}");
        }
        out.insert(path.to_string(), ino);
        let fh = fs.opendir(ino).unwrap();
        let mut subdirs = Vec::new();
        fs.readdir(ino, fh, 0, true, |e, a| {
            let a = a.expect("readdirplus gives attributes");
            assert_eq!(a.ino, e.ino, "readdirplus attr of {path}/{:?}", e.name);
            match e.name {
                b"." => assert_eq!(e.ino, ino, "\".\" of {path:?}"),
                b".." => {}
                name if e.kind == FileKind::Directory => {
                    subdirs.push((String::from_utf8_lossy(name).into_owned(), e.ino))
                }
                _ => {}
            }
            true
        })
        .unwrap();
        fs.releasedir(fh);
        for (name, readdir_ino) in subdirs {
            let looked_up = fs.lookup(ino, name.as_bytes()).unwrap().ino;
            let p = format!("{path}/{name}");
            assert_eq!(looked_up, readdir_ino, "lookup and readdir of {p:?}");
            rec(fs, &p, looked_up, out);
        }
    }
    let mut out = HashMap::new();
    rec(fs, "", ROOT_INO, &mut out);
    out
}

fn ino_of(fs: &UnionFs, path: &str) -> u64 {
    walk(fs, path).unwrap().ino
}

#[test]
fn a_renamed_lower_directory_keeps_its_own_number() {
    let Some(fx) = Fixture::new() else { return };
    let fs = fx.fs();
    let before = dir_numbers(&fs);
    let find = before["/usr/share/doc/findutils"];
    let doc = ino_of(&fs, "usr/share/doc");
    let steps: &[(&str, &str)] = &[
        ("usr/share/doc/findutils", "usr/share/doc/findutils.moved"),
        (
            "usr/share/doc/findutils.moved/copyright",
            "usr/share/doc/findutils.moved/copyright.renamed",
        ),
        ("usr/share/doc/findutils.moved", "usr/share/doc/findutils"),
        ("usr/share/doc/findutils", "findutils"),
        ("findutils", "usr/share/doc/findutils.moved"),
        ("usr/share/doc/grep", "usr/share/doc/grep.moved"),
        ("usr/share/doc/findutils.moved", "usr/share/doc/findutils"),
    ];
    for (i, &(from, to)) in steps.iter().enumerate() {
        let (fd, fname) = from.rsplit_once('/').unwrap_or(("", from));
        let (td, tname) = to.rsplit_once('/').unwrap_or(("", to));
        let (fp, tp) = (ino_of(&fs, fd), ino_of(&fs, td));
        fs.rename(fp, fname.as_bytes(), tp, tname.as_bytes(), 0)
            .unwrap_or_else(|e| panic!("step {i}: rename {from} {to}: {e}"));
        let now = dir_numbers(&fs);
        let dir = [
            "usr/share/doc/findutils",
            "usr/share/doc/findutils.moved",
            "findutils",
        ]
        .into_iter()
        .find(|p| now.contains_key(&format!("/{p}")))
        .expect("findutils somewhere");
        assert_eq!(
            now[&format!("/{dir}")],
            find,
            "step {i}: findutils renumbered"
        );
        // A new directory where a renamed one was: a number of its own.
        if i == 0 {
            let fresh = fs.mkdir(doc, b"findutils", 0o755, ME).unwrap().ino;
            assert!(!before.values().any(|&n| n == fresh), "step {i}");
            dir_numbers(&fs);
            fs.rmdir(doc, b"findutils").unwrap();
        }
    }
    let after = dir_numbers(&fs);
    drop(fs);
    let fs = fx.fs();
    assert_eq!(dir_numbers(&fs), after, "the same numbers after a remount");
    assert_eq!(after["/usr/share/doc/findutils"], find);
    assert_eq!(
        after["/usr/share/doc/findutils/examples"],
        before["/usr/share/doc/findutils/examples"]
    );
}
