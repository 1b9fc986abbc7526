//! `layerfs ps`: containers, their image, whether they run (or their exit
//! code), the size of their changes, and where they are mounted.

use super::Ctx;
use super::format::{OutputFormat, human_size, print_table};
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Output format: table or json
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let mut rows: Vec<(layerfs::container::Container, u64, Option<String>)> = Vec::new();
    let status = |c: &layerfs::container::Container| {
        layerfs::run::state::load(c).map_or_else(|| "created".to_string(), |s| s.describe())
    };
    for c in layerfs::container::list(&store)? {
        let at = match layerfs::mount::records::find_container(&store, &c.name)? {
            Some((r, true)) => Some(r.mountpoint.display().to_string()),
            _ => None,
        };
        let size = c.size();
        rows.push((c, size, at));
    }
    match a.format {
        OutputFormat::Json => {
            let v: Vec<_> = rows
                .iter()
                .map(|(c, size, at)| {
                    {
                        let st = layerfs::run::state::load(c);
                        serde_json::json!({"Name": c.name, "Image": c.image, "ImageDigest": c.manifest, "Created": c.created, "Size": size, "MountedAt": at, "Status": status(c), "ExitCode": st.and_then(|s| s.exit_code)})
                    }
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        OutputFormat::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|(c, size, at)| {
                    vec![
                        c.name.clone(),
                        c.image.clone(),
                        layerfs::oci::time::human_age(Some(&c.created)),
                        status(c),
                        human_size(*size),
                        at.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print_table(
                &["NAME", "IMAGE", "CREATED", "STATUS", "SIZE", "MOUNTED AT"],
                &table,
            );
        }
    }
    Ok(())
}
