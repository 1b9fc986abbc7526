//! What the run and build tests share: the Debian minbase image (the clean
//! base layer of support/debian.rs), the paths a stored layer holds, and
//! probes for processes and mounts a run may have left behind.

use super::Env;
use super::debian::debian_layers;
use layerfs::image::{layer_descriptor, write_image};
use layerfs::layer::LayerInfo;
use layerfs::oci::{ImageConfig, Reference};
use std::io::Read;

/// Stores the Debian bookworm minbase rootfs as one-layer image `name`
/// (with `edit` applied to its config); false after a loud skip.
pub fn minbase(env: &Env, test: &str, name: &str, edit: impl FnOnce(&mut ImageConfig)) -> bool {
    let Some(deb) = debian_layers(test) else {
        return false;
    };
    let base = deb.gz()[0].clone();
    let infos = env.image_files(&format!("{name}-plain"), &[base]);
    image_of(env, name, &infos, edit);
    true
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

/// The member paths of a stored layer, in order.
pub fn layer_paths(env: &Env, digest: &layerfs::oci::Digest) -> Vec<String> {
    let f = env.store.open_blob(digest).expect("open layer");
    let r = layerfs::layer::decompressed(f).expect("decompress");
    let mut ar = tar::Archive::new(r);
    ar.entries()
        .expect("tar")
        .map(|e| {
            let mut e = e.expect("entry");
            let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let mut sink = Vec::new();
            let _ = e.read_to_end(&mut sink);
            p
        })
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
