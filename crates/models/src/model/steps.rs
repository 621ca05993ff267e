//! Preprocessing steps: every transform before the final estimator.
//!
//! Each step follows its scikit-learn `transform` operation by operation
//! in f64, in the release it was pickled by (the translator picks the
//! release's rule: see the `Step` variants). A step either keeps the
//! row's width and works in place ([`Step::transform`]) or writes a row
//! of another width ([`Step::transform_into`]: `SimpleImputer` dropping
//! empty columns, `PCA`, `PolynomialFeatures`).
//!
//! # Rows scikit-learn would refuse
//!
//! scikit-learn refuses a whole batch when one value is one its step does
//! not accept; fleetscore refuses only that row, by making every value the
//! step writes for it NaN, which the final estimator scores as a refused
//! row. `Normalizer`, `Binarizer`, `PCA` and `PolynomialFeatures` accept
//! only finite values (their `transform` validates with scikit-learn's
//! default `ensure_all_finite=True`); a Box-Cox `PowerTransformer`
//! accepts only positive values. The other steps keep NaN as NaN
//! (`allow-nan`), and `SimpleImputer` replaces it.
//!
//! # Where numpy and BLAS decide the last bits
//!
//! * `Normalizer(norm='l2')` squares and sums a row as numpy 2.4's
//!   `einsum('ij,ij->i')` does on x86-64 (two SSE2 lanes, eight values per
//!   step, no fused multiply-add).
//! * `PCA` projects rows with BLAS. The dot products here follow
//!   OpenBLAS 0.3's Haswell kernels as numpy 2.4 calls them for a batch
//!   of rows: `dgemm` (one fused multiply-add chain) for two or more
//!   components, `dgemv_t` for one, and for the mean's projection
//!   (scikit-learn 1.5 and later) `dgemv_t` (`dgemv_n` when
//!   `components_` is column-major), or a plain `ddot` for one
//!   component. Other BLAS builds (MKL, another CPU's kernels) sum in
//!   another order, so agreement is within a few ulps, not always bit for
//!   bit.
//! * A Yeo-Johnson `PowerTransformer` calls numpy's `log1p`/`expm1` (1.9)
//!   or `power` (before 1.9), which numpy computes with SIMD code on
//!   AVX-512 machines; fleetscore uses the C library's, which differ in
//!   the last bit for a few percent of values. Box-Cox calls scipy's C
//!   `boxcox`, which uses the C library as fleetscore does.

use serde::{Deserialize, Serialize};

use super::tree::numpy_sum;
use super::{check_finite, check_scale, check_width, InvalidModel};
use crate::format::{put_f64s, put_u32, FormatError, Reader};

/// `np.finfo(np.float64).eps`, also `np.spacing(1.0)`.
const EPS: f64 = f64::EPSILON;

/// scikit-learn's `BOUNDS_THRESHOLD` (`preprocessing/_data.py`).
const BOUNDS_THRESHOLD: f64 = 1e-7;

/// The highest `PolynomialFeatures` degree accepted.
pub const MAX_POLY_DEGREE: u32 = 64;

/// The most columns a step may write per row (`PolynomialFeatures`
/// grows fast with its degree).
pub const MAX_STEP_WIDTH: usize = 1 << 16;

/// A preprocessing step fitted by scikit-learn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
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
    /// `MaxAbsScaler`: `x / scale`, then clipped to `[-1, 1]` when `clip`.
    MaxAbsScaler {
        /// `scale_`
        scale: Vec<f64>,
        /// `clip=True` (scikit-learn 1.8 and later).
        clip: bool,
    },
    /// `Normalizer`: each row divided by its norm.
    Normalizer {
        /// Which norm.
        norm: Norm,
        /// How a zero norm is kept from dividing: from scikit-learn 1.0 a
        /// norm below `10 * eps` becomes 1 (`_handle_zeros_in_scale`),
        /// before only a norm of exactly 0 did.
        near_zero: bool,
    },
    /// `Binarizer`: 1 where `x > threshold`, else 0.
    Binarizer {
        /// `threshold`
        threshold: f64,
    },
    /// `SimpleImputer` (NaN as the missing value): each kept column's
    /// NaN becomes its fill value. Columns whose statistic is NaN (no
    /// value seen in fit) are dropped unless `keep_empty_features=True`.
    SimpleImputer {
        /// Width of the rows it receives (`statistics_`'s length).
        n_features_in: usize,
        /// The input columns it keeps, ascending.
        keep: Vec<u32>,
        /// `statistics_` of each kept column.
        fill: Vec<f64>,
    },
    /// `PCA`: the projection on `n_components` components, optionally
    /// whitened.
    Pca {
        /// `mean_`
        mean: Vec<f64>,
        /// `components_`, row-major `n_components x n_features`.
        components: Vec<f64>,
        /// `n_components_`: the width it writes.
        n_components: usize,
        /// The divisor of each component when `whiten=True`:
        /// `sqrt(explained_variance_)`, from 1.5 no less than `eps`.
        whiten: Option<Vec<f64>>,
        /// Whether the mean is subtracted before projecting
        /// (`(X - mean_) @ components_.T`, scikit-learn 1.4 and older)
        /// or projected and subtracted after (`X @ components_.T -
        /// mean_ @ components_.T`, 1.5 and later).
        center_first: bool,
        /// Whether `components_` is stored column-major (the
        /// `covariance_eigh` solver leaves it so, and a pickle keeps
        /// it): numpy then projects the mean with another BLAS routine.
        column_major: bool,
    },
    /// `PolynomialFeatures`: products of the input columns up to a
    /// degree, in scikit-learn's column order (bias, then each degree
    /// from `min_degree` in the order of `itertools.combinations` or
    /// `combinations_with_replacement`).
    PolynomialFeatures {
        /// `n_features_in_`
        n_features_in: usize,
        /// `_min_degree` (0 unless `degree` is a pair, 1.0 and later).
        min_degree: u32,
        /// `_max_degree` (`degree`).
        max_degree: u32,
        /// `interaction_only`: no feature twice in a product.
        interaction_only: bool,
        /// `include_bias`: a first column of ones.
        include_bias: bool,
        /// How a product is multiplied out.
        product: PolyProduct,
    },
    /// `QuantileTransformer`: each value placed on its feature's
    /// quantiles (`np.interp` both ways, averaged), then mapped to the
    /// output distribution.
    QuantileTransformer {
        /// `output_distribution`, with the release's bounds rule.
        output: QuantileOutput,
        /// `references_`: `n_quantiles` probabilities.
        references: Vec<f64>,
        /// `quantiles_` per feature: `n_features x n_quantiles`
        /// (scikit-learn's `quantiles_` transposed).
        quantiles: Vec<f64>,
    },
    /// `PowerTransformer`: a power transform per feature, then the
    /// embedded `StandardScaler` when `standardize=True`.
    PowerTransformer {
        /// `method`, with the release's formula.
        method: PowerMethod,
        /// `lambdas_`
        lambdas: Vec<f64>,
        /// `_scaler.mean_` when `standardize=True`.
        mean: Option<Vec<f64>>,
        /// `_scaler.scale_` when `standardize=True`.
        scale: Option<Vec<f64>>,
    },
}

/// `Normalizer.norm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// `l1`: `sum(|x|)`, numpy's pairwise sum.
    L1,
    /// `l2`: `sqrt(einsum('ij,ij->i', X, X))`.
    L2,
    /// `max`: `max(|x|)`.
    Max,
    /// `max` before scikit-learn 0.23: `max(x)`, without the absolute
    /// value.
    SignedMax,
}

/// How `PolynomialFeatures` multiplies a product out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolyProduct {
    /// 0.22 and later: a degree-d column is a degree-(d-1) column times
    /// a feature, so `x_a x_b x_c = (x_c * x_b) * x_a`.
    Nested,
    /// 0.20 and 0.21: `X[:, comb].prod(1)`, so `x_a x_b x_c = (x_a *
    /// x_b) * x_c`.
    Sequential,
}

