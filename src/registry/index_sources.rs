//! The index sources a lazy pull asks, in order (see `lazy::IndexSource`):
//! an index the store has, then the layerfs index published with the image,
//! then one made from an eStargz layer's TOC.
//! Listed here, apart from both, so neither file needs the other.

use super::estargz::EstargzIndex;
use super::lazy::{IndexSource, index_sources};
use super::referrers::PublishedIndex;

pub fn all() -> Vec<Box<dyn IndexSource>> {
    let mut sources = index_sources();
    sources.push(Box::new(PublishedIndex::default()));
    sources.push(Box::new(EstargzIndex));
    sources
}
