//! Linear models and the two detectors that are one product away from
//! them: `SGDOneClassSVM` (`X @ coef_ - offset_`) and `EllipticEnvelope`
//! (a Mahalanobis distance through `precision_`).
//!
//! # Regressors and classifiers
//!
//! `LinearRegression`, `Ridge`, `Lasso`, `ElasticNet`, `SGDRegressor` and
//! `LinearSVR` predict `X @ coef_ + intercept_`; `LogisticRegression`,
//! `SGDClassifier` and `LinearSVC` compute one such decision per output
//! (`X @ coef_.T + intercept_`, `_base.py` `LinearClassifierMixin`) and
//! predict `classes_[d > 0]` from a single output (strictly positive: a
//! decision of exactly 0.0 is the first class) or the first argmax of
//! several. What a classifier's score holds depends on whether
//! scikit-learn gives it a `predict_proba` ([`LinearOutput`]).
//!
//! # Order of operations
//!
//! Each decision is `dot + intercept`. numpy hands `X @ coef_` to BLAS,
//! so the dot product is summed in the order of the BLAS kernel, and
//! fleetscore follows the one numpy's wheels ship for x86-64 CPUs with
//! AVX2 (OpenBLAS, the Haswell kernels also used on Skylake-X and Zen;
//! checked bit for bit against numpy 2.4.6 with OpenBLAS 0.3.31):
//!
//! * one output (`coef_` of one row: regressors, binary classifiers,
//!   `SGDOneClassSVM`) is `dgemv_t` ([`dot_gemv`]): the features in
//!   blocks of four, each lane a fused multiply-add chain, the lanes
//!   added as `(l0 + l2) + (l1 + l3)`, then the last one to three
//!   features as the kernel's compiled tail adds them;
//! * several outputs (multiclass) are `dgemm` ([`dot_gemm`]): one fused
//!   multiply-add chain in feature order.
//!
//! Both start from 0.0. Another BLAS (or another CPU family, or an input
//! array in Fortran order) sums in another order, and scikit-learn's
//! output then differs from this in the last bits; the contract (1e-9)
//! holds whatever the order. For one feature every order gives the same
//! single product.
//!
//! `EllipticEnvelope` follows scipy's `cdist(metric='mahalanobis')`
//! (1.17): `u = x - location_`, `w_i = u · precision_[i]`, `s = u · w`,
//! `dist = sqrt(s)`, and scikit-learn squares that again (`dist ** 2` is
//! not `s`). scipy's compiled loop sums each dot product in two lanes,
//! the even and the odd terms, adds the lanes, then the last term when
//! the length is odd ([`dot2`]); for up to three features that is the
//! plain sequential sum.
//!
//! # Refused rows
//!
//! scikit-learn refuses NaN and infinite inputs to all of these
//! (`validate_data` with `ensure_all_finite=True`). Such a row scores
//! NaN; a classifier gives it no label, a detector calls it an anomaly.

use serde::{Deserialize, Serialize};

use super::forest::{argmax, max};
use super::tree::numpy_sum;
use super::{check_finite, check_width, InvalidModel, Kind, NO_LABEL};
use crate::format::{put_f64s, put_str, put_u32, FormatError, Reader};

/// How a linear model's decisions become its score (and whether it is a
/// regressor). The label of a classifier is always the decision rule's
/// (`d > 0` for one output, the first argmax for several), whatever its
/// probabilities say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinearOutput {
    /// A regressor: the score is the prediction `X @ coef_ + intercept_`.
    Regression,
    /// A classifier without `predict_proba` (`LinearSVC`, `SGDClassifier`
    /// with a loss other than `log_loss`/`modified_huber`): the score is
    /// the decision of the predicted class. With one output that is the
    /// decision itself (scikit-learn's one-column `decision_function`),
    /// negative when the first class is predicted; with several, the
    /// largest decision.
    Decision,
    /// `_predict_proba_lr` (one-vs-rest logistic): `p = expit(d)`; one
    /// output gives `[1 - p, p]`, several are divided by their row sum.
    /// `LogisticRegression` with two classes, or before 1.8 with
    /// `multi_class='ovr'`; `SGDClassifier` with `loss='log_loss'`
    /// (`'log'` before 1.3).
    Logistic {
        /// A row whose `expit`s are all 0 (every decision below about
        /// -745) gets uniform probabilities (scikit-learn 1.9); before,
        /// it divides 0 by 0 and scores NaN.
        zero_sum_uniform: bool,
    },
    /// `softmax` of the decisions (`LogisticRegression` with three or
    /// more classes from 1.8, or `multi_class='multinomial'` before). A
    /// binary multinomial model has one output `d` and takes
    /// `softmax([-d, d])`.
    Softmax,
    /// `SGDClassifier(loss='modified_huber')`: `p = (clip(d, -1, 1) + 1)
    /// / 2`; one output gives `[1 - p, p]`, several are divided by their
    /// row sum (all ones when that sum is 0).
    ModifiedHuber,
}

