//! The daemon side of a container's control socket: `commit` asks it to hold
//! every change (`freeze`) for the moment it snapshots the upper directory.
//! Each client is served by its own thread, so one that connects and says
//! nothing delays nobody; a client silent for `SILENCE` is dropped (and its
//! freeze, if it had one, ends). Two freezes at once take turns.

use crate::container::{FREEZE, FROZEN, HOLD, HOLD_EVERY, THAW, THAWED};
use crate::union::UnionFs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long a client may stay silent: before its first line, and between
/// `hold`s while frozen (a live commit says `hold` every `HOLD_EVERY`).
const SILENCE: Duration = Duration::from_secs(10);
/// Clients served at once; more are turned away at once.
const MAX_CLIENTS: usize = 32;

const _: () = assert!(SILENCE.as_secs() >= 5 * HOLD_EVERY.as_secs());

pub fn listen(path: &Path, fs: Arc<UnionFs>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    let clients = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                    clients.fetch_sub(1, Ordering::SeqCst);
                    log::warn!("control: too many clients; one turned away");
                    continue;
                }
                let fs = fs.clone();
                let clients = clients.clone();
                let spawned = std::thread::Builder::new()
                    .name("control-client".into())
                    .spawn(move || {
                        if let Err(e) = serve(conn, &fs, SILENCE) {
                            log::warn!("control connection: {e}");
                        }
                        clients.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    log::warn!("control: cannot serve a client: {e}");
                }
            }
        })?;
    Ok(())
}

/// One client: `freeze`, then `hold`s, then `thaw`. Silence, EOF, an error
/// or anything else ends the freeze without `thawed`.
fn serve(conn: UnixStream, fs: &UnionFs, silence: Duration) -> std::io::Result<()> {
    conn.set_read_timeout(Some(silence))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim() != FREEZE {
        return Ok(());
    }
    let guard = fs.freeze();
    writeln!(writer, "{FROZEN}")?;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) if line.trim() == HOLD => continue,
            Ok(_) if line.trim() == THAW => break,
            Ok(_) => {
                log::warn!("control: unexpected {line:?}; thawing");
                return Ok(());
            }
            Err(e) => {
                // The guard drops on return: changes resume.
                log::warn!("control: a frozen client went silent ({e}); thawing");
                return Ok(());
            }
        }
    }
    drop(guard);
    writeln!(writer, "{THAWED}")
}
