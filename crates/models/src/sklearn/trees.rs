//! Tree models from their pickles: IsolationForest, decision trees and
//! random or extra-trees forests, in every scikit-learn release from 0.20.
//!
//! A `sklearn.tree._tree.Tree` pickles as `Tree(n_features, n_classes,
//! n_outputs)` with the state `{max_depth, node_count, nodes, values}`:
//! `nodes` is a record array (`left_child`, `right_child`, `feature`,
//! `threshold`, `impurity`, `n_node_samples`, `weighted_n_node_samples`,
//! and from 1.3 `missing_go_to_left`), read by field name whatever its
//! layout, width or byte order; `values` is `(node_count, n_outputs,
//! max_n_classes)`.

use crate::model::{
    Estimator as Native, ForestClassifier, ForestRegressor, GbLoss, GradientBoosting, IfRule,
    IsolationForest, ProbaRule, Tree,
};
use crate::pickle::{Class, Estimator, NdArray, Value};

use super::{Attrs, ImportError};

/// `np.euler_gamma`.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// A scikit-learn release as `(major, minor)`.
pub(super) type Version = (u32, u32);

/// `_sklearn_version` ("0.20.4", "1.4.dev0", "1.3.post1") as
/// `(major, minor)`, or `None` when absent or unreadable.
pub(super) fn sklearn_version(a: &Attrs) -> Option<Version> {
    parse_version(&a.find("_sklearn_version")?.as_text()?)
}

/// A tree read from a pickle, with what the estimators around it need.
struct RawTree {
    tree: Tree,
    /// `n_node_samples` of each node.
    n_node_samples: Vec<i64>,
    /// Whether the node records have `missing_go_to_left` (1.3 and later).
    has_missing: bool,
}

/// The `tree_` of a fitted tree estimator whose `__dict__` is `state` (a
/// `DecisionTree*` or `ExtraTree*`), `at` naming it in messages. `width` is the width
/// the tree's `feature`s index; `n_values` the values per node expected
/// (1 for regression, the number of classes for classification).
fn read_tree(
    a: &Attrs,
    at: &str,
    state: &Value,
    width: usize,
    n_values: usize,
) -> Result<RawTree, ImportError> {
    let tree = state
        .dict_get("tree_")
        .ok_or_else(|| a.bad(at, "has no `tree_` (is it fitted?)"))?;
    let Value::Object(o) = &tree else {
        return Err(a.bad(&format!("{at}.tree_"), "is not a scikit-learn Tree"));
    };
    let o = o
        .try_borrow()
        .map_err(|_| a.bad(&format!("{at}.tree_"), "refers to itself"))?;
    if o.class != Class::Sklearn(Estimator::Tree) {
        return Err(a.bad(
            &format!("{at}.tree_"),
            &format!("is a {}, not a scikit-learn Tree", o.class.python_name()),
        ));
    }
    let n_outputs = o.args.get(2).and_then(Value::as_i64);
    if n_outputs != Some(1) {
        return Err(ImportError::Model(format!(
            "{}.{at} has {} outputs; multi-output trees are not supported (fit one model per target)",
            a.name(),
            n_outputs.map_or("an unknown number of".to_string(), |n| n.to_string())
        )));
    }
    let st = o
        .state
        .as_ref()
        .ok_or_else(|| a.bad(&format!("{at}.tree_"), "has no state"))?;
    let field = |name: &str| format!("{at}.tree_.{name}");
    let nodes_v = st
        .dict_get("nodes")
        .ok_or_else(|| a.bad(&field("nodes"), "is missing"))?;
    let nodes = NdArray::from_value(&nodes_v).map_err(|e| {
        a.bad(
            &field("nodes"),
            &format!("is not a usable record array: {e}"),
        )
    })?;
    if nodes.shape.len() != 1 {
        return Err(a.invalid(
            field("nodes"),
            format!("has shape {:?}, not one record per node", nodes.shape),
        ));
    }
    let count = nodes.len();
    if let Some(nc) = st.dict_get("node_count").and_then(|v| v.as_i64()) {
        if usize::try_from(nc).ok() != Some(count) {
            return Err(a.invalid(
                field("node_count"),
                format!("is {nc}, but `nodes` holds {count} records"),
            ));
        }
    }
    let ints = |name: &str| -> Result<Vec<i64>, ImportError> {
        nodes.field_i64(name).map_err(|e| a.bad(&field(name), &e))
    };
    let left = ints("left_child")?;
    let right = ints("right_child")?;
    let feature = ints("feature")?;
    let n_node_samples = ints("n_node_samples")?;
    let threshold = nodes
        .field_f64("threshold")
        .map_err(|e| a.bad(&field("threshold"), &e))?;
    let has_missing = nodes.has_field("missing_go_to_left");
    let missing_left = if has_missing {
        ints("missing_go_to_left")?
            .into_iter()
            .map(|m| m != 0)
            .collect()
    } else {
        vec![false; count]
    };
    let child = |name: &str, v: Vec<i64>| -> Result<Vec<i32>, ImportError> {
        v.into_iter()
            .enumerate()
            .map(|(i, c)| {
                i32::try_from(c).ok().filter(|&c| c >= -1).ok_or_else(|| {
                    a.invalid(
                        field(name),
                        format!("node {i} points to {c}, outside the tree"),
                    )
                })
            })
            .collect()
    };
    let left = child("left_child", left)?;
    let right = child("right_child", right)?;
    // Leaves store feature -2 (TREE_UNDEFINED); only splits are used.
    let feature = feature
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            if left[i] < 0 {
                return Ok(0);
            }
            u32::try_from(f)
                .ok()
                .filter(|&f| (f as usize) < width)
                .ok_or_else(|| {
                    a.invalid(
                        field("feature"),
                        format!(
                            "node {i} splits on feature {f}, but the tree sees {width} features"
                        ),
                    )
                })
        })
        .collect::<Result<Vec<u32>, ImportError>>()?;
    let values_v = st
        .dict_get("values")
        .ok_or_else(|| a.bad(&field("values"), "is missing"))?;
    let values = NdArray::from_value(&values_v).map_err(|e| {
        a.bad(
            &field("values"),
            &format!("is not a usable numpy array: {e}"),
        )
    })?;
    if values.shape.len() != 3
        || values.shape[0] != count
        || values.shape[1] != 1
        || values.shape[2] < n_values
    {
        return Err(a.invalid(
            field("values"),
            format!(
                "has shape {:?}, but {count} nodes of one output and {n_values} value(s) need ({count}, 1, {n_values})",
                values.shape
            ),
        ));
    }
    let stride = values.shape[2];
    let all = a.to_f64(&field("values"), &values)?;
    let value = if stride == n_values {
        all
    } else {
        all.chunks_exact(stride)
            .flat_map(|c| c[..n_values].iter().copied())
            .collect()
    };
    Ok(RawTree {
        tree: Tree {
            left,
            right,
            feature,
            threshold,
            missing_left,
            value,
            n_values,
        },
        n_node_samples,
        has_missing,
    })
}

