//! The layers COPY, ADD and WORKDIR write, without a container: entries go
//! straight into a new layer, each at a path resolved inside the parent
//! image's tree (a read-only union of its layers, plus what this layer
//! already holds), through the image's symlinks but never above its root,
//! so every path in the layer is canonical and nothing outside the image
//! is ever named. ADD unpacks local tar archives (plain, gzip or zstd),
//! refusing entries that climb out with `..` and, as layer ingest does,
//! entries under a symlink or file the archive itself made. COPY --from
//! reads another image's tree the same way (its paths resolved inside it,
//! owners and modes kept), and a heredoc source is a file of its own.

use super::StepError;
use super::context::{Context, Kind, Source};
use crate::layer::{
    LayerError, LayerInfo, LayerWriter, SpanCache, TarMeta, decompressed, normalize_path,
    short_name,
};
use crate::oci::Digest;
use crate::run::inroot::{Node, Resolved, Tree, lossy, resolve};
use crate::run::rules::{group_entries, passwd_entries};
use crate::store::Store;
use crate::union::upper::split;
use crate::union::{FileKind, ROOT_INO, Stack, UnionError, UnionFs};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read};

/// The parent image's tree with this layer's entries over it.
pub struct ImageTree {
    fs: UnionFs,
    inos: HashMap<Vec<u8>, Option<u64>>,
    pending: HashMap<Vec<u8>, Node>,
}

/// As `union::upper::join`, except that an empty name gives `dir` itself.
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() && !name.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

impl ImageTree {
    pub fn open(store: &Store, layers: &[Digest]) -> Result<ImageTree, StepError> {
        let stack = Stack::open(store, layers, SpanCache::new(16 << 20))?;
        Ok(ImageTree {
            fs: UnionFs::new(stack, None),
            inos: HashMap::new(),
            pending: HashMap::new(),
        })
    }

