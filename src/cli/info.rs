//! `layerfs info` (and `system info`) and `layerfs version`: the store, its
//! images and containers, and the facts of this machine that decide how
//! mounts and `run` behave (FUSE, kernel passthrough, the OCI runtime).

use super::Ctx;
use super::template::{Missing, Template};
use anyhow::Result;
use serde_json::{Value, json};
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// A Go template over the fields ({{.StoreRoot}}, {{.Images}}, {{json .}}), or json
    #[arg(short, long)]
    format: Option<String>,
}

/// First line of `prog --version` (or `-V`), if it runs.
fn tool_version(prog: &str, flag: &str) -> Option<String> {
    let out = Command::new(prog).arg(flag).output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

fn kernel() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// FUSE passthrough (the kernel serving reads and writes of upper files
/// itself) came with Linux 6.9.
fn passthrough_available(kernel: &str) -> bool {
    let mut parts = kernel
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 9)
}

fn print(v: &Value, format: Option<&str>, text: impl Fn(&Value)) -> Result<()> {
    match format {
        None | Some("table") => text(v),
        Some("json") => println!("{}", serde_json::to_string_pretty(v)?),
        Some(f) => println!("{}", Template::parse(f, Missing::Error)?.render(v)?),
    }
    Ok(())
}

pub fn info(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let images = store.image_entries()?;
    let mut distinct: Vec<_> = images.iter().map(|e| e.descriptor.digest).collect();
    distinct.sort_by_key(|d| d.to_string());
    distinct.dedup();
    let containers = layerfs::container::list(&store)?;
    let running = containers
        .iter()
        .filter(|c| layerfs::run::state::load(c).is_some_and(|s| s.running()))
        .count();
    let mounts = layerfs::mount::records::list(&store)?;
    let live_mounts = mounts.iter().filter(|(_, alive)| *alive).count();
    let kernel = kernel();
    let runtime = layerfs::run::runtime_for(&store, None).ok();
    let v = json!({
        "StoreRoot": store.root(),
        "Images": distinct.len(),
        "Tags": images.iter().filter(|e| e.name().is_some()).count(),
        "Containers": containers.len(),
        "ContainersRunning": running,
        "ContainersStopped": containers.len() - running,
        "Mounts": live_mounts,
        "Driver": "layerfs (FUSE)",
        "FuseVersion": tool_version("fusermount3", "-V")
            .map(|v| v.trim_start_matches("fusermount3 version:").trim().to_string()),
        "FuseDevice": std::path::Path::new("/dev/fuse").exists(),
        "KernelVersion": kernel,
        "Passthrough": passthrough_available(&kernel),
        "Runtime": runtime.as_ref().map(|r| r.path.display().to_string()),
        "RuntimeVersion": runtime.as_ref().map(|r| r.version()),
        "CgroupVersion": if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "2" } else { "1" },
        "OSType": std::env::consts::OS,
        "Architecture": std::env::consts::ARCH,
        "Version": env!("CARGO_PKG_VERSION"),
    });
    print(&v, a.format.as_deref(), |v| {
        let s = |k: &str| match &v[k] {
            Value::String(s) => s.clone(),
            Value::Null => "none".into(),
            Value::Bool(true) => "on".into(),
            Value::Bool(false) => "off".into(),
            other => other.to_string(),
        };
        println!("Store root: {}", s("StoreRoot"));
        println!("Images: {} ({} names)", s("Images"), s("Tags"));
        println!(
            "Containers: {}\n Running: {}\n Stopped: {}",
            s("Containers"),
            s("ContainersRunning"),
            s("ContainersStopped")
        );
        println!("Mounts: {}", s("Mounts"));
        println!("Storage driver: {}", s("Driver"));
        println!(" FUSE version: {}", s("FuseVersion"));
        println!(
            " /dev/fuse: {}",
            if v["FuseDevice"] == true {
                "present"
            } else {
                "missing"
            }
        );
        println!(" Kernel passthrough: {}", s("Passthrough"));
        println!("Runtime: {} ({})", s("Runtime"), s("RuntimeVersion"));
        println!("Cgroup version: {}", s("CgroupVersion"));
        println!("Kernel version: {}", s("KernelVersion"));
        println!("OS/Arch: {}/{}", s("OSType"), s("Architecture"));
        println!("layerfs version: {}", s("Version"));
    })
}

pub fn version(a: Args) -> Result<()> {
    let v = json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "Os": std::env::consts::OS,
        "Arch": std::env::consts::ARCH,
        "KernelVersion": kernel(),
        "FuseVersion": tool_version("fusermount3", "-V")
            .map(|v| v.trim_start_matches("fusermount3 version:").trim().to_string()),
    });
    print(&v, a.format.as_deref(), |v| {
        let s = |k: &str| v[k].as_str().unwrap_or("none").to_string();
        println!("layerfs:");
        println!(" Version:        {}", s("Version"));
        println!(" OS/Arch:        {}/{}", s("Os"), s("Arch"));
        println!(" Kernel version: {}", s("KernelVersion"));
        println!(" FUSE version:   {}", s("FuseVersion"));
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn passthrough_needs_linux_6_9() {
        for (k, want) in [
            ("6.9.0", true),
            ("6.18.44-fc-v1045", true),
            ("7.0", true),
            ("6.8.12-amd64", false),
            ("5.15.0", false),
            ("", false),
        ] {
            assert_eq!(super::passthrough_available(k), want, "{k}");
        }
    }
}
