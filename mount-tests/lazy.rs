//! Lazy images on real mounts: the Debian image pushed to a real registry
//! (Debian's docker-registry), removed, then `layerfs mount REF` of it with
//! only the layers' indexes local (what a published index gives): the mount
//! answers at once, `dpkg -l` and perl run in a chroot while only a small
//! part of the compressed layers crosses the (counting) proxy, the tree
//! equals the pulled image's, and after the prefetch the store holds what
//! `pull` stores and fsck is clean. kill -9 of the daemon keeps what it
//! fetched.

use crate::support::debian::{ChrootBinds, chroot, debian_lazy_env, debian3_env};
use crate::support::tree::{self, assert_same_tree};
use crate::support::writable::Registry;
use crate::support::{Env, is_mounted};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A TCP proxy to `backend` that counts the bytes it sends back, and can
/// stall: a registry that hangs, taking requests and never answering them.
/// A connection that saw the stall stays silent after it too; the ones
/// opened after the stall ends are answered.
struct CountingProxy {
    addr: String,
    down: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    stall: Arc<AtomicBool>,
}

impl CountingProxy {
    fn start(backend: &str) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap().to_string();
        let down = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let stall = Arc::new(AtomicBool::new(false));
        let (backend, down2, stop2, stall2) = (
            backend.to_string(),
            down.clone(),
            stop.clone(),
            stall.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let (Ok(client), Ok(server)) = (conn, TcpStream::connect(&backend)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (st1, st2) = (stall2.clone(), stall2.clone());
                std::thread::spawn(move || copy(c2, s2, None, &st1));
                let down = down2.clone();
                std::thread::spawn(move || copy(server, client, Some(&down), &st2));
            }
        });
        CountingProxy {
            addr,
            down,
            stop,
            stall,
        }
    }

    fn bytes(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream, count: Option<&AtomicU64>, stall: &AtomicBool) {
    let mut buf = vec![0u8; 64 << 10];
    let mut hung = false;
    while let Ok(n) = from.read(&mut buf) {
        hung |= stall.load(Ordering::SeqCst);
        if n == 0 {
            break;
        }
        if hung {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
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

/// `dpkg -l` and a perl one-liner in a chroot of the Debian image at `m`.
fn dpkg_and_perl(m: &std::path::Path) {
    let _binds = ChrootBinds::new(m);
    let (ok, out, err) = chroot(m, "dpkg -l | grep -c '^ii'");
    assert!(ok, "dpkg -l: {err}");
    assert!(out.trim().parse::<u32>().unwrap() > 50, "{out}");
    let (ok, out, err) = chroot(
        m,
        "perl -e 'print join(\",\", map { $_ * 7 } 1..3), qq(\\n)'",
    );
    assert!(ok && out == "7,14,21\n", "perl: {out} {err}");
}

/// Waits until the prefetch made every layer of `digests` whole in `env`,
/// and checks each is the very blob `src` holds.
fn wait_for_pulled_blobs(env: &Env, src: &Env, digests: &[layerfs::oci::Digest]) {
    // The bound only turns a hang into a failure; it measures nothing.
    let start = std::time::Instant::now();
    while !digests.iter().all(|d| env.store.has_blob(d)) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(600),
            "the prefetch never made every layer whole"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for d in digests {
        assert!(
            std::fs::read(env.store.blob_path(d)).unwrap()
                == std::fs::read(src.store.blob_path(d)).unwrap(),
            "layer {d}"
        );
    }
}

/// The Debian image pushed to a real registry behind a counting proxy: the
/// source env, the layers, the registry, the proxy and the image's name there.
fn pushed_debian(
    test: &str,
) -> Option<(
    Env,
    &'static crate::support::debian::DebianLayers,
    Registry,
    CountingProxy,
    String,
)> {
    let (src, deb) = debian3_env(test)?;
    let reg = Registry::start(&src.mkdir("registry"));
    let proxy = CountingProxy::start(&reg.addr);
    let remote = format!("{}/lazy/debian:3", proxy.addr);
    src.ok(&["push", "debian:3layer", &remote]);
    Some((src, deb, reg, proxy, remote))
}

/// The proof at the scale: a ~150 MB (compressed) Debian image of
/// three layers pushed with its indexes to the real registry; a store that
/// has nothing of it (as after `rmi` and `gc`) mounts it, runs `dpkg -l` and
/// perl; everything the registry served from the mount on (the /v2/ ping,
/// manifest, config, the referrers tag and its index artifact, the index
/// blobs, the data) is under 10 % of the image's compressed size.
#[test]
fn a_lazy_mount_runs_dpkg_and_perl_fetching_a_small_part_then_prefetch_makes_the_pulled_image() {
    const T: &str = "a_lazy_mount_runs_dpkg_and_perl_fetching_a_small_part";
    let Some((src, _)) = debian_lazy_env(T) else {
        return;
    };
    let reg = Registry::start(&src.mkdir("registry"));
    let proxy = CountingProxy::start(&reg.addr);
    let remote = format!("{}/lazy/debian:big", proxy.addr);
    src.ok(&["push", "debian:lazy", &remote]);
    let digests = layers(&src, "debian:lazy");
    assert!(digests.len() >= 3);
    let compressed: u64 = digests
        .iter()
        .map(|d| src.store.blob_size(d).unwrap())
        .sum();
    assert!(compressed > 140_000_000, "{compressed} bytes compressed");

    let env = Env::new();
    let before = proxy.bytes();
    let m = env.mount(&remote, &["--suid", "--dev", "--prefetch", "none"]);
    assert!(digests.iter().all(|d| !env.store.has_blob(d)));
    let at_mount = proxy.bytes() - before;
    let images = env.ok(&["images"]);
    assert!(images.contains("% local"), "{images}");
    dpkg_and_perl(&m.path);
    let served = proxy.bytes() - before;
    let index_bytes: u64 = digests
        .iter()
        .map(|d| {
            std::fs::metadata(env.store.layer_index_path(d))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    let data: u64 = digests.iter().map(|d| env.store.local_bytes(d)).sum();
    eprintln!(
        "lazy mount + dpkg -l + perl: {served} bytes from the registry of {compressed} compressed ({:.1} %): {at_mount} until the mount answered (indexes {index_bytes}), layer data kept {data}",
        served as f64 * 100.0 / compressed as f64
    );
    assert!(
        served * 10 < compressed,
        "{served} bytes served of {compressed}"
    );

    // The tree, every field and every file's content, equals the pulled image's.
    let lazy_tree = tree::listing(&m.path);
    let full = src.mount("debian:lazy", &[]);
    assert_same_tree(&tree::listing(&full.path), &lazy_tree, "lazy vs pulled");
    drop(full);
    m.unmount();

    // Prefetch: a mount without --prefetch none fetches the rest; the store
    // then holds what pull stores, and fsck is clean.
    let m = env.mount(&remote, &[]);
    wait_for_pulled_blobs(&env, &src, &digests);
    assert!(env.store.list_partials().unwrap().is_empty());
    m.unmount();
    env.ok(&["fsck"]);
    assert!(!is_mounted(&m.path));
}

/// Unmounts a mount made by hand when dropped, so a failing test leaves no
/// mount behind.
struct UnmountOnDrop(std::path::PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            crate::support::unmount_or_detach(&self.0);
        }
    }
}

/// Reads `rel` under the mount; the errno on failure.
fn read(m: &std::path::Path, rel: &str) -> Result<Vec<u8>, i32> {
    std::fs::read(m.join(rel)).map_err(|e| e.raw_os_error().unwrap_or(0))
}

#[test]
fn a_lazy_mount_survives_kill_9_and_a_stalled_registry_with_eio_bounded_then_recovers() {
    const T: &str = "a_lazy_mount_survives_kill_9_and_a_stalled_registry";
    let Some((src, deb, _reg, proxy, remote)) = pushed_debian(T) else {
        return;
    };
    let env = Env::new();
    for d in layers(&src, "debian:3layer") {
        std::fs::copy(
            src.store.layer_index_path(&d),
            env.store.layer_index_path(&d),
        )
        .unwrap();
    }
    let want = std::fs::read(deb.base_file("usr/bin/perl")).unwrap();
    let m = env.mount(&remote, &["--prefetch", "none"]);
    assert!(read(&m.path, "usr/bin/perl").unwrap() == want);
    let local: u64 = layers(&env, &remote)
        .iter()
        .map(|d| env.store.local_bytes(d))
        .sum();
    assert!(local > 0);

    // kill -9: what was fetched and verified stays; a new mount reads it
    // without the registry.
    let pid = env.daemon_pid(&m.path);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    crate::support::wait_until(
        || !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the daemon to die",
    );
    env.ok(&["umount", m.path.to_str().unwrap()]);
    let after: u64 = layers(&env, &remote)
        .iter()
        .map(|d| env.store.local_bytes(d))
        .sum();
    assert_eq!(after, local, "verified data was lost by kill -9");

    // The registry hangs: data not local fails with EIO within the bound,
    // local data is served; once it answers again, reads work within the
    // bound, although the requests it took while hung are never answered.
    let mnt = env.mkdir("again");
    let _unmount = UnmountOnDrop(mnt.clone());
    let out = env
        .cmd(&[
            "mount",
            "--prefetch",
            "none",
            &remote,
            mnt.to_str().unwrap(),
        ])
        .env("LAYERFS_FETCH_TIMEOUT", "2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let served = proxy.bytes();
    proxy.stall.store(true, Ordering::SeqCst);
    assert!(read(&mnt, "usr/bin/perl").unwrap() == want);
    assert_eq!(proxy.bytes(), served);
    assert_eq!(read(&mnt, "usr/bin/dpkg"), Err(libc::EIO));
    proxy.stall.store(false, Ordering::SeqCst);
    let dpkg = std::fs::read(deb.base_file("usr/bin/dpkg")).unwrap();
    // Each try fails within the bound or succeeds; the requests the hung
    // registry took hold no fetch thread past the bound, so one of the
    // first tries succeeds (they held one for 120 s).
    let mut got = read(&mnt, "usr/bin/dpkg");
    for _ in 0..2 {
        if got.is_ok() {
            break;
        }
        got = read(&mnt, "usr/bin/dpkg");
    }
    assert!(got.unwrap() == dpkg);
    env.ok(&["umount", mnt.to_str().unwrap()]);
    assert!(!is_mounted(&mnt));
}

#[test]
fn a_lazy_writable_mount_is_changed_committed_and_pushed_without_fetching_its_base() {
    const T: &str = "a_lazy_writable_mount_is_changed_committed_and_pushed";
    let Some((src, _, _reg, proxy, remote)) = pushed_debian(T) else {
        return;
    };
    let digests = layers(&src, "debian:3layer");
    let compressed: u64 = digests
        .iter()
        .map(|d| src.store.blob_size(d).unwrap())
        .sum();
    let env = Env::new();
    for d in &digests {
        std::fs::copy(src.store.layer_index_path(d), env.store.layer_index_path(d)).unwrap();
    }
    let m = env.mount(
        &remote,
        &["--writable", "--name", "lazyw", "--prefetch", "none"],
    );
    std::fs::write(m.join("etc/motd"), b"lazy and changed\n").unwrap();
    std::fs::remove_dir_all(m.join("usr/share/doc")).unwrap();
    let before = proxy.bytes();
    env.ok(&["commit", m.path.to_str().unwrap(), "lazy:changed"]);
    let other = format!("{}/other/debian:changed", proxy.addr);
    env.ok(&["push", "lazy:changed", &other]);
    let served = proxy.bytes() - before;
    eprintln!("commit + push of a lazy image's change: {served} bytes from the registry");
    assert!(
        served * 100 < compressed,
        "{served} bytes fetched to commit and push a change of a {compressed}-byte image"
    );
    assert!(digests.iter().all(|d| !env.store.has_blob(d)));
    m.unmount();

    // The pushed image is whole on the registry: a plain pull of it mounts.
    let check = Env::new();
    check.ok(&["pull", &other]);
    let c = check.mount(&other, &[]);
    assert_eq!(
        std::fs::read(c.join("etc/motd")).unwrap(),
        b"lazy and changed\n"
    );
    assert!(!c.join("usr/share/doc").exists());
}

/// `run` and `build` of an image that is only in a TLS registry with its own
/// CA: with `--ca-cert` (or `--insecure`) both the lazy pull and the reads of
/// the image's data reach it, also from `run -d`'s monitor and a build's RUN.
#[test]
fn run_and_build_of_a_lazy_image_reach_a_tls_registry_with_ca_cert_or_insecure() {
    const T: &str = "run_and_build_of_a_lazy_image_reach_a_tls_registry";
    if !crate::support::have_tool("openssl", T) {
        return;
    }
    let Some((src, _)) = debian3_env(T) else {
        return;
    };
    let (reg, ca) = Registry::start_tls(&src.mkdir("registry"));
    let ca = ca.to_str().unwrap();
    let remote = format!("{}/lazy/debian:tls", reg.addr);
    src.ok(&["push", "--ca-cert", ca, "debian:3layer", &remote]);

    // Without the CA the pull fails; with it the image runs, its data read
    // lazily over TLS (nothing of the layers whole in the store).
    let env = Env::new();
    let cat = [
        "--network",
        "none",
        &remote,
        "grep",
        "VARIANT",
        "/usr/lib/os-release",
    ];
    let out = env.run(&[&["run", "--rm"][..], &cat].concat());
    assert!(!out.status.success());
    let out = env.ok(&[&["run", "--rm", "--ca-cert", ca][..], &cat].concat());
    assert_eq!(out, "VARIANT=\"layerfs mount tests, layer2\"\n");
    let digests = layers(&src, "debian:3layer");
    assert!(digests.iter().all(|d| !env.store.has_blob(d)));

    // run -d: its monitor reads what the first run did not.
    let bg = Env::new();
    let name = bg.ok(&[
        "run",
        "-d",
        "--name",
        "tlsd",
        "--insecure",
        "--network",
        "none",
        &remote,
        "head",
        "-c",
        "12",
        "/etc/os-release",
    ]);
    assert_eq!(name, "tlsd\n");
    crate::support::wait_until(
        || bg.ok(&["logs", "tlsd"]) == "PRETTY_NAME=",
        "the detached container's output",
    );
    crate::support::wait_until(
        || bg.ok(&["ps", "-a"]).contains("exited"),
        "the detached container to end",
    );
    bg.ok(&["rm", "tlsd"]);

    // build FROM it: a RUN step reads the image's files.
    let env = Env::new();
    let ctx = env.mkdir("ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {remote}\nRUN grep VARIANT /usr/lib/os-release > /built && cat /etc/debian_version >> /built\n"),
    )
    .unwrap();
    let ctx = ctx.to_str().unwrap();
    let out = env.run(&["build", "-q", "-t", "tls:built", ctx]);
    assert!(!out.status.success());
    env.ok(&["build", "-q", "--ca-cert", ca, "-t", "tls:built", ctx]);
    let m = env.mount("tls:built", &[]);
    let built = std::fs::read_to_string(m.join("built")).unwrap();
    assert!(
        built.starts_with("VARIANT=\"layerfs mount tests, layer2\"\n12."),
        "{built}"
    );
    m.unmount();
}

/// The Debian image converted to eStargz by ctr-remote (stargz-snapshotter,
/// through a private containerd), pushed without a layerfs index: a lazy
/// mount reads it through each layer's TOC, fetching a small part, and its
/// tree equals the full pull's.
#[test]
fn an_estargz_image_made_by_ctr_remote_mounts_lazily_through_its_toc() {
    const T: &str = "an_estargz_image_made_by_ctr_remote_mounts_lazily";
    if !crate::support::have_tool("containerd", T) || !crate::support::have_tool("ctr-remote", T) {
        return;
    }
    let Some((src, _deb)) = debian3_env(T) else {
        return;
    };
    let plain = src.dir.path().join("plain.tar");
    let p = plain.to_string_lossy().into_owned();
    src.ok(&["save", "--format", "oci-archive", "-o", &p, "debian:3layer"]);
    let converted = src.dir.path().join("esgz.tar");
    let c = converted.to_string_lossy().into_owned();
    {
        let ctrd = crate::support::Containerd::start();
        let base = "docker.io/library/debian";
        ctrd.ok(&["images", "import", "--base-name", base, "--digests", &p]);
        let listed = ctrd.ok(&["images", "ls", "-q"]);
        let imported = listed
            .lines()
            .next()
            .expect("an imported image")
            .to_string();
        let esgz = "docker.io/library/debian:esgz";
        ctrd.ok(&["image", "convert", "--estargz", "--oci", &imported, esgz]);
        ctrd.ok(&["images", "export", &c, esgz]);
    }
    let loaded = src.ok(&["load", "-q", "-i", &c]);
    let name = loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .expect("a loaded image")
        .trim()
        .to_string();
    let digests = layers(&src, &name);
    let compressed: u64 = digests
        .iter()
        .map(|d| src.store.blob_size(d).unwrap())
        .sum();

    let reg = Registry::start(&src.mkdir("registry"));
    let proxy = CountingProxy::start(&reg.addr);
    let remote = format!("{}/lazy/debian:esgz", proxy.addr);
    src.ok(&["push", "--no-index", &name, &remote]);

    // Nothing local: each layer's index is made from its TOC.
    let env = Env::new();
    let before = proxy.bytes();
    let m = env.mount(&remote, &["--suid", "--dev", "--prefetch", "none"]);
    assert!(digests.iter().all(|d| !env.store.has_blob(d)));
    dpkg_and_perl(&m.path);
    let served = proxy.bytes() - before;
    eprintln!(
        "lazy mount of ctr-remote's eStargz + dpkg -l + perl: {served} bytes from the registry of {compressed} compressed ({:.1} %)",
        served as f64 * 100.0 / compressed as f64
    );
    assert!(
        served * 10 < compressed,
        "{served} bytes served of {compressed}"
    );

    // The tree, every field and every file's content, equals the full
    // pull's; but mtimes: a TOC holds them rounded to the second (as
    // stargz-snapshotter's own lazy mounts show them), the tar exactly.
    let lazy_tree = tree::listing(&m.path);
    let full = src.mount(&name, &[]);
    let full_tree = tree::listing(&full.path);
    drop(full);
    m.unmount();
    assert!(!is_mounted(&m.path));
    let split = |t: &str| -> (String, Vec<i64>) {
        let mut rest = String::new();
        let mut mtimes = Vec::new();
        for line in t.lines() {
            let (fields, mtime) = line.rsplit_once('\t').unwrap_or((line, "0"));
            rest.push_str(fields);
            rest.push('\n');
            mtimes.push(mtime.parse().unwrap_or(i64::MIN));
        }
        (rest, mtimes)
    };
    let ((want, want_t), (got, got_t)) = (split(&full_tree), split(&lazy_tree));
    assert_same_tree(&want, &got, "lazy vs pulled");
    for (w, g) in want_t.iter().zip(&got_t) {
        assert!((w - g).abs() <= 1, "mtime {g} where the pull has {w}");
    }

    // The prefetch completes every layer into the very blob a pull stores.
    let m = env.mount(&remote, &[]);
    wait_for_pulled_blobs(&env, &src, &digests);
    m.unmount();
    env.ok(&["fsck"]);
    assert!(!is_mounted(&m.path));
}
