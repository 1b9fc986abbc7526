//! A streaming tar reader that reports where each member's data sits in the
//! stream. It reads ustar, GNU (long names `L`/`K`, base-256 numbers, old
//! sparse `S`) and PAX (`x`/`g`: long paths and links, sizes over 8 GiB, big
//! ids, fractional mtimes, binary `SCHILY.xattr.*`, GNU sparse 0.0/0.1/1.0).
//!
//! The tar crate reads archives well but hides the data offsets and sparse
//! maps that a lazy index needs, so the index pass parses headers itself.

use std::io::{self, Read};

pub const BLOCK: u64 = 512;

/// Extents a sparse map may have: more than any real file (GNU tar writes
/// one per data region), and a bound on what a crafted map makes us keep.
const MAX_EXTENTS: u64 = 1 << 20;

/// Extended attributes one member may carry: the kernel's list of names is
/// at most 64 KiB, so no file has more than about 9,000.
const MAX_XATTRS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("tar stream ends in the middle of a member (at byte {0})")]
    Truncated(u64),
    #[error("bad tar header checksum at byte {0}")]
    BadChecksum(u64),
    #[error("bad tar header at byte {offset}: {why}")]
    BadHeader { offset: u64, why: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The kind of a tar member, after GNU and PAX extension headers are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Regular,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Directory,
    Fifo,
}

#[derive(Clone, Debug)]
pub struct TarEntry {
    pub path: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// The file's logical size (for sparse files, with the holes).
    pub size: u64,
    /// Where the stored data begins in the uncompressed stream.
    pub data_offset: u64,
    pub link: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For sparse files: (offset in file, length) of each stored extent, in
    /// the order their bytes follow each other in the archive.
    pub sparse: Option<Vec<(u64, u64)>>,
}

/// PAX keys that carry over to the next member (local `x`) or all members (`g`).
#[derive(Default, Clone)]
struct Pax {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse_map: Vec<u64>,
    sparse_realsize: Option<u64>,
    sparse_name: Option<Vec<u8>>,
    sparse_major: Option<u64>,
    sparse_minor: Option<u64>,
}

pub struct TarReader<R> {
    src: R,
    pos: u64,
    global: Pax,
    done: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(src: R) -> Self {
        TarReader {
            src,
            pos: 0,
            global: Pax::default(),
            done: false,
        }
    }

    pub fn into_inner(self) -> R {
        self.src
    }

