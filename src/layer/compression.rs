//! Layer compression, detected from the blob's first bytes: media types are
//! not trusted (mislabelled blobs exist in the wild).

use crate::oci::media_type as mt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Zstd skippable frames (0x184D2A50..=0x184D2A5F, little endian) start zstd:chunked layers.
fn is_zstd_skippable(b: &[u8]) -> bool {
    b.len() >= 4 && b[0] & 0xf0 == 0x50 && b[1..4] == [0x2a, 0x4d, 0x18]
}

impl Compression {
    /// Detects the compression from at least the first 4 bytes of a blob.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) || is_zstd_skippable(head) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Zstd => 2,
        }
    }

    pub fn from_u8(v: u8) -> Option<Compression> {
        match v {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The OCI media type for a layer with this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => mt::OCI_LAYER,
            Compression::Gzip => mt::OCI_LAYER_GZIP,
            Compression::Zstd => mt::OCI_LAYER_ZSTD,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// `src` decompressed, whichever of gzip, zstd or nothing its first bytes
/// say it is (an archive given to a build's ADD, say).
pub fn decompressed<'a, R: std::io::Read + 'a>(
    src: R,
) -> std::io::Result<Box<dyn std::io::Read + 'a>> {
    use std::io::BufRead;
    let mut br = std::io::BufReader::with_capacity(256 * 1024, src);
    let head = br.fill_buf()?;
    Ok(match Compression::detect(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(zstd::Decoder::with_buffer(br)?),
        Compression::None => Box::new(br),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(
            Compression::detect(&[0x50, 0x2a, 0x4d, 0x18]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"etc/\0\0\0"), Compression::None);
        assert_eq!(Compression::detect(b""), Compression::None);
    }
}
