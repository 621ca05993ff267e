//! Preprocessing steps from their pickles: the scalers, `Normalizer`,
//! `Binarizer`, `SimpleImputer`, `PCA`, `PolynomialFeatures`,
//! `QuantileTransformer` and `PowerTransformer`, in every scikit-learn
//! release from 0.20.
//!
//! Where a release computes `transform` differently, the step records
//! which rule applies (read from `_sklearn_version`; a pickle without one
//! gets the newest rules):
//!
//! | step | release | rule |
//! |---|---|---|
//! | `Normalizer(norm='max')` | ≤ 0.22 | `max(x)`, not `max(abs(x))` (0.23 is refused: fleetscore cannot tell which) |
//! | `Normalizer` | ≤ 0.24 | only a norm of exactly 0 becomes 1 (from 1.0: below `10 * eps`) |
//! | `PolynomialFeatures` | ≤ 0.21 | products multiplied left to right |
//! | `PCA` | ≤ 1.4 | `(X - mean_) @ components_.T`; whitening by `sqrt(explained_variance_)` unclipped |
//! | `QuantileTransformer(output_distribution='uniform')` | 0.20 | the `1e-7` bounds and clip of `normal` |
//! | `PowerTransformer(method='yeo-johnson')` | ≤ 1.8 | `((x + 1)**l - 1) / l` (from 1.9 `expm1(l * log1p(x)) / l`) |
//! | `SimpleImputer` | ≤ 1.7 | `strategy='constant'` never drops a column |

use crate::model::{Norm, PolyProduct, PowerMethod, QuantileOutput, Step};
use crate::pickle::{Class, Estimator, Value};

use super::trees::{sklearn_version, Version};
use super::{Attrs, ImportError};

/// Translates one fitted preprocessing step. `prior` holds the steps
/// before it, so that a step without fitted arrays (`Normalizer`,
/// `Binarizer`) can check its `n_features_in_` against the width they
/// give.
pub(super) fn step(a: &Attrs, prior: &[Step]) -> Result<Step, ImportError> {
    let version = sklearn_version(a);
    let s = match a.est {
        Estimator::StandardScaler => {
            let with_mean = a.bool_or("with_mean", true)?;
            let with_std = a.bool_or("with_std", true)?;
            Step::StandardScaler {
                mean: if with_mean { a.opt_vec("mean_")? } else { None },
                scale: if with_std { a.opt_vec("scale_")? } else { None },
            }
        }
        Estimator::MinMaxScaler => {
            let clip = if a.bool_or("clip", false)? {
                let r = a.get("feature_range")?;
                let r = r
                    .sequence_items()
                    .filter(|r| r.len() == 2)
                    .ok_or_else(|| a.bad("feature_range", "is not a pair"))?;
                let lo = r[0]
                    .as_f64()
                    .ok_or_else(|| a.bad("feature_range", "is not numeric"))?;
                let hi = r[1]
                    .as_f64()
                    .ok_or_else(|| a.bad("feature_range", "is not numeric"))?;
                Some((lo, hi))
            } else {
                None
            };
            Step::MinMaxScaler {
                scale: a.vec("scale_")?,
                min: a.vec("min_")?,
                clip,
            }
        }
        Estimator::RobustScaler => {
            let with_centering = a.bool_or("with_centering", true)?;
            let with_scaling = a.bool_or("with_scaling", true)?;
            Step::RobustScaler {
                center: if with_centering {
                    a.opt_vec("center_")?
                } else {
                    None
                },
                scale: if with_scaling {
                    a.opt_vec("scale_")?
                } else {
                    None
                },
            }
        }
        Estimator::MaxAbsScaler => Step::MaxAbsScaler {
            scale: a.vec("scale_")?,
            clip: a.bool_or("clip", false)?,
        },
        Estimator::Normalizer => normalizer(a, version)?,
        Estimator::Binarizer => Step::Binarizer {
            threshold: match a.find("threshold") {
                None => 0.0,
                Some(t) => t
                    .as_f64()
                    .ok_or_else(|| a.bad("threshold", "is not a number"))?,
            },
        },
        Estimator::SimpleImputer => simple_imputer(a, version)?,
        Estimator::Pca => pca(a, version)?,
        Estimator::PolynomialFeatures => polynomial_features(a, version)?,
        Estimator::QuantileTransformer => quantile_transformer(a, version)?,
        Estimator::PowerTransformer => power_transformer(a, version)?,
        other => {
            return Err(ImportError::Model(format!(
                "{} is not a preprocessing step fleetscore reads",
                Class::Sklearn(other).python_name()
            )))
        }
    };
    // `n_features_in_` (0.24 and later) is the width the step was fitted
    // on: its arrays' width, or for a step without arrays the width the
    // steps before it give (when they say).
    if let Some(width) = s.in_width().or_else(|| running_width(prior)) {
        a.check_n_features_in(width)?;
    }
    Ok(s)
}