    /// Bytes of the stream consumed: after `next_entry`, the end of the
    /// member it returned (data and padding included).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next member, or `None` at the end of the archive. Data is skipped
    /// (read and discarded), so the caller only sees headers.
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>, TarError> {
        if self.done {
            return Ok(None);
        }
        let mut local = Pax::default();
        let mut gnu_name: Option<Vec<u8>> = None;
        let mut gnu_link: Option<Vec<u8>> = None;
        let mut first_header: Option<u64> = None; // offset of the member's first header
        loop {
            let offset = self.pos;
            let mut hdr = [0u8; 512];
            if !self.read_block(&mut hdr)? {
                // EOF at a block boundary: archives without an end marker are
                // accepted as GNU tar does, unless a member was half started.
                if first_header.is_some() {
                    return Err(TarError::Truncated(self.pos));
                }
                self.done = true;
                return Ok(None);
            }
            if hdr.iter().all(|&b| b == 0) {
                if first_header.is_some() {
                    return Err(TarError::BadHeader {
                        offset,
                        why: "extension header without a member".into(),
                    });
                }
                self.done = true;
                return Ok(None);
            }
            first_header.get_or_insert(offset);
            verify_checksum(&hdr, offset)?;
            let typeflag = hdr[156];
            let size = parse_number(&hdr[124..136], offset, "size")?;
            match typeflag {
                b'x' | b'g' => {
                    let data = self.read_data(size)?;
                    let target = if typeflag == b'x' {
                        &mut local
                    } else {
                        &mut self.global
                    };
                    parse_pax(&data, target, offset)?;
                    continue;
                }
                b'L' => {
                    gnu_name = Some(trim_nul(&self.read_data(size)?).to_vec());
                    continue;
                }
                b'K' => {
                    gnu_link = Some(trim_nul(&self.read_data(size)?).to_vec());
                    continue;
                }
                b'V' => {
                    self.skip_data(size)?;
                    continue;
                }
                _ => {}
            }
            let pax = merge_pax(&self.global, &local);
            return self
                .member(&hdr, offset, size, pax, gnu_name, gnu_link)
                .map(Some);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn member(
        &mut self,
        hdr: &[u8; 512],
        offset: u64,
        header_size: u64,
        pax: Pax,
        gnu_name: Option<Vec<u8>>,
        gnu_link: Option<Vec<u8>>,
    ) -> Result<TarEntry, TarError> {
        let typeflag = hdr[156];
        let is_ustar = &hdr[257..263] == b"ustar\0";
        let mut path = trim_nul(&hdr[0..100]).to_vec();
        if is_ustar && hdr[345] != 0 {
            let mut full = trim_nul(&hdr[345..500]).to_vec();
            full.push(b'/');
            full.extend_from_slice(&path);
            path = full;
        }
        if let Some(n) = gnu_name {
            path = n;
        }
        if let Some(p) = pax.path.clone() {
            path = p;
        }
        if let Some(n) = pax.sparse_name.clone() {
            path = n;
        }
        let mut link = trim_nul(&hdr[157..257]).to_vec();
        if let Some(l) = gnu_link {
            link = l;
        }
        if let Some(l) = pax.link.clone() {
            link = l;
        }
        let kind = match typeflag {
            b'0' | b'\0' | b'7' | b'S' => Kind::Regular,
            b'1' => Kind::HardLink,
            b'2' => Kind::Symlink,
            b'3' => Kind::CharDevice,
            b'4' => Kind::BlockDevice,
            b'5' | b'D' => Kind::Directory,
            b'6' => Kind::Fifo,
            other => {
                return Err(TarError::BadHeader {
                    offset,
                    why: format!("unsupported member type {:?}", other as char),
                });
            }
        };
        // Old tars mark directories only by a trailing slash.
        let kind = if kind == Kind::Regular && typeflag == b'\0' && path.ends_with(b"/") {
            Kind::Directory
        } else {
            kind
        };
        let mode = parse_number(&hdr[100..108], offset, "mode")? as u32 & 0o7777;
        let uid = match pax.uid {
            Some(u) => u,
            None => parse_number(&hdr[108..116], offset, "uid")?,
        };
        let gid = match pax.gid {
            Some(g) => g,
            None => parse_number(&hdr[116..124], offset, "gid")?,
        };
        let (mtime, mtime_nsec) = match pax.mtime {
            Some(t) => t,
            None => (parse_signed(&hdr[136..148], offset, "mtime")?, 0),
        };
        let mut stored_size = pax.size.unwrap_or(header_size);
        let (dev_major, dev_minor) = if matches!(kind, Kind::CharDevice | Kind::BlockDevice) {
            (
                parse_number(&hdr[329..337], offset, "devmajor")? as u32,
                parse_number(&hdr[337..345], offset, "devminor")? as u32,
            )
        } else {
            (0, 0)
        };
        let mut size = stored_size;
        let mut sparse = None;
        if typeflag == b'S' {
            let (map, real) = self.gnu_old_sparse(hdr, offset)?;
            sparse = Some(map);
            size = real;
        } else if pax.sparse_major == Some(1) && pax.sparse_minor == Some(0) {
            let (map, consumed) = self.pax_sparse_1_0_map(offset)?;
            stored_size = stored_size
                .checked_sub(consumed)
                .ok_or(TarError::BadHeader {
                    offset,
                    why: "sparse map larger than the member".into(),
                })?;
            sparse = Some(map);
            size = pax.sparse_realsize.unwrap_or(size);
        } else if !pax.sparse_map.is_empty() || pax.sparse_realsize.is_some() {
            sparse = Some(pairs(&pax.sparse_map, offset)?);
            size = pax.sparse_realsize.unwrap_or(size);
        }
        if matches!(
            kind,
            Kind::HardLink
                | Kind::Symlink
                | Kind::Directory
                | Kind::CharDevice
                | Kind::BlockDevice
                | Kind::Fifo
        ) {
            // Such members store no file data, but a few writers still set a
            // size; it is skipped.
            size = 0;
        }
        if let Some(map) = &sparse {
            check_sparse_map(map, size, stored_size).map_err(|why| TarError::BadHeader {
                offset,
                why: why.into(),
            })?;
        }
        let data_offset = self.pos;
        self.skip_data(stored_size)?;
        Ok(TarEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime,
            mtime_nsec,
            size,
            data_offset,
            link,
            dev_major,
            dev_minor,
            xattrs: pax.xattrs,
            sparse,
        })
    }

    /// GNU's old sparse format: 4 extents in the header, then extension
    /// blocks of 21 while `isextended` is set.
    fn gnu_old_sparse(
        &mut self,
        hdr: &[u8; 512],
        offset: u64,
    ) -> Result<(Vec<(u64, u64)>, u64), TarError> {
        let mut map = Vec::new();
        read_sparse_entries(&hdr[386..482], 4, &mut map, offset)?;
        let real = parse_number(&hdr[483..495], offset, "realsize")?;
        let mut extended = hdr[482] != 0;
        while extended {
            let mut ext = [0u8; 512];
            if !self.read_block(&mut ext)? {
                return Err(TarError::Truncated(self.pos));
            }
            read_sparse_entries(&ext[0..504], 21, &mut map, offset)?;
            if map.len() as u64 > MAX_EXTENTS {
                return Err(TarError::BadHeader {
                    offset,
                    why: "sparse map too large".into(),
                });
            }
            extended = ext[504] != 0;
        }
        Ok((map, real))
    }

    /// PAX sparse 1.0 keeps its map as decimal text at the start of the
    /// data: the extent count, then offset and length of each, a line each.
    /// Parsed as the blocks arrive, each byte once.
    fn pax_sparse_1_0_map(&mut self, offset: u64) -> Result<(Vec<(u64, u64)>, u64), TarError> {
        let bad = |why: &str| TarError::BadHeader {
            offset,
            why: why.to_string(),
        };
        let mut nums: Vec<u64> = Vec::new();
        let mut line: Vec<u8> = Vec::new();
        let mut consumed = 0u64;
        loop {
            let mut blk = [0u8; 512];
            if !self.read_block(&mut blk)? {
                return Err(TarError::Truncated(self.pos));
            }
            consumed += blk.len() as u64;
            for &c in &blk {
                if c != b'\n' {
                    line.push(c);
                    if line.len() > 20 {
                        return Err(bad("bad sparse map"));
                    }
                    continue;
                }
                let n = std::str::from_utf8(&line)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| bad("bad sparse map"))?;
                line.clear();
                nums.push(n);
                let need = nums[0]
                    .checked_mul(2)
                    .and_then(|m| m.checked_add(1))
                    .filter(|&need| need <= 2 * MAX_EXTENTS + 1)
                    .ok_or_else(|| bad("sparse map too large"))?;
                if nums.len() as u64 == need {
                    return Ok((pairs(&nums[1..], offset)?, consumed));
                }
            }
        }
    }

