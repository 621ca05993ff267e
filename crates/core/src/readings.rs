//! [`Readings`]: the one batch type every stage passes a reading in, from
//! the parser that reads a request body, through the ingest log and the
//! window aggregator, to raw/ Parquet and the scoring job.
//!
//! A batch is columnar: a timestamp, a value and a small key id per row,
//! the key id naming a (device, tag) pair of the batch. Pairs name their
//! device and tag by index into one text table, so a batch of 25,000
//! readings from 5,000 devices and 5 tags holds 5,005 names in a single
//! buffer and allocates nothing per reading or per pair. A reading is
//! parsed once and never re-interned: the log writes the name table as its
//! string table, the aggregator resolves each pair to its series once per
//! batch, and Parquet writers build dictionaries from the pairs.
//!
//! # Invariants
//!
//! The fields are private so that these hold for every `Readings`:
//! * the three row columns have one length;
//! * every row's key id is below the number of pairs;
//! * every pair's device and tag are valid indices into the name table.
//!
//! Pairs should be distinct (each (device, tag) once); the builders here
//! ([`ReadingsBuilder`], [`Readings::concat`], `FromIterator`) guarantee it,
//! and the low-level [`Readings::add_name`] / [`Readings::add_key`] leave it
//! to their caller (a parser's interner). Names are not checked here: the
//! parsers check them against the name rule once per distinct name.

use std::collections::HashMap;

/// One reading, borrowed from a [`Readings`] (or built by hand to feed an
/// aggregator): `(ts, device, tag, value)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading<'a> {
    /// Event time, nanoseconds since the Unix epoch, UTC.
    pub ts: i64,
    /// Device identifier.
    pub device: &'a str,
    /// Tag (the measured quantity) on that device.
    pub tag: &'a str,
    /// The measured value.
    pub value: f64,
}

/// Readings, columnar, with (device, tag) pairs interned to small ids. See
/// the module docs.
#[derive(Debug, Default, Clone)]
pub struct Readings {
    ts: Vec<i64>,
    value: Vec<f64>,
    key: Vec<u32>,
    /// Per pair, (device name, tag name) as indices into the name table.
    keys: Vec<(u32, u32)>,
    /// All names, end to end.
    text: String,
    /// Per name, the end of its text in `text`.
    ends: Vec<u32>,
}

impl Readings {
    /// No readings.
    pub fn new() -> Readings {
        Readings::default()
    }

    /// No readings yet, with room for `rows` of them.
    pub fn with_capacity(rows: usize) -> Readings {
        Readings {
            ts: Vec::with_capacity(rows),
            value: Vec::with_capacity(rows),
            key: Vec::with_capacity(rows),
            ..Readings::default()
        }
    }

    /// Makes room for `rows` more readings.
    pub fn reserve(&mut self, rows: usize) {
        self.ts.reserve(rows);
        self.value.reserve(rows);
        self.key.reserve(rows);
    }

    /// Number of readings.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// Whether there are no readings.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// The timestamps, one per row.
    pub fn ts(&self) -> &[i64] {
        &self.ts
    }

    /// The values, one per row.
    pub fn values(&self) -> &[f64] {
        &self.value
    }

    /// The key ids, one per row (see [`Readings::key`]).
    pub fn key_ids(&self) -> &[u32] {
        &self.key
    }

    /// Number of (device, tag) pairs.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The (device, tag) of key id `id`. Panics if `id` is not a key id of
    /// this batch.
    pub fn key(&self, id: u32) -> (&str, &str) {
        let (d, t) = self.keys[id as usize];
        (self.name(d), self.name(t))
    }

