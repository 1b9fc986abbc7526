//! `layerfs inspect [-f TEMPLATE] [--type image|container] NAME...`: images
//! (identity, config, layers) and containers (ID, name, image, state, where
//! their changes live) as a JSON array, as `docker inspect` prints them. A
//! name found neither way gets an error line, and the command exits 1
//! after printing what it found.

use super::template::{Missing, Template};
use super::{Ctx, ExitCode};
use anyhow::Result;
use layerfs::container::Container;
use layerfs::layer::LayerIndex;
use layerfs::store::Store;
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    Image,
    Container,
}

#[derive(clap::Args)]
pub struct Args {
    /// Images or containers, by name or ID
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
    /// A Go template per result ({{.Id}}, {{.Config.Env}}, {{json .Config}})
    #[arg(short, long)]
    format: Option<String>,
    /// Look only for this kind of object
    #[arg(long = "type", value_enum)]
    kind: Option<Kind>,
}

fn image_json(store: &Store, what: &str) -> Result<Value> {
    let r = store.resolve(what)?;
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
    Ok(json!({
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
        // Uncompressed, as Docker's and `images`' SIZE.
        "Size": super::images::image_size(store, &r.manifest),
        "Layers": layers,
        "History": r.config.history,
    }))
}

fn container_json(store: &Store, c: &Container) -> Result<Value> {
    let row = super::ps::Row::load(store, c.clone(), true)?;
    let st = row.state.as_ref();
    let image_id = c
        .image_manifest(store)
        .map(|m| m.config.digest.to_string())
        .unwrap_or_default();
    let running = row.running();
    Ok(json!({
        "Id": c.id,
        "Name": c.name,
        "Created": c.created,
        "Image": image_id,
        "ImageDigest": c.manifest,
        "Config": { "Image": c.image },
        "State": {
            "Status": row.state_word(),
            "Running": running,
            "Pid": st.filter(|_| running).map_or(0, |s| s.pid),
            "ExitCode": st.and_then(|s| s.exit_code).unwrap_or(0),
            "StartedAt": st.map(|s| s.started.clone()),
            "FinishedAt": st.and_then(|s| s.finished.clone()),
        },
        "SizeRw": row.size,
        "GraphDriver": {
            "Name": "layerfs",
            "Data": {
                "UpperDir": c.upper(),
                "WorkDir": c.work(),
                "MountPoint": row.mounted_at,
            },
        },
    }))
}

/// Containers first, then images, as Docker looks names up.
fn find(store: &Store, what: &str, kind: Option<Kind>) -> Result<Value> {
    if kind != Some(Kind::Image) {
        match layerfs::container::load(store, what) {
            Ok(c) => return container_json(store, &c),
            Err(layerfs::container::ContainerError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if kind == Some(Kind::Container) {
        anyhow::bail!("no such container: {what}");
    }
    match image_json(store, what) {
        Ok(v) => Ok(v),
        Err(e)
            if kind.is_none()
                && matches!(
                    e.downcast_ref::<layerfs::store::StoreError>(),
                    Some(layerfs::store::StoreError::ImageNotFound(_))
                ) =>
        {
            anyhow::bail!("no such image or container: {what}")
        }
        Err(e) => Err(e),
    }
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let template = a
        .format
        .as_deref()
        .map(|f| Template::parse(f, Missing::NoValue))
        .transpose()?;
    let store = ctx.store()?;
    let mut found = Vec::new();
    let mut missing = false;
    for what in &a.names {
        match find(&store, what, a.kind) {
            Ok(v) => found.push(v),
            Err(e) => {
                eprintln!("layerfs: inspect {what}: {}", super::one_line(&e));
                missing = true;
            }
        }
    }
    match &template {
        Some(t) => {
            for v in &found {
                println!("{}", t.render(v)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&found)?),
    }
    if missing {
        return Err(ExitCode(1).into());
    }
    Ok(())
}
