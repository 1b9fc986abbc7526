//! `layerfs history IMAGE`: one line per layer-producing or config step,
//! newest first, as `docker history` prints it.

use super::Ctx;
use super::format::{OutputFormat, human_size, print_table, short_id};
use anyhow::{Context, Result};
use layerfs::layer::LayerIndex;
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
    /// Output format: table or json
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
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
    let store = ctx.store()?;
    let r = store
        .resolve(&a.image)
        .with_context(|| format!("history {}", a.image))?;
    let layer_size = |i: usize| -> u64 {
        r.manifest.layers.get(i).map_or(0, |l| {
            LayerIndex::open(&store.layer_index_path(&l.digest), &l.digest)
                .map_or(l.size, |x| x.meta().uncompressed_size)
        })
    };
    let mut steps = Vec::new();
    let mut next_layer = 0;
    for h in &r.config.history {
        let (size, layer) = if h.empty_layer {
            (0, None)
        } else {
            next_layer += 1;
            (
                layer_size(next_layer - 1),
                r.manifest
                    .layers
                    .get(next_layer - 1)
                    .map(|l| l.digest.to_string()),
            )
        };
        steps.push(Step {
            id: "<missing>".into(),
            created: h.created.clone(),
            created_by: h.created_by.clone().unwrap_or_default(),
            size,
            comment: h.comment.clone().unwrap_or_default(),
            layer,
        });
    }
    // Layers the history does not account for (images without history).
    for i in next_layer..r.manifest.layers.len() {
        steps.push(Step {
            id: "<missing>".into(),
            created: None,
            created_by: String::new(),
            size: layer_size(i),
            comment: String::new(),
            layer: Some(r.manifest.layers[i].digest.to_string()),
        });
    }
    steps.reverse();
    if let Some(top) = steps.first_mut() {
        top.id = r.id().to_string();
    }
    match a.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&steps)?),
        OutputFormat::Table if a.quiet => {
            for s in &steps {
                println!("{}", short_id(&s.id, a.no_trunc));
            }
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