    /// Reads one 512-byte block; false at a clean EOF before any byte.
    fn read_block(&mut self, buf: &mut [u8; 512]) -> Result<bool, TarError> {
        let mut got = 0;
        while got < buf.len() {
            match self.src.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.pos += got as u64;
        match got {
            0 => Ok(false),
            512 => Ok(true),
            _ => Err(TarError::Truncated(self.pos)),
        }
    }

    fn read_data(&mut self, size: u64) -> Result<Vec<u8>, TarError> {
        const MAX_EXTENSION: u64 = 64 << 20;
        if size > MAX_EXTENSION {
            return Err(TarError::BadHeader {
                offset: self.pos,
                why: format!("extension header of {size} bytes"),
            });
        }
        // Grows with the bytes that arrive, not with the size the header claims.
        let padded = padded(size);
        let mut data = Vec::new();
        let got = (&mut self.src)
            .take(padded)
            .read_to_end(&mut data)
            .map_err(TarError::Io)?;
        self.pos += got as u64;
        if (got as u64) < padded {
            return Err(TarError::Truncated(self.pos));
        }
        data.truncate(size as usize);
        Ok(data)
    }

    fn skip_data(&mut self, size: u64) -> Result<(), TarError> {
        let mut left = padded(size);
        let mut buf = [0u8; 64 * 1024];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.read_exact_counted(&mut buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    fn read_exact_counted(&mut self, buf: &mut [u8]) -> Result<(), TarError> {
        let mut got = 0;
        while got < buf.len() {
            match self.src.read(&mut buf[got..]) {
                Ok(0) => return Err(TarError::Truncated(self.pos + got as u64)),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.pos += got as u64;
        Ok(())
    }
}

/// `size` rounded up to whole blocks; saturates (a size that large cannot
/// be in the stream, and reading it fails as truncated).
pub fn padded(size: u64) -> u64 {
    size.checked_next_multiple_of(BLOCK).unwrap_or(u64::MAX)
}

fn trim_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

fn verify_checksum(hdr: &[u8; 512], offset: u64) -> Result<(), TarError> {
    let stored = parse_number(&hdr[148..156], offset, "checksum")
        .map_err(|_| TarError::BadChecksum(offset))?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in hdr.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as u64;
        signed += b as i8 as i64;
    }
    if stored == unsigned || stored as i64 == signed {
        Ok(())
    } else {
        Err(TarError::BadChecksum(offset))
    }
}

/// Octal ASCII (NUL or space terminated) or GNU base-256 (high bit set).
fn parse_number(field: &[u8], offset: u64, what: &str) -> Result<u64, TarError> {
    let v = parse_signed(field, offset, what)?;
    u64::try_from(v).map_err(|_| TarError::BadHeader {
        offset,
        why: format!("negative {what}"),
    })
}

fn parse_signed(field: &[u8], offset: u64, what: &str) -> Result<i64, TarError> {
    let bad = || TarError::BadHeader {
        offset,
        why: format!("bad {what} field {:?}", String::from_utf8_lossy(field)),
    };
    if let Some(&first) = field.first()
        && first & 0x80 != 0
    {
        // base-256: the rest of the first byte and all further bytes, big endian, two's complement.
        let negative = first & 0x40 != 0;
        let mut v: i128 = (first & 0x7f) as i128;
        if negative {
            v = (first as i8) as i128; // sign-extend 0xff.. patterns
        }
        for &b in &field[1..] {
            v = (v << 8) | b as i128;
            if v > i64::MAX as i128 || v < i64::MIN as i128 {
                return Err(bad());
            }
        }
        return Ok(v as i64);
    }
    let s: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&c| c == b' ')
        .take_while(|&c| c != 0 && c != b' ')
        .collect();
    if s.is_empty() {
        return Ok(0);
    }
    let mut v: i64 = 0;
    for c in s {
        if !(b'0'..=b'7').contains(&c) {
            return Err(bad());
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add((c - b'0') as i64))
            .ok_or_else(bad)?;
    }
    Ok(v)
}

/// A sparse map is trusted by every later read, so it must describe the
/// stored data exactly: extents in order, inside the file, and together as
/// long as what the member stores.
fn check_sparse_map(map: &[(u64, u64)], size: u64, stored: u64) -> Result<(), &'static str> {
    let mut end = 0u64;
    let mut total = 0u64;
    for &(off, len) in map {
        if off < end {
            return Err("sparse extents overlap or are out of order");
        }
        end = off.checked_add(len).ok_or("sparse extent past any size")?;
        if end > size {
            return Err("sparse extent past the end of the file");
        }
        total += len;
    }
    if total != stored {
        return Err("sparse map does not match the stored data");
    }
    Ok(())
}

fn read_sparse_entries(
    area: &[u8],
    count: usize,
    map: &mut Vec<(u64, u64)>,
    offset: u64,
) -> Result<(), TarError> {
    for i in 0..count {
        let e = &area[i * 24..i * 24 + 24];
        if e[0] == 0 {
            break;
        }
        let off = parse_number(&e[0..12], offset, "sparse offset")?;
        let len = parse_number(&e[12..24], offset, "sparse length")?;
        map.push((off, len));
    }
    Ok(())
}

fn pairs(nums: &[u64], offset: u64) -> Result<Vec<(u64, u64)>, TarError> {
    if !nums.len().is_multiple_of(2) {
        return Err(TarError::BadHeader {
            offset,
            why: "odd sparse map".into(),
        });
    }
    Ok(nums.chunks(2).map(|c| (c[0], c[1])).collect())
}

fn merge_pax(global: &Pax, local: &Pax) -> Pax {
    let mut p = global.clone();
    macro_rules! take {
        ($($f:ident),*) => { $( if local.$f.is_some() { p.$f = local.$f.clone(); } )* };
    }
    take!(
        path,
        link,
        size,
        uid,
        gid,
        mtime,
        sparse_realsize,
        sparse_name,
        sparse_major,
        sparse_minor
    );
    if !local.sparse_map.is_empty() {
        p.sparse_map = local.sparse_map.clone();
    }
    for (k, v) in &local.xattrs {
        p.xattrs.retain(|(gk, _)| gk != k);
        p.xattrs.push((k.clone(), v.clone()));
    }
    p
}

/// Parses PAX records `"<len> <key>=<value>\n"`; values are bytes.
fn parse_pax(data: &[u8], pax: &mut Pax, offset: u64) -> Result<(), TarError> {
    let bad = |why: &str| TarError::BadHeader {
        offset,
        why: format!("bad PAX record: {why}"),
    };
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&c| c == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&c| c == b' ')
            .ok_or_else(|| bad("no length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad length"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("length out of range"));
        }
        let record = &rest[sp + 1..len - 1];
        rest = &rest[len..];
        let eq = record
            .iter()
            .position(|&c| c == b'=')
            .ok_or_else(|| bad("no '='"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let num = || -> Result<u64, TarError> {
            std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("bad number"))
        };
        match key {
            b"path" => pax.path = Some(value.to_vec()),
            b"linkpath" => pax.link = Some(value.to_vec()),
            b"size" => pax.size = Some(num()?),
            b"uid" => pax.uid = Some(num()?),
            b"gid" => pax.gid = Some(num()?),
            b"mtime" => pax.mtime = Some(parse_pax_time(value).ok_or_else(|| bad("bad mtime"))?),
            b"GNU.sparse.size" | b"GNU.sparse.realsize" => pax.sparse_realsize = Some(num()?),
            b"GNU.sparse.name" => pax.sparse_name = Some(value.to_vec()),
            b"GNU.sparse.major" => pax.sparse_major = Some(num()?),
            b"GNU.sparse.minor" => pax.sparse_minor = Some(num()?),
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => pax.sparse_map.push(num()?),
            b"GNU.sparse.map" => {
                for part in value.split(|&c| c == b',') {
                    let n = std::str::from_utf8(part)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| bad("bad sparse map"))?;
                    pax.sparse_map.push(n);
                }
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    pax.xattrs.retain(|(k, _)| k != name);
                    if pax.xattrs.len() >= MAX_XATTRS {
                        return Err(bad("more extended attributes than a file can have"));
                    }
                    pax.xattrs.push((name.to_vec(), value.to_vec()));
                }
            }
        }
    }
    Ok(())
}

