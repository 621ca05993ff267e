//! `HistGradientBoostingRegressor` and `HistGradientBoostingClassifier`
//! from their pickles.
//!
//! `_predictors` is a list of iterations, each a list of `TreePredictor`s
//! whose `nodes` are records of `PREDICTOR_RECORD_DTYPE`: read by field name,
//! so that 0.22's `threshold` and 0.24's `num_threshold`, 32- and 64-bit
//! `feature_idx`, and records without `missing_go_to_left` (0.21) or
//! categorical fields (before 0.24) all read.

use crate::model::{
    CategoricalSplit, Estimator as Native, HgbEncoder, HgbLink, HgbTree, HistGradientBoosting, Tree,
};
use crate::pickle::{Class, Estimator, NdArray, Value};

use super::trees::sklearn_version;
use super::{Attrs, ImportError};

fn items(a: &Attrs, v: &Value, at: &str) -> Result<Vec<Value>, ImportError> {
    v.sequence_items().ok_or_else(|| a.bad(at, "is not a list"))
}

/// The input width.
fn n_features(a: &Attrs) -> Result<usize, ImportError> {
    for attr in ["n_features_in_", "_n_features", "n_features_"] {
        if let Some(v) = a.find(attr) {
            return v
                .as_i64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| a.invalid(attr, "is not a positive integer"));
        }
    }
    Err(a.bad("n_features_in_", "is missing (is the model fitted?)"))
}

/// One `TreePredictor`.
fn read_predictor(a: &Attrs, at: &str, v: &Value, n: usize) -> Result<HgbTree, ImportError> {
    if v.object_class() != Some(Class::Sklearn(Estimator::TreePredictor)) {
        return Err(a.bad(at, "is not a TreePredictor"));
    }
    let st = v.object_state().ok_or_else(|| a.bad(at, "has no state"))?;
    let field = |name: &str| format!("{at}.nodes.{name}");
    let nodes_v = st
        .dict_get("nodes")
        .ok_or_else(|| a.bad(&format!("{at}.nodes"), "is missing"))?;
    let nodes = NdArray::from_value(&nodes_v).map_err(|e| {
        a.bad(
            &format!("{at}.nodes"),
            &format!("is not a usable record array: {e}"),
        )
    })?;
    if nodes.shape.len() != 1 || nodes.is_empty() {
        return Err(a.invalid(
            format!("{at}.nodes"),
            format!("has shape {:?}", nodes.shape),
        ));
    }
    let count = nodes.len();
    let ints = |name: &str| nodes.field_i64(name).map_err(|e| a.bad(&field(name), &e));
    let is_leaf = ints("is_leaf")?;
    let left_raw = ints("left")?;
    let right_raw = ints("right")?;
    let feature_raw = ints("feature_idx")?;
    let value = nodes
        .field_f64("value")
        .map_err(|e| a.bad(&field("value"), &e))?;
    let thr_name = if nodes.has_field("num_threshold") {
        "num_threshold"
    } else {
        "threshold"
    };
    let threshold = nodes
        .field_f64(thr_name)
        .map_err(|e| a.bad(&field(thr_name), &e))?;
    let missing = if nodes.has_field("missing_go_to_left") {
        ints("missing_go_to_left")?
    } else {
        vec![0; count]
    };
    let is_cat = if nodes.has_field("is_categorical") {
        ints("is_categorical")?
    } else {
        vec![0; count]
    };
    let bitset_idx = if nodes.has_field("bitset_idx") {
        ints("bitset_idx")?
    } else {
        vec![0; count]
    };
    let (mut left, mut right, mut feature) = (vec![-1; count], vec![-1; count], vec![0u32; count]);
    for i in 0..count {
        if is_leaf[i] != 0 {
            continue;
        }
        let child = |c: i64| {
            i32::try_from(c)
                .ok()
                .filter(|&c| c >= 0)
                .ok_or_else(|| a.invalid(field("left"), format!("node {i} points to {c}")))
        };
        left[i] = child(left_raw[i])?;
        right[i] = child(right_raw[i])?;
        feature[i] = u32::try_from(feature_raw[i])
            .ok()
            .filter(|&f| (f as usize) < n)
            .ok_or_else(|| {
                a.invalid(
                    field("feature_idx"),
                    format!(
                        "node {i} splits on feature {}, but the model has {n}",
                        feature_raw[i]
                    ),
                )
            })?;
    }
    let mut categorical = Vec::new();
    if is_cat.iter().any(|&c| c != 0) {
        let bits_v = st
            .dict_get("raw_left_cat_bitsets")
            .ok_or_else(|| a.bad(&format!("{at}.raw_left_cat_bitsets"), "is missing"))?;
        let bits = NdArray::from_value(&bits_v)
            .and_then(|b| {
                let shape = b.shape.clone();
                b.to_i64().map(|v| (shape, v))
            })
            .map_err(|e| a.bad(&format!("{at}.raw_left_cat_bitsets"), &e))?;
        let (shape, words) = bits;
        if shape.len() != 2 || shape[1] != 8 {
            return Err(a.invalid(
                format!("{at}.raw_left_cat_bitsets"),
                format!("has shape {shape:?}, not (n, 8)"),
            ));
        }
        for i in 0..count {
            if is_cat[i] == 0 || is_leaf[i] != 0 {
                continue;
            }
            let b = usize::try_from(bitset_idx[i])
                .ok()
                .filter(|&b| b < shape[0])
                .ok_or_else(|| {
                    a.invalid(
                        field("bitset_idx"),
                        format!("node {i} names bitset {}, of {}", bitset_idx[i], shape[0]),
                    )
                })?;
            let mut w = [0u32; 8];
            for (j, w) in w.iter_mut().enumerate() {
                *w = words[b * 8 + j] as u32;
            }
            categorical.push(CategoricalSplit {
                node: i as u32,
                left: w,
            });
        }
    }
    Ok(HgbTree {
        tree: Tree {
            left,
            right,
            feature,
            threshold: threshold
                .iter()
                .zip(&is_leaf)
                .map(|(&t, &l)| if l != 0 { 0.0 } else { t })
                .collect(),
            missing_left: missing.iter().map(|&m| m != 0).collect(),
            value,
            n_values: 1,
        },
        categorical,
    })
}

