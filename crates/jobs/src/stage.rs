//! What a job stages in the store between its steps (`staging/<job>/`):
//! the plan its map tasks follow, and each map task's output, the readings
//! of its share of the window cut into one section per score task.
//!
//! A map output (`map-<m>.bin`) is a plain binary layout, so writing and
//! reading it is nearly a copy, and a score task reads only its own
//! section of it (two ranged reads: the header, then the section):
//!
//! ```text
//! b"FSMAP01\n"
//! u32 plan id length, the plan id (UTF-8)
//! u32 T (score tasks)
//! (T + 1) x u64: section offsets, from the end of the header
//! T sections:
//!   u32 K keys, K x (u32 length, device, u32 length, tag)
//!   u64 N readings, N x i64 ts, N x f64 value, N x u32 key (into the K keys)
//! ```
//!
//! Integers are little-endian. A header whose plan id is not the score
//! task's (a job planned again meanwhile) is refused, as is any section
//! whose lengths do not add up.

use std::collections::HashMap;

use fleetscore_codecs::Readings;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"FSMAP01\n";

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
    /// Score tasks (their idx are `0..tasks`; map task `m` is `tasks + m`).
    pub tasks: u32,
    /// Per map task, the raw row groups it reads, in window order.
    pub maps: Vec<Vec<MapPiece>>,
    /// Each raw-input pair with its score task.
    pub units: Vec<(String, String, u32)>,
}

/// Some row groups of one raw object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MapPiece {
    /// The object's key.
    pub key: String,
    /// Its row groups, by index, ascending.
    pub row_groups: Vec<usize>,
}

impl JobPlan {
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

    /// Score task by raw-input pair.
    pub fn lookup(&self) -> HashMap<(&str, &str), u32> {
        self.units
            .iter()
            .map(|(d, t, task)| ((d.as_str(), t.as_str()), *task))
            .collect()
    }
}

