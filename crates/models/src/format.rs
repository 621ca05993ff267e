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

use crate::model::{
    CategoricalSplit, Estimator, ForestClassifier, ForestRegressor, GbLoss, GradientBoosting,
    HgbEncoder, HgbLink, HgbTree, HistGradientBoosting, IfRule, InvalidModel, IsolationForest,
    Kernel, LocalOutlierFactor, Metric, Model, NeighborIndex, OneClassSvm, ProbaRule, Step,
    StepForest, StepTree, Tree,
};

/// The `format` field of a `model.fsm` document.
pub const FORMAT_NAME: &str = "fleetscore-model";
/// The newest version this build reads and writes. A model of version 1's
/// shape (scalers and a OneClassSVM) is still written as version 1, byte
/// for byte as before, so older builds keep reading it.
pub const FORMAT_VERSION: u32 = 2;

/// The first four bytes of a binary encoding of version 2 (version 1
/// starts with the feature count, which is never `u32::MAX`).
const BINARY_V2: u32 = u32::MAX;

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
    #[derive(Serialize)]
    struct V1<'a> {
        n_features: usize,
        steps: &'a [Step],
        detector: &'a Estimator,
    }
    let mut out = if is_v1(model) {
        let doc = Doc {
            format: FORMAT_NAME.to_string(),
            version: 1,
            model: V1 {
                n_features: model.n_features,
                steps: &model.steps,
                detector: &model.estimator,
            },
        };
        serde_json::to_vec_pretty(&doc)
    } else {
        let doc = Doc {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            model,
        };
        serde_json::to_vec_pretty(&doc)
    }
    .expect("models contain no non-string map keys");
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

