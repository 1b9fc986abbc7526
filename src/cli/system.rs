//! `layerfs system df|prune|info`, as Docker's: disk use by images,
//! containers and the build cache, and one command that removes what
//! nothing uses.

use super::Ctx;
use super::format::{OutputFormat, header_for, human_size, print_table};
use super::prune;
use anyhow::{Context, Result};
use layerfs::image::BUILD_CACHE_HOLD;
use layerfs::oci::Digest;
use layerfs::store::Store;
use std::collections::HashSet;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: SystemCommand,
}

#[derive(clap::Subcommand)]
enum SystemCommand {
    /// Show disk usage of images, containers and the build cache
    Df(DfArgs),
    /// Remove stopped containers, unused images and the build cache
    Prune(PruneArgs),
    /// Show the store and the driver's facts (as `layerfs info`)
    Info(super::info::Args),
}

#[derive(clap::Args)]
pub struct DfArgs {
    /// table, json, or a Go template ({{.Type}}, {{.Size}}, {{.Reclaimable}})
    #[arg(long)]
    format: Option<String>,
}

#[derive(clap::Args)]
pub struct PruneArgs {
    /// Remove all images without a container, not only unnamed ones
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation
    #[arg(short, long)]
    force: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    match a.command {
        SystemCommand::Df(a) => df(ctx, a),
        SystemCommand::Prune(a) => system_prune(ctx, a),
        SystemCommand::Info(a) => super::info::info(ctx, a),
    }
}

/// One row of `system df`.
struct Usage {
    kind: &'static str,
    total: usize,
    active: usize,
    size: u64,
    reclaimable: u64,
}

fn sum_sizes(store: &Store, blobs: impl Iterator<Item = Digest>) -> u64 {
    blobs.filter_map(|d| store.blob_size(&d).ok()).sum()
}

fn usage(store: &Store) -> Result<(Vec<Usage>, u64)> {
    let u = layerfs::image::usage(store)?;
    let containers = layerfs::container::list(store)?;
    let holds = store.holds()?;
    // Images a container, a mount or a running build uses.
    let used: HashSet<Digest> = holds
        .iter()
        .filter(|h| h.id != BUILD_CACHE_HOLD)
        .flat_map(|h| h.manifests.iter().copied())
        .collect();
    let active = u
        .images
        .iter()
        .filter(|i| used.contains(&i.manifest))
        .count();
    // What `image prune -a` and gc would free: blobs only unused images reach.
    let all_held: Vec<Digest> = holds.iter().flat_map(|h| h.manifests.clone()).collect();
    let kept = store.reachable_from(&all_held)?;
    let of_images =
        store.reachable_from(&u.images.iter().map(|i| i.manifest).collect::<Vec<_>>())?;
    let images_reclaimable = sum_sizes(store, of_images.into_iter().filter(|d| !kept.contains(d)));
    let mut c_size = 0;
    let mut c_active = 0;
    let mut c_reclaimable = 0;
    for c in &containers {
        let row = super::ps::Row::load(store, c.clone(), true)?;
        c_size += row.size;
        if row.active() {
            c_active += 1;
        } else {
            c_reclaimable += row.size;
        }
    }
    Ok((
        vec![
            Usage {
                kind: "Images",
                total: u.images.len(),
                active,
                size: u.images_total,
                reclaimable: images_reclaimable,
            },
            Usage {
                kind: "Containers",
                total: containers.len(),
                active: c_active,
                size: c_size,
                reclaimable: c_reclaimable,
            },
            Usage {
                kind: "Build Cache",
                total: u.build_cache_images,
                active: 0,
                size: u.build_cache,
                reclaimable: u.build_cache,
            },
        ],
        u.reclaimable,
    ))
}

fn with_percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return human_size(part);
    }
    format!("{} ({}%)", human_size(part), part * 100 / whole)
}

fn df(ctx: &Ctx, a: DfArgs) -> Result<()> {
    let format = OutputFormat::parse(a.format.as_deref())?;
    let store = ctx.store()?;
    let (rows, gc_now) = usage(&store)?;
    match format {
        OutputFormat::Json => {
            let v: Vec<_> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({"Type": r.kind, "TotalCount": r.total, "Active": r.active,
                        "Size": r.size, "Reclaimable": r.reclaimable})
                })
                .chain([
                    serde_json::json!({"Type": "Unused blobs", "TotalCount": null,
                    "Active": 0, "Size": gc_now, "Reclaimable": gc_now}),
                ])
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        OutputFormat::Template(t) => {
            let v: Vec<_> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({"Type": r.kind, "TotalCount": r.total.to_string(),
                        "Active": r.active.to_string(), "Size": human_size(r.size),
                        "Reclaimable": with_percent(r.reclaimable, r.size)})
                })
                .collect();
            super::format::print_template(&t, &v, header_for(&[("TotalCount", "TOTAL")]))?;
        }
        OutputFormat::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.kind.to_string(),
                        r.total.to_string(),
                        r.active.to_string(),
                        human_size(r.size),
                        with_percent(r.reclaimable, r.size),
                    ]
                })
                .collect();
            print_table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &table);
            println!();
            println!(
                "Reclaimable by gc now (blobs nothing uses, temp files): {}",
                human_size(gc_now)
            );
        }
    }
    Ok(())
}

fn system_prune(ctx: &Ctx, a: PruneArgs) -> Result<()> {
    let warning = if a.all {
        "This will remove:\n  - all stopped containers\n  - all images without at least one container associated to them\n  - all build cache"
    } else {
        "This will remove:\n  - all stopped containers\n  - all dangling images\n  - unused build cache"
    };
    if !prune::confirm(warning, a.force)? {
        return Ok(());
    }
    let store = ctx.store()?;
    let (ids, containers_freed) = prune::prune_containers(&store)?;
    let images = prune::prune_images(&store, a.all)?;
    // `build prune` drops the cache's records and mounts (with -a also the
    // tagged results' records) and collects what only they kept.
    let cache = layerfs::dockerfile::prune(&store, a.all).context("pruning the build cache")?;
    let freed = containers_freed + cache.freed + prune::gc(&store)?;
    prune::print_section("Deleted Containers", &ids);
    prune::print_section("Deleted Images", &images);
    if cache.records > 0 {
        println!("Deleted build cache records: {}\n", cache.records);
    }
    println!("Total reclaimed space: {}", human_size(freed));
    Ok(())
}
