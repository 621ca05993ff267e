//! `LocalOutlierFactor(novelty=True)` from its pickle: the fitted points,
//! their k-distances and densities, and the search tree as scikit-learn
//! built it (`_tree`: a `KDTree` or `BallTree` whose state is `(data,
//! idx_array, node_data, node_bounds, leaf_size, n_levels, n_nodes, …,
//! dist_metric)`).

use crate::model::{Estimator as Native, LocalOutlierFactor, Metric, NeighborIndex};
use crate::pickle::{Class, Estimator, NdArray, Value};

use super::{Attrs, ImportError};

fn metric(a: &Attrs) -> Result<Metric, ImportError> {
    let name = a
        .get("effective_metric_")?
        .as_text()
        .ok_or_else(|| a.bad("effective_metric_", "is not a metric name"))?;
    let p = a
        .find("effective_metric_params_")
        .and_then(|d| d.dict_get("p"))
        .and_then(|p| p.as_f64());
    Ok(match name.as_str() {
        "euclidean" | "l2" => Metric::Euclidean,
        "manhattan" | "cityblock" | "l1" => Metric::Manhattan,
        "chebyshev" | "infinity" => Metric::Chebyshev,
        "minkowski" => match p {
            Some(2.0) => Metric::Euclidean,
            Some(1.0) => Metric::Manhattan,
            Some(f64::INFINITY) => Metric::Chebyshev,
            Some(p) => Metric::Minkowski { p },
            None => Metric::Euclidean,
        },
        other => {
            return Err(ImportError::Model(format!(
                "LocalOutlierFactor with metric {other:?} is not supported (supported: euclidean, manhattan, chebyshev, minkowski with any p >= 1)"
            )))
        }
    })
}

fn f64s(a: &Attrs, at: &str, v: &Value) -> Result<(Vec<usize>, Vec<f64>), ImportError> {
    let arr = NdArray::from_value(v)
        .map_err(|e| a.bad(at, &format!("is not a usable numpy array: {e}")))?;
    let shape = arr.shape.clone();
    Ok((shape, a.to_f64(at, &arr)?))
}

/// `LocalOutlierFactor`.
pub(super) fn local_outlier_factor(a: &Attrs) -> Result<(Native, usize), ImportError> {
    if !a.bool_or("novelty", false)? {
        return Err(ImportError::Model(
            "this LocalOutlierFactor was fitted with novelty=False, so it has no predict for new data (scikit-learn: \"predict is not available when novelty=False, use fit_predict if you want to predict on training data\"); refit it with LocalOutlierFactor(novelty=True) to score new readings".into(),
        ));
    }
    let metric = metric(a)?;
    let k = a
        .get("n_neighbors_")?
        .as_i64()
        .and_then(|k| usize::try_from(k).ok())
        .ok_or_else(|| a.bad("n_neighbors_", "is not a count"))?;
    let offset = a
        .get("offset_")?
        .as_f64()
        .ok_or_else(|| a.bad("offset_", "is not a number"))?;
    let (shape, fit_x) = f64s(a, "_fit_X", &a.get("_fit_X")?)?;
    let [n, d] = shape[..] else {
        return Err(a.invalid(
            "_fit_X",
            format!("has shape {shape:?}, not (n_samples, n_features)"),
        ));
    };
    let (dshape, dist) = f64s(a, "_distances_fit_X_", &a.get("_distances_fit_X_")?)?;
    if dshape[..] != [n, k] {
        return Err(a.invalid(
            "_distances_fit_X_",
            format!("has shape {dshape:?}, but {n} points of {k} neighbours need ({n}, {k})"),
        ));
    }
    let k_distance: Vec<f64> = dist.chunks_exact(k.max(1)).map(|r| r[k - 1]).collect();
    let lrd = a.vec("_lrd")?;
    let method = a
        .get("_fit_method")?
        .as_text()
        .ok_or_else(|| a.bad("_fit_method", "is not text"))?;
    let (index, idx_array, node_start, node_end, node_leaf) = match method.as_str() {
        "kd_tree" | "ball_tree" => tree(a, &method, n, d)?,
        "brute" => {
            return Err(ImportError::Model(
                "this LocalOutlierFactor searches neighbours by brute force (algorithm='brute', or 'auto' with n_neighbors >= half the training points or more than 15 features), whose distances scikit-learn computes with BLAS in an order fleetscore cannot reproduce exactly; refit it with algorithm='kd_tree' or 'ball_tree' (the same neighbours, exactly)".into(),
            ))
        }
        other => return Err(a.bad("_fit_method", &format!("is {other:?}, not kd_tree, ball_tree or brute"))),
    };
    a.check_n_features_in(d)?;
    Ok((
        Native::LocalOutlierFactor(LocalOutlierFactor {
            fit_x,
            k,
            metric,
            index,
            idx_array,
            node_start,
            node_end,
            node_leaf,
            k_distance,
            lrd,
            offset,
        }),
        d,
    ))
}

