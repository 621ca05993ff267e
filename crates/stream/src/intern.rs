//! Interning of (device, tag) pairs to dense ids, without an allocation per
//! lookup, and forgetting them again.
//!
//! A released pair gives its id back: the next new pair takes the slot, so
//! the tables indexed by id (the aggregator's lanes) stay as long as the
//! most pairs ever live at once, not as long as the pairs ever seen. A
//! slot's generation counts its releases, so that an id handed out before
//! a release is told apart from the pair that took the slot afterwards.

use rustc_hash::FxHashMap;

/// Maps (device, tag) to small ids, reusing the ids of released pairs.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    /// Key: the pair encoded as `len(device) as u32 LE ++ device ++ tag`, so
    /// that no two pairs share an encoding whatever bytes they hold.
    ids: FxHashMap<Box<[u8]>, u32>,
    /// Per slot the pair, or `None` while the slot is free.
    pairs: Vec<Option<(Box<str>, Box<str>)>>,
    /// Per slot, how often it was released.
    generations: Vec<u32>,
    /// Free slots, reused last-freed first.
    free: Vec<u32>,
    buf: Vec<u8>,
}

impl Interner {
    fn key(&mut self, device: &str, tag: &str) {
        self.buf.clear();
        self.buf
            .extend_from_slice(&(device.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(device.as_bytes());
        self.buf.extend_from_slice(tag.as_bytes());
    }

    /// The id of `(device, tag)` if it is live.
    #[inline]
    pub(crate) fn get(&mut self, device: &str, tag: &str) -> Option<u32> {
        self.key(device, tag);
        self.ids.get(self.buf.as_slice()).copied()
    }

    /// The id of `(device, tag)`, registering it if it is new.
    #[inline]
    pub(crate) fn intern(&mut self, device: &str, tag: &str) -> u32 {
        match self.get(device, tag) {
            Some(id) => id,
            None => self.insert(device, tag),
        }
    }

    /// Registers a pair that [`Interner::get`] just did not find, and
    /// returns its id.
    pub(crate) fn insert(&mut self, device: &str, tag: &str) -> u32 {
        self.key(device, tag);
        let pair = Some((device.into(), tag.into()));
        let id = match self.free.pop() {
            Some(id) => {
                self.pairs[id as usize] = pair;
                id
            }
            None => {
                self.pairs.push(pair);
                self.generations.push(0);
                (self.pairs.len() - 1) as u32
            }
        };
        self.ids.insert(self.buf.as_slice().into(), id);
        id
    }

    /// Forgets a live pair: its strings are freed and its id goes back to
    /// the pool.
    pub(crate) fn release(&mut self, id: u32) {
        if let Some((device, tag)) = self.pairs[id as usize].take() {
            self.key(&device, &tag);
            self.ids.remove(self.buf.as_slice());
            self.generations[id as usize] = self.generations[id as usize].wrapping_add(1);
            self.free.push(id);
        }
    }

    /// The pair behind a live id.
    pub(crate) fn pair(&self, id: u32) -> (&str, &str) {
        let (d, t) = self.pairs[id as usize].as_ref().expect("a live series id");
        (d, t)
    }

    /// Whether `id` names a live pair.
    pub(crate) fn is_live(&self, id: u32) -> bool {
        self.pairs.get(id as usize).is_some_and(Option::is_some)
    }

    /// How often slot `id` was released.
    pub(crate) fn generation(&self, id: u32) -> u32 {
        self.generations[id as usize]
    }

    /// Gives memory back once at most a quarter of the table is in use
    /// (`live` pairs).
    pub(crate) fn shrink(&mut self, live: usize) {
        if self.ids.capacity() > 4 * live.max(1024) {
            self.ids.shrink_to_fit();
        }
    }

    /// Number of live pairs.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Number of slots (live and free): the length of the tables indexed
    /// by id.
    pub(crate) fn slots(&self) -> usize {
        self.pairs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_that_concatenate_alike_stay_apart() {
        let mut i = Interner::default();
        assert_eq!(i.insert("ab", "c"), 0);
        assert_eq!(i.get("a", "bc"), None);
        assert_eq!(i.insert("a", "bc"), 1);
        assert_eq!(i.get("ab", "c"), Some(0));
        assert_eq!(i.pair(1), ("a", "bc"));
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn released_pairs_are_forgotten_and_their_slots_reused() {
        let mut i = Interner::default();
        i.insert("a", "t");
        i.insert("b", "t");
        i.release(0);
        assert_eq!((i.len(), i.get("a", "t"), i.is_live(0)), (1, None, false));
        assert_eq!(i.generation(0), 1);
        assert_eq!(i.insert("c", "t"), 0);
        assert_eq!((i.pair(0), i.slots()), (("c", "t"), 2));
    }
}
