//! The daemon side of a container's control socket: `commit` asks it to hold
//! every change (`freeze`) for the moment it reads the upper directory.

use crate::container::{FREEZE, FROZEN, THAW};
use crate::union::UnionFs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

pub fn listen(path: &Path, fs: Arc<UnionFs>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let fs = fs.clone();
                // One client at a time: a second freeze waits for the first thaw.
                if let Err(e) = serve(conn, &fs) {
                    log::warn!("control connection: {e}");
                }
            }
        })?;
    Ok(())
}

fn serve(conn: UnixStream, fs: &UnionFs) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim() != FREEZE {
        return Ok(());
    }
    let guard = fs.freeze();
    writeln!(writer, "{FROZEN}")?;
    line.clear();
    // A thaw, or the client going away (EOF or error), ends the freeze.
    let _ = reader.read_line(&mut line);
    if line.trim() != THAW && !line.is_empty() {
        log::warn!("control: unexpected {line:?}; thawing");
    }
    drop(guard);
    Ok(())
}
