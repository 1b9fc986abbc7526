//! The test helpers the library's tests and mount-tests/ both use: loud
//! skips (a failure under LAYERFS_CI=1), external tools, gzip and zstd,
//! a stub Docker credential helper.
//! mount-tests/support includes this file by path (the library's testutil
//! is #[cfg(test)], out of its reach), so it names no `crate::` item.

use std::io::Write;
use std::path::PathBuf;

/// Says loudly that `test` is skipped and why, or fails it when
/// `LAYERFS_CI=1` says every test must run (CI installs everything, so a
/// skip there would hide a gap). Fixture-tier skips pass `ci_fails: false`.
pub fn skip(test: &str, why: &str, ci_fails: bool) {
    if ci_fails && std::env::var("LAYERFS_CI").is_ok_and(|v| v == "1") {
        panic!("{test}: {why}, and LAYERFS_CI=1 forbids skipping");
    }
    // Straight to fd 2: the test harness captures eprintln!, and a skip must
    // be seen in a passing run.
    let _ = writeln!(std::io::stderr().lock(), "\n*** SKIPPED {test}: {why} ***");
}

/// The path of external tool `name` (skopeo, umoci, ...) on PATH, or `None`
/// after `skip`.
pub fn external_tool(name: &str, test: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    });
    if found.is_none() {
        skip(
            test,
            &format!("{name} is not installed (scripts/setup.sh installs it)"),
            true,
        );
    }
    found
}

/// Whether external tool `name` is installed; else `skip`.
pub fn have_tool(name: &str, test: &str) -> bool {
    external_tool(name, test).is_some()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

/// A `docker-credential-NAME` program in shell, in `dir`, speaking the
/// helper protocol (get/store/erase) and keeping one server's credentials
/// in `dir/NAME.json`, as a real keychain would.
pub fn stub_credential_helper(dir: &std::path::Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let program = dir.join(format!("docker-credential-{name}"));
    let keep = dir.join(format!("{name}.json"));
    std::fs::write(
        &program,
        format!(
            r#"#!/bin/sh
keep={keep}
case "$1" in
get) server=$(cat)
     if [ -f "$keep" ] && grep -q "\"ServerURL\":\"$server\"" "$keep"; then cat "$keep"
     else echo "credentials not found in native keychain"; exit 1; fi ;;
store) cat > "$keep" ;;
erase) server=$(cat)
     if [ -f "$keep" ] && grep -q "\"ServerURL\":\"$server\"" "$keep"; then rm "$keep"
     else echo "credentials not found in native keychain"; exit 1; fi ;;
*) echo "unknown verb $1" >&2; exit 2 ;;
esac
"#,
            keep = keep.display()
        ),
    )
    .expect("write the stub helper");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the stub helper");
    program
}

/// A private containerd (own root, state and socket), killed on drop.
pub struct Containerd {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its overlay snapshots may still be mounted under its root.
        let root = self.dir.path().join("root");
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            for line in mounts.lines() {
                if let Some(p) = line.split(' ').nth(4)
                    && p.starts_with(&*root.to_string_lossy())
                {
                    let _ = std::process::Command::new("umount").arg(p).status();
                }
            }
        }
    }
}

impl Containerd {
    pub fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
            root = p.join("root").display(),
            state = p.join("state").display(),
            sock = p.join("c.sock").display(),
        );
        std::fs::write(p.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(p.join("log")).unwrap();
        let child = std::process::Command::new("containerd")
            .arg("--config")
            .arg(p.join("config.toml"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd { child, dir };
        for _ in 0..300 {
            if c.ctr(&["version"]).status.success() {
                return c;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("containerd did not start: {}", c.log());
    }

    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("ctr-remote")
            .arg("-a")
            .arg(self.dir.path().join("c.sock"))
            .args(["-n", "layerfs-test"])
            .args(args)
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr-remote {args:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

/// A self-signed certificate for 127.0.0.1 (SAN IP), as a registry on
/// loopback needs: CA:TRUE as openssl makes it by default, or a leaf.
pub fn self_signed(dir: &std::path::Path, leaf: bool) -> (PathBuf, PathBuf) {
    let constraints: &[&str] = if leaf {
        &["-addext", "basicConstraints=critical,CA:FALSE"]
    } else {
        &[]
    };
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(constraints)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}