/// Known categories of each feature as bitsets (empty for numeric ones),
/// from `_bin_mapper`, as `make_known_categories_bitsets` builds them.
fn known_categories(a: &Attrs, n: usize) -> Result<Vec<Vec<u32>>, ImportError> {
    let Some(bm) = a.find("_bin_mapper") else {
        return Ok(Vec::new());
    };
    let Some(st) = bm.object_state() else {
        return Ok(Vec::new());
    };
    let is_cat = match st.dict_get("is_categorical_") {
        None | Some(Value::None) => return Ok(Vec::new()),
        Some(v) => NdArray::from_value(&v)
            .and_then(|v| v.to_f64())
            .map_err(|e| a.bad("_bin_mapper.is_categorical_", &e))?,
    };
    if !is_cat.iter().any(|&c| c != 0.0) {
        return Ok(Vec::new());
    }
    if is_cat.len() != n {
        return Err(a.invalid(
            "_bin_mapper.is_categorical_",
            format!("has {} values for {n} features", is_cat.len()),
        ));
    }
    let thresholds = st
        .dict_get("bin_thresholds_")
        .and_then(|t| t.sequence_items())
        .ok_or_else(|| a.bad("_bin_mapper.bin_thresholds_", "is not a list"))?;
    if thresholds.len() != n {
        return Err(a.invalid(
            "_bin_mapper.bin_thresholds_",
            format!("has {} entries for {n} features", thresholds.len()),
        ));
    }
    let mut out = Vec::with_capacity(n);
    for (f, (c, t)) in is_cat.iter().zip(&thresholds).enumerate() {
        if *c == 0.0 {
            out.push(Vec::new());
            continue;
        }
        let cats = NdArray::from_value(t)
            .and_then(|t| t.to_f64())
            .map_err(|e| a.bad(&format!("_bin_mapper.bin_thresholds_[{f}]"), &e))?;
        let mut bits = vec![0u32; 8];
        for v in cats {
            if !(0.0..256.0).contains(&v) {
                return Err(a.invalid(
                    format!("_bin_mapper.bin_thresholds_[{f}]"),
                    format!("holds category {v}, outside 0..255"),
                ));
            }
            let v = v as usize;
            bits[v / 32] |= 1 << (v % 32);
        }
        out.push(bits);
    }
    Ok(out)
}