/// `QuantileTransformer.output_distribution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantileOutput {
    /// `uniform` (0.21 and later): a value equal to the first (last)
    /// quantile maps to 0 (1).
    Uniform,
    /// `normal`: values within `1e-7` of the ends map to 0 and 1, then
    /// `norm.ppf`, clipped to `norm.ppf(1e-7 - eps)` and its opposite.
    Normal,
    /// `uniform` in 0.20: the `1e-7` ends as for `normal`, then
    /// `uniform.ppf` and the same clip at `1e-7 - eps`.
    UniformClipped,
}

/// `PowerTransformer.method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerMethod {
    /// `yeo-johnson` from 1.9 (`scipy.stats.yeojohnson`): `expm1(l *
    /// log1p(x)) / l`.
    YeoJohnson,
    /// `yeo-johnson` before 1.9 (scikit-learn's own): `((x + 1)**l - 1)
    /// / l`.
    YeoJohnsonPow,
    /// `box-cox` (`scipy.special.boxcox`); only positive values.
    BoxCox,
}

impl Step {
    /// scikit-learn's class name.
    pub fn name(&self) -> &'static str {
        match self {
            Step::StandardScaler { .. } => "StandardScaler",
            Step::MinMaxScaler { .. } => "MinMaxScaler",
            Step::RobustScaler { .. } => "RobustScaler",
            Step::MaxAbsScaler { .. } => "MaxAbsScaler",
            Step::Normalizer { .. } => "Normalizer",
            Step::Binarizer { .. } => "Binarizer",
            Step::SimpleImputer { .. } => "SimpleImputer",
            Step::Pca { .. } => "PCA",
            Step::PolynomialFeatures { .. } => "PolynomialFeatures",
            Step::QuantileTransformer { .. } => "QuantileTransformer",
            Step::PowerTransformer { .. } => "PowerTransformer",
        }
    }

    /// Checks one fitted step for rows of `n` values. Every array has the
    /// width its scikit-learn attribute has, every value is finite, and
    /// what `fit` guarantees holds:
    ///
    /// * `StandardScaler.scale_ = _handle_zeros_in_scale(sqrt(var_))`;
    /// * `RobustScaler.scale_ = _handle_zeros_in_scale(q_max - q_min)`
    ///   (with `q_min <= q_max`, checked by `fit`);
    /// * `MinMaxScaler.scale_ = (hi - lo) / _handle_zeros_in_scale(data_range_)`
    ///   with `lo < hi` (`fit` refuses "Minimum of desired feature range
    ///   must be smaller than maximum"), which also holds for the clip
    ///   range;
    /// * `MaxAbsScaler.scale_ = _handle_zeros_in_scale(max_abs_)`;
    /// * `QuantileTransformer.quantiles_` ascend per feature (`fit` takes
    ///   `np.maximum.accumulate`), as do the `references_`;
    /// * `PCA`'s whitening divisors are square roots (not negative).
    pub fn validate(&self, n: usize) -> Result<(), InvalidModel> {
        let est = self.name();
        match self {
            Step::StandardScaler { mean, scale } => {
                if let Some(m) = mean {
                    check_width(est, "mean_", m, n)?;
                    check_finite(est, "mean_", m)?;
                }
                if let Some(s) = scale {
                    check_scale(est, "scale_", s, n)?;
                }
            }
            Step::MinMaxScaler { scale, min, clip } => {
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
            Step::RobustScaler { center, scale } => {
                if let Some(c) = center {
                    check_width(est, "center_", c, n)?;
                    check_finite(est, "center_", c)?;
                }
                if let Some(s) = scale {
                    check_scale(est, "scale_", s, n)?;
                }
            }
            Step::MaxAbsScaler { scale, .. } => check_scale(est, "scale_", scale, n)?,
            Step::Normalizer { .. } => {}
            Step::Binarizer { threshold } => check_finite(est, "threshold", &[*threshold])?,
            Step::SimpleImputer {
                n_features_in,
                keep,
                fill,
            } => {
                check_n_in(est, "statistics_", *n_features_in, n)?;
                if fill.len() != keep.len() {
                    return Err(InvalidModel::new(
                        est,
                        "statistics_",
                        format!(
                            "has {} fill values for {} kept columns",
                            fill.len(),
                            keep.len()
                        ),
                    ));
                }
                if let Some(i) = (0..keep.len())
                    .find(|&i| keep[i] as usize >= n || (i > 0 && keep[i] <= keep[i - 1]))
                {
                    return Err(InvalidModel::new(
                        est,
                        "statistics_",
                        format!(
                            "keeps column {} at position {i}, but kept columns ascend below {n}",
                            keep[i]
                        ),
                    ));
                }
                check_finite(est, "statistics_", fill)?;
            }
            Step::Pca {
                mean,
                components,
                n_components,
                whiten,
                ..
            } => {
                check_width(est, "mean_", mean, n)?;
                check_finite(est, "mean_", mean)?;
                let k = *n_components;
                if k == 0 || k > MAX_STEP_WIDTH {
                    return Err(InvalidModel::new(
                        est,
                        "n_components_",
                        format!("is {k}, but a fitted PCA keeps 1 to {MAX_STEP_WIDTH} components"),
                    ));
                }
                if Some(components.len()) != k.checked_mul(n) {
                    return Err(InvalidModel::new(
                        est,
                        "components_",
                        format!(
                            "has {} values, but {k} components of {n} features have {}",
                            components.len(),
                            k.saturating_mul(n)
                        ),
                    ));
                }
                check_finite(est, "components_", components)?;
                if let Some(w) = whiten {
                    check_width(est, "explained_variance_", w, k)?;
                    check_finite(est, "explained_variance_", w)?;
                    if let Some(i) = w.iter().position(|&v| v < 0.0) {
                        return Err(InvalidModel::new(
                            est,
                            format!("explained_variance_[{i}]"),
                            "is negative, but a variance never is",
                        ));
                    }
                }
            }
            Step::PolynomialFeatures {
                n_features_in,
                min_degree,
                max_degree,
                interaction_only,
                include_bias,
                ..
            } => {
                check_n_in(est, "n_features_in_", *n_features_in, n)?;
                if min_degree > max_degree || *max_degree > MAX_POLY_DEGREE {
                    return Err(InvalidModel::new(
                        est,
                        "degree",
                        format!("is ({min_degree}, {max_degree}), but fit requires min_degree <= max_degree (and fleetscore a degree of at most {MAX_POLY_DEGREE})"),
                    ));
                }
                if poly_width(
                    n,
                    *min_degree,
                    *max_degree,
                    *interaction_only,
                    *include_bias,
                )
                .is_none()
                {
                    return Err(InvalidModel::new(
                        est,
                        "n_output_features_",
                        format!("is above {MAX_STEP_WIDTH} columns, more than fleetscore scores"),
                    ));
                }
            }
            Step::QuantileTransformer {
                references,
                quantiles,
                ..
            } => {
                let nq = references.len();
                if nq == 0 {
                    return Err(InvalidModel::new(est, "references_", "is empty"));
                }
                if Some(quantiles.len()) != nq.checked_mul(n) {
                    return Err(InvalidModel::new(
                        est,
                        "quantiles_",
                        format!(
                            "has {} values, but {nq} quantiles of {n} features have {}",
                            quantiles.len(),
                            nq.saturating_mul(n)
                        ),
                    ));
                }
                check_finite(est, "references_", references)?;
                check_finite(est, "quantiles_", quantiles)?;
                check_ascending(est, "references_", references)?;
                for (j, q) in quantiles.chunks_exact(nq).enumerate() {
                    check_ascending(est, &format!("quantiles_[:, {j}]"), q)?;
                }
            }
            Step::PowerTransformer {
                lambdas,
                mean,
                scale,
                ..
            } => {
                check_width(est, "lambdas_", lambdas, n)?;
                check_finite(est, "lambdas_", lambdas)?;
                if let Some(m) = mean {
                    check_width(est, "_scaler.mean_", m, n)?;
                    check_finite(est, "_scaler.mean_", m)?;
                }
                if let Some(s) = scale {
                    check_scale(est, "_scaler.scale_", s, n)?;
                }
            }
        }
        Ok(())
    }

    /// Width of a row after this step, for rows of `n` values. Most steps
    /// keep the width; `SimpleImputer` may drop columns, `PCA` writes one
    /// per component and `PolynomialFeatures` one per product (a model
    /// that [`Step::validate`] refuses may give `usize::MAX`).
    pub fn out_width(&self, n: usize) -> usize {
        match self {
            Step::SimpleImputer { keep, .. } => keep.len(),
            Step::Pca { n_components, .. } => *n_components,
            Step::PolynomialFeatures {
                n_features_in,
                min_degree,
                max_degree,
                interaction_only,
                include_bias,
                ..
            } => poly_width(
                *n_features_in,
                *min_degree,
                *max_degree,
                *interaction_only,
                *include_bias,
            )
            .unwrap_or(usize::MAX),
            _ => n,
        }
    }

    /// The width of the rows the step's fitted arrays say it receives,
    /// when they say one (`Normalizer` and `Binarizer` take any width).
    pub fn in_width(&self) -> Option<usize> {
        match self {
            Step::StandardScaler { mean, scale } => mean.as_ref().or(scale.as_ref()).map(Vec::len),
            Step::MinMaxScaler { scale, .. } | Step::MaxAbsScaler { scale, .. } => {
                Some(scale.len())
            }
            Step::RobustScaler { center, scale } => {
                center.as_ref().or(scale.as_ref()).map(Vec::len)
            }
            Step::Normalizer { .. } | Step::Binarizer { .. } => None,
            Step::SimpleImputer { n_features_in, .. }
            | Step::PolynomialFeatures { n_features_in, .. } => Some(*n_features_in),
            Step::Pca { mean, .. } => Some(mean.len()),
            Step::QuantileTransformer {
                references,
                quantiles,
                ..
            } => quantiles.len().checked_div(references.len()),
            Step::PowerTransformer { lambdas, .. } => Some(lambdas.len()),
        }
    }

    /// Whether the step writes its rows into another buffer (then it is
    /// applied with [`Step::transform_into`], otherwise in place with
    /// [`Step::transform`]).
    pub fn changes_width(&self) -> bool {
        match self {
            Step::SimpleImputer {
                n_features_in,
                keep,
                ..
            } => keep.len() != *n_features_in,
            Step::Pca { .. } | Step::PolynomialFeatures { .. } => true,
            _ => false,
        }
    }

    /// Transforms `x` (of the step's input width) into `out` (of
    /// [`Step::out_width`]).
    pub fn transform_into(&self, x: &[f64], out: &mut [f64]) {
        match self {
            Step::SimpleImputer { keep, fill, .. } => {
                for ((o, &k), f) in out.iter_mut().zip(keep).zip(fill) {
                    let v = x[k as usize];
                    *o = if v.is_nan() { *f } else { v };
                }
            }
            Step::Pca {
                mean,
                components,
                n_components,
                whiten,
                center_first,
                column_major,
            } => {
                if !all_finite(x) {
                    return refuse(out);
                }
                let rule = PcaRule {
                    center_first: *center_first,
                    column_major: *column_major,
                };
                pca_row(
                    x,
                    out,
                    mean,
                    components,
                    *n_components,
                    whiten.as_deref(),
                    rule,
                );
            }
            Step::PolynomialFeatures {
                min_degree,
                max_degree,
                interaction_only,
                include_bias,
                product,
                ..
            } => {
                if !all_finite(x) {
                    return refuse(out);
                }
                poly_row(
                    x,
                    out,
                    *min_degree,
                    *max_degree,
                    *interaction_only,
                    *include_bias,
                    *product,
                );
            }
            _ => {
                out.copy_from_slice(x);
                self.transform(out);
            }
        }
    }

    /// Transforms one row in place (for steps that keep the width; a
    /// step that does not leaves the row as it is).
    #[inline]
    pub fn transform(&self, x: &mut [f64]) {
        match self {
            Step::StandardScaler { mean, scale } => {
                if let Some(m) = mean {
                    x.iter_mut().zip(m).for_each(|(v, m)| *v -= m);
                }
                if let Some(s) = scale {
                    x.iter_mut().zip(s).for_each(|(v, s)| *v /= s);
                }
            }
            Step::MinMaxScaler { scale, min, clip } => {
                for ((v, s), m) in x.iter_mut().zip(scale).zip(min) {
                    *v *= s;
                    *v += m;
                }
                if let Some((lo, hi)) = clip {
                    // numpy.clip(x, lo, hi) is min(max(x, lo), hi).
                    x.iter_mut().for_each(|v| *v = v.max(*lo).min(*hi));
                }
            }
            Step::RobustScaler { center, scale } => {
                if let Some(c) = center {
                    x.iter_mut().zip(c).for_each(|(v, c)| *v -= c);
                }
                if let Some(s) = scale {
                    x.iter_mut().zip(s).for_each(|(v, s)| *v /= s);
                }
            }
            Step::MaxAbsScaler { scale, clip } => {
                x.iter_mut().zip(scale).for_each(|(v, s)| *v /= s);
                if *clip {
                    x.iter_mut().for_each(|v| *v = np_clip(*v, -1.0, 1.0));
                }
            }
            Step::Normalizer { norm, near_zero } => normalize_row(x, *norm, *near_zero),
            Step::Binarizer { threshold } => {
                if !all_finite(x) {
                    return refuse(x);
                }
                x.iter_mut()
                    .for_each(|v| *v = if *v > *threshold { 1.0 } else { 0.0 });
            }
            Step::SimpleImputer { keep, fill, .. } => {
                // Only called when every column is kept (`keep` is 0..n).
                for (&k, f) in keep.iter().zip(fill) {
                    if let Some(v) = x.get_mut(k as usize) {
                        if v.is_nan() {
                            *v = *f;
                        }
                    }
                }
            }
            Step::Pca { .. } | Step::PolynomialFeatures { .. } => {}
            Step::QuantileTransformer {
                output,
                references,
                quantiles,
            } => {
                let nq = references.len();
                for (v, q) in x.iter_mut().zip(quantiles.chunks_exact(nq.max(1))) {
                    *v = quantile_value(*v, q, references, *output);
                }
            }
            Step::PowerTransformer {
                method,
                lambdas,
                mean,
                scale,
            } => {
                if *method == PowerMethod::BoxCox && x.iter().any(|&v| v <= 0.0) {
                    // "The Box-Cox transformation can only be applied to
                    // strictly positive data" (NaN is ignored: nanmin).
                    return refuse(x);
                }
                for (v, &l) in x.iter_mut().zip(lambdas) {
                    *v = match method {
                        PowerMethod::YeoJohnson => yeo_johnson(*v, l),
                        PowerMethod::YeoJohnsonPow => yeo_johnson_pow(*v, l),
                        PowerMethod::BoxCox => boxcox(*v, l),
                    };
                }
                if let Some(m) = mean {
                    x.iter_mut().zip(m).for_each(|(v, m)| *v -= m);
                }
                if let Some(s) = scale {
                    x.iter_mut().zip(s).for_each(|(v, s)| *v /= s);
                }
            }
        }
    }

    /// Appends the binary encoding of a step of version 2 (type 4 and
    /// later), type byte first; `false` for the three scalers of version
    /// 1, which `format::encode` writes itself. Little-endian, `n` the
    /// width of the rows the step receives:
    ///
    /// ```text
    /// 4  MaxAbsScaler         u8 clip, f64 scale[n]
    /// 5  Normalizer           u8 norm (1 l1, 2 l2, 3 max, 4 signed max), u8 near_zero
    /// 6  Binarizer            f64 threshold
    /// 7  SimpleImputer        u32 k, u32 keep[k], f64 fill[k]
    /// 8  PCA                  u8 flags (bit 0 whiten, 1 center_first, 2 column_major),
    ///                         u32 k, f64 mean[n], f64 components[k * n], [f64 whiten[k]]
    /// 9  PolynomialFeatures   u8 flags (bit 0 interaction_only, 1 include_bias,
    ///                         2 sequential product), u32 min_degree, u32 max_degree
    /// 10 QuantileTransformer  u8 output (1 uniform, 2 normal, 3 uniform clipped),
    ///                         u32 q, f64 references[q], f64 quantiles[n * q]
    /// 11 PowerTransformer     u8 method (1 yeo-johnson, 2 yeo-johnson pow, 3 box-cox),
    ///                         u8 flags (bit 0 mean, bit 1 scale), f64 lambdas[n],
    ///                         [f64 mean[n]], [f64 scale[n]]
    /// ```
    pub(crate) fn encode_v2(&self, out: &mut Vec<u8>) -> bool {
        match self {
            Step::StandardScaler { .. } | Step::MinMaxScaler { .. } | Step::RobustScaler { .. } => {
                return false
            }
            Step::MaxAbsScaler { scale, clip } => {
                out.push(MAX_ABS);
                out.push(u8::from(*clip));
                put_f64s(out, scale);
            }
            Step::Normalizer { norm, near_zero } => {
                out.push(NORMALIZER);
                out.push(match norm {
                    Norm::L1 => 1,
                    Norm::L2 => 2,
                    Norm::Max => 3,
                    Norm::SignedMax => 4,
                });
                out.push(u8::from(*near_zero));
            }
            Step::Binarizer { threshold } => {
                out.push(BINARIZER);
                put_f64s(out, &[*threshold]);
            }
            Step::SimpleImputer { keep, fill, .. } => {
                out.push(IMPUTER);
                put_u32(out, keep.len());
                for k in keep {
                    out.extend_from_slice(&k.to_le_bytes());
                }
                put_f64s(out, fill);
            }
            Step::Pca {
                mean,
                components,
                n_components,
                whiten,
                center_first,
                column_major,
            } => {
                out.push(PCA);
                out.push(
                    u8::from(whiten.is_some())
                        | u8::from(*center_first) << 1
                        | u8::from(*column_major) << 2,
                );
                put_u32(out, *n_components);
                put_f64s(out, mean);
                put_f64s(out, components);
                if let Some(w) = whiten {
                    put_f64s(out, w);
                }
            }
            Step::PolynomialFeatures {
                min_degree,
                max_degree,
                interaction_only,
                include_bias,
                product,
                ..
            } => {
                out.push(POLYNOMIAL);
                out.push(
                    u8::from(*interaction_only)
                        | u8::from(*include_bias) << 1
                        | u8::from(*product == PolyProduct::Sequential) << 2,
                );
                put_u32(out, *min_degree as usize);
                put_u32(out, *max_degree as usize);
            }
            Step::QuantileTransformer {
                output,
                references,
                quantiles,
            } => {
                out.push(QUANTILE);
                out.push(match output {
                    QuantileOutput::Uniform => 1,
                    QuantileOutput::Normal => 2,
                    QuantileOutput::UniformClipped => 3,
                });
                put_u32(out, references.len());
                put_f64s(out, references);
                put_f64s(out, quantiles);
            }
            Step::PowerTransformer {
                method,
                lambdas,
                mean,
                scale,
            } => {
                out.push(POWER);
                out.push(match method {
                    PowerMethod::YeoJohnson => 1,
                    PowerMethod::YeoJohnsonPow => 2,
                    PowerMethod::BoxCox => 3,
                });
                out.push(u8::from(mean.is_some()) | u8::from(scale.is_some()) << 1);
                put_f64s(out, lambdas);
                for v in [mean, scale].into_iter().flatten() {
                    put_f64s(out, v);
                }
            }
        }
        true
    }

    /// Reads a step of version 2 whose type byte `code` (4 or later) was
    /// just read, for rows of `n` values.
    pub(crate) fn decode_v2(code: u8, r: &mut Reader<'_>, n: usize) -> Result<Step, FormatError> {
        let step = match code {
            MAX_ABS => {
                let clip = flag(r)?;
                Step::MaxAbsScaler {
                    scale: r.f64s(n)?,
                    clip,
                }
            }
            NORMALIZER => {
                let norm = match r.u8()? {
                    1 => Norm::L1,
                    2 => Norm::L2,
                    3 => Norm::Max,
                    4 => Norm::SignedMax,
                    t => return Err(r.corrupt(format!("unknown Normalizer norm {t}"))),
                };
                Step::Normalizer {
                    norm,
                    near_zero: flag(r)?,
                }
            }
            BINARIZER => Step::Binarizer {
                threshold: r.f64()?,
            },
            IMPUTER => {
                let k = r.u32()? as usize;
                let keep = r.i32s(k)?.into_iter().map(|v| v as u32).collect();
                Step::SimpleImputer {
                    n_features_in: n,
                    keep,
                    fill: r.f64s(k)?,
                }
            }
            PCA => {
                let flags = r.u8()?;
                let k = r.u32()? as usize;
                let mean = r.f64s(n)?;
                let size = k
                    .checked_mul(n)
                    .ok_or_else(|| r.corrupt("PCA size overflows"))?;
                let components = r.f64s(size)?;
                let whiten = if flags & 1 != 0 {
                    Some(r.f64s(k)?)
                } else {
                    None
                };
                Step::Pca {
                    mean,
                    components,
                    n_components: k,
                    whiten,
                    center_first: flags & 2 != 0,
                    column_major: flags & 4 != 0,
                }
            }
            POLYNOMIAL => {
                let flags = r.u8()?;
                Step::PolynomialFeatures {
                    n_features_in: n,
                    min_degree: r.u32()?,
                    max_degree: r.u32()?,
                    interaction_only: flags & 1 != 0,
                    include_bias: flags & 2 != 0,
                    product: if flags & 4 != 0 {
                        PolyProduct::Sequential
                    } else {
                        PolyProduct::Nested
                    },
                }
            }
            QUANTILE => {
                let output = match r.u8()? {
                    1 => QuantileOutput::Uniform,
                    2 => QuantileOutput::Normal,
                    3 => QuantileOutput::UniformClipped,
                    t => return Err(r.corrupt(format!("unknown QuantileTransformer output {t}"))),
                };
                let nq = r.u32()? as usize;
                let references = r.f64s(nq)?;
                let size = nq
                    .checked_mul(n)
                    .ok_or_else(|| r.corrupt("QuantileTransformer size overflows"))?;
                Step::QuantileTransformer {
                    output,
                    references,
                    quantiles: r.f64s(size)?,
                }
            }
            POWER => {
                let method = match r.u8()? {
                    1 => PowerMethod::YeoJohnson,
                    2 => PowerMethod::YeoJohnsonPow,
                    3 => PowerMethod::BoxCox,
                    t => return Err(r.corrupt(format!("unknown PowerTransformer method {t}"))),
                };
                let flags = r.u8()?;
                let lambdas = r.f64s(n)?;
                let mean = if flags & 1 != 0 {
                    Some(r.f64s(n)?)
                } else {
                    None
                };
                let scale = if flags & 2 != 0 {
                    Some(r.f64s(n)?)
                } else {
                    None
                };
                Step::PowerTransformer {
                    method,
                    lambdas,
                    mean,
                    scale,
                }
            }
            t => return Err(r.corrupt(format!("unknown step type {t}"))),
        };
        // Checked now, before the width it gives sizes what follows.
        step.validate(n)?;
        Ok(step)
    }
}

