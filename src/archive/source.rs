//! Reading the files of an archive, whether it is a directory (an OCI layout)
//! or a tar file. A tar is indexed once, member name → byte range, and its
//! members are then read in place: a large archive is neither extracted nor
//! held in memory. A compressed tar, or one read from standard input, is
//! first spooled to an unnamed temp file in the store, so nothing of it is
//! left behind whatever happens. Symlinks and hard links between members
//! (old `docker save` dedups layers with them) are followed inside the
//! archive, never on the host.

use super::ArchiveError;
use crate::layer::Compression;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Largest JSON file (manifest.json, index.json, a config) read into memory.
pub const MAX_JSON: u64 = 16 << 20;
const BLOCK: u64 = 512;
const MAX_LINKS: usize = 16;

pub struct Source {
    /// How errors name the archive: its path as given, or `stdin`.
    name: String,
    kind: Kind,
}

enum Kind {
    Dir(PathBuf),
    Tar {
        file: File,
        members: HashMap<String, Member>,
    },
}

#[derive(Clone, Debug)]
enum Member {
    File { offset: u64, size: u64 },
    Symlink(String),
    HardLink(String),
    Dir,
    Other,
}

/// A member's bytes, read by position so several can be open at once.
struct Section<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside this file",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Source {
    /// Opens `path`: a directory as it is, a tar in place, a compressed tar
    /// after spooling it uncompressed into `tmp_dir`.
    pub fn open(path: &Path, tmp_dir: &Path) -> Result<Source, ArchiveError> {
        let name = path.display().to_string();
        let io_err = |e| ArchiveError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        if meta.is_dir() {
            return Ok(Source {
                name,
                kind: Kind::Dir(path.to_path_buf()),
            });
        }
        let file = File::open(path).map_err(io_err)?;
        if !meta.is_file() {
            // A pipe (`-i <(...)`) or device cannot be read in place.
            return Source::from_reader(file, &name, tmp_dir);
        }
        let mut head = [0u8; 4];
        let got = read_head(&mut &file, &mut head).map_err(io_err)?;
        match Compression::detect(&head[..got]) {
            Compression::None => Source::tar(name, file),
            c => {
                let spooled = spool(head_then(&head[..got], &file), c, tmp_dir, &name)?;
                Source::tar(name, spooled)
            }
        }
    }

    /// Reads an archive from a stream (standard input), spooling it to an
    /// unnamed temp file in `tmp_dir` and uncompressing it on the way.
    pub fn from_reader(
        mut src: impl Read,
        name: &str,
        tmp_dir: &Path,
    ) -> Result<Source, ArchiveError> {
        let mut head = [0u8; 4];
        let got = read_head(&mut src, &mut head).map_err(|e| ArchiveError::Format {
            archive: name.to_string(),
            why: format!("cannot read: {e}"),
        })?;
        let c = Compression::detect(&head[..got]);
        let spooled = spool(head_then(&head[..got], src), c, tmp_dir, name)?;
        Source::tar(name.to_string(), spooled)
    }

    fn tar(name: String, file: File) -> Result<Source, ArchiveError> {
        let members = index_tar(&file, &name)?;
        Ok(Source {
            name,
            kind: Kind::Tar { file, members },
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn member_error(&self, member: &str, why: impl Into<String>) -> ArchiveError {
        ArchiveError::Member {
            archive: self.name.clone(),
            member: member.to_string(),
            why: why.into(),
        }
    }

    /// Whether `member` exists (as anything: file, link or directory).
    pub fn exists(&self, member: &str) -> bool {
        let Some(name) = normalize(member) else {
            return false;
        };
        match &self.kind {
            Kind::Dir(root) => root.join(&name).exists(),
            Kind::Tar { members, .. } => members.contains_key(&name),
        }
    }

    /// The size of a regular file, following links.
    pub fn size(&self, member: &str) -> Result<u64, ArchiveError> {
        match &self.kind {
            Kind::Dir(_) => {
                let path = self.dir_path(member)?;
                let meta = fs::metadata(&path).map_err(|e| self.open_error(member, e))?;
                if !meta.is_file() {
                    return Err(self.member_error(member, "is not a regular file"));
                }
                Ok(meta.len())
            }
            Kind::Tar { .. } => self.resolve(member).map(|(_, size)| size),
        }
    }

    /// Opens a regular file, following links; returns its reader and size.
    pub fn open_member(
        &self,
        member: &str,
    ) -> Result<(Box<dyn Read + Send + '_>, u64), ArchiveError> {
        match &self.kind {
            Kind::Dir(_) => {
                let path = self.dir_path(member)?;
                let (file, size) = open_regular(&path).map_err(|e| match e.raw_os_error() {
                    Some(libc::ELOOP) => self.member_error(member, "is a symlink, not a file"),
                    _ => self.open_error(member, e),
                })?;
                let Some(size) = size else {
                    return Err(self.member_error(member, "is not a regular file"));
                };
                Ok((Box::new(file), size))
            }
            Kind::Tar { file, .. } => {
                let (offset, size) = self.resolve(member)?;
                Ok((
                    Box::new(Section {
                        file,
                        pos: offset,
                        end: offset + size,
                    }),
                    size,
                ))
            }
        }
    }

    /// Reads a small file (JSON) whole.
    pub fn read_small(&self, member: &str) -> Result<Vec<u8>, ArchiveError> {
        let (r, size) = self.open_member(member)?;
        if size > MAX_JSON {
            return Err(self.member_error(
                member,
                format!("is {size} bytes, more than the {MAX_JSON} a JSON file may have"),
            ));
        }
        let mut out = Vec::with_capacity(size as usize);
        r.take(MAX_JSON)
            .read_to_end(&mut out)
            .map_err(|e| self.member_error(member, format!("cannot read: {e}")))?;
        Ok(out)
    }

    /// The first bytes of a file (up to 4), for detecting its compression.
    pub fn head(&self, member: &str) -> Result<Vec<u8>, ArchiveError> {
        let (mut r, _) = self.open_member(member)?;
        let mut head = [0u8; 4];
        let got = read_head(&mut r, &mut head)
            .map_err(|e| self.member_error(member, format!("cannot read: {e}")))?;
        Ok(head[..got].to_vec())
    }

    fn open_error(&self, member: &str, e: io::Error) -> ArchiveError {
        if e.kind() == io::ErrorKind::NotFound {
            self.member_error(member, "is not in the archive")
        } else {
            self.member_error(member, e.to_string())
        }
    }

    fn dir_path(&self, member: &str) -> Result<PathBuf, ArchiveError> {
        let Kind::Dir(root) = &self.kind else {
            return Err(self.member_error(member, "not a directory archive"));
        };
        let name = normalize(member)
            .ok_or_else(|| self.member_error(member, "path leaves the archive"))?;
        Ok(root.join(name))
    }

    /// Follows symlinks and hard links to a regular file's byte range.
    fn resolve(&self, member: &str) -> Result<(u64, u64), ArchiveError> {
        let Kind::Tar { members, .. } = &self.kind else {
            return Err(self.member_error(member, "not a tar archive"));
        };
        let first = normalize(member)
            .ok_or_else(|| self.member_error(member, "path leaves the archive"))?;
        let mut cur = first.clone();
        for _ in 0..MAX_LINKS {
            match members.get(&cur) {
                None if cur == first => {
                    return Err(self.member_error(member, "is not in the archive"));
                }
                None => {
                    return Err(self.member_error(
                        member,
                        format!("links to {cur}, which is not in the archive"),
                    ));
                }
                Some(Member::File { offset, size }) => return Ok((*offset, *size)),
                Some(Member::Symlink(target)) => {
                    let base = cur.rsplit_once('/').map_or("", |(dir, _)| dir);
                    // An absolute target means the archive's root.
                    let joined = if target.starts_with('/') || base.is_empty() {
                        target.clone()
                    } else {
                        format!("{base}/{target}")
                    };
                    cur = normalize(&joined).ok_or_else(|| {
                        self.member_error(member, format!("links to {target}, outside the archive"))
                    })?;
                }
                Some(Member::HardLink(target)) => cur = target.clone(),
                Some(Member::Dir | Member::Other) => {
                    return Err(self.member_error(member, "is not a regular file"));
                }
            }
        }
        Err(self.member_error(member, "too many levels of links"))
    }
}

/// Opens a file of a directory archive without ever waiting on it: a FIFO
/// or device opens at once (O_NONBLOCK) and is then refused by its type, as
/// is a symlink (O_NOFOLLOW). The size is None for anything but a regular
/// file.
fn open_regular(path: &Path) -> io::Result<(File, Option<u64>)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok((file, None));
    }
    // Reads of a regular file block as usual (a FUSE file may need to).
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok((file, Some(meta.len())))
}

