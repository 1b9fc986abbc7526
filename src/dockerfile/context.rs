//! The build context: the directory COPY and ADD read from, and nothing
//! else. A named source is opened beneath the context root with
//! openat2(RESOLVE_BENEATH): a symlink on the way is followed only while it
//! stays inside (an absolute one, or one climbing out, is refused), and a
//! directory's contents are walked by descriptor without following any
//! symlink (they are copied as symlinks). `.dockerignore` hides what it
//! excludes, as if it were not there.

use super::ignore::{BadPattern, Ignore, clean, has_wildcard, match_component};
use crate::oci::Sha256Writer as Sha256;
use nix::fcntl::AtFlags;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("{0}: no such file or directory in the build context")]
    NotFound(String),
    #[error("{0}: excluded by .dockerignore")]
    Ignored(String),
    #[error("{0}: the path leaves the build context (through a symlink or ..)")]
    Escapes(String),
    #[error("{0}: no file in the build context matches")]
    NoMatch(String),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: {source}")]
    BadIgnore { path: String, source: BadPattern },
}

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// What an entry is, from its `stat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink(Vec<u8>),
    Fifo,
    Device { block: bool, rdev: u64 },
    Socket,
}

impl Kind {
    fn of(st: &FileStat, link: impl FnOnce() -> io::Result<Vec<u8>>) -> io::Result<Kind> {
        Ok(match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFREG => Kind::File,
            libc::S_IFLNK => Kind::Symlink(link()?),
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::Device {
                block: false,
                rdev: st.st_rdev,
            },
            libc::S_IFBLK => Kind::Device {
                block: true,
                rdev: st.st_rdev,
            },
            _ => Kind::Socket,
        })
    }
}

/// A COPY or ADD source, opened.
pub struct Source {
    /// Its path in the context, cleaned (`""` for the context itself).
    pub rel: String,
    pub kind: Kind,
    pub stat: FileStat,
    /// Opened for reading (a file) or listing (a directory).
    fd: Option<OwnedFd>,
}

impl Source {
    /// The last component of its path: the name a file gets in a directory.
    pub fn name(&self) -> &str {
        self.rel.rsplit('/').next().unwrap_or_default()
    }
}

/// One entry met walking a directory source.
pub struct Entry<'a> {
    /// The path below the source (`b"sub/x"`).
    pub rel: Vec<u8>,
    pub kind: Kind,
    pub stat: FileStat,
    dir: &'a OwnedFd,
    name: Vec<u8>,
}

impl Entry<'_> {
    /// Opens a regular file's contents (never through a symlink).
    pub fn open(&self) -> io::Result<File> {
        let fd = nix::fcntl::openat(
            self.dir,
            OsStr::from_bytes(&self.name),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(errno)?;
        Ok(File::from(fd))
    }
}

