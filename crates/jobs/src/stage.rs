//! What a job stages in the store between its steps (`staging/<job>/`):
//! the plan its map tasks follow, and each map task's output, the readings
//! of its share of the window cut into one section per score task.
//!
//! A map output (`map-<m>.bin`) is a plain binary layout, cheap to write
//! and read (about 10 bytes a reading), and a score task reads only its
//! own section of it (two ranged reads: the header, then the section):
//!
//! ```text
//! b"FSMAP02\n"
//! u32 plan id length, the plan id (UTF-8)
//! u32 T (score tasks)
//! (T + 1) x u64: section offsets, from the end of the header
//! T sections:
//!   u32 K keys, K x either u32 i (the score task's i-th pair in the plan)
//!     or u32 0xFFFFFFFF, u32 length, device, u32 length, tag (a pair the
//!     plan does not name: readings, no model of its own)
//!   u64 N readings, u8 W (key id width: 1 if K <= 256, 2 if <= 65536, else 4)
//!   N x ts: zigzag LEB128 varint of the difference from the previous ts
//!   N x f64 value, N x W-byte key id (into the K keys)
//! ```
//!
//! Integers are little-endian. A header whose plan id is not the score
//! task's (a job planned again meanwhile) is refused, as is any section
//! whose lengths do not add up.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use fleetscore_codecs::Readings;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"FSMAP02\n";

/// A job's plan, for its map tasks: `staging/<job>/plan.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobPlan {
    /// `fleetscore-job-plan`.
    pub format: String,
    /// The job.
    pub job: i64,
    /// Names this plan: a job planned again gets another.
    pub plan_id: String,
    /// Window `[start, end)`, ns.
    pub window: (i64, i64),
    /// The model pack generation the plan was made with.
    pub generation: u64,
    /// Score tasks (their idx are `0..tasks`; map task `m` is `tasks + m`).
    pub tasks: u32,
    /// Per score task, its pairs in order, with their model's input.
    pub task_units: Vec<Vec<PlanUnit>>,
    /// Per map task, the raw row groups it reads, in window order.
    pub maps: Vec<Vec<MapPiece>>,
    /// Tags whose fallback model (`*/tag`) reads windows: a pair of such a
    /// tag without a model of its own has its windows for data, not its
    /// readings (see [`JobPlan::route`]).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub window_tags: BTreeSet<String>,
    /// Whether planning found windows for any of the job's window-input
    /// pairs. Without them, a window whose map tasks find no readings
    /// holds nothing to score: the job is skipped, not failed. Plans
    /// staged by an older fleetscore lack it: taken as `true`, so such a
    /// job is scored as before.
    #[serde(default = "yes")]
    pub has_windows: bool,
}

fn yes() -> bool {
    true
}

/// One pair of a score task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PlanUnit {
    pub device: String,
    pub tag: String,
    /// Window size and features of a window-input model; absent for raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<(String, Vec<String>)>,
}