/// The width of the model's input rows: walking back from the final
/// estimator's width, each step's fitted width (a step without arrays
/// keeps the width it is given).
pub(super) fn input_width(steps: &[Step], estimator_width: usize) -> usize {
    steps
        .iter()
        .rev()
        .fold(estimator_width, |w, s| s.in_width().unwrap_or(w))
}

/// The width `prior` writes, when one of them says.
fn running_width(prior: &[Step]) -> Option<usize> {
    prior.iter().fold(None, |w, s| match s.in_width() {
        Some(n) => Some(s.out_width(n)),
        None => w.map(|w| s.out_width(w)),
    })
}

fn vintage(v: Option<Version>) -> String {
    v.map_or("an unknown release".into(), |(a, b)| format!("{a}.{b}"))
}

fn text(a: &Attrs, attr: &str, default: &str) -> Result<String, ImportError> {
    match a.find(attr) {
        None => Ok(default.to_string()),
        Some(v) => v.as_text().ok_or_else(|| a.bad(attr, "is not a string")),
    }
}

fn normalizer(a: &Attrs, version: Option<Version>) -> Result<Step, ImportError> {
    let newest = version.is_none_or(|v| v >= (1, 0));
    let norm = match text(a, "norm", "l2")?.as_str() {
        "l1" => Norm::L1,
        "l2" => Norm::L2,
        "max" => match version {
            Some(v) if v < (0, 23) => Norm::SignedMax,
            Some((0, 23)) => {
                return Err(ImportError::Model(
                    "Normalizer(norm='max') pickled by scikit-learn 0.23 cannot be scored: releases up to 0.22 divide by max(x) and later ones by max(abs(x)), and fleetscore cannot tell which 0.23 did; re-fit it with scikit-learn 0.24 or later".into(),
                ))
            }
            _ => Norm::Max,
        },
        other => {
            return Err(ImportError::Model(format!(
                "Normalizer.norm is {other:?}; scikit-learn knows only 'l1', 'l2' and 'max'"
            )))
        }
    };
    Ok(Step::Normalizer {
        norm,
        near_zero: newest,
    })
}

/// Whether a `missing_values` is NaN (Python's `float('nan')`, `np.nan`
/// or a numpy NaN scalar).
fn is_nan_value(v: &Value) -> bool {
    match v {
        Value::Float(f) => f.is_nan(),
        Value::Object(_) | Value::Array(_) => v.as_f64().is_some_and(f64::is_nan),
        _ => false,
    }
}

fn python_repr(v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => format!("{s:?}"),
        other => other.object_class().map_or_else(
            || format!("a {}", other.kind()),
            |c| c.python_name().to_string(),
        ),
    }
}