    /// The union inode of canonical path `path`, if the image has it.
    fn ino(&mut self, path: &[u8]) -> Result<Option<u64>, UnionError> {
        if path.is_empty() {
            return Ok(Some(ROOT_INO));
        }
        if let Some(i) = self.inos.get(path) {
            return Ok(*i);
        }
        let (dir, name) = split(path);
        let found = match self.ino(dir)? {
            Some(parent) => match self.fs.lookup(parent, name) {
                Ok(a) => Some(a.ino),
                Err(UnionError::NotFound) | Err(UnionError::NotDir) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        self.inos.insert(path.to_vec(), found);
        Ok(found)
    }

    /// Resolves `path` inside the image.
    pub fn resolve(&mut self, path: &[u8], follow_last: bool) -> Result<Resolved, StepError> {
        resolve(self, path, follow_last).map_err(|e| StepError::Msg(e.to_string()))
    }

    /// The contents of a file of the image (`path` resolved inside it).
    pub fn read_file(&mut self, path: &str) -> Result<Option<Vec<u8>>, StepError> {
        let r = self.resolve(path.as_bytes(), true)?;
        if r.node != Some(Node::Other) {
            return Ok(None);
        }
        let Some(ino) = self.ino(&r.path)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.fs.read(ino, out.len() as u64, &mut buf)?;
            if n == 0 || out.len() > 16 << 20 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        Ok(Some(out))
    }
}

/// A path COPY --from names in another image, resolved inside it.
pub struct ImageSource {
    /// Canonical in that image.
    pub path: Vec<u8>,
    /// The name it gets in a destination directory (the last component
    /// as written, not a symlink's target).
    pub name: Vec<u8>,
}

impl ImageTree {
    /// The names in directory `dir` (canonical), sorted.
    fn list(&mut self, dir: &[u8]) -> Result<Vec<Vec<u8>>, StepError> {
        let Some(ino) = self.ino(dir)? else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        self.fs.readdir(ino, 0, 0, false, |e, _| {
            if e.name != b"." && e.name != b".." {
                names.push(e.name.to_vec());
            }
            true
        })?;
        names.sort();
        Ok(names)
    }

    /// The paths `patterns` name (wildcards matched one component at a
    /// time, as in the context), resolved inside the image.
    pub fn sources(&mut self, patterns: &[String]) -> Result<Vec<ImageSource>, StepError> {
        let mut out = Vec::new();
        for pattern in patterns {
            let cleaned = super::ignore::clean(pattern);
            let mut found = vec![String::new()];
            for comp in cleaned.split('/').filter(|c| !c.is_empty()) {
                let mut next = Vec::new();
                for base in found {
                    if !super::ignore::has_wildcard(comp) {
                        next.push(join_str(&base, comp));
                        continue;
                    }
                    let dir = self.resolve(base.as_bytes(), true)?;
                    if dir.node != Some(Node::Dir) {
                        continue;
                    }
                    for n in self.list(&dir.path)? {
                        let n = String::from_utf8_lossy(&n).into_owned();
                        if super::ignore::match_component(comp, &n) {
                            next.push(join_str(&base, &n));
                        }
                    }
                }
                found = next;
            }
            if found.is_empty() {
                return Err(StepError::Msg(format!("{pattern}: no file matches")));
            }
            for rel in found {
                let r = self.resolve(rel.as_bytes(), true)?;
                if r.node.is_none() {
                    return Err(StepError::Msg(format!(
                        "{pattern}: no such file or directory"
                    )));
                }
                let name = rel.rsplit('/').next().unwrap_or_default();
                out.push(ImageSource {
                    path: r.path,
                    name: name.as_bytes().to_vec(),
                });
            }
        }
        Ok(out)
    }
}

impl ImageTree {
    /// A digest of what COPY --from would copy of `sources`: names, kinds,
    /// modes, owners, xattrs and contents (not mtimes), so that the step is
    /// cached while those files are unchanged, whatever else their stage did.
    pub fn digest(&mut self, sources: &[ImageSource]) -> Result<String, StepError> {
        let mut h = crate::oci::Sha256Writer::new();
        let field = |h: &mut crate::oci::Sha256Writer, b: &[u8]| {
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        };
        let mut buf = vec![0u8; 256 * 1024];
        for s in sources {
            field(&mut h, &s.name);
            // (path in the image, path below the source), parents first.
            let mut work = vec![(s.path.clone(), Vec::new())];
            while let Some((path, rel)) = work.pop() {
                let ino = self
                    .ino(&path)?
                    .ok_or_else(|| StepError::Msg(format!("{}: not in the image", lossy(&path))))?;
                let a = self.fs.getattr(ino)?;
                field(&mut h, &rel);
                let head = format!("{:?} {:o} {} {} {}", a.kind, a.perm, a.uid, a.gid, a.size);
                field(&mut h, head.as_bytes());
                for (k, v) in self.fs.xattrs(ino)? {
                    field(&mut h, &k);
                    field(&mut h, &v);
                }
                match a.kind {
                    FileKind::Regular => {
                        let mut offset = 0u64;
                        loop {
                            let n = self.fs.read(ino, offset, &mut buf)?;
                            if n == 0 {
                                break;
                            }
                            h.update(&buf[..n]);
                            offset += n as u64;
                        }
                        h.update(&offset.to_le_bytes());
                    }
                    FileKind::Symlink => field(&mut h, &self.fs.readlink(ino)?),
                    FileKind::Directory => {
                        for n in self.list(&path)?.into_iter().rev() {
                            work.push((join(&path, &n), join(&rel, &n)));
                        }
                    }
                    _ => field(&mut h, &a.rdev.to_le_bytes()),
                }
            }
        }
        Ok(h.finish().to_string())
    }
}

#[cfg(test)]
impl ImageTree {
    /// The xattrs of the entry at canonical `path` (none if it is missing).
    pub fn xattrs_at(&mut self, path: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let ino = self.ino(path).ok().flatten();
        ino.and_then(|i| self.fs.xattrs(i).ok()).unwrap_or_default()
    }
}

fn join_str(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Reads a file of a union tree from the start.
struct UnionReader<'a> {
    fs: &'a UnionFs,
    ino: u64,
    offset: u64,
}

impl Read for UnionReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .fs
            .read(self.ino, self.offset, buf)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl Tree for ImageTree {
    fn node(&mut self, path: &[u8]) -> io::Result<Option<Node>> {
        if let Some(n) = self.pending.get(path) {
            return Ok(Some(n.clone()));
        }
        let to_io = |e: UnionError| io::Error::from_raw_os_error(e.errno());
        let Some(ino) = self.ino(path).map_err(to_io)? else {
            return Ok(None);
        };
        let attr = self.fs.getattr(ino).map_err(to_io)?;
        Ok(Some(match attr.kind {
            FileKind::Directory => Node::Dir,
            FileKind::Symlink => Node::Symlink(self.fs.readlink(ino).map_err(to_io)?),
            _ => Node::Other,
        }))
    }
}

/// A layer being written over an image.
pub struct LayerBuild<'s> {
    out: LayerWriter<'s>,
    pub tree: ImageTree,
    /// The mtime of directories the build creates.
    pub now: i64,
    /// (archive path, path written) of entries unpacked by ADD, for hard links.
    unpacked: HashMap<Vec<u8>, Vec<u8>>,
}

/// Where a COPY or ADD goes and how its files are owned.
pub struct CopySpec {
    /// Absolute, as written (a trailing `/` says "a directory").
    pub dest: String,
    pub owner: Option<(u32, u32)>,
    pub chmod: Option<u32>,
    /// ADD: unpack local tar archives.
    pub unpack: bool,
}

/// Where the sources of a COPY go: into a directory, or one file at a path.
enum Dest {
    Into(Vec<u8>),
    As(Vec<u8>),
}

fn check_name(path: &[u8]) -> Result<(), StepError> {
    let (_, name) = split(path);
    if name.starts_with(b".wh.") {
        return Err(StepError::Msg(format!(
            "{}: names starting with .wh. mark deletions in image layers and cannot be copied",
            lossy(path)
        )));
    }
    Ok(())
}

impl<'s> LayerBuild<'s> {
    /// A layer over `tree`, the parent image's tree.
    pub fn new(store: &'s Store, tree: ImageTree, now: i64) -> Result<Self, StepError> {
        Ok(LayerBuild {
            out: LayerWriter::new(store, crate::layer::Compression::Gzip)?,
            tree,
            now,
            unpacked: HashMap::new(),
        })
    }