pub struct Context {
    path: PathBuf,
    root: OwnedFd,
    ignore: Ignore,
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

impl Context {
    /// Opens directory `path` as a context, with its `.dockerignore` if any.
    pub fn open(path: &Path) -> Result<Context, ContextError> {
        let io = |e: io::Error| ContextError::Io {
            path: path.display().to_string(),
            source: e,
        };
        let root = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(errno(e)))?;
        let ignore = match openat2(&root, ".dockerignore", how(OFlag::O_RDONLY)) {
            Ok(fd) => {
                let mut text = String::new();
                File::from(fd)
                    .read_to_string(&mut text)
                    .map_err(|e| ContextError::Io {
                        path: path.join(".dockerignore").display().to_string(),
                        source: e,
                    })?;
                Ignore::parse(&text).map_err(|e| ContextError::BadIgnore {
                    path: path.join(".dockerignore").display().to_string(),
                    source: e,
                })?
            }
            Err(nix::errno::Errno::ENOENT) => Ignore::default(),
            Err(e) => {
                return Err(ContextError::Io {
                    path: path.join(".dockerignore").display().to_string(),
                    source: errno(e),
                });
            }
        };
        Ok(Context {
            path: path.to_path_buf(),
            root,
            ignore,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_beneath(&self, rel: &str, flags: OFlag) -> Result<OwnedFd, ContextError> {
        let p = if rel.is_empty() { "." } else { rel };
        openat2(&self.root, p, how(flags)).map_err(|e| match e {
            nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => {
                ContextError::NotFound(rel.to_string())
            }
            nix::errno::Errno::EXDEV | nix::errno::Errno::ELOOP => {
                ContextError::Escapes(rel.to_string())
            }
            e => ContextError::Io {
                path: rel.to_string(),
                source: errno(e),
            },
        })
    }

    /// The sources a COPY or ADD names, wildcards expanded (sorted), each
    /// opened; excluded paths are skipped by wildcards and refused by name.
    pub fn sources(&self, patterns: &[String]) -> Result<Vec<Source>, ContextError> {
        let mut out = Vec::new();
        for pattern in patterns {
            let cleaned = clean(pattern);
            let paths = if has_wildcard(&cleaned) {
                let found = self.glob(&cleaned)?;
                if found.is_empty() {
                    return Err(ContextError::NoMatch(pattern.clone()));
                }
                found
            } else {
                if self.ignore.excludes(&cleaned) {
                    return Err(ContextError::Ignored(pattern.clone()));
                }
                vec![cleaned]
            };
            for rel in paths {
                out.push(self.source(&rel)?);
            }
        }
        Ok(out)
    }

    fn source(&self, rel: &str) -> Result<Source, ContextError> {
        let fd = self.open_beneath(rel, OFlag::O_PATH)?;
        let stat = fstat(&fd).map_err(|e| self.io(rel, errno(e)))?;
        let kind = Kind::of(&stat, || Ok(Vec::new())).map_err(|e| self.io(rel, e))?;
        let fd = match kind {
            Kind::Dir => Some(self.open_beneath(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?),
            Kind::File => Some(self.open_beneath(rel, OFlag::O_RDONLY)?),
            _ => None,
        };
        Ok(Source {
            rel: rel.to_string(),
            kind,
            stat,
            fd,
        })
    }

    fn io(&self, rel: &str, e: io::Error) -> ContextError {
        ContextError::Io {
            path: self.path.join(rel).display().to_string(),
            source: e,
        }
    }

    /// The context paths matching `pattern`, one component at a time.
    fn glob(&self, pattern: &str) -> Result<Vec<String>, ContextError> {
        let mut found = vec![String::new()];
        for comp in pattern.split('/') {
            let mut next = Vec::new();
            for base in &found {
                let join = |name: &str| {
                    if base.is_empty() {
                        name.to_string()
                    } else {
                        format!("{base}/{name}")
                    }
                };
                if !has_wildcard(comp) {
                    next.push(join(comp));
                    continue;
                }
                let Ok(fd) = self.open_beneath(base, OFlag::O_RDONLY | OFlag::O_DIRECTORY) else {
                    continue;
                };
                for (name, _) in list(&fd).map_err(|e| self.io(base, e))? {
                    let name = String::from_utf8_lossy(&name).into_owned();
                    if match_component(comp, &name) {
                        next.push(join(&name));
                    }
                }
            }
            found = next;
        }
        let mut out: Vec<String> = found
            .into_iter()
            .filter(|p| !self.ignore.excludes(p))
            .filter(|p| self.open_beneath(p, OFlag::O_PATH).is_ok())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Calls `visit` for `src` itself (rel `""`) and, for a directory, every
    /// entry below it in name order, parents first; excluded entries (and
    /// excluded directories, unless a `!` rule may re-include below) are skipped.
    pub fn walk<E: From<ContextError>>(
        &self,
        src: &Source,
        visit: &mut dyn FnMut(&Entry) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(fd) = src.fd.as_ref().filter(|_| src.kind == Kind::Dir) else {
            return Ok(());
        };
        self.walk_dir(fd, &src.rel, b"", visit)
    }

    fn walk_dir<E: From<ContextError>>(
        &self,
        dir: &OwnedFd,
        base: &str,
        rel: &[u8],
        visit: &mut dyn FnMut(&Entry) -> Result<(), E>,
    ) -> Result<(), E> {
        let here = |name: &[u8]| {
            let mut r = rel.to_vec();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(name);
            r
        };
        let mut entries = list(dir).map_err(|e| self.io(base, e))?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, _) in entries {
            let sub = here(&name);
            let ctx_path = if base.is_empty() {
                String::from_utf8_lossy(&sub).into_owned()
            } else {
                format!("{base}/{}", String::from_utf8_lossy(&sub))
            };
            let excluded = self.ignore.excludes(&ctx_path);
            let st = fstatat(dir, OsStr::from_bytes(&name), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| self.io(&ctx_path, errno(e)))?;
            let kind = Kind::of(&st, || {
                nix::fcntl::readlinkat(dir, OsStr::from_bytes(&name))
                    .map(|t| t.as_bytes().to_vec())
                    .map_err(errno)
            })
            .map_err(|e| self.io(&ctx_path, e))?;
            if excluded && !(kind == Kind::Dir && self.ignore.has_exceptions()) {
                continue;
            }
            if !excluded {
                visit(&Entry {
                    rel: sub.clone(),
                    kind: kind.clone(),
                    stat: st,
                    dir,
                    name: name.clone(),
                })?;
            }
            if kind == Kind::Dir {
                let child = nix::fcntl::openat(
                    dir,
                    OsStr::from_bytes(&name),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.io(&ctx_path, errno(e)))?;
                self.walk_dir(&child, base, &sub, visit)?;
            }
        }
        Ok(())
    }

    /// Opens a file source's contents.
    pub fn open_file(&self, src: &Source) -> Result<File, ContextError> {
        match (&src.kind, &src.fd) {
            (Kind::File, Some(fd)) => fd
                .try_clone()
                .map(File::from)
                .and_then(|f| {
                    use std::io::Seek;
                    let mut f = f;
                    f.seek(io::SeekFrom::Start(0))?;
                    Ok(f)
                })
                .map_err(|e| self.io(&src.rel, e)),
            _ => Err(ContextError::NotFound(src.rel.clone())),
        }
    }

    /// A digest of everything the sources hold (paths, kinds, modes, sizes,
    /// contents, link targets; not times or owners, which COPY does not
    /// keep), for the build cache.
    pub fn digest(&self, sources: &[Source]) -> Result<String, ContextError> {
        let mut h = Sha256::new();
        for src in sources {
            h.update(b"source\0");
            h.update(src.rel.as_bytes());
            h.update(format!("\0{:?}\0{:o}\0", src.kind, src.stat.st_mode & 0o7777).as_bytes());
            if src.kind == Kind::File {
                hash_contents(&mut h, self.open_file(src)?).map_err(|e| self.io(&src.rel, e))?;
            }
            self.walk::<ContextError>(src, &mut |e| {
                h.update(b"entry\0");
                h.update(&e.rel);
                h.update(format!("\0{:?}\0{:o}\0", e.kind, e.stat.st_mode & 0o7777).as_bytes());
                if e.kind == Kind::File {
                    let f = e.open().map_err(|x| self.io(&src.rel, x))?;
                    hash_contents(&mut h, f).map_err(|x| self.io(&src.rel, x))?;
                }
                Ok(())
            })?;
        }
        Ok(h.finish().hex())
    }
}

fn hash_contents(h: &mut Sha256, mut f: File) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        n_total += n as u64;
        h.update(&buf[..n]);
    }
    h.update(&n_total.to_le_bytes());
    Ok(())
}

/// The names in directory `dir` (without `.` and `..`), with their d_type.
fn list(dir: &OwnedFd) -> io::Result<Vec<(Vec<u8>, Option<nix::dir::Type>)>> {
    let fd = nix::fcntl::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)?;
    let mut d = nix::dir::Dir::from_fd(fd).map_err(errno)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e.map_err(errno)?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push((name.to_vec(), e.file_type()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn ctx() -> (tempfile::TempDir, tempfile::TempDir) {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"host secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("app/sub")).unwrap();
        std::fs::write(d.join("app/a.txt"), b"a").unwrap();
        std::fs::write(d.join("app/sub/b.txt"), b"b").unwrap();
        std::fs::write(d.join("app/debug.log"), b"log").unwrap();
        std::fs::write(d.join("one.txt"), b"1").unwrap();
        std::fs::write(d.join("two.txt"), b"2").unwrap();
        std::fs::write(d.join(".dockerignore"), b"**/*.log\nignored\n").unwrap();
        std::fs::write(d.join("ignored"), b"x").unwrap();
        symlink(outside.path(), d.join("out")).unwrap();
        symlink("../../../../../../../..", d.join("up")).unwrap();
        symlink("app/a.txt", d.join("inside")).unwrap();
        symlink(outside.path().join("secret"), d.join("app/abs-link")).unwrap();
        (dir, outside)
    }

    #[test]
    fn sources_stay_inside_the_context() {
        let (dir, outside) = ctx();
        let c = Context::open(dir.path()).unwrap();
        let rel = |v: Vec<Source>| v.iter().map(|s| s.rel.clone()).collect::<Vec<_>>();
        assert_eq!(
            rel(c.sources(&["*.txt".into()]).unwrap()),
            ["one.txt", "two.txt"]
        );
        assert_eq!(
            rel(c.sources(&["./app/../one.txt".into()]).unwrap()),
            ["one.txt"]
        );
        let s = c.sources(&["inside".into()]).unwrap();
        assert_eq!(s[0].kind, Kind::File);
        let mut text = String::new();
        c.open_file(&s[0])
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "a");
        for (bad, want) in [
            ("out/secret", "leaves"),
            ("out", "leaves"),
            ("up/etc/passwd", "leaves"),
            ("ignored", "excluded"),
            ("missing", "no such file"),
            ("*.none", "no file"),
        ] {
            let e = match c.sources(&[bad.to_string()]) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{bad} was accepted"),
            };
            assert!(e.contains(want), "{bad}: {e}");
        }
        // The outside was never opened, only refused.
        assert!(outside.path().join("secret").exists());
    }

