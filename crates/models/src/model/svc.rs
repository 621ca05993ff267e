//! libsvm's classifiers and regressors: `SVC`/`NuSVC` (one-vs-one) and
//! `SVR`/`NuSVR`, evaluated as scikit-learn's dense libsvm does.
//!
//! Both keep libsvm's own coefficients (`_dual_coef_`, `_intercept_`),
//! never the sign-flipped public `dual_coef_`/`intercept_` of a binary
//! SVC. For one row, libsvm's `svm_predict_values` computes the kernel
//! value of every support vector, then:
//!
//! * a regressor: `Σ dual_coef[s] K(sv_s, x) - rho` in support-vector
//!   order, `rho = -_intercept_[0]`; `predict` is that value;
//! * a classifier of `k` classes: for each pair `i < j` (pair `p` in that
//!   order), `dec_p = Σ_{s in class i} dual_coef[j-1][s] K_s + Σ_{s in
//!   class j} dual_coef[i][s] K_s - rho_p`, then a vote: `dec_p > 0` votes
//!   for `i`, anything else (0.0 included) for `j`; `predict` is the first
//!   class with the most votes.
//!
//! scikit-learn adds its own rules on top (`svm/_base.py @1.9.1`):
//!
//! * `decision_function` of a binary model is `-dec_0`
//!   (`_decision_function`), positive for `classes_[1]`;
//! * of a multiclass model with `decision_function_shape='ovr'`, it is
//!   `_ovr_decision_function(dec < 0, -dec, k)` (`utils/multiclass.py`):
//!   per class, its votes (`dec_p < 0` votes for `j`, anything else for
//!   `i`: a vote rule that differs from libsvm's at exactly 0.0) plus
//!   `s / (3 (|s| + 1))`, `s` the class's summed confidence;
//! * with `break_ties=True` and `'ovr'`, a multiclass `predict` is the
//!   first argmax of that ovr decision instead of libsvm's vote;
//! * `predict_proba` (fitted with `probability=True`): libsvm's
//!   `svm_predict_probability`, Platt's sigmoid of each `dec_p` with
//!   `probA_`/`probB_`, clipped to `[1e-7, 1 - 1e-7]`, coupled by
//!   `multiclass_probability` (Wu, Lin and Weng's method 2, at most
//!   `max(100, k)` iterations). `predict` still votes.
//!
//! # Score
//!
//! * Regressor: `predict`.
//! * Classifier fitted with `probability=True`: `predict_proba(X).max(axis=1)`.
//! * Otherwise the `decision_function` value of the predicted class:
//!   binary, scikit-learn's single decision value (`-dec_0`); multiclass,
//!   the predicted class's column of the `'ovr'` decision (votes plus
//!   transformed confidence), whatever the model's
//!   `decision_function_shape` (an `'ovo'` model's decision has no column
//!   per class). scikit-learn 0.20 scaled the confidences by the largest
//!   of the whole batch instead, which no per-row score can reproduce;
//!   its models get the per-row transform of 0.21 and later (their
//!   labels do not depend on it).
//!
//! scikit-learn refuses NaN and infinite inputs; such a row scores NaN
//! with no label.
//!
//! # Exactness
//!
//! Kernel values and their sums follow libsvm term by term in f64, except
//! two things: the dot products are summed in order where libsvm calls
//! BLAS `ddot` (which may split a long row into SIMD lanes), and the RBF
//! kernel uses [`crate::fastexp`] (within 2 ulp of glibc's `exp`). Both
//! move a decision value by a few ulps of the sum of its terms' sizes at
//! most. The ovr transform, the sigmoid (glibc's `exp`, as libsvm) and
//! the probability coupling are reproduced operation by operation.
//!
//! So that labels stay exact, a classifier row whose decision values are
//! within fastexp's error bound of a tie (or, when `break_ties` decides,
//! whose two best ovr values are that close) is recomputed with glibc's
//! `exp`, as libsvm computes it; with rows narrower than BLAS's SIMD
//! blocks that row's decisions are then libsvm's bit for bit.

use serde::{Deserialize, Serialize};

use super::forest::{argmax, max};
use super::svm::k_function;
use super::{check_finite, InvalidModel, Kernel, NO_LABEL};
use crate::fastexp;
use crate::format::{put_f64s, put_str, put_u32, FormatError, Reader};

/// A fitted `SVC` or `NuSVC`, as libsvm holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Svc {
    /// `NuSVC` (libsvm's `nu_svc`) rather than `SVC` (`c_svc`); both
    /// predict alike.
    pub nu: bool,
    /// Kernel function.
    pub kernel: Kernel,
    /// Kernel coefficient, resolved (scikit-learn's `_gamma`).
    pub gamma: f64,
    /// Independent term of the poly and sigmoid kernels.
    pub coef0: f64,
    /// Degree of the poly kernel.
    pub degree: i32,
    /// `str(c)` of each of `classes_`, in order.
    pub classes: Vec<String>,
    /// Support vectors per class (`_n_support`), in class order; the
    /// support vectors of class `c` follow those of the classes before it.
    pub n_support: Vec<u32>,
    /// Support vectors, row-major, `n_SV x n_features`.
    pub support_vectors: Vec<f64>,
    /// libsvm's coefficients (`_dual_coef_`, never the sign-flipped
    /// `dual_coef_`), row-major, `(n_classes - 1) x n_SV`.
    pub dual_coef: Vec<f64>,
    /// `_intercept_` (libsvm's `-rho`), one per pair of classes `i < j`
    /// in order.
    pub intercept: Vec<f64>,
    /// `decision_function_shape == 'ovr'` (`'ovo'`, or `None` before
    /// 0.19, is false).
    pub ovr: bool,
    /// `break_ties` (0.22 and later; false before).
    pub break_ties: bool,
    /// Platt scaling's `probA_`, one per pair; empty unless the model was
    /// fitted with `probability=True`.
    pub prob_a: Vec<f64>,
    /// Platt scaling's `probB_`, one per pair, as `prob_a`.
    pub prob_b: Vec<f64>,
}