/// Step types of the binary encoding, version 2 (1-3 are the scalers of
/// version 1).
const MAX_ABS: u8 = 4;
const NORMALIZER: u8 = 5;
const BINARIZER: u8 = 6;
const IMPUTER: u8 = 7;
const PCA: u8 = 8;
const POLYNOMIAL: u8 = 9;
const QUANTILE: u8 = 10;
const POWER: u8 = 11;

fn flag(r: &mut Reader<'_>) -> Result<bool, FormatError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        f => Err(r.corrupt(format!("flag byte {f} is neither 0 nor 1"))),
    }
}

/// The width a step's fitted arrays were made for is the width it gets.
fn check_n_in(est: &'static str, attr: &str, n_in: usize, n: usize) -> Result<(), InvalidModel> {
    if n_in == n {
        return Ok(());
    }
    Err(InvalidModel::new(
        est,
        attr,
        format!("says {n_in} features, but the step receives rows of {n}"),
    ))
}

fn check_ascending(est: &'static str, attr: &str, v: &[f64]) -> Result<(), InvalidModel> {
    match v.windows(2).position(|w| w[1] < w[0]) {
        Some(i) => Err(InvalidModel::new(
            est,
            attr,
            format!(
                "descends at index {} ({} after {}), but fit makes it ascend (np.interp needs it)",
                i + 1,
                v[i + 1],
                v[i]
            ),
        )),
        None => Ok(()),
    }
}