/// The preprocessor of a model with categorical features (scikit-learn
/// 1.4 and later): `ColumnTransformer([("encoder", OrdinalEncoder(
/// handle_unknown="use_encoded_value", unknown_value=nan), cat_mask),
/// ("numerical", FunctionTransformer(partial(check_array, ...)),
/// ~cat_mask)])`, exactly as `_preprocess_X` builds it: its output is the
/// categorical columns, each as its category's index, then the others.
fn preprocessor(a: &Attrs, p: &Value, n_in: usize) -> Result<HgbEncoder, ImportError> {
    let bad = |why: &str| {
        ImportError::Model(format!(
            "{}._preprocessor {why}; it is not the categorical encoder scikit-learn builds",
            a.name()
        ))
    };
    if p.object_class()
        != Some(Class::Inert(
            "sklearn.compose._column_transformer.ColumnTransformer",
        ))
    {
        return Err(bad("is not a ColumnTransformer"));
    }
    let st = p.object_state().ok_or_else(|| bad("has no state"))?;
    let transformers = st
        .dict_get("transformers_")
        .and_then(|t| t.sequence_items())
        .ok_or_else(|| bad("has no fitted `transformers_`"))?;
    let (mut columns, mut categories) = (Vec::new(), Vec::new());
    for t in &transformers {
        let parts = t
            .sequence_items()
            .filter(|p| p.len() == 3)
            .ok_or_else(|| bad("holds a transformer that is not (name, transformer, columns)"))?;
        let name = parts[0].as_text().unwrap_or_default();
        if parts[1].text_eq("drop") {
            continue;
        }
        // The columns: a boolean mask over the input.
        let mask: Vec<f64> = match NdArray::from_value(&parts[2]).and_then(|m| m.to_f64()) {
            Ok(m) => m,
            Err(_) => parts[2]
                .sequence_items()
                .map(|v| v.iter().map(|b| b.as_f64().unwrap_or(0.0)).collect())
                .ok_or_else(|| {
                    bad(&format!(
                        "transformer {name:?} has columns that are not a mask"
                    ))
                })?,
        };
        if mask.len() != n_in {
            return Err(bad(&format!(
                "transformer {name:?} has a mask of {} columns for {n_in}",
                mask.len()
            )));
        }
        let cols: Vec<u32> = (0..n_in as u32)
            .filter(|&i| mask[i as usize] != 0.0)
            .collect();
        match parts[1].object_class() {
            Some(Class::Inert("sklearn.preprocessing._encoders.OrdinalEncoder")) => {
                let enc = parts[1]
                    .object_state()
                    .ok_or_else(|| bad("has an OrdinalEncoder without state"))?;
                let unknown = enc.dict_get("handle_unknown").and_then(|h| h.as_text());
                let unknown_value = enc.dict_get("unknown_value").and_then(|u| u.as_f64());
                if unknown.as_deref() != Some("use_encoded_value")
                    || !unknown_value.is_some_and(f64::is_nan)
                {
                    return Err(bad(
                        "has an OrdinalEncoder that does not encode unknown categories as NaN",
                    ));
                }
                let cats = enc
                    .dict_get("categories_")
                    .and_then(|c| c.sequence_items())
                    .ok_or_else(|| bad("has an OrdinalEncoder without `categories_`"))?;
                if cats.len() != cols.len() {
                    return Err(bad(
                        "has an OrdinalEncoder whose categories do not match its columns",
                    ));
                }
                for (c, col) in cats.iter().zip(&cols) {
                    let mut v = NdArray::from_value(c)
                        .and_then(|c| c.to_f64())
                        .map_err(|e| bad(&format!("has categories that are not numbers ({e})")))?;
                    // A NaN category (fitted with missing values) encodes
                    // to NaN, as an unknown one does.
                    v.retain(|x| !x.is_nan());
                    columns.push(*col);
                    categories.push(Some(v));
                }
            }
            Some(Class::Inert(
                "sklearn.preprocessing._function_transformer.FunctionTransformer",
            )) => {
                // partial(check_array, dtype=[float64], ensure_all_finite=False):
                // the numeric columns as they are.
                let ft = parts[1]
                    .object_state()
                    .ok_or_else(|| bad("has a FunctionTransformer without state"))?;
                let is_check_array = ft.dict_get("func").is_some_and(|f| match &f {
                    Value::Object(o) => o.try_borrow().is_ok_and(|o| {
                        o.class == Class::Inert("functools.partial")
                            && matches!(
                                o.args.first(),
                                Some(Value::Global(Class::Inert(
                                    "sklearn.utils.validation.check_array"
                                )))
                            )
                    }),
                    _ => false,
                });
                if !is_check_array {
                    return Err(bad(
                        "has a FunctionTransformer that is not scikit-learn's own check_array",
                    ));
                }
                for c in cols {
                    columns.push(c);
                    categories.push(None);
                }
            }
            _ => {
                return Err(bad(&format!(
                    "holds transformer {name:?} of an unexpected class"
                )))
            }
        }
    }
    Ok(HgbEncoder {
        columns,
        categories,
    })
}

