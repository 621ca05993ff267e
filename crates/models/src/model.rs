//! Native model structs and their exact evaluation.
//!
//! A [`Model`] is a chain of scalers followed by one outlier detector, the
//! shape of every supported scikit-learn pipeline. Evaluation follows
//! scikit-learn and libsvm operation by operation, in f64, so that decision
//! values agree to the last few ulps and labels agree exactly:
//!
//! * `StandardScaler`: `(x - mean_) / scale_`, subtraction then division, as
//!   numpy's in-place `X -= mean_; X /= scale_`.
//! * `MinMaxScaler`: `x * scale_ + min_`, then clipped to `feature_range`
//!   when `clip=True`.
//! * `RobustScaler`: `(x - center_) / scale_`.
//! * `OneClassSVM`: libsvm's `svm_predict_values` for one-class models,
//!   `sum_i dual_coef_i * K(sv_i, x) - rho` accumulated in support-vector
//!   order, with `rho = -intercept_`; the label is "normal" only when the
//!   decision is strictly greater than zero (`dec_value > 0`), so a decision
//!   of exactly 0.0 is an anomaly.
//!
//! # Validation
//!
//! A model is checked once when it is loaded ([`Model::validate`]), never
//! while scoring. Each estimator's checks sit in its own `validate`
//! ([`Scaler::validate`], [`OneClassSvm::validate`], dispatched by
//! [`Detector::validate`]), each mirroring what scikit-learn checks before
//! predicting or guarantees after `fit`; a new estimator adds its checks
//! there, and every path into a `Model` (pickle import, `model.fsm`, the
//! pack, training) runs them.

use serde::{Deserialize, Serialize};

use crate::fastexp;

/// A feature scaler fitted by scikit-learn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scaler {
    /// `StandardScaler`: `(x - mean) / scale`; either part may be off.
    StandardScaler {
        /// `mean_` when `with_mean=True`.
        mean: Option<Vec<f64>>,
        /// `scale_` when `with_std=True`.
        scale: Option<Vec<f64>>,
    },
    /// `MinMaxScaler`: `x * scale + min`, optionally clipped.
    MinMaxScaler {
        /// `scale_`
        scale: Vec<f64>,
        /// `min_`
        min: Vec<f64>,
        /// `feature_range` when `clip=True`.
        clip: Option<(f64, f64)>,
    },
    /// `RobustScaler`: `(x - center) / scale`; either part may be off.
    RobustScaler {
        /// `center_` when `with_centering=True`.
        center: Option<Vec<f64>>,
        /// `scale_` when `with_scaling=True`.
        scale: Option<Vec<f64>>,
    },
}

/// A libsvm kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kernel {
    /// `exp(-gamma * |x - y|^2)`
    Rbf,
    /// `x . y`
    Linear,
    /// `(gamma * x . y + coef0)^degree`
    Poly,
    /// `tanh(gamma * x . y + coef0)`
    Sigmoid,
}

impl Kernel {
    /// scikit-learn's name for the kernel.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Rbf => "rbf",
            Kernel::Linear => "linear",
            Kernel::Poly => "poly",
            Kernel::Sigmoid => "sigmoid",
        }
    }
}

/// A fitted one-class SVM, as libsvm holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneClassSvm {
    /// Kernel function.
    pub kernel: Kernel,
    /// Kernel coefficient, resolved (scikit-learn's `_gamma`).
    pub gamma: f64,
    /// Independent term of the poly and sigmoid kernels.
    pub coef0: f64,
    /// Degree of the poly kernel.
    pub degree: i32,
    /// Support vectors, row-major, `n_support x n_features`.
    pub support_vectors: Vec<f64>,
    /// One coefficient per support vector (`_dual_coef_[0]`).
    pub dual_coef: Vec<f64>,
    /// `_intercept_[0]`, which is `-rho`.
    pub intercept: f64,
}

impl OneClassSvm {
    /// Number of support vectors.
    pub fn n_support(&self) -> usize {
        self.dual_coef.len()
    }
}