fn all_finite(x: &[f64]) -> bool {
    x.iter().all(|v| v.is_finite())
}

/// A row scikit-learn would refuse: NaN everywhere.
fn refuse(out: &mut [f64]) {
    out.fill(f64::NAN);
}

/// `np.clip(v, lo, hi)`: NaN stays NaN.
fn np_clip(v: f64, lo: f64, hi: f64) -> f64 {
    if v.is_nan() {
        v
    } else {
        v.max(lo).min(hi)
    }
}

/// `normalize(X, norm)` for one row.
fn normalize_row(x: &mut [f64], norm: Norm, near_zero: bool) {
    if !all_finite(x) {
        return refuse(x);
    }
    let mut n = match norm {
        Norm::L1 => {
            let abs: Vec<f64> = x.iter().map(|v| v.abs()).collect();
            numpy_sum(&abs)
        }
        Norm::L2 => einsum_sq(x).sqrt(),
        Norm::Max => x.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.abs())),
        Norm::SignedMax => x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v)),
    };
    // _handle_zeros_in_scale: `scale < 10 * eps` from 1.0, `== 0` before.
    if (near_zero && n < 10.0 * EPS) || n == 0.0 {
        n = 1.0;
    }
    x.iter_mut().for_each(|v| *v /= n);
}