/// Some row groups of one raw object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MapPiece {
    /// The object's key.
    pub key: String,
    /// Its row groups, by index, ascending.
    pub row_groups: Vec<usize>,
    /// Its length when planned, bytes: a map task reads its footer and
    /// those row groups by range, not the whole object.
    pub size: u64,
    /// Its version when planned (the store's ETag, if it gives one): a
    /// map task reads that version or fails, saying the object changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl JobPlan {
    /// Whether score task `idx`'s pairs are `n` from `first` to `last`
    /// (`device/tag`), as its task record says.
    /// (A task with no pairs, kept for those the map tasks find, has empty
    /// keys.)
    pub fn fits_task(&self, idx: u32, n: u64, first: &str, last: &str) -> bool {
        let key = |u: Option<&PlanUnit>| {
            u.map(|u| format!("{}/{}", u.device, u.tag))
                .unwrap_or_default()
        };
        self.task_units.get(idx as usize).is_some_and(|units| {
            units.len() as u64 == n && key(units.first()) == first && key(units.last()) == last
        })
    }

    /// Map task `m`'s first and last object keys and its row-group count,
    /// as its task record holds them.
    pub fn map_summary(&self, m: usize) -> Option<(String, String, u64)> {
        let pieces = self.maps.get(m)?;
        Some((
            pieces.first()?.key.clone(),
            pieces.last()?.key.clone(),
            pieces.iter().map(|p| p.row_groups.len() as u64).sum(),
        ))
    }

    /// The score task that takes a pair's readings, for the map tasks:
    /// the task whose range of pairs holds it (the plan's pairs are sorted
    /// and cut into consecutive ranges), found by binary search, so a map
    /// task builds no table of the plan's pairs.
    ///
    /// That is also where a pair the plan does not name goes: one with
    /// readings but no model of its own, which planning cannot know of (it
    /// reads no readings), and which the task records as `no_model` or
    /// scores with its tag's fallback model. `None` (the readings are not
    /// wanted) for a pair the plan names as window input, for an unnamed
    /// one whose tag's fallback model reads windows, for an unnamed one
    /// `chosen` rejects (a job's selection), and if there are no tasks.
    /// With the task, the pair's place among the task's pairs if the plan
    /// names it.
    pub fn route(
        &self,
        device: &str,
        tag: &str,
        chosen: impl Fn() -> bool,
    ) -> Option<(u32, Option<u32>)> {
        let key = (device, tag);
        // The last task whose first pair is not after `key` (the first
        // task takes what sorts before every pair; only a lone task has
        // no pairs).
        let after = self
            .task_units
            .partition_point(|us| us.first().is_none_or(|u| pair(u) <= key));
        let task = after
            .checked_sub(1)
            .or((!self.task_units.is_empty()).then_some(0))?;
        let units = &self.task_units[task];
        match units.binary_search_by(|u| pair(u).cmp(&key)) {
            Ok(i) if units[i].window.is_some() => None,
            Ok(i) => Some((task as u32, Some(i as u32))),
            Err(_) if self.window_tags.contains(tag) || !chosen() => None,
            Err(_) => Some((task as u32, None)),
        }
    }
}

/// A unit's pair, to compare with another.
fn pair(u: &PlanUnit) -> (&str, &str) {
    (u.device.as_str(), u.tag.as_str())
}

/// A pair of a [`Section`]: the score task's `i`-th pair in the plan
/// (named by number: no text to copy, write, read or match), or one the
/// plan does not name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum SectionKey {
    Unit(u32),
    Other(String, String),
}

/// A score task's readings from one map task: `key[r]` indexes `keys`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Section {
    pub keys: Vec<SectionKey>,
    pub ts: Vec<i64>,
    pub value: Vec<f64>,
    pub key: Vec<u32>,
}

impl Section {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// Forgets the keys no reading names (renumbering the rest, in order).
    pub fn drop_unused_keys(&mut self) {
        fleetscore_codecs::drop_unused_keys(&mut self.keys, &mut self.key);
    }
}

/// A score task's readings from its sections of the map outputs, in order:
/// `units` are its pairs in the plan (what [`SectionKey::Unit`] numbers).
/// Each pair with readings is in `keys` once, in order of first
/// appearance.
pub(crate) fn gather_sections(units: &[PlanUnit], parts: &[&Section]) -> Result<Readings, String> {
    let n: usize = parts.iter().map(|p| p.len()).sum();
    let (mut ts, mut value, mut key) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut keys: Vec<(&str, &str)> = Vec::new();
    let mut unit_id = vec![u32::MAX; units.len()];
    let mut other: FxHashMap<(&str, &str), u32> = FxHashMap::default();
    for p in parts {
        let mut map = Vec::with_capacity(p.keys.len());
        for k in &p.keys {
            let next = keys.len() as u32;
            let id = match k {
                SectionKey::Unit(i) => {
                    let u = units.get(*i as usize).ok_or_else(|| {
                        format!("a section names pair {i} of a task of {}", units.len())
                    })?;
                    let id = &mut unit_id[*i as usize];
                    if *id == u32::MAX {
                        *id = next;
                        keys.push((&u.device, &u.tag));
                    }
                    *id
                }
                SectionKey::Other(d, t) => *other.entry((d, t)).or_insert_with(|| {
                    keys.push((d, t));
                    next
                }),
            };
            map.push(id);
        }
        ts.extend_from_slice(&p.ts);
        value.extend_from_slice(&p.value);
        key.extend(p.key.iter().map(|&k| map[k as usize]));
    }
    Readings::from_columns(ts, value, key, &keys)
}

