//! `layerfs rmi [-f] IMAGE...`: untags, and removes an image when its last
//! name goes; its blobs are freed unless another image shares them.

use super::{Ctx, ExitCode};
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
        // One line per image that stays, as `docker rmi` prints them.
        if let Err(e) = remove(&store, what, a.force) {
            eprintln!("layerfs: rmi {what}: {}", super::one_line(&e));
            failed = true;
        }
    }
    let held = store.held_manifests()?;
    let report = store.gc(&held)?;
    log::info!("freed {} bytes", report.freed);
    if failed {
        return Err(ExitCode(1).into());
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
    let id = store.image_id(&entry.descriptor).unwrap_or(digest);
    // An image named by its ID goes whole, with every manifest it is stored
    // under (the same config with gzip and with zstd layers, say).
    let by_id = by_tag.is_none() && id.hex().starts_with(what.trim_start_matches("sha256:"));
    let mut digests = vec![digest];
    if by_id {
        for e in store.image_entries()? {
            let d = e.descriptor.digest;
            if !digests.contains(&d) && store.image_id(&e.descriptor).ok() == Some(id) {
                digests.push(d);
            }
        }
    }
    let mut tags = Vec::new();
    for d in &digests {
        tags.extend(store.tags_of(d)?);
    }
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
        .filter(|h| h.manifests.iter().any(|m| digests.contains(m)))
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
    for d in &digests {
        store.remove_image_entries(d)?;
    }
    println!("Deleted: {id}");
    Ok(())
}