/// numpy 2.4's `einsum('ij,ij->i', X, X)` for one contiguous row on
/// x86-64: two lanes, eight values per step added to each lane in the
/// order (6, 4, 2, 0) and (7, 5, 3, 1) of the step, then pairs, then the
/// lanes added; no fused multiply-add.
fn einsum_sq(x: &[f64]) -> f64 {
    let mut acc = [0.0f64; 2];
    let mut blocks = x.chunks_exact(8);
    for b in &mut blocks {
        for (l, a) in acc.iter_mut().enumerate() {
            let mut t = *a;
            for k in (0..4).rev() {
                let v = b[2 * k + l];
                t += v * v;
            }
            *a = t;
        }
    }
    for pair in blocks.remainder().chunks(2) {
        for (l, a) in acc.iter_mut().enumerate() {
            let v = pair.get(l).copied().unwrap_or(0.0);
            *a += v * v;
        }
    }
    0.0 + (acc[0] + acc[1])
}

/// OpenBLAS `dgemm`'s dot product: one fused multiply-add chain from 0.
fn dot_gemm(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |s, (a, b)| a.mul_add(*b, s))
}

/// OpenBLAS `dgemv_t`'s dot product (Haswell kernel): whole groups of
/// four in four fused multiply-add lanes added as `(l0 + l2) + (l1 +
/// l3)` per block of 2048, then the last `len % 4` products as its C
/// tail compiles (`y += a0*x0 + a1*x1 + a2*x2`, contracted).
fn dot_gemv(a: &[f64], b: &[f64]) -> f64 {
    let m1 = a.len() & !3;
    let mut y = 0.0;
    for (ab, bb) in a[..m1].chunks(2048).zip(b[..m1].chunks(2048)) {
        let mut l = [0.0f64; 4];
        for (a4, b4) in ab.chunks_exact(4).zip(bb.chunks_exact(4)) {
            for i in 0..4 {
                l[i] = a4[i].mul_add(b4[i], l[i]);
            }
        }
        y += (l[0] + l[2]) + (l[1] + l[3]);
    }
    match (&a[m1..], &b[m1..]) {
        ([a0], [b0]) => a0.mul_add(*b0, y),
        ([a0, a1], [b0, b1]) => y + a0.mul_add(*b0, a1 * b1),
        ([a0, a1, a2], [b0, b1, b2]) => y + a2.mul_add(*b2, a0.mul_add(*b0, a1 * b1)),
        _ => y,
    }
}

/// OpenBLAS `ddot` for short vectors: a plain sum of products.
fn dot_plain(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |s, (a, b)| s + a * b)
}

/// OpenBLAS `dgemv_n` as numpy calls it for a row times a row-major
/// matrix with two or three columns (the kernel's tail for fewer than
/// four outputs): per group of four products, two sums of pairs added
/// in turn, then the remaining products one by one; no fused
/// multiply-add. Up to three features this is the plain sum. (With four
/// or more outputs and features the assembly kernel sums in an order
/// not reproduced here; the difference is in the last bits.)
fn dot_gemv_n(a: &[f64], b: &[f64]) -> f64 {
    let mut t = 0.0;
    let mut a4 = a.chunks_exact(4);
    let mut b4 = b.chunks_exact(4);
    for (a, b) in (&mut a4).zip(&mut b4) {
        t += a[0] * b[0] + a[1] * b[1];
        t += a[2] * b[2] + a[3] * b[3];
    }
    for (a, b) in a4.remainder().iter().zip(b4.remainder()) {
        t += a * b;
    }
    t
}

/// Which formula and BLAS routines a PCA step's release and layout
/// imply.
#[derive(Clone, Copy)]
struct PcaRule {
    center_first: bool,
    column_major: bool,
}

/// `PCA.transform` for one row.
fn pca_row(
    x: &[f64],
    out: &mut [f64],
    mean: &[f64],
    components: &[f64],
    k: usize,
    whiten: Option<&[f64]>,
    rule: PcaRule,
) {
    let n = mean.len();
    // numpy's matmul calls dgemv for one component, dgemm for more.
    let project = if k == 1 { dot_gemv } else { dot_gemm };
    let rows = components.chunks_exact(n.max(1));
    if rule.center_first {
        let xc: Vec<f64> = x.iter().zip(mean).map(|(x, m)| x - m).collect();
        for (o, c) in out.iter_mut().zip(rows) {
            *o = project(&xc, c);
        }
    } else {
        // mean_ (1 x n) @ components_.T: ddot for one component, dgemv
        // for more (transposed or not, as components_ is stored).
        let centre = match (k, rule.column_major) {
            (1, _) => dot_plain,
            (_, false) => dot_gemv,
            (_, true) => dot_gemv_n,
        };
        for (o, c) in out.iter_mut().zip(rows) {
            *o = project(x, c) - centre(mean, c);
        }
    }
    if let Some(w) = whiten {
        out.iter_mut().zip(w).for_each(|(o, s)| *o /= s);
    }
}

/// Number of `PolynomialFeatures` columns for `n` features, or `None`
/// above [`MAX_STEP_WIDTH`] (`_num_combinations`).
pub(crate) fn poly_width(
    n: usize,
    min_degree: u32,
    max_degree: u32,
    interaction_only: bool,
    include_bias: bool,
) -> Option<usize> {
    let mut total = usize::from(include_bias);
    for d in min_degree.max(1)..=max_degree.min(MAX_POLY_DEGREE) {
        let d = d as usize;
        // combinations: C(n, d); with replacement: C(n + d - 1, d).
        let (top, d) = if interaction_only {
            if d > n {
                break;
            }
            (n, d)
        } else {
            (n.checked_add(d)? - 1, d)
        };
        total = total.checked_add(binomial(top, d)?)?;
        if total > MAX_STEP_WIDTH {
            return None;
        }
    }
    (max_degree <= MAX_POLY_DEGREE).then_some(total)
}

/// `C(n, k)`, or `None` above [`MAX_STEP_WIDTH`].
fn binomial(n: usize, k: usize) -> Option<usize> {
    let k = k.min(n.saturating_sub(k));
    let mut c: u128 = 1;
    for i in 0..k {
        c = c * (n - i) as u128 / (i + 1) as u128;
        if c > MAX_STEP_WIDTH as u128 {
            return None;
        }
    }
    usize::try_from(c).ok()
}