/// A fitted `SVR` or `NuSVR`, as libsvm holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Svr {
    /// `NuSVR` (libsvm's `nu_svr`) rather than `SVR` (`epsilon_svr`);
    /// both predict alike.
    pub nu: bool,
    /// Kernel function.
    pub kernel: Kernel,
    /// Kernel coefficient, resolved (scikit-learn's `_gamma`).
    pub gamma: f64,
    /// Independent term of the poly and sigmoid kernels.
    pub coef0: f64,
    /// Degree of the poly kernel.
    pub degree: i32,
    /// Support vectors, row-major, `n_SV x n_features` (a model may have
    /// none: then it predicts its intercept).
    pub support_vectors: Vec<f64>,
    /// One coefficient per support vector (`_dual_coef_[0]`).
    pub dual_coef: Vec<f64>,
    /// `_intercept_[0]`, which is `-rho`.
    pub intercept: f64,
}

/// Checks shared by every libsvm estimator: finite parameters, a gamma
/// and a degree libsvm's `svm_check_parameter` accepts, finite support
/// vectors of `n` features, `n_sv` of them.
fn check_kernel(
    est: &'static str,
    gamma: f64,
    coef0: f64,
    degree: i32,
    sv: &[f64],
    n_sv: usize,
    n: usize,
) -> Result<(), InvalidModel> {
    if !gamma.is_finite() || gamma < 0.0 {
        return Err(InvalidModel::new(
            est,
            "_gamma",
            format!(
                "is {gamma}, but a fitted gamma is finite and never negative (libsvm refuses gamma < 0; scikit-learn allows gamma >= 0, 'scale' or 'auto')"
            ),
        ));
    }
    if !coef0.is_finite() {
        return Err(InvalidModel::new(
            est,
            "coef0",
            format!("is {coef0}, and only finite values can be scored"),
        ));
    }
    if degree < 0 {
        return Err(InvalidModel::new(
            est,
            "degree",
            format!(
                "is {degree}, but libsvm refuses a negative degree when fitting (\"degree of polynomial kernel < 0\")"
            ),
        ));
    }
    if n_sv.checked_mul(n) != Some(sv.len()) {
        return Err(InvalidModel::new(
            est,
            "support_vectors_",
            format!(
                "has {} values, but {n_sv} support vectors of {n} features need {}",
                sv.len(),
                n_sv.saturating_mul(n)
            ),
        ));
    }
    check_finite(est, "support_vectors_", sv)
}

/// `k (k - 1) / 2`, the number of one-vs-one pairs of `k` classes.
fn pairs(k: usize) -> Option<usize> {
    k.checked_mul(k.saturating_sub(1)).map(|p| p / 2)
}