impl OneClassSvm {
    /// Checks a fitted one-class SVM for a model of `n` features, as
    /// scikit-learn and libsvm do (or as their `fit` guarantees):
    ///
    /// * at least one support vector, and `support_vectors_` holds
    ///   `n_support x n` values (libsvm reads `model->l` rows of the
    ///   input's width; `dual_coef_` has one value per row);
    /// * `_dual_coef_` and `_intercept_` are finite (`BaseLibSVM.fit`:
    ///   "The dual coefficients or intercepts are not finite"), and so are
    ///   the support vectors, `_gamma` and `coef0`;
    /// * `_gamma >= 0` and `degree >= 0`: libsvm's `svm_check_parameter`
    ///   refuses `gamma < 0` and `degree < 0` for every kernel, and
    ///   scikit-learn's `_parameter_constraints` allow `gamma` in
    ///   `[0, inf)` ('scale' and 'auto' resolve to positive values) and
    ///   `degree` in `[0, inf)`. A gamma of exactly 0 is accepted, as
    ///   scikit-learn accepts it.
    ///
    /// The pickle-only attributes (`_n_support`, `support_`, `shape_fit_`,
    /// `n_features_in_`) are checked when a pickle is translated
    /// ([`crate::sklearn`]), since the native model does not keep them.
    pub fn validate(&self, n: usize) -> Result<(), InvalidModel> {
        const EST: &str = "OneClassSVM";
        let n_sv = self.dual_coef.len();
        if n_sv == 0 {
            return Err(InvalidModel::new(
                EST,
                "_dual_coef_",
                "is empty, but a fitted one-class SVM has at least one support vector",
            ));
        }
        if n_sv.checked_mul(n) != Some(self.support_vectors.len()) {
            return Err(InvalidModel::new(
                EST,
                "support_vectors_",
                format!(
                    "has {} values, but {n_sv} support vectors (one per dual coefficient) of {n} features need {}",
                    self.support_vectors.len(),
                    n_sv.saturating_mul(n)
                ),
            ));
        }
        check_finite(EST, "support_vectors_", &self.support_vectors)?;
        check_finite(EST, "_dual_coef_", &self.dual_coef)?;
        check_finite(EST, "_intercept_", &[self.intercept])?;
        check_finite(EST, "coef0", &[self.coef0])?;
        if !self.gamma.is_finite() || self.gamma < 0.0 {
            return Err(InvalidModel::new(
                EST,
                "_gamma",
                format!(
                    "is {}, but a fitted gamma is finite and never negative (libsvm refuses gamma < 0; scikit-learn allows gamma >= 0, 'scale' or 'auto')",
                    self.gamma
                ),
            ));
        }
        if self.degree < 0 {
            return Err(InvalidModel::new(
                EST,
                "degree",
                format!(
                    "is {}, but libsvm refuses a negative degree when fitting (\"degree of polynomial kernel < 0\")",
                    self.degree
                ),
            ));
        }
        Ok(())
    }
}

impl Detector {
    /// scikit-learn's class name.
    pub fn name(&self) -> &'static str {
        match self {
            Detector::OneClassSvm(_) => "OneClassSVM",
        }
    }

    /// Checks the fitted detector for a model of `n` features. Each
    /// detector's checks live in its own `validate`; a new detector adds
    /// its arm here.
    pub fn validate(&self, n: usize) -> Result<(), InvalidModel> {
        match self {
            Detector::OneClassSvm(svm) => svm.validate(n),
        }
    }
}

/// The estimator at the end of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Detector {
    /// `sklearn.svm.OneClassSVM`
    OneClassSvm(OneClassSvm),
}

/// A complete model: scalers, then a detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Number of input features (1 for the reference's raw readings).
    pub n_features: usize,
    /// Scalers applied in order.
    pub steps: Vec<Scaler>,
    /// The outlier detector.
    pub detector: Detector,
}

/// Why a model could not score its input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The input has the wrong number of columns.
    #[error("the model expects {expected} feature(s) per row but the input has {found}")]
    FeatureMismatch {
        /// Features the model was trained on.
        expected: usize,
        /// Features per row in the input.
        found: usize,
    },
    /// The input's length is not a multiple of its row width.
    #[error("{values} values do not form whole rows of {width} features")]
    Ragged {
        /// Number of values.
        values: usize,
        /// Row width.
        width: usize,
    },
}

/// A fitted model that is not internally consistent: an array of the wrong
/// shape, a non-finite value, or a parameter that scikit-learn's `fit`
/// never produces. Such a file was altered or corrupted after fitting, and
/// scoring it would give meaningless (or, in libsvm, out-of-bounds)
/// results. The message names the estimator, the scikit-learn attribute
/// and why it is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{estimator}: {attribute} {problem}; the model file was altered or corrupted after fitting: re-export it from the fitted estimator (or refit it)")]
pub struct InvalidModel {
    /// scikit-learn's class name, e.g. `OneClassSVM`.
    pub estimator: &'static str,
    /// The fitted attribute, with scikit-learn's name, e.g. `_n_support`.
    pub attribute: String,
    /// What is wrong with it.
    pub problem: String,
}

