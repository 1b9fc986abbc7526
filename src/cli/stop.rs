//! `layerfs stop [-t SECONDS] CONTAINER...` and `layerfs kill [-s SIGNAL]
//! CONTAINER...`, as Docker's.

use super::Ctx;
use anyhow::{Result, bail};
use layerfs::run::control;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds to wait after SIGTERM before SIGKILL
    #[arg(short, long, default_value_t = 10)]
    time: u64,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(clap::Args)]
pub struct KillArgs {
    /// The signal (name or number)
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

fn each(
    ctx: &Ctx,
    names: &[String],
    what: &str,
    f: impl Fn(&layerfs::container::Container) -> Result<(), layerfs::run::RunError>,
) -> Result<()> {
    let store = ctx.store()?;
    let mut failed = false;
    for name in names {
        let r = layerfs::container::load(&store, name)
            .map_err(anyhow::Error::from)
            .and_then(|c| f(&c).map_err(anyhow::Error::from));
        match r {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("layerfs: {what} {name}: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("some containers failed to {what}");
    }
    Ok(())
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    each(ctx, &a.containers, "stop", |c| {
        control::stop(c, std::time::Duration::from_secs(a.time))
    })
}

pub fn kill(ctx: &Ctx, a: KillArgs) -> Result<()> {
    let sig = a.signal.trim_start_matches("SIG").to_string();
    each(ctx, &a.containers, "kill", |c| control::kill(c, &sig))
}
