//! `rmi`'s rule: a name the image shares with others is only untagged;
//! otherwise all its names go and the image with them, unless it was given
//! by ID while it has several names, or a mount or container uses it (both
//! overridden by `force`). Its blobs stay until the next gc.

use super::ImageError;
use crate::oci::{Digest, Reference};
use crate::store::Store;

/// What removing one image did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removal {
    /// Names taken away, in order.
    pub untagged: Vec<String>,
    /// The image ID, when the image itself went.
    pub deleted: Option<Digest>,
}

/// Removes the image `what` (a name, ID or digest) as `rmi` does.
pub fn remove_image(store: &Store, what: &str, force: bool) -> Result<Removal, ImageError> {
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
    if let Some(tag) = &by_tag
        && tags.len() > 1
    {
        store.untag(tag)?;
        return Ok(Removal {
            untagged: vec![tag.clone()],
            deleted: None,
        });
    }
    if by_tag.is_none() && tags.len() > 1 && !force {
        return Err(ImageError::SeveralNames {
            id: id.short().to_string(),
            names: tags.join(", "),
        });
    }
    let users: Vec<String> = store
        .holds()?
        .into_iter()
        .filter(|h| h.manifests.iter().any(|m| digests.contains(m)))
        .map(|h| h.what)
        .collect();
    if !users.is_empty() && !force {
        return Err(ImageError::InUse(users.join(", ")));
    }
    let mut removal = Removal::default();
    for t in tags {
        store.untag(&t)?;
        removal.untagged.push(t);
    }
    for d in &digests {
        store.remove_image_entries(d)?;
    }
    removal.deleted = Some(id);
    Ok(removal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{layer_descriptor, new_config, write_image};
    use crate::layer::ingest;
    use crate::store::Hold;
    use crate::testutil::{TarBuilder, temp_store};

    fn image(store: &Store, name: &str) -> Digest {
        let mut t = TarBuilder::new();
        t.file("a", 0o644, b"a\n");
        let info = ingest(store, &t.finish()[..], None).unwrap();
        let r = Reference::parse(name).unwrap();
        write_image(store, &new_config(), &[layer_descriptor(&info)], Some(&r))
            .unwrap()
            .id
    }

    /// An image named `a:1` and `b:1`: its ID and index entry.
    fn named_twice(store: &Store) -> (Digest, crate::oci::Descriptor) {
        let id = image(store, "a:1");
        let desc = store.find_entry("a:1").unwrap().descriptor;
        store
            .tag(&Reference::parse("b:1").unwrap().canonical(), &desc)
            .unwrap();
        (id, desc)
    }

    fn names(store: &Store) -> Vec<String> {
        let mut v: Vec<String> = store
            .image_entries()
            .unwrap()
            .iter()
            .filter_map(|e| e.name().map(String::from))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn one_of_several_names_is_only_untagged_and_the_last_deletes() {
        let (_d, store) = temp_store();
        let (id, _) = named_twice(&store);
        let r = remove_image(&store, "a:1", false).unwrap();
        assert_eq!(r.deleted, None);
        assert_eq!(r.untagged.len(), 1);
        assert_eq!(names(&store).len(), 1);
        let r = remove_image(&store, "b:1", false).unwrap();
        assert_eq!(r.deleted, Some(id));
        assert!(names(&store).is_empty());
        assert!(store.image_entries().unwrap().is_empty());
    }

    #[test]
    fn by_id_with_several_names_or_in_use_needs_force() {
        let (_d, store) = temp_store();
        let (id, desc) = named_twice(&store);
        let e = remove_image(&store, &id.to_string(), false).unwrap_err();
        assert!(matches!(e, ImageError::SeveralNames { .. }), "{e}");
        assert_eq!(names(&store).len(), 2);

        store
            .add_hold(&Hold {
                id: "test".into(),
                manifests: vec![desc.digest],
                what: "the mount at /mnt/x".into(),
                pid: None,
            })
            .unwrap();
        let e = remove_image(&store, "a:1", false);
        // Untagging one of two names is allowed even while in use.
        assert!(e.is_ok());
        let e = remove_image(&store, "b:1", false).unwrap_err();
        assert!(e.to_string().contains("the mount at /mnt/x"), "{e}");
        let r = remove_image(&store, "b:1", true).unwrap();
        assert_eq!(r.deleted, Some(id));
    }
}