impl LinearOutput {
    fn name(self) -> &'static str {
        match self {
            LinearOutput::Regression => "regression",
            LinearOutput::Decision => "decision",
            LinearOutput::Logistic { .. } => "logistic",
            LinearOutput::Softmax => "softmax",
            LinearOutput::ModifiedHuber => "modified_huber",
        }
    }

    fn code(self) -> u8 {
        match self {
            LinearOutput::Regression => 0,
            LinearOutput::Decision => 1,
            LinearOutput::Logistic {
                zero_sum_uniform: false,
            } => 2,
            LinearOutput::Logistic {
                zero_sum_uniform: true,
            } => 5,
            LinearOutput::Softmax => 3,
            LinearOutput::ModifiedHuber => 4,
        }
    }

    fn from_code(c: u8) -> Option<LinearOutput> {
        Some(match c {
            0 => LinearOutput::Regression,
            1 => LinearOutput::Decision,
            2 => LinearOutput::Logistic {
                zero_sum_uniform: false,
            },
            5 => LinearOutput::Logistic {
                zero_sum_uniform: true,
            },
            3 => LinearOutput::Softmax,
            4 => LinearOutput::ModifiedHuber,
            _ => return None,
        })
    }
}

const LOGISTIC: &[LinearOutput] = &[
    LinearOutput::Logistic {
        zero_sum_uniform: false,
    },
    LinearOutput::Logistic {
        zero_sum_uniform: true,
    },
    LinearOutput::Softmax,
];
const SGD: &[LinearOutput] = &[
    LinearOutput::Decision,
    LinearOutput::Logistic {
        zero_sum_uniform: false,
    },
    LinearOutput::Logistic {
        zero_sum_uniform: true,
    },
    LinearOutput::ModifiedHuber,
];

/// The linear estimators fleetscore reads, whether each is a classifier,
/// and the outputs its `fit` can leave.
const CLASSES: [(&str, bool, &[LinearOutput]); 9] = {
    use LinearOutput::*;
    [
        ("LinearRegression", false, &[Regression]),
        ("Ridge", false, &[Regression]),
        ("Lasso", false, &[Regression]),
        ("ElasticNet", false, &[Regression]),
        ("SGDRegressor", false, &[Regression]),
        ("LinearSVR", false, &[Regression]),
        ("LogisticRegression", true, LOGISTIC),
        ("SGDClassifier", true, SGD),
        ("LinearSVC", true, &[Decision]),
    ]
};

/// A fitted linear regressor or classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearModel {
    /// scikit-learn's class name, e.g. `LogisticRegression`.
    pub class: String,
    /// `coef_`, one row of `n_features` values per output, row-major.
    pub coef: Vec<f64>,
    /// `intercept_`, one value per output (0.0 where `fit_intercept=False`
    /// left a scalar 0).
    pub intercept: Vec<f64>,
    /// How decisions become the score.
    pub output: LinearOutput,
    /// `str(c)` for each of `classes_` (classifiers; empty for regressors).
    pub classes: Vec<String>,
}

/// The entry of [`CLASSES`] for a class name.
fn entry(class: &str) -> Option<(&'static str, bool, &'static [LinearOutput])> {
    CLASSES.iter().copied().find(|(n, _, _)| *n == class)
}

impl LinearModel {
    /// Number of outputs: 1 for a regressor or a binary classifier, one
    /// per class otherwise.
    pub fn n_outputs(&self) -> usize {
        self.intercept.len()
    }

    /// What it predicts.
    pub fn kind(&self) -> Kind {
        if self.output == LinearOutput::Regression {
            Kind::Regressor
        } else {
            Kind::Classifier
        }
    }

    /// A short description, e.g. `LogisticRegression(3 features, 3
    /// classes, softmax)`.
    pub fn describe(&self) -> String {
        let n = self.coef.len().checked_div(self.n_outputs()).unwrap_or(0);
        let features = format!("{n} feature{}", if n == 1 { "" } else { "s" });
        if self.classes.is_empty() {
            format!("{}({features})", self.class)
        } else {
            format!(
                "{}({features}, {} classes, {})",
                self.class,
                self.classes.len(),
                self.output.name()
            )
        }
    }