    pub fn finish(self) -> Result<LayerInfo, StepError> {
        Ok(self.out.finish()?)
    }

    fn created_dir_meta(&self, owner: Option<(u32, u32)>) -> TarMeta {
        let (uid, gid) = owner.unwrap_or((0, 0));
        TarMeta {
            mode: 0o755,
            uid,
            gid,
            mtime: self.now,
            xattrs: Vec::new(),
        }
    }

    /// Resolves directory `path` (following symlinks) and creates what is
    /// missing; returns its canonical path and whether anything was created.
    pub fn ensure_dir(
        &mut self,
        path: &[u8],
        owner: Option<(u32, u32)>,
    ) -> Result<(Vec<u8>, bool), StepError> {
        let r = self.tree.resolve(path, true)?;
        match r.node {
            Some(Node::Dir) => return Ok((r.path, false)),
            Some(_) => {
                return Err(StepError::Msg(format!(
                    "{}: not a directory in the image",
                    lossy(&r.path)
                )));
            }
            None => {}
        }
        let meta = self.created_dir_meta(owner);
        for m in r.missing() {
            check_name(&m)?;
            self.out.add_dir(&m, &meta)?;
            self.tree.pending.insert(m, Node::Dir);
        }
        Ok((r.path, true))
    }

    /// The canonical path that `rel` (below canonical dir `base`) is written
    /// at; its parent is created if missing.
    fn target(&mut self, base: &[u8], rel: &[u8]) -> Result<Vec<u8>, StepError> {
        let (dir, name) = split(rel);
        let parent = if dir.is_empty() {
            base.to_vec()
        } else {
            self.ensure_dir(&join(base, dir), None)?.0
        };
        Ok(join(&parent, name))
    }

