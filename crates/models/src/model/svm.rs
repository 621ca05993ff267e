//! libsvm models: OneClassSVM, evaluated as libsvm does.

use serde::{Deserialize, Serialize};

use super::{check_finite, InvalidModel};
use crate::fastexp;

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
        k_function(self.kernel, self.gamma, self.coef0, self.degree, x, sv)
    }
}

/// libsvm's `Kernel::k_function` for dense vectors, shared by every
/// libsvm model (OneClassSVM, SVC, SVR).
#[inline]
pub(crate) fn k_function(
    kernel: Kernel,
    gamma: f64,
    coef0: f64,
    degree: i32,
    x: &[f64],
    sv: &[f64],
) -> f64 {
    match kernel {
        Kernel::Rbf => {
            let mut sum = 0.0;
            for (a, b) in x.iter().zip(sv) {
                let d = a - b;
                sum += d * d;
            }
            fastexp::exp(-gamma * sum)
        }
        Kernel::Linear => dot(x, sv),
        Kernel::Poly => powi(gamma * dot(x, sv) + coef0, degree),
        Kernel::Sigmoid => (gamma * dot(x, sv) + coef0).tanh(),
    }
}

/// Rows evaluated together: the inner loop runs over a block of rows for
/// one support vector, so it vectorises, while each row still accumulates
/// its kernel terms in support-vector order, as libsvm does.
const BLOCK: usize = 16;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rbf_batch_avx2(svm: &OneClassSvm, xs: &[f64], n: usize, out: &mut [f64]) {
    rbf_batch(svm, xs, n, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn rbf_batch_avx512(svm: &OneClassSvm, xs: &[f64], n: usize, out: &mut [f64]) {
    rbf_batch(svm, xs, n, out);
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
