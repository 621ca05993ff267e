//! Preprocessing steps: every transform before the final estimator.

use serde::{Deserialize, Serialize};

use super::{check_finite, check_scale, check_width, InvalidModel};

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
}

impl Step {
    /// scikit-learn's class name.
    pub fn name(&self) -> &'static str {
        match self {
            Step::StandardScaler { .. } => "StandardScaler",
            Step::MinMaxScaler { .. } => "MinMaxScaler",
            Step::RobustScaler { .. } => "RobustScaler",
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
        }
        Ok(())
    }

    /// Width of a row after this step, for rows of `n` values. Most steps
    /// keep the width; a step that changes it (PolynomialFeatures, PCA, an
    /// imputer dropping empty columns) says so here and in
    /// [`Step::changes_width`].
    pub fn out_width(&self, n: usize) -> usize {
        n
    }

    /// Whether the step writes a row of another width (then it is applied
    /// with [`Step::transform_into`], otherwise in place with
    /// [`Step::transform`]).
    pub fn changes_width(&self) -> bool {
        false
    }

    /// Transforms `x` (of the step's input width) into `out` (of
    /// [`Step::out_width`]); only for steps that change the width.
    pub fn transform_into(&self, x: &[f64], out: &mut [f64]) {
        out.copy_from_slice(x);
        self.transform(out);
    }

    /// Transforms one row in place.
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
        }
    }
}
