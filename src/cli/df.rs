//! `layerfs df [--format table|json|TEMPLATE]`: bytes per image (total,
//! unique, shared) and the store's total, where a shared layer counts once;
//! what gc would free, computed as gc computes it.

use super::Ctx;
use super::format::{OutputFormat, header_for, human_size, print_table, repo_and_tag};
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// table, json, or a Go template over each image ({{.Repository}}, {{.Size}}, {{.UniqueSize}})
    #[arg(long)]
    format: Option<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let format = OutputFormat::parse(a.format.as_deref())?;
    let store = ctx.store()?;
    let u = layerfs::image::usage(&store)?;
    let rows: Vec<Vec<String>> = u
        .images
        .iter()
        .map(|i| {
            let (repo, tag) = repo_and_tag(i.names.first().map(String::as_str));
            vec![
                repo,
                tag,
                i.id.short(),
                human_size(i.total),
                human_size(i.unique),
                human_size(i.shared),
            ]
        })
        .collect();
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&u)?),
        OutputFormat::Template(t) => {
            let v: Vec<_> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({"Repository": r[0], "Tag": r[1], "ID": r[2],
                        "Size": r[3], "UniqueSize": r[4], "SharedSize": r[5]})
                })
                .collect();
            super::format::print_template(&t, &v, header_for(&[("ID", "IMAGE ID")]))?;
        }
        OutputFormat::Table => {
            print_table(
                &[
                    "REPOSITORY",
                    "TAG",
                    "IMAGE ID",
                    "SIZE",
                    "UNIQUE SIZE",
                    "SHARED SIZE",
                ],
                &rows,
            );
            println!();
            println!(
                "Images: {} using {} (shared layers counted once)",
                u.images.len(),
                human_size(u.images_total)
            );
            println!(
                "Build cache: {} images using {} of their own",
                u.build_cache_images,
                human_size(u.build_cache)
            );
            println!(
                "Blobs on disk: {}, layer indexes: {}",
                human_size(u.blobs_total),
                human_size(u.indexes_total)
            );
            println!("Reclaimable by gc: {}", human_size(u.reclaimable));
        }
    }
    Ok(())
}
