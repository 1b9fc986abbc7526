//! `layerfs container prune [-f]`, `layerfs image prune [-a] [-f]` and the
//! pieces `system prune` joins: what each removes, then one gc, and the
//! bytes that freed, as Docker reports them.

use super::Ctx;
use super::format::human_size;
use anyhow::Result;
use layerfs::store::Store;
use std::io::{BufRead, Write};

#[derive(clap::Args)]
pub struct ContainerArgs {
    #[command(subcommand)]
    command: ContainerCommand,
}

#[derive(clap::Subcommand)]
enum ContainerCommand {
    /// Remove all stopped containers (not running, not mounted)
    Prune(ForceArgs),
}

#[derive(clap::Args)]
pub struct ForceArgs {
    /// Do not ask for confirmation
    #[arg(short, long)]
    force: bool,
}

#[derive(clap::Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(clap::Subcommand)]
enum ImageCommand {
    /// Remove unnamed images no container uses (with -a, every image no container uses)
    Prune(ImagePruneArgs),
}

#[derive(clap::Args)]
pub struct ImagePruneArgs {
    /// Remove all images no container uses, not only unnamed ones
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation
    #[arg(short, long)]
    force: bool,
}

/// Asks on stdout, reads a line from stdin: only `y` or `yes` goes ahead.
pub(super) fn confirm(warning: &str, force: bool) -> Result<bool> {
    if force {
        return Ok(true);
    }
    print!("WARNING! {warning}\nAre you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim().to_lowercase().as_str(), "y" | "yes"))
}

/// Removes every container that is neither running nor mounted nor a
/// running build's step; returns (their IDs, the bytes their changes used).
pub(super) fn prune_containers(store: &Store) -> Result<(Vec<String>, u64)> {
    let mut removed = Vec::new();
    let mut freed = 0;
    for c in layerfs::container::list(store)? {
        let row = super::ps::Row::load(store, c, true)?;
        let building = row.c.build_pid.is_some_and(layerfs::store::process_alive);
        if row.active() || building {
            continue;
        }
        match super::rm::remove(store, &row.c.name, false) {
            Ok(()) => {
                freed += row.size;
                removed.push(row.c.id);
            }
            Err(e) => eprintln!("layerfs: container prune: {}: {e:#}", row.c.name),
        }
    }
    Ok((removed, freed))
}

/// Removes the images no container, mount or running build uses: unnamed
/// ones, or with `all` every one. Returns the lines Docker prints
/// (`untagged: NAME`, `deleted: ID`); the blobs go with the next gc.
pub(super) fn prune_images(store: &Store, all: bool) -> Result<Vec<String>> {
    let in_use: Vec<layerfs::oci::Digest> = store
        .holds()?
        .into_iter()
        .filter(|h| h.id != layerfs::image::BUILD_CACHE_HOLD)
        .flat_map(|h| h.manifests)
        .collect();
    let mut lines = Vec::new();
    let mut seen = Vec::new();
    for e in store.image_entries()? {
        let d = e.descriptor.digest;
        if seen.contains(&d) || in_use.contains(&d) {
            continue;
        }
        seen.push(d);
        if !all && !store.tags_of(&d)?.is_empty() {
            continue;
        }
        // By manifest digest: this manifest alone, all its names with it.
        let r = layerfs::image::remove_image(store, &d.to_string(), true)?;
        lines.extend(r.untagged.iter().map(|t| format!("untagged: {t}")));
        lines.extend(r.deleted.map(|id| format!("deleted: {id}")));
    }
    Ok(lines)
}

/// Frees what nothing reaches any more; the bytes freed.
pub(super) fn gc(store: &Store) -> Result<u64> {
    Ok(store.gc(&[])?.freed)
}

pub(super) fn print_section(title: &str, lines: &[String]) {
    if !lines.is_empty() {
        println!("{title}:");
        for l in lines {
            println!("{l}");
        }
        println!();
    }
}

pub fn container(ctx: &Ctx, a: ContainerArgs) -> Result<()> {
    let ContainerCommand::Prune(a) = a.command;
    if !confirm("This will remove all stopped containers.", a.force)? {
        return Ok(());
    }
    let store = ctx.store()?;
    let (ids, freed) = prune_containers(&store)?;
    let freed = freed + gc(&store)?;
    print_section("Deleted Containers", &ids);
    println!("Total reclaimed space: {}", human_size(freed));
    Ok(())
}

pub fn image(ctx: &Ctx, a: ImageArgs) -> Result<()> {
    let ImageCommand::Prune(a) = a.command;
    let warning = if a.all {
        "This will remove all images without at least one container associated to them."
    } else {
        "This will remove all dangling images."
    };
    if !confirm(warning, a.force)? {
        return Ok(());
    }
    let store = ctx.store()?;
    let lines = prune_images(&store, a.all)?;
    let freed = gc(&store)?;
    print_section("Deleted Images", &lines);
    println!("Total reclaimed space: {}", human_size(freed));
    Ok(())
}
