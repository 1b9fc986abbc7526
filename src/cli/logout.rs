//! `layerfs logout REGISTRY`: forgets the saved credentials.

use super::Ctx;
use super::login::registry_host;
use anyhow::{Context, Result};
use layerfs::registry::{RegistryConfig, logout};

#[derive(clap::Args)]
pub struct Args {
    /// Registry host[:port]
    registry: String,
}

pub fn run(_ctx: &Ctx, a: Args) -> Result<()> {
    let registry = registry_host(&a.registry);
    let config = RegistryConfig::from_env();
    if logout(&registry, &config).with_context(|| format!("logout {registry}"))? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}