impl Svc {
    /// scikit-learn's class name.
    pub fn class_name(&self) -> &'static str {
        if self.nu {
            "NuSVC"
        } else {
            "SVC"
        }
    }

    /// Number of support vectors.
    pub fn n_sv(&self) -> usize {
        self.n_support.iter().map(|&c| c as usize).sum()
    }

    /// Whether `predict_proba` is available (fitted with
    /// `probability=True`); it then gives the score.
    pub fn has_proba(&self) -> bool {
        !self.prob_a.is_empty()
    }

    /// A short description with its sizes.
    pub fn describe(&self) -> String {
        let n = self.n_sv();
        format!(
            "{}(kernel={}, gamma={}, {} classes, {n} support vector{}{})",
            self.class_name(),
            self.kernel.name(),
            self.gamma,
            self.classes.len(),
            if n == 1 { "" } else { "s" },
            if self.has_proba() {
                ", probability"
            } else {
                ""
            }
        )
    }

    /// Checks the fitted classifier for rows of `n` features, as libsvm
    /// and scikit-learn do or as their `fit` guarantees: at least two
    /// classes, one support-vector count per class, `support_vectors_`
    /// of `n_SV x n`, `_dual_coef_` of `(k - 1) x n_SV`, one intercept
    /// (and, with probabilities, one `probA_` and `probB_`) per pair of
    /// classes, every value finite (`BaseLibSVM.fit`: "The dual
    /// coefficients or intercepts are not finite").
    pub fn validate(&self, n: usize) -> Result<(), InvalidModel> {
        let est = self.class_name();
        let k = self.classes.len();
        if k < 2 {
            return Err(InvalidModel::new(
                est,
                "classes_",
                format!("has {k} classes; a fitted classifier has at least 2"),
            ));
        }
        if self.n_support.len() != k {
            return Err(InvalidModel::new(
                est,
                "_n_support",
                format!(
                    "has {} counts for {k} classes (libsvm reads one per class)",
                    self.n_support.len()
                ),
            ));
        }
        let n_sv = self
            .n_support
            .iter()
            .try_fold(0usize, |s, &c| s.checked_add(c as usize))
            .ok_or_else(|| InvalidModel::new(est, "_n_support", "sums past any array size"))?;
        check_kernel(
            est,
            self.gamma,
            self.coef0,
            self.degree,
            &self.support_vectors,
            n_sv,
            n,
        )?;
        if (k - 1).checked_mul(n_sv) != Some(self.dual_coef.len()) {
            return Err(InvalidModel::new(
                est,
                "_dual_coef_",
                format!(
                    "has {} values, but {k} classes and {n_sv} support vectors need {} x {n_sv}",
                    self.dual_coef.len(),
                    k - 1
                ),
            ));
        }
        check_finite(est, "_dual_coef_", &self.dual_coef)?;
        let m =
            pairs(k).ok_or_else(|| InvalidModel::new(est, "classes_", "has too many classes"))?;
        if self.intercept.len() != m {
            return Err(InvalidModel::new(
                est,
                "_intercept_",
                format!(
                    "has {} values, but {k} classes make {m} one-vs-one pairs",
                    self.intercept.len()
                ),
            ));
        }
        check_finite(est, "_intercept_", &self.intercept)?;
        for (attr, v) in [("probA_", &self.prob_a), ("probB_", &self.prob_b)] {
            if !(v.len() == m || self.prob_a.is_empty() && self.prob_b.is_empty()) {
                return Err(InvalidModel::new(
                    est,
                    attr,
                    format!(
                        "has {} values, but Platt scaling of {k} classes has {m} (or none without probability=True)",
                        v.len()
                    ),
                ));
            }
            check_finite(est, attr, v)?;
        }
        Ok(())
    }

    /// Scores and labels of rows of `n` features (see the module docs).
    pub fn evaluate(&self, xs: &[f64], n: usize, score: &mut [f64], label: &mut [u32]) {
        dispatch(&Eval::Svc(self), xs, n, score, label);
    }

    /// The one-vs-one decision values (libsvm's `dec_values`, before
    /// scikit-learn's sign flip) of each row, `k (k - 1) / 2` per row.
    pub fn ovo_decision(&self, xs: &[f64], n: usize) -> Vec<f64> {
        let m = self.intercept.len();
        let rows = xs.len().checked_div(n).unwrap_or(0);
        let mut out = vec![0.0; rows * m];
        let mut kv = vec![0.0; self.n_sv() * BLOCK];
        let mut dec = vec![0.0; m * BLOCK];
        for (b, block) in xs.chunks(BLOCK * n).enumerate() {
            self.block_decisions::<false>(block, n, &mut kv, &mut dec);
            for r in 0..block.len() / n {
                for p in 0..m {
                    out[(b * BLOCK + r) * m + p] = dec[p * BLOCK + r];
                }
            }
        }
        out
    }

    /// libsvm's decision values of a block of up to [`BLOCK`] rows into
    /// `dec` (`[pair][row]`), with `kv` (`[sv][row]`) as scratch. `LIBM`
    /// takes the RBF kernel's `exp` from the C library, as libsvm does,
    /// instead of [`fastexp`].
    #[inline(always)]
    fn block_decisions<const LIBM: bool>(
        &self,
        block: &[f64],
        n: usize,
        kv: &mut [f64],
        dec: &mut [f64],
    ) {
        kernel_block::<LIBM>(
            self.kernel,
            self.gamma,
            self.coef0,
            self.degree,
            block,
            n,
            &self.support_vectors,
            kv,
        );
        let k = self.classes.len();
        let l = self.support_vectors.len() / n;
        let mut start = Vec::with_capacity(k);
        let mut s = 0;
        for &c in &self.n_support {
            start.push(s);
            s += c as usize;
        }
        let mut p = 0;
        for i in 0..k {
            for j in i + 1..k {
                let mut acc = [0.0f64; BLOCK];
                let (si, ci) = (start[i], self.n_support[i] as usize);
                let (sj, cj) = (start[j], self.n_support[j] as usize);
                let coef1 = &self.dual_coef[(j - 1) * l..j * l];
                let coef2 = &self.dual_coef[i * l..(i + 1) * l];
                for s in si..si + ci {
                    let c = coef1[s];
                    let kv = &kv[s * BLOCK..(s + 1) * BLOCK];
                    for r in 0..BLOCK {
                        acc[r] += c * kv[r];
                    }
                }
                for s in sj..sj + cj {
                    let c = coef2[s];
                    let kv = &kv[s * BLOCK..(s + 1) * BLOCK];
                    for r in 0..BLOCK {
                        acc[r] += c * kv[r];
                    }
                }
                let rho = -self.intercept[p];
                for (d, a) in dec[p * BLOCK..(p + 1) * BLOCK].iter_mut().zip(acc) {
                    *d = a - rho;
                }
                p += 1;
            }
        }
    }

    /// For the RBF kernel, how far from a tie each pair's decision value
    /// must be for its sign to be the same whichever `exp` computed it:
    /// [`fastexp`] is within 2 ulp of glibc's `exp` (itself within 1 ulp
    /// of `e^x`), every kernel value is at most 1, and both sums run in
    /// the same order, so the two results differ by less than
    /// `(2 (l + 2) + 6) 2^-53` times `Σ |coef| + |rho|` (`l` the pair's
    /// support vectors, each sum's rounding bounded by `l u`); the
    /// tolerance is four times that. Empty for the other kernels, which
    /// use no `exp`.
    fn tie_tolerance(&self) -> Vec<f64> {
        if self.kernel != Kernel::Rbf {
            return Vec::new();
        }
        let k = self.classes.len();
        let l = self.n_sv();
        let mut start = Vec::with_capacity(k);
        let mut s = 0;
        for &c in &self.n_support {
            start.push(s);
            s += c as usize;
        }
        let mut tol = Vec::with_capacity(self.intercept.len());
        let mut p = 0;
        for i in 0..k {
            for j in i + 1..k {
                let (si, ci) = (start[i], self.n_support[i] as usize);
                let (sj, cj) = (start[j], self.n_support[j] as usize);
                let coef1 = &self.dual_coef[(j - 1) * l..j * l];
                let coef2 = &self.dual_coef[i * l..(i + 1) * l];
                let abs: f64 = coef1[si..si + ci].iter().map(|c| c.abs()).sum::<f64>()
                    + coef2[sj..sj + cj].iter().map(|c| c.abs()).sum::<f64>()
                    + self.intercept[p].abs();
                let rel = (2.0 * (ci + cj + 2) as f64 + 6.0) * 2f64.powi(-53);
                tol.push(4.0 * rel * abs);
                p += 1;
            }
        }
        tol
    }

    /// Whether a row's label could depend on which `exp` computed its
    /// decision values: a pair's decision within its tolerance of 0, or,
    /// when `break_ties` decides, the two best ovr decisions within the
    /// tolerances' sum of each other. [`Svc::row_result`] has just filled
    /// `scratch` for this row.
    fn near_tie(&self, dec: &[f64], tol: &[f64], scratch: &Scratch) -> bool {
        if dec.iter().zip(tol).any(|(d, t)| d.abs() <= *t) {
            return true;
        }
        if self.break_ties && self.ovr && self.classes.len() > 2 {
            let (mut a, mut b) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
            for &v in &scratch.ovr {
                if v > a {
                    b = a;
                    a = v;
                } else if v > b {
                    b = v;
                }
            }
            let total: f64 = tol.iter().sum();
            // NaN gaps (non-finite decisions) are recomputed too.
            let gap = a - b;
            return gap.is_nan() || gap <= 2.0 * total;
        }
        false
    }

    /// Label and score of one row from its decision values `dec` (one per
    /// pair), with scratch space.
    fn row_result(&self, dec: &[f64], scratch: &mut Scratch) -> (u32, f64) {
        let k = self.classes.len();
        // libsvm's vote: dec > 0 for i, anything else for j; the first
        // class with the most votes.
        let votes = &mut scratch.votes;
        votes.clear();
        votes.resize(k, 0);
        let mut p = 0;
        for i in 0..k {
            for j in i + 1..k {
                if dec[p] > 0.0 {
                    votes[i] += 1;
                } else {
                    votes[j] += 1;
                }
                p += 1;
            }
        }
        let mut vote_max = 0;
        for i in 1..k {
            if votes[i] > votes[vote_max] {
                vote_max = i;
            }
        }
        if k == 2 {
            let score = if self.has_proba() {
                self.proba_max(dec, scratch)
            } else {
                -dec[0]
            };
            return (vote_max as u32, score);
        }
        ovr_decision(dec, k, &mut scratch.ovr_votes, &mut scratch.ovr);
        let label = if self.break_ties && self.ovr {
            argmax(&scratch.ovr)
        } else {
            vote_max
        };
        let score = if self.has_proba() {
            self.proba_max(dec, scratch)
        } else {
            scratch.ovr[label]
        };
        (label as u32, score)
    }

    /// `predict_proba(x).max()` from the row's decision values.
    fn proba_max(&self, dec: &[f64], scratch: &mut Scratch) -> f64 {
        self.proba(dec, scratch);
        max(&scratch.prob)
    }

    /// libsvm's `svm_predict_probability` into `scratch.prob`.
    fn proba(&self, dec: &[f64], scratch: &mut Scratch) {
        let k = self.classes.len();
        const MIN_PROB: f64 = 1e-7;
        let r = &mut scratch.pairwise;
        r.clear();
        r.resize(k * k, 0.0);
        let mut p = 0;
        for i in 0..k {
            for j in i + 1..k {
                let s = sigmoid_predict(dec[p], self.prob_a[p], self.prob_b[p]);
                // min(max(s, min_prob), 1 - min_prob) as std::min/max.
                let s = if s < MIN_PROB { MIN_PROB } else { s };
                let s = if 1.0 - MIN_PROB < s {
                    1.0 - MIN_PROB
                } else {
                    s
                };
                r[i * k + j] = s;
                r[j * k + i] = 1.0 - s;
                p += 1;
            }
        }
        multiclass_probability(k, r, &mut scratch.q, &mut scratch.qp, &mut scratch.prob);
    }

    /// The class probabilities of each row (`predict_proba`), `k` per
    /// row; NaN for a row scikit-learn refuses. Empty without Platt
    /// scaling.
    pub fn predict_proba(&self, xs: &[f64], n: usize) -> Vec<f64> {
        if !self.has_proba() {
            return Vec::new();
        }
        let k = self.classes.len();
        let m = self.intercept.len();
        let dec = self.ovo_decision(xs, n);
        let mut scratch = Scratch::default();
        let mut out = Vec::with_capacity(dec.len() / m.max(1) * k);
        for (x, d) in xs.chunks_exact(n).zip(dec.chunks_exact(m)) {
            if x.iter().all(|v| v.is_finite()) {
                self.proba(d, &mut scratch);
                out.extend_from_slice(&scratch.prob);
            } else {
                out.extend(std::iter::repeat_n(f64::NAN, k));
            }
        }
        out
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(
            u8::from(self.nu)
                | u8::from(self.ovr) << 1
                | u8::from(self.break_ties) << 2
                | u8::from(self.has_proba()) << 3,
        );
        put_kernel(out, self.kernel, self.gamma, self.coef0, self.degree);
        put_u32(out, self.classes.len());
        for c in &self.classes {
            put_str(out, c);
        }
        for &c in &self.n_support {
            out.extend_from_slice(&c.to_le_bytes());
        }
        put_f64s(out, &self.intercept);
        if self.has_proba() {
            put_f64s(out, &self.prob_a);
            put_f64s(out, &self.prob_b);
        }
        put_f64s(out, &self.dual_coef);
        put_f64s(out, &self.support_vectors);
    }

    pub(crate) fn decode(r: &mut Reader<'_>, n: usize) -> Result<Svc, FormatError> {
        let flags = r.u8()?;
        if flags > 15 {
            return Err(r.corrupt(format!("unknown SVC flags {flags}")));
        }
        let (kernel, gamma, coef0, degree) = get_kernel(r)?;
        let k = r.u32()? as usize;
        // Each class takes at least 8 bytes (its name's length and its
        // count): the count cannot exceed the data.
        if k > (r.data.len() - r.pos) / 8 {
            return Err(r.corrupt(format!("{k} classes cannot fit in the data left")));
        }
        let classes = (0..k).map(|_| r.string()).collect::<Result<Vec<_>, _>>()?;
        let n_support: Vec<u32> = r.i32s(k)?.into_iter().map(|c| c as u32).collect();
        let m = pairs(k).ok_or_else(|| r.corrupt("too many classes"))?;
        let intercept = r.f64s(m)?;
        let (prob_a, prob_b) = if flags & 8 != 0 {
            (r.f64s(m)?, r.f64s(m)?)
        } else {
            (Vec::new(), Vec::new())
        };
        let n_sv = n_support
            .iter()
            .try_fold(0usize, |s, &c| s.checked_add(c as usize))
            .ok_or_else(|| r.corrupt("support vector counts overflow"))?;
        let dual_coef = r.f64s(
            n_sv.checked_mul(k.saturating_sub(1))
                .ok_or_else(|| r.corrupt("size overflows"))?,
        )?;
        let support_vectors = r.f64s(
            n_sv.checked_mul(n)
                .ok_or_else(|| r.corrupt("size overflows"))?,
        )?;
        Ok(Svc {
            nu: flags & 1 != 0,
            kernel,
            gamma,
            coef0,
            degree,
            classes,
            n_support,
            support_vectors,
            dual_coef,
            intercept,
            ovr: flags & 2 != 0,
            break_ties: flags & 4 != 0,
            prob_a,
            prob_b,
        })
    }
}

