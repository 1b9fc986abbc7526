//! `layerfs index push REF`: publishes the layer indexes of an image that
//! is in a registry already (pushed by another tool), so that lazy mounts
//! of it need not read its layers first. Each layer is read once,
//! streaming; nothing is stored.

use super::transfer::TransportArgs;
use anyhow::{Context, Result};
use layerfs::oci::Reference;
use layerfs::registry::index_push;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Index each layer of REF and push the indexes as an artifact of it
    Push {
        /// [REGISTRY/]NAME[:TAG|@DIGEST]
        reference: String,
        #[command(flatten)]
        transport: TransportArgs,
    },
}

pub fn run(a: Args) -> Result<()> {
    match a.action {
        Action::Push {
            reference,
            transport,
        } => {
            let r = Reference::parse(&reference)?;
            let published = index_push(&r, &transport.client_options())
                .with_context(|| format!("index push {reference}"))?;
            for p in published {
                let bytes: u64 = p.indexes.iter().map(|(_, n)| n).sum();
                println!(
                    "{}: {} layer indexes ({bytes} bytes) as {}",
                    r.name(),
                    p.indexes.len(),
                    p.artifact.digest
                );
            }
            Ok(())
        }
    }
}