    /// Every pair, in key id order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.keys.iter().map(|&(d, t)| (self.name(d), self.name(t)))
    }

    /// Every pair as owned strings, in key id order.
    pub fn owned_keys(&self) -> Vec<(String, String)> {
        self.keys()
            .map(|(d, t)| (d.to_owned(), t.to_owned()))
            .collect()
    }

    /// Per pair, its device and tag as name ids (see [`Readings::name`]).
    pub fn key_names(&self) -> &[(u32, u32)] {
        &self.keys
    }

    /// Number of names in the name table.
    pub fn name_count(&self) -> usize {
        self.ends.len()
    }

    /// Name `id` of the name table. Panics if out of range.
    pub fn name(&self, id: u32) -> &str {
        let i = id as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// Every name, in id order.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.ends.len() as u32).map(|i| self.name(i))
    }

    /// Row `i`. Panics if out of range.
    pub fn row(&self, i: usize) -> Reading<'_> {
        let (device, tag) = self.key(self.key[i]);
        Reading {
            ts: self.ts[i],
            device,
            tag,
            value: self.value[i],
        }
    }

    /// Every row, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Reading<'_>> + '_ {
        (0..self.len()).map(|i| self.row(i))
    }

    /// The earliest and latest timestamp, if any.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let first = *self.ts.first()?;
        Some(
            self.ts
                .iter()
                .fold((first, first), |(a, b), &t| (a.min(t), b.max(t))),
        )
    }

    /// Adds a name to the name table and returns its id. The caller keeps
    /// names it has added from being added again (a parser's interner).
    /// Fails if the table would pass `u32` ids or bytes.
    pub fn add_name(&mut self, name: &str) -> Result<u32, TooManyNames> {
        let id = u32::try_from(self.ends.len()).map_err(|_| TooManyNames)?;
        let end = u32::try_from(self.text.len() + name.len()).map_err(|_| TooManyNames)?;
        self.text.push_str(name);
        self.ends.push(end);
        Ok(id)
    }

    /// Adds a pair of names (ids from [`Readings::add_name`]) and returns
    /// its key id. The caller keeps pairs distinct. Panics if a name id is
    /// out of range; fails past `u32` pairs.
    pub fn add_key(&mut self, device: u32, tag: u32) -> Result<u32, TooManyNames> {
        assert!(
            (device as usize) < self.ends.len() && (tag as usize) < self.ends.len(),
            "a key names a name not in the table"
        );
        let id = u32::try_from(self.keys.len()).map_err(|_| TooManyNames)?;
        self.keys.push((device, tag));
        Ok(id)
    }

    /// Appends one reading of key id `key`. Panics if `key` is not a key id
    /// of this batch.
    #[inline]
    pub fn push(&mut self, ts: i64, key: u32, value: f64) {
        assert!((key as usize) < self.keys.len(), "key id out of range");
        self.ts.push(ts);
        self.value.push(value);
        self.key.push(key);
    }

    /// Keeps the first `len` readings (all when there are fewer). Pairs
    /// are kept; see [`Readings::drop_unused_keys`].
    pub fn truncate(&mut self, len: usize) {
        self.ts.truncate(len);
        self.value.truncate(len);
        self.key.truncate(len);
    }

    /// Keeps only readings with `from <= ts < to` (either bound optional).
    /// Pairs are kept; see [`Readings::drop_unused_keys`].
    pub fn retain_time(&mut self, from: Option<i64>, to: Option<i64>) {
        if from.is_none() && to.is_none() {
            return;
        }
        let keep = |t: i64| from.is_none_or(|f| t >= f) && to.is_none_or(|e| t < e);
        self.retain_rows(|ts, _| keep(ts));
    }

    /// Keeps only the readings of the pairs whose `keep[key id]` is true,
    /// and forgets the other pairs (ids renumbered, order kept). Panics if
    /// `keep` is shorter than the number of pairs.
    pub fn retain_keys(&mut self, keep: &[bool]) {
        assert!(keep.len() >= self.keys.len(), "one flag per pair");
        self.retain_rows(|_, k| keep[k as usize]);
        self.drop_unused_keys();
    }

    fn retain_rows(&mut self, mut keep: impl FnMut(i64, u32) -> bool) {
        let mut w = 0;
        for r in 0..self.ts.len() {
            if keep(self.ts[r], self.key[r]) {
                self.ts[w] = self.ts[r];
                self.value[w] = self.value[r];
                self.key[w] = self.key[r];
                w += 1;
            }
        }
        self.ts.truncate(w);
        self.value.truncate(w);
        self.key.truncate(w);
    }

    /// Forgets the `(device, tag)` pairs no reading refers to any more
    /// (after [`Readings::retain_time`] or a shard filter), so that they
    /// are neither scored with no rows nor reported as failed. Key ids are
    /// renumbered, in order; the name table is kept.
    pub fn drop_unused_keys(&mut self) {
        drop_unused_keys(&mut self.keys, &mut self.key);
    }

    /// Concatenates batches, in order, into one (each pair once, in order
    /// of first appearance; each name once).
    pub fn concat(parts: &[&Readings]) -> Readings {
        let n = parts.iter().map(|p| p.len()).sum();
        let mut out = Readings::with_capacity(n);
        let mut names: HashMap<&str, u32> = HashMap::new();
        let mut pairs: HashMap<(u32, u32), u32> = HashMap::new();
        for p in parts {
            let name_map: Vec<u32> = p
                .names()
                .map(|s| *names.entry(s).or_insert_with(|| out.add_name_unchecked(s)))
                .collect();
            let key_map: Vec<u32> = p
                .keys
                .iter()
                .map(|&(d, t)| {
                    let pair = (name_map[d as usize], name_map[t as usize]);
                    *pairs.entry(pair).or_insert_with(|| {
                        out.keys.push(pair);
                        out.keys.len() as u32 - 1
                    })
                })
                .collect();
            out.ts.extend_from_slice(&p.ts);
            out.value.extend_from_slice(&p.value);
            out.key.extend(p.key.iter().map(|&k| key_map[k as usize]));
        }
        out
    }

    /// Builds a batch from its columns: per row a timestamp, a value and a
    /// key id into `keys`, the distinct (device, tag) pairs. Fails, saying
    /// why, if the columns differ in length or a key id is out of range.
    pub fn from_columns<S: AsRef<str>>(
        ts: Vec<i64>,
        value: Vec<f64>,
        key: Vec<u32>,
        keys: &[(S, S)],
    ) -> Result<Readings, String> {
        if ts.len() != value.len() || ts.len() != key.len() {
            return Err(format!(
                "columns of {} timestamps, {} values and {} keys",
                ts.len(),
                value.len(),
                key.len()
            ));
        }
        if let Some(k) = key.iter().find(|&&k| k as usize >= keys.len()) {
            return Err(format!("a reading names key {k} of {}", keys.len()));
        }
        let mut out = Readings {
            ts,
            value,
            key,
            ..Readings::default()
        };
        let mut names: HashMap<String, u32> = HashMap::new();
        for (d, t) in keys {
            let mut id = |s: &str| -> u32 {
                if let Some(&i) = names.get(s) {
                    return i;
                }
                let i = out.add_name_unchecked(s);
                names.insert(s.to_owned(), i);
                i
            };
            let pair = (id(d.as_ref()), id(t.as_ref()));
            out.keys.push(pair);
        }
        Ok(out)
    }

    /// A batch with the given (device, tag) pairs (key ids in their
    /// order) and no readings yet, for [`Readings::push`].
    pub fn with_keys<S: AsRef<str>>(keys: &[(S, S)]) -> Readings {
        Readings::from_columns(Vec::new(), Vec::new(), Vec::new(), keys)
            .expect("no readings name a key")
    }

    /// Takes the batch apart: timestamps, values, key ids, and the pairs as
    /// owned strings.
    pub fn into_columns(self) -> Columns {
        let keys = self.owned_keys();
        (self.ts, self.value, self.key, keys)
    }

    fn add_name_unchecked(&mut self, name: &str) -> u32 {
        self.text.push_str(name);
        self.ends.push(self.text.len() as u32);
        self.ends.len() as u32 - 1
    }
}

