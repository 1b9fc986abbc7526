//! `layerfs mounts`: live mounts, and dead ones still to be unmounted.

use super::Ctx;
use super::format::{OutputFormat, print_table};
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Output format: table or json
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let list = layerfs::mount::records::list(&store)?;
    match a.format {
        OutputFormat::Json => {
            let v: Vec<_> = list
                .iter()
                .map(|(r, alive)| serde_json::json!({"record": r, "alive": alive}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|(r, alive)| {
                    vec![
                        r.mountpoint.display().to_string(),
                        r.image.clone(),
                        if r.writable { "rw".into() } else { "ro".into() },
                        r.pid.to_string(),
                        if *alive {
                            "serving".into()
                        } else {
                            "dead (run layerfs umount)".into()
                        },
                    ]
                })
                .collect();
            print_table(&["MOUNTPOINT", "IMAGE", "MODE", "PID", "STATUS"], &rows);
        }
    }
    Ok(())
}
