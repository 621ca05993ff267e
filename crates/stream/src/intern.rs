//! Interning of (device, tag) pairs to dense ids, without an allocation per
//! lookup.

use rustc_hash::FxHashMap;

/// Maps (device, tag) to ids `0, 1, 2…` in order of first appearance.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    /// Key: the pair encoded as `len(device) as u32 LE ++ device ++ tag`, so
    /// that no two pairs share an encoding whatever bytes they hold.
    ids: FxHashMap<Box<[u8]>, u32>,
    pairs: Vec<(Box<str>, Box<str>)>,
    buf: Vec<u8>,
}

impl Interner {
    /// The id of `(device, tag)`, and whether it is new.
    #[inline]
    pub(crate) fn intern(&mut self, device: &str, tag: &str) -> (u32, bool) {
        self.buf.clear();
        self.buf
            .extend_from_slice(&(device.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(device.as_bytes());
        self.buf.extend_from_slice(tag.as_bytes());
        if let Some(&id) = self.ids.get(self.buf.as_slice()) {
            return (id, false);
        }
        let id = self.pairs.len() as u32;
        self.pairs.push((device.into(), tag.into()));
        self.ids.insert(self.buf.as_slice().into(), id);
        (id, true)
    }

    /// The pair behind an id.
    pub(crate) fn pair(&self, id: u32) -> (&str, &str) {
        let (d, t) = &self.pairs[id as usize];
        (d, t)
    }

    /// Number of distinct pairs.
    pub(crate) fn len(&self) -> usize {
        self.pairs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_that_concatenate_alike_stay_apart() {
        let mut i = Interner::default();
        assert_eq!(i.intern("ab", "c"), (0, true));
        assert_eq!(i.intern("a", "bc"), (1, true));
        assert_eq!(i.intern("ab", "c"), (0, false));
        assert_eq!(i.pair(1), ("a", "bc"));
        assert_eq!(i.len(), 2);
    }
}