    fn put(
        &mut self,
        target: &[u8],
        kind: &Kind,
        meta: &TarMeta,
        size: u64,
        data: Option<&mut dyn Read>,
    ) -> Result<(), StepError> {
        check_name(target)?;
        let node = match kind {
            Kind::Dir => {
                self.out.add_dir(target, meta)?;
                Node::Dir
            }
            Kind::File => {
                let data: Box<dyn Read> = match data {
                    Some(d) => Box::new(d),
                    None => Box::new(io::empty()),
                };
                self.out.add_file(target, meta, size, data)?;
                Node::Other
            }
            Kind::Symlink(t) => {
                self.out.add_symlink(target, meta, t)?;
                Node::Symlink(t.clone())
            }
            Kind::Fifo => {
                self.out.add_fifo(target, meta)?;
                Node::Other
            }
            Kind::Device { block, rdev } => {
                self.out.add_device(
                    target,
                    meta,
                    *block,
                    libc::major(*rdev),
                    libc::minor(*rdev),
                )?;
                Node::Other
            }
            Kind::Socket => {
                log::warn!(
                    "{}: sockets cannot be stored in a layer; left out",
                    lossy(target)
                );
                return Ok(());
            }
        };
        self.tree.pending.insert(target.to_vec(), node);
        Ok(())
    }

    fn meta(&self, spec: &CopySpec, mode: u32, owner: (u32, u32), mtime: i64) -> TarMeta {
        let (uid, gid) = spec.owner.unwrap_or(owner);
        TarMeta {
            mode: spec.chmod.unwrap_or(mode & 0o7777),
            uid,
            gid,
            mtime,
            xattrs: Vec::new(),
        }
    }

    /// COPY (or ADD) `sources` from `ctx` as `spec` says, with Docker's
    /// rules: a directory's contents go into the destination; files go into
    /// it when it is a directory (or written as one), else become it.
    pub fn copy(
        &mut self,
        ctx: &Context,
        sources: &[Source],
        inline: &[(String, Vec<u8>)],
        spec: &CopySpec,
    ) -> Result<(), StepError> {
        let archive = sources
            .iter()
            .map(|s| Ok(spec.unpack && is_archive(ctx, s)?))
            .collect::<Result<Vec<bool>, StepError>>()?;
        let many = sources.len() + inline.len() > 1
            || sources.iter().any(|s| s.kind == Kind::Dir)
            || archive.contains(&true);
        let dir = match self.dest(spec, many)? {
            Dest::As(path) => {
                if let Some((_, data)) = inline.first() {
                    return self.put_bytes(&path, data, spec);
                }
                let Some(src) = sources.first() else {
                    return Ok(());
                };
                return self.copy_one(ctx, src, &path, spec);
            }
            Dest::Into(dir) => dir,
        };
        for (src, archive) in sources.iter().zip(archive) {
            match src.kind {
                Kind::Dir => self.copy_tree(ctx, src, &dir, spec)?,
                _ if archive => self.unpack(ctx, src, &dir, spec)?,
                _ => {
                    let target = join(&dir, src.name().as_bytes());
                    self.copy_one(ctx, src, &target, spec)?;
                }
            }
        }
        for (name, data) in inline {
            self.put_bytes(&join(&dir, name.as_bytes()), data, spec)?;
        }
        Ok(())
    }

    /// Docker's rule for the destination: a directory when it is written
    /// as one, there are several sources (or a directory), or the image
    /// has a directory there; else the path the one source becomes.
    fn dest(&mut self, spec: &CopySpec, many: bool) -> Result<Dest, StepError> {
        let dest = spec.dest.as_bytes();
        let into_dir = spec.dest.ends_with('/')
            || many
            || self.tree.resolve(dest, true)?.node == Some(Node::Dir);
        if into_dir {
            return Ok(Dest::Into(self.ensure_dir(dest, spec.owner)?.0));
        }
        let r = self.tree.resolve(dest, true)?;
        let (parent, name) = split(&r.path);
        let (parent, name) = (parent.to_vec(), name.to_vec());
        let (parent, _) = self.ensure_dir(&parent, spec.owner)?;
        Ok(Dest::As(join(&parent, &name)))
    }

    /// A heredoc's document as a file (0644 unless --chmod says otherwise).
    fn put_bytes(&mut self, target: &[u8], data: &[u8], spec: &CopySpec) -> Result<(), StepError> {
        let meta = self.meta(spec, 0o644, (0, 0), self.now);
        self.put(
            target,
            &Kind::File,
            &meta,
            data.len() as u64,
            Some(&mut &data[..]),
        )
    }