fn simple_imputer(a: &Attrs, version: Option<Version>) -> Result<Step, ImportError> {
    if a.bool_or("add_indicator", false)? {
        return Err(ImportError::Model(
            "SimpleImputer(add_indicator=True) appends a column per feature with missing values (MissingIndicator), which fleetscore does not build; re-fit it with add_indicator=False".into(),
        ));
    }
    if let Some(m) = a.find("missing_values") {
        if !is_nan_value(&m) {
            return Err(ImportError::Model(format!(
                "SimpleImputer(missing_values={}) cannot be scored: fleetscore imputes only NaN, the default; re-fit it with missing_values=np.nan",
                python_repr(&m)
            )));
        }
    }
    let strategy = text(a, "strategy", "mean")?;
    if !matches!(
        strategy.as_str(),
        "mean" | "median" | "most_frequent" | "constant"
    ) {
        return Err(ImportError::Model(format!(
            "SimpleImputer(strategy={strategy:?}) is not supported (supported: 'mean', 'median', 'most_frequent', 'constant')"
        )));
    }
    // Before 1.8, strategy='constant' kept every column.
    let keep_empty = a.bool_or("keep_empty_features", false)?
        || (strategy == "constant" && version.is_some_and(|v| v < (1, 8)));
    let stats = statistics(a)?;
    let (mut keep, mut fill) = (Vec::new(), Vec::new());
    for (j, &s) in stats.iter().enumerate() {
        if s.is_nan() {
            if keep_empty {
                return Err(ImportError::Model(format!(
                    "SimpleImputer.statistics_[{j}] is NaN and the column is kept (strategy={strategy:?}), so every value it fills is missing again; re-fit it with a numeric fill_value"
                )));
            }
            continue;
        }
        keep.push(u32::try_from(j).map_err(|_| a.bad("statistics_", "is too long"))?);
        fill.push(s);
    }
    if keep.is_empty() {
        return Err(ImportError::Model(format!(
            "SimpleImputer (scikit-learn {}) saw no value in any of its {} features, so it drops them all and leaves nothing to score",
            vintage(version),
            stats.len()
        )));
    }
    Ok(Step::SimpleImputer {
        n_features_in: stats.len(),
        keep,
        fill,
    })
}

/// `statistics_`: numeric, or (`strategy='constant'`, 1.8 and later) an
/// object array of the fill value and NaN.
fn statistics(a: &Attrs) -> Result<Vec<f64>, ImportError> {
    let arr = a.array("statistics_")?;
    let Some(items) = arr.objects() else {
        return a.to_f64("statistics_", &arr);
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Float(_) | Value::Int(_) | Value::Bool(_) | Value::Object(_) => {
                v.as_f64().ok_or(())
            }
            _ => Err(()),
        }
        .map_err(|()| {
            ImportError::Model(format!(
                "SimpleImputer.statistics_[{i}] is {}, not a number: an imputer of text or categories cannot feed a numeric model",
                python_repr(v)
            ))
        }))
        .collect()
}

/// A 2-D array attribute as `(rows, columns, values)`.
fn matrix(a: &Attrs, attr: &str) -> Result<(usize, usize, Vec<f64>), ImportError> {
    let arr = a.array(attr)?;
    let [r, c] = arr.shape[..] else {
        return Err(a.invalid(attr, format!("has shape {:?}, not a 2-D array", arr.shape)));
    };
    Ok((r, c, a.to_f64(attr, &arr)?))
}

fn pca(a: &Attrs, version: Option<Version>) -> Result<Step, ImportError> {
    let column_major = a.array("components_")?.fortran;
    let (k, n, components) = matrix(a, "components_")?;
    if let Some(v) = a.find("n_components_") {
        if v.as_i64() != i64::try_from(k).ok() {
            return Err(a.invalid(
                "n_components_",
                format!("is {}, but components_ has {k} rows", python_repr(&v)),
            ));
        }
    }
    if matches!(a.find("mean_"), None | Some(Value::None)) {
        return Err(a.bad("mean_", "is missing; a fitted PCA always has one"));
    }
    let mean = a.vec("mean_")?;
    if mean.len() != n {
        return Err(a.invalid(
            "mean_",
            format!("has {} values, but components_ has {n} columns", mean.len()),
        ));
    }
    let modern = version.is_none_or(|v| v >= (1, 5));
    let whiten = if a.bool_or("whiten", false)? {
        let ev = a.vec("explained_variance_")?;
        // 1.5 and later: `scale[scale < eps] = eps` after the square root.
        Some(
            ev.iter()
                .map(|v| {
                    let s = v.sqrt();
                    if modern && s < f64::EPSILON {
                        f64::EPSILON
                    } else {
                        s
                    }
                })
                .collect(),
        )
    } else {
        None
    };
    Ok(Step::Pca {
        mean,
        components,
        n_components: k,
        whiten,
        center_first: !modern,
        column_major,
    })
}

