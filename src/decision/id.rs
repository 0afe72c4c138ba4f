//! The keys of the set of subjects inside (`R:` resident, `V:` pass, `C:` vehicle + the id), looked
//! up on every allowed passage.
use std::hash::{Hash, Hasher};

/// foldhash instead of SipHash (a lookup of a short id costs a few nanoseconds, not twenty),
/// still seeded per process. Only registry subjects become keys, never a device's free text.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Ids up to this many bytes live inside the [`Id`] itself.
const INLINE: usize = 22;

/// A key kept inline when short — as nearly all are — so a set of 100,000 of them compares keys
/// without a cache miss per probe, and making one to look up costs no allocation.
#[derive(Clone)]
pub enum Id {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Id {
    pub fn new(s: &str) -> Id {
        Id::joined("", s)
    }

    /// `prefix` followed by `s`, without an intermediate string.
    pub fn joined(prefix: &str, s: &str) -> Id {
        let len = prefix.len() + s.len();
        if len > INLINE {
            return Id::Heap(format!("{prefix}{s}").into());
        }
        let mut bytes = [0; INLINE];
        bytes[..prefix.len()].copy_from_slice(prefix.as_bytes());
        bytes[prefix.len()..len].copy_from_slice(s.as_bytes());
        Id::Inline {
            len: len as u8,
            bytes,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Always whole `str`s copied in, so always UTF-8.
            Id::Inline { len, bytes } => std::str::from_utf8(&bytes[..*len as usize]).unwrap_or(""),
            Id::Heap(s) => s,
        }
    }
}

impl std::fmt::Debug for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Id) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Id {}

/// By its text, as equality compares its text.
impl Hash for Id {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Id {
        Id::new(s)
    }
}
