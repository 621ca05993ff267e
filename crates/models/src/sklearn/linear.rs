//! Linear models, `SGDOneClassSVM` and `EllipticEnvelope` from their
//! pickles, in every scikit-learn release from 0.20.
//!
//! Every linear estimator keeps `coef_` (`(n_features,)`, or one row per
//! output) and `intercept_` (an array, or a plain `0.0` when
//! `fit_intercept=False` left no intercept); classifiers add `classes_`.
//! What differs between releases is how `LogisticRegression` turns
//! decisions into probabilities:
//!
//! * 1.8 and later (no `multi_class` attribute): `expit` for two classes,
//!   `softmax` for more;
//! * before, the `multi_class` attribute decides: `'ovr'` (and 0.20's
//!   default `'warn'`) is one-vs-rest `expit` then a row normalisation;
//!   `'auto'` (1.5–1.7: `'deprecated'`) is one-vs-rest for two classes or
//!   the liblinear solver (and newton-cholesky from 1.2 to 1.5), softmax
//!   otherwise; `'multinomial'` is softmax, also for two classes
//!   (`softmax([-d, d])`).
//!
//! One-vs-rest rows whose `expit`s are all 0 become uniform from 1.9 and
//! NaN before ([`LinearOutput::Logistic`]).

use crate::model::{
    EllipticEnvelope, Estimator as Native, LinearModel, LinearOutput, SgdOneClassSvm,
};
use crate::pickle::{Estimator, NdArray, Value};

use super::trees::{sklearn_version, Version};
use super::{Attrs, ImportError};

/// `coef_` as `(rows, n_features, values)`: a 1-D array is one row.
fn coef(a: &Attrs) -> Result<(usize, usize, Vec<f64>), ImportError> {
    let arr = a.array("coef_")?;
    let (rows, n) = match arr.shape[..] {
        [n] => (1, n),
        [rows, n] => (rows, n),
        _ => {
            return Err(a.invalid(
                "coef_",
                format!(
                    "has shape {:?}, not (n_features,) or (n_outputs, n_features)",
                    arr.shape
                ),
            ))
        }
    };
    if rows == 0 || n == 0 {
        return Err(a.invalid(
            "coef_",
            format!(
                "has shape {:?}; a fitted model has at least one feature and one output",
                arr.shape
            ),
        ));
    }
    let values = a.to_f64("coef_", &arr)?;
    a.check_n_features_in(n)?;
    Ok((rows, n, values))
}

/// `intercept_` with one value per output: an array of `rows` values, or
/// a scalar (a plain float or a 0-d array, as `fit_intercept=False`
/// leaves it) repeated.
fn intercept(a: &Attrs, rows: usize) -> Result<Vec<f64>, ImportError> {
    let v = a.get("intercept_")?;
    let (values, scalar) = match v {
        Value::Float(f) => (vec![f], true),
        Value::Int(i) => (vec![i as f64], true),
        Value::Bool(b) => (vec![f64::from(u8::from(b))], true),
        ref other => {
            let arr = NdArray::from_value(other).map_err(|e| {
                a.bad(
                    "intercept_",
                    &format!("is not a number or a numpy array: {e}"),
                )
            })?;
            let scalar = arr.shape.is_empty();
            (a.to_f64("intercept_", &arr)?, scalar)
        }
    };
    match values[..] {
        [x] if scalar => Ok(vec![x; rows]),
        _ if values.len() == rows => Ok(values),
        _ => Err(a.invalid(
            "intercept_",
            format!("has {} values, but coef_ has {rows} row(s)", values.len()),
        )),
    }
}

/// A text attribute, if present.
fn text(a: &Attrs, attr: &str) -> Result<Option<String>, ImportError> {
    match a.find(attr) {
        None | Some(Value::None) => Ok(None),
        Some(v) => v
            .as_text()
            .map(Some)
            .ok_or_else(|| a.bad(attr, "is not a string")),
    }
}