impl InvalidModel {
    /// An inconsistency in `estimator.attribute`.
    pub fn new(
        estimator: &'static str,
        attribute: impl Into<String>,
        problem: impl Into<String>,
    ) -> InvalidModel {
        InvalidModel {
            estimator,
            attribute: attribute.into(),
            problem: problem.into(),
        }
    }
}

/// `v` has one value per feature.
fn check_width(est: &'static str, attr: &str, v: &[f64], n: usize) -> Result<(), InvalidModel> {
    if v.len() == n {
        return Ok(());
    }
    Err(InvalidModel::new(
        est,
        attr,
        format!("has {} values but the model has {n} features", v.len()),
    ))
}

/// Every value of `v` is finite.
fn check_finite(est: &'static str, attr: &str, v: &[f64]) -> Result<(), InvalidModel> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(InvalidModel::new(
            est,
            format!("{attr}[{i}]"),
            format!("is {}, and only finite values can be scored", v[i]),
        )),
        None => Ok(()),
    }
}

/// A divisor or multiplier of a scaler: finite and positive, as every
/// scikit-learn scaler's `fit` leaves it (a constant feature gets 1, not
/// 0, through `_handle_zeros_in_scale`).
fn check_scale(est: &'static str, attr: &str, v: &[f64], n: usize) -> Result<(), InvalidModel> {
    check_width(est, attr, v, n)?;
    check_finite(est, attr, v)?;
    match v.iter().position(|&x| x <= 0.0) {
        Some(i) => Err(InvalidModel::new(
            est,
            format!("{attr}[{i}]"),
            format!(
                "is {}, but fit always makes it positive (a constant feature gets 1 through `_handle_zeros_in_scale`)",
                v[i]
            ),
        )),
        None => Ok(()),
    }
}

impl Model {
    /// Checks that the model is internally consistent: every array has
    /// the width of the input, and each estimator holds only what its
    /// scikit-learn `fit` can produce (see [`Scaler::validate`] and
    /// [`Detector::validate`]). Run on every path into a `Model`: pickle
    /// import, `model.fsm` and pack decoding, and training. It runs once
    /// per load, never per row.
    pub fn validate(&self) -> Result<(), InvalidModel> {
        let n = self.n_features;
        if n == 0 {
            return Err(InvalidModel::new(
                "Model",
                "n_features",
                "is 0; a model needs at least one feature",
            ));
        }
        for s in &self.steps {
            s.validate(n)?;
        }
        self.detector.validate(n)
    }

    /// A one-line description, e.g.
    /// `Pipeline(StandardScaler, OneClassSVM(kernel=rbf, gamma=0.1, 15 support vectors))`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.steps.iter().map(|s| s.name().to_string()).collect();
        let Detector::OneClassSvm(svm) = &self.detector;
        let n = svm.n_support();
        parts.push(format!(
            "OneClassSVM(kernel={}, gamma={}, {n} support vector{})",
            svm.kernel.name(),
            svm.gamma,
            if n == 1 { "" } else { "s" }
        ));
        if parts.len() == 1 {
            parts.pop().unwrap_or_default()
        } else {
            format!("Pipeline({})", parts.join(", "))
        }
    }

    /// Decision values for `rows` (row-major, `n_features` per row),
    /// written to `out` (one per row). Equal to scikit-learn's
    /// `decision_function`.
    pub fn decision_function(
        &self,
        rows: &[f64],
        width: usize,
        out: &mut Vec<f64>,
    ) -> Result<(), EvalError> {
        out.clear();
        out.resize(rows.len().checked_div(width).unwrap_or(0), 0.0);
        self.decision_function_into(rows, width, out)
    }

    /// As [`Model::decision_function`], into a slice of exactly one value
    /// per row (the scoring job writes straight into its output column).
    pub fn decision_function_into(
        &self,
        rows: &[f64],
        width: usize,
        out: &mut [f64],
    ) -> Result<(), EvalError> {
        if width != self.n_features {
            return Err(EvalError::FeatureMismatch {
                expected: self.n_features,
                found: width,
            });
        }
        if width == 0 || !rows.len().is_multiple_of(width) || out.len() != rows.len() / width {
            return Err(EvalError::Ragged {
                values: rows.len(),
                width,
            });
        }
        // Scale every row first (as scikit-learn's pipeline does), then
        // evaluate the detector over the whole batch.
        let mut xs = rows.to_vec();
        for row in xs.chunks_exact_mut(width) {
            for s in &self.steps {
                s.transform(row);
            }
        }
        let Detector::OneClassSvm(svm) = &self.detector;
        svm.decision_batch(&xs, width, out);
        Ok(())
    }

    /// Labels as scikit-learn's `predict`: `1` (inlier) or `-1` (outlier).
    pub fn predict(&self, rows: &[f64], width: usize) -> Result<Vec<i8>, EvalError> {
        let mut dec = Vec::new();
        self.decision_function(rows, width, &mut dec)?;
        Ok(dec
            .iter()
            .map(|&d| if is_inlier(d) { 1 } else { -1 })
            .collect())
    }
}