/// scikit-learn's `_ovr_decision_function(dec < 0, -dec, k)` for one row
/// into `out` (`k` values): per class, its votes plus `s / (3 (|s| + 1))`,
/// `s` summed over the pairs in order (`-= -dec` for `i`, `+= -dec` for
/// `j`) from 0.0, as numpy's column updates do.
fn ovr_decision(dec: &[f64], k: usize, votes: &mut Vec<f64>, out: &mut Vec<f64>) {
    votes.clear();
    votes.resize(k, 0.0);
    out.clear();
    out.resize(k, 0.0);
    let mut p = 0;
    for i in 0..k {
        for j in i + 1..k {
            let conf = -dec[p];
            out[i] -= conf;
            out[j] += conf;
            // predictions = dec < 0: 0 (false, NaN included) votes for
            // i, 1 for j.
            if dec[p] < 0.0 {
                votes[j] += 1.0;
            } else {
                votes[i] += 1.0;
            }
            p += 1;
        }
    }
    for (s, v) in out.iter_mut().zip(votes.iter()) {
        *s = v + *s / (3.0 * (s.abs() + 1.0));
    }
}

/// libsvm's `sigmoid_predict`: Platt's `1 / (1 + exp(dec A + B))`,
/// written to avoid cancellation.
fn sigmoid_predict(decision_value: f64, a: f64, b: f64) -> f64 {
    let f_apb = decision_value * a + b;
    if f_apb >= 0.0 {
        (-f_apb).exp() / (1.0 + (-f_apb).exp())
    } else {
        1.0 / (1.0 + f_apb.exp())
    }
}

