//! fleetscore's native model formats.
//!
//! # `model.fsm` (one model version), format version 1
//!
//! A UTF-8 JSON document, so that a person can read what was imported:
//!
//! ```json
//! {
//!   "format": "fleetscore-model",
//!   "version": 1,
//!   "model": {
//!     "n_features": 1,
//!     "steps": [{"type": "standard_scaler", "mean": [12.1], "scale": [1.9]}],
//!     "detector": {"type": "one_class_svm", "kernel": "rbf", "gamma": 1.0,
//!                  "coef0": 0.0, "degree": 3,
//!                  "support_vectors": [-0.5, 0.7],
//!                  "dual_coef": [0.5, 0.5], "intercept": -0.4}
//!   }
//! }
//! ```
//!
//! Floats are written in their shortest round-trip form and read back
//! exactly. Scaler `type`s are `standard_scaler` (`mean`, `scale`, each
//! optional), `min_max_scaler` (`scale`, `min`, optional `clip` pair) and
//! `robust_scaler` (`center`, `scale`, each optional); `support_vectors` is
//! row-major, `n_support x n_features`; `intercept` is scikit-learn's
//! `_intercept_[0]` (libsvm's `-rho`). A reader refuses any other `format`,
//! a newer `version`, and unknown fields.
//!
//! # Binary model encoding (inside the pack), version 1
//!
//! Little-endian, no padding:
//!
//! ```text
//! u32 n_features
//! u8  n_steps, then per step:
//!     u8 type (1 standard, 2 min-max, 3 robust)
//!     standard/robust: u8 flags (bit 0: first array present, bit 1: second)
//!                      then the present arrays, n_features f64 each
//!                      (standard: mean, scale; robust: center, scale)
//!     min-max:         u8 clip (0/1), [f64 lo, f64 hi if clip],
//!                      scale[n_features], min[n_features]
//! u8  detector type (1 = OneClassSVM)
//! u8  kernel (1 rbf, 2 linear, 3 poly, 4 sigmoid)
//! f64 gamma, f64 coef0, i32 degree, f64 intercept
//! u32 n_support, f64 dual_coef[n_support],
//! f64 support_vectors[n_support * n_features]
//! ```
//!
//! The SHA-256 of this encoding identifies a model's content: importing a
//! model whose encoding is unchanged is a no-op, whatever pickle protocol
//! it was saved with.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Detector, InvalidModel, Kernel, Model, OneClassSvm, Scaler};

