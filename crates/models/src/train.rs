//! Training one-class SVMs in Rust, with libsvm's algorithm.
//!
//! scikit-learn's `OneClassSVM.fit` calls the libsvm 3.x copy vendored in
//! `sklearn/svm/src/libsvm/svm.cpp`. This module reproduces that code path
//! step by step, so that a model trained here is the model scikit-learn
//! would have trained on the same data:
//!
//! * **Initial point** (`solve_one_class`): every box bound is `C_i = 1`
//!   (scikit-learn's unit sample weights), `nu_l` is accumulated as
//!   `nu_l += 1 * nu` once per row (a running sum, not `nu * l`), and the
//!   first rows take `alpha_i = min(1, nu_l)`, `nu_l -= alpha_i` while
//!   `nu_l > 0`: `floor(nu*l)` ones, then the fractional rest, then zeros.
//!   The linear term is zero and every `y_i = +1`.
//! * **Solver** (`Solver::Solve`, the SMO of Fan, Chen and Lin, JMLR 2005):
//!   second-order working-set selection (WSS 2: `i` maximises `-y_i G_i`
//!   over `I_up`, `j` minimises `-(G_max + y_j G_j)^2 / a_ij` over `I_low`,
//!   with `a_ij <= 0` replaced by `TAU = 1e-12`), the two-variable update
//!   with libsvm's clipping to the box, the gradient update
//!   `G_k += Q_ik * d_alpha_i + Q_jk * d_alpha_j`, and `G_bar` for bounded
//!   variables.
//! * **Stopping rule**: `G_max + G_max2 < eps` with `eps = tol = 1e-3`
//!   (scikit-learn's default), checked on the active set; when it holds
//!   the whole gradient is rebuilt and the rule is checked again on all
//!   rows before stopping.
//! * **Shrinking** (`shrinking=True`, scikit-learn's default): every
//!   `min(l, 1000)` iterations `do_shrinking` moves bounded variables that
//!   cannot enter the working set out of the active set (libsvm's
//!   `be_shrunk`), with the one-time unshrink (`reconstruct_gradient` and a
//!   full active set) when `G_max1 + G_max2 <= 10 * eps`. The
//!   `reconstruct_gradient` summation order, including its choice between
//!   the two loop orders, is libsvm's.
//! * **rho** (`calculate_rho`): the mean of `y_i G_i` over free variables,
//!   or the midpoint of the bounds when none is free.
//! * **max_iter**: `None` means no limit, as scikit-learn's `max_iter=-1`.
//!
//! # Floating point
//!
//! libsvm keeps the kernel matrix in `Qfloat`, which is `float` (f32):
//! `get_Q` computes each kernel value in f64 and stores `(float)K(x_i,
//! x_j)`, and every use of `Q` (working-set selection, the update, the
//! gradient) reads those f32 values promoted back to f64, while the
//! diagonal `QD` stays f64. This module does the same: kernel values are
//! computed in f64, rounded to f32 for the cached columns, and `QD` is
//! kept in f64. The kernel used in training is libsvm's `Kernel` (not
//! `k_function`, which prediction uses): RBF is
//! `exp(-gamma * (|x_i|^2 + |x_j|^2 - 2 x_i.x_j))` with the squared norms
//! precomputed, and the dot products are BLAS `ddot` through scipy's
//! OpenBLAS, which for a handful of features is the plain running sum
//! `s += a_k * b_k` (checked against `scipy.linalg.blas.ddot` on
//! 3-vectors: no fused multiply-add). Everything else is plain f64
//! arithmetic in libsvm's order, without contraction; `exp` and `tanh` are
//! the platform libm's, as libsvm's.
//!
//! `gamma='scale'` is `1 / (n_features * X.var())` with numpy's `var`
//! (pairwise summation over the flattened array, as `np.add.reduce` does),
//! `'auto'` is `1 / n_features`. The optional `StandardScaler` follows
//! scikit-learn's `_incremental_mean_and_var` (numpy's column sums, the
//! corrected two-pass variance) and `_is_constant_feature` (constant
//! columns get scale 1).
//!
//! # Agreement with scikit-learn
//!
//! Because the iteration path is replicated exactly (same working sets,
//! same shrinking and unshrinking steps, same f32 rounding of the kernel),
//! the fitted `gamma`, scaler, support-vector set, iteration count, dual
//! coefficients and `rho` are **bit-identical** to scikit-learn 1.9.1's on
//! all 26 fixtures in `tests/fixtures/sklearn/train/` (1-D and 3-D, 50 to
//! 2000 rows, nu 0.01 to 0.6, numeric/'scale'/'auto' gamma, with and
//! without StandardScaler, ties and duplicate rows, outliers, constant
//! data, up to 5,493 iterations with several shrinking rounds, both
//! `reconstruct_gradient` loop orders, all four kernels), and on 1,000 of
//! 1,000 sensor-like series of 1,000 readings in `bench/train.py`. Decision values then differ only by the scoring path's
//! 2-ulp `exp` ([`crate::Model::decision_function`]; scikit-learn uses
//! glibc's): measured max 5.7e-14 relative to `max(1, |value|)`, with
//! identical labels. `tests/train.rs` asserts exact equality of all fitted
//! quantities and 1e-12 relative for decision values.
//!
//! The exactness rests on libm's `exp` and the BLAS `ddot` behaving as on
//! the machine that generated the fixtures; where they differ in the last
//! bit, a cached f32 kernel value can differ by one ulp, and the result is
//! then an equally valid libsvm solution within the stopping tolerance
//! (`eps = 1e-3` on the KKT gap) rather than the bit-identical one.

