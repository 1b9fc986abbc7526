//! Tests on real mounts: they need root and /dev/fuse. Run by hand without
//! them they skip with a loud message; with LAYERFS_CI=1 (as CI runs them)
//! a skip is a failure.

mod support;

mod build;
mod chroot;
mod cli;
mod crash;
mod debian;
mod durability;
mod fixtures;
mod hostile;
mod interop;
mod lazy;
mod live_commit;
mod posix;
mod readonly;
mod run;
mod stress;
mod writable;