/// The items of a list (or tuple) attribute.
fn items(a: &Attrs, attr: &str) -> Result<Vec<Value>, ImportError> {
    a.get(attr)?
        .sequence_items()
        .ok_or_else(|| a.bad(attr, "is not a list"))
}

/// An integer attribute.
fn int(a: &Attrs, attr: &str) -> Result<i64, ImportError> {
    let v = a.get(attr)?;
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        .ok_or_else(|| a.bad(attr, "is not an integer"))
}

/// The input width: `n_features_in_` (0.24 and later) or `n_features_`.
fn n_features(a: &Attrs) -> Result<usize, ImportError> {
    let attr = if a.find("n_features_in_").is_some() {
        "n_features_in_"
    } else {
        "n_features_"
    };
    let n = int(a, attr)?;
    usize::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
        a.invalid(
            attr,
            format!("is {n}; a fitted model has at least one feature"),
        )
    })
}

/// `_average_path_length` of scikit-learn 0.21 and later, for one count,
/// in its order of operations: the average path length of an unsuccessful
/// search in a binary search tree of `n` nodes.
pub fn average_path_length(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n == 2.0 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
    }
}

/// 0.20's `_average_path_length`: 1 (not 0) for one sample or none, and
/// no special case for two.
fn average_path_length_020(n: f64) -> f64 {
    if n <= 1.0 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
    }
}