use crate::model::{Estimator, Kernel, Model, OneClassSvm, Scaler};

/// libsvm's `TAU`: replaces a non-positive quadratic coefficient.
const TAU: f64 = 1e-12;

/// How `gamma` is chosen, as scikit-learn's `gamma` parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gamma {
    /// `1 / (n_features * X.var())` (1.0 when the variance is 0).
    Scale,
    /// `1 / n_features`.
    Auto,
    /// A fixed value.
    Value(f64),
}

impl std::str::FromStr for Gamma {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "scale" => Ok(Gamma::Scale),
            "auto" => Ok(Gamma::Auto),
            v => match v.parse::<f64>() {
                Ok(g) if g.is_finite() && g >= 0.0 => Ok(Gamma::Value(g)),
                _ => Err(format!(
                    "gamma must be 'scale', 'auto' or a non-negative number, not {v:?}"
                )),
            },
        }
    }
}

/// Hyper-parameters of `OneClassSVM`, with scikit-learn's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SvmParams {
    /// Kernel (default RBF).
    pub kernel: Kernel,
    /// Kernel coefficient (default `'scale'`).
    pub gamma: Gamma,
    /// Independent term of poly/sigmoid (default 0).
    pub coef0: f64,
    /// Degree of poly (default 3).
    pub degree: i32,
    /// Upper bound on the fraction of training errors, in (0, 1] (default 0.5).
    pub nu: f64,
    /// Stopping tolerance `eps` (scikit-learn's `tol`, default 1e-3).
    pub tol: f64,
    /// libsvm's shrinking heuristic (default true).
    pub shrinking: bool,
    /// Kernel cache budget in bytes (scikit-learn's `cache_size`, 200 MB).
    /// It only affects speed, never the result.
    pub cache_bytes: usize,
    /// Iteration limit; `None` is no limit (scikit-learn's -1).
    pub max_iter: Option<u64>,
}

impl Default for SvmParams {
    fn default() -> Self {
        SvmParams {
            kernel: Kernel::Rbf,
            gamma: Gamma::Scale,
            coef0: 0.0,
            degree: 3,
            nu: 0.5,
            tol: 1e-3,
            shrinking: true,
            cache_bytes: 200 << 20,
            max_iter: None,
        }
    }
}

/// Scaler put in front of the SVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScalerChoice {
    /// A bare `OneClassSVM`.
    #[default]
    None,
    /// `Pipeline(StandardScaler(), OneClassSVM(...))`.
    Standard,
}

impl std::str::FromStr for ScalerChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(ScalerChoice::None),
            "standard" => Ok(ScalerChoice::Standard),
            v => Err(format!("scaler must be 'standard' or 'none', not {v:?}")),
        }
    }
}

/// What to train: the scaler and the SVM's parameters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainParams {
    /// Scaler in front of the SVM.
    pub scaler: ScalerChoice,
    /// The SVM.
    pub svm: SvmParams,
}

/// Facts about one fit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FitInfo {
    /// Rows trained on.
    pub n_samples: usize,
    /// Solver iterations (scikit-learn's `n_iter_`).
    pub iterations: u64,
    /// libsvm's `rho` (the model's intercept is `-rho`).
    pub rho: f64,
    /// Objective value at the solution.
    pub objective: f64,
    /// The resolved gamma.
    pub gamma: f64,
    /// Number of support vectors.
    pub n_support: usize,
    /// Row indices of the support vectors, ascending (scikit-learn's `support_`).
    pub support: Vec<usize>,
    /// True when `max_iter` stopped the solver before convergence.
    pub hit_max_iter: bool,
}

/// Why training failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainError {
    /// No rows.
    #[error("no training rows")]
    Empty,
    /// Values do not form whole rows.
    #[error("{values} values do not form whole rows of {width} features")]
    Ragged {
        /// Number of values.
        values: usize,
        /// Row width.
        width: usize,
    },
    /// A NaN or infinite value.
    #[error("training value {index} is {value}; only finite values can be trained on")]
    NonFinite {
        /// Index in the flat input.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A parameter out of range.
    #[error("{0}")]
    Param(String),
}

