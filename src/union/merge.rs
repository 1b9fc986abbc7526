//! Merging one directory of the union: the layer directories of its chain,
//! top first (a whiteout hides a name in lower layers only; an opaque marker
//! or a non-directory ends the chain), then the container's upper directory
//! over them.

use super::attr::{FileKind, kind_of};
use super::error::Result;
use super::stack::LowerRef;
use super::tree::{Child, Listing, Source, UnionFs, Upper, lower_ino, no_chain, upper_ino};
use super::upper::{OPAQUE, WHITEOUT_PREFIX, XATTR_METACOPY, XATTR_ORIGIN, XATTR_REDIRECT};
use crate::layer::{Entry, EntryKind, NONE};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

impl UnionFs {
    /// The lower layers' view of the directory whose layer directories are `chain`.
    pub(crate) fn merge_lower(&self, chain: &[(u16, u32)]) -> Listing {
        struct Building {
            child: Child,
            chain: Vec<(u16, u32)>,
            /// Lower layers may still add to this directory.
            open: bool,
        }
        let mut out: Vec<Building> = Vec::new();
        let mut pos: HashMap<Box<[u8]>, usize> = HashMap::new();
        let mut hidden: HashSet<Box<[u8]>> = HashSet::new();
        for &(l, d) in chain {
            let index = &self.stack.layers[l as usize].index;
            let dir = index.dir(d);
            let mut whiteouts: Vec<&[u8]> = Vec::new();
            for id in dir.children() {
                let e = index.entry(id);
                let name = e.name();
                if e.kind() == EntryKind::Whiteout {
                    whiteouts.push(name);
                    continue;
                }
                if hidden.contains(name) {
                    continue;
                }
                let whited_here = whiteouts.last() == Some(&name);
                if let Some(&i) = pos.get(name) {
                    let b = &mut out[i];
                    match e.as_dir() {
                        Some(sub) if b.open && b.child.src.kind == FileKind::Directory => {
                            b.chain.push((l, sub.id()));
                            b.open = !sub.is_opaque();
                        }
                        _ => b.open = false,
                    }
                    continue;
                }
                let Some((src, kind)) = self.resolve(l, &e) else {
                    continue;
                };
                let (sub_chain, open) = match e.as_dir() {
                    Some(sub) => (vec![(l, sub.id())], !sub.is_opaque() && !whited_here),
                    None => (Vec::new(), false),
                };
                pos.insert(name.into(), out.len());
                out.push(Building {
                    child: Child {
                        name: name.into(),
                        ino: lower_ino(src),
                        src: Source {
                            kind,
                            lower: Some(src),
                            chain: no_chain(),
                            upper: Upper::No,
                            lower_here: true,
                        },
                    },
                    chain: sub_chain,
                    open,
                });
            }
            for name in whiteouts {
                match pos.get(name) {
                    Some(&i) => out[i].open = false,
                    None => {
                        hidden.insert(name.into());
                    }
                }
            }
            if dir.is_opaque() {
                break;
            }
        }
        let children = out
            .into_iter()
            .map(|b| {
                let mut c = b.child;
                c.src.chain = b.chain.into();
                c
            })
            .collect();
        Listing::new(children)
    }

    /// The entry that serves `e` (a hard link's target) and its kind; None for
    /// a link whose target is missing.
    pub(crate) fn resolve(&self, layer: u16, e: &Entry<'_>) -> Option<(LowerRef, FileKind)> {
        let src = match e.kind() {
            EntryKind::HardLink if e.target() != NONE => (layer, e.target()),
            EntryKind::HardLink => *self.stack.external.get(&(layer, e.id()))?,
            _ => (layer, e.id()),
        };
        Some((src, kind_of(self.entry(src).kind())?))
    }