/// Whether the model has version 1's shape: the three scalers and a
/// OneClassSVM.
fn is_v1(model: &Model) -> bool {
    matches!(model.estimator, Estimator::OneClassSvm(_))
        && model.steps.iter().all(|s| {
            matches!(
                s,
                Step::StandardScaler { .. } | Step::MinMaxScaler { .. } | Step::RobustScaler { .. }
            )
        })
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
    let v1 = is_v1(model);
    if !v1 {
        out.extend_from_slice(&BINARY_V2.to_le_bytes());
        out.push(2);
    }
    out.extend_from_slice(&(model.n_features as u32).to_le_bytes());
    out.push(model.steps.len() as u8);
    for s in &model.steps {
        match s {
            Step::StandardScaler { mean: a, scale: b }
            | Step::RobustScaler {
                center: a,
                scale: b,
            } => {
                out.push(if matches!(s, Step::StandardScaler { .. }) {
                    1
                } else {
                    3
                });
                out.push(u8::from(a.is_some()) | u8::from(b.is_some()) << 1);
                for v in [a, b].into_iter().flatten() {
                    f64s(out, v);
                }
            }
            Step::MinMaxScaler { scale, min, clip } => {
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
            // Version 2's steps (types 4 and later) encode themselves.
            _ => {
                s.encode_v2(out);
            }
        }
    }
    let svm = match &model.estimator {
        Estimator::OneClassSvm(svm) => svm,
        other => return encode_estimator(other, out),
    };
    // Version 1's layout, also inside version 2 (a OneClassSVM after a
    // step version 1 does not have).
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

pub(crate) fn put_u32(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(&(v as u32).to_le_bytes());
}

pub(crate) fn put_f64s(out: &mut Vec<u8>, v: &[f64]) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_trees(out: &mut Vec<u8>, trees: &[Tree]) {
    put_u32(out, trees.len());
    for t in trees {
        put_u32(out, t.len());
        put_u32(out, t.n_values);
        for v in t.left.iter().chain(&t.right) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in &t.feature {
            out.extend_from_slice(&v.to_le_bytes());
        }
        put_f64s(out, &t.threshold);
        out.extend(t.missing_left.iter().map(|&m| u8::from(m)));
        put_f64s(out, &t.value);
    }
}

/// A one-feature forest's step functions, after its (then empty) trees: a
/// flag, then the distinct values, the source's node count and depth, and
/// per tree its float32 bounds, value indices and NaN leaf.
pub(crate) fn put_step_forest(out: &mut Vec<u8>, c: Option<&StepForest>) {
    let Some(c) = c else {
        out.push(0);
        return;
    };
    out.push(1);
    put_u32(out, c.values.len());
    put_f64s(out, &c.values);
    out.extend_from_slice(&c.nodes.to_le_bytes());
    out.extend_from_slice(&c.depth.to_le_bytes());
    put_u32(out, c.trees.len());
    for t in &c.trees {
        put_u32(out, t.upper.len());
        for u in &t.upper {
            out.extend_from_slice(&u.to_le_bytes());
        }
        for l in &t.leaf {
            out.extend_from_slice(&l.to_le_bytes());
        }
        out.extend_from_slice(&t.nan_leaf.to_le_bytes());
    }
}

/// Estimator types of binary version 2 (1 is OneClassSVM).
const IFOREST: u8 = 2;
const FOREST_REGRESSOR: u8 = 6;
const FOREST_CLASSIFIER: u8 = 7;
const GRADIENT_BOOSTING: u8 = 8;
const HIST_GRADIENT_BOOSTING: u8 = 9;
const ELLIPTIC_ENVELOPE: u8 = 4;
const SGD_ONE_CLASS_SVM: u8 = 5;
const LINEAR: u8 = 10;
const SVC: u8 = 11;
const SVR: u8 = 12;
const LOCAL_OUTLIER_FACTOR: u8 = 3;

/// Version 2's estimators, after the steps.
fn encode_estimator(e: &Estimator, out: &mut Vec<u8>) {
    match e {
        Estimator::OneClassSvm(_) => {}
        Estimator::IsolationForest(f) => {
            out.push(IFOREST);
            match f.rule {
                IfRule::Sum { denominator, guard } => {
                    out.push(1 + u8::from(guard));
                    put_f64s(out, &[denominator]);
                }
                IfRule::Mean { c } => {
                    out.push(3);
                    put_f64s(out, &[c]);
                }
            }
            put_f64s(out, &[f.offset, f.threshold]);
            out.push(u8::from(f.allow_nan));
            put_trees(out, &f.trees);
            put_step_forest(out, f.compiled.as_ref());
        }
        Estimator::ForestRegressor(f) => {
            out.push(FOREST_REGRESSOR);
            put_str(out, &f.class);
            out.push(u8::from(f.average) | u8::from(f.allow_nan) << 1);
            put_trees(out, &f.trees);
            put_step_forest(out, f.compiled.as_ref());
        }
        Estimator::ForestClassifier(f) => {
            out.push(FOREST_CLASSIFIER);
            put_str(out, &f.class);
            out.push(
                u8::from(f.average)
                    | u8::from(f.allow_nan) << 1
                    | u8::from(f.proba == ProbaRule::Normalize) << 2,
            );
            put_u32(out, f.classes.len());
            for c in &f.classes {
                put_str(out, c);
            }
            put_trees(out, &f.trees);
        }
        Estimator::GradientBoosting(g) => {
            out.push(GRADIENT_BOOSTING);
            out.push(match g.loss {
                GbLoss::Regression => 0,
                GbLoss::Binomial { sign_rule: false } => 1,
                GbLoss::Binomial { sign_rule: true } => 2,
                GbLoss::Exponential => 3,
                GbLoss::Multinomial { raw_argmax: false } => 4,
                GbLoss::Multinomial { raw_argmax: true } => 5,
            });
            put_u32(out, g.k);
            put_f64s(out, &[g.learning_rate]);
            put_f64s(out, &g.init);
            put_u32(out, g.classes.len());
            for c in &g.classes {
                put_str(out, c);
            }
            put_trees(out, &g.trees);
        }
        Estimator::LocalOutlierFactor(l) => {
            out.push(LOCAL_OUTLIER_FACTOR);
            match l.metric {
                Metric::Euclidean => out.push(1),
                Metric::Manhattan => out.push(2),
                Metric::Chebyshev => out.push(3),
                Metric::Minkowski { p } => {
                    out.push(4);
                    put_f64s(out, &[p]);
                }
            }
            put_u32(out, l.k);
            put_f64s(out, &[l.offset]);
            put_u32(out, l.lrd.len());
            put_f64s(out, &l.lrd);
            put_f64s(out, &l.k_distance);
            put_u32(out, l.fit_x.len());
            put_f64s(out, &l.fit_x);
            for i in &l.idx_array {
                out.extend_from_slice(&i.to_le_bytes());
            }
            put_u32(out, l.node_start.len());
            for (s, e) in l.node_start.iter().zip(&l.node_end) {
                out.extend_from_slice(&s.to_le_bytes());
                out.extend_from_slice(&e.to_le_bytes());
            }
            out.extend(l.node_leaf.iter().map(|&b| u8::from(b)));
            match &l.index {
                NeighborIndex::KdTree { lo, hi } => {
                    out.push(1);
                    put_u32(out, lo.len());
                    put_f64s(out, lo);
                    put_f64s(out, hi);
                }
                NeighborIndex::BallTree { centroid, radius } => {
                    out.push(2);
                    put_u32(out, centroid.len());
                    put_f64s(out, centroid);
                    put_f64s(out, radius);
                }
            }
        }
        Estimator::HistGradientBoosting(h) => {
            out.push(HIST_GRADIENT_BOOSTING);
            out.push(match h.link {
                HgbLink::Identity => 0,
                HgbLink::Log => 1,
                HgbLink::Binomial => 2,
                HgbLink::Multinomial => 3,
            });
            put_u32(out, h.k);
            put_f64s(out, &h.baseline);
            put_u32(out, h.classes.len());
            for c in &h.classes {
                put_str(out, c);
            }
            put_u32(out, h.known_categories.len());
            for k in &h.known_categories {
                put_u32(out, k.len());
                for w in k {
                    out.extend_from_slice(&w.to_le_bytes());
                }
            }
            let trees: Vec<Tree> = h.trees.iter().map(|t| t.tree.clone()).collect();
            put_trees(out, &trees);
            for t in &h.trees {
                put_u32(out, t.categorical.len());
                for c in &t.categorical {
                    out.extend_from_slice(&c.node.to_le_bytes());
                    for w in &c.left {
                        out.extend_from_slice(&w.to_le_bytes());
                    }
                }
            }
            match &h.encoder {
                None => out.push(0),
                Some(e) => {
                    out.push(1);
                    put_u32(out, e.columns.len());
                    for (c, cats) in e.columns.iter().zip(&e.categories) {
                        out.extend_from_slice(&c.to_le_bytes());
                        match cats {
                            None => out.push(0),
                            Some(cats) => {
                                out.push(1);
                                put_u32(out, cats.len());
                                put_f64s(out, cats);
                            }
                        }
                    }
                }
            }
        }
        Estimator::Svc(s) => {
            out.push(SVC);
            s.encode(out);
        }
        Estimator::Svr(s) => {
            out.push(SVR);
            s.encode(out);
        }
        Estimator::Linear(l) => {
            out.push(LINEAR);
            l.encode(out);
        }
        Estimator::SgdOneClassSvm(d) => {
            out.push(SGD_ONE_CLASS_SVM);
            d.encode(out);
        }
        Estimator::EllipticEnvelope(e) => {
            out.push(ELLIPTIC_ENVELOPE);
            e.encode(out);
        }
    }
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

    pub(crate) fn f64(&mut self) -> Result<f64, FormatError> {
        Ok(f64::from_bits(self.u64()?))
    }

    pub(crate) fn string(&mut self) -> Result<String, FormatError> {
        let n = self.u32()? as usize;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.corrupt("text is not UTF-8"))
    }

    pub(crate) fn i32s(&mut self, n: usize) -> Result<Vec<i32>, FormatError> {
        let nbytes = n
            .checked_mul(4)
            .ok_or_else(|| self.corrupt("array length overflows"))?;
        let b = self.bytes(nbytes)?;
        Ok(b.chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// What [`put_step_forest`] wrote.
    pub(crate) fn step_forest(&mut self) -> Result<Option<StepForest>, FormatError> {
        match self.u8()? {
            0 => Ok(None),
            1 => {
                let n = self.u32()? as usize;
                let values = self.f64s(n)?;
                let nodes = self.u64()?;
                let depth = self.u32()?;
                let n_trees = self.u32()? as usize;
                if n_trees > (self.data.len() - self.pos) / 6 {
                    return Err(
                        self.corrupt(format!("{n_trees} trees cannot fit in the data left"))
                    );
                }
                let mut trees = Vec::with_capacity(n_trees);
                for _ in 0..n_trees {
                    let len = self.u32()? as usize;
                    let upper = self
                        .bytes(
                            len.checked_mul(4)
                                .ok_or_else(|| self.corrupt("size overflows"))?,
                        )?
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    let leaf = self
                        .bytes(
                            len.checked_mul(2)
                                .ok_or_else(|| self.corrupt("size overflows"))?,
                        )?
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect();
                    let nan_leaf = self.u16()?;
                    trees.push(StepTree {
                        upper,
                        leaf,
                        nan_leaf,
                    });
                }
                Ok(Some(StepForest {
                    values,
                    trees,
                    nodes,
                    depth,
                }))
            }
            f => Err(self.corrupt(format!("bad compiled-forest flag {f}"))),
        }
    }

    pub(crate) fn trees(&mut self) -> Result<Vec<Tree>, FormatError> {
        let n_trees = self.u32()? as usize;
        // Each tree takes at least 8 bytes: the count cannot exceed the data.
        if n_trees > (self.data.len() - self.pos) / 8 {
            return Err(self.corrupt(format!("{n_trees} trees cannot fit in the data left")));
        }
        let mut trees = Vec::with_capacity(n_trees);
        for _ in 0..n_trees {
            let n = self.u32()? as usize;
            let n_values = self.u32()? as usize;
            let left = self.i32s(n)?;
            let right = self.i32s(n)?;
            let feature = self.i32s(n)?.into_iter().map(|f| f as u32).collect();
            let threshold = self.f64s(n)?;
            let missing_left = self.bytes(n)?.iter().map(|&b| b != 0).collect();
            let value = self.f64s(
                n.checked_mul(n_values)
                    .ok_or_else(|| self.corrupt("size overflows"))?,
            )?;
            trees.push(Tree {
                left,
                right,
                feature,
                threshold,
                missing_left,
                value,
                n_values,
            });
        }
        Ok(trees)
    }

    pub(crate) fn f64s(&mut self, n: usize) -> Result<Vec<f64>, FormatError> {
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
    let mut n = r.u32()? as usize;
    let v2 = n == BINARY_V2 as usize;
    if v2 {
        match r.u8()? {
            2 => {}
            v => {
                return Err(r.corrupt(format!(
                    "binary model version {v} is newer than this build reads; upgrade fleetscore"
                )))
            }
        }
        n = r.u32()? as usize;
    }
    let n_steps = r.u8()?;
    let mut steps = Vec::with_capacity(usize::from(n_steps));
    // The width of the rows each step receives: a step may change it.
    let mut w = n;
    for _ in 0..n_steps {
        let step = match r.u8()? {
            t @ (1 | 3) => {
                let flags = r.u8()?;
                let a = if flags & 1 != 0 {
                    Some(r.f64s(w)?)
                } else {
                    None
                };
                let b = if flags & 2 != 0 {
                    Some(r.f64s(w)?)
                } else {
                    None
                };
                if t == 1 {
                    Step::StandardScaler { mean: a, scale: b }
                } else {
                    Step::RobustScaler {
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
                let scale = r.f64s(w)?;
                let min = r.f64s(w)?;
                Step::MinMaxScaler { scale, min, clip }
            }
            t if v2 => Step::decode_v2(t, r, w)?,
            t => return Err(r.corrupt(format!("unknown scaler type {t}"))),
        };
        w = step.out_width(w);
        steps.push(step);
    }
    let kind = r.u8()?;
    if kind != 1 && !v2 {
        return Err(r.corrupt("unknown detector type"));
    }
    let model = Model {
        n_features: n,
        steps,
        estimator: decode_estimator(r, kind, w)?,
    };
    model.validate()?;
    Ok(model)
}

fn decode_svm(r: &mut Reader<'_>, n: usize) -> Result<OneClassSvm, FormatError> {
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
    Ok(OneClassSvm {
        kernel,
        gamma,
        coef0,
        degree,
        support_vectors,
        dual_coef,
        intercept,
    })
}

fn decode_estimator(r: &mut Reader<'_>, kind: u8, n: usize) -> Result<Estimator, FormatError> {
    Ok(match kind {
        1 => Estimator::OneClassSvm(decode_svm(r, n)?),
        IFOREST => {
            let rule = match r.u8()? {
                t @ (1 | 2) => IfRule::Sum {
                    denominator: r.f64()?,
                    guard: t == 2,
                },
                3 => IfRule::Mean { c: r.f64()? },
                t => return Err(r.corrupt(format!("unknown IsolationForest rule {t}"))),
            };
            let offset = r.f64()?;
            let threshold = r.f64()?;
            let allow_nan = r.u8()? != 0;
            let trees = r.trees()?;
            let compiled = r.step_forest()?;
            Estimator::IsolationForest(IsolationForest {
                trees,
                compiled,
                rule,
                offset,
                threshold,
                allow_nan,
            })
        }
        FOREST_REGRESSOR => {
            let class = r.string()?;
            let flags = r.u8()?;
            let trees = r.trees()?;
            Estimator::ForestRegressor(ForestRegressor {
                class,
                trees,
                compiled: r.step_forest()?,
                average: flags & 1 != 0,
                allow_nan: flags & 2 != 0,
            })
        }
        FOREST_CLASSIFIER => {
            let class = r.string()?;
            let flags = r.u8()?;
            let n = r.u32()? as usize;
            if n > r.data.len() - r.pos {
                return Err(r.corrupt(format!("{n} classes cannot fit in the data left")));
            }
            let classes = (0..n).map(|_| r.string()).collect::<Result<_, _>>()?;
            Estimator::ForestClassifier(ForestClassifier {
                class,
                trees: r.trees()?,
                average: flags & 1 != 0,
                allow_nan: flags & 2 != 0,
                proba: if flags & 4 != 0 {
                    ProbaRule::Normalize
                } else {
                    ProbaRule::Stored
                },
                classes,
            })
        }
        GRADIENT_BOOSTING => {
            let loss = match r.u8()? {
                0 => GbLoss::Regression,
                1 => GbLoss::Binomial { sign_rule: false },
                2 => GbLoss::Binomial { sign_rule: true },
                3 => GbLoss::Exponential,
                4 => GbLoss::Multinomial { raw_argmax: false },
                5 => GbLoss::Multinomial { raw_argmax: true },
                l => return Err(r.corrupt(format!("unknown gradient boosting loss {l}"))),
            };
            let k = r.u32()? as usize;
            let learning_rate = r.f64()?;
            let init = r.f64s(k)?;
            let n = r.u32()? as usize;
            if n > r.data.len() - r.pos {
                return Err(r.corrupt(format!("{n} classes cannot fit in the data left")));
            }
            let classes = (0..n).map(|_| r.string()).collect::<Result<_, _>>()?;
            Estimator::GradientBoosting(GradientBoosting {
                trees: r.trees()?,
                k,
                learning_rate,
                init,
                loss,
                classes,
            })
        }
        LOCAL_OUTLIER_FACTOR => {
            let metric = match r.u8()? {
                1 => Metric::Euclidean,
                2 => Metric::Manhattan,
                3 => Metric::Chebyshev,
                4 => Metric::Minkowski { p: r.f64()? },
                m => return Err(r.corrupt(format!("unknown metric {m}"))),
            };
            let k = r.u32()? as usize;
            let offset = r.f64()?;
            let n = r.u32()? as usize;
            let lrd = r.f64s(n)?;
            let k_distance = r.f64s(n)?;
            let len = r.u32()? as usize;
            let fit_x = r.f64s(len)?;
            let idx_array = r.i32s(n)?.into_iter().map(|i| i as u32).collect();
            let nodes = r.u32()? as usize;
            let se = r.i32s(
                nodes
                    .checked_mul(2)
                    .ok_or_else(|| r.corrupt("size overflows"))?,
            )?;
            let node_start = se.iter().step_by(2).map(|&x| x as u32).collect();
            let node_end = se.iter().skip(1).step_by(2).map(|&x| x as u32).collect();
            let node_leaf = r.bytes(nodes)?.iter().map(|&b| b != 0).collect();
            let index = match r.u8()? {
                1 => {
                    let len = r.u32()? as usize;
                    NeighborIndex::KdTree {
                        lo: r.f64s(len)?,
                        hi: r.f64s(len)?,
                    }
                }
                2 => {
                    let len = r.u32()? as usize;
                    NeighborIndex::BallTree {
                        centroid: r.f64s(len)?,
                        radius: r.f64s(nodes)?,
                    }
                }
                t => return Err(r.corrupt(format!("unknown neighbour index {t}"))),
            };
            Estimator::LocalOutlierFactor(LocalOutlierFactor {
                fit_x,
                k,
                metric,
                index,
                idx_array,
                node_start,
                node_end,
                node_leaf,
                k_distance,
                lrd,
                offset,
            })
        }
        HIST_GRADIENT_BOOSTING => {
            let link = match r.u8()? {
                0 => HgbLink::Identity,
                1 => HgbLink::Log,
                2 => HgbLink::Binomial,
                3 => HgbLink::Multinomial,
                l => return Err(r.corrupt(format!("unknown link {l}"))),
            };
            let k = r.u32()? as usize;
            let baseline = r.f64s(k)?;
            let n = r.u32()? as usize;
            if n > r.data.len() - r.pos {
                return Err(r.corrupt(format!("{n} classes cannot fit in the data left")));
            }
            let classes = (0..n).map(|_| r.string()).collect::<Result<_, _>>()?;
            let n_known = r.u32()? as usize;
            if n_known > (r.data.len() - r.pos) / 4 {
                return Err(r.corrupt(format!("{n_known} features cannot fit in the data left")));
            }
            let mut known_categories = Vec::with_capacity(n_known);
            for _ in 0..n_known {
                let len = r.u32()? as usize;
                let words = r.i32s(len)?;
                known_categories.push(words.into_iter().map(|w| w as u32).collect());
            }
            let trees = r.trees()?;
            let mut hgb_trees = Vec::with_capacity(trees.len());
            for tree in trees {
                let n_cat = r.u32()? as usize;
                if n_cat > (r.data.len() - r.pos) / 36 {
                    return Err(r.corrupt(format!(
                        "{n_cat} categorical splits cannot fit in the data left"
                    )));
                }
                let mut categorical = Vec::with_capacity(n_cat);
                for _ in 0..n_cat {
                    let node = r.u32()?;
                    let w = r.i32s(8)?;
                    let mut left = [0u32; 8];
                    for (l, w) in left.iter_mut().zip(w) {
                        *l = w as u32;
                    }
                    categorical.push(CategoricalSplit { node, left });
                }
                hgb_trees.push(HgbTree { tree, categorical });
            }
            let encoder = match r.u8()? {
                0 => None,
                1 => {
                    let n = r.u32()? as usize;
                    if n > (r.data.len() - r.pos) / 8 {
                        return Err(r.corrupt(format!("{n} columns cannot fit in the data left")));
                    }
                    let (mut columns, mut categories) =
                        (Vec::with_capacity(n), Vec::with_capacity(n));
                    for _ in 0..n {
                        columns.push(r.u32()?);
                        categories.push(match r.u8()? {
                            0 => None,
                            _ => {
                                let len = r.u32()? as usize;
                                Some(r.f64s(len)?)
                            }
                        });
                    }
                    Some(HgbEncoder {
                        columns,
                        categories,
                    })
                }
                f => return Err(r.corrupt(format!("bad encoder flag {f}"))),
            };
            Estimator::HistGradientBoosting(HistGradientBoosting {
                trees: hgb_trees,
                k,
                baseline,
                link,
                classes,
                known_categories,
                encoder,
            })
        }
        SVC => Estimator::Svc(crate::model::Svc::decode(r, n)?),
        SVR => Estimator::Svr(crate::model::Svr::decode(r, n)?),
        LINEAR => Estimator::Linear(crate::model::LinearModel::decode(r)?),
        SGD_ONE_CLASS_SVM => Estimator::SgdOneClassSvm(crate::model::SgdOneClassSvm::decode(r)?),
        ELLIPTIC_ENVELOPE => {
            Estimator::EllipticEnvelope(crate::model::EllipticEnvelope::decode(r)?)
        }
        t => return Err(r.corrupt(format!("unknown estimator type {t}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Model {
        Model {
            n_features: 2,
            steps: vec![
                Step::StandardScaler {
                    mean: Some(vec![1.0, 0.1 + 0.2]),
                    scale: None,
                },
                Step::MinMaxScaler {
                    scale: vec![0.5, 2.0],
                    min: vec![-1.0, 1e-300],
                    clip: Some((0.0, 1.0)),
                },
                Step::RobustScaler {
                    center: None,
                    scale: Some(vec![3.0, f64::MIN_POSITIVE]),
                },
            ],
            estimator: Estimator::OneClassSvm(OneClassSvm {
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
        let Estimator::OneClassSvm(svm) = &mut m.estimator else {
            unreachable!()
        };
        svm.dual_coef[1] = f64::NAN;
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("_dual_coef_[1] is NaN"), "{e}");
    }

    #[test]
    fn newer_versions_and_garbage_are_refused() {
        let doc = String::from_utf8(to_json(&sample()))
            .unwrap()
            .replace("\"version\": 1", "\"version\": 3");
        assert!(matches!(
            from_json(doc.as_bytes()),
            Err(FormatError::Version { version: 3, .. })
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