fn int_attr(a: &Attrs, attr: &str) -> Result<Option<i64>, ImportError> {
    match a.find(attr) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| a.bad(attr, "is not an integer")),
    }
}

fn degree(a: &Attrs, attr: &str, v: i64) -> Result<u32, ImportError> {
    u32::try_from(v).map_err(|_| a.invalid(attr, format!("is {v}, not a degree")))
}

fn polynomial_features(a: &Attrs, version: Option<Version>) -> Result<Step, ImportError> {
    // `n_input_features_` until 0.24 (a property from 1.0),
    // `n_features_in_` from 0.24.
    let n_in = match int_attr(a, "n_features_in_")? {
        Some(n) => n,
        None => int_attr(a, "n_input_features_")?.ok_or_else(|| {
            a.bad(
                "n_features_in_",
                "and n_input_features_ are missing (is it fitted?)",
            )
        })?,
    };
    let n_features_in = usize::try_from(n_in)
        .map_err(|_| a.invalid("n_features_in_", format!("is {n_in}, not a count")))?;
    // 1.0 and later: `_min_degree`/`_max_degree` (degree may be a pair);
    // before, `degree` is the highest degree.
    let (min_degree, max_degree) = match (int_attr(a, "_min_degree")?, int_attr(a, "_max_degree")?)
    {
        (Some(lo), Some(hi)) => (degree(a, "_min_degree", lo)?, degree(a, "_max_degree", hi)?),
        _ => {
            let d = int_attr(a, "degree")?.unwrap_or(2);
            (0, degree(a, "degree", d)?)
        }
    };
    let interaction_only = a.bool_or("interaction_only", false)?;
    let include_bias = a.bool_or("include_bias", true)?;
    let step = Step::PolynomialFeatures {
        n_features_in,
        min_degree,
        max_degree,
        interaction_only,
        include_bias,
        product: if version.is_some_and(|v| v < (0, 22)) {
            PolyProduct::Sequential
        } else {
            PolyProduct::Nested
        },
    };
    step.validate(n_features_in)?;
    if let Some(out) = int_attr(a, "n_output_features_")? {
        let width = step.out_width(n_features_in);
        if usize::try_from(out).ok() != Some(width) {
            return Err(a.invalid(
                "n_output_features_",
                format!(
                    "is {out}, but degree ({min_degree}, {max_degree}) of {n_features_in} features gives {width} columns"
                ),
            ));
        }
    }
    Ok(step)
}

fn quantile_transformer(a: &Attrs, version: Option<Version>) -> Result<Step, ImportError> {
    let output = match text(a, "output_distribution", "uniform")?.as_str() {
        "uniform" if version.is_some_and(|v| v < (0, 21)) => QuantileOutput::UniformClipped,
        "uniform" => QuantileOutput::Uniform,
        "normal" => QuantileOutput::Normal,
        other => {
            return Err(ImportError::Model(format!(
                "QuantileTransformer.output_distribution is {other:?}; scikit-learn knows only 'uniform' and 'normal'"
            )))
        }
    };
    let (nq, n, q) = matrix(a, "quantiles_")?;
    let references = a.vec("references_")?;
    if references.len() != nq {
        return Err(a.invalid(
            "references_",
            format!(
                "has {} values, but quantiles_ has {nq} rows",
                references.len()
            ),
        ));
    }
    // quantiles_ is (n_quantiles, n_features); the step keeps each
    // feature's quantiles together.
    let mut quantiles = Vec::with_capacity(q.len());
    for j in 0..n {
        quantiles.extend((0..nq).map(|i| q[i * n + j]));
    }
    if version.is_some_and(|v| v < (0, 22)) {
        // 0.22 made the quantiles ascend (np.maximum.accumulate); an
        // older fit may leave a rounding dip, on which np.interp's
        // answer depends on the rows before it.
        for (j, col) in quantiles.chunks_exact(nq.max(1)).enumerate() {
            if let Some(i) = col.windows(2).position(|w| w[1] < w[0]) {
                return Err(ImportError::Model(format!(
                    "QuantileTransformer pickled by scikit-learn {} has quantiles_[{}, {j}] below the quantile before it (releases before 0.22 did not make them ascend), so np.interp's result depends on the other rows of the batch; re-fit it with scikit-learn 0.22 or later",
                    vintage(version),
                    i + 1
                )));
            }
        }
    }
    Ok(Step::QuantileTransformer {
        output,
        references,
        quantiles,
    })
}