type Tree = (NeighborIndex, Vec<u32>, Vec<u32>, Vec<u32>, Vec<bool>);

/// The `_tree` of a LOF fitted with a KD or ball tree.
fn tree(a: &Attrs, method: &str, n: usize, d: usize) -> Result<Tree, ImportError> {
    let t = a.get("_tree")?;
    let want = if method == "kd_tree" {
        Estimator::KdTree
    } else {
        Estimator::BallTree
    };
    if t.object_class() != Some(Class::Sklearn(want)) {
        return Err(a.bad(
            "_tree",
            &format!("is not the {} `_fit_method` names", want.class_name()),
        ));
    }
    let st = t
        .object_state()
        .ok_or_else(|| a.bad("_tree", "has no state"))?;
    let items = st
        .tuple_items()
        .map(<[Value]>::to_vec)
        .or_else(|| st.sequence_items())
        .filter(|s| s.len() >= 4)
        .ok_or_else(|| {
            a.bad(
                "_tree",
                "has a state that is not (data, idx_array, node_data, node_bounds, …)",
            )
        })?;
    let (data_shape, _) = f64s(a, "_tree.data", &items[0])?;
    if data_shape[..] != [n, d] {
        return Err(a.invalid(
            "_tree.data",
            format!("has shape {data_shape:?}, not _fit_X's ({n}, {d})"),
        ));
    }
    let idx = NdArray::from_value(&items[1])
        .and_then(|i| i.to_i64())
        .map_err(|e| a.bad("_tree.idx_array", &e))?;
    let idx_array = idx
        .iter()
        .map(|&i| u32::try_from(i).map_err(|_| a.invalid("_tree.idx_array", format!("holds {i}"))))
        .collect::<Result<Vec<u32>, _>>()?;
    let nodes = NdArray::from_value(&items[2]).map_err(|e| a.bad("_tree.node_data", &e))?;
    let field = |name: &str| -> Result<Vec<i64>, ImportError> {
        nodes
            .field_i64(name)
            .map_err(|e| a.bad(&format!("_tree.node_data.{name}"), &e))
    };
    let (start, end, leaf) = (field("idx_start")?, field("idx_end")?, field("is_leaf")?);
    let to_u32 = |v: Vec<i64>, name: &str| -> Result<Vec<u32>, ImportError> {
        v.into_iter()
            .map(|x| {
                u32::try_from(x)
                    .map_err(|_| a.invalid(format!("_tree.node_data.{name}"), format!("holds {x}")))
            })
            .collect()
    };
    let node_start = to_u32(start, "idx_start")?;
    let node_end = to_u32(end, "idx_end")?;
    let node_leaf: Vec<bool> = leaf.iter().map(|&l| l != 0).collect();
    let m = node_start.len();
    let (bshape, bounds) = f64s(a, "_tree.node_bounds", &items[3])?;
    let index = if method == "kd_tree" {
        if bshape[..] != [2, m, d] {
            return Err(a.invalid(
                "_tree.node_bounds",
                format!("has shape {bshape:?}, not (2, {m}, {d})"),
            ));
        }
        let (lo, hi) = bounds.split_at(m * d);
        NeighborIndex::KdTree {
            lo: lo.to_vec(),
            hi: hi.to_vec(),
        }
    } else {
        if bshape[..] != [1, m, d] {
            return Err(a.invalid(
                "_tree.node_bounds",
                format!("has shape {bshape:?}, not (1, {m}, {d})"),
            ));
        }
        let radius = nodes
            .field_f64("radius")
            .map_err(|e| a.bad("_tree.node_data.radius", &e))?;
        NeighborIndex::BallTree {
            centroid: bounds,
            radius,
        }
    };
    Ok((index, idx_array, node_start, node_end, node_leaf))
}
