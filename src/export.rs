//! `export`: an image's or a container's whole tree as one plain tar, with
//! whiteouts applied (what `docker export` writes).

use crate::archive::{ArchiveError, Output};
use crate::container::{Container, ContainerError, Freeze};
use crate::flatten::{Flatten, FlattenError};
use crate::layer::{LayerError, SpanCache, TarWriter};
use crate::store::{Store, StoreError};
use crate::union::{ROOT_INO, Stack, UnionFs, UpperDir};
use std::io::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Flatten(#[from] FlattenError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Output(#[from] ArchiveError),
}

/// What to export.
pub enum Source<'a> {
    Image(&'a str),
    Container(&'a Container),
}

/// Writes the tree of `src` to `out` as a tar stream; returns the sink.
pub fn export<W: Write>(store: &Store, src: Source<'_>, out: W) -> Result<W, ExportError> {
    let cache = SpanCache::new(32 << 20);
    let (view, _freeze) = match src {
        Source::Image(what) => {
            let image = store.resolve(what)?;
            (
                UnionFs::new(Stack::open(store, &image.layer_digests(), cache)?, None),
                None,
            )
        }
        Source::Container(c) => {
            let layers = c.image_manifest(store)?.layer_digests();
            let freeze = Freeze::take(c)?;
            let upper = UpperDir::open_existing(&c.upper(), &c.work())
                .map_err(|e| ExportError::Io(c.upper().display().to_string(), e))?;
            (
                UnionFs::new(Stack::open(store, &layers, cache)?, Some(upper)),
                Some(freeze),
            )
        }
    };
    let mut tar = TarWriter::new(out);
    Flatten::new(&view).dir(&mut tar, ROOT_INO, b"")?;
    Ok(tar.finish()?)
}

/// Writes the tree of `src` to the file `path`: a regular file is replaced
/// only once the tar is whole, a FIFO or character device written into, and
/// anything else refused (see `archive::Output`).
pub fn export_to_path(store: &Store, src: Source<'_>, path: &Path) -> Result<(), ExportError> {
    let output = Output::create(path)?;
    let out = export(
        store,
        src,
        std::io::BufWriter::with_capacity(1 << 20, output.file()),
    )?;
    out.into_inner()
        .map_err(|e| ExportError::Io(path.display().to_string(), e.into_error()))?;
    output.finish()?;
    Ok(())
}