/// `HistGradientBoostingRegressor` and `HistGradientBoostingClassifier`.
pub(super) fn hist_gradient_boosting(
    a: &Attrs,
    est: Estimator,
) -> Result<(Native, usize), ImportError> {
    let version = sklearn_version(a);
    let n_in = n_features(a)?;
    let encoder = match a.find("_preprocessor") {
        None | Some(Value::None) => None,
        Some(p) => Some(preprocessor(a, &p, n_in)?),
    };
    // The width the trees see.
    let n = encoder.as_ref().map_or(n_in, |e| e.columns.len());
    let classifier = est == Estimator::HistGradientBoostingClassifier;
    let iterations = items(a, &a.get("_predictors")?, "_predictors")?;
    let mut trees = Vec::new();
    let mut k = 0;
    for (i, it) in iterations.iter().enumerate() {
        let at = format!("_predictors[{i}]");
        let preds = items(a, it, &at)?;
        if i == 0 {
            k = preds.len();
        } else if preds.len() != k {
            return Err(a.invalid(at, format!("has {} trees, not {k}", preds.len())));
        }
        for (j, p) in preds.iter().enumerate() {
            trees.push(read_predictor(a, &format!("{at}[{j}]"), p, n)?);
        }
    }
    if trees.is_empty() {
        return Err(a.invalid("_predictors", "is empty"));
    }
    let baseline = {
        let v = a.get("_baseline_prediction")?;
        match v.as_f64() {
            Some(f) if !matches!(v, Value::Array(_) | Value::Object(_)) => vec![f],
            _ => a.vec("_baseline_prediction")?,
        }
    };
    let loss = a.find("loss").and_then(|l| l.as_text()).unwrap_or_default();
    let classes = if classifier {
        a.array("classes_")?
            .to_strings()
            .map_err(|e| a.bad("classes_", &e))?
    } else {
        Vec::new()
    };
    let link = if classifier {
        if k == 1 {
            HgbLink::Binomial
        } else {
            HgbLink::Multinomial
        }
    } else {
        match loss.as_str() {
            "poisson" | "gamma" => HgbLink::Log,
            "squared_error" | "least_squares" | "absolute_error" | "least_absolute_deviation"
            | "quantile" => HgbLink::Identity,
            other => {
                return Err(ImportError::Model(format!(
                    "HistGradientBoostingRegressor with loss {other:?} is not supported (supported: squared_error, absolute_error, quantile, poisson, gamma)"
                )))
            }
        }
    };
    if version.is_some_and(|v| v < (0, 22)) {
        return Err(ImportError::Model(
            "HistGradientBoosting pickled by scikit-learn 0.21 (experimental then) cannot be scored: re-save it with scikit-learn 0.22 or later".into(),
        ));
    }
    Ok((
        Native::HistGradientBoosting(HistGradientBoosting {
            trees,
            k,
            baseline,
            link,
            classes,
            known_categories: known_categories(a, n)?,
            encoder,
        }),
        n_in,
    ))
}
