//! What the run and build tests share: the Debian minbase image (the clean
//! base layer of support/debian.rs), the members of a stored layer, a
//! command started in the background, and probes for processes and mounts a
//! run may have left behind.

use super::debian::debian_layers;
use super::{Env, can_mount};
use layerfs::image::{layer_descriptor, write_image};
use layerfs::layer::LayerInfo;
use layerfs::oci::{ImageConfig, Reference};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Stdio};

/// A store holding the Debian bookworm minbase rootfs as one-layer image
/// `name` (with `edit` applied to its config); None after a loud skip when
/// the machine cannot mount or the rootfs cannot be had.
pub fn minbase_env(test: &str, name: &str, edit: impl FnOnce(&mut ImageConfig)) -> Option<Env> {
    if !can_mount(test) {
        return None;
    }
    let deb = debian_layers(test)?;
    let env = Env::new();
    let base = deb.gz()[0].clone();
    let infos = env.image_files(&format!("{name}-plain"), &[base]);
    image_of(&env, name, &infos, edit);
    Some(env)
}

/// Stores an image of `infos` as `name`, its config edited by `edit`.
pub fn image_of(env: &Env, name: &str, infos: &[LayerInfo], edit: impl FnOnce(&mut ImageConfig)) {
    let mut config = layerfs::image::new_config();
    config.rootfs.diff_ids = infos.iter().map(|i| i.diff_id).collect();
    edit(&mut config);
    let descs: Vec<_> = infos.iter().map(layer_descriptor).collect();
    write_image(
        &env.store,
        &config,
        &descs,
        Some(&Reference::parse(name).expect("name")),
    )
    .expect("write image");
}

/// One member of a layer tarball.
#[derive(Clone, Debug)]
pub struct Member {
    pub path: String,
    pub kind: tar::EntryType,
    pub size: u64,
    pub link: Option<String>,
}

/// The members of stored layer `digest`, in tar order.
pub fn layer_members(env: &Env, digest: &layerfs::oci::Digest) -> Vec<Member> {
    let f = env.store.open_blob(digest).expect("open the layer blob");
    let r = layerfs::layer::decompressed(f).expect("decompress the layer");
    let mut ar = tar::Archive::new(r);
    ar.entries()
        .expect("tar entries")
        .map(|e| {
            let e = e.expect("tar entry");
            Member {
                path: String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                kind: e.header().entry_type(),
                size: e.header().size().expect("size"),
                link: e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned()),
            }
        })
        .collect()
}

/// The member paths of stored layer `digest`, in order.
pub fn layer_paths(env: &Env, digest: &layerfs::oci::Digest) -> Vec<String> {
    layer_members(env, digest)
        .into_iter()
        .map(|m| m.path)
        .collect()
}

/// The layers of image `name`, base first.
pub fn layers_of(env: &Env, name: &str) -> Vec<layerfs::oci::Digest> {
    env.store.resolve(name).expect("resolve").layer_digests()
}

/// Processes whose command line is exactly `argv`.
pub fn processes(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// The mount namespace of process `pid` (`mnt:[4026531841]`), while it lives.
pub fn mount_ns(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The processes in mount namespace `ns`. A namespace no process is in is
/// gone, and every mount in it with it.
pub fn in_mount_ns(ns: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| mount_ns(*pid).as_deref() == Some(ns))
        .collect()
}

/// A `layerfs` command started in the background (a run, a build); killed
/// if a test fails before it ends, so none outlives the test.
pub struct Running {
    child: Child,
    /// Open until the end: a closed pipe would kill the command's output.
    _out: BufReader<ChildStdout>,
    /// What the command printed before its line "ready".
    pub before_ready: Vec<String>,
}

impl Running {
    /// Starts `layerfs ARGS` with its stdout piped; returns once it has
    /// printed the line "ready".
    pub fn start(env: &Env, args: &[&str]) -> Running {
        let mut child = env
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start layerfs");
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut r = Running {
            child,
            _out: out,
            before_ready: Vec::new(),
        };
        loop {
            let mut line = String::new();
            let n = r._out.read_line(&mut line).expect("read its stdout");
            assert!(
                n > 0,
                "layerfs {args:?} ended without printing ready: {:?}",
                r.before_ready
            );
            if line == "ready\n" {
                return r;
            }
            r.before_ready.push(line);
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig).expect("kill");
    }

    pub fn wait(&mut self) -> Option<i32> {
        self.child.wait().expect("wait").code()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
