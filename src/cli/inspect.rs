//! `layerfs inspect IMAGE...`: the image's identity, config and layers as JSON.

use super::Ctx;
use anyhow::{Context, Result};
use layerfs::layer::LayerIndex;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let mut out = Vec::new();
    for what in &a.images {
        let r = store
            .resolve(what)
            .with_context(|| format!("inspect {what}"))?;
        let tags = store.tags_of(&r.top.digest)?;
        let layers: Vec<_> = r
            .manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let index = LayerIndex::open(&store.layer_index_path(&l.digest), &l.digest).ok();
                json!({
                    "Digest": l.digest,
                    "MediaType": l.media_type,
                    "Size": l.size,
                    "DiffID": r.config.rootfs.diff_ids.get(i),
                    "Compression": index.as_ref().map(|x| x.compression().name()),
                    "UncompressedSize": index.as_ref().map(|x| x.meta().uncompressed_size),
                })
            })
            .collect();
        let size: u64 = r.manifest.layers.iter().map(|l| l.size).sum();
        out.push(json!({
            "Id": r.id(),
            "RepoTags": tags,
            "Digest": r.top.digest,
            "ManifestDigest": r.manifest_digest,
            "MediaType": r.manifest.media_type(),
            "Created": r.config.created,
            "Author": r.config.author,
            "Architecture": r.config.architecture,
            "Os": r.config.os,
            "Variant": r.config.variant,
            "Config": r.config.config,
            "RootFS": { "Type": r.config.rootfs.kind, "Layers": r.config.rootfs.diff_ids },
            "Size": size,
            "Layers": layers,
            "History": r.config.history,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