    #[test]
    fn walks_without_following_symlinks_or_ignored_files() {
        let (dir, _outside) = ctx();
        let c = Context::open(dir.path()).unwrap();
        let src = c.sources(&["app".into()]).unwrap().remove(0);
        let mut seen = Vec::new();
        c.walk::<ContextError>(&src, &mut |e| {
            seen.push((String::from_utf8_lossy(&e.rel).into_owned(), e.kind.clone()));
            Ok(())
        })
        .unwrap();
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.txt", "abs-link", "sub", "sub/b.txt"]);
        assert!(matches!(&seen[1].1, Kind::Symlink(t) if t.ends_with(b"/secret")));
        let d1 = c.digest(&c.sources(&["app".into()]).unwrap()).unwrap();
        std::fs::write(dir.path().join("app/debug.log"), b"changed").unwrap();
        let d2 = c.digest(&c.sources(&["app".into()]).unwrap()).unwrap();
        assert_eq!(d1, d2, "an ignored file does not change the digest");
        std::fs::write(dir.path().join("app/sub/b.txt"), b"changed").unwrap();
        let d3 = c.digest(&c.sources(&["app".into()]).unwrap()).unwrap();
        assert_ne!(d1, d3);
    }

    #[test]
    fn a_malformed_dockerignore_is_an_error_naming_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".dockerignore"), "*.log\n[[[[\n").unwrap();
        let Err(e) = Context::open(dir.path()) else {
            panic!("a malformed .dockerignore was accepted");
        };
        let e = e.to_string();
        assert!(
            e.contains(".dockerignore: line 2") && e.contains("syntax error in pattern"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1);
    }
}