/// A member path in canonical form: no `./`, no leading `/`, no empty or `.`
/// components; `..` goes up one level and may not leave the archive.
pub fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

fn read_head(src: &mut impl Read, head: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < head.len() {
        match src.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn head_then<R: Read>(head: &[u8], rest: R) -> impl Read {
    io::Cursor::new(head.to_vec()).chain(rest)
}

/// Copies `src`, uncompressed, into an unnamed temp file (gone when closed,
/// even after a crash).
fn spool(
    src: impl Read,
    compression: Compression,
    tmp_dir: &Path,
    name: &str,
) -> Result<File, ArchiveError> {
    let mut out = tempfile::tempfile_in(tmp_dir).map_err(|e| ArchiveError::Io {
        path: tmp_dir.to_path_buf(),
        source: e,
    })?;
    let mut reader: Box<dyn Read> =
        match compression {
            Compression::None => Box::new(src),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(src)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(src).map_err(|e| {
                ArchiveError::Format {
                    archive: name.to_string(),
                    why: format!("cannot start zstd decoding: {e}"),
                }
            })?),
        };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let what = match compression {
                    Compression::None => "cannot read it".to_string(),
                    c => format!("{} stream is corrupt or truncated", c.name()),
                };
                return Err(ArchiveError::Format {
                    archive: name.to_string(),
                    why: format!("{what}: {e}"),
                });
            }
        };
        io::Write::write_all(&mut out, &buf[..n]).map_err(|e| ArchiveError::Io {
            path: tmp_dir.to_path_buf(),
            source: e,
        })?;
    }
    Ok(out)
}