/// The linear regressors and classifiers.
pub(super) fn linear(a: &Attrs, est: Estimator) -> Result<(Native, usize), ImportError> {
    use Estimator::*;
    let class = est.class_name();
    let (rows, n, coef) = coef(a)?;
    let intercept = intercept(a, rows)?;
    let classifier = matches!(est, LogisticRegression | SgdClassifier | LinearSvc);
    if !classifier {
        if rows != 1 {
            return Err(ImportError::Model(format!(
                "this {class} was fitted on {rows} targets (coef_ has shape ({rows}, {n})); multi-target models are not supported: fit one model per target"
            )));
        }
        let model = LinearModel {
            class: class.to_string(),
            coef,
            intercept,
            output: LinearOutput::Regression,
            classes: Vec::new(),
        };
        return Ok((Native::Linear(model), n));
    }
    let classes = a
        .array("classes_")?
        .to_strings()
        .map_err(|e| a.bad("classes_", &e))?;
    let c = classes.len();
    if c < 2 {
        return Err(a.invalid(
            "classes_",
            format!("has {c} classes; a fitted classifier has at least 2"),
        ));
    }
    if !(rows == c || (rows == 1 && c == 2)) {
        return Err(a.invalid(
            "coef_",
            format!("has {rows} rows for {c} classes; a classifier has one row per class, or one for two classes"),
        ));
    }
    let version = sklearn_version(a);
    let zero_sum_uniform = version.is_none_or(|v| v >= (1, 9));
    let output = match est {
        LogisticRegression => logistic_output(a, version, c, zero_sum_uniform)?,
        SgdClassifier => match text(a, "loss")?.as_deref() {
            Some("log_loss" | "log") => LinearOutput::Logistic { zero_sum_uniform },
            Some("modified_huber") => LinearOutput::ModifiedHuber,
            // Every other loss has no predict_proba.
            _ => LinearOutput::Decision,
        },
        _ => LinearOutput::Decision,
    };
    let model = LinearModel {
        class: class.to_string(),
        coef,
        intercept,
        output,
        classes,
    };
    Ok((Native::Linear(model), n))
}

/// Which probabilities a `LogisticRegression` of `c` classes gives, by
/// release (see the [module docs](self)).
fn logistic_output(
    a: &Attrs,
    version: Option<Version>,
    c: usize,
    zero_sum_uniform: bool,
) -> Result<LinearOutput, ImportError> {
    let ovr = LinearOutput::Logistic { zero_sum_uniform };
    let Some(multi_class) = text(a, "multi_class")? else {
        // 1.8 and later.
        return Ok(if c == 2 { ovr } else { LinearOutput::Softmax });
    };
    let solver = text(a, "solver")?.unwrap_or_default();
    let one_vs_rest = match multi_class.as_str() {
        "ovr" | "warn" => true,
        "multinomial" => false,
        "auto" | "deprecated" => {
            c == 2
                || solver == "liblinear"
                || (solver == "newton-cholesky"
                    && match version {
                        Some(v) => v < (1, 6),
                        None => {
                            return Err(ImportError::Model(
                                "this LogisticRegression(solver='newton-cholesky', multi_class='auto') has no `_sklearn_version`: releases 1.2-1.5 give one-vs-rest probabilities and 1.6-1.7 softmax, so fleetscore cannot tell which apply; re-save it with the scikit-learn that fitted it".into(),
                            ))
                        }
                    })
        }
        other => {
            return Err(a.bad(
                "multi_class",
                &format!("is {other:?}, not 'ovr', 'multinomial' or 'auto'"),
            ))
        }
    };
    Ok(if one_vs_rest {
        ovr
    } else {
        LinearOutput::Softmax
    })
}

/// `sklearn.linear_model.SGDOneClassSVM` (1.0 and later).
pub(super) fn sgd_one_class_svm(a: &Attrs) -> Result<(Native, usize), ImportError> {
    let (rows, n, coef) = coef(a)?;
    if rows != 1 {
        return Err(a.invalid(
            "coef_",
            format!("has {rows} rows; a one-class model has one"),
        ));
    }
    let offset = a
        .get("offset_")?
        .as_f64()
        .ok_or_else(|| a.bad("offset_", "is not a single number"))?;
    Ok((Native::SgdOneClassSvm(SgdOneClassSvm { coef, offset }), n))
}

/// `sklearn.covariance.EllipticEnvelope`.
pub(super) fn elliptic_envelope(a: &Attrs) -> Result<(Native, usize), ImportError> {
    let stored = a.bool_or("store_precision", true)?;
    if !stored || matches!(a.find("precision_"), None | Some(Value::None)) {
        return Err(ImportError::Model(
            "this EllipticEnvelope was fitted with store_precision=False: scikit-learn then inverts covariance_ with scipy's pinvh (an eigendecomposition) at every prediction, which fleetscore does not reproduce exactly; refit it with store_precision=True (the default)".into(),
        ));
    }
    let loc = a.array("location_")?;
    let [n] = loc.shape[..] else {
        return Err(a.invalid(
            "location_",
            format!("has shape {:?}, not (n_features,)", loc.shape),
        ));
    };
    if n == 0 {
        return Err(a.invalid(
            "location_",
            "is empty; a fitted model has at least one feature",
        ));
    }
    let location = a.to_f64("location_", &loc)?;
    let prec = a.array("precision_")?;
    if prec.shape[..] != [n, n] {
        return Err(a.invalid(
            "precision_",
            format!(
                "has shape {:?}, but location_ has {n} features: it must be ({n}, {n})",
                prec.shape
            ),
        ));
    }
    let precision = a.to_f64("precision_", &prec)?;
    let offset = a
        .get("offset_")?
        .as_f64()
        .ok_or_else(|| a.bad("offset_", "is not a single number"))?;
    a.check_n_features_in(n)?;
    Ok((
        Native::EllipticEnvelope(EllipticEnvelope {
            location,
            precision,
            offset,
        }),
        n,
    ))
}
