//! `Name`: one directory entry's name as the union keeps it in listings and
//! inodes, in place when short (most names are), so that a cached name costs
//! no allocation of its own.

use std::fmt;
use std::ops::Deref;

/// The longest name kept in place; the enum is then 24 bytes, as a boxed
/// slice with its allocation header would be at the least.
const INLINE: usize = 22;

/// The bytes of a name; derefs to `[u8]`.
#[derive(Clone)]
pub struct Name(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Deref for Name {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..*len as usize],
            Repr::Heap(b) => b,
        }
    }
}

impl From<&[u8]> for Name {
    fn from(b: &[u8]) -> Name {
        if b.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..b.len()].copy_from_slice(b);
            Name(Repr::Inline {
                len: b.len() as u8,
                bytes,
            })
        } else {
            Name(Repr::Heap(b.into()))
        }
    }
}

impl From<Vec<u8>> for Name {
    fn from(v: Vec<u8>) -> Name {
        if v.len() <= INLINE {
            Name::from(&v[..])
        } else {
            Name(Repr::Heap(v.into_boxed_slice()))
        }
    }
}

impl From<Box<[u8]>> for Name {
    fn from(b: Box<[u8]>) -> Name {
        Name::from(b.into_vec())
    }
}

impl Default for Name {
    fn default() -> Name {
        Name::from(&b""[..])
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        **self == **other
    }
}

impl Eq for Name {}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_short_and_long_keep_their_bytes() {
        assert_eq!(std::mem::size_of::<Name>(), 24);
        for n in [
            &b""[..],
            b"a",
            b"\0x",
            &[b'x'; INLINE],
            &[b'y'; INLINE + 1],
            &[b'z'; 255],
        ] {
            let name = Name::from(n);
            assert_eq!(&*name, n);
            assert_eq!(&*Name::from(n.to_vec()), n);
            assert_eq!(name.clone(), name);
        }
        assert_ne!(Name::from(&b"ab"[..]), Name::from(&b"ab\0"[..]));
    }
}