fn power_transformer(a: &Attrs, version: Option<Version>) -> Result<Step, ImportError> {
    let method = match text(a, "method", "yeo-johnson")?.as_str() {
        "yeo-johnson" if version.is_some_and(|v| v < (1, 9)) => PowerMethod::YeoJohnsonPow,
        "yeo-johnson" => PowerMethod::YeoJohnson,
        "box-cox" => PowerMethod::BoxCox,
        other => {
            return Err(ImportError::Model(format!(
                "PowerTransformer.method is {other:?}; scikit-learn knows only 'yeo-johnson' and 'box-cox'"
            )))
        }
    };
    let lambdas = a.vec("lambdas_")?;
    let (mean, scale) = if a.bool_or("standardize", true)? {
        scaler(a)?
    } else {
        (None, None)
    };
    Ok(Step::PowerTransformer {
        method,
        lambdas,
        mean,
        scale,
    })
}

type Moments = (Option<Vec<f64>>, Option<Vec<f64>>);

/// The `StandardScaler` a standardizing `PowerTransformer` keeps as
/// `_scaler`.
fn scaler(a: &Attrs) -> Result<Moments, ImportError> {
    let v = a.get("_scaler")?;
    if v.object_class() != Some(Class::Sklearn(Estimator::StandardScaler)) {
        return Err(a.bad("_scaler", "is not a StandardScaler"));
    }
    let state = v
        .object_state()
        .ok_or_else(|| a.bad("_scaler", "has no fitted state"))?;
    let inner = Attrs {
        est: Estimator::StandardScaler,
        state: &state,
        limits: a.limits,
    };
    let with_mean = inner.bool_or("with_mean", true)?;
    let with_std = inner.bool_or("with_std", true)?;
    Ok((
        if with_mean {
            inner.opt_vec("mean_")?
        } else {
            None
        },
        if with_std {
            inner.opt_vec("scale_")?
        } else {
            None
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::pickle::{ArrayData, Dtype, NdArray, Object};
    use crate::sklearn::{import, translate};

    fn s(t: &str) -> Value {
        Value::Str(t.into())
    }

    fn obj(est: Estimator, attrs: Vec<(&str, Value)>) -> Value {
        let state = Value::dict(attrs.into_iter().map(|(k, v)| (s(k), v)).collect());
        Value::Object(Rc::new(RefCell::new(Object {
            class: Class::Sklearn(est),
            args: Vec::new(),
            state: Some(state),
        })))
    }

    /// A float64 array of `shape`, in C order (or Fortran order).
    fn arr(shape: &[usize], v: &[f64], fortran: bool) -> Value {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Value::Array(Rc::new(NdArray {
            shape: shape.to_vec(),
            fortran,
            dtype: Dtype {
                kind: 'f',
                itemsize: 8,
                big_endian: false,
                fields: None,
            },
            data: ArrayData::Raw(bytes.into()),
        }))
    }

    fn pipeline(steps: Vec<Value>) -> Value {
        let items = steps
            .into_iter()
            .enumerate()
            .map(|(i, v)| Value::tuple(vec![s(&format!("s{i}")), v]))
            .collect();
        obj(Estimator::Pipeline, vec![("steps", Value::list(items))])
    }

    /// A one-feature OneClassSVM with one support vector at 0.
    fn svm() -> Value {
        obj(
            Estimator::OneClassSvm,
            vec![
                ("kernel", s("rbf")),
                ("_gamma", Value::Float(0.5)),
                ("support_vectors_", arr(&[1, 1], &[0.0], false)),
                ("_dual_coef_", arr(&[1, 1], &[1.0], false)),
                ("_intercept_", arr(&[1], &[-0.5], false)),
                ("n_features_in_", Value::Int(1)),
            ],
        )
    }

    fn version(v: &str) -> (&str, Value) {
        ("_sklearn_version", s(v))
    }

    #[test]
    fn a_width_changing_chain_takes_its_input_width_from_its_first_arrays() {
        // Normalizer (any width) -> PCA 3 -> 1 -> OneClassSVM on 1.
        let model = translate(&pipeline(vec![
            obj(
                Estimator::Normalizer,
                vec![("norm", s("l1")), version("1.9.1")],
            ),
            obj(
                Estimator::Pca,
                vec![
                    ("components_", arr(&[1, 3], &[0.6, 0.0, 0.8], false)),
                    ("mean_", arr(&[3], &[0.0, 0.0, 0.0], false)),
                    ("n_components_", Value::Int(1)),
                    ("n_features_in_", Value::Int(3)),
                    version("1.9.1"),
                ],
            ),
            svm(),
        ]))
        .unwrap();
        assert_eq!(model.n_features, 3);
        assert_eq!(model.estimator_width(), 1);
        let (mut score, mut label) = (vec![0.0; 2], vec![0; 2]);
        model
            .evaluate_into(
                &[1.0, 2.0, 1.0, 0.0, 0.0, f64::NAN],
                3,
                &mut score,
                &mut label,
            )
            .unwrap();
        // l1: [0.25, 0.5, 0.25] -> 0.6 * 0.25 + 0.8 * 0.25 = 0.35.
        let z: f64 = 0.8f64.mul_add(0.25, 0.6 * 0.25) - 0.0;
        assert_eq!(score[0], (-0.5 * z * z).exp() - 0.5);
        // A NaN row is refused by the Normalizer: NaN score, an anomaly.
        assert!(score[1].is_nan());
        assert_eq!(label[1], 1);
    }

    #[test]
    fn n_features_in_of_a_step_without_arrays_is_checked_against_the_steps_before() {
        let e = translate(&pipeline(vec![
            obj(
                Estimator::Pca,
                vec![
                    ("components_", arr(&[1, 2], &[0.6, 0.8], false)),
                    ("mean_", arr(&[2], &[0.0, 0.0], false)),
                ],
            ),
            obj(
                Estimator::Binarizer,
                vec![("n_features_in_", Value::Int(2))],
            ),
            svm(),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("Binarizer: n_features_in_ is 2"), "{e}");
    }

    #[test]
    fn imputers_scikit_learn_would_not_fill_with_nan_are_refused() {
        let stats = || ("statistics_", arr(&[1], &[2.0], false));
        for (extra, want) in [
            (("missing_values", Value::Int(-1)), "missing_values=-1"),
            (("missing_values", Value::None), "missing_values=None"),
            (("add_indicator", Value::Bool(true)), "add_indicator=True"),
            (("strategy", s("knn")), "strategy=\"knn\""),
        ] {
            let e = translate(&pipeline(vec![
                obj(Estimator::SimpleImputer, vec![stats(), extra]),
                svm(),
            ]))
            .unwrap_err()
            .to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        // The default NaN, as Python's float.
        let ok = translate(&pipeline(vec![
            obj(
                Estimator::SimpleImputer,
                vec![stats(), ("missing_values", Value::Float(f64::NAN))],
            ),
            svm(),
        ]))
        .unwrap();
        assert!(matches!(ok.steps[0], Step::SimpleImputer { .. }));
    }

    #[test]
    fn empty_features_are_dropped_as_each_release_does() {
        let imputer = |strategy: &str, v: &str| {
            obj(
                Estimator::SimpleImputer,
                vec![
                    ("statistics_", arr(&[2], &[f64::NAN, 2.0], false)),
                    ("strategy", s(strategy)),
                    version(v),
                ],
            )
        };
        let m = translate(&pipeline(vec![imputer("mean", "1.9.1"), svm()])).unwrap();
        assert_eq!(m.n_features, 2);
        assert_eq!(
            m.steps[0],
            Step::SimpleImputer {
                n_features_in: 2,
                keep: vec![1],
                fill: vec![2.0]
            }
        );
        // strategy='constant' kept every column before 1.8; a NaN fill
        // would leave the value missing.
        let e = translate(&pipeline(vec![imputer("constant", "1.7.2"), svm()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("statistics_[0] is NaN"), "{e}");
        assert!(translate(&pipeline(vec![imputer("constant", "1.8.0"), svm()])).is_ok());
    }

    #[test]
    fn releases_pick_their_rules() {
        let norm = |v: &str| {
            translate(&pipeline(vec![
                obj(Estimator::Normalizer, vec![("norm", s("max")), version(v)]),
                svm(),
            ]))
        };
        assert_eq!(
            norm("0.22.2.post1").unwrap().steps[0],
            Step::Normalizer {
                norm: Norm::SignedMax,
                near_zero: false
            }
        );
        assert_eq!(
            norm("1.0.2").unwrap().steps[0],
            Step::Normalizer {
                norm: Norm::Max,
                near_zero: true
            }
        );
        let e = norm("0.23.2").unwrap_err().to_string();
        assert!(e.contains("0.23"), "{e}");
        let pca = |v: &str| {
            translate(&pipeline(vec![
                obj(
                    Estimator::Pca,
                    vec![
                        ("components_", arr(&[1, 1], &[1.0], false)),
                        ("mean_", arr(&[1], &[3.0], false)),
                        ("whiten", Value::Bool(true)),
                        ("explained_variance_", arr(&[1], &[0.0], false)),
                        version(v),
                    ],
                ),
                svm(),
            ]))
            .unwrap()
            .steps
            .remove(0)
        };
        let Step::Pca {
            whiten: Some(w),
            center_first: true,
            ..
        } = pca("1.4.2")
        else {
            panic!("1.4 centres first")
        };
        assert_eq!(w, [0.0]);
        let Step::Pca {
            whiten: Some(w),
            center_first: false,
            ..
        } = pca("1.5.2")
        else {
            panic!("1.5 centres after")
        };
        assert_eq!(w, [f64::EPSILON]);
    }

    #[test]
    fn descending_quantiles_of_old_releases_are_refused_naming_the_release() {
        let e = translate(&pipeline(vec![
            obj(
                Estimator::QuantileTransformer,
                vec![
                    ("quantiles_", arr(&[3, 1], &[0.0, 2.0, 1.0], false)),
                    ("references_", arr(&[3], &[0.0, 0.5, 1.0], false)),
                    version("0.21.3"),
                ],
            ),
            svm(),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("0.21") && e.contains("quantiles_[2, 0]"), "{e}");
    }

    #[test]
    fn quantiles_are_kept_per_feature() {
        let m = translate(&pipeline(vec![
            obj(
                Estimator::QuantileTransformer,
                vec![
                    // (n_quantiles, n_features) = (2, 2)
                    ("quantiles_", arr(&[2, 2], &[0.0, 10.0, 1.0, 20.0], false)),
                    ("references_", arr(&[2], &[0.0, 1.0], false)),
                ],
            ),
            obj(
                Estimator::Pca,
                vec![
                    ("components_", arr(&[1, 2], &[1.0, 1.0], true)),
                    ("mean_", arr(&[2], &[0.0, 0.0], false)),
                ],
            ),
            svm(),
        ]))
        .unwrap();
        let Step::QuantileTransformer { quantiles, .. } = &m.steps[0] else {
            panic!()
        };
        assert_eq!(quantiles, &[0.0, 1.0, 10.0, 20.0]);
        let mut row = [0.5, 15.0];
        m.steps[0].transform(&mut row);
        assert_eq!(row, [0.5, 0.5]);
    }

    #[test]
    fn power_transformer_reads_its_scaler() {
        let scaler = obj(
            Estimator::StandardScaler,
            vec![
                ("mean_", arr(&[1], &[1.0], false)),
                ("scale_", arr(&[1], &[2.0], false)),
            ],
        );
        let m = translate(&pipeline(vec![
            obj(
                Estimator::PowerTransformer,
                vec![
                    ("method", s("box-cox")),
                    ("lambdas_", arr(&[1], &[0.0], false)),
                    ("_scaler", scaler),
                ],
            ),
            svm(),
        ]))
        .unwrap();
        let mut row = [std::f64::consts::E];
        m.steps[0].transform(&mut row);
        assert_eq!(row, [0.0]);
        let e = translate(&pipeline(vec![
            obj(
                Estimator::PowerTransformer,
                vec![
                    ("lambdas_", arr(&[1], &[0.0], false)),
                    ("_scaler", s("not a scaler")),
                ],
            ),
            svm(),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("_scaler"), "{e}");
    }

    /// Protocol-2 pickle opcodes for a Pipeline whose first step is the
    /// object `step` (bytes that build it on the stack); the rest need
    /// not be well formed, since the refusal comes first.
    fn pipeline_pickle(step: &[u8]) -> Vec<u8> {
        let mut p = b"\x80\x02csklearn.pipeline\nPipeline\n)\x81}(X\x05\x00\x00\x00steps](X\x01\x00\x00\x00a".to_vec();
        p.extend_from_slice(step);
        p.extend_from_slice(b"\x86e");
        p
    }

    #[test]
    fn python_code_in_a_pipeline_is_refused_naming_it() {
        // FunctionTransformer(func=np.log1p): refused at its function.
        let ft = b"csklearn.preprocessing._function_transformer\nFunctionTransformer\n)\x81}(X\x04\x00\x00\x00funccnumpy\nlog1p\nub";
        let e = import(&pipeline_pickle(ft)).unwrap_err().to_string();
        assert!(
            e.contains("numpy.log1p") && e.contains("FunctionTransformer"),
            "{e}"
        );
        // A user's own function.
        let ft = b"csklearn.preprocessing._function_transformer\nFunctionTransformer\n)\x81}(X\x04\x00\x00\x00funcc__main__\nmy_feature\nub";
        let e = import(&pipeline_pickle(ft)).unwrap_err().to_string();
        assert!(
            e.contains("__main__.my_feature") && e.contains("FunctionTransformer"),
            "{e}"
        );
        // A user's own class.
        let e = import(&pipeline_pickle(b"c__main__\nMyScaler\n)\x81}b"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("__main__.MyScaler"), "{e}");
        // An identity FunctionTransformer (no function) is still not a
        // step fleetscore runs.
        let e = translate(&pipeline(vec![
            Value::Object(Rc::new(RefCell::new(Object {
                class: Class::Inert(
                    "sklearn.preprocessing._function_transformer.FunctionTransformer",
                ),
                args: Vec::new(),
                state: Some(Value::dict(Vec::new())),
            }))),
            svm(),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("FunctionTransformer"), "{e}");
    }

    #[test]
    fn widths_walk_back_from_the_estimator() {
        let poly = Step::PolynomialFeatures {
            n_features_in: 2,
            min_degree: 0,
            max_degree: 2,
            interaction_only: false,
            include_bias: true,
            product: PolyProduct::Nested,
        };
        let norm = Step::Normalizer {
            norm: Norm::L2,
            near_zero: true,
        };
        assert_eq!(
            input_width(&[norm.clone(), poly.clone(), norm.clone()], 6),
            2
        );
        assert_eq!(input_width(std::slice::from_ref(&norm), 4), 4);
        assert_eq!(running_width(&[norm.clone(), poly, norm.clone()]), Some(6));
        assert_eq!(running_width(std::slice::from_ref(&norm)), None);
    }
}