    /// Checks the model for rows of `n` features: a known class with an
    /// output its `fit` gives, one coefficient row of `n` finite values
    /// per output, and for a classifier one output with two classes or
    /// one output per class.
    pub fn validate(&self, n: usize) -> Result<(), InvalidModel> {
        let Some((est, classifier, outputs)) = entry(&self.class) else {
            return Err(InvalidModel::new(
                "linear model",
                "class",
                format!(
                    "is {:?}, not a linear model fleetscore reads (LinearRegression, Ridge, Lasso, ElasticNet, SGDRegressor, LinearSVR, LogisticRegression, SGDClassifier, LinearSVC)",
                    self.class
                ),
            ));
        };
        if !outputs.contains(&self.output) {
            return Err(InvalidModel::new(
                est,
                "output",
                format!("is {}, which {est} never gives", self.output.name()),
            ));
        }
        let k = self.n_outputs();
        if k == 0 {
            return Err(InvalidModel::new(est, "intercept_", "is empty"));
        }
        if k.checked_mul(n) != Some(self.coef.len()) {
            return Err(InvalidModel::new(
                est,
                "coef_",
                format!(
                    "has {} values, but {k} output(s) of {n} features need {}",
                    self.coef.len(),
                    k.saturating_mul(n)
                ),
            ));
        }
        check_finite(est, "coef_", &self.coef)?;
        check_finite(est, "intercept_", &self.intercept)?;
        if !classifier {
            if k != 1 {
                return Err(InvalidModel::new(
                    est,
                    "coef_",
                    format!("has {k} targets; multi-target models are not supported"),
                ));
            }
            if !self.classes.is_empty() {
                return Err(InvalidModel::new(
                    est,
                    "classes_",
                    "is set, but a regressor has no classes",
                ));
            }
            return Ok(());
        }
        let c = self.classes.len();
        if c < 2 {
            return Err(InvalidModel::new(
                est,
                "classes_",
                format!("has {c} classes; a fitted classifier has at least 2"),
            ));
        }
        if !(k == c || (k == 1 && c == 2)) {
            return Err(InvalidModel::new(
                est,
                "coef_",
                format!(
                    "has {k} rows for {c} classes; a classifier has one row per class, or one for two classes"
                ),
            ));
        }
        Ok(())
    }

    /// Scores and labels of rows of `n` features (see [`LinearOutput`]).
    pub fn evaluate(&self, xs: &[f64], n: usize, score: &mut [f64], label: &mut [u32]) {
        let k = self.n_outputs();
        let mut d = vec![0.0; k];
        let mut p = vec![0.0; k.max(2)];
        for ((x, s), l) in xs
            .chunks_exact(n)
            .zip(score.iter_mut())
            .zip(label.iter_mut())
        {
            if x.iter().any(|v| !v.is_finite()) {
                *s = f64::NAN;
                *l = NO_LABEL;
                continue;
            }
            if k == 1 {
                d[0] = dot_gemv(x, &self.coef) + self.intercept[0];
            } else {
                for ((d, c), b) in d
                    .iter_mut()
                    .zip(self.coef.chunks_exact(n))
                    .zip(&self.intercept)
                {
                    *d = dot_gemm(x, c) + b;
                }
            }
            if self.output == LinearOutput::Regression {
                *s = d[0];
                *l = NO_LABEL;
                continue;
            }
            let predicted = if k == 1 {
                usize::from(d[0] > 0.0)
            } else {
                argmax(&d)
            };
            *l = predicted as u32;
            *s = match self.output {
                LinearOutput::Regression | LinearOutput::Decision => {
                    if k == 1 {
                        d[0]
                    } else {
                        d[predicted]
                    }
                }
                LinearOutput::Logistic { zero_sum_uniform } => {
                    if k == 1 {
                        let p1 = expit(d[0]);
                        max(&[1.0 - p1, p1])
                    } else {
                        for (p, d) in p.iter_mut().zip(&d) {
                            *p = expit(*d);
                        }
                        normalize_max(&mut p[..k], zero_sum_uniform)
                    }
                }
                LinearOutput::ModifiedHuber => {
                    if k == 1 {
                        let p1 = (d[0].clamp(-1.0, 1.0) + 1.0) / 2.0;
                        max(&[1.0 - p1, p1])
                    } else {
                        for (p, d) in p.iter_mut().zip(&d) {
                            *p = (d.clamp(-1.0, 1.0) + 1.0) / 2.0;
                        }
                        normalize_max(&mut p[..k], true)
                    }
                }
                LinearOutput::Softmax => {
                    if k == 1 {
                        p[0] = -d[0];
                        p[1] = d[0];
                        softmax_max(&mut p[..2])
                    } else {
                        p[..k].copy_from_slice(&d);
                        softmax_max(&mut p[..k])
                    }
                }
            };
        }
    }

