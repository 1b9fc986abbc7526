//! Where `save` and `export` write a file: a regular file (or a path not yet
//! there) is replaced only once the output is whole, through a temp file
//! beside it; an existing FIFO or character device (a pipe, /dev/stdout,
//! /dev/null, a tape) is written into as a shell's `>` would; anything else
//! (a directory, a block device, a socket, a terminal) is refused.

use super::ArchiveError;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// An output file being written; `finish` makes it visible.
pub struct Output {
    path: PathBuf,
    kind: Kind,
}

enum Kind {
    /// A temp file to rename over `path` (regular files and new paths).
    Replace(NamedTempFile),
    /// The FIFO or character device at `path`, opened for writing.
    Direct(File),
}

impl Output {
    /// Opens `path` for writing (a FIFO waits here for its reader).
    pub fn create(path: &Path) -> Result<Output, ArchiveError> {
        let kind = match fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Kind::Replace(temp_beside(path)?),
            Err(e) => return Err(io_err(path, e)),
            Ok(md) if md.is_file() => Kind::Replace(temp_beside(&final_path(path)?)?),
            Ok(md) if md.file_type().is_fifo() || md.file_type().is_char_device() => {
                let file = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOCTTY)
                    .open(path)
                    .map_err(|e| io_err(path, e))?;
                let ft = file.metadata().map_err(|e| io_err(path, e))?.file_type();
                if !(ft.is_fifo() || ft.is_char_device()) {
                    return Err(refused(path, "it changed while being opened"));
                }
                // As for `-o -`: an archive is no use on a screen.
                if std::io::IsTerminal::is_terminal(&file) {
                    return Err(refused(path, "is a terminal; use a file or a pipe"));
                }
                Kind::Direct(file)
            }
            Ok(md) => return Err(refused(path, describe(&md.file_type()))),
        };
        Ok(Output {
            path: path.to_path_buf(),
            kind,
        })
    }

    pub fn file(&self) -> &File {
        match &self.kind {
            Kind::Replace(tmp) => tmp.as_file(),
            Kind::Direct(f) => f,
        }
    }

    /// Makes a replaced file visible (synced, mode 0644, renamed over the
    /// path); a FIFO or device has had its bytes already. Call after
    /// flushing every writer over `file()`.
    pub fn finish(self) -> Result<(), ArchiveError> {
        let Kind::Replace(tmp) = self.kind else {
            return Ok(());
        };
        let path = &self.path;
        let file = tmp.as_file();
        file.sync_all().map_err(|e| io_err(path, e))?;
        // Temp files are created 0600; an archive is as readable as any file.
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(|e| io_err(path, e))?;
        let dest = final_path(path)?;
        tmp.persist(&dest).map_err(|e| io_err(path, e.error))?;
        Ok(())
    }
}

/// The file a path names: a symlink to a regular file is followed, so the
/// file is replaced and the link kept.
fn final_path(path: &Path) -> Result<PathBuf, ArchiveError> {
    let md = fs::symlink_metadata(path);
    match md {
        Ok(md) if md.file_type().is_symlink() => path.canonicalize().map_err(|e| io_err(path, e)),
        _ => Ok(path.to_path_buf()),
    }
}

fn temp_beside(path: &Path) -> Result<NamedTempFile, ArchiveError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| refused(path, "not a file name"))?;
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| io_err(dir, e))
}

fn describe(ft: &fs::FileType) -> &'static str {
    if ft.is_dir() {
        "is a directory"
    } else if ft.is_block_device() {
        "is a block device"
    } else if ft.is_socket() {
        "is a socket"
    } else {
        "is not a regular file, a FIFO or a character device"
    }
}

fn refused(path: &Path, why: &str) -> ArchiveError {
    ArchiveError::Output {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

fn io_err(path: &Path, source: io::Error) -> ArchiveError {
    ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::Output;
    use std::io::{Read, Write};
    use std::os::unix::fs::FileTypeExt;
    use std::path::Path;

    fn write_all(path: &Path, bytes: &[u8]) -> Result<(), String> {
        let out = Output::create(path).map_err(|e| e.to_string())?;
        out.file().write_all(bytes).map_err(|e| e.to_string())?;
        out.finish().map_err(|e| e.to_string())
    }

    #[test]
    fn a_regular_file_or_new_path_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        std::fs::write(&old, b"old content, longer").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&old, &link).unwrap();
        write_all(&dir.path().join("new"), b"new").unwrap();
        write_all(&link, b"via link").unwrap();
        assert_eq!(std::fs::read(dir.path().join("new")).unwrap(), b"new");
        assert_eq!(std::fs::read(&old).unwrap(), b"via link");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "the link is kept"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            3,
            "no temp file left"
        );
    }

    #[test]
    fn a_fifo_reader_gets_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                std::fs::File::open(&fifo)
                    .unwrap()
                    .read_to_end(&mut got)
                    .unwrap();
                got
            })
        };
        write_all(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    }

    #[test]
    fn a_full_device_fails_and_stays_a_device() {
        let err = write_all(Path::new("/dev/full"), b"x").unwrap_err();
        assert!(err.contains("No space left on device"), "{err}");
        let ft = std::fs::metadata("/dev/full").unwrap().file_type();
        assert!(ft.is_char_device());
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_all(dir.path(), b"x").unwrap_err();
        assert!(err.contains("is a directory"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
