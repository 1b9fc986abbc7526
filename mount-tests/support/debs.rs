//! Small Debian packages for build tests: `hello`, and `procps` with the
//! libraries minbase lacks, taken from the host's apt cache when there,
//! else fetched once with `apt-get download` into the test cache.

use super::debian::cache_root;
use super::{have_tool, skip};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Packages, in an order dpkg -i takes as one transaction anyway.
pub const PACKAGES: [&str; 4] = ["hello", "libncursesw6", "libproc2-0", "procps"];

fn cache_dir() -> PathBuf {
    cache_root().join("debs-1")
}

fn found(dir: &Path, pkg: &str) -> Option<PathBuf> {
    let prefix = format!("{pkg}_");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
}

/// The .deb files of `PACKAGES`, or None (after a loud skip, a failure
/// under LAYERFS_CI=1) when they cannot be had.
pub fn debs(test: &str) -> Option<&'static [PathBuf]> {
    if !have_tool("apt-get", test) {
        return None;
    }
    static DEBS: OnceLock<Result<Vec<PathBuf>, String>> = OnceLock::new();
    let got = DEBS.get_or_init(|| {
        let dir = cache_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut out = Vec::new();
        for pkg in PACKAGES {
            if let Some(p) = found(&dir, pkg) {
                out.push(p);
                continue;
            }
            if let Some(p) = found(Path::new("/var/cache/apt/archives"), pkg) {
                let dest = dir.join(p.file_name().unwrap_or_default());
                std::fs::copy(&p, &dest).map_err(|e| format!("{}: {e}", p.display()))?;
                out.push(dest);
                continue;
            }
            let status = Command::new("apt-get")
                .args(["download", "-q", pkg])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| format!("apt-get: {e}"))?;
            match found(&dir, pkg) {
                Some(p) if status.success() => out.push(p),
                _ => return Err(format!("apt-get download {pkg} failed ({status})")),
            }
        }
        Ok(out)
    });
    match got {
        Ok(v) => Some(v.as_slice()),
        Err(why) => {
            skip(test, why, true);
            None
        }
    }
}
