//! The compiled model pack: every live model of a store in one file.
//!
//! Scoring 100,000 models must not open 100,000 files. The registry keeps
//! one `model.fsm` per version for people and audits; the pack holds the
//! live version of every key in one binary file that loads with one read.
//!
//! # Pack format, version 1
//!
//! Little-endian:
//!
//! ```text
//! [8]  magic  "FSPACK\0\x01"
//! u32  format version (1)
//! u64  generation (the registry index generation it was built from)
//! u64  number of models
//! per model, sorted by (device, tag):
//!   u16 device length, device bytes (UTF-8)
//!   u16 tag length, tag bytes
//!   u32 model version
//!   u32 encoded length, then the binary model encoding (see `format`)
//! ```

use std::collections::HashMap;

use fleetscore_core::{ModelKey, FALLBACK_DEVICE};

use crate::format::{self, FormatError, Reader};
use crate::model::Model;

const MAGIC: &[u8; 8] = b"FSPACK\0\x01";
const PACK_VERSION: u32 = 1;

/// One model in a pack.
#[derive(Debug, Clone, PartialEq)]
pub struct PackEntry {
    /// Its key.
    pub key: ModelKey,
    /// The registry version this is.
    pub version: u32,
    /// The model.
    pub model: Model,
}

/// All live models, indexed by key.
#[derive(Debug, Clone, Default)]
pub struct Pack {
    /// The registry index generation this pack was built from.
    pub generation: u64,
    entries: Vec<PackEntry>,
    index: HashMap<(String, String), usize>,
}

impl Pack {
    /// Builds a pack from entries (sorted by key; a later duplicate key
    /// replaces an earlier one).
    pub fn new(generation: u64, entries: impl IntoIterator<Item = PackEntry>) -> Pack {
        let mut map: std::collections::BTreeMap<ModelKey, PackEntry> = Default::default();
        for e in entries {
            map.insert(e.key.clone(), e);
        }
        let entries: Vec<PackEntry> = map.into_values().collect();
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| ((e.key.device.clone(), e.key.tag.clone()), i))
            .collect();
        Pack {
            generation,
            entries,
            index,
        }
    }

    /// Number of models.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the pack holds no model.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in key order.
    pub fn entries(&self) -> &[PackEntry] {
        &self.entries
    }

    /// The model for exactly this key.
    pub fn get_exact(&self, device: &str, tag: &str) -> Option<&PackEntry> {
        self.index
            .get(&(device.to_string(), tag.to_string()))
            .map(|&i| &self.entries[i])
    }

    /// The model that scores `(device, tag)`: its own, or the fallback
    /// `(*, tag)`.
    pub fn get(&self, device: &str, tag: &str) -> Option<&PackEntry> {
        self.get_exact(device, tag)
            .or_else(|| self.get_exact(FALLBACK_DEVICE, tag))
    }

    /// Serialises the pack.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.entries.len() * 512);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&PACK_VERSION.to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        let mut buf = Vec::new();
        for e in &self.entries {
            for s in [&e.key.device, &e.key.tag] {
                out.extend_from_slice(&(s.len() as u16).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            out.extend_from_slice(&e.version.to_le_bytes());
            buf.clear();
            format::encode(&e.model, &mut buf);
            out.extend_from_slice(&(buf.len() as u32).to_le_bytes());
            out.extend_from_slice(&buf);
        }
        out
    }

    /// Reads a pack.
    pub fn decode(data: &[u8]) -> Result<Pack, FormatError> {
        let mut r = Reader { data, pos: 0 };
        if r.bytes(8)? != MAGIC {
            return Err(r.corrupt("not a fleetscore model pack (bad magic)"));
        }
        let version = r.u32()?;
        if version != PACK_VERSION {
            return Err(FormatError::Version {
                format: "fleetscore-pack".into(),
                version,
            });
        }
        let generation = r.u64()?;
        let n = r.u64()?;
        // Each entry takes at least 12 bytes; refuse counts the data
        // cannot hold before reserving memory for them.
        if n > (data.len() as u64) / 12 {
            return Err(r.corrupt(format!("claims {n} models, more than the file can hold")));
        }
        let mut entries = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let mut text = || -> Result<String, FormatError> {
                let len = usize::from(r.u16()?);
                let b = r.bytes(len)?;
                String::from_utf8(b.to_vec()).map_err(|_| r.corrupt("key is not UTF-8"))
            };
            let device = text()?;
            let tag = text()?;
            let key = ModelKey::new(device, tag).map_err(|e| r.corrupt(e.to_string()))?;
            let version = r.u32()?;
            let len = r.u32()? as usize;
            let start = r.pos;
            let model = format::decode(&mut r)?;
            if r.pos - start != len {
                return Err(r.corrupt(format!(
                    "model {key} is {} bytes, header says {len}",
                    r.pos - start
                )));
            }
            entries.push(PackEntry {
                key,
                version,
                model,
            });
        }
        if r.pos != data.len() {
            return Err(r.corrupt("trailing bytes after the last model"));
        }
        Ok(Pack::new(generation, entries))
    }
}
