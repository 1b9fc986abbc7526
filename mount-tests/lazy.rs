//! Lazy images on real mounts: the Debian image pushed to a real registry
//! (Debian's docker-registry), removed, then `layerfs mount REF` of it with
//! only the layers' indexes local (what a published index gives): the mount
//! answers at once, `dpkg -l` and perl run in a chroot while only a small
//! part of the compressed layers crosses the (counting) proxy, the tree
//! equals the pulled image's, and after the prefetch the store holds what
//! `pull` stores and fsck is clean. kill -9 of the daemon keeps what it
//! fetched.

use crate::support::debian::{ChrootBinds, chroot, debian3_env};
use crate::support::tree::{self, assert_same_tree};
use crate::support::writable::Registry;
use crate::support::{Env, is_mounted};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A TCP proxy to `backend` that counts the bytes it sends back.
struct CountingProxy {
    addr: String,
    down: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    fn start(backend: &str) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap().to_string();
        let down = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (backend, down2, stop2) = (backend.to_string(), down.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let (Ok(client), Ok(server)) = (conn, TcpStream::connect(&backend)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || copy(c2, s2, None));
                let down = down2.clone();
                std::thread::spawn(move || copy(server, client, Some(&down)));
            }
        });
        CountingProxy { addr, down, stop }
    }

    fn bytes(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream, count: Option<&AtomicU64>) {
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(c) = count {
            c.fetch_add(n as u64, Ordering::SeqCst);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// The layer digests of `image` in `env`'s store.
fn layers(env: &Env, image: &str) -> Vec<layerfs::oci::Digest> {
    env.store.resolve(image).unwrap().layer_digests()
}

#[test]
fn a_lazy_mount_runs_dpkg_and_perl_fetching_a_small_part_then_prefetch_makes_the_pulled_image() {
    const T: &str = "a_lazy_mount_runs_dpkg_and_perl_fetching_a_small_part";
    let Some((src, _)) = debian3_env(T) else {
        return;
    };
    let reg = Registry::start(&src.mkdir("registry"));
    let proxy = CountingProxy::start(&reg.addr);
    let remote = format!("{}/lazy/debian:3", proxy.addr);
    src.ok(&["push", "debian:3layer", &remote]);
    let digests = layers(&src, "debian:3layer");
    let compressed: u64 = digests
        .iter()
        .map(|d| src.store.blob_size(d).unwrap())
        .sum();

    // The lazy store has the layers' indexes only.
    let env = Env::new();
    for d in &digests {
        std::fs::copy(src.store.layer_index_path(d), env.store.layer_index_path(d)).unwrap();
    }
    let before = proxy.bytes();
    let m = env.mount(&remote, &["--suid", "--dev", "--prefetch", "none"]);
    assert!(digests.iter().all(|d| !env.store.has_blob(d)));
    let images = env.ok(&["images"]);
    assert!(images.contains("% local"), "{images}");
    {
        let _binds = ChrootBinds::new(&m.path);
        let (ok, out, err) = chroot(&m.path, "dpkg -l | grep -c '^ii'");
        assert!(ok, "dpkg -l: {err}");
        assert!(out.trim().parse::<u32>().unwrap() > 50, "{out}");
        let (ok, out, err) = chroot(
            &m.path,
            "perl -e 'print join(\",\", map { $_ * 7 } 1..3), qq(\\n)'",
        );
        assert!(ok && out == "7,14,21\n", "perl: {out} {err}");
    }
    let served = proxy.bytes() - before;
    eprintln!(
        "lazy mount + dpkg -l + perl: {served} bytes from the registry of {compressed} compressed ({:.1} %)",
        served as f64 * 100.0 / compressed as f64
    );
    assert!(
        served * 5 < compressed,
        "{served} bytes served of {compressed}"
    );

    // The tree, every field and every file's content, equals the pulled image's.
    let lazy_tree = tree::listing(&m.path);
    let full = src.mount("debian:3layer", &[]);
    assert_same_tree(&tree::listing(&full.path), &lazy_tree, "lazy vs pulled");
    drop(full);
    m.unmount();

    // Prefetch: a mount without --prefetch none fetches the rest; the store
    // then holds what pull stores, and fsck is clean.
    let m = env.mount(&remote, &[]);
    // The bound only turns a hang into a failure; it measures nothing.
    let start = std::time::Instant::now();
    while !digests.iter().all(|d| env.store.has_blob(d)) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(600),
            "the prefetch never made every layer whole"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for d in &digests {
        assert!(
            std::fs::read(env.store.blob_path(d)).unwrap()
                == std::fs::read(src.store.blob_path(d)).unwrap(),
            "layer {d}"
        );
    }
    assert!(env.store.list_partials().unwrap().is_empty());
    m.unmount();
    env.ok(&["fsck"]);
    assert!(!is_mounted(&m.path));
}