/// libsvm's `multiclass_probability` (method 2 of Wu, Lin and Weng), as
/// written in `svm.cpp`: `r` is the `k x k` matrix of pairwise
/// probabilities (row-major, diagonal unused); the class probabilities go
/// to `p`.
fn multiclass_probability(
    k: usize,
    r: &[f64],
    q: &mut Vec<f64>,
    qp: &mut Vec<f64>,
    p: &mut Vec<f64>,
) {
    let max_iter = k.max(100);
    let eps = 0.005 / k as f64;
    q.clear();
    q.resize(k * k, 0.0);
    qp.clear();
    qp.resize(k, 0.0);
    p.clear();
    p.resize(k, 1.0 / k as f64);
    for t in 0..k {
        q[t * k + t] = 0.0;
        for j in 0..t {
            q[t * k + t] += r[j * k + t] * r[j * k + t];
            q[t * k + j] = q[j * k + t];
        }
        for j in t + 1..k {
            q[t * k + t] += r[j * k + t] * r[j * k + t];
            q[t * k + j] = -r[j * k + t] * r[t * k + j];
        }
    }
    for _ in 0..max_iter {
        // Stopping condition: recompute Qp and pQp for accuracy.
        let mut pqp = 0.0;
        for t in 0..k {
            qp[t] = 0.0;
            for j in 0..k {
                qp[t] += q[t * k + j] * p[j];
            }
            pqp += p[t] * qp[t];
        }
        let mut max_error = 0.0;
        for q_t in qp.iter() {
            let error = (q_t - pqp).abs();
            if error > max_error {
                max_error = error;
            }
        }
        if max_error < eps {
            break;
        }
        for t in 0..k {
            let diff = (-qp[t] + pqp) / q[t * k + t];
            p[t] += diff;
            pqp = (pqp + diff * (diff * q[t * k + t] + 2.0 * qp[t])) / (1.0 + diff) / (1.0 + diff);
            for j in 0..k {
                qp[j] = (qp[j] + diff * q[t * k + j]) / (1.0 + diff);
                p[j] /= 1.0 + diff;
            }
        }
    }
}

/// Per-row working space of a classifier.
#[derive(Default)]
struct Scratch {
    votes: Vec<u32>,
    ovr_votes: Vec<f64>,
    ovr: Vec<f64>,
    pairwise: Vec<f64>,
    q: Vec<f64>,
    qp: Vec<f64>,
    prob: Vec<f64>,
}

impl Svr {
    /// scikit-learn's class name.
    pub fn class_name(&self) -> &'static str {
        if self.nu {
            "NuSVR"
        } else {
            "SVR"
        }
    }

    /// Number of support vectors.
    pub fn n_sv(&self) -> usize {
        self.dual_coef.len()
    }

    /// A short description with its sizes.
    pub fn describe(&self) -> String {
        let n = self.n_sv();
        format!(
            "{}(kernel={}, gamma={}, {n} support vector{})",
            self.class_name(),
            self.kernel.name(),
            self.gamma,
            if n == 1 { "" } else { "s" }
        )
    }

    /// Checks the fitted regressor for rows of `n` features: finite
    /// parameters, coefficients and intercept, and `support_vectors_` of
    /// one row of `n` values per coefficient. A regressor may have no
    /// support vector at all (every target within `epsilon`).
    pub fn validate(&self, n: usize) -> Result<(), InvalidModel> {
        let est = self.class_name();
        check_kernel(
            est,
            self.gamma,
            self.coef0,
            self.degree,
            &self.support_vectors,
            self.dual_coef.len(),
            n,
        )?;
        check_finite(est, "_dual_coef_", &self.dual_coef)?;
        check_finite(est, "_intercept_", &[self.intercept])
    }

    /// Predictions of rows of `n` features into `out`; NaN for a row
    /// scikit-learn refuses (NaN or infinite values).
    pub fn evaluate(&self, xs: &[f64], n: usize, out: &mut [f64]) {
        dispatch(&Eval::Svr(self), xs, n, out, &mut []);
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.nu));
        put_kernel(out, self.kernel, self.gamma, self.coef0, self.degree);
        put_f64s(out, &[self.intercept]);
        put_u32(out, self.dual_coef.len());
        put_f64s(out, &self.dual_coef);
        put_f64s(out, &self.support_vectors);
    }

    pub(crate) fn decode(r: &mut Reader<'_>, n: usize) -> Result<Svr, FormatError> {
        let nu = match r.u8()? {
            f @ (0 | 1) => f == 1,
            f => return Err(r.corrupt(format!("unknown SVR flags {f}"))),
        };
        let (kernel, gamma, coef0, degree) = get_kernel(r)?;
        let intercept = r.f64()?;
        let n_sv = r.u32()? as usize;
        let dual_coef = r.f64s(n_sv)?;
        let support_vectors = r.f64s(
            n_sv.checked_mul(n)
                .ok_or_else(|| r.corrupt("size overflows"))?,
        )?;
        Ok(Svr {
            nu,
            kernel,
            gamma,
            coef0,
            degree,
            support_vectors,
            dual_coef,
            intercept,
        })
    }
}

fn put_kernel(out: &mut Vec<u8>, kernel: Kernel, gamma: f64, coef0: f64, degree: i32) {
    out.push(match kernel {
        Kernel::Rbf => 1,
        Kernel::Linear => 2,
        Kernel::Poly => 3,
        Kernel::Sigmoid => 4,
    });
    put_f64s(out, &[gamma, coef0]);
    out.extend_from_slice(&degree.to_le_bytes());
}