/// `sklearn.ensemble.IsolationForest`.
pub(super) fn isolation_forest(a: &Attrs) -> Result<(Native, usize), ImportError> {
    let version = sklearn_version(a);
    let n = n_features(a)?;
    if a.find("offset_").is_none() {
        return Err(ImportError::Model(format!(
            "this IsolationForest was pickled by scikit-learn {} and has no `offset_` (0.19 and older): re-fit or re-save it with scikit-learn 0.20 or later",
            version.map_or("(unknown version)".to_string(), |(a, b)| format!("{a}.{b}"))
        )));
    }
    let offset = a
        .get("offset_")?
        .as_f64()
        .ok_or_else(|| a.bad("offset_", "is not a number"))?;
    let trees_v = items(a, "estimators_")?;
    let features_v = items(a, "estimators_features_")?;
    if features_v.len() != trees_v.len() {
        return Err(a.invalid(
            "estimators_features_",
            format!(
                "has {} entries for {} trees",
                features_v.len(),
                trees_v.len()
            ),
        ));
    }
    let max_features = int(a, "_max_features")?;
    let subsample = usize::try_from(max_features).ok() != Some(n);
    if subsample && !(1..=n as i64).contains(&max_features) {
        return Err(a.invalid(
            "_max_features",
            format!("is {max_features}, but the forest has {n} features"),
        ));
    }
    let stored = match (
        a.find("_decision_path_lengths"),
        a.find("_average_path_length_per_tree"),
    ) {
        (Some(d), Some(p)) => {
            let d = d
                .sequence_items()
                .ok_or_else(|| a.bad("_decision_path_lengths", "is not a list"))?;
            let p = p
                .sequence_items()
                .ok_or_else(|| a.bad("_average_path_length_per_tree", "is not a list"))?;
            if d.len() != trees_v.len() || p.len() != trees_v.len() {
                return Err(a.invalid(
                    "_decision_path_lengths",
                    format!(
                        "has {} entries and `_average_path_length_per_tree` {}, for {} trees",
                        d.len(),
                        p.len(),
                        trees_v.len()
                    ),
                ));
            }
            Some((d, p))
        }
        _ => None,
    };
    // 0.20: the mean of per-tree depths with 0.20's c(n).
    let v020 = version.is_some_and(|v| v < (0, 21));
    let mut trees = Vec::with_capacity(trees_v.len());
    let mut all_missing = true;
    for (t, (tv, fv)) in trees_v.iter().zip(&features_v).enumerate() {
        let at = format!("estimators_[{t}]");
        let width = if subsample { max_features as usize } else { n };
        let RawTree {
            mut tree,
            n_node_samples,
            has_missing,
        } = read_tree(a, &at, &member_state(a, &at, tv)?, width, 1)?;
        if subsample {
            let attr = format!("estimators_features_[{t}]");
            let f = NdArray::from_value(fv)
                .and_then(|f| f.to_f64())
                .map_err(|e| a.bad(&attr, &e))?;
            if f.len() != width {
                return Err(a.invalid(
                    attr,
                    format!("has {} features, but `_max_features` is {width}", f.len()),
                ));
            }
            let map: Vec<u32> = f
                .iter()
                .map(|&x| {
                    (x >= 0.0 && x < n as f64 && x.fract() == 0.0)
                        .then_some(x as u32)
                        .ok_or_else(|| {
                            a.invalid(
                                format!("estimators_features_[{t}]"),
                                format!("holds {x}, not a feature of the {n}"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?;
            for i in 0..tree.len() {
                if !tree.is_leaf(i) {
                    tree.feature[i] = map[tree.feature[i] as usize];
                }
            }
        }
        all_missing &= has_missing;
        let count = tree.len();
        if let Some((dpl, apl)) = &stored {
            let d = NdArray::from_value(&dpl[t])
                .and_then(|d| d.to_f64())
                .map_err(|e| a.bad(&format!("_decision_path_lengths[{t}]"), &e))?;
            let p = NdArray::from_value(&apl[t])
                .and_then(|p| p.to_f64())
                .map_err(|e| a.bad(&format!("_average_path_length_per_tree[{t}]"), &e))?;
            if d.len() != count || p.len() != count {
                return Err(a.invalid(
                    format!("_decision_path_lengths[{t}]"),
                    format!(
                        "has {} values and `_average_path_length_per_tree[{t}]` {}, but the tree has {count} nodes",
                        d.len(),
                        p.len()
                    ),
                ));
            }
            for i in 0..count {
                tree.value[i] = (d[i] + p[i]) - 1.0;
            }
        } else {
            if n_node_samples.len() != count {
                return Err(a.invalid(
                    format!("{at}.tree_.n_node_samples"),
                    "does not cover every node",
                ));
            }
            let depth = tree.node_depths();
            for i in 0..count {
                let on_path = (depth[i] + 1) as f64;
                let m = n_node_samples[i] as f64;
                tree.value[i] = if v020 {
                    (on_path - 1.0) + average_path_length_020(m)
                } else {
                    (on_path + average_path_length(m)) - 1.0
                };
            }
        }
        trees.push(tree);
    }
    let n_trees = trees.len() as f64;
    let rule = if v020 {
        IfRule::Mean {
            c: average_path_length_020(int(a, "max_samples_")? as f64),
        }
    } else {
        let max_samples = if a.find("_max_samples").is_some() {
            int(a, "_max_samples")?
        } else {
            int(a, "max_samples_")?
        };
        IfRule::Sum {
            denominator: n_trees * average_path_length(max_samples as f64),
            // 1.2 added the guard for a zero denominator.
            guard: version.is_none_or(|v| v >= (1, 2)),
        }
    };
    // 0.20 and 0.21 with behaviour='old' (their default) predict -1
    // below `_threshold_`, not below 0.
    let old = a.find("behaviour").is_some_and(|b| b.text_eq("old"))
        && version.is_none_or(|v| v < (0, 22));
    let threshold = if old {
        a.get("_threshold_")?
            .as_f64()
            .ok_or_else(|| a.bad("_threshold_", "is not a number"))?
    } else {
        0.0
    };
    // Trees with `missing_go_to_left` (1.3 and later) route NaN.
    let allow_nan = all_missing;
    Ok((
        Native::IsolationForest(
            IsolationForest {
                trees,
                compiled: None,
                rule,
                offset,
                threshold,
                allow_nan,
            }
            .compile_one_feature(n),
        ),
        n,
    ))
}

/// The `DecisionTree*`/`ExtraTree*` and `RandomForest*`/`ExtraTrees*`
/// regressors and classifiers.
pub(super) fn forest(a: &Attrs, est: Estimator) -> Result<(Native, usize), ImportError> {
    use Estimator::*;
    let class = est.class_name().to_string();
    let classifier = matches!(
        est,
        DecisionTreeClassifier
            | ExtraTreeClassifier
            | RandomForestClassifier
            | ExtraTreesClassifier
    );
    let single = matches!(
        est,
        DecisionTreeRegressor | ExtraTreeRegressor | DecisionTreeClassifier | ExtraTreeClassifier
    );
    let n = n_features(a)?;
    if let Some(o) = a.find("n_outputs_").and_then(|v| v.as_i64()) {
        if o != 1 {
            return Err(ImportError::Model(format!(
                "this {class} has {o} outputs; multi-output models are not supported (fit one model per target)"
            )));
        }
    }
    let classes = if classifier {
        let c = a.array("classes_")?;
        let c = c.to_strings().map_err(|e| a.bad("classes_", &e))?;
        if c.len() < 2 {
            return Err(a.invalid(
                "classes_",
                format!(
                    "has {} classes; a fitted classifier has at least 2",
                    c.len()
                ),
            ));
        }
        c
    } else {
        Vec::new()
    };
    let n_values = if classifier { classes.len() } else { 1 };
    let members: Vec<(String, Value)> = if single {
        vec![("tree".to_string(), Value::None)]
    } else {
        items(a, "estimators_")?
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("estimators_[{i}]"), v))
            .collect()
    };
    let mut trees = Vec::with_capacity(members.len());
    let mut all_missing = true;
    let mut tree_version = None;
    for (at, v) in &members {
        let raw = if single {
            read_tree(a, "tree", a.state, n, n_values)?
        } else {
            let sub = member_state(a, at, v)?;
            if tree_version.is_none() {
                tree_version = sub
                    .dict_get("_sklearn_version")
                    .and_then(|s| s.as_text())
                    .and_then(|s| parse_version(&s));
            }
            read_tree(a, at, &sub, n, n_values)?
        };
        all_missing &= raw.has_missing;
        trees.push(raw.tree);
    }
    let version = tree_version.or_else(|| sklearn_version(a));
    // Leaves hold class fractions from 1.4 (and raw counts before).
    let proba = match version {
        Some(v) if v >= (1, 4) => ProbaRule::Stored,
        Some(_) => ProbaRule::Normalize,
        None if all_missing => ProbaRule::Stored,
        None => ProbaRule::Normalize,
    };
    let native = if classifier {
        Native::ForestClassifier(ForestClassifier {
            class,
            trees,
            average: !single,
            proba,
            classes,
            allow_nan: all_missing,
        })
    } else {
        Native::ForestRegressor(
            ForestRegressor {
                class,
                trees,
                compiled: None,
                average: !single,
                allow_nan: all_missing,
            }
            .compile_one_feature(n),
        )
    };
    Ok((native, n))
}

/// `GradientBoostingRegressor` and `GradientBoostingClassifier`.
pub(super) fn gradient_boosting(a: &Attrs, est: Estimator) -> Result<(Native, usize), ImportError> {
    let version = sklearn_version(a);
    let modern = version.is_none_or(|v| v >= (1, 4));
    let n = n_features(a)?;
    let loss_name = a
        .get("loss")?
        .as_text()
        .ok_or_else(|| a.bad("loss", "is not a loss name"))?;
    let classifier = est == Estimator::GradientBoostingClassifier;
    let classes = if classifier {
        let c = a.array("classes_")?;
        c.to_strings().map_err(|e| a.bad("classes_", &e))?
    } else {
        Vec::new()
    };
    let loss = match (classifier, loss_name.as_str()) {
        (false, "squared_error" | "ls" | "absolute_error" | "lad" | "huber" | "quantile") => {
            GbLoss::Regression
        }
        (true, "log_loss" | "deviance") if classes.len() == 2 => GbLoss::Binomial { sign_rule: modern },
        (true, "log_loss" | "deviance") => GbLoss::Multinomial { raw_argmax: modern },
        (true, "exponential") => GbLoss::Exponential,
        (_, other) => {
            return Err(ImportError::Model(format!(
                "{} with loss {other:?} is not supported (regressors: squared_error, absolute_error, huber, quantile; classifiers: log_loss, exponential)",
                est.class_name()
            )))
        }
    };
    let arr = a.array("estimators_")?;
    let (stages, k) = match arr.shape[..] {
        [s, k] if s > 0 && k > 0 => (s, k),
        _ => {
            return Err(a.invalid(
                "estimators_",
                format!("has shape {:?}, not (n_stages, trees per stage)", arr.shape),
            ))
        }
    };
    let objects = arr
        .objects()
        .ok_or_else(|| a.bad("estimators_", "is not an array of trees"))?;
    if objects.len() != stages * k {
        return Err(a.invalid(
            "estimators_",
            format!("holds {} trees for shape {:?}", objects.len(), arr.shape),
        ));
    }
    let mut trees = Vec::with_capacity(objects.len());
    for (i, v) in objects.iter().enumerate() {
        let at = format!("estimators_[{}, {}]", i / k, i % k);
        let st = member_state(a, &at, v)?;
        trees.push(read_tree(a, &at, &st, n, 1)?.tree);
    }
    let learning_rate = a
        .get("learning_rate")?
        .as_f64()
        .ok_or_else(|| a.bad("learning_rate", "is not a number"))?;
    let init = gb_init(a, &loss, k, modern)?;
    Ok((
        Native::GradientBoosting(GradientBoosting {
            trees,
            k,
            learning_rate,
            init,
            loss,
            classes,
        }),
        n,
    ))
}

/// The initial raw prediction of a gradient boosting model: its init
/// estimator's prediction through the loss's link, as each release
/// computes it.
fn gb_init(a: &Attrs, loss: &GbLoss, k: usize, modern: bool) -> Result<Vec<f64>, ImportError> {
    let init = a.get("init_")?;
    if init.text_eq("zero") {
        return Ok(vec![0.0; k]);
    }
    let state = || {
        init.object_state()
            .ok_or_else(|| a.bad("init_", "has no fitted state"))
    };
    let numbers = |attr: &str| -> Result<Vec<f64>, ImportError> {
        let st = state()?;
        let v = st
            .dict_get(attr)
            .ok_or_else(|| a.bad("init_", &format!("has no `{attr}`")))?;
        match v.as_f64() {
            Some(f) if !matches!(v, Value::Object(_) | Value::Array(_)) => Ok(vec![f]),
            _ => NdArray::from_value(&v)
                .and_then(|x| x.to_f64())
                .map_err(|e| a.bad(&format!("init_.{attr}"), &e)),
        }
    };
    let class = init.object_class();
    let name = class.map(|c| c.python_name()).unwrap_or("");
    let one = |v: Vec<f64>, what: &str| -> Result<f64, ImportError> {
        match v[..] {
            [x] => Ok(x),
            _ => Err(a.invalid(
                format!("init_.{what}"),
                format!("has {} values, not 1", v.len()),
            )),
        }
    };
    // scikit-learn 0.20's own init estimators predict the raw value.
    if let Some(short) = name.rsplit('.').next() {
        match short {
            "ZeroEstimator" => return Ok(vec![0.0; k]),
            "MeanEstimator" => return Ok(vec![one(numbers("mean")?, "mean")?]),
            "QuantileEstimator" => return Ok(vec![one(numbers("quantile")?, "quantile")?]),
            "LogOddsEstimator" | "ScaledLogOddsEstimator" => {
                return Ok(vec![one(numbers("prior")?, "prior")?])
            }
            "PriorProbabilityEstimator" => {
                let p = numbers("priors")?;
                if p.len() != k {
                    return Err(a.invalid(
                        "init_.priors",
                        format!("has {} values for {k} classes", p.len()),
                    ));
                }
                return Ok(p);
            }
            _ => {}
        }
    }
    match class {
        Some(Class::Sklearn(Estimator::DummyRegressor)) if *loss == GbLoss::Regression => {
            Ok(vec![one(numbers("constant_")?, "constant_")?])
        }
        Some(Class::Sklearn(Estimator::DummyClassifier)) if *loss != GbLoss::Regression => {
            let st = state()?;
            if let Some(s) = st.dict_get("strategy").and_then(|s| s.as_text()) {
                if s != "prior" {
                    return Err(ImportError::Model(format!(
                        "a GradientBoostingClassifier whose init is DummyClassifier(strategy={s:?}) is not supported; refit with the default init"
                    )));
                }
            }
            let prior = numbers("class_prior_")?;
            // 1.4 clips with float64's epsilon, earlier releases with
            // float32's.
            let eps = if modern { f64::EPSILON } else { f64::from(f32::EPSILON) };
            let clip = |p: f64| p.max(eps).min(1.0 - eps);
            match loss {
                GbLoss::Binomial { .. } | GbLoss::Exponential => {
                    if prior.len() != 2 {
                        return Err(a.invalid("init_.class_prior_", format!("has {} values for 2 classes", prior.len())));
                    }
                    let p = clip(prior[1]);
                    let logit = (p / (1.0 - p)).ln();
                    Ok(vec![if *loss == GbLoss::Exponential { 0.5 * logit } else { logit }])
                }
                _ => {
                    if prior.len() != k {
                        return Err(a.invalid("init_.class_prior_", format!("has {} values for {k} classes", prior.len())));
                    }
                    let p: Vec<f64> = prior.iter().map(|&p| clip(p)).collect();
                    if !modern {
                        return Ok(p.iter().map(|p| p.ln()).collect());
                    }
                    // log(p / gmean(p)), gmean = exp(mean(log p)).
                    let logs: Vec<f64> = p.iter().map(|p| p.ln()).collect();
                    let gm = (crate::model::numpy_mean(&logs)).exp();
                    Ok(p.iter().map(|p| (p / gm).ln()).collect())
                }
            }
        }
        _ => Err(ImportError::Model(format!(
            "this {} was fitted with init={}, which fleetscore cannot evaluate; refit with the default init or init='zero'",
            a.name(),
            if name.is_empty() { init.kind().to_string() } else { name.to_string() }
        ))),
    }
}

/// The `__dict__` of a forest's member tree.
fn member_state(a: &Attrs, at: &str, v: &Value) -> Result<Value, ImportError> {
    match v.object_class() {
        Some(Class::Sklearn(
            Estimator::DecisionTreeRegressor
            | Estimator::DecisionTreeClassifier
            | Estimator::ExtraTreeRegressor
            | Estimator::ExtraTreeClassifier,
        )) => v
            .object_state()
            .ok_or_else(|| a.bad(at, "has no fitted state (was it saved before fit?)")),
        Some(c) => Err(a.bad(
            at,
            &format!("is a {}, not a decision tree", c.python_name()),
        )),
        None => Err(a.bad(at, &format!("is a {}, not a decision tree", v.kind()))),
    }
}

fn parse_version(v: &str) -> Option<Version> {
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_path_length_follows_each_release() {
        assert_eq!(average_path_length(1.0), 0.0);
        assert_eq!(average_path_length(2.0), 1.0);
        assert_eq!(average_path_length_020(1.0), 1.0);
        // 0.20 has no special case for 2: 2 * (ln 1 + gamma) - 2 * 1 / 2.
        assert_eq!(average_path_length_020(2.0), 2.0 * EULER_GAMMA - 1.0);
        // scikit-learn 1.9.1: _average_path_length([256]).
        assert_eq!(average_path_length(256.0), 10.244_770_920_119_917);
        assert_eq!(parse_version("1.4.dev0"), Some((1, 4)));
        assert_eq!(parse_version("0.22.2.post1"), Some((0, 22)));
    }
}
