//! Model keys: which model scores which readings.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::name::{validate_name, NameError, NameKind};

/// The device name of a fallback model: `(*, tag)` scores every device that
/// has no model of its own for that tag.
pub const FALLBACK_DEVICE: &str = "*";

/// The key of one model: a (device, sensor tag) pair.
///
/// Both parts become path segments in the store (`models/<device>/<tag>/`),
/// so they follow the name rule every reading follows
/// ([`validate_name`](crate::validate_name): at most 128 bytes, no control
/// characters, no `/`, never `.` or `..`). The device may also be `*`, the
/// fallback model for a tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelKey {
    /// Device identifier, e.g. `"1"` or `"pump-17"`.
    pub device: String,
    /// Sensor tag, e.g. `"3"` or `"temperature"`.
    pub tag: String,
}

/// Why a model key was refused: the device or tag name breaks the name
/// rule.
pub type KeyError = NameError;

impl ModelKey {
    /// Builds a key after validating both parts.
    pub fn new(device: impl Into<String>, tag: impl Into<String>) -> Result<Self, KeyError> {
        let (device, tag) = (device.into(), tag.into());
        if device != FALLBACK_DEVICE {
            validate_name(NameKind::Device, &device)?;
        }
        validate_name(NameKind::Tag, &tag)?;
        Ok(ModelKey { device, tag })
    }

    /// Whether this is a fallback model `(*, tag)`.
    pub fn is_fallback(&self) -> bool {
        self.device == FALLBACK_DEVICE
    }

    /// Parses a file name of the reference deployment, `model_{device}_{tag}`
    /// (any extension is ignored). The device may itself contain `_`; the
    /// tag is what follows the last `_`. `None` if the name does not have
    /// that form; `Some(Err)` if it does but a part breaks the name rule.
    pub fn from_reference_file_name(name: &str) -> Option<Result<Self, KeyError>> {
        let stem = name.strip_prefix("model_")?;
        let stem = match stem.find('.') {
            Some(i) => &stem[..i],
            None => stem,
        };
        let (device, tag) = stem.rsplit_once('_')?;
        Some(ModelKey::new(device, tag))
    }
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
        let k = ModelKey::from_reference_file_name("model_1_5")
            .unwrap()
            .unwrap();
        assert_eq!((k.device.as_str(), k.tag.as_str()), ("1", "5"));
        let k = ModelKey::from_reference_file_name("model_pump_7_temp.pkl")
            .unwrap()
            .unwrap();
        assert_eq!((k.device.as_str(), k.tag.as_str()), ("pump_7", "temp"));
        assert!(ModelKey::from_reference_file_name("model_1").is_none());
        assert!(ModelKey::from_reference_file_name("other_1_2").is_none());
        let e = ModelKey::from_reference_file_name("model_ pump_7.pkl")
            .unwrap()
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("device name \" pump\": starts or ends with white space"),
            "{e}"
        );
    }

    #[test]
    fn path_traversal_is_refused() {
        assert!(ModelKey::new("..", "1").is_err());
        assert!(ModelKey::new("a/b", "1").is_err());
        assert!(ModelKey::new("1", "x/../../escaped").is_err());
        assert!(ModelKey::new("1", "a\nb").is_err());
        assert!(ModelKey::new("1", "").is_err());
        assert!(ModelKey::new("*", "1").unwrap().is_fallback());
        assert!(ModelKey::new("1", "*").is_err());
    }

    #[test]
    fn model_keys_follow_the_reading_name_rule() {
        // Every name a reading may carry can have a model.
        for name in ["pump 7, north", "Temp (°C)", "a:b@c", "x..y"] {
            assert!(ModelKey::new(name, name).is_ok(), "{name:?}");
        }
        let e = ModelKey::new("x".repeat(129), "t").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "device name \"{}…\": is 129 bytes; the limit is 128; use a shorter name",
                "x".repeat(64)
            )
        );
    }
}
