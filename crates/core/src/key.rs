//! Model keys: which model scores which readings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The device name of a fallback model: `(*, tag)` scores every device that
/// has no model of its own for that tag.
pub const FALLBACK_DEVICE: &str = "*";

/// Longest device or tag name accepted, in bytes.
const MAX_LEN: usize = 128;

/// The key of one model: a (device, sensor tag) pair.
///
/// Both parts become path segments in the store (`models/<device>/<tag>/`),
/// so they are validated: 1 to 128 bytes of ASCII letters, digits, `.`, `_`,
/// `-`, `:` and `@`, never `.` or `..`. The device may also be `*`, the
/// fallback model for a tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelKey {
    /// Device identifier, e.g. `"1"` or `"pump-17"`.
    pub device: String,
    /// Sensor tag, e.g. `"3"` or `"temperature"`.
    pub tag: String,
}

/// Why a device or tag name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {part} {value:?}: {reason}")]
pub struct KeyError {
    /// `"device"` or `"tag"`.
    pub part: &'static str,
    /// The refused value.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ModelKey {
    /// Builds a key after validating both parts.
    pub fn new(device: impl Into<String>, tag: impl Into<String>) -> Result<Self, KeyError> {
        let (device, tag) = (device.into(), tag.into());
        if device != FALLBACK_DEVICE {
            validate("device", &device)?;
        }
        validate("tag", &tag)?;
        Ok(ModelKey { device, tag })
    }

    /// Whether this is a fallback model `(*, tag)`.
    pub fn is_fallback(&self) -> bool {
        self.device == FALLBACK_DEVICE
    }

    /// Parses a file name of the reference deployment, `model_{device}_{tag}`
    /// (any extension is ignored). The device may itself contain `_`; the
    /// tag is what follows the last `_`.
    pub fn from_reference_file_name(name: &str) -> Option<Self> {
        let stem = name.strip_prefix("model_")?;
        let stem = match stem.find('.') {
            Some(i) => &stem[..i],
            None => stem,
        };
        let (device, tag) = stem.rsplit_once('_')?;
        ModelKey::new(device, tag).ok()
    }
}

fn validate(part: &'static str, value: &str) -> Result<(), KeyError> {
    let err = |reason| {
        Err(KeyError {
            part,
            value: value.to_string(),
            reason,
        })
    };
    if value.is_empty() {
        return err("it is empty");
    }
    if value.len() > MAX_LEN {
        return err("it is longer than 128 bytes");
    }
    if value == "." || value == ".." {
        return err("`.` and `..` are not allowed (they would escape the store folder)");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@'))
    {
        return err("only ASCII letters, digits and . _ - : @ are allowed");
    }
    Ok(())
}

impl fmt::Display for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.device, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_names_map_to_keys() {
        let k = ModelKey::from_reference_file_name("model_1_5").unwrap();
        assert_eq!((k.device.as_str(), k.tag.as_str()), ("1", "5"));
        let k = ModelKey::from_reference_file_name("model_pump_7_temp.pkl").unwrap();
        assert_eq!((k.device.as_str(), k.tag.as_str()), ("pump_7", "temp"));
        assert!(ModelKey::from_reference_file_name("model_1").is_none());
        assert!(ModelKey::from_reference_file_name("other_1_2").is_none());
    }

    #[test]
    fn path_traversal_is_refused() {
        assert!(ModelKey::new("..", "1").is_err());
        assert!(ModelKey::new("a/b", "1").is_err());
        assert!(ModelKey::new("1", "").is_err());
        assert!(ModelKey::new("*", "1").unwrap().is_fallback());
        assert!(ModelKey::new("1", "*").is_err());
    }
}
