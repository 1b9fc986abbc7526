//! `layerfs rmi [-f] IMAGE...`: untags, and removes an image when its last
//! name goes; its blobs are freed unless another image shares them.

use super::Ctx;
use anyhow::{Context, Result, bail};
use layerfs::oci::Reference;

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    images: Vec<String>,
    /// Remove even if the image has several names or a mount or container uses it
    #[arg(short, long)]
    force: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let mut failed = false;
    for what in &a.images {
        if let Err(e) = remove(&store, what, a.force) {
            eprintln!("layerfs: rmi {what}: {e:#}");
            failed = true;
        }
    }
    let held = store.held_manifests()?;
    let report = store.gc(&held)?;
    log::info!("freed {} bytes", report.freed);
    if failed {
        bail!("some images were not removed");
    }
    Ok(())
}

fn remove(store: &layerfs::store::Store, what: &str, force: bool) -> Result<()> {
    let entry = store.find_entry(what)?;
    let digest = entry.descriptor.digest;
    let by_tag = Reference::parse(what)
        .ok()
        .map(|r| r.canonical())
        .filter(|c| entry.name() == Some(c.as_str()));
    let tags = store.tags_of(&digest)?;
    let id = store.image_id(&entry.descriptor).unwrap_or(digest);
    // Removing one of several tags only untags.
    if let Some(tag) = &by_tag {
        if tags.len() > 1 {
            store.untag(tag)?;
            println!("Untagged: {tag}");
            return Ok(());
        }
    } else if tags.len() > 1 && !force {
        bail!(
            "image {} has several names ({}); remove them by name or use --force",
            id.short(),
            tags.join(", ")
        );
    }
    let users: Vec<String> = store
        .holds()?
        .into_iter()
        .filter(|h| h.manifests.contains(&digest))
        .map(|h| h.what)
        .collect();
    if !users.is_empty() && !force {
        bail!(
            "image is in use by {}; stop using it or use --force",
            users.join(", ")
        );
    }
    for t in &tags {
        store.untag(t).with_context(|| format!("untag {t}"))?;
        println!("Untagged: {t}");
    }
    store.remove_image_entries(&digest)?;
    println!("Deleted: {id}");
    Ok(())
}
