//! `layerfs images [REPOSITORY[:TAG]] [-q] [--format json] [--no-trunc]`

use super::Ctx;
use super::format::{OutputFormat, human_size, print_table, repo_and_tag, short_id};
use anyhow::Result;
use layerfs::oci::Platform;
use layerfs::oci::time::human_age;
use layerfs::store::Store;

#[derive(clap::Args)]
pub struct Args {
    /// Show only images whose repository (and tag) match
    filter: Option<String>,
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// Output format: table or json
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Show full image IDs
    #[arg(long)]
    no_trunc: bool,
    /// Show manifest digests
    #[arg(long)]
    digests: bool,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImageJson {
    id: String,
    names: Vec<String>,
    digest: String,
    created: Option<String>,
    size: u64,
    /// Bytes on disk: less than `size` for a lazy image not yet whole.
    local_size: u64,
    layers: usize,
    architecture: String,
    os: String,
}

struct Row {
    name: Option<String>,
    id: String,
    digest: String,
    created: Option<String>,
    size: u64,
    local: u64,
    layers: usize,
    arch: String,
    os: String,
}

fn rows(store: &Store) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for e in store.image_entries()? {
        let (_, m) = store.manifest_for_platform(&e.descriptor.digest, &Platform::host())?;
        let config = store.read_config(&m.config.digest)?;
        out.push(Row {
            name: e.name().map(str::to_string),
            id: m.config.digest.to_string(),
            digest: e.descriptor.digest.to_string(),
            created: config.created,
            size: m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>(),
            local: m.config.size
                + m.layers
                    .iter()
                    .map(|l| store.local_bytes(&l.digest))
                    .sum::<u64>(),
            layers: m.layers.len(),
            arch: config.architecture,
            os: config.os,
        });
    }
    Ok(out)
}

/// The size, and for a lazy image not yet whole how much of it is local.
fn lazy_size(size: u64, local: u64) -> String {
    if local >= size {
        return human_size(size);
    }
    format!(
        "{} ({}% local)",
        human_size(size),
        local.saturating_mul(100) / size.max(1)
    )
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let mut rows = rows(&store)?;
    if let Some(f) = &a.filter {
        rows.retain(|r| {
            let (repo, tag) = repo_and_tag(r.name.as_deref());
            repo == *f || format!("{repo}:{tag}") == *f
        });
    }
    match a.format {
        OutputFormat::Json => {
            let mut images: Vec<ImageJson> = Vec::new();
            for r in rows {
                match images.iter_mut().find(|i| i.digest == r.digest) {
                    Some(i) => i.names.extend(r.name),
                    None => images.push(ImageJson {
                        id: r.id,
                        names: r.name.into_iter().collect(),
                        digest: r.digest,
                        created: r.created,
                        size: r.size,
                        local_size: r.local,
                        layers: r.layers,
                        architecture: r.arch,
                        os: r.os,
                    }),
                }
            }
            println!("{}", serde_json::to_string_pretty(&images)?);
        }
        OutputFormat::Table if a.quiet => {
            let mut seen = Vec::new();
            for r in rows {
                let id = short_id(&r.id, a.no_trunc);
                if !seen.contains(&id) {
                    println!("{id}");
                    seen.push(id);
                }
            }
        }
        OutputFormat::Table => {
            let mut headers = vec!["REPOSITORY", "TAG"];
            if a.digests {
                headers.push("DIGEST");
            }
            headers.extend(["IMAGE ID", "CREATED", "SIZE"]);
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let (repo, tag) = repo_and_tag(r.name.as_deref());
                    let mut row = vec![repo, tag];
                    if a.digests {
                        row.push(r.digest.clone());
                    }
                    row.extend([
                        short_id(&r.id, a.no_trunc),
                        human_age(r.created.as_deref()),
                        lazy_size(r.size, r.local),
                    ]);
                    row
                })
                .collect();
            print_table(&headers, &table);
        }
    }
    Ok(())
}