fn get_kernel(r: &mut Reader<'_>) -> Result<(Kernel, f64, f64, i32), FormatError> {
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
    Ok((kernel, gamma, coef0, degree))
}

/// Rows evaluated together: the inner loops run over a block of rows for
/// one support vector, so they vectorise, while each row still
/// accumulates its terms in libsvm's order.
const BLOCK: usize = 16;

/// The kernel values of a block of up to [`BLOCK`] rows (`n` features
/// each) against every support vector, into `kv` laid out `[sv][row]`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn kernel_block<const LIBM: bool>(
    kernel: Kernel,
    gamma: f64,
    coef0: f64,
    degree: i32,
    block: &[f64],
    n: usize,
    sv: &[f64],
    kv: &mut [f64],
) {
    if kernel == Kernel::Rbf {
        let exp = |v: f64| if LIBM { v.exp() } else { fastexp::exp(v) };
        let g = -gamma;
        if n == 1 {
            let mut x = [0.0f64; BLOCK];
            x[..block.len()].copy_from_slice(block);
            for (s, out) in sv.iter().zip(kv.chunks_exact_mut(BLOCK)) {
                for r in 0..BLOCK {
                    let d = x[r] - s;
                    out[r] = exp(g * (d * d));
                }
            }
        } else {
            for (s, out) in sv.chunks_exact(n).zip(kv.chunks_exact_mut(BLOCK)) {
                let mut e = [0.0f64; BLOCK];
                for (r, row) in block.chunks_exact(n).enumerate() {
                    let mut sum = 0.0;
                    for (a, b) in row.iter().zip(s) {
                        let d = a - b;
                        sum += d * d;
                    }
                    e[r] = g * sum;
                }
                for r in 0..BLOCK {
                    out[r] = exp(e[r]);
                }
            }
        }
        return;
    }
    for (s, out) in sv.chunks_exact(n).zip(kv.chunks_exact_mut(BLOCK)) {
        for (row, o) in block.chunks_exact(n).zip(out.iter_mut()) {
            *o = k_function(kernel, gamma, coef0, degree, row, s);
        }
    }
}