/// Encodes map output: `sections[t]` is score task `t`'s readings.
pub(crate) fn encode_map(plan_id: &str, sections: &[Readings]) -> Vec<u8> {
    let mut bodies: Vec<Vec<u8>> = Vec::with_capacity(sections.len());
    for s in sections {
        let mut b = Vec::with_capacity(12 + s.len() * 20 + s.keys.len() * 24);
        b.extend_from_slice(&(s.keys.len() as u32).to_le_bytes());
        for (d, t) in &s.keys {
            for x in [d, t] {
                b.extend_from_slice(&(x.len() as u32).to_le_bytes());
                b.extend_from_slice(x.as_bytes());
            }
        }
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        for v in &s.ts {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in &s.value {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in &s.key {
            b.extend_from_slice(&v.to_le_bytes());
        }
        bodies.push(b);
    }
    let mut out = Vec::with_capacity(
        header_len(plan_id, sections.len() as u32) + bodies.iter().map(Vec::len).sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(plan_id.len() as u32).to_le_bytes());
    out.extend_from_slice(plan_id.as_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    let mut at = 0u64;
    out.extend_from_slice(&at.to_le_bytes());
    for b in &bodies {
        at += b.len() as u64;
        out.extend_from_slice(&at.to_le_bytes());
    }
    for b in bodies {
        out.extend_from_slice(&b);
    }
    out
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
        return Err("it does not start as a map output (FSMAP01)".into());
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
pub(crate) fn decode_section(b: &[u8]) -> Result<Readings, String> {
    let mut r = Reader { b, at: 0 };
    let nk = r.u32()? as usize;
    let mut keys = Vec::with_capacity(nk.min(1 << 20));
    for _ in 0..nk {
        let dl = r.u32()? as usize;
        let d = std::str::from_utf8(r.bytes(dl)?).map_err(|e| e.to_string())?;
        let tl = r.u32()? as usize;
        let t = std::str::from_utf8(r.bytes(tl)?).map_err(|e| e.to_string())?;
        keys.push((d.to_string(), t.to_string()));
    }
    let n = usize::try_from(r.u64()?).map_err(|e| e.to_string())?;
    if n.checked_mul(20) != Some(b.len() - r.at) {
        return Err(format!(
            "it says {n} readings in {} bytes",
            b.len().saturating_sub(r.at)
        ));
    }
    let ts = r.bytes(n * 8)?;
    let value = r.bytes(n * 8)?;
    let key = r.bytes(n * 4)?;
    let out = Readings {
        ts: ts
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        value: value
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        key: key
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect(),
        keys,
    };
    if let Some(k) = out.key.iter().find(|&&k| k as usize >= out.keys.len()) {
        return Err(format!("a reading names key {k} of {}", out.keys.len()));
    }
    Ok(out)
}

/// Concatenates sections, in order, into one set of readings (each pair
/// once in `keys`, in order of first appearance).
pub(crate) fn concat(parts: &[&Readings]) -> Readings {
    let n = parts.iter().map(|p| p.len()).sum();
    let mut out = Readings {
        ts: Vec::with_capacity(n),
        value: Vec::with_capacity(n),
        key: Vec::with_capacity(n),
        keys: Vec::new(),
    };
    let mut ids: HashMap<&(String, String), u32> = HashMap::new();
    for p in parts {
        let map: Vec<u32> = p
            .keys
            .iter()
            .map(|k| {
                let next = out.keys.len() as u32;
                *ids.entry(k).or_insert_with(|| {
                    out.keys.push(k.clone());
                    next
                })
            })
            .collect();
        out.ts.extend_from_slice(&p.ts);
        out.value.extend_from_slice(&p.value);
        out.key.extend(p.key.iter().map(|&k| map[k as usize]));
    }
    out
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
        let mut r = Readings::default();
        for &(ts, v, d, t) in rows {
            let k = match r.keys.iter().position(|k| k.0 == d && k.1 == t) {
                Some(k) => k,
                None => {
                    r.keys.push((d.into(), t.into()));
                    r.keys.len() - 1
                }
            };
            r.ts.push(ts);
            r.value.push(v);
            r.key.push(k as u32);
        }
        r
    }

    #[test]
    fn sections_read_back_by_range() {
        let a = readings(&[(1, 1.5, "d1", "t"), (2, -2.0, "d2", "t"), (3, 3.0, "d1", "t")]);
        let empty = Readings::default();
        let c = readings(&[(9, f64::NAN, "dé", "x")]);
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
    fn another_plan_or_a_cut_section_is_refused() {
        let a = readings(&[(1, 1.0, "d1", "t")]);
        let bytes = encode_map("p1", std::slice::from_ref(&a));
        let h = &bytes[..header_len("p2", 1)];
        assert!(section_range(h, "p2", 1, 0).unwrap_err().contains("planned again"));
        assert!(section_range(&bytes[..10], "p1", 1, 0).is_err());
        assert!(section_range(&bytes, "p1", 2, 0).is_err());
        let r = section_range(&bytes[..header_len("p1", 1)], "p1", 1, 0).unwrap();
        let s = &bytes[r.start as usize..r.end as usize];
        assert!(decode_section(&s[..s.len() - 1]).is_err());
        assert!(decode_section(&[]).is_err());
    }

    #[test]
    fn concat_keeps_order_and_merges_keys() {
        let a = readings(&[(1, 1.0, "d1", "t"), (2, 2.0, "d2", "t")]);
        let b = readings(&[(3, 3.0, "d2", "t"), (4, 4.0, "d3", "t")]);
        let c = concat(&[&a, &b]);
        assert_eq!(c.ts, vec![1, 2, 3, 4]);
        let names: Vec<&str> = c.key.iter().map(|&k| c.keys[k as usize].0.as_str()).collect();
        assert_eq!(names, vec!["d1", "d2", "d2", "d3"]);
        assert_eq!(c.keys.len(), 3);
    }
}