    /// Appends the binary encoding (after the estimator type byte).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.class);
        out.push(self.output.code());
        put_u32(out, self.n_outputs());
        put_u32(
            out,
            self.coef.len().checked_div(self.n_outputs()).unwrap_or(0),
        );
        put_f64s(out, &self.intercept);
        put_f64s(out, &self.coef);
        put_u32(out, self.classes.len());
        for c in &self.classes {
            put_str(out, c);
        }
    }

    /// Reads what [`LinearModel::encode`] wrote.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<LinearModel, FormatError> {
        let class = r.string()?;
        let output = r.u8()?;
        let output = LinearOutput::from_code(output)
            .ok_or_else(|| r.corrupt(format!("unknown linear model output {output}")))?;
        let k = r.u32()? as usize;
        let width = r.u32()? as usize;
        let intercept = r.f64s(k)?;
        let coef = r.f64s(
            k.checked_mul(width)
                .ok_or_else(|| r.corrupt("size overflows"))?,
        )?;
        let classes = strings(r)?;
        Ok(LinearModel {
            class,
            coef,
            intercept,
            output,
            classes,
        })
    }
}

/// `n` strings, each a u32 length and its bytes; the count is checked
/// against the data left before allocating.
fn strings(r: &mut Reader<'_>) -> Result<Vec<String>, FormatError> {
    let n = r.u32()? as usize;
    if n > (r.data.len() - r.pos) / 4 {
        return Err(r.corrupt(format!("{n} classes cannot fit in the data left")));
    }
    (0..n).map(|_| r.string()).collect()
}

/// OpenBLAS's block of `dgemv_t`: at most this many features are summed
/// before the partial result is added to the output.
const GEMV_BLOCK: usize = 2048;

/// numpy's `X @ w` for one row `x` and one vector `w`, in the order of
/// OpenBLAS's `dgemv_t` (Haswell kernel): in blocks of up to 2048 whole
/// groups of four, four fused multiply-add lanes from 0.0 added as
/// `(l0 + l2) + (l1 + l3)` and added to the output; then the last `len %
/// 4` products, as the compiled C tail contracts them (`y += a0*x0`
/// fused; `y += a0*x0 + a1*x1` as `y + fma(a0, x0, a1*x1)`; three terms
/// as `y + fma(a2, x2, fma(a0, x0, a1*x1))`).
#[inline]
pub(crate) fn dot_gemv(x: &[f64], w: &[f64]) -> f64 {
    let m1 = x.len() & !3;
    let mut y = 0.0;
    for (xb, wb) in x[..m1].chunks(GEMV_BLOCK).zip(w[..m1].chunks(GEMV_BLOCK)) {
        let mut l = [0.0f64; 4];
        for (x4, w4) in xb.chunks_exact(4).zip(wb.chunks_exact(4)) {
            for i in 0..4 {
                l[i] = x4[i].mul_add(w4[i], l[i]);
            }
        }
        y += (l[0] + l[2]) + (l[1] + l[3]);
    }
    match (&x[m1..], &w[m1..]) {
        ([a0], [b0]) => a0.mul_add(*b0, y),
        ([a0, a1], [b0, b1]) => y + a0.mul_add(*b0, a1 * b1),
        ([a0, a1, a2], [b0, b1, b2]) => y + a2.mul_add(*b2, a0.mul_add(*b0, a1 * b1)),
        _ => y,
    }
}

/// numpy's `X @ W.T` (several outputs) for one row and one row of `W`, in
/// the order of OpenBLAS's `dgemm`: one fused multiply-add chain from 0.0
/// in feature order.
#[inline]
pub(crate) fn dot_gemm(x: &[f64], w: &[f64]) -> f64 {
    let mut s = 0.0;
    for (x, w) in x.iter().zip(w) {
        s = x.mul_add(*w, s);
    }
    s
}

/// scipy's Mahalanobis dot product: the even-indexed and odd-indexed
/// products summed in two lanes from 0.0, the lanes added, then the
/// last product when the length is odd. For up to 3 terms this is the
/// sequential sum.
#[inline]
pub(crate) fn dot2(a: &[f64], b: &[f64]) -> f64 {
    let (mut even, mut odd) = (0.0, 0.0);
    let mut pairs_a = a.chunks_exact(2);
    let mut pairs_b = b.chunks_exact(2);
    for (pa, pb) in (&mut pairs_a).zip(&mut pairs_b) {
        even += pa[0] * pb[0];
        odd += pa[1] * pb[1];
    }
    let mut s = even + odd;
    if let ([ta], [tb]) = (pairs_a.remainder(), pairs_b.remainder()) {
        s += ta * tb;
    }
    s
}