/// Lists every member of a tar with where its data lies, and checks that the
/// archive is whole: each member's data within the file, and the end-of-archive
/// block after the last member.
fn index_tar(file: &File, name: &str) -> Result<HashMap<String, Member>, ArchiveError> {
    // The tar crate quotes header bytes and member names as they are; an
    // error stays one line.
    let format = |why: String| ArchiveError::Format {
        archive: name.to_string(),
        why: why
            .chars()
            .map(|c| match c.is_control() {
                true => c.escape_default().to_string(),
                false => c.to_string(),
            })
            .collect(),
    };
    let len = file
        .metadata()
        .map_err(|e| format(format!("cannot read: {e}")))?
        .len();
    if len == 0 {
        return Err(format("the file is empty".into()));
    }
    // The cursor may be anywhere (a spooled file is at its end).
    io::Seek::seek(&mut &*file, io::SeekFrom::Start(0))
        .map_err(|e| format(format!("cannot read: {e}")))?;
    let mut archive = tar::Archive::new(file);
    let entries = archive
        .entries_with_seek()
        .map_err(|e| format(format!("not a tar archive: {e}")))?;
    let mut members = HashMap::new();
    let mut end = 0u64;
    for entry in entries {
        let entry = entry.map_err(|e| {
            if members.is_empty() {
                format(format!("not a tar archive: {e}"))
            } else {
                format(format!("damaged or truncated tar archive: {e}"))
            }
        })?;
        let offset = entry.raw_file_position();
        let size = entry.size();
        let data_end = offset
            .checked_add(size)
            .ok_or_else(|| format("damaged tar archive: a member size overflows".into()))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if data_end > len {
            return Err(format(format!(
                "truncated: member {raw} needs {data_end} bytes, the file has {len}"
            )));
        }
        end = data_end.div_ceil(BLOCK) * BLOCK;
        let Some(path) = normalize(&raw) else {
            continue;
        };
        let link = || {
            entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default()
        };
        let member = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Member::File { offset, size },
            tar::EntryType::Symlink => Member::Symlink(link()),
            tar::EntryType::Link => match normalize(&link()) {
                Some(target) => Member::HardLink(target),
                None => Member::Other,
            },
            tar::EntryType::Directory => Member::Dir,
            _ => Member::Other,
        };
        members.insert(path, member);
    }
    if members.is_empty() {
        return Err(format("not a tar archive, or an empty one".into()));
    }
    // Writers end an archive with zero blocks; a file cut just after a member
    // has none, and would otherwise pass for whole.
    let mut block = [0u8; BLOCK as usize];
    let whole = end + BLOCK <= len
        && file.read_exact_at(&mut block, end).is_ok()
        && block.iter().all(|&b| b == 0);
    if !whole {
        return Err(format(
            "truncated: the tar archive has no end-of-archive marker".into(),
        ));
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_member_paths() {
        for (raw, want) in [
            ("./manifest.json", Some("manifest.json")),
            ("/blobs//sha256/./x", Some("blobs/sha256/x")),
            ("a/../b", Some("b")),
            ("abc/../../etc/passwd", None),
            ("../x", None),
            ("./", Some("")),
        ] {
            assert_eq!(normalize(raw).as_deref(), want, "{raw}");
        }
    }
}