/// Fits a model (optionally a StandardScaler, then a OneClassSVM) to
/// `rows` (row-major, `n_features` per row), as scikit-learn's
/// `fit` would.
pub fn train(
    rows: &[f64],
    n_features: usize,
    params: &TrainParams,
) -> Result<(Model, FitInfo), TrainError> {
    check_rows(rows, n_features)?;
    let mut steps = Vec::new();
    let scaled;
    let x: &[f64] = match params.scaler {
        ScalerChoice::None => rows,
        ScalerChoice::Standard => {
            let s = fit_standard_scaler(rows, n_features)?;
            let mut xs = rows.to_vec();
            for row in xs.chunks_exact_mut(n_features) {
                s.transform(row);
            }
            steps.push(s);
            scaled = xs;
            &scaled
        }
    };
    let (svm, info) = fit_one_class_svm(x, n_features, &params.svm)?;
    let model = Model {
        n_features,
        steps,
        estimator: Estimator::OneClassSvm(svm),
    };
    // The same checks as every imported model: a fit that produced an
    // inconsistent model is a bug here, reported rather than stored.
    model
        .validate()
        .map_err(|e| TrainError::Param(e.to_string()))?;
    Ok((model, info))
}

fn check_rows(rows: &[f64], n_features: usize) -> Result<usize, TrainError> {
    if n_features == 0 || !rows.len().is_multiple_of(n_features) {
        return Err(TrainError::Ragged {
            values: rows.len(),
            width: n_features,
        });
    }
    if rows.is_empty() {
        return Err(TrainError::Empty);
    }
    if let Some(index) = rows.iter().position(|v| !v.is_finite()) {
        return Err(TrainError::NonFinite {
            index,
            value: rows[index],
        });
    }
    Ok(rows.len() / n_features)
}

