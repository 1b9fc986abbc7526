//! What the writable-mount tests share: mounting a container (new or
//! again), reading back what a commit wrote (the members of an image's top
//! layer), and the guards for what they mount or start beside layerfs: a
//! size-limited tmpfs, a local registry.

use super::containers::{Member, layer_members};
use super::{Env, Mounted, unmount_or_detach};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

impl Env {
    /// Mounts `image` writable as the new container `name`.
    pub fn mount_writable(&self, image: &str, name: &str) -> Mounted<'_> {
        self.mount(image, &["--writable", "--name", name])
    }

    /// Mounts the existing container `name` again, on a new directory.
    pub fn mount_container(&self, name: &str) -> Mounted<'_> {
        self.mount_with(&["mount", "--container", name])
    }

    /// `layerfs images --format json`, one sorted line per image.
    pub fn images(&self) -> Vec<String> {
        let out = self.ok(&["images", "--format", "json"]);
        let list: serde_json::Value = serde_json::from_str(&out).expect("images json");
        let mut v: Vec<String> = list
            .as_array()
            .expect("a json array")
            .iter()
            .map(|i| i.to_string())
            .collect();
        v.sort();
        v
    }
}

/// The members of the top (newest) layer of `image`, in tar order.
pub fn top_layer_members(env: &Env, image: &str) -> Vec<Member> {
    let resolved = env.store.resolve(image).expect("resolve the image");
    let top = resolved
        .manifest
        .layers
        .last()
        .expect("the image has layers")
        .digest;
    layer_members(env, &top)
}

/// A tmpfs of `size` on a new directory; unmounted on drop (declare it
/// before what lives on it, so it goes last).
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("tmpfs dir");
        let opts = format!("size={size},mode=0755");
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap_or_else(|e| panic!("mount -t tmpfs -o {opts} {}: {e}", at.display()));
        Tmpfs {
            path: at.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        unmount_or_detach(&self.path);
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A throwaway distribution registry (Debian's docker-registry) on
/// 127.0.0.1, plain HTTP, storage in `state`; stopped on drop.
pub struct Registry {
    child: Child,
    pub addr: String,
}

impl Registry {
    pub fn start(state: &Path) -> Registry {
        Registry::start_with(state, "")
    }

    /// One that asks for HTTP Basic credentials `user`/`pass` (htpasswd).
    pub fn start_with_password(state: &Path, user: &str, pass: &str) -> Registry {
        std::fs::create_dir_all(state).expect("registry dir");
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, pass])
            .output()
            .expect("htpasswd");
        assert!(out.status.success(), "htpasswd failed");
        let file = state.join("htpasswd");
        std::fs::write(&file, out.stdout).expect("htpasswd file");
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: layerfs-test\n    path: {}\n",
            file.display()
        );
        Registry::start_with(state, &auth)
    }

    /// One served over TLS with a self-signed certificate for 127.0.0.1;
    /// also returns the certificate, what `--ca-cert` takes.
    pub fn start_tls(state: &Path) -> (Registry, std::path::PathBuf) {
        std::fs::create_dir_all(state).expect("registry dir");
        let (cert, key) = super::self_signed(state, false);
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
        (Registry::start_with(state, &tls), cert)
    }

    fn start_with(state: &Path, auth: &str) -> Registry {
        std::fs::create_dir_all(state.join("data")).expect("registry dir");
        // A port the kernel just handed out, free again once dropped.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = state.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: layerfs-test\n{auth}",
                state.join("data").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(state.join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut r = Registry { child, addr };
        let start = Instant::now();
        while !r.answers() {
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!(
                    "docker-registry exited ({status}): {}",
                    std::fs::read_to_string(state.join("registry.log")).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the registry on {} never answered",
                r.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// GET /v2/ answers (200, or 401 when it asks for credentials).
    fn answers(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(&self.addr) else {
            return false;
        };
        let req = format!(
            "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        // A TLS one answers plain HTTP with 400: it is up.
        resp.starts_with("HTTP/1.1 200")
            || resp.starts_with("HTTP/1.1 401")
            || resp.starts_with("HTTP/1.0 400")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
