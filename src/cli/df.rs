//! `layerfs df [--format json]`: bytes per image (total, unique, shared)
//! and the store's total, where a shared layer counts once.

use super::Ctx;
use super::format::{OutputFormat, human_size, print_table, repo_and_tag};
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Output format: table or json
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let u = layerfs::image::usage(&store)?;
    match a.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&u)?),
        OutputFormat::Table => {
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
                "Blobs on disk: {}, layer indexes: {}",
                human_size(u.blobs_total),
                human_size(u.indexes_total)
            );
            if u.blobs_total > u.images_total {
                println!(
                    "Reclaimable by gc: {}",
                    human_size(u.blobs_total - u.images_total)
                );
            }
        }
    }
    Ok(())
}