/// What [`dispatch`] evaluates.
enum Eval<'a> {
    Svc(&'a Svc),
    Svr(&'a Svr),
}

/// Runs [`evaluate_rows`] in the widest SIMD build the CPU supports (the
/// arithmetic is the same in each: no fused multiply-add). A regressor
/// writes no labels.
fn dispatch(e: &Eval<'_>, xs: &[f64], n: usize, score: &mut [f64], label: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            unsafe { evaluate_avx512(e, xs, n, score, label) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { evaluate_avx2(e, xs, n, score, label) };
            return;
        }
    }
    evaluate_rows(e, xs, n, score, label);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn evaluate_avx2(e: &Eval<'_>, xs: &[f64], n: usize, score: &mut [f64], label: &mut [u32]) {
    evaluate_rows(e, xs, n, score, label);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn evaluate_avx512(e: &Eval<'_>, xs: &[f64], n: usize, score: &mut [f64], label: &mut [u32]) {
    evaluate_rows(e, xs, n, score, label);
}

#[inline(always)]
fn evaluate_rows(e: &Eval<'_>, xs: &[f64], n: usize, score: &mut [f64], label: &mut [u32]) {
    match e {
        Eval::Svr(svr) => {
            let mut kv = vec![0.0; svr.n_sv() * BLOCK];
            let rho = -svr.intercept;
            for (block, out) in xs.chunks(BLOCK * n).zip(score.chunks_mut(BLOCK)) {
                kernel_block::<false>(
                    svr.kernel,
                    svr.gamma,
                    svr.coef0,
                    svr.degree,
                    block,
                    n,
                    &svr.support_vectors,
                    &mut kv,
                );
                let mut acc = [0.0f64; BLOCK];
                for (c, kv) in svr.dual_coef.iter().zip(kv.chunks_exact(BLOCK)) {
                    for r in 0..BLOCK {
                        acc[r] += c * kv[r];
                    }
                }
                for ((o, a), x) in out.iter_mut().zip(acc).zip(block.chunks_exact(n)) {
                    *o = if x.iter().all(|v| v.is_finite()) {
                        a - rho
                    } else {
                        f64::NAN
                    };
                }
            }
        }
        Eval::Svc(svc) => {
            let m = svc.intercept.len();
            let mut kv = vec![0.0; svc.n_sv() * BLOCK];
            let mut dec = vec![0.0; m * BLOCK];
            let mut row_dec = vec![0.0; m];
            let mut scratch = Scratch::default();
            let tol = svc.tie_tolerance();
            let (mut exact_kv, mut exact_dec) = (Vec::new(), Vec::new());
            for ((block, out), lab) in xs
                .chunks(BLOCK * n)
                .zip(score.chunks_mut(BLOCK))
                .zip(label.chunks_mut(BLOCK))
            {
                svc.block_decisions::<false>(block, n, &mut kv, &mut dec);
                for (r, ((o, l), x)) in out
                    .iter_mut()
                    .zip(lab.iter_mut())
                    .zip(block.chunks_exact(n))
                    .enumerate()
                {
                    if !x.iter().all(|v| v.is_finite()) {
                        *o = f64::NAN;
                        *l = NO_LABEL;
                        continue;
                    }
                    for (p, d) in row_dec.iter_mut().enumerate() {
                        *d = dec[p * BLOCK + r];
                    }
                    (*l, *o) = svc.row_result(&row_dec, &mut scratch);
                    if !tol.is_empty() && svc.near_tie(&row_dec, &tol, &scratch) {
                        // Decide this row with libsvm's own exp.
                        exact_kv.resize(kv.len(), 0.0);
                        exact_dec.resize(dec.len(), 0.0);
                        svc.block_decisions::<true>(x, n, &mut exact_kv, &mut exact_dec);
                        for (p, d) in row_dec.iter_mut().enumerate() {
                            *d = exact_dec[p * BLOCK];
                        }
                        (*l, *o) = svc.row_result(&row_dec, &mut scratch);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc3() -> Svc {
        // Three classes, one feature, two support vectors per class.
        Svc {
            nu: false,
            kernel: Kernel::Rbf,
            gamma: 0.5,
            coef0: 0.0,
            degree: 3,
            classes: vec!["a".into(), "b".into(), "c".into()],
            n_support: vec![2, 2, 2],
            support_vectors: vec![-2.0, -1.5, 0.0, 0.5, 2.0, 2.5],
            dual_coef: vec![
                1.0, 0.5, -1.0, -0.5, -0.3, -0.2, //
                0.4, 0.1, 1.0, 0.7, -0.9, -0.8,
            ],
            intercept: vec![0.1, -0.05, 0.2],
            ovr: true,
            break_ties: false,
            prob_a: Vec::new(),
            prob_b: Vec::new(),
        }
    }

    fn svr() -> Svr {
        Svr {
            nu: false,
            kernel: Kernel::Poly,
            gamma: 0.5,
            coef0: 1.0,
            degree: 2,
            support_vectors: vec![0.0, 1.0, 2.0, 3.0],
            dual_coef: vec![0.5, -0.25],
            intercept: 0.125,
        }
    }

    fn eval(s: &Svc, xs: &[f64]) -> (Vec<f64>, Vec<u32>) {
        let (mut sc, mut l) = (vec![0.0; xs.len()], vec![0; xs.len()]);
        s.evaluate(xs, 1, &mut sc, &mut l);
        (sc, l)
    }

    #[test]
    fn ovo_decisions_follow_libsvm_term_order() {
        let s = svc3();
        let x = 0.3;
        let k: Vec<f64> = s
            .support_vectors
            .iter()
            .map(|v| fastexp::exp(-0.5 * ((x - v) * (x - v))))
            .collect();
        let l = 6;
        let c = &s.dual_coef;
        // (0,1): class 0 with coef row 0, class 1 with coef row 0.
        let mut d01 = 0.0;
        for t in 0..2 {
            d01 += c[t] * k[t];
        }
        for t in 2..4 {
            d01 += c[t] * k[t];
        }
        d01 -= -0.1;
        // (0,2): class 0 with row 1, class 2 with row 0.
        let mut d02 = 0.0;
        for t in 0..2 {
            d02 += c[l + t] * k[t];
        }
        for t in 4..6 {
            d02 += c[t] * k[t];
        }
        d02 -= 0.05;
        // (1,2): class 1 with row 1, class 2 with row 1.
        let mut d12 = 0.0;
        for t in 2..4 {
            d12 += c[l + t] * k[t];
        }
        for t in 4..6 {
            d12 += c[l + t] * k[t];
        }
        d12 -= -0.2;
        let got = s.ovo_decision(&[x], 1);
        assert_eq!(got, vec![d01, d02, d12]);
    }

    /// Labels and decisions with libsvm's own `exp`, the reference.
    fn libm_result(s: &Svc, x: f64) -> (u32, f64) {
        let m = s.intercept.len();
        let mut kv = vec![0.0; s.n_sv() * BLOCK];
        let mut dec = vec![0.0; m * BLOCK];
        s.block_decisions::<true>(&[x], 1, &mut kv, &mut dec);
        let row: Vec<f64> = (0..m).map(|p| dec[p * BLOCK]).collect();
        s.row_result(&row, &mut Scratch::default())
    }

    #[test]
    fn rows_at_a_tie_are_labelled_with_libsvms_exp() {
        // Large coefficients (as NuSVC makes) magnify exp's last-bit
        // differences. This model and row were found by search: fastexp
        // puts the first pair's decision at +5.5e-13, glibc's exp (as
        // libsvm) at -3.6e-13, so the vote differs.
        let mut st: u64 = 26u64
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut rnd = || {
            st = st
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((st >> 11) as f64) / (1u64 << 53) as f64
        };
        let mut s = svc3();
        for c in &mut s.dual_coef {
            *c = (rnd() - 0.5) * 2e4;
        }
        for v in &mut s.support_vectors {
            *v = (rnd() - 0.5) * 6.0;
        }
        s.gamma = 0.1 + rnd();
        s.validate(1).unwrap();
        let x = -1.8922064784556305;
        let fast = s.ovo_decision(&[x], 1)[0];
        let (want_l, want_s) = libm_result(&s, x);
        let mut kv = vec![0.0; s.n_sv() * BLOCK];
        let mut dec = vec![0.0; 3 * BLOCK];
        s.block_decisions::<true>(&[x], 1, &mut kv, &mut dec);
        assert!(fast > 0.0 && dec[0] <= 0.0, "{fast} {}", dec[0]);
        // Scored alone and inside a block, the row gets libsvm's label
        // and exactly libsvm's decision values.
        let mut xs: Vec<f64> = (0..40).map(|i| -2.5 + i as f64 * 0.03).collect();
        xs[17] = x;
        let (sc, l) = eval(&s, &xs);
        assert_eq!((l[17], sc[17].to_bits()), (want_l, want_s.to_bits()));
        for (i, &x) in xs.iter().enumerate() {
            assert_eq!(l[i], libm_result(&s, x).0, "row {i}");
        }
    }

    #[test]
    fn ovr_decision_matches_scikit_learn() {
        // Pair decisions chosen by hand: (0,1) = 0.5 (votes 0),
        // (0,2) = -1.0 (votes 2), (1,2) = 0.0 (libsvm votes 2,
        // scikit-learn's ovr votes 1).
        let dec = [0.5, -1.0, 0.0];
        let (mut v, mut o) = (Vec::new(), Vec::new());
        ovr_decision(&dec, 3, &mut v, &mut o);
        // class 0: conf sum 0.5 + -1.0 = -0.5, 1 vote.
        // class 1: -0.5 + 0.0, 1 vote; class 2: 1.0 - 0.0, 1 vote.
        let f = |votes: f64, s: f64| votes + s / (3.0 * (s.abs() + 1.0));
        assert_eq!(o, vec![f(1.0, -0.5), f(1.0, -0.5), f(1.0, 1.0)]);
    }

    #[test]
    fn binary_score_is_scikit_learns_flipped_decision() {
        let mut s = svc3();
        s.classes.pop();
        s.n_support = vec![2, 2];
        s.support_vectors.truncate(4);
        s.dual_coef = vec![1.0, 0.5, -1.0, -0.5];
        s.intercept = vec![0.1];
        s.validate(1).unwrap();
        let (sc, l) = eval(&s, &[-2.0, 0.25]);
        let d = s.ovo_decision(&[-2.0, 0.25], 1);
        for i in 0..2 {
            assert_eq!(sc[i], -d[i]);
            assert_eq!(l[i], u32::from(d[i] <= 0.0));
        }
    }

    #[test]
    fn refused_inputs_score_nan_with_no_label() {
        let s = svc3();
        let (sc, l) = eval(&s, &[f64::NAN, f64::INFINITY, 0.0]);
        assert!(sc[0].is_nan() && sc[1].is_nan() && sc[2].is_finite());
        assert_eq!(&l[..2], &[NO_LABEL, NO_LABEL]);
        let r = svr();
        let mut out = vec![0.0; 3];
        r.evaluate(
            &[1.0, f64::NEG_INFINITY, 2.0, 3.0, f64::NAN, 0.0],
            2,
            &mut out,
        );
        assert!(out[0].is_nan() && out[2].is_nan() && out[1].is_finite());
    }

    #[test]
    fn svr_sums_in_support_vector_order() {
        let r = svr();
        let x = [0.5, -1.0];
        let k0 = super::super::powi(0.5 * (0.5 * 0.0 + -(1.0 * 1.0)) + 1.0, 2);
        let k1 = super::super::powi(0.5 * (0.5 * 2.0 + -(1.0 * 3.0)) + 1.0, 2);
        let want = (0.0 + 0.5 * k0 + -0.25 * k1) - (-0.125);
        let mut out = [0.0];
        r.evaluate(&x, 2, &mut out);
        assert_eq!(out[0], want);
    }

    #[test]
    fn blocks_and_single_rows_agree() {
        let s = svc3();
        let xs: Vec<f64> = (0..37).map(|i| i as f64 * 0.17 - 3.0).collect();
        let (all, la) = eval(&s, &xs);
        for (i, &x) in xs.iter().enumerate() {
            let (one, lo) = eval(&s, &[x]);
            assert_eq!(one[0].to_bits(), all[i].to_bits());
            assert_eq!(lo[0], la[i]);
        }
    }

    #[test]
    fn multiclass_probability_sums_to_one() {
        let mut s = svc3();
        s.prob_a = vec![-1.5, -2.0, -0.7];
        s.prob_b = vec![0.1, -0.2, 0.05];
        s.validate(1).unwrap();
        let p = s.predict_proba(&[0.3, -1.0, 2.2], 1);
        assert_eq!(p.len(), 9);
        for row in p.chunks_exact(3) {
            let sum: f64 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-9, "{row:?}");
        }
        let (sc, _) = eval(&s, &[0.3]);
        assert_eq!(sc[0], max(&p[..3]));
    }

    #[test]
    fn inconsistent_shapes_are_refused() {
        let ok = svc3();
        ok.validate(1).unwrap();
        type Alter = Box<dyn Fn(&mut Svc)>;
        let cases: Vec<(Alter, &str)> = vec![
            (Box::new(|s| s.classes.truncate(1)), "classes_"),
            (Box::new(|s| s.n_support.push(0)), "_n_support"),
            (Box::new(|s| s.n_support[0] = 3), "support_vectors_"),
            (
                Box::new(|s| {
                    s.dual_coef.pop();
                }),
                "_dual_coef_",
            ),
            (Box::new(|s| s.intercept.push(0.0)), "_intercept_"),
            (Box::new(|s| s.prob_a = vec![1.0; 3]), "probB_"),
            (Box::new(|s| s.prob_b = vec![1.0; 2]), "probA_"),
            (Box::new(|s| s.dual_coef[3] = f64::NAN), "_dual_coef_[3]"),
            (
                Box::new(|s| s.intercept[1] = f64::INFINITY),
                "_intercept_[1]",
            ),
            (
                Box::new(|s| s.support_vectors[0] = f64::NAN),
                "support_vectors_[0]",
            ),
            (Box::new(|s| s.gamma = -1.0), "_gamma"),
            (Box::new(|s| s.gamma = f64::NAN), "_gamma"),
            (Box::new(|s| s.degree = -1), "degree"),
            (Box::new(|s| s.coef0 = f64::NAN), "coef0"),
            (
                Box::new(|s| s.n_support = vec![u32::MAX, u32::MAX, 2]),
                "support_vectors_",
            ),
        ];
        for (f, attr) in cases {
            let mut s = svc3();
            f(&mut s);
            let e = s.validate(1).unwrap_err();
            assert_eq!(e.attribute, attr, "{e}");
        }
        // Two features: 6 support vectors need 12 values.
        assert_eq!(
            svc3().validate(2).unwrap_err().attribute,
            "support_vectors_"
        );
        let mut r = svr();
        r.validate(2).unwrap();
        r.dual_coef.push(1.0);
        assert_eq!(r.validate(2).unwrap_err().attribute, "support_vectors_");
        let mut r = svr();
        r.intercept = f64::NAN;
        assert_eq!(r.validate(2).unwrap_err().attribute, "_intercept_[0]");
    }

    #[test]
    fn a_regressor_without_support_vectors_predicts_its_intercept() {
        let r = Svr {
            support_vectors: Vec::new(),
            dual_coef: Vec::new(),
            ..svr()
        };
        r.validate(3).unwrap();
        let mut out = [0.0; 2];
        r.evaluate(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3, &mut out);
        assert_eq!(out, [0.125, 0.125]);
    }

    #[test]
    fn binary_encoding_round_trips_and_truncation_is_refused() {
        let mut s = svc3();
        s.prob_a = vec![-1.5, -2.0, -0.7];
        s.prob_b = vec![0.1, -0.2, 0.05];
        s.break_ties = true;
        let mut buf = Vec::new();
        s.encode(&mut buf);
        let mut r = Reader { data: &buf, pos: 0 };
        assert_eq!(Svc::decode(&mut r, 1).unwrap(), s);
        assert_eq!(r.pos, buf.len());
        for cut in 0..buf.len() {
            let mut r = Reader {
                data: &buf[..cut],
                pos: 0,
            };
            assert!(Svc::decode(&mut r, 1).is_err());
        }
        let v = svr();
        let mut buf = Vec::new();
        v.encode(&mut buf);
        let mut r = Reader { data: &buf, pos: 0 };
        assert_eq!(Svr::decode(&mut r, 2).unwrap(), v);
        // A class count larger than the data is refused before allocating.
        let mut buf = vec![0u8, 1];
        buf.extend_from_slice(&[0; 20]);
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut r = Reader { data: &buf, pos: 0 };
        assert!(Svc::decode(&mut r, 1).is_err());
    }
}