/// `PolynomialFeatures.transform` for one row: the columns in the order
/// of `itertools.combinations(_with_replacement)`, degree by degree.
fn poly_row(
    x: &[f64],
    out: &mut [f64],
    min_degree: u32,
    max_degree: u32,
    interaction_only: bool,
    include_bias: bool,
    product: PolyProduct,
) {
    let n = x.len();
    let mut col = 0;
    let mut put = |v: f64| {
        if let Some(o) = out.get_mut(col) {
            *o = v;
        }
        col += 1;
    };
    if include_bias {
        put(1.0);
    }
    let mut idx: Vec<usize> = Vec::with_capacity(max_degree as usize);
    for d in min_degree.max(1) as usize..=max_degree as usize {
        if n == 0 || (interaction_only && d > n) {
            break;
        }
        idx.clear();
        if interaction_only {
            idx.extend(0..d);
        } else {
            idx.resize(d, 0);
        }
        loop {
            let p = match product {
                PolyProduct::Nested => idx[..d - 1]
                    .iter()
                    .rev()
                    .fold(x[idx[d - 1]], |p, &i| p * x[i]),
                PolyProduct::Sequential => idx[1..].iter().fold(x[idx[0]], |p, &i| p * x[i]),
            };
            put(p);
            // The next combination in lexicographic order.
            let bound = |i: usize| if interaction_only { n - d + i } else { n - 1 };
            let Some(i) = (0..d).rev().find(|&i| idx[i] < bound(i)) else {
                break;
            };
            idx[i] += 1;
            for j in i + 1..d {
                idx[j] = if interaction_only {
                    idx[j - 1] + 1
                } else {
                    idx[i]
                };
            }
        }
    }
}

