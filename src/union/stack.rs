//! `Stack`: the layers of one image opened for reading, base first, and the
//! hard links that cross layers, resolved once.

use crate::layer::{EntryKind, Layer, LayerError, SpanCache};
use crate::oci::Digest;
use crate::store::Store;
use std::collections::HashMap;
use std::sync::Arc;

/// (layer number, entry id) — an entry of one layer of the stack.
pub type LowerRef = (u16, u32);

pub struct Stack {
    /// Base layer first, as the manifest lists them.
    pub layers: Vec<Layer>,
    /// Hard links whose target lives in a lower layer → that target.
    pub external: HashMap<LowerRef, LowerRef>,
    /// The reverse: a target → the links in higher layers that name it.
    pub external_members: HashMap<LowerRef, Vec<LowerRef>>,
}

impl Stack {
    /// Opens each layer's index (rebuilding damaged ones); reads no layer data.
    pub fn open(
        store: &Store,
        layers: &[Digest],
        cache: Arc<SpanCache>,
    ) -> Result<Stack, LayerError> {
        if layers.len() > u16::MAX as usize {
            return Err(LayerError::BadPath {
                path: String::new(),
                why: "too many layers",
            });
        }
        let layers = layers
            .iter()
            .map(|d| Layer::open(store, d, cache.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut stack = Stack {
            layers,
            external: HashMap::new(),
            external_members: HashMap::new(),
        };
        stack.resolve_external_links();
        Ok(stack)
    }

    /// For each cross-layer hard link (rare, and listed in each index), the
    /// entry its path names in the nearest layer below that has it.
    fn resolve_external_links(&mut self) {
        for l in 0..self.layers.len() {
            let links: Vec<u32> = self.layers[l].index.external_links().collect();
            for id in links {
                let target = self.layers[l].index.entry(id).link().to_vec();
                match self.find_below(l, &target) {
                    Some(t) => {
                        self.external.insert((l as u16, id), t);
                        self.external_members
                            .entry(t)
                            .or_default()
                            .push((l as u16, id));
                    }
                    None => log::warn!(
                        "layer {}: hard link {:?} names a missing {:?}; it is not shown",
                        self.layers[l].digest(),
                        String::from_utf8_lossy(&self.layers[l].index.entry(id).path()),
                        String::from_utf8_lossy(&target)
                    ),
                }
            }
        }
    }

    fn find_below(&self, layer: usize, path: &[u8]) -> Option<LowerRef> {
        let (dir, name) = match path.iter().rposition(|&c| c == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], path),
        };
        for l in (0..layer).rev() {
            let index = &self.layers[l].index;
            let Some(d) = index.find_dir(dir) else {
                continue;
            };
            let (real, whiteout) = d.lookup(name);
            if let Some(e) = real {
                return match e.kind() {
                    EntryKind::HardLink if e.target() != crate::layer::NONE => {
                        Some((l as u16, e.target()))
                    }
                    EntryKind::HardLink => self.external.get(&(l as u16, e.id())).copied(),
                    EntryKind::Directory => None,
                    _ => Some((l as u16, e.id())),
                };
            }
            if whiteout {
                return None;
            }
        }
        None
    }
}