    /// COPY --from: `sources` of image tree `src`, with their owners, modes,
    /// mtimes and xattrs (--chown and --chmod win); a directory's contents go into
    /// the destination, its symlinks copied as symlinks.
    pub fn copy_image(
        &mut self,
        src: &mut ImageTree,
        sources: &[ImageSource],
        spec: &CopySpec,
    ) -> Result<(), StepError> {
        let mut kinds = Vec::new();
        for s in sources {
            kinds.push(src.node(&s.path).map_err(|e| StepError::Io {
                path: lossy(&s.path),
                source: e,
            })?);
        }
        let many = sources.len() > 1 || kinds.contains(&Some(Node::Dir));
        // Hard-linked files (one union inode) stay linked: the path each
        // inode was first written at.
        let mut links: HashMap<u64, Vec<u8>> = HashMap::new();
        let dir = match self.dest(spec, many)? {
            Dest::As(path) => match sources.first() {
                Some(s) => {
                    return self
                        .put_image_entry(src, &s.path, &path, spec, &mut links)
                        .map(drop);
                }
                None => return Ok(()),
            },
            Dest::Into(dir) => dir,
        };
        for (s, kind) in sources.iter().zip(kinds) {
            if kind != Some(Node::Dir) {
                let target = join(&dir, &s.name);
                self.put_image_entry(src, &s.path, &target, spec, &mut links)?;
                continue;
            }
            // (path in src, path below the destination), parents first.
            let mut work: Vec<(Vec<u8>, Vec<u8>)> = src
                .list(&s.path)?
                .into_iter()
                .rev()
                .map(|n| (join(&s.path, &n), n))
                .collect();
            while let Some((path, rel)) = work.pop() {
                let target = self.target(&dir, &rel)?;
                if self.put_image_entry(src, &path, &target, spec, &mut links)? {
                    for n in src.list(&path)?.into_iter().rev() {
                        work.push((join(&path, &n), join(&rel, &n)));
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes entry `path` of `src` at `target`; true for a directory.
    fn put_image_entry(
        &mut self,
        src: &mut ImageTree,
        path: &[u8],
        target: &[u8],
        spec: &CopySpec,
        links: &mut HashMap<u64, Vec<u8>>,
    ) -> Result<bool, StepError> {
        let ino = src
            .ino(path)?
            .ok_or_else(|| StepError::Msg(format!("{}: not in the image", lossy(path))))?;
        let a = src.fs.getattr(ino)?;
        let mut meta = self.meta(spec, a.perm, (a.uid, a.gid), a.mtime.secs);
        // File capabilities and the like go with the file, as BuildKit copies them.
        meta.xattrs = src.fs.xattrs(ino)?;
        let kind = match a.kind {
            FileKind::Directory => Kind::Dir,
            FileKind::Regular => {
                if a.nlink > 1 {
                    if let Some(first) = links.get(&ino) {
                        check_name(target)?;
                        self.out.add_hardlink(target, &meta, first)?;
                        self.tree.pending.insert(target.to_vec(), Node::Other);
                        return Ok(false);
                    }
                    links.insert(ino, target.to_vec());
                }
                let mut r = UnionReader {
                    fs: &src.fs,
                    ino,
                    offset: 0,
                };
                self.put(target, &Kind::File, &meta, a.size, Some(&mut r))?;
                return Ok(false);
            }
            FileKind::Symlink => Kind::Symlink(src.fs.readlink(ino)?),
            FileKind::Fifo => Kind::Fifo,
            FileKind::CharDevice | FileKind::BlockDevice => Kind::Device {
                block: a.kind == FileKind::BlockDevice,
                rdev: a.rdev,
            },
            FileKind::Socket => Kind::Socket,
        };
        self.put(target, &kind, &meta, 0, None)?;
        Ok(kind == Kind::Dir)
    }

    fn copy_one(
        &mut self,
        ctx: &Context,
        src: &Source,
        target: &[u8],
        spec: &CopySpec,
    ) -> Result<(), StepError> {
        let meta = self.meta(spec, src.stat.st_mode, (0, 0), src.stat.st_mtime);
        if src.kind == Kind::File {
            let mut f = ctx.open_file(src)?;
            return self.put(
                target,
                &Kind::File,
                &meta,
                src.stat.st_size as u64,
                Some(&mut f),
            );
        }
        self.put(target, &src.kind, &meta, 0, None)
    }

    fn copy_tree(
        &mut self,
        ctx: &Context,
        src: &Source,
        dir: &[u8],
        spec: &CopySpec,
    ) -> Result<(), StepError> {
        ctx.walk::<StepError>(src, &mut |e| {
            let target = self.target(dir, &e.rel)?;
            let meta = self.meta(spec, e.stat.st_mode, (0, 0), e.stat.st_mtime);
            if e.kind == Kind::File {
                let mut f = e.open().map_err(|x| StepError::Io {
                    path: ctx.path().join(&src.rel).display().to_string(),
                    source: x,
                })?;
                self.put(
                    &target,
                    &Kind::File,
                    &meta,
                    e.stat.st_size as u64,
                    Some(&mut f),
                )
            } else {
                self.put(&target, &e.kind, &meta, 0, None)
            }
        })
    }

    /// Unpacks tar archive `src` into canonical directory `dir`.
    fn unpack(
        &mut self,
        ctx: &Context,
        src: &Source,
        dir: &[u8],
        spec: &CopySpec,
    ) -> Result<(), StepError> {
        let bad = |why: String| StepError::Msg(format!("{}: {why}", src.rel));
        let reader = decompressed(ctx.open_file(src)?).map_err(|e| bad(e.to_string()))?;
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| bad(e.to_string()))?;
        // Paths this archive made a non-directory: nothing may be unpacked
        // under one (through a symlink), as layer ingest refuses the same.
        let mut non_dirs: HashSet<Vec<u8>> = HashSet::new();
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("not a readable tar archive: {e}")))?;
            let raw = entry.path_bytes().into_owned();
            let Some(rel) = archive_path(&raw) else {
                return Err(bad(format!(
                    "entry {:?} leaves the destination directory",
                    short_name(&raw)
                )));
            };
            if rel.is_empty() {
                continue;
            }
            normalize_path(&rel).map_err(|e| bad(e.to_string()))?;
            if let Some(parent) = under_non_dir(&non_dirs, &rel) {
                let e = LayerError::UnderNonDir {
                    path: short_name(&rel),
                    parent: short_name(parent),
                };
                return Err(bad(e.to_string()));
            }
            let h = entry.header();
            if h.entry_type() == tar::EntryType::Directory {
                non_dirs.remove(&rel);
            } else {
                non_dirs.insert(rel.clone());
            }
            let kind = match h.entry_type() {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => Kind::File,
                tar::EntryType::Symlink => Kind::Symlink(
                    entry
                        .link_name_bytes()
                        .map(|l| l.into_owned())
                        .unwrap_or_default(),
                ),
                tar::EntryType::Fifo => Kind::Fifo,
                tar::EntryType::Char | tar::EntryType::Block => Kind::Device {
                    block: h.entry_type() == tar::EntryType::Block,
                    rdev: libc::makedev(
                        h.device_major().ok().flatten().unwrap_or(0),
                        h.device_minor().ok().flatten().unwrap_or(0),
                    ),
                },
                tar::EntryType::Link => {
                    let link = entry
                        .link_name_bytes()
                        .map(|l| l.into_owned())
                        .unwrap_or_default();
                    let written = archive_path(&link)
                        .and_then(|l| self.unpacked.get(&l).cloned())
                        .ok_or_else(|| {
                            bad(format!(
                                "hard link {:?} names {:?}, which the archive does not hold before it",
                                short_name(&raw),
                                short_name(&link)
                            ))
                        })?;
                    let target = self.target(dir, &rel)?;
                    check_name(&target)?;
                    let meta = self.meta(spec, 0o644, (0, 0), 0);
                    self.out.add_hardlink(&target, &meta, &written)?;
                    self.tree.pending.insert(target.clone(), Node::Other);
                    self.unpacked.insert(rel, target);
                    continue;
                }
                _ => continue,
            };
            let owner = (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32);
            let meta = self.meta(
                spec,
                h.mode().unwrap_or(0o644),
                owner,
                h.mtime().unwrap_or(0) as i64,
            );
            let size = entry.size();
            let target = self.target(dir, &rel)?;
            if kind == Kind::File {
                self.put(&target, &kind, &meta, size, Some(&mut entry))?;
            } else {
                self.put(&target, &kind, &meta, 0, None)?;
            }
            self.unpacked.insert(rel, target);
        }
        Ok(())
    }
}

/// A proper ancestor of `rel` that is in `non_dirs`.
fn under_non_dir<'a>(non_dirs: &HashSet<Vec<u8>>, rel: &'a [u8]) -> Option<&'a [u8]> {
    if non_dirs.is_empty() {
        return None;
    }
    rel.iter()
        .enumerate()
        .filter(|&(_, &c)| c == b'/')
        .map(|(i, _)| &rel[..i])
        .find(|p| non_dirs.contains(*p))
}