/// `np.interp(x, xp, fp)` with `xp` ascending, `n` points given by
/// index: the interval `xp[j] <= x < xp[j + 1]`, the slope
/// `(fp[j+1] - fp[j]) / (xp[j+1] - xp[j])`, then `slope * (x - xp[j]) +
/// fp[j]` (not fused), with numpy's fallbacks at the points and for NaN.
fn np_interp(x: f64, n: usize, xp: impl Fn(usize) -> f64, fp: impl Fn(usize) -> f64) -> f64 {
    let (lval, rval) = (fp(0), fp(n - 1));
    if n == 1 {
        let x0 = xp(0);
        return if x < x0 {
            lval
        } else if x > x0 {
            rval
        } else {
            fp(0)
        };
    }
    if x.is_nan() {
        return x;
    }
    if x < xp(0) {
        return lval;
    }
    if x > xp(n - 1) {
        return rval;
    }
    // The last j with xp[j] <= x (unique for an ascending xp, whatever
    // numpy's guess).
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if x >= xp(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let j = lo - 1;
    if j == n - 1 || xp(j) == x {
        return fp(j);
    }
    let slope = (fp(j + 1) - fp(j)) / (xp(j + 1) - xp(j));
    let mut r = slope * (x - xp(j)) + fp(j);
    if r.is_nan() {
        r = slope * (x - xp(j + 1)) + fp(j + 1);
        if r.is_nan() && fp(j) == fp(j + 1) {
            r = fp(j);
        }
    }
    r
}

/// `QuantileTransformer._transform_col` for one value of a feature with
/// ascending quantiles `q`.
fn quantile_value(x: f64, q: &[f64], r: &[f64], output: QuantileOutput) -> f64 {
    let n = q.len();
    if x.is_nan() || n == 0 {
        return f64::NAN;
    }
    let (lower, upper) = match output {
        QuantileOutput::Uniform => (x == q[0], x == q[n - 1]),
        QuantileOutput::Normal | QuantileOutput::UniformClipped => {
            (x - BOUNDS_THRESHOLD < q[0], x + BOUNDS_THRESHOLD > q[n - 1])
        }
    };
    // The mean of interpolating up and down, so that repeated quantiles
    // give the middle of their references.
    let up = np_interp(x, n, |i| q[i], |i| r[i]);
    let down = np_interp(-x, n, |i| -q[n - 1 - i], |i| -r[n - 1 - i]);
    let mut v = 0.5 * (up - down);
    if upper {
        v = 1.0;
    }
    if lower {
        v = 0.0;
    }
    match output {
        QuantileOutput::Uniform => v,
        QuantileOutput::Normal => {
            let lo = ndtri(BOUNDS_THRESHOLD - EPS);
            let hi = ndtri(1.0 - (BOUNDS_THRESHOLD - EPS));
            np_clip(ndtri(v), lo, hi)
        }
        // uniform.ppf is the identity on [0, 1].
        QuantileOutput::UniformClipped => {
            np_clip(v, BOUNDS_THRESHOLD - EPS, 1.0 - (BOUNDS_THRESHOLD - EPS))
        }
    }
}

/// `scipy.stats.yeojohnson(x, lmbda)` (scipy 1.17's
/// `_yeojohnson_transform`).
fn yeo_johnson(x: f64, l: f64) -> f64 {
    if x >= 0.0 {
        if l.abs() < EPS {
            x.ln_1p()
        } else {
            (l * x.ln_1p()).exp_m1() / l
        }
    } else if (l - 2.0).abs() > EPS {
        -((2.0 - l) * (-x).ln_1p()).exp_m1() / (2.0 - l)
    } else {
        -(-x).ln_1p()
    }
}

/// `PowerTransformer._yeo_johnson_transform` before 1.9.
fn yeo_johnson_pow(x: f64, l: f64) -> f64 {
    if x >= 0.0 {
        if l.abs() < EPS {
            x.ln_1p()
        } else {
            ((x + 1.0).powf(l) - 1.0) / l
        }
    } else if (l - 2.0).abs() > EPS {
        -((-x + 1.0).powf(2.0 - l) - 1.0) / (2.0 - l)
    } else {
        -(-x).ln_1p()
    }
}

/// `scipy.special.boxcox(x, lmbda)`.
fn boxcox(x: f64, l: f64) -> f64 {
    if l.abs() < 1e-19 {
        x.ln()
    } else if l * x.ln() < 709.78 {
        (l * x.ln()).exp_m1() / l
    } else {
        1f64.copysign(l) * (l * x.ln() - l.abs().ln()).exp() - 1.0 / l
    }
}

/// Cephes' `polevl`: `c[0] x^N + ... + c[N]` by Horner's rule.
fn polevl(x: f64, c: &[f64]) -> f64 {
    c[1..].iter().fold(c[0], |a, &v| a * x + v)
}

/// Cephes' `p1evl`: as [`polevl`] with a leading coefficient of 1.
fn p1evl(x: f64, c: &[f64]) -> f64 {
    c[1..].iter().fold(x + c[0], |a, &v| a * x + v)
}

/// `scipy.special.ndtri` (Cephes' inverse of the normal distribution
/// function), which `scipy.stats.norm.ppf` calls. The coefficients are
/// Cephes' digits as scipy's C source has them.
#[allow(clippy::excessive_precision)]
pub fn ndtri(y0: f64) -> f64 {
    const S2PI: f64 = 2.50662827463100050242E0;
    // exp(-2)
    const EXPM2: f64 = 0.13533528323661269189;
    // Approximation for 0 <= |y - 0.5| <= 3/8.
    const P0: [f64; 5] = [
        -5.99633501014107895267E1,
        9.80010754185999661536E1,
        -5.66762857469070293439E1,
        1.39312609387279679503E1,
        -1.23916583867381258016E0,
    ];
    const Q0: [f64; 8] = [
        1.95448858338141759834E0,
        4.67627912898881538453E0,
        8.63602421390890590575E1,
        -2.25462687854119370527E2,
        2.00260212380060660359E2,
        -8.20372256168333339912E1,
        1.59056225126211695515E1,
        -1.18331621121330003142E0,
    ];
    // For z = sqrt(-2 log y) between 2 and 8.
    const P1: [f64; 9] = [
        4.05544892305962419923E0,
        3.15251094599893866154E1,
        5.71628192246421288162E1,
        4.40805073893200834700E1,
        1.46849561928858024014E1,
        2.18663306850790267539E0,
        -1.40256079171354495875E-1,
        -3.50424626827848203418E-2,
        -8.57456785154685413611E-4,
    ];
    const Q1: [f64; 8] = [
        1.57799883256466749731E1,
        4.53907635128879210584E1,
        4.13172038254672030440E1,
        1.50425385692907503408E1,
        2.50464946208309415979E0,
        -1.42182922854787788574E-1,
        -3.80806407691578277194E-2,
        -9.33259480895457427372E-4,
    ];
    // For z between 8 and 64.
    const P2: [f64; 9] = [
        3.23774891776946035970E0,
        6.91522889068984211695E0,
        3.93881025292474443415E0,
        1.33303460815807542389E0,
        2.01485389549179081538E-1,
        1.23716634817820021358E-2,
        3.01581553508235416007E-4,
        2.65806974686737550832E-6,
        6.23974539184983293730E-9,
    ];
    const Q2: [f64; 8] = [
        6.02427039364742014255E0,
        3.67983563856160859403E0,
        1.37702099489081330271E0,
        2.16236993594496635890E-1,
        1.34204006088543189037E-2,
        3.28014464682127739104E-4,
        2.89247864745380683936E-6,
        6.79019408009981274425E-9,
    ];
    if y0.is_nan() {
        return y0;
    }
    if y0 == 0.0 {
        return f64::NEG_INFINITY;
    }
    if y0 == 1.0 {
        return f64::INFINITY;
    }
    if !(0.0..=1.0).contains(&y0) {
        return f64::NAN;
    }
    let mut negate = true;
    let mut y = y0;
    if y > 1.0 - EXPM2 {
        y = 1.0 - y;
        negate = false;
    }
    if y > EXPM2 {
        let y = y - 0.5;
        let y2 = y * y;
        let x = y + y * (y2 * polevl(y2, &P0) / p1evl(y2, &Q0));
        return x * S2PI;
    }
    let x = (-2.0 * y.ln()).sqrt();
    let x0 = x - x.ln() / x;
    let z = 1.0 / x;
    let x1 = if x < 8.0 {
        z * polevl(z, &P1) / p1evl(z, &Q1)
    } else {
        z * polevl(z, &P2) / p1evl(z, &Q2)
    };
    let x = x0 - x1;
    if negate {
        -x
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &Step, x: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; s.out_width(x.len())];
        s.transform_into(x, &mut out);
        out
    }

    #[test]
    fn ndtri_matches_scipy_at_known_points() {
        // scipy.special.ndtri at these points (repr of the float64).
        for (y, want) in [
            (0.5, 0.0),
            (0.975, 1.959963984540054),
            (0.025, -1.9599639845400545),
            (1e-7 - EPS, -5.199337582605575),
            (1.0 - (1e-7 - EPS), 5.19933758270342),
            (1e-300, -37.0470962993612),
        ] {
            assert_eq!(ndtri(y), want, "ndtri({y})");
        }
        assert_eq!(ndtri(0.0), f64::NEG_INFINITY);
        assert_eq!(ndtri(1.0), f64::INFINITY);
        assert!(ndtri(1.5).is_nan() && ndtri(-0.1).is_nan() && ndtri(f64::NAN).is_nan());
    }

    #[test]
    fn polynomial_columns_follow_itertools_order() {
        let s = |interaction_only, product| Step::PolynomialFeatures {
            n_features_in: 3,
            min_degree: 0,
            max_degree: 3,
            interaction_only,
            include_bias: true,
            product,
        };
        let x = [2.0, 3.0, 5.0];
        // 1, a, b, c, aa, ab, ac, bb, bc, cc, aaa, aab, ..., ccc
        let full = run(&s(false, PolyProduct::Nested), &x);
        assert_eq!(full.len(), 20);
        assert_eq!(
            full[..11],
            [1.0, 2.0, 3.0, 5.0, 4.0, 6.0, 10.0, 9.0, 15.0, 25.0, 8.0]
        );
        assert_eq!(full[19], 125.0);
        let inter = run(&s(true, PolyProduct::Nested), &x);
        assert_eq!(inter, [1.0, 2.0, 3.0, 5.0, 6.0, 10.0, 15.0, 30.0]);
        // The order of the multiplications shows in the last bits.
        let x = [0.1, 0.7, 1.3];
        let nested = run(&s(false, PolyProduct::Nested), &x);
        let seq = run(&s(false, PolyProduct::Sequential), &x);
        // abc is column 1 + 3 + 6 + 4 = 14 (aaa, aab, aac, abb, abc).
        assert_eq!(nested[14], (1.3 * 0.7) * 0.1);
        assert_eq!(seq[14], (0.1 * 0.7) * 1.3);
    }

    #[test]
    fn polynomial_min_degree_keeps_the_bias_and_the_high_degrees() {
        let s = Step::PolynomialFeatures {
            n_features_in: 2,
            min_degree: 2,
            max_degree: 3,
            interaction_only: false,
            include_bias: true,
            product: PolyProduct::Nested,
        };
        // 1, aa, ab, bb, aaa, aab, abb, bbb
        assert_eq!(
            run(&s, &[2.0, 3.0]),
            [1.0, 4.0, 6.0, 9.0, 8.0, 12.0, 18.0, 27.0]
        );
        s.validate(2).unwrap();
        assert!(s.validate(3).is_err());
    }

    #[test]
    fn huge_polynomials_are_refused_without_computing_them() {
        let s = Step::PolynomialFeatures {
            n_features_in: 100,
            min_degree: 0,
            max_degree: 40,
            interaction_only: false,
            include_bias: true,
            product: PolyProduct::Nested,
        };
        let e = s.validate(100).unwrap_err().to_string();
        assert!(e.contains("n_output_features_"), "{e}");
        assert_eq!(s.out_width(100), usize::MAX);
        let s = Step::PolynomialFeatures {
            n_features_in: 1,
            min_degree: 0,
            max_degree: u32::MAX,
            interaction_only: false,
            include_bias: false,
            product: PolyProduct::Nested,
        };
        assert!(s.validate(1).unwrap_err().to_string().contains("degree"));
    }

    #[test]
    fn interp_matches_numpy_at_ties_and_ends() {
        let q = [0.0, 1.0, 1.0, 3.0];
        let r = [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0];
        let f = |x: f64| np_interp(x, 4, |i| q[i], |i| r[i]);
        assert_eq!(f(-1.0), 0.0);
        assert_eq!(f(5.0), 1.0);
        assert_eq!(f(1.0), 2.0 / 3.0);
        assert_eq!(f(3.0), 1.0);
        assert_eq!(f(2.0), (1.0 - 2.0 / 3.0) / 2.0 * 1.0 + 2.0 / 3.0);
        // QuantileTransformer averages both directions: the tie at 1.0
        // maps to the middle of its references.
        let qt = quantile_value(1.0, &q, &r, QuantileOutput::Uniform);
        assert_eq!(qt, 0.5 * (2.0 / 3.0 + 1.0 / 3.0));
        assert_eq!(quantile_value(0.0, &q, &r, QuantileOutput::Uniform), 0.0);
        assert!(quantile_value(f64::NAN, &q, &r, QuantileOutput::Normal).is_nan());
        let lo = quantile_value(-9.0, &q, &r, QuantileOutput::Normal);
        assert_eq!(lo, ndtri(1e-7 - EPS));
    }

    #[test]
    fn einsum_order_differs_from_a_plain_sum_beyond_six_values() {
        let x = [1e8, 1.0, -1e8, 1e-8, 3.0, 7.0, 1e-3, 5.0, 0.1];
        let plain: f64 = x.iter().map(|v| v * v).sum();
        assert!((einsum_sq(&x) - plain).abs() <= 1e-6 * plain);
        assert_eq!(einsum_sq(&[3.0]), 9.0);
        assert_eq!(einsum_sq(&[3.0, 4.0, 12.0]), 169.0);
    }

    #[test]
    fn refused_rows_become_nan() {
        let n = Step::Normalizer {
            norm: Norm::L2,
            near_zero: true,
        };
        assert!(run(&n, &[1.0, f64::NAN]).iter().all(|v| v.is_nan()));
        assert_eq!(run(&n, &[3.0, 4.0]), [0.6, 0.8]);
        assert_eq!(run(&n, &[1e-16, 0.0]), [1e-16, 0.0]);
        let b = Step::Binarizer { threshold: 0.5 };
        assert_eq!(run(&b, &[0.5, 0.6, -1.0]), [0.0, 1.0, 0.0]);
        assert!(run(&b, &[f64::INFINITY]).iter().all(|v| v.is_nan()));
        let p = Step::PowerTransformer {
            method: PowerMethod::BoxCox,
            lambdas: vec![0.5, 0.5],
            mean: None,
            scale: None,
        };
        assert!(run(&p, &[1.0, 0.0]).iter().all(|v| v.is_nan()));
        let kept = run(&p, &[4.0, f64::NAN]);
        assert_eq!(kept[0], 2.0);
        assert!(kept[1].is_nan());
    }

    #[test]
    fn imputer_fills_and_drops_columns() {
        let s = Step::SimpleImputer {
            n_features_in: 3,
            keep: vec![0, 2],
            fill: vec![7.0, 9.0],
        };
        s.validate(3).unwrap();
        assert!(s.changes_width());
        assert_eq!(run(&s, &[f64::NAN, 1.0, 2.0]), [7.0, 2.0]);
        assert_eq!(run(&s, &[1.0, f64::NAN, f64::NAN]), [1.0, 9.0]);
        let bad = Step::SimpleImputer {
            n_features_in: 3,
            keep: vec![2, 0],
            fill: vec![7.0, 9.0],
        };
        assert!(bad.validate(3).unwrap_err().to_string().contains("ascend"));
        let bad = Step::SimpleImputer {
            n_features_in: 3,
            keep: vec![0, 5],
            fill: vec![7.0, 9.0],
        };
        assert!(bad.validate(3).is_err());
    }

    #[test]
    fn inconsistent_shapes_and_non_finite_values_are_refused() {
        let pca = Step::Pca {
            mean: vec![0.0, 0.0],
            components: vec![1.0, 0.0, 0.0],
            n_components: 2,
            whiten: None,
            center_first: false,
            column_major: false,
        };
        assert!(pca
            .validate(2)
            .unwrap_err()
            .to_string()
            .contains("components_"));
        let pca = Step::Pca {
            mean: vec![0.0, 0.0],
            components: vec![1.0, 0.0, 0.0, f64::NAN],
            n_components: 2,
            whiten: Some(vec![1.0, -1.0]),
            center_first: false,
            column_major: false,
        };
        assert!(pca.validate(2).unwrap_err().to_string().contains("NaN"));
        let pca = Step::Pca {
            mean: vec![0.0, 0.0],
            components: vec![1.0, 0.0, 0.0, 1.0],
            n_components: usize::MAX,
            whiten: None,
            center_first: false,
            column_major: false,
        };
        assert!(pca.validate(2).is_err());
        let q = Step::QuantileTransformer {
            output: QuantileOutput::Uniform,
            references: vec![0.0, 0.5, 1.0],
            quantiles: vec![0.0, 2.0, 1.0],
        };
        assert!(q.validate(1).unwrap_err().to_string().contains("descends"));
        assert!(q.validate(2).is_err());
        let q = Step::QuantileTransformer {
            output: QuantileOutput::Uniform,
            references: vec![],
            quantiles: vec![],
        };
        assert!(q.validate(1).is_err());
        let m = Step::MaxAbsScaler {
            scale: vec![0.0],
            clip: false,
        };
        assert!(m.validate(1).is_err());
        let b = Step::Binarizer {
            threshold: f64::INFINITY,
        };
        assert!(b.validate(1).is_err());
        let p = Step::PowerTransformer {
            method: PowerMethod::YeoJohnson,
            lambdas: vec![1.0],
            mean: Some(vec![0.0, 1.0]),
            scale: None,
        };
        assert!(p.validate(1).is_err());
    }

    fn every_step() -> crate::model::Model {
        use crate::model::{Estimator, Kernel, Model, OneClassSvm};
        let steps = vec![
            Step::SimpleImputer {
                n_features_in: 3,
                keep: vec![0, 2],
                fill: vec![1.5, -2.0],
            },
            Step::MaxAbsScaler {
                scale: vec![2.0, 4.0],
                clip: true,
            },
            Step::QuantileTransformer {
                output: QuantileOutput::Normal,
                references: vec![0.0, 0.5, 1.0],
                quantiles: vec![-1.0, 0.0, 1.0, -0.5, 0.25, 0.5],
            },
            Step::PowerTransformer {
                method: PowerMethod::YeoJohnson,
                lambdas: vec![0.5, 1.5],
                mean: Some(vec![0.1, 0.2]),
                scale: None,
            },
            Step::Pca {
                mean: vec![0.0, 1.0],
                components: vec![0.6, 0.8, -0.8, 0.6, 1.0, 0.0],
                n_components: 3,
                whiten: Some(vec![1.0, 2.0, 3.0]),
                center_first: false,
                column_major: true,
            },
            Step::PolynomialFeatures {
                n_features_in: 3,
                min_degree: 1,
                max_degree: 2,
                interaction_only: true,
                include_bias: false,
                product: PolyProduct::Sequential,
            },
            Step::Normalizer {
                norm: Norm::SignedMax,
                near_zero: false,
            },
            Step::Binarizer { threshold: 0.25 },
        ];
        // 3 -> 2 -> ... -> 3 (PCA) -> 6 (degree 1 and 2, interactions)
        Model {
            n_features: 3,
            steps,
            estimator: Estimator::OneClassSvm(OneClassSvm {
                kernel: Kernel::Rbf,
                gamma: 0.5,
                coef0: 0.0,
                degree: 3,
                support_vectors: vec![0.0; 6],
                dual_coef: vec![1.0],
                intercept: -0.5,
            }),
        }
    }

    #[test]
    fn every_step_round_trips_through_both_formats() {
        use crate::format::{decode, encode, from_json, to_json, Reader};
        let m = every_step();
        m.validate().unwrap();
        assert_eq!(m.estimator_width(), 6);
        assert_eq!(from_json(&to_json(&m)).unwrap(), m);
        let mut buf = Vec::new();
        encode(&m, &mut buf);
        let mut r = Reader { data: &buf, pos: 0 };
        assert_eq!(decode(&mut r).unwrap(), m);
        assert_eq!(r.pos, buf.len());
        // Every truncation is an error, never a panic.
        for cut in 0..buf.len() {
            let mut r = Reader {
                data: &buf[..cut],
                pos: 0,
            };
            assert!(decode(&mut r).is_err(), "cut at {cut}");
        }
        let (mut score, mut label) = (vec![0.0; 2], vec![0; 2]);
        m.evaluate_into(
            &[f64::NAN, 7.0, 1.0, 0.5, 0.5, f64::NAN],
            3,
            &mut score,
            &mut label,
        )
        .unwrap();
        assert!(score.iter().all(|s| s.is_finite()));
    }

    #[test]
    fn hostile_binary_steps_are_refused_before_they_size_anything() {
        use crate::format::{decode, encode, Reader};
        use crate::model::Estimator;
        let mut m = every_step();
        m.steps.truncate(1);
        m.steps.push(Step::PolynomialFeatures {
            n_features_in: 2,
            min_degree: 0,
            max_degree: 2,
            interaction_only: false,
            include_bias: true,
            product: PolyProduct::Nested,
        });
        let Estimator::OneClassSvm(svm) = &mut m.estimator else {
            unreachable!()
        };
        svm.support_vectors = vec![0.0; 6];
        m.validate().unwrap();
        let mut buf = Vec::new();
        encode(&m, &mut buf);
        // The polynomial's max_degree is the last u32 before the
        // estimator's type byte (1) and the SVM.
        let svm_len = 1 + 1 + 8 + 8 + 4 + 8 + 4 + 8 + 6 * 8;
        let at = buf.len() - svm_len - 4;
        assert_eq!(buf[at..at + 4], 2u32.to_le_bytes());
        buf[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = decode(&mut Reader { data: &buf, pos: 0 }).unwrap_err();
        assert!(e.to_string().contains("degree"), "{e}");
    }

    #[test]
    fn pca_projects_as_blas_does() {
        let pca = Step::Pca {
            mean: vec![1.0, 2.0, 3.0],
            components: vec![0.6, 0.8, 0.0, 0.0, 0.0, 1.0],
            n_components: 2,
            whiten: Some(vec![2.0, 4.0]),
            center_first: false,
            column_major: false,
        };
        pca.validate(3).unwrap();
        let out = run(&pca, &[2.0, 4.0, 7.0]);
        assert_eq!(out, [((0.6f64 * 2.0 + 3.2) - 2.2) / 2.0, (7.0 - 3.0) / 4.0]);
        assert!(run(&pca, &[f64::NAN, 0.0, 0.0]).iter().all(|v| v.is_nan()));
    }
}