/// libsvm's one-class rule: normal only when the decision is strictly
/// positive. A decision of exactly 0.0 (or NaN) is an anomaly.
#[inline]
pub fn is_inlier(decision: f64) -> bool {
    decision > 0.0
}

impl Scaler {
    /// scikit-learn's class name.
    pub fn name(&self) -> &'static str {
        match self {
            Scaler::StandardScaler { .. } => "StandardScaler",
            Scaler::MinMaxScaler { .. } => "MinMaxScaler",
            Scaler::RobustScaler { .. } => "RobustScaler",
        }
    }

    /// Checks one fitted scaler for a model of `n` features. Every
    /// scaler's arrays have `n` finite values; the divisors and
    /// multipliers are positive, as `fit` makes them:
    ///
    /// * `StandardScaler.scale_ = _handle_zeros_in_scale(sqrt(var_))`;
    /// * `RobustScaler.scale_ = _handle_zeros_in_scale(q_max - q_min)`
    ///   (with `q_min <= q_max`, checked by `fit`);
    /// * `MinMaxScaler.scale_ = (hi - lo) / _handle_zeros_in_scale(data_range_)`
    ///   with `lo < hi` (`fit` refuses "Minimum of desired feature range
    ///   must be smaller than maximum"), which also holds for the clip
    ///   range.
    ///
    /// A new scaler adds its arm here.
    pub fn validate(&self, n: usize) -> Result<(), InvalidModel> {
        let est = self.name();
        match self {
            Scaler::StandardScaler { mean, scale } => {
                if let Some(m) = mean {
                    check_width(est, "mean_", m, n)?;
                    check_finite(est, "mean_", m)?;
                }
                if let Some(s) = scale {
                    check_scale(est, "scale_", s, n)?;
                }
            }
            Scaler::MinMaxScaler { scale, min, clip } => {
                check_scale(est, "scale_", scale, n)?;
                check_width(est, "min_", min, n)?;
                check_finite(est, "min_", min)?;
                if let Some((lo, hi)) = *clip {
                    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                        return Err(InvalidModel::new(
                            est,
                            "feature_range",
                            format!("is ({lo}, {hi}), but fit requires finite bounds with minimum < maximum"),
                        ));
                    }
                }
            }
            Scaler::RobustScaler { center, scale } => {
                if let Some(c) = center {
                    check_width(est, "center_", c, n)?;
                    check_finite(est, "center_", c)?;
                }
                if let Some(s) = scale {
                    check_scale(est, "scale_", s, n)?;
                }
            }
        }
        Ok(())
    }

    /// Transforms one row in place.
    #[inline]
    pub fn transform(&self, x: &mut [f64]) {
        match self {
            Scaler::StandardScaler { mean, scale } => {
                if let Some(m) = mean {
                    x.iter_mut().zip(m).for_each(|(v, m)| *v -= m);
                }
                if let Some(s) = scale {
                    x.iter_mut().zip(s).for_each(|(v, s)| *v /= s);
                }
            }
            Scaler::MinMaxScaler { scale, min, clip } => {
                for ((v, s), m) in x.iter_mut().zip(scale).zip(min) {
                    *v *= s;
                    *v += m;
                }
                if let Some((lo, hi)) = clip {
                    // numpy.clip(x, lo, hi) is min(max(x, lo), hi).
                    x.iter_mut().for_each(|v| *v = v.max(*lo).min(*hi));
                }
            }
            Scaler::RobustScaler { center, scale } => {
                if let Some(c) = center {
                    x.iter_mut().zip(c).for_each(|(v, c)| *v -= c);
                }
                if let Some(s) = scale {
                    x.iter_mut().zip(s).for_each(|(v, s)| *v /= s);
                }
            }
        }
    }
}

