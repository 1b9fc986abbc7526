//! `layerfs pull [--platform P | --all-platforms] [-q] REF`

use super::Ctx;
use super::transfer::{Display, TransportArgs, Verb};
use anyhow::{Context, Result, anyhow};
use layerfs::oci::{Platform, Reference};
use layerfs::registry::{PullOptions, pull};

#[derive(clap::Args)]
pub struct Args {
    /// Image to pull: [REGISTRY/]NAME[:TAG|@DIGEST]
    reference: String,
    /// Platform to pick from a multi-platform image (os/arch[/variant]); this machine's by default
    #[arg(
        long,
        value_name = "OS/ARCH[/VARIANT]",
        conflicts_with = "all_platforms"
    )]
    platform: Option<String>,
    /// Pull every platform of a multi-platform image and keep its index
    #[arg(long)]
    all_platforms: bool,
    /// Print only the image name at the end
    #[arg(short, long)]
    quiet: bool,
    /// Fetch only the manifest, the config and each layer's index; layer data comes as it is read
    #[arg(long, conflicts_with = "all_platforms")]
    lazy: bool,
    #[command(flatten)]
    transport: TransportArgs,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let reference = Reference::parse(&a.reference)?;
    let platform = a
        .platform
        .as_deref()
        .map(|p| {
            Platform::parse(p)
                .ok_or_else(|| anyhow!("invalid --platform {p:?}: expected os/arch[/variant]"))
        })
        .transpose()?;
    let store = ctx.store()?;
    let mut opts = PullOptions::new(a.transport.client_options());
    opts.platform = platform;
    opts.all_platforms = a.all_platforms;
    opts.lazy = a.lazy;
    let display = Display::new(Verb::Pull, a.quiet);
    let result = pull(&store, &reference, &opts, &display);
    display.finish();
    let report = result.with_context(|| format!("pull {}", a.reference))?;
    if !a.quiet {
        println!("Digest: {}", report.digest);
        if report.up_to_date {
            println!("Status: Image is up to date for {}", report.name);
        } else {
            println!("Status: Downloaded newer image for {}", report.name);
        }
        if report.layers_lazy > 0 {
            println!(
                "Lazy: {} layer(s) stay in the registry, fetched as they are read",
                report.layers_lazy
            );
        }
    }
    println!("{}", report.name);
    Ok(())
}
