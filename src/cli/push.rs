//! `layerfs push [-q] IMAGE [REF]`: pushes a stored image to REF (or to the
//! registry its own name gives).

use super::Ctx;
use super::transfer::{Display, TransportArgs, Verb};
use anyhow::{Context, Result};
use layerfs::oci::Reference;
use layerfs::registry::{PushOptions, push};

#[derive(clap::Args)]
pub struct Args {
    /// Image in the store: name, name@digest or ID
    image: String,
    /// Where to push it: [REGISTRY/]NAME[:TAG]; IMAGE's own name by default
    reference: Option<String>,
    /// Print only the digest line
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    transport: TransportArgs,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let target_text = a.reference.as_deref().unwrap_or(&a.image);
    let target = Reference::parse(target_text)?;
    let store = ctx.store()?;
    let opts = PushOptions::new(a.transport.client_options());
    let display = Display::new(Verb::Push, a.quiet);
    let result = push(&store, &a.image, &target, &opts, &display);
    display.finish();
    let report = result.with_context(|| format!("push {target_text}"))?;
    println!(
        "{}: digest: {} size: {}",
        report.tag, report.digest, report.size
    );
    Ok(())
}