/// Encodes map output: `sections[t]` is score task `t`'s readings.
pub(crate) fn encode_map(plan_id: &str, sections: &[Section]) -> Vec<u8> {
    // About 10 bytes a reading: a 1-byte time delta, a 1-byte key, the value.
    let guess: usize = sections
        .iter()
        .map(|s| {
            16 + s
                .keys
                .iter()
                .map(|k| match k {
                    SectionKey::Unit(_) => 4,
                    SectionKey::Other(d, t) => 12 + d.len() + t.len(),
                })
                .sum::<usize>()
                + s.len() * 11
        })
        .sum();
    let mut out = Vec::with_capacity(header_len(plan_id, sections.len() as u32) + guess);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(plan_id.len() as u32).to_le_bytes());
    out.extend_from_slice(plan_id.as_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    // Offsets are filled in once each section is written.
    let offsets = out.len();
    out.resize(offsets + 8 * (sections.len() + 1), 0);
    let base = out.len();
    for (i, s) in sections.iter().enumerate() {
        encode_section(s, &mut out);
        let at = (out.len() - base) as u64;
        let o = offsets + 8 * (i + 1);
        out[o..o + 8].copy_from_slice(&at.to_le_bytes());
    }
    out
}

/// Appends one section: its keys, then the readings' times as zigzag
/// varint deltas (readings come in time order, so mostly one byte), the
/// values as they are, and the key ids in 1, 2 or 4 bytes.
fn encode_section(s: &Section, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.keys.len() as u32).to_le_bytes());
    for k in &s.keys {
        match k {
            SectionKey::Unit(i) => out.extend_from_slice(&i.to_le_bytes()),
            SectionKey::Other(d, t) => {
                out.extend_from_slice(&u32::MAX.to_le_bytes());
                for x in [d, t] {
                    out.extend_from_slice(&(x.len() as u32).to_le_bytes());
                    out.extend_from_slice(x.as_bytes());
                }
            }
        }
    }
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    let width = key_width(s.keys.len());
    out.push(width as u8);
    let mut prev = 0i64;
    for &t in &s.ts {
        let d = t.wrapping_sub(prev);
        prev = t;
        let mut z = ((d << 1) ^ (d >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
    for v in &s.value {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for &k in &s.key {
        out.extend_from_slice(&k.to_le_bytes()[..width]);
    }
}

fn key_width(keys: usize) -> usize {
    if keys <= 1 << 8 {
        1
    } else if keys <= 1 << 16 {
        2
    } else {
        4
    }
}

/// The length of a map output's header.
pub(crate) fn header_len(plan_id: &str, tasks: u32) -> usize {
    8 + 4 + plan_id.len() + 4 + 8 * (tasks as usize + 1)
}

/// Section `t`'s byte range in the object, from its header.
pub(crate) fn section_range(
    header: &[u8],
    plan_id: &str,
    tasks: u32,
    t: u32,
) -> Result<std::ops::Range<u64>, String> {
    let want = header_len(plan_id, tasks);
    if header.len() < want {
        return Err(format!(
            "its header is {} bytes, not {want}: not a map output of this plan",
            header.len()
        ));
    }
    if &header[..8] != MAGIC {
        return Err("it does not start as a map output of this version (FSMAP02)".into());
    }
    let mut r = Reader {
        b: &header[8..],
        at: 0,
    };
    let id_len = r.u32()? as usize;
    let id = r.bytes(id_len)?;
    if id != plan_id.as_bytes() {
        return Err(format!(
            "it belongs to plan {:?}, not {plan_id:?}: the job was planned again",
            String::from_utf8_lossy(id)
        ));
    }
    let n = r.u32()?;
    if n != tasks {
        return Err(format!("it holds {n} sections, not {tasks}"));
    }
    if t >= tasks {
        return Err(format!("there is no section {t} of {tasks}"));
    }
    r.at += 8 * t as usize;
    let (a, b) = (r.u64()?, r.u64()?);
    if b < a {
        return Err(format!("section {t} ends before it starts"));
    }
    let base = want as u64;
    Ok(base + a..base + b)
}

/// Decodes one section.
pub(crate) fn decode_section(b: &[u8]) -> Result<Section, String> {
    let mut r = Reader { b, at: 0 };
    let nk = r.u32()? as usize;
    let mut keys = Vec::with_capacity(nk.min(1 << 20));
    for _ in 0..nk {
        let i = r.u32()?;
        if i != u32::MAX {
            keys.push(SectionKey::Unit(i));
            continue;
        }
        let dl = r.u32()? as usize;
        let d = std::str::from_utf8(r.bytes(dl)?).map_err(|e| e.to_string())?;
        let tl = r.u32()? as usize;
        let t = std::str::from_utf8(r.bytes(tl)?).map_err(|e| e.to_string())?;
        keys.push(SectionKey::Other(d.to_string(), t.to_string()));
    }
    let n = usize::try_from(r.u64()?).map_err(|e| e.to_string())?;
    let width = r.bytes(1)?[0] as usize;
    if width != key_width(nk) {
        return Err(format!(
            "its key ids are {width} bytes wide, not {}",
            key_width(nk)
        ));
    }
    // At least a byte of time, the value and the key id per reading.
    if n.checked_mul(9 + width).is_none_or(|m| m > b.len() - r.at) {
        return Err(format!(
            "it says {n} readings in {} bytes",
            b.len().saturating_sub(r.at)
        ));
    }
    let mut ts = Vec::with_capacity(n);
    let mut prev = 0i64;
    for _ in 0..n {
        let mut z = 0u64;
        let mut shift = 0;
        loop {
            let byte = r.bytes(1)?[0];
            if shift > 63 {
                return Err("a time delta runs past 64 bits".into());
            }
            z |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
            shift += 7;
        }
        let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
        prev = prev.wrapping_add(d);
        ts.push(prev);
    }
    let value = r.bytes(n * 8)?;
    let key = r.bytes(n * width)?;
    if r.at != b.len() {
        return Err(format!("{} bytes are left over", b.len() - r.at));
    }
    let out = Section {
        ts,
        value: value
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        key: key
            .chunks_exact(width)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..width].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect(),
        keys,
    };
    if let Some(k) = out.key.iter().find(|&&k| k as usize >= out.keys.len()) {
        return Err(format!("a reading names key {k} of {}", out.keys.len()));
    }
    Ok(out)
}

/// Concatenates sections, in order, into one set of readings (each pair
/// once, in order of first appearance).
pub(crate) fn concat(parts: &[&Readings]) -> Readings {
    Readings::concat(parts)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("it ends at byte {} of {} needed", self.b.len(), self.at + n))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(rows: &[(i64, f64, &str, &str)]) -> Readings {
        rows.iter().map(|&(ts, v, d, t)| (ts, d, t, v)).collect()
    }

    /// `readings` as a section: pairs `d<i>/u` are plan pairs `i`, others
    /// are named.
    fn section(rows: &[(i64, f64, &str, &str)]) -> Section {
        let (ts, value, key, keys) = readings(rows).into_columns();
        Section {
            keys: keys
                .into_iter()
                .map(
                    |(d, t)| match d.strip_prefix('d').and_then(|i| i.parse().ok()) {
                        Some(i) if t == "u" => SectionKey::Unit(i),
                        _ => SectionKey::Other(d, t),
                    },
                )
                .collect(),
            ts,
            value,
            key,
        }
    }

    #[test]
    fn sections_read_back_by_range() {
        let a = section(&[
            (1, 1.5, "d1", "t"),
            (2, -2.0, "d2", "u"),
            (3, 3.0, "d1", "t"),
        ]);
        let empty = Section::default();
        let c = section(&[(9, f64::NAN, "dé", "x"), (9, 0.0, "d0", "u")]);
        let bytes = encode_map("p1", &[a.clone(), empty.clone(), c.clone()]);
        let h = &bytes[..header_len("p1", 3)];
        for (t, want) in [a, empty, c].iter().enumerate() {
            let r = section_range(h, "p1", 3, t as u32).unwrap();
            let got = decode_section(&bytes[r.start as usize..r.end as usize]).unwrap();
            assert_eq!(got.ts, want.ts);
            assert_eq!(got.key, want.key);
            assert_eq!(got.keys, want.keys);
            assert_eq!(
                got.value.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.value.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn wide_keys_and_any_times_round_trip() {
        // 300 keys (2-byte ids), times out of order and at the extremes.
        let mut r = Section::default();
        for k in 0..300u32 {
            r.keys.push(if k % 2 == 0 {
                SectionKey::Unit(k)
            } else {
                SectionKey::Other(format!("d{k}"), "t".into())
            });
        }
        let times = [i64::MIN, 5, -7, i64::MAX, 0, 1_700_000_000_000_000_000, 3];
        for i in 0..900usize {
            r.ts.push(times[i % times.len()]);
            r.value.push(i as f64 * 0.5);
            r.key.push((i * 7 % 300) as u32);
        }
        let bytes = encode_map("p", std::slice::from_ref(&r));
        let range = section_range(&bytes[..header_len("p", 1)], "p", 1, 0).unwrap();
        let got = decode_section(&bytes[range.start as usize..range.end as usize]).unwrap();
        assert_eq!(
            (got.ts, got.value, got.key, got.keys),
            (r.ts, r.value, r.key, r.keys)
        );
    }

    #[test]
    fn another_plan_or_a_cut_section_is_refused() {
        let a = section(&[(1, 1.0, "d1", "t")]);
        let bytes = encode_map("p1", std::slice::from_ref(&a));
        let h = &bytes[..header_len("p2", 1)];
        assert!(section_range(h, "p2", 1, 0)
            .unwrap_err()
            .contains("planned again"));
        assert!(section_range(&bytes[..10], "p1", 1, 0).is_err());
        assert!(section_range(&bytes, "p1", 2, 0).is_err());
        let r = section_range(&bytes[..header_len("p1", 1)], "p1", 1, 0).unwrap();
        let s = &bytes[r.start as usize..r.end as usize];
        assert!(decode_section(&s[..s.len() - 1]).is_err());
        assert!(decode_section(&[]).is_err());
    }

    #[test]
    fn sections_gather_into_the_tasks_readings() {
        let unit = |d: &str| PlanUnit {
            device: d.into(),
            tag: "u".into(),
            window: None,
        };
        let units = [unit("a"), unit("b"), unit("c")];
        // Pairs 2 and 0 of the task, and pairs the plan does not name.
        let s1 = section(&[(1, 1.0, "d2", "u"), (2, 2.0, "x", "t"), (3, 3.0, "d0", "u")]);
        let s2 = section(&[(4, 4.0, "x", "t"), (5, 5.0, "d2", "u"), (6, 6.0, "y", "t")]);
        let g = gather_sections(&units, &[&s1, &Section::default(), &s2]).unwrap();
        assert_eq!(g.ts(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(g.values(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let names: Vec<(&str, &str)> = g.iter().map(|r| (r.device, r.tag)).collect();
        assert_eq!(
            names,
            [
                ("c", "u"),
                ("x", "t"),
                ("a", "u"),
                ("x", "t"),
                ("c", "u"),
                ("y", "t")
            ]
        );
        // Each pair once; b has no readings, so is not there.
        assert_eq!(g.key_count(), 4);
        // A section naming a pair the task does not have is refused.
        let bad = section(&[(1, 1.0, "d3", "u")]);
        let err = gather_sections(&units, &[&bad]).unwrap_err();
        assert!(err.contains("pair 3 of a task of 3"), "{err}");
    }

    #[test]
    fn unused_keys_are_dropped_and_the_rest_renumbered() {
        let mut s = section(&[(1, 1.0, "d0", "u"), (2, 2.0, "x", "t"), (3, 3.0, "d5", "u")]);
        s.key = vec![2, 2, 0];
        s.drop_unused_keys();
        assert_eq!(s.keys, [SectionKey::Unit(0), SectionKey::Unit(5)]);
        assert_eq!(s.key, vec![1, 1, 0]);
    }

    #[test]
    fn concat_keeps_order_and_merges_keys() {
        let a = readings(&[(1, 1.0, "d1", "t"), (2, 2.0, "d2", "t")]);
        let b = readings(&[(3, 3.0, "d2", "t"), (4, 4.0, "d3", "t")]);
        let c = concat(&[&a, &b]);
        assert_eq!(c.ts(), [1, 2, 3, 4]);
        let names: Vec<&str> = c.iter().map(|r| r.device).collect();
        assert_eq!(names, vec!["d1", "d2", "d2", "d3"]);
        assert_eq!(c.key_count(), 3);
    }
}
