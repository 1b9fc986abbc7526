//! Writing a union view, or one directory of it, as plain tar entries
//! (whiteouts applied, hard links kept within the stream): what `export`
//! makes of an image or container, and what `commit` writes for a renamed
//! lower directory.

use crate::layer::{LayerError, TarMeta, TarWriter};
use crate::union::upper::join;
use crate::union::{FileKind, UnionError, UnionFs};
use std::collections::HashMap;
use std::io::{Read, Write};

#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("{path}: {source}")]
    Union { path: String, source: UnionError },
    #[error(transparent)]
    Layer(#[from] LayerError),
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn uerr(path: &[u8]) -> impl FnOnce(UnionError) -> FlattenError + '_ {
    move |source| FlattenError::Union {
        path: lossy(path),
        source,
    }
}

pub struct Flatten<'a> {
    view: &'a UnionFs,
    /// The first path written of each inode with several names.
    links: HashMap<u64, Vec<u8>>,
}

impl<'a> Flatten<'a> {
    pub fn new(view: &'a UnionFs) -> Self {
        Flatten {
            view,
            links: HashMap::new(),
        }
    }

    /// Writes every entry below directory `ino`, whose path is `rel`.
    pub fn dir<W: Write>(
        &mut self,
        out: &mut TarWriter<W>,
        ino: u64,
        rel: &[u8],
    ) -> Result<(), FlattenError> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        self.view
            .readdir(ino, 0, 0, false, |e, _| {
                if e.name != b"." && e.name != b".." {
                    names.push(e.name.to_vec());
                }
                true
            })
            .map_err(uerr(rel))?;
        for name in names {
            let path = join(rel, &name);
            let a = self.view.lookup(ino, &name).map_err(uerr(&path))?;
            let mut xattrs = Vec::new();
            let list = self.view.listxattr(a.ino).map_err(uerr(&path))?;
            for n in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
                xattrs.push((
                    n.to_vec(),
                    self.view.getxattr(a.ino, n).map_err(uerr(&path))?,
                ));
            }
            let meta = TarMeta {
                mode: a.perm,
                uid: a.uid,
                gid: a.gid,
                mtime: a.mtime.secs,
                xattrs,
            };
            match a.kind {
                FileKind::Directory => {
                    out.add_dir(&path, &meta)?;
                    self.dir(out, a.ino, &path)?;
                }
                FileKind::Regular => {
                    if a.nlink > 1 {
                        if let Some(first) = self.links.get(&a.ino) {
                            out.add_hardlink(&path, &meta, first)?;
                            self.view.forget(a.ino, 1);
                            continue;
                        }
                        self.links.insert(a.ino, path.clone());
                    }
                    self.file(out, a.ino, &path, &meta, a.size)?;
                }
                FileKind::Symlink => {
                    let target = self.view.readlink(a.ino).map_err(uerr(&path))?;
                    out.add_symlink(&path, &meta, &target)?;
                }
                FileKind::CharDevice | FileKind::BlockDevice => {
                    let block = a.kind == FileKind::BlockDevice;
                    out.add_device(
                        &path,
                        &meta,
                        block,
                        libc::major(a.rdev),
                        libc::minor(a.rdev),
                    )?;
                }
                FileKind::Fifo => out.add_fifo(&path, &meta)?,
                FileKind::Socket => log::warn!(
                    "{}: sockets cannot be stored in a tar; left out",
                    lossy(&path)
                ),
            }
            // The walk took a reference per lookup, as the kernel would; give it back.
            self.view.forget(a.ino, 1);
        }
        Ok(())
    }

    fn file<W: Write>(
        &self,
        out: &mut TarWriter<W>,
        ino: u64,
        path: &[u8],
        meta: &TarMeta,
        size: u64,
    ) -> Result<(), FlattenError> {
        if !self.view.is_writable() {
            // A read-only view reads by inode, no handle needed.
            let r = ViewReader::new(self.view, ino, None, path);
            return Ok(out.add_file(path, meta, size, r)?);
        }
        let opened = self.view.open(ino, libc::O_RDONLY).map_err(uerr(path))?;
        let r = ViewReader::new(self.view, ino, Some(opened.fh), path);
        let res = out.add_file(path, meta, size, r);
        self.view.release(opened.fh);
        Ok(res?)
    }
}

/// Reads a file of a union view through its open handle `fh`, or by inode
/// (files of a read-only view, a container's lower files). Errors name it.
pub(crate) struct ViewReader<'a> {
    view: &'a UnionFs,
    ino: u64,
    fh: Option<u64>,
    off: u64,
    path: String,
}

impl<'a> ViewReader<'a> {
    pub(crate) fn new(view: &'a UnionFs, ino: u64, fh: Option<u64>, path: &[u8]) -> Self {
        ViewReader {
            view,
            ino,
            fh,
            off: 0,
            path: lossy(path),
        }
    }
}

impl Read for ViewReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let r = match self.fh {
            Some(fh) => self.view.read_fh(fh, self.off, buf),
            None => self.view.read(self.ino, self.off, buf),
        };
        let n = r.map_err(|e| std::io::Error::other(format!("{}: {e}", self.path)))?;
        self.off += n as u64;
        Ok(n)
    }
}