/// `"1700000000.123456789"` or `"-12.5"` into seconds and nanoseconds.
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = int.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        nanos += c.to_digit(10)? * 10u32.pow(8 - i as u32);
    }
    if s.starts_with('-') && nanos > 0 {
        return Some((secs.checked_sub(1)?, 1_000_000_000 - nanos));
    }
    Some((secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, typeflag: u8, size: u64) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    b as u64
                }
            })
            .sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn archive(parts: &[(&str, u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, t, data) in parts {
            out.extend_from_slice(&header(name, *t, data.len() as u64));
            out.extend_from_slice(data);
            out.resize(padded(out.len() as u64) as usize, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn reads_members_with_offsets() {
        let a = archive(&[
            ("a.txt", b'0', b"hello"),
            ("d/", b'5', b""),
            ("d/b", b'0', b"world!"),
        ]);
        let mut r = TarReader::new(&a[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(
            (e.path.as_slice(), e.kind, e.size, e.data_offset),
            (&b"a.txt"[..], Kind::Regular, 5, 512)
        );
        assert_eq!(&a[512..517], b"hello");
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.kind, Kind::Directory);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.data_offset, 512 * 4);
        assert!(r.next_entry().unwrap().is_none());
    }

    fn pax_records(records: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut rec = Vec::new();
        for (k, v) in records {
            let body_len = k.len() + v.len() + 3;
            let mut len = body_len + 1;
            while format!("{len}").len() + body_len != len {
                len += 1;
            }
            rec.extend_from_slice(format!("{len} ").as_bytes());
            rec.extend_from_slice(k);
            rec.push(b'=');
            rec.extend_from_slice(v);
            rec.push(b'\n');
        }
        rec
    }

    #[test]
    fn pax_overrides_and_binary_xattrs() {
        let val: &[u8] = b"\x00\x01bin";
        let rec = pax_records(&[
            (b"path", b"very/long/name"),
            (b"SCHILY.xattr.security.capability", val),
            (b"mtime", b"1700000000.5"),
            (b"uid", b"4294967294"),
        ]);
        let a = archive(&[("PaxHeaders/x", b'x', &rec), ("short", b'0', b"x")]);
        let e = TarReader::new(&a[..]).next_entry().unwrap().unwrap();
        assert_eq!(e.path, b"very/long/name");
        assert_eq!(
            e.xattrs,
            vec![(b"security.capability".to_vec(), val.to_vec())]
        );
        assert_eq!((e.mtime, e.mtime_nsec), (1_700_000_000, 500_000_000));
        assert_eq!(e.uid, 4294967294);
    }

    #[test]
    fn sparse_maps_must_match_the_stored_data() {
        let sparse = |map: &[u8]| {
            let rec = pax_records(&[(b"GNU.sparse.map", map), (b"GNU.sparse.realsize", b"10000")]);
            let a = archive(&[("PaxHeaders/s", b'x', &rec), ("s", b'0', b"abcdef")]);
            TarReader::new(&a[..]).next_entry()
        };
        let e = sparse(b"0,3,9997,3").unwrap().unwrap();
        assert_eq!((e.size, e.sparse), (10000, Some(vec![(0, 3), (9997, 3)])));
        for bad in [
            &b"9997,3,0,3"[..],            // out of order
            b"0,4,2,2",                    // overlapping
            b"0,3,9998,3",                 // past the end
            b"0,3,5,2",                    // shorter than what is stored
            b"0,3,18446744073709551615,3", // overflows
        ] {
            assert!(
                matches!(sparse(bad), Err(TarError::BadHeader { .. })),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn rejects_bad_checksum_and_truncation() {
        let mut a = archive(&[("a", b'0', b"data")]);
        a[0] = b'b';
        assert!(matches!(
            TarReader::new(&a[..]).next_entry(),
            Err(TarError::BadChecksum(0))
        ));
        let a = archive(&[("a", b'0', &[7u8; 2000])]);
        let cut = &a[..1500];
        assert!(matches!(
            TarReader::new(cut).next_entry(),
            Err(TarError::Truncated(_))
        ));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"0000644\0", 0, "x").unwrap(), 0o644);
        assert_eq!(parse_number(b"   12 \0", 0, "x").unwrap(), 0o12);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[4..12].copy_from_slice(&(9u64 << 30).to_be_bytes());
        assert_eq!(parse_number(&big, 0, "x").unwrap(), 9 << 30);
        assert!(parse_number(b"99999999", 0, "x").is_err());
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
    }
}