/// scipy's `expit`: `1 / (1 + exp(-x))`, with the C library's `exp`.
#[inline]
fn expit(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Divides `p` by its numpy row sum and returns the largest. A sum of 0
/// makes every value 1 / len when `zero_uniform` (`modified_huber`, and
/// `_predict_proba_lr` from 1.9), else 0 / 0 = NaN.
fn normalize_max(p: &mut [f64], zero_uniform: bool) -> f64 {
    let mut sum = numpy_sum(p);
    if zero_uniform && sum == 0.0 {
        p.fill(1.0);
        sum = p.len() as f64;
    }
    for v in p.iter_mut() {
        *v /= sum;
    }
    max(p)
}

/// `sklearn.utils.extmath.softmax` of one row (subtract its max, `exp`,
/// divide by the numpy sum), returning the largest probability.
fn softmax_max(p: &mut [f64]) -> f64 {
    let m = max(p);
    for v in p.iter_mut() {
        *v = (*v - m).exp();
    }
    let sum = numpy_sum(p);
    for v in p.iter_mut() {
        *v /= sum;
    }
    max(p)
}

/// A fitted `sklearn.linear_model.SGDOneClassSVM`:
/// `decision_function = X @ coef_ - offset_`, an anomaly where the
/// decision is negative (`predict` says +1 where `decision >= 0`, so a
/// decision of exactly 0.0 is normal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdOneClassSvm {
    /// `coef_`, one value per feature.
    pub coef: Vec<f64>,
    /// `offset_[0]`.
    pub offset: f64,
}

impl SgdOneClassSvm {
    const EST: &'static str = "SGDOneClassSVM";

    /// Checks the model for rows of `n` features.
    pub fn validate(&self, n: usize) -> Result<(), InvalidModel> {
        check_width(Self::EST, "coef_", &self.coef, n)?;
        check_finite(Self::EST, "coef_", &self.coef)?;
        check_finite(Self::EST, "offset_", &[self.offset])
    }

    /// Decisions and labels (1 = anomaly) of rows of `n` features;
    /// returns the number of anomalies.
    pub fn evaluate(&self, xs: &[f64], n: usize, score: &mut [f64], label: &mut [u32]) -> usize {
        for (x, s) in xs.chunks_exact(n).zip(score.iter_mut()) {
            *s = if x.iter().all(|v| v.is_finite()) {
                dot_gemv(x, &self.coef) - self.offset
            } else {
                f64::NAN
            };
        }
        label_negative(score, label)
    }

    /// Appends the binary encoding (after the estimator type byte).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.coef.len());
        put_f64s(out, &self.coef);
        put_f64s(out, &[self.offset]);
    }

    /// Reads what [`SgdOneClassSvm::encode`] wrote.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<SgdOneClassSvm, FormatError> {
        let n = r.u32()? as usize;
        let coef = r.f64s(n)?;
        let offset = r.f64()?;
        Ok(SgdOneClassSvm { coef, offset })
    }
}

/// Labels 1 (anomaly) where the decision is below 0 or NaN (a refused
/// row), as IsolationForest, EllipticEnvelope and SGDOneClassSVM call
/// `decision >= 0` normal; returns the number of anomalies.
fn label_negative(score: &[f64], label: &mut [u32]) -> usize {
    let mut anomalies = 0;
    for (s, l) in score.iter().zip(label.iter_mut()) {
        let a = *s < 0.0 || s.is_nan();
        *l = u32::from(a);
        anomalies += usize::from(a);
    }
    anomalies
}

/// A fitted `sklearn.covariance.EllipticEnvelope`:
/// `decision_function = -mahalanobis(x)**2 - offset_` with the distance
/// through the stored `precision_` (see the [module docs](self) for the
/// order of operations); an anomaly where the decision is negative.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EllipticEnvelope {
    /// `location_`, one value per feature.
    pub location: Vec<f64>,
    /// `precision_`, `n_features x n_features`, row-major.
    pub precision: Vec<f64>,
    /// `offset_`.
    pub offset: f64,
}

impl EllipticEnvelope {
    const EST: &'static str = "EllipticEnvelope";

    /// Checks the model for rows of `n` features.
    pub fn validate(&self, n: usize) -> Result<(), InvalidModel> {
        check_width(Self::EST, "location_", &self.location, n)?;
        if n.checked_mul(n) != Some(self.precision.len()) {
            return Err(InvalidModel::new(
                Self::EST,
                "precision_",
                format!(
                    "has {} values, but {n} features need an {n} x {n} matrix",
                    self.precision.len()
                ),
            ));
        }
        check_finite(Self::EST, "location_", &self.location)?;
        check_finite(Self::EST, "precision_", &self.precision)?;
        check_finite(Self::EST, "offset_", &[self.offset])
    }

    /// The squared Mahalanobis distance of one row as scikit-learn gives
    /// it: scipy's distance, squared.
    #[inline]
    pub fn mahalanobis(&self, x: &[f64], u: &mut [f64], w: &mut [f64]) -> f64 {
        let n = self.location.len();
        for ((u, x), l) in u.iter_mut().zip(x).zip(&self.location) {
            *u = x - l;
        }
        for (w, row) in w.iter_mut().zip(self.precision.chunks_exact(n)) {
            *w = dot2(u, row);
        }
        let dist = dot2(u, w).sqrt();
        dist * dist
    }

