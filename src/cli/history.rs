//! `layerfs history IMAGE`: one line per layer-producing or config step,
//! newest first, as `docker history` prints it.

use super::Ctx;
use super::format::{OutputFormat, go_time, header_for, human_size, print_table, short_id};
use anyhow::{Context, Result};
use layerfs::image::history;
use layerfs::oci::time::human_age;

#[derive(clap::Args)]
pub struct Args {
    image: String,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// table, json, or a Go template ({{.ID}}, {{.CreatedBy}}, {{.Size}}, {{json .}})
    #[arg(long)]
    format: Option<String>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Step {
    id: String,
    created: Option<String>,
    created_by: String,
    size: u64,
    comment: String,
    layer: Option<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let format = OutputFormat::parse(a.format.as_deref())?;
    let store = ctx.store()?;
    let r = store
        .resolve(&a.image)
        .with_context(|| format!("history {}", a.image))?;
    let steps: Vec<Step> = history(&store, &r)
        .into_iter()
        .map(|s| Step {
            id: s.id.map_or_else(|| "<missing>".into(), |d| d.to_string()),
            created: s.created,
            created_by: s.created_by,
            size: s.size,
            comment: s.comment,
            layer: s.layer.map(|d| d.to_string()),
        })
        .collect();
    if a.quiet {
        for s in &steps {
            println!("{}", short_id(&s.id, a.no_trunc));
        }
        return Ok(());
    }
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&steps)?),
        OutputFormat::Template(t) => {
            let rows: Vec<_> = steps
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "ID": short_id(&s.id, a.no_trunc),
                        "CreatedAt": go_time(s.created.as_deref()),
                        "CreatedSince": human_age(s.created.as_deref()),
                        "CreatedBy": s.created_by,
                        "Size": human_size(s.size),
                        "Comment": s.comment,
                    })
                })
                .collect();
            const HEADERS: &[(&str, &str)] = &[("ID", "IMAGE"), ("CreatedSince", "CREATED")];
            super::format::print_template(&t, &rows, header_for(HEADERS))?;
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = steps
                .iter()
                .map(|s| {
                    let by = if a.no_trunc || s.created_by.chars().count() <= 45 {
                        s.created_by.clone()
                    } else {
                        format!("{}…", s.created_by.chars().take(44).collect::<String>())
                    };
                    vec![
                        short_id(&s.id, a.no_trunc),
                        human_age(s.created.as_deref()),
                        by,
                        human_size(s.size),
                        s.comment.clone(),
                    ]
                })
                .collect();
            print_table(
                &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
                &rows,
            );
        }
    }
    Ok(())
}