/// A batch taken apart ([`Readings::into_columns`]): timestamps, values,
/// key ids, and the pairs as owned strings.
pub type Columns = (Vec<i64>, Vec<f64>, Vec<u32>, Vec<(String, String)>);

/// Two batches are equal when they hold the same rows in the same order
/// (however their pairs and names happen to be numbered).
impl PartialEq for Readings {
    fn eq(&self, other: &Readings) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// More names or name bytes than `u32` counts in one [`Readings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyNames;

impl std::fmt::Display for TooManyNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("too many distinct devices, tags or pairs in one batch; send smaller batches")
    }
}

impl std::error::Error for TooManyNames {}

/// Forgets the `keys` no id in `ids` refers to, renumbering `ids` to the
/// rest (kept in order): for [`Readings`] and any other keyed rows.
pub fn drop_unused_keys<K>(keys: &mut Vec<K>, ids: &mut [u32]) {
    let mut new_id = vec![u32::MAX; keys.len()];
    for &k in ids.iter() {
        new_id[k as usize] = 0;
    }
    let mut kept = Vec::new();
    for (old, key) in std::mem::take(keys).into_iter().enumerate() {
        if new_id[old] == 0 {
            new_id[old] = kept.len() as u32;
            kept.push(key);
        }
    }
    for k in ids.iter_mut() {
        *k = new_id[*k as usize];
    }
    *keys = kept;
}

/// Builds a [`Readings`] one reading at a time, interning names and pairs
/// (for sources that see one reading at a time, such as MQTT messages, and
/// for tests). Names are not checked.
#[derive(Debug, Default)]
pub struct ReadingsBuilder {
    readings: Readings,
    names: HashMap<Box<str>, u32>,
    pairs: HashMap<(u32, u32), u32>,
}

impl ReadingsBuilder {
    /// An empty builder.
    pub fn new() -> ReadingsBuilder {
        ReadingsBuilder::default()
    }

    /// The id of `name`, added if new.
    pub fn name(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.names.get(name) {
            return id;
        }
        let id = self.readings.add_name_unchecked(name);
        self.names.insert(name.into(), id);
        id
    }

