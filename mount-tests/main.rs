//! Tests on real mounts: they need root and /dev/fuse. Run by hand without
//! them they skip with a loud message; with LAYERFS_CI=1 (as CI runs them)
//! a skip is a failure.

mod support;

mod build;
mod build_mounts;
mod build_parity;
mod build_stages;
mod chroot;
mod cli;
mod cold_reads;
mod crash;
mod credentials;
mod debian;
mod durability;
mod everyday;
mod filecache;
mod fixtures;
mod hostile;
mod index_checks;
mod interop;
mod lazy;
mod live_commit;
mod memory;
mod posix;
mod readonly;
mod rootless;
mod rootless_run;
mod run;
mod run_exit;
mod stress;
mod system;
mod writable;