    /// The full view of directory `path`: its lower chain, and its upper
    /// directory when it has one.
    pub(crate) fn merge(&self, src: &Source, path: &[u8]) -> Result<Listing> {
        let Some(upper) = self.upper.as_ref().filter(|_| src.upper != Upper::No) else {
            return Ok(self.merge_lower(&src.chain));
        };
        let entries = upper.read_dir(path)?;
        let mut opaque = false;
        let mut whiteouts: HashSet<&[u8]> = HashSet::new();
        for e in &entries {
            if e.name == OPAQUE {
                opaque = true;
            } else if let Some(n) = e.name.strip_prefix(WHITEOUT_PREFIX) {
                whiteouts.insert(n);
            }
        }
        let lower = if opaque {
            Listing::default()
        } else {
            self.merge_lower(&src.chain)
        };
        let mut children: Vec<Child> = Vec::with_capacity(lower.children.len() + entries.len());
        let upper_names: HashSet<&[u8]> = entries.iter().map(|e| e.name.as_slice()).collect();
        for c in &lower.children {
            if !whiteouts.contains(&*c.name) && !upper_names.contains(&*c.name) {
                children.push(c.clone());
            }
        }
        for e in &entries {
            if e.name.starts_with(WHITEOUT_PREFIX) {
                continue;
            }
            let Some(kind) = FileKind::from_mode(e.stat.st_mode) else {
                continue;
            };
            let whited_here = whiteouts.contains(e.name.as_slice());
            let same = if whited_here {
                None
            } else {
                lower.find(&e.name)
            };
            let rel = super::upper::join(path, &e.name);
            let origin = upper
                .get_xattr(&rel, XATTR_ORIGIN)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map(u64::from_le_bytes);
            let child = if kind == FileKind::Directory {
                let redirect = upper.get_xattr(&rel, XATTR_REDIRECT)?;
                let (chain, lower_ref) = match (&redirect, same) {
                    (Some(r), _) => match self.lower_dir_at(r) {
                        Some(c) => (c.src.chain.clone(), c.src.lower),
                        None => (no_chain(), None),
                    },
                    (None, Some(s)) if s.src.kind == FileKind::Directory => {
                        (s.src.chain.clone(), s.src.lower)
                    }
                    _ => (no_chain(), None),
                };
                let ino = origin
                    .or(same
                        .filter(|s| s.src.kind == FileKind::Directory)
                        .map(|s| s.ino))
                    .unwrap_or_else(|| upper_ino(e.stat.st_ino));
                Child {
                    name: e.name.clone().into(),
                    ino,
                    src: Source {
                        kind,
                        lower: lower_ref,
                        chain,
                        upper: Upper::Full,
                        lower_here: same.is_some(),
                    },
                }
            } else {
                let metacopy =
                    kind == FileKind::Regular && upper.get_xattr(&rel, XATTR_METACOPY)?.is_some();
                let same_file = same.filter(|s| s.src.kind != FileKind::Directory);
                let lower_ref = origin
                    .and_then(super::tree::lower_of_ino)
                    .or(same_file.and_then(|s| s.src.lower));
                let ino = origin
                    .or(same_file.map(|s| s.ino))
                    .unwrap_or_else(|| upper_ino(e.stat.st_ino));
                Child {
                    name: e.name.clone().into(),
                    ino,
                    src: Source {
                        kind,
                        lower: lower_ref,
                        chain: no_chain(),
                        upper: if metacopy {
                            Upper::MetaCopy
                        } else {
                            Upper::Full
                        },
                        lower_here: same.is_some(),
                    },
                }
            };
            children.push(child);
        }
        let t = self.lock();
        if !t.renumbered.is_empty() {
            for c in &mut children {
                if let Some(&ino) = t.renumbered.get(&c.ino) {
                    c.ino = ino;
                }
            }
        }
        drop(t);
        Ok(Listing::new(children))
    }

    /// The lower directory at `path` (as the layers alone show it), for a
    /// renamed directory that still merges its old contents.
    pub(crate) fn lower_dir_at(&self, path: &[u8]) -> Option<Child> {
        let mut chain: Arc<[(u16, u32)]> = self.root_chain();
        let mut found = None;
        for comp in path.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
            let listing = self.merge_lower(&chain);
            let c = listing.find(comp)?.clone();
            if c.src.kind != FileKind::Directory {
                return None;
            }
            chain = c.src.chain.clone();
            found = Some(c);
        }
        found
    }
}
