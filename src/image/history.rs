//! `history`: an image's steps, newest first, each paired with the layer it
//! made. Steps marked `empty_layer` made none; the others take the layers
//! in order, and layers no step accounts for (an image without history)
//! come as blank steps.

use crate::layer::LayerIndex;
use crate::oci::Digest;
use crate::store::{ResolvedImage, Store};

/// One step of an image's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryStep {
    /// The image ID, on the newest step only (Docker shows `<missing>`
    /// for the others).
    pub id: Option<Digest>,
    pub created: Option<String>,
    pub created_by: String,
    /// Bytes of its layer uncompressed (compressed if its index is
    /// missing); 0 for a step that made no layer.
    pub size: u64,
    pub comment: String,
    pub layer: Option<Digest>,
}

/// The steps of `image`, newest first.
pub fn history(store: &Store, image: &ResolvedImage) -> Vec<HistoryStep> {
    let layers = &image.manifest.layers;
    let layer = |i: usize| {
        layers.get(i).map(|l| {
            let size = LayerIndex::open(&store.layer_index_path(&l.digest), &l.digest)
                .map_or(l.size, |x| x.meta().uncompressed_size);
            (size, l.digest)
        })
    };
    let mut steps = Vec::new();
    let mut next = 0;
    for h in &image.config.history {
        let made = if h.empty_layer {
            None
        } else {
            next += 1;
            layer(next - 1)
        };
        steps.push(HistoryStep {
            id: None,
            created: h.created.clone(),
            created_by: h.created_by.clone().unwrap_or_default(),
            size: made.map_or(0, |(s, _)| s),
            comment: h.comment.clone().unwrap_or_default(),
            layer: made.map(|(_, d)| d),
        });
    }
    for i in next..layers.len() {
        let made = layer(i);
        steps.push(HistoryStep {
            id: None,
            created: None,
            created_by: String::new(),
            size: made.map_or(0, |(s, _)| s),
            comment: String::new(),
            layer: made.map(|(_, d)| d),
        });
    }
    steps.reverse();
    if let Some(top) = steps.first_mut() {
        top.id = Some(image.id());
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{layer_descriptor, new_config, write_image};
    use crate::layer::ingest;
    use crate::oci::{HistoryEntry, Reference};
    use crate::testutil::{TarBuilder, temp_store};

    fn step(by: &str, empty: bool) -> HistoryEntry {
        HistoryEntry {
            created_by: Some(by.into()),
            empty_layer: empty,
            ..Default::default()
        }
    }

    #[test]
    fn steps_pair_with_layers_skipping_empty_ones_and_extra_layers_come_blank() {
        let (_d, store) = temp_store();
        let infos: Vec<_> = (0..3)
            .map(|i| {
                let mut t = TarBuilder::new();
                t.file(&format!("f{i}"), 0o644, &vec![b'x'; 1000 * (i + 1)]);
                ingest(&store, &t.finish()[..], None).unwrap()
            })
            .collect();
        let mut config = new_config();
        config.rootfs.diff_ids = infos.iter().map(|i| i.diff_id).collect();
        // Two steps for three layers, an ENV between them.
        config.history = vec![
            step("ADD a", false),
            step("ENV x", true),
            step("RUN b", false),
        ];
        let descs: Vec<_> = infos.iter().map(layer_descriptor).collect();
        let r = Reference::parse("h:1").unwrap();
        write_image(&store, &config, &descs, Some(&r)).unwrap();
        let image = store.resolve("h:1").unwrap();
        let steps = history(&store, &image);
        let got: Vec<(Option<Digest>, &str, Option<Digest>)> = steps
            .iter()
            .map(|s| (s.id, s.created_by.as_str(), s.layer))
            .collect();
        assert_eq!(
            got,
            [
                (Some(image.id()), "", Some(infos[2].digest)),
                (None, "RUN b", Some(infos[1].digest)),
                (None, "ENV x", None),
                (None, "ADD a", Some(infos[0].digest)),
            ]
        );
        assert_eq!(steps[2].size, 0);
        assert_eq!(steps[3].size, infos[0].uncompressed_size);
        assert!(steps[1].size > steps[3].size);
    }
}