/// The `format` field of a `model.fsm` document.
pub const FORMAT_NAME: &str = "fleetscore-model";
/// The version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Why a stored model or pack could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormatError {
    /// Not valid JSON or not the expected shape.
    #[error("not a fleetscore model document: {0}")]
    Json(String),
    /// A different or newer format.
    #[error("unsupported format {format:?} version {version} (this build reads {FORMAT_NAME:?} up to version {FORMAT_VERSION}); upgrade fleetscore")]
    Version {
        /// The `format` found.
        format: String,
        /// The `version` found.
        version: u32,
    },
    /// Binary data that ends early or holds impossible values.
    #[error("corrupt binary model data at byte {offset}: {reason}")]
    Corrupt {
        /// Byte offset.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// The model is not internally consistent (see [`Model::validate`]).
    #[error("invalid model: {0}")]
    Invalid(#[from] InvalidModel),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc<M> {
    format: String,
    version: u32,
    model: M,
}

/// Writes a model as a `model.fsm` JSON document.
pub fn to_json(model: &Model) -> Vec<u8> {
    let doc = Doc {
        format: FORMAT_NAME.to_string(),
        version: FORMAT_VERSION,
        model,
    };
    let mut out = serde_json::to_vec_pretty(&doc).expect("models contain no non-string map keys");
    out.push(b'\n');
    out
}

/// Reads a `model.fsm` JSON document.
pub fn from_json(bytes: &[u8]) -> Result<Model, FormatError> {
    #[derive(Deserialize)]
    struct Header {
        format: String,
        version: u32,
    }
    let h: Header = serde_json::from_slice(bytes).map_err(|e| FormatError::Json(e.to_string()))?;
    if h.format != FORMAT_NAME || h.version > FORMAT_VERSION {
        return Err(FormatError::Version {
            format: h.format,
            version: h.version,
        });
    }
    let doc: Doc<Model> =
        serde_json::from_slice(bytes).map_err(|e| FormatError::Json(e.to_string()))?;
    doc.model.validate()?;
    Ok(doc.model)
}

/// SHA-256 of the binary encoding, as lowercase hex.
pub fn content_hash(model: &Model) -> String {
    let mut buf = Vec::new();
    encode(model, &mut buf);
    let digest = Sha256::digest(&buf);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends the binary encoding of `model` to `out`.
pub fn encode(model: &Model, out: &mut Vec<u8>) {
    let f64s = |out: &mut Vec<u8>, v: &[f64]| {
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
    };
    out.extend_from_slice(&(model.n_features as u32).to_le_bytes());
    out.push(model.steps.len() as u8);
    for s in &model.steps {
        match s {
            Scaler::StandardScaler { mean: a, scale: b }
            | Scaler::RobustScaler {
                center: a,
                scale: b,
            } => {
                out.push(if matches!(s, Scaler::StandardScaler { .. }) {
                    1
                } else {
                    3
                });
                out.push(u8::from(a.is_some()) | u8::from(b.is_some()) << 1);
                for v in [a, b].into_iter().flatten() {
                    f64s(out, v);
                }
            }
            Scaler::MinMaxScaler { scale, min, clip } => {
                out.push(2);
                match clip {
                    Some((lo, hi)) => {
                        out.push(1);
                        f64s(out, &[*lo, *hi]);
                    }
                    None => out.push(0),
                }
                f64s(out, scale);
                f64s(out, min);
            }
        }
    }
    let Detector::OneClassSvm(svm) = &model.detector;
    out.push(1);
    out.push(match svm.kernel {
        Kernel::Rbf => 1,
        Kernel::Linear => 2,
        Kernel::Poly => 3,
        Kernel::Sigmoid => 4,
    });
    f64s(out, &[svm.gamma, svm.coef0]);
    out.extend_from_slice(&svm.degree.to_le_bytes());
    f64s(out, &[svm.intercept]);
    out.extend_from_slice(&(svm.dual_coef.len() as u32).to_le_bytes());
    f64s(out, &svm.dual_coef);
    f64s(out, &svm.support_vectors);
}

/// A cursor over binary data that reports where it failed.
pub(crate) struct Reader<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn corrupt(&self, reason: impl Into<String>) -> FormatError {
        FormatError::Corrupt {
            offset: self.pos,
            reason: reason.into(),
        }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.corrupt(format!("needs {n} more bytes but the data ends")))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, FormatError> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FormatError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, FormatError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn f64(&mut self) -> Result<f64, FormatError> {
        Ok(f64::from_bits(self.u64()?))
    }

    fn f64s(&mut self, n: usize) -> Result<Vec<f64>, FormatError> {
        let nbytes = n
            .checked_mul(8)
            .ok_or_else(|| self.corrupt("array length overflows"))?;
        let b = self.bytes(nbytes)?;
        Ok(b.chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }
}

/// Reads one binary-encoded model.
pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Model, FormatError> {
    let n = r.u32()? as usize;
    let n_steps = r.u8()?;
    let mut steps = Vec::with_capacity(usize::from(n_steps));
    for _ in 0..n_steps {
        let step = match r.u8()? {
            t @ (1 | 3) => {
                let flags = r.u8()?;
                let a = if flags & 1 != 0 {
                    Some(r.f64s(n)?)
                } else {
                    None
                };
                let b = if flags & 2 != 0 {
                    Some(r.f64s(n)?)
                } else {
                    None
                };
                if t == 1 {
                    Scaler::StandardScaler { mean: a, scale: b }
                } else {
                    Scaler::RobustScaler {
                        center: a,
                        scale: b,
                    }
                }
            }
            2 => {
                let clip = match r.u8()? {
                    0 => None,
                    1 => Some((r.f64()?, r.f64()?)),
                    _ => return Err(r.corrupt("bad clip flag")),
                };
                let scale = r.f64s(n)?;
                let min = r.f64s(n)?;
                Scaler::MinMaxScaler { scale, min, clip }
            }
            t => return Err(r.corrupt(format!("unknown scaler type {t}"))),
        };
        steps.push(step);
    }
    if r.u8()? != 1 {
        return Err(r.corrupt("unknown detector type"));
    }
    let kernel = match r.u8()? {
        1 => Kernel::Rbf,
        2 => Kernel::Linear,
        3 => Kernel::Poly,
        4 => Kernel::Sigmoid,
        k => return Err(r.corrupt(format!("unknown kernel {k}"))),
    };
    let gamma = r.f64()?;
    let coef0 = r.f64()?;
    let degree = r.u32()? as i32;
    let intercept = r.f64()?;
    let n_sv = r.u32()? as usize;
    let dual_coef = r.f64s(n_sv)?;
    let support_vectors = r.f64s(
        n_sv.checked_mul(n)
            .ok_or_else(|| r.corrupt("size overflows"))?,
    )?;
    let model = Model {
        n_features: n,
        steps,
        detector: Detector::OneClassSvm(OneClassSvm {
            kernel,
            gamma,
            coef0,
            degree,
            support_vectors,
            dual_coef,
            intercept,
        }),
    };
    model.validate()?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Model {
        Model {
            n_features: 2,
            steps: vec![
                Scaler::StandardScaler {
                    mean: Some(vec![1.0, 0.1 + 0.2]),
                    scale: None,
                },
                Scaler::MinMaxScaler {
                    scale: vec![0.5, 2.0],
                    min: vec![-1.0, 1e-300],
                    clip: Some((0.0, 1.0)),
                },
                Scaler::RobustScaler {
                    center: None,
                    scale: Some(vec![3.0, f64::MIN_POSITIVE]),
                },
            ],
            detector: Detector::OneClassSvm(OneClassSvm {
                kernel: Kernel::Poly,
                gamma: 1.0 / 3.0,
                coef0: 0.25,
                degree: 3,
                support_vectors: vec![1.0, 2.0, 3.0, 4.0],
                dual_coef: vec![0.7, 0.3],
                intercept: -0.123_456_789_012_345_68,
            }),
        }
    }

    #[test]
    fn json_and_binary_round_trip_exactly() {
        let m = sample();
        assert_eq!(from_json(&to_json(&m)).unwrap(), m);
        let mut buf = Vec::new();
        encode(&m, &mut buf);
        let mut r = Reader { data: &buf, pos: 0 };
        assert_eq!(decode(&mut r).unwrap(), m);
        assert_eq!(r.pos, buf.len());
    }

    #[test]
    fn non_finite_parameters_are_refused() {
        let mut m = sample();
        let Detector::OneClassSvm(svm) = &mut m.detector;
        svm.dual_coef[1] = f64::NAN;
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("_dual_coef_[1] is NaN"), "{e}");
    }

    #[test]
    fn newer_versions_and_garbage_are_refused() {
        let doc = String::from_utf8(to_json(&sample()))
            .unwrap()
            .replace("\"version\": 1", "\"version\": 2");
        assert!(matches!(
            from_json(doc.as_bytes()),
            Err(FormatError::Version { version: 2, .. })
        ));
        assert!(matches!(from_json(b"{}"), Err(FormatError::Json(_))));
        let mut buf = Vec::new();
        encode(&sample(), &mut buf);
        for cut in 0..buf.len() {
            let mut r = Reader {
                data: &buf[..cut],
                pos: 0,
            };
            assert!(decode(&mut r).is_err());
        }
    }
}
