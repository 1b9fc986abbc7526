//! A container's writable mount served by a thread of this process, for as
//! long as a run needs it; unmounted when finished or dropped (on every
//! path out of a run, errors and panics included).

use super::{RunError, io};
use crate::container::{self, Container};
use crate::layer::SpanCache;
use crate::mount::{MountError, MountOptions, serve};
use crate::oci::Digest;
use crate::store::Store;
use crate::union::{Stack, UnionFs, UpperDir};
use nix::mount::MntFlags;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// Creates container `name` over the image whose top-level manifest is
/// `manifest` (for this platform, the manifest over `layers`), its root
/// owned and moded as the image's root (as `mount --writable` makes one).
pub fn create_container(
    store: &Store,
    name: Option<&str>,
    image: &str,
    manifest: Digest,
    layers: &[Digest],
    build_pid: Option<u32>,
) -> Result<Container, RunError> {
    let c = container::create(store, name, image, manifest, build_pid)?;
    let adopt = || -> Result<(), RunError> {
        let stack = Stack::open(store, layers, SpanCache::new(1 << 20))?;
        let upper = UpperDir::open(&c.upper(), &c.work()).map_err(|e| io(&c.upper(), e))?;
        UnionFs::new(stack, Some(upper)).adopt_lower_root()?;
        Ok(())
    };
    let adopted = adopt();
    if let Err(e) = adopted {
        let _ = container::remove(store, &c);
        return Err(e);
    }
    Ok(c)
}

pub struct Session {
    mountpoint: PathBuf,
    thread: Option<JoinHandle<Result<(), MountError>>>,
}

impl Session {
    /// Mounts container `name` writable (setuid bits honoured, device nodes
    /// not) on the empty directory `mountpoint`; returns once it serves.
    pub fn start(store: &Store, name: &str, mountpoint: &Path) -> Result<Session, RunError> {
        let opts = MountOptions {
            container: Some(name.to_string()),
            mountpoint: mountpoint.to_path_buf(),
            suid: true,
            dev: false,
            cache_bytes: 64 << 20,
            threads: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 4),
            in_process: true,
            ..Default::default()
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let store = store.clone();
        let thread = std::thread::Builder::new()
            .name("fuse".into())
            .spawn(move || {
                serve(&store, &opts, |r| {
                    let _ = tx.send(r.is_ok());
                })
            })
            .map_err(|e| io(mountpoint, e))?;
        let mut session = Session {
            mountpoint: mountpoint.to_path_buf(),
            thread: Some(thread),
        };
        match rx.recv() {
            Ok(true) => Ok(session),
            // The thread ends with the error that stopped it.
            _ => {
                let result = session.thread.take().map(JoinHandle::join);
                Err(match result {
                    Some(Ok(Err(e))) => e.into(),
                    _ => RunError::Setup("the mount thread stopped".into()),
                })
            }
        }
    }

    /// Unmounts and waits for the serving thread to end.
    pub fn finish(mut self) -> Result<(), RunError> {
        self.stop(MntFlags::empty())
    }

    fn stop(&mut self, flags: MntFlags) -> Result<(), RunError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let r = nix::mount::umount2(&self.mountpoint, flags);
        if r.is_err() {
            // Still in use (a process we could not see): the kernel finishes
            // when it lets go; the session ends then.
            let _ = nix::mount::umount2(&self.mountpoint, MntFlags::MNT_DETACH);
        }
        match thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(RunError::Setup("the mount thread panicked".into())),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.stop(MntFlags::MNT_DETACH);
    }
}