/// An archive member's path made relative, or None if it climbs out.
fn archive_path(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c => out.push(c),
        }
    }
    Some(out.join(&b'/'))
}

/// Whether a file source is a tar archive (plain, gzip or zstd) for ADD to
/// unpack; xz and bzip2 are refused rather than copied as they are.
pub fn is_archive(ctx: &Context, src: &Source) -> Result<bool, StepError> {
    if src.kind != Kind::File {
        return Ok(false);
    }
    let mut head = [0u8; 6];
    let n = ctx.open_file(src)?.read(&mut head).unwrap_or(0);
    if head[..n].starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) || head[..n].starts_with(b"BZh") {
        return Err(StepError::Msg(format!(
            "{}: xz and bzip2 archives are not supported by ADD; use tar, tar.gz or tar.zst",
            src.rel
        )));
    }
    let Ok(mut r) = decompressed(ctx.open_file(src)?) else {
        return Ok(false);
    };
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < 512 {
        match r.read(&mut block[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    if got < 512 {
        return Ok(false);
    }
    if &block[257..262] == b"ustar" {
        return Ok(true);
    }
    // A v7 header: its checksum field holds the sum of its bytes, itself as spaces.
    let field = String::from_utf8_lossy(&block[148..156]);
    let Ok(want) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return Ok(false);
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum();
    Ok(sum == want)
}

/// `--chown=USER[:GROUP]` against the image's /etc/passwd and /etc/group:
/// names must exist there; a user without a group gets its uid as gid (as
/// Docker documents).
pub fn chown_ids(spec: &str, passwd: &str, group: &str) -> Result<(u32, u32), StepError> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => passwd_entries(passwd)
            .find(|e| e.name == u)
            .map(|e| e.uid)
            .ok_or_else(|| {
                StepError::Msg(format!("--chown: no user {u} in the image's /etc/passwd"))
            })?,
    };
    let gid = match g {
        None | Some("") => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_entries(group)
                .find(|(name, _, _)| *name == g)
                .map(|(_, gid, _)| gid)
                .ok_or_else(|| {
                    StepError::Msg(format!("--chown: no group {g} in the image's /etc/group"))
                })?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_never_climb_out() {
        assert_eq!(archive_path(b"./a/b"), Some(b"a/b".to_vec()));
        assert_eq!(archive_path(b"/etc/passwd"), Some(b"etc/passwd".to_vec()));
        assert_eq!(archive_path(b"./"), Some(Vec::new()));
        assert_eq!(archive_path(b"../../etc/passwd"), None);
        assert_eq!(archive_path(b"a/../../b"), None);
    }

    #[test]
    fn chown_resolves_names_in_the_image() {
        let passwd = "root:x:0:0::/root:/bin/sh\napp:x:1001:1002::/home/app:/bin/sh\n";
        let group = "root:x:0:\nstaff:x:50:\napp:x:1002:\n";
        assert_eq!(chown_ids("app:staff", passwd, group).unwrap(), (1001, 50));
        assert_eq!(chown_ids("app", passwd, group).unwrap(), (1001, 1001));
        assert_eq!(chown_ids("7:8", passwd, group).unwrap(), (7, 8));
        assert!(chown_ids("nobody", passwd, group).is_err());
        assert!(chown_ids("app:nogroup", passwd, group).is_err());
    }
}