/// numpy's pairwise summation (`np.add.reduce` on a contiguous float64
/// array): blocks of at most 128 summed with 8 accumulators, larger
/// arrays split in halves rounded down to a multiple of 8.
pub fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let end = n - n % 8;
        let mut i = 8;
        while i < end {
            for k in 0..8 {
                r[k] += a[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[end..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        numpy_sum(&a[..n2]) + numpy_sum(&a[n2..])
    }
}

/// numpy's `X.var()` over all values (population variance).
pub fn numpy_var(a: &[f64]) -> f64 {
    let n = a.len() as f64;
    let mean = numpy_sum(a) / n;
    let sq: Vec<f64> = a
        .iter()
        .map(|v| {
            let d = v - mean;
            d * d
        })
        .collect();
    numpy_sum(&sq) / n
}

/// Column sums as numpy's `X.sum(axis=0)` on a C-ordered `(n, d)` array:
/// pairwise for one column (the reduction runs over contiguous memory),
/// a running sum per column otherwise (the inner loop runs along rows).
fn column_sums(x: &[f64], d: usize) -> Vec<f64> {
    if d == 1 {
        return vec![numpy_sum(x)];
    }
    let mut out = vec![0.0; d];
    for row in x.chunks_exact(d) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
    out
}

/// Fits scikit-learn's `StandardScaler()` (with mean and std): the mean,
/// the population standard deviation from the corrected two-pass
/// variance, and scale 1 for constant columns.
pub fn fit_standard_scaler(rows: &[f64], n_features: usize) -> Result<Scaler, TrainError> {
    let n = check_rows(rows, n_features)?;
    let d = n_features;
    let nf = n as f64;
    let sum = column_sums(rows, d);
    let mean: Vec<f64> = sum.iter().map(|s| s / nf).collect();
    let temp: Vec<f64> = rows
        .chunks_exact(d)
        .flat_map(|r| r.iter().zip(&mean).map(|(v, m)| v - m))
        .collect();
    let correction = column_sums(&temp, d);
    let sq: Vec<f64> = temp.iter().map(|t| t * t).collect();
    let mut unnorm = column_sums(&sq, d);
    for (u, c) in unnorm.iter_mut().zip(&correction) {
        *u -= c * c / nf;
    }
    let var: Vec<f64> = unnorm.iter().map(|u| u / nf).collect();
    let eps = f64::EPSILON;
    let scale: Vec<f64> = var
        .iter()
        .zip(&mean)
        .map(|(&v, &m)| {
            let t = nf * m * eps;
            let upper = nf * eps * v + t * t;
            if v <= upper {
                1.0
            } else {
                v.sqrt()
            }
        })
        .collect();
    Ok(Scaler::StandardScaler {
        mean: Some(mean),
        scale: Some(scale),
    })
}

/// The gamma scikit-learn resolves for `x` (scaled rows).
pub fn resolve_gamma(gamma: Gamma, x: &[f64], n_features: usize) -> f64 {
    match gamma {
        Gamma::Value(g) => g,
        Gamma::Auto => 1.0 / n_features as f64,
        Gamma::Scale => {
            let var = numpy_var(x);
            if var != 0.0 {
                1.0 / (n_features as f64 * var)
            } else {
                1.0
            }
        }
    }
}

/// Fits a bare `OneClassSVM` to `x` (row-major, already scaled).
pub fn fit_one_class_svm(
    x: &[f64],
    n_features: usize,
    p: &SvmParams,
) -> Result<(OneClassSvm, FitInfo), TrainError> {
    let l = check_rows(x, n_features)?;
    if p.nu.is_nan() || p.nu <= 0.0 || p.nu > 1.0 {
        return Err(TrainError::Param(format!(
            "nu must be in (0, 1], not {}",
            p.nu
        )));
    }
    if p.tol.is_nan() || p.tol <= 0.0 {
        return Err(TrainError::Param(format!(
            "tol must be positive, not {}",
            p.tol
        )));
    }
    if let Gamma::Value(g) = p.gamma {
        if !(g.is_finite() && g >= 0.0) {
            return Err(TrainError::Param(format!(
                "gamma must be non-negative, not {g}"
            )));
        }
    }
    // libsvm's svm_check_parameter refuses a negative degree for every
    // kernel, not only poly; so does Model::validate.
    if p.degree < 0 {
        return Err(TrainError::Param(format!(
            "degree must be non-negative, not {}",
            p.degree
        )));
    }
    let gamma = resolve_gamma(p.gamma, x, n_features);

    // solve_one_class: C_i = W_i = 1, nu_l accumulated row by row.
    let c = vec![1.0f64; l];
    let mut nu_l = 0.0f64;
    for ci in &c {
        nu_l += ci * p.nu;
    }
    let mut alpha = vec![0.0f64; l];
    let mut i = 0;
    while nu_l > 0.0 && i < l {
        alpha[i] = if c[i] < nu_l { c[i] } else { nu_l };
        nu_l -= alpha[i];
        i += 1;
    }
    let q = OneClassQ::new(
        x,
        n_features,
        p.kernel,
        gamma,
        p.coef0,
        p.degree,
        p.cache_bytes,
    );
    let mut solver = Solver::new(q, vec![0.0; l], vec![1; l], alpha, c, p.tol);
    let sol = solver.solve(p.shrinking, p.max_iter);

    let mut support = Vec::new();
    let mut support_vectors = Vec::new();
    let mut dual_coef = Vec::new();
    for (i, &a) in sol.alpha.iter().enumerate() {
        if a.abs() > 0.0 {
            support.push(i);
            support_vectors.extend_from_slice(&x[i * n_features..(i + 1) * n_features]);
            dual_coef.push(a);
        }
    }
    let svm = OneClassSvm {
        kernel: p.kernel,
        gamma,
        coef0: p.coef0,
        degree: p.degree,
        support_vectors,
        dual_coef,
        intercept: -sol.rho,
    };
    let info = FitInfo {
        n_samples: l,
        iterations: sol.iterations,
        rho: sol.rho,
        objective: sol.obj,
        gamma,
        n_support: support.len(),
        support,
        hit_max_iter: sol.timed_out,
    };
    Ok((svm, info))
}

/// libsvm's `ONE_CLASS_Q` with its `Kernel` and `Cache`: f32 columns of
/// the kernel matrix, indexed by the solver's current (permuted) order.
struct OneClassQ {
    d: usize,
    /// Rows in the solver's current order.
    x: Vec<f64>,
    /// `dot(x_i, x_i)` for RBF.
    x_square: Vec<f64>,
    qd: Vec<f64>,
    kernel: Kernel,
    gamma: f64,
    coef0: f64,
    degree: i32,
    /// Cached column prefixes (`cols[i][..len]`), libsvm's `head_t`.
    cols: Vec<Vec<f32>>,
    /// Last use of each column, for least-recently-used eviction.
    stamp: Vec<u64>,
    clock: u64,
    /// Floats still available in the cache budget.
    free: usize,
}

impl OneClassQ {
    fn new(
        x: &[f64],
        d: usize,
        kernel: Kernel,
        gamma: f64,
        coef0: f64,
        degree: i32,
        cache_bytes: usize,
    ) -> Self {
        let l = x.len() / d;
        let head = 32; // sizeof(head_t) on 64-bit targets
        let budget = (cache_bytes / 4).saturating_sub(l * head / 4).max(2 * l);
        let mut q = OneClassQ {
            d,
            x: x.to_vec(),
            x_square: Vec::new(),
            qd: Vec::new(),
            kernel,
            gamma,
            coef0,
            degree,
            cols: vec![Vec::new(); l],
            stamp: vec![0; l],
            clock: 0,
            free: budget,
        };
        if kernel == Kernel::Rbf {
            q.x_square = (0..l).map(|i| q.dot(i, i)).collect();
        }
        q.qd = (0..l).map(|i| q.kernel_fn(i, i)).collect();
        q
    }

    /// BLAS `ddot` as scipy's OpenBLAS computes it for few features: a
    /// chain of fused multiply-adds.
    #[inline]
    fn dot(&self, i: usize, j: usize) -> f64 {
        let d = self.d;
        let a = &self.x[i * d..(i + 1) * d];
        let b = &self.x[j * d..(j + 1) * d];
        if d == 1 {
            return a[0] * b[0];
        }
        let mut s = 0.0f64;
        for (u, v) in a.iter().zip(b) {
            s += u * v;
        }
        s
    }

    /// libsvm's `Kernel::kernel_function(i, j)`.
    #[inline]
    fn kernel_fn(&self, i: usize, j: usize) -> f64 {
        match self.kernel {
            Kernel::Rbf => {
                (-self.gamma * (self.x_square[i] + self.x_square[j] - 2.0 * self.dot(i, j))).exp()
            }
            Kernel::Linear => self.dot(i, j),
            Kernel::Poly => {
                crate::model::powi(self.gamma * self.dot(i, j) + self.coef0, self.degree)
            }
            Kernel::Sigmoid => (self.gamma * self.dot(i, j) + self.coef0).tanh(),
        }
    }

    /// Makes sure `cols[i][..len]` is computed (libsvm's `get_Q`).
    fn ensure(&mut self, i: usize, len: usize) {
        self.clock += 1;
        self.stamp[i] = self.clock;
        let have = self.cols[i].len();
        if have >= len {
            return;
        }
        let more = len - have;
        while self.free < more {
            // Evict the least recently used other column.
            let victim = (0..self.cols.len())
                .filter(|&k| k != i && !self.cols[k].is_empty())
                .min_by_key(|&k| self.stamp[k]);
            let Some(v) = victim else { break };
            self.free += self.cols[v].len();
            self.cols[v] = Vec::new();
        }
        self.free = self.free.saturating_sub(more);
        let mut col = std::mem::take(&mut self.cols[i]);
        col.reserve_exact(more);
        if self.kernel == Kernel::Rbf && self.d == 1 {
            // The same expression as `kernel_fn`, hoisted for speed.
            let xi = self.x[i];
            let sqi = self.x_square[i];
            let ng = -self.gamma;
            for j in have..len {
                let k = (ng * (sqi + self.x_square[j] - 2.0 * (xi * self.x[j]))).exp();
                col.push(k as f32);
            }
        } else {
            for j in have..len {
                col.push(self.kernel_fn(i, j) as f32);
            }
        }
        self.cols[i] = col;
    }

    #[inline]
    fn col(&self, i: usize) -> &[f32] {
        &self.cols[i]
    }

    /// libsvm's `ONE_CLASS_Q::swap_index`: cache, rows, norms, diagonal.
    fn swap_index(&mut self, i: usize, j: usize) {
        if i == j {
            return;
        }
        self.cols.swap(i, j);
        self.stamp.swap(i, j);
        let (lo, hi) = if i < j { (i, j) } else { (j, i) };
        for c in self.cols.iter_mut() {
            if c.len() > lo {
                if c.len() > hi {
                    c.swap(lo, hi);
                } else {
                    // libsvm gives the column up; keeping the valid
                    // prefix is equivalent (values depend only on rows).
                    self.free += c.len() - lo;
                    c.truncate(lo);
                }
            }
        }
        let d = self.d;
        for k in 0..d {
            self.x.swap(i * d + k, j * d + k);
        }
        if !self.x_square.is_empty() {
            self.x_square.swap(i, j);
        }
        self.qd.swap(i, j);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Lower,
    Upper,
    Free,
}

struct Solution {
    alpha: Vec<f64>,
    rho: f64,
    obj: f64,
    iterations: u64,
    timed_out: bool,
}

/// libsvm's `Solver` (not `Solver_NU`; one-class uses the plain one).
struct Solver {
    q: OneClassQ,
    l: usize,
    active_size: usize,
    y: Vec<i8>,
    g: Vec<f64>,
    status: Vec<Status>,
    alpha: Vec<f64>,
    eps: f64,
    c: Vec<f64>,
    p: Vec<f64>,
    active_set: Vec<usize>,
    g_bar: Vec<f64>,
    unshrink: bool,
}

impl Solver {
    fn new(q: OneClassQ, p: Vec<f64>, y: Vec<i8>, alpha: Vec<f64>, c: Vec<f64>, eps: f64) -> Self {
        let l = alpha.len();
        let mut s = Solver {
            q,
            l,
            active_size: l,
            y,
            g: vec![0.0; l],
            status: vec![Status::Lower; l],
            alpha,
            eps,
            c,
            p,
            active_set: (0..l).collect(),
            g_bar: vec![0.0; l],
            unshrink: false,
        };
        for i in 0..l {
            s.update_alpha_status(i);
        }
        s
    }

    #[inline]
    fn update_alpha_status(&mut self, i: usize) {
        self.status[i] = if self.alpha[i] >= self.c[i] {
            Status::Upper
        } else if self.alpha[i] <= 0.0 {
            Status::Lower
        } else {
            Status::Free
        };
    }

    #[inline]
    fn is_upper(&self, i: usize) -> bool {
        self.status[i] == Status::Upper
    }
    #[inline]
    fn is_lower(&self, i: usize) -> bool {
        self.status[i] == Status::Lower
    }
    #[inline]
    fn is_free(&self, i: usize) -> bool {
        self.status[i] == Status::Free
    }

    fn swap_index(&mut self, i: usize, j: usize) {
        self.q.swap_index(i, j);
        self.y.swap(i, j);
        self.g.swap(i, j);
        self.status.swap(i, j);
        self.alpha.swap(i, j);
        self.p.swap(i, j);
        self.active_set.swap(i, j);
        self.g_bar.swap(i, j);
        self.c.swap(i, j);
    }

    fn reconstruct_gradient(&mut self) {
        let (l, active) = (self.l, self.active_size);
        if active == l {
            return;
        }
        for j in active..l {
            self.g[j] = self.g_bar[j] + self.p[j];
        }
        let nr_free = (0..active).filter(|&j| self.is_free(j)).count();
        if nr_free * l > 2 * active * (l - active) {
            for i in active..l {
                self.q.ensure(i, active);
                let q_i = &self.q.col(i)[..active];
                let mut g_i = self.g[i];
                for ((&q, &a), &st) in q_i.iter().zip(&self.alpha).zip(&self.status) {
                    if st == Status::Free {
                        g_i += a * f64::from(q);
                    }
                }
                self.g[i] = g_i;
            }
        } else {
            for i in 0..active {
                if self.is_free(i) {
                    self.q.ensure(i, l);
                    let q_i = &self.q.col(i)[active..l];
                    let alpha_i = self.alpha[i];
                    for (g, &q) in self.g[active..l].iter_mut().zip(q_i) {
                        *g += alpha_i * f64::from(q);
                    }
                }
            }
        }
    }

    fn solve(&mut self, shrinking: bool, max_iter: Option<u64>) -> Solution {
        let l = self.l;
        // Initial gradient.
        for i in 0..l {
            self.g[i] = self.p[i];
            self.g_bar[i] = 0.0;
        }
        for i in 0..l {
            if !self.is_lower(i) {
                self.q.ensure(i, l);
                let q_i = &self.q.col(i)[..l];
                let alpha_i = self.alpha[i];
                for (g, &q) in self.g.iter_mut().zip(q_i) {
                    *g += alpha_i * f64::from(q);
                }
                if self.status[i] == Status::Upper {
                    let c_i = self.c[i];
                    for (gb, &q) in self.g_bar.iter_mut().zip(q_i) {
                        *gb += c_i * f64::from(q);
                    }
                }
            }
        }

        let mut iter: u64 = 0;
        let mut timed_out = false;
        let mut counter = l.min(1000) + 1;
        loop {
            if let Some(m) = max_iter {
                if iter >= m {
                    timed_out = true;
                    break;
                }
            }
            counter -= 1;
            if counter == 0 {
                counter = l.min(1000);
                if shrinking {
                    self.do_shrinking();
                }
            }
            let (i, j) = match self.select_working_set() {
                Some(ij) => ij,
                None => {
                    self.reconstruct_gradient();
                    self.active_size = l;
                    match self.select_working_set() {
                        Some(ij) => {
                            counter = 1;
                            ij
                        }
                        None => break,
                    }
                }
            };
            iter += 1;
            self.update_pair(i, j);
        }

        let rho = self.calculate_rho();
        let mut v = 0.0;
        for i in 0..l {
            v += self.alpha[i] * (self.g[i] + self.p[i]);
        }
        let mut alpha = vec![0.0; l];
        for i in 0..l {
            alpha[self.active_set[i]] = self.alpha[i];
        }
        Solution {
            alpha,
            rho,
            obj: v / 2.0,
            iterations: iter,
            timed_out,
        }
    }

    fn update_pair(&mut self, i: usize, j: usize) {
        let active = self.active_size;
        self.q.ensure(i, active);
        self.q.ensure(j, active);
        let c_i = self.c[i];
        let c_j = self.c[j];
        let old_alpha_i = self.alpha[i];
        let old_alpha_j = self.alpha[j];
        {
            let q_i = self.q.col(i);
            let qd = &self.q.qd;
            let g = &self.g;
            let alpha = &mut self.alpha;
            if self.y[i] != self.y[j] {
                let mut quad_coef = qd[i] + qd[j] + 2.0 * f64::from(q_i[j]);
                if quad_coef <= 0.0 {
                    quad_coef = TAU;
                }
                let delta = (-g[i] - g[j]) / quad_coef;
                let diff = alpha[i] - alpha[j];
                alpha[i] += delta;
                alpha[j] += delta;
                if diff > 0.0 {
                    if alpha[j] < 0.0 {
                        alpha[j] = 0.0;
                        alpha[i] = diff;
                    }
                } else if alpha[i] < 0.0 {
                    alpha[i] = 0.0;
                    alpha[j] = -diff;
                }
                if diff > c_i - c_j {
                    if alpha[i] > c_i {
                        alpha[i] = c_i;
                        alpha[j] = c_i - diff;
                    }
                } else if alpha[j] > c_j {
                    alpha[j] = c_j;
                    alpha[i] = c_j + diff;
                }
            } else {
                let mut quad_coef = qd[i] + qd[j] - 2.0 * f64::from(q_i[j]);
                if quad_coef <= 0.0 {
                    quad_coef = TAU;
                }
                let delta = (g[i] - g[j]) / quad_coef;
                let sum = alpha[i] + alpha[j];
                alpha[i] -= delta;
                alpha[j] += delta;
                if sum > c_i {
                    if alpha[i] > c_i {
                        alpha[i] = c_i;
                        alpha[j] = sum - c_i;
                    }
                } else if alpha[j] < 0.0 {
                    alpha[j] = 0.0;
                    alpha[i] = sum;
                }
                if sum > c_j {
                    if alpha[j] > c_j {
                        alpha[j] = c_j;
                        alpha[i] = sum - c_j;
                    }
                } else if alpha[i] < 0.0 {
                    alpha[i] = 0.0;
                    alpha[j] = sum;
                }
            }
        }

        // Update G.
        let delta_alpha_i = self.alpha[i] - old_alpha_i;
        let delta_alpha_j = self.alpha[j] - old_alpha_j;
        {
            let q_i = &self.q.col(i)[..active];
            let q_j = &self.q.col(j)[..active];
            for ((g, &a), &b) in self.g[..active].iter_mut().zip(q_i).zip(q_j) {
                *g += f64::from(a) * delta_alpha_i + f64::from(b) * delta_alpha_j;
            }
        }

        // Update alpha_status and G_bar.
        let ui = self.is_upper(i);
        let uj = self.is_upper(j);
        self.update_alpha_status(i);
        self.update_alpha_status(j);
        let l = self.l;
        if ui != self.is_upper(i) {
            self.q.ensure(i, l);
            let q_i = &self.q.col(i)[..l];
            if ui {
                for (gb, &q) in self.g_bar.iter_mut().zip(q_i) {
                    *gb -= c_i * f64::from(q);
                }
            } else {
                for (gb, &q) in self.g_bar.iter_mut().zip(q_i) {
                    *gb += c_i * f64::from(q);
                }
            }
        }
        if uj != self.is_upper(j) {
            self.q.ensure(j, l);
            let q_j = &self.q.col(j)[..l];
            if uj {
                for (gb, &q) in self.g_bar.iter_mut().zip(q_j) {
                    *gb -= c_j * f64::from(q);
                }
            } else {
                for (gb, &q) in self.g_bar.iter_mut().zip(q_j) {
                    *gb += c_j * f64::from(q);
                }
            }
        }
    }

    /// WSS 2; `None` when optimal (libsvm's return value 1).
    fn select_working_set(&mut self) -> Option<(usize, usize)> {
        let active = self.active_size;
        let mut gmax = f64::NEG_INFINITY;
        let mut gmax2 = f64::NEG_INFINITY;
        let mut gmax_idx: Option<usize> = None;
        let mut gmin_idx: Option<usize> = None;
        let mut obj_diff_min = f64::INFINITY;

        for t in 0..active {
            if self.y[t] == 1 {
                if !self.is_upper(t) && -self.g[t] >= gmax {
                    gmax = -self.g[t];
                    gmax_idx = Some(t);
                }
            } else if !self.is_lower(t) && self.g[t] >= gmax {
                gmax = self.g[t];
                gmax_idx = Some(t);
            }
        }

        let Some(i) = gmax_idx else {
            // Gmax = -INF: no j can qualify, and libsvm returns 1.
            return None;
        };
        self.q.ensure(i, active);
        let q_i = self.q.col(i);
        let qd = &self.q.qd;
        let yi = f64::from(self.y[i]);
        for j in 0..active {
            if self.y[j] == 1 {
                if self.status[j] != Status::Lower {
                    let grad_diff = gmax + self.g[j];
                    if self.g[j] >= gmax2 {
                        gmax2 = self.g[j];
                    }
                    if grad_diff > 0.0 {
                        let quad_coef = qd[i] + qd[j] - 2.0 * yi * f64::from(q_i[j]);
                        let obj_diff = if quad_coef > 0.0 {
                            -(grad_diff * grad_diff) / quad_coef
                        } else {
                            -(grad_diff * grad_diff) / TAU
                        };
                        if obj_diff <= obj_diff_min {
                            gmin_idx = Some(j);
                            obj_diff_min = obj_diff;
                        }
                    }
                }
            } else if self.status[j] != Status::Upper {
                let grad_diff = gmax - self.g[j];
                if -self.g[j] >= gmax2 {
                    gmax2 = -self.g[j];
                }
                if grad_diff > 0.0 {
                    let quad_coef = qd[i] + qd[j] + 2.0 * yi * f64::from(q_i[j]);
                    let obj_diff = if quad_coef > 0.0 {
                        -(grad_diff * grad_diff) / quad_coef
                    } else {
                        -(grad_diff * grad_diff) / TAU
                    };
                    if obj_diff <= obj_diff_min {
                        gmin_idx = Some(j);
                        obj_diff_min = obj_diff;
                    }
                }
            }
        }
        match gmin_idx {
            Some(j) if gmax + gmax2 >= self.eps => Some((i, j)),
            _ => None,
        }
    }

    fn be_shrunk(&self, i: usize, gmax1: f64, gmax2: f64) -> bool {
        if self.is_upper(i) {
            if self.y[i] == 1 {
                -self.g[i] > gmax1
            } else {
                -self.g[i] > gmax2
            }
        } else if self.is_lower(i) {
            if self.y[i] == 1 {
                self.g[i] > gmax2
            } else {
                self.g[i] > gmax1
            }
        } else {
            false
        }
    }

    fn do_shrinking(&mut self) {
        let mut gmax1 = f64::NEG_INFINITY;
        let mut gmax2 = f64::NEG_INFINITY;
        for i in 0..self.active_size {
            let g = self.g[i];
            if self.y[i] == 1 {
                if !self.is_upper(i) && -g >= gmax1 {
                    gmax1 = -g;
                }
                if !self.is_lower(i) && g >= gmax2 {
                    gmax2 = g;
                }
            } else {
                if !self.is_upper(i) && -g >= gmax2 {
                    gmax2 = -g;
                }
                if !self.is_lower(i) && g >= gmax1 {
                    gmax1 = g;
                }
            }
        }
        if !self.unshrink && gmax1 + gmax2 <= self.eps * 10.0 {
            self.unshrink = true;
            self.reconstruct_gradient();
            self.active_size = self.l;
        }
        let mut i = 0;
        while i < self.active_size {
            if self.be_shrunk(i, gmax1, gmax2) {
                self.active_size -= 1;
                while self.active_size > i {
                    if !self.be_shrunk(self.active_size, gmax1, gmax2) {
                        self.swap_index(i, self.active_size);
                        break;
                    }
                    self.active_size -= 1;
                }
            }
            i += 1;
        }
    }

    fn calculate_rho(&self) -> f64 {
        let mut nr_free = 0usize;
        let (mut ub, mut lb, mut sum_free) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
        for i in 0..self.active_size {
            let y_g = f64::from(self.y[i]) * self.g[i];
            if self.is_upper(i) {
                if self.y[i] == -1 {
                    ub = if ub < y_g { ub } else { y_g };
                } else {
                    lb = if lb > y_g { lb } else { y_g };
                }
            } else if self.is_lower(i) {
                if self.y[i] == 1 {
                    ub = if ub < y_g { ub } else { y_g };
                } else {
                    lb = if lb > y_g { lb } else { y_g };
                }
            } else {
                nr_free += 1;
                sum_free += y_g;
            }
        }
        if nr_free > 0 {
            sum_free / nr_free as f64
        } else {
            (ub + lb) / 2.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_sum_small_and_large() {
        let v: Vec<f64> = (0..1000).map(|i| (i as f64) * 0.1).collect();
        let s = numpy_sum(&v);
        assert!((s - 49950.0).abs() < 1e-9);
        assert_eq!(numpy_sum(&[1.0, 2.0]), 3.0);
    }

    #[test]
    fn initial_alpha_and_fit() {
        let x: Vec<f64> = (0..50).map(|i| ((i * 37) % 50) as f64 / 10.0).collect();
        let p = TrainParams {
            scaler: ScalerChoice::Standard,
            svm: SvmParams {
                nu: 0.1,
                ..SvmParams::default()
            },
        };
        let (model, info) = train(&x, 1, &p).unwrap();
        assert!(info.n_support >= 5);
        let Estimator::OneClassSvm(svm) = &model.estimator else {
            unreachable!()
        };
        let sum: f64 = svm.dual_coef.iter().sum();
        assert!((sum - 5.0).abs() < 1e-9, "sum of alphas {sum}");
        let pred = model.predict(&x, 1).unwrap();
        let outliers = pred.iter().filter(|&&p| p < 0).count();
        assert!(outliers <= 10, "{outliers} outliers");
    }

    #[test]
    fn constant_data() {
        let x = vec![3.5; 20];
        let p = TrainParams {
            scaler: ScalerChoice::Standard,
            svm: SvmParams::default(),
        };
        let (model, info) = train(&x, 1, &p).unwrap();
        assert_eq!(info.gamma, 1.0);
        let mut dec = Vec::new();
        model.decision_function(&[3.5], 1, &mut dec).unwrap();
        assert_eq!(dec[0], 0.0);
    }

    #[test]
    fn rejects_bad_input() {
        let p = TrainParams::default();
        assert_eq!(train(&[], 1, &p).unwrap_err(), TrainError::Empty);
        assert!(matches!(
            train(&[1.0, f64::NAN], 1, &p),
            Err(TrainError::NonFinite { index: 1, .. })
        ));
        let mut bad = TrainParams::default();
        bad.svm.nu = 0.0;
        assert!(matches!(train(&[1.0], 1, &bad), Err(TrainError::Param(_))));
    }
}
