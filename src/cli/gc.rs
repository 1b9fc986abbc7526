//! `layerfs gc`: removes blobs no image, mount or container uses, and temp
//! files left by interrupted writers.

use super::Ctx;
use super::format::human_size;
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(ctx: &Ctx, _a: Args) -> Result<()> {
    let store = ctx.store()?;
    let report = store.gc(&[])?;
    for (d, size) in &report.removed {
        println!("deleted: {d} ({})", human_size(*size));
    }
    println!(
        "Deleted {} blobs and {} temp files, freed {}",
        report.removed.len(),
        report.temp_files,
        human_size(report.freed)
    );
    Ok(())
}