    /// The key id of (device, tag), added if new.
    pub fn key(&mut self, device: &str, tag: &str) -> u32 {
        let pair = (self.name(device), self.name(tag));
        let keys = &mut self.readings.keys;
        *self.pairs.entry(pair).or_insert_with(|| {
            keys.push(pair);
            keys.len() as u32 - 1
        })
    }

    /// Appends a reading.
    pub fn push(&mut self, ts: i64, device: &str, tag: &str, value: f64) {
        let k = self.key(device, tag);
        self.readings.push(ts, k, value);
    }

    /// Number of readings so far.
    pub fn len(&self) -> usize {
        self.readings.len()
    }

    /// Whether no reading was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }

    /// The readings.
    pub fn finish(self) -> Readings {
        self.readings
    }
}

impl<'a> FromIterator<Reading<'a>> for Readings {
    fn from_iter<I: IntoIterator<Item = Reading<'a>>>(iter: I) -> Readings {
        let mut b = ReadingsBuilder::new();
        for r in iter {
            b.push(r.ts, r.device, r.tag, r.value);
        }
        b.finish()
    }
}

impl<'a> FromIterator<(i64, &'a str, &'a str, f64)> for Readings {
    fn from_iter<I: IntoIterator<Item = (i64, &'a str, &'a str, f64)>>(iter: I) -> Readings {
        let mut b = ReadingsBuilder::new();
        for (ts, d, t, v) in iter {
            b.push(ts, d, t, v);
        }
        b.finish()
    }
}

impl FromIterator<(i64, String, String, f64)> for Readings {
    fn from_iter<I: IntoIterator<Item = (i64, String, String, f64)>>(iter: I) -> Readings {
        let mut b = ReadingsBuilder::new();
        for (ts, d, t, v) in iter {
            b.push(ts, &d, &t, v);
        }
        b.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Readings {
        [
            (3, "d1", "temp", 1.0),
            (1, "d2", "temp", 2.0),
            (2, "d1", "temp", 3.0),
            (5, "d1", "vib", 4.0),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn builder_interns_names_and_pairs_once() {
        let r = sample();
        assert_eq!(r.len(), 4);
        assert_eq!(r.key_count(), 3);
        assert_eq!(r.names().collect::<Vec<_>>(), ["d1", "temp", "d2", "vib"]);
        assert_eq!(r.key_ids(), [0, 1, 0, 2]);
        assert_eq!(
            r.row(3),
            Reading {
                ts: 5,
                device: "d1",
                tag: "vib",
                value: 4.0
            }
        );
        assert_eq!(r.time_range(), Some((1, 5)));
        assert_eq!(Readings::new().time_range(), None);
    }

    #[test]
    fn retain_keys_renumbers_and_keeps_order() {
        let mut r = sample();
        r.retain_keys(&[false, true, true]);
        assert_eq!(r.key_ids(), [0, 1]);
        assert_eq!(
            r.keys().collect::<Vec<_>>(),
            [("d2", "temp"), ("d1", "vib")]
        );
        let mut r = sample();
        r.retain_time(Some(2), Some(5));
        r.drop_unused_keys();
        assert_eq!(r.ts(), [3, 2]);
        assert_eq!(r.key_count(), 1);
    }

    #[test]
    fn concat_merges_pairs_and_names() {
        let a = sample();
        let b: Readings = [(9, "d2", "temp", 7.0), (8, "d3", "temp", 6.0)]
            .into_iter()
            .collect();
        let c = Readings::concat(&[&a, &b]);
        assert_eq!(c.len(), 6);
        assert_eq!(c.key_count(), 4);
        assert_eq!(c.name_count(), 5);
        let rows: Vec<_> = c.iter().map(|r| (r.ts, r.device, r.tag)).collect();
        assert_eq!(rows[4], (9, "d2", "temp"));
        assert_eq!(rows[5], (8, "d3", "temp"));
        assert_eq!(c.key_ids()[4], c.key_ids()[1]);
    }

    #[test]
    fn columns_round_trip_and_are_checked() {
        let r = sample();
        let (ts, v, k, keys) = r.clone().into_columns();
        assert_eq!(Readings::from_columns(ts, v, k, &keys).unwrap(), r);
        let e = Readings::from_columns(vec![1], vec![1.0], vec![2], &[("a", "b")]).unwrap_err();
        assert!(e.contains("key 2 of 1"), "{e}");
        let e = Readings::from_columns::<&str>(vec![1], vec![], vec![], &[]).unwrap_err();
        assert!(e.contains("1 timestamps, 0 values"), "{e}");
    }

    #[test]
    #[should_panic(expected = "key id out of range")]
    fn push_refuses_unknown_key() {
        Readings::new().push(1, 0, 1.0);
    }
}