    /// Decisions and labels (1 = anomaly) of rows of `n` features;
    /// returns the number of anomalies.
    pub fn evaluate(&self, xs: &[f64], n: usize, score: &mut [f64], label: &mut [u32]) -> usize {
        let (mut u, mut w) = (vec![0.0; n], vec![0.0; n]);
        for (x, s) in xs.chunks_exact(n).zip(score.iter_mut()) {
            *s = if x.iter().all(|v| v.is_finite()) {
                -self.mahalanobis(x, &mut u, &mut w) - self.offset
            } else {
                f64::NAN
            };
        }
        label_negative(score, label)
    }

    /// Appends the binary encoding (after the estimator type byte).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.location.len());
        put_f64s(out, &self.location);
        put_f64s(out, &self.precision);
        put_f64s(out, &[self.offset]);
    }

    /// Reads what [`EllipticEnvelope::encode`] wrote.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<EllipticEnvelope, FormatError> {
        let n = r.u32()? as usize;
        let location = r.f64s(n)?;
        let precision = r.f64s(
            n.checked_mul(n)
                .ok_or_else(|| r.corrupt("size overflows"))?,
        )?;
        let offset = r.f64()?;
        Ok(EllipticEnvelope {
            location,
            precision,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Estimator, Model};

    fn logistic(k: usize, classes: &[&str], output: LinearOutput) -> LinearModel {
        LinearModel {
            class: "LogisticRegression".into(),
            coef: (0..k * 2).map(|i| 0.5 + i as f64).collect(),
            intercept: (0..k).map(|i| -(i as f64)).collect(),
            output,
            classes: classes.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn model(estimator: Estimator, n: usize) -> Model {
        Model {
            n_features: n,
            steps: Vec::new(),
            estimator,
        }
    }

    fn eval(m: &Model, rows: &[f64]) -> (Vec<f64>, Vec<u32>) {
        let n = rows.len() / m.n_features;
        let (mut s, mut l) = (vec![0.0; n], vec![0; n]);
        m.evaluate_into(rows, m.n_features, &mut s, &mut l).unwrap();
        (s, l)
    }

    #[test]
    fn dot2_is_scipys_two_lane_order() {
        // Up to three terms: the sequential sum.
        assert_eq!(dot2(&[1e16, 1.0, -1e16], &[1.0; 3]), 0.0);
        // Four: (t0 + t2) + (t1 + t3), not ((t0 + t1) + t2) + t3.
        let a = [1e16, 1.0, -1e16, 1.0];
        assert_eq!(dot2(&a, &[1.0; 4]), 2.0);
        // Five: the odd term after the lanes.
        assert_eq!(dot2(&[1.0, 1e16, 1.0, -1e16, 1.0], &[1.0; 5]), 3.0);
    }

    #[test]
    fn dots_follow_openblas_order() {
        // dgemv_t: lanes (1e16 + -1e16) + (1 + 1), then the fifth fused.
        let a = [1e16, 1.0, -1e16, 1.0, 1.0];
        assert_eq!(dot_gemv(&a, &[1.0; 5]), 3.0);
        // A two-term tail is y + fma(a0, b0, a1 * b1): the exact product
        // (1 + 2^-30)^2 = 1 + 2^-29 + 2^-60 keeps its last term.
        let e = 1.0 + (-30f64).exp2();
        let (x, w) = ([e, -1.0], [e, 1.0 + (-29f64).exp2()]);
        assert_eq!(dot_gemv(&x, &w), (-60f64).exp2());
        // dgemm: fma(a1, b1, fma(a0, b0, 0)) rounds a0 * b0 first.
        assert_eq!(dot_gemm(&x, &w), 0.0);
        // One feature: the product in every order.
        assert_eq!(dot_gemv(&[0.1], &[3.0]), 0.1 * 3.0);
        assert_eq!(dot_gemm(&[0.1], &[3.0]), 0.1 * 3.0);
        // Past one block of 2048 the partial sums are added in turn.
        let x = vec![1.0; 2 * GEMV_BLOCK + 6];
        assert_eq!(dot_gemv(&x, &x), (2 * GEMV_BLOCK + 6) as f64);
    }

    #[test]
    fn logistic_zero_sum_rows_by_release() {
        // Three outputs whose decisions are all below -745: expit is 0.
        let m = |zero_sum_uniform| {
            let mut m = logistic(
                3,
                &["x", "y", "z"],
                LinearOutput::Logistic { zero_sum_uniform },
            );
            m.intercept = vec![-800.0, -900.0, -1000.0];
            model(Estimator::Linear(m), 2)
        };
        let (s, l) = eval(&m(true), &[0.0, 0.0]);
        assert_eq!((s[0], l[0]), (1.0 / 3.0, 0));
        let (s, l) = eval(&m(false), &[0.0, 0.0]);
        assert!(s[0].is_nan());
        assert_eq!(l[0], 0);
    }

    #[test]
    fn binary_prediction_is_strictly_positive_decision() {
        // One feature, coef 1, intercept 0: x = 0 decides exactly 0.0,
        // the first class (classes_[0.0 > 0]).
        let m = model(
            Estimator::Linear(LinearModel {
                class: "LinearSVC".into(),
                coef: vec![1.0],
                intercept: vec![0.0],
                output: LinearOutput::Decision,
                classes: vec!["a".into(), "b".into()],
            }),
            1,
        );
        m.validate().unwrap();
        let (s, l) = eval(&m, &[0.0, 2.0, -3.0]);
        assert_eq!(l, [0, 1, 0]);
        assert_eq!(s, [0.0, 2.0, -3.0]);
    }

    #[test]
    fn probabilities_follow_each_rule() {
        let x = [0.3, -0.2];
        // Binary logistic: max(1 - expit(d), expit(d)).
        let m = logistic(
            1,
            &["0", "1"],
            LinearOutput::Logistic {
                zero_sum_uniform: true,
            },
        );
        let d: f64 = 0.3 * 0.5 + -0.2 * 1.5;
        let (s, l) = eval(&model(Estimator::Linear(m), 2), &x);
        let p1 = 1.0 / (1.0 + (-d).exp());
        assert_eq!(s[0], (1.0 - p1).max(p1));
        assert_eq!(l[0], u32::from(d > 0.0));
        // Binary multinomial: softmax([-d, d]).
        let m = logistic(1, &["0", "1"], LinearOutput::Softmax);
        let (s, _) = eval(&model(Estimator::Linear(m), 2), &x);
        let (a, b) = ((-d - d.abs()).exp(), (d - d.abs()).exp());
        assert_eq!(s[0], (a / (a + b)).max(b / (a + b)));
        // Three classes, softmax: probabilities sum to 1, label argmax.
        let m = logistic(3, &["x", "y", "z"], LinearOutput::Softmax);
        let (s, l) = eval(&model(Estimator::Linear(m), 2), &[1.0, 1.0]);
        // decisions: 2.0, 4.0 - 1, 6.0 - 2 → argmax 2.
        assert_eq!(l[0], 2);
        assert!(s[0] > 1.0 / 3.0 && s[0] < 1.0);
    }

    #[test]
    fn modified_huber_all_zero_rows_are_uniform() {
        // Every decision <= -1 clips to probability 0: uniform 1/3.
        let m = LinearModel {
            class: "SGDClassifier".into(),
            coef: vec![1.0, 1.0, 1.0],
            intercept: vec![-5.0, -6.0, -7.0],
            output: LinearOutput::ModifiedHuber,
            classes: vec!["a".into(), "b".into(), "c".into()],
        };
        let (s, l) = eval(&model(Estimator::Linear(m), 1), &[0.0]);
        assert_eq!(s[0], 1.0 / 3.0);
        assert_eq!(l[0], 0);
    }

    #[test]
    fn non_finite_rows_are_refused_and_huge_ones_do_not_panic() {
        let m = model(
            Estimator::Linear(logistic(3, &["x", "y", "z"], LinearOutput::Softmax)),
            2,
        );
        let (s, l) = eval(
            &m,
            &[
                f64::NAN,
                1.0,
                f64::INFINITY,
                0.0,
                1e300,
                -1e300,
                1e308,
                1e308,
            ],
        );
        assert!(s[0].is_nan() && s[1].is_nan());
        assert_eq!(&l[..2], [NO_LABEL, NO_LABEL]);
        assert!(l[2] < 3 && l[3] < 3);
        let ee = model(
            Estimator::EllipticEnvelope(EllipticEnvelope {
                location: vec![0.0, 0.0],
                precision: vec![1.0, 0.0, 0.0, 1.0],
                offset: -1.0,
            }),
            2,
        );
        let (s, l) = eval(&ee, &[f64::NAN, 0.0, 0.0, 0.0, 1e300, 1e300, 1.0, 0.0]);
        assert!(s[0].is_nan());
        assert_eq!(l, [1, 0, 1, 0]);
        // (1, 0): mahalanobis 1, decision -1 + 1 = 0: normal.
        assert_eq!(s[3], 0.0);
        // scikit-learn squares scipy's sqrt: (1, 1) is 2 + 1 ulp, not 2.
        let Estimator::EllipticEnvelope(e) = &ee.estimator else {
            unreachable!()
        };
        let (mut u, mut w) = ([0.0; 2], [0.0; 2]);
        assert_eq!(
            e.mahalanobis(&[1.0, 1.0], &mut u, &mut w),
            2.000_000_000_000_000_4
        );
        let oc = model(
            Estimator::SgdOneClassSvm(SgdOneClassSvm {
                coef: vec![1.0],
                offset: 1.0,
            }),
            1,
        );
        let (s, l) = eval(&oc, &[1.0, 0.5, f64::NEG_INFINITY]);
        assert_eq!(s[..2], [0.0, -0.5]);
        assert!(s[2].is_nan());
        assert_eq!(l, [0, 1, 1]);
    }

    #[test]
    fn inconsistent_models_are_refused_by_name() {
        let bad = |e: Estimator, n: usize, want: &str| {
            let err = model(e, n).validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        };
        let mut m = logistic(3, &["x", "y", "z"], LinearOutput::Softmax);
        m.coef.pop();
        bad(
            Estimator::Linear(m),
            2,
            "LogisticRegression: coef_ has 5 values",
        );
        let mut m = logistic(3, &["x", "y", "z"], LinearOutput::Softmax);
        m.intercept[1] = f64::NAN;
        bad(Estimator::Linear(m), 2, "intercept_[1] is NaN");
        let m = logistic(3, &["x", "y"], LinearOutput::Softmax);
        bad(Estimator::Linear(m), 2, "3 rows for 2 classes");
        let m = logistic(
            1,
            &["x"],
            LinearOutput::Logistic {
                zero_sum_uniform: true,
            },
        );
        bad(Estimator::Linear(m), 2, "has 1 classes");
        let m = logistic(1, &["x", "y"], LinearOutput::ModifiedHuber);
        bad(
            Estimator::Linear(m),
            2,
            "is modified_huber, which LogisticRegression never gives",
        );
        let m = LinearModel {
            class: "Ridge".into(),
            coef: vec![1.0; 4],
            intercept: vec![0.0; 2],
            output: LinearOutput::Regression,
            classes: Vec::new(),
        };
        bad(Estimator::Linear(m), 2, "multi-target");
        let m = LinearModel {
            class: "os.system".into(),
            coef: vec![1.0],
            intercept: vec![0.0],
            output: LinearOutput::Regression,
            classes: Vec::new(),
        };
        bad(
            Estimator::Linear(m),
            1,
            "not a linear model fleetscore reads",
        );
        bad(
            Estimator::EllipticEnvelope(EllipticEnvelope {
                location: vec![0.0; 2],
                precision: vec![1.0; 3],
                offset: 0.0,
            }),
            2,
            "precision_ has 3 values",
        );
        bad(
            Estimator::EllipticEnvelope(EllipticEnvelope {
                location: vec![0.0; 2],
                precision: vec![1.0; 4],
                offset: f64::INFINITY,
            }),
            2,
            "offset_[0] is inf",
        );
        bad(
            Estimator::SgdOneClassSvm(SgdOneClassSvm {
                coef: vec![0.0; 3],
                offset: 0.0,
            }),
            2,
            "coef_ has 3 values but the model has 2 features",
        );
    }

    #[test]
    fn formats_round_trip_and_truncations_are_refused() {
        let models = [
            model(
                Estimator::Linear(logistic(3, &["x", "y", "z"], LinearOutput::Softmax)),
                2,
            ),
            model(
                Estimator::EllipticEnvelope(EllipticEnvelope {
                    location: vec![0.5, -1.0],
                    precision: vec![2.0, 0.1, 0.1, 3.0],
                    offset: -1.25,
                }),
                2,
            ),
            model(
                Estimator::SgdOneClassSvm(SgdOneClassSvm {
                    coef: vec![0.1 + 0.2, 1e-300],
                    offset: 0.75,
                }),
                2,
            ),
        ];
        for m in &models {
            m.validate().unwrap();
            assert_eq!(
                &crate::format::from_json(&crate::format::to_json(m)).unwrap(),
                m
            );
            let mut buf = Vec::new();
            crate::format::encode(m, &mut buf);
            let mut r = Reader { data: &buf, pos: 0 };
            assert_eq!(&crate::format::decode(&mut r).unwrap(), m);
            assert_eq!(r.pos, buf.len());
            for cut in 0..buf.len() {
                let mut r = Reader {
                    data: &buf[..cut],
                    pos: 0,
                };
                assert!(crate::format::decode(&mut r).is_err(), "cut at {cut}");
            }
        }
        // A class count larger than the data is refused before allocating.
        let mut buf = Vec::new();
        crate::format::encode(&models[0], &mut buf);
        let at = buf.len() - (4 + 3 * 5);
        buf[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut r = Reader { data: &buf, pos: 0 };
        let e = crate::format::decode(&mut r).unwrap_err().to_string();
        assert!(e.contains("classes cannot fit"), "{e}");
    }
}
