//! Mounting an image: the FUSE daemon (foreground, or started in the
//! background with a readiness pipe), its records, and unmounting — also of a
//! mount whose daemon was killed.

mod control;
mod daemon;
mod filecache;
mod fuse;
mod lazy;
pub mod records;
pub mod stats;

pub use daemon::{
    MountOptions, daemon_args, ignore_sigpipe, mount_background, report_ready, serve, spawn_daemon,
    take_ready_pipe, unmount,
};
pub use records::{MountRecord, is_mounted};

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mountpoint {0} does not exist")]
    NoMountpoint(PathBuf),
    #[error("mountpoint {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("mountpoint {0} is not empty")]
    NotEmpty(PathBuf),
    #[error("{0} is already a mountpoint")]
    AlreadyMounted(PathBuf),
    #[error("{0} is not mounted")]
    NotMounted(PathBuf),
    #[error("{0} is busy: close what uses it, or unmount with --lazy")]
    Busy(PathBuf),
    #[error(
        "/dev/fuse is missing: load the fuse module (modprobe fuse) or give the container --device /dev/fuse"
    )]
    NoFuse,
    #[error("mounting as a normal user needs fusermount3 (apt-get install fuse3)")]
    NoFusermount,
    #[error(
        "/dev/fuse is not open to you (some VMs ship it 0600): as root, chmod 0666 /dev/fuse (Debian's default) and make it stay in a udev rule"
    )]
    FuseNotAccessible,
    #[error("{0} is not a mountpoint or a container")]
    NotAContainer(String),
    #[error("{} is not a layerfs mount", .0.display())]
    NotAMount(PathBuf),
    #[error("{} is a read-only mount, not a container", .0.display())]
    ReadOnlyMount(PathBuf),
    #[error("container {name} is already mounted at {}", at.display())]
    ContainerMounted { name: String, at: PathBuf },
    #[error(transparent)]
    Container(#[from] crate::container::ContainerError),
    #[error("the mount daemon failed: {0}")]
    Daemon(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
}

impl MountError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        MountError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