impl OneClassSvm {
    /// Decision values of scaled rows (row-major, `n` features each),
    /// written to `out` (one per row).
    pub fn decision_batch(&self, xs: &[f64], n: usize, out: &mut [f64]) {
        if self.kernel == Kernel::Rbf {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F, checked just above.
                    unsafe { rbf_batch_avx512(self, xs, n, out) };
                    return;
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    unsafe { rbf_batch_avx2(self, xs, n, out) };
                    return;
                }
            }
            rbf_batch(self, xs, n, out);
            return;
        }
        for (row, o) in xs.chunks_exact(n).zip(out) {
            *o = self.decision(row);
        }
    }

    /// libsvm's decision value for one (scaled) row.
    #[inline]
    pub fn decision(&self, x: &[f64]) -> f64 {
        let n = x.len();
        let mut sum = 0.0;
        for (coef, sv) in self
            .dual_coef
            .iter()
            .zip(self.support_vectors.chunks_exact(n))
        {
            sum += coef * self.kernel_value(x, sv);
        }
        sum - (-self.intercept)
    }

    /// libsvm's `Kernel::k_function` for dense vectors.
    #[inline]
    pub fn kernel_value(&self, x: &[f64], sv: &[f64]) -> f64 {
        match self.kernel {
            Kernel::Rbf => {
                let mut sum = 0.0;
                for (a, b) in x.iter().zip(sv) {
                    let d = a - b;
                    sum += d * d;
                }
                fastexp::exp(-self.gamma * sum)
            }
            Kernel::Linear => dot(x, sv),
            Kernel::Poly => powi(self.gamma * dot(x, sv) + self.coef0, self.degree),
            Kernel::Sigmoid => (self.gamma * dot(x, sv) + self.coef0).tanh(),
        }
    }
}

/// Rows evaluated together: the inner loop runs over a block of rows for
/// one support vector, so it vectorises, while each row still accumulates
/// its kernel terms in support-vector order, as libsvm does.
const BLOCK: usize = 16;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rbf_batch_avx2(svm: &OneClassSvm, xs: &[f64], n: usize, out: &mut [f64]) {
    rbf_batch(svm, xs, n, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn rbf_batch_avx512(svm: &OneClassSvm, xs: &[f64], n: usize, out: &mut [f64]) {
    rbf_batch(svm, xs, n, out)
}

#[inline(always)]
fn rbf_batch(svm: &OneClassSvm, xs: &[f64], n: usize, out: &mut [f64]) {
    let g = -svm.gamma;
    let rho = -svm.intercept;
    for (block, out) in xs.chunks(BLOCK * n).zip(out.chunks_mut(BLOCK)) {
        let rows = block.len() / n;
        let mut acc = [0.0f64; BLOCK];
        if n == 1 {
            let mut x = [0.0f64; BLOCK];
            x[..rows].copy_from_slice(block);
            for (c, s) in svm.dual_coef.iter().zip(&svm.support_vectors) {
                for r in 0..BLOCK {
                    let d = x[r] - s;
                    acc[r] += c * fastexp::exp(g * (d * d));
                }
            }
        } else {
            for (c, sv) in svm
                .dual_coef
                .iter()
                .zip(svm.support_vectors.chunks_exact(n))
            {
                let mut e = [0.0f64; BLOCK];
                for (r, row) in block.chunks_exact(n).enumerate() {
                    let mut sum = 0.0;
                    for (a, b) in row.iter().zip(sv) {
                        let d = a - b;
                        sum += d * d;
                    }
                    e[r] = g * sum;
                }
                for r in 0..BLOCK {
                    acc[r] += c * fastexp::exp(e[r]);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(&acc[..rows]) {
            *o = a - rho;
        }
    }
}

#[inline]
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let mut s = 0.0;
    for (a, b) in x.iter().zip(y) {
        s += a * b;
    }
    s
}

/// libsvm's `powi`: exponentiation by squaring, which rounds differently
/// from `f64::powi` for some inputs, so it is reproduced as written.
#[inline]
pub fn powi(base: f64, times: i32) -> f64 {
    let mut tmp = base;
    let mut ret = 1.0;
    let mut t = times;
    while t > 0 {
        if t % 2 == 1 {
            ret *= tmp;
        }
        tmp *= tmp;
        t /= 2;
    }
    ret
}
