//! Tree ensembles: IsolationForest, and the decision trees and random or
//! extra-trees forests that regress or classify, each summed in
//! scikit-learn's order so that outputs are bit-identical where the
//! arithmetic allows it.

use serde::{Deserialize, Serialize};

use super::steptree::StepForest;
use super::tree::{numpy_sum, Tree};
use super::{InvalidModel, NO_LABEL};

/// How an IsolationForest turns the summed path lengths into a score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum IfRule {
    /// scikit-learn 0.21 and later: `score = -(2 ** -(sum / denominator))`
    /// with `denominator = n_trees * c(max_samples)`. From 1.2 on, a
    /// denominator of 0 gives a ratio of 1 (`guard`); before, the division
    /// is done as is.
    Sum {
        /// `len(estimators_) * _average_path_length([max_samples])`.
        denominator: f64,
        /// Whether a zero denominator gives a ratio of 1.
        guard: bool,
    },
    /// scikit-learn 0.20: the mean over trees (a sequential sum divided by
    /// the number of trees), then divided by `c(max_samples)`.
    Mean {
        /// `_average_path_length(max_samples_)` with 0.20's formula.
        c: f64,
    },
}

/// A fitted `sklearn.ensemble.IsolationForest`.
///
/// Each tree's leaves hold that tree's path length term (`depth +
/// c(n_samples_leaf) - 1` in scikit-learn's order of operations, or the
/// stored `_decision_path_lengths + _average_path_length_per_tree - 1`
/// from 1.3), computed once at import exactly as scikit-learn computes
/// it per row, and node features index the full input row (a tree fitted
/// on a feature subset is remapped at import).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolationForest {
    /// The isolation trees, in `estimators_` order (empty when
    /// `compiled` holds them).
    pub trees: Vec<Tree>,
    /// The trees of a one-feature forest as step functions (see
    /// [`StepForest`]): what a forest over one input is held and scored as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled: Option<StepForest>,
    /// How the path lengths become a score.
    pub rule: IfRule,
    /// `offset_`: `decision_function = score_samples - offset_`.
    pub offset: f64,
    /// `predict` says -1 (anomaly) where the decision is below this: 0,
    /// or `_threshold_` for 0.20/0.21's `behaviour='old'`.
    pub threshold: f64,
    /// Whether NaN inputs are routed (`missing_go_to_left`, 1.3 and
    /// later) rather than refused by scikit-learn; a refused row scores
    /// NaN and counts as an anomaly.
    pub allow_nan: bool,
}

impl IsolationForest {
    /// Checks the forest for rows of `n` features.
    pub fn validate(&self, n: usize) -> Result<(), InvalidModel> {
        const EST: &str = "IsolationForest";
        if let Some(c) = &self.compiled {
            if !self.trees.is_empty() || n != 1 {
                return Err(InvalidModel::new(
                    EST,
                    "trees",
                    "a compiled forest has one input and no other trees",
                ));
            }
            c.validate(EST)?;
        } else if self.trees.is_empty() {
            return Err(InvalidModel::new(EST, "estimators_", "is empty"));
        }
        for (i, t) in self.trees.iter().enumerate() {
            t.validate(EST, &format!("estimators_[{i}].tree_"), n)?;
            if t.n_values != 1 {
                return Err(InvalidModel::new(
                    EST,
                    format!("estimators_[{i}].tree_.value"),
                    format!(
                        "has {} values per node; an isolation tree has 1",
                        t.n_values
                    ),
                ));
            }
        }
        let finite = |attr: &str, v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(InvalidModel::new(
                    EST,
                    attr,
                    format!("is {v}, not a finite number"),
                ))
            }
        };
        finite("offset_", self.offset)?;
        finite("_threshold_", self.threshold)?;
        match self.rule {
            IfRule::Sum { denominator, .. } => finite("max_samples_", denominator)?,
            IfRule::Mean { c } => finite("max_samples_", c)?,
        }
        Ok(())
    }

    /// `score_samples` of one row: `-(2 ** -(mean path length / c))`.
    #[inline]
    pub fn score_samples(&self, x: &[f64]) -> f64 {
        if let Some(c) = &self.compiled {
            let mut d = [0.0];
            c.sum_leaves(&x[..1], self.allow_nan, &mut d);
            return self.finish(d[0]);
        }
        let mut depths = 0.0;
        for t in &self.trees {
            depths += t.value[t.leaf(x)];
        }
        self.finish(depths)
    }

    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.compiled
            .as_ref()
            .map_or(self.trees.len(), |c| c.trees.len())
    }

    /// Compiles a one-feature forest to step functions
    /// ([`IsolationForest::compiled`]); other forests stay as they are.
    pub fn compile_one_feature(mut self, n_features: usize) -> Self {
        if n_features == 1 && self.compiled.is_none() {
            if let Some(c) = StepForest::compile(&self.trees) {
                self.compiled = Some(c);
                self.trees = Vec::new();
            }
        }
        self
    }

    /// The score from the summed per-tree terms.
    #[inline]
    fn finish(&self, depths: f64) -> f64 {
        let ratio = match self.rule {
            IfRule::Sum { denominator, guard } => {
                if guard && denominator == 0.0 {
                    1.0
                } else {
                    depths / denominator
                }
            }
            IfRule::Mean { c } => depths / self.n_trees() as f64 / c,
        };
        -(2f64.powf(-ratio))
    }

    /// `decision_function = score_samples - offset_`.
    ///
    /// numpy computes `2 ** x` with a vector `pow` that differs from the
    /// C library's in the last bit for a few percent of inputs. Where a
    /// row's score equals `offset_` in scikit-learn (a fitted numeric
    /// `contamination` puts `offset_` on one of the forest's attainable
    /// scores, and rounded sensor data hits it), that bit decides the
    /// label; so a decision within 2 ulps of `offset_` is taken as the
    /// exact 0.0 scikit-learn gives, which it calls normal.
    #[inline]
    pub fn decision(&self, score: f64) -> f64 {
        let d = score - self.offset;
        let ulp = self.offset.abs().next_up() - self.offset.abs();
        if d.abs() <= 2.0 * ulp {
            0.0
        } else {
            d
        }
    }

    /// Decisions and labels (1 = anomaly) of rows of `n` features;
    /// returns the number of anomalies.
    pub fn evaluate(&self, xs: &[f64], n: usize, score: &mut [f64], label: &mut [u32]) -> usize {
        if let Some(c) = &self.compiled {
            c.sum_leaves(xs, self.allow_nan, score);
            for (s, x) in score.iter_mut().zip(xs) {
                if !x.is_nan() || self.allow_nan {
                    *s = self.decision(self.finish(*s));
                }
            }
        } else if n == 1 && xs.len() >= MERGE_MIN_ROWS {
            // Sum the trees' terms per row by merging, then finish each row
            // as `score_samples` does; NaN rows that are not routed stay NaN.
            sum_leaves_one_feature(&self.trees, xs, self.allow_nan, score);
            for (s, x) in score.iter_mut().zip(xs) {
                if !x.is_nan() || self.allow_nan {
                    *s = self.decision(self.finish(*s));
                }
            }
        } else {
            for (x, s) in xs.chunks_exact(n).zip(score.iter_mut()) {
                *s = if !self.allow_nan && x.iter().any(|v| v.is_nan()) {
                    f64::NAN
                } else {
                    self.decision(self.score_samples(x))
                };
            }
        }
        let mut anomalies = 0;
        for (s, l) in score.iter().zip(label.iter_mut()) {
            let d = *s;
            // scikit-learn: -1 where decision < threshold; a NaN (a row
            // scikit-learn refuses) is an anomaly here.
            let a = d < self.threshold || d.is_nan();
            *l = u32::from(a);
            anomalies += usize::from(a);
        }
        anomalies
    }
}

/// A regression tree, or a forest of them whose prediction is the mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForestRegressor {
    /// scikit-learn's class name, e.g. `RandomForestRegressor`.
    pub class: String,
    /// The trees, in `estimators_` order (one for a single tree; empty
    /// when `compiled` holds them).
    pub trees: Vec<Tree>,
    /// The trees of a one-feature forest as step functions (see
    /// [`StepForest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled: Option<StepForest>,
    /// A forest: sum the trees in order, then divide by their number. A
    /// single tree predicts its leaf value as is.
    pub average: bool,
    /// Whether NaN inputs are routed rather than refused (see
    /// [`IsolationForest::allow_nan`]); a refused row predicts NaN.
    pub allow_nan: bool,
}

fn check_trees(
    est: &'static str,
    trees: &[Tree],
    n: usize,
    values: usize,
) -> Result<(), InvalidModel> {
    if trees.is_empty() {
        return Err(InvalidModel::new(est, "estimators_", "is empty"));
    }
    for (i, t) in trees.iter().enumerate() {
        let at = if trees.len() == 1 {
            "tree_".to_string()
        } else {
            format!("estimators_[{i}].tree_")
        };
        t.validate(est, &at, n)?;
        if t.n_values != values {
            return Err(InvalidModel::new(
                est,
                format!("{at}.value"),
                format!(
                    "has {} values per node, but the model needs {values}",
                    t.n_values
                ),
            ));
        }
    }
    Ok(())
}

/// A static name for messages (the class names scikit-learn uses).
fn static_name(class: &str) -> &'static str {
    const NAMES: [&str; 8] = [
        "DecisionTreeRegressor",
        "ExtraTreeRegressor",
        "RandomForestRegressor",
        "ExtraTreesRegressor",
        "DecisionTreeClassifier",
        "ExtraTreeClassifier",
        "RandomForestClassifier",
        "ExtraTreesClassifier",
    ];
    NAMES
        .iter()
        .find(|n| **n == class)
        .copied()
        .unwrap_or("tree model")
}

impl ForestRegressor {
    /// Checks the trees for rows of `n` features.
    pub fn validate(&self, n: usize) -> Result<(), InvalidModel> {
        let est = static_name(&self.class);
        if let Some(c) = &self.compiled {
            if !self.trees.is_empty() || n != 1 || !self.average {
                return Err(InvalidModel::new(
                    est,
                    "trees",
                    "a compiled forest averages trees over one input and has no other trees",
                ));
            }
            return c.validate(est);
        }
        check_trees(est, &self.trees, n, 1)?;
        if !self.average && self.trees.len() != 1 {
            return Err(InvalidModel::new(
                est,
                "estimators_",
                "a single tree has one tree",
            ));
        }
        Ok(())
    }

    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.compiled
            .as_ref()
            .map_or(self.trees.len(), |c| c.trees.len())
    }

    /// Compiles a one-feature forest (not a single tree, whose prediction
    /// is its leaf value with no sum) to step functions; other models stay
    /// as they are.
    pub fn compile_one_feature(mut self, n_features: usize) -> Self {
        if n_features == 1 && self.average && self.compiled.is_none() {
            if let Some(c) = StepForest::compile(&self.trees) {
                self.compiled = Some(c);
                self.trees = Vec::new();
            }
        }
        self
    }

    /// Predictions of rows of `n` features.
    pub fn evaluate(&self, xs: &[f64], n: usize, score: &mut [f64]) {
        if let Some(c) = &self.compiled {
            c.sum_leaves(xs, self.allow_nan, score);
            let m = c.trees.len() as f64;
            score.iter_mut().for_each(|s| *s /= m);
            return;
        }
        if n == 1 && xs.len() >= MERGE_MIN_ROWS && self.average {
            sum_leaves_one_feature(&self.trees, xs, self.allow_nan, score);
            let m = self.trees.len() as f64;
            score.iter_mut().for_each(|s| *s /= m);
            return;
        }
        for (x, s) in xs.chunks_exact(n).zip(score.iter_mut()) {
            *s = if !self.allow_nan && x.iter().any(|v| v.is_nan()) {
                f64::NAN
            } else if self.average {
                let mut sum = 0.0;
                for t in &self.trees {
                    sum += t.value[t.leaf(x)];
                }
                sum / self.trees.len() as f64
            } else {
                let t = &self.trees[0];
                t.value[t.leaf(x)]
            };
        }
    }
}

/// How a classification tree's leaf values become probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbaRule {
    /// scikit-learn 1.4 and later: leaves hold class fractions, used as is.
    Stored,
    /// scikit-learn 1.3 and earlier: leaves hold weighted class counts,
    /// divided by their numpy sum (a sum of 0 divides by 1).
    Normalize,
}

/// A classification tree, or a forest of them averaging probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForestClassifier {
    /// scikit-learn's class name, e.g. `RandomForestClassifier`.
    pub class: String,
    /// The trees, in `estimators_` order (one for a single tree); each
    /// node holds one value per class.
    pub trees: Vec<Tree>,
    /// A forest averages the trees' probabilities and predicts their
    /// argmax; a single tree predicts the argmax of its leaf values.
    pub average: bool,
    /// How leaf values become probabilities.
    pub proba: ProbaRule,
    /// `str(c)` for each of `classes_`.
    pub classes: Vec<String>,
    /// Whether NaN inputs are routed rather than refused (see
    /// [`IsolationForest::allow_nan`]); a refused row has no label.
    pub allow_nan: bool,
}

impl ForestClassifier {
    /// Checks the trees for rows of `n` features.
    pub fn validate(&self, n: usize) -> Result<(), InvalidModel> {
        let est = static_name(&self.class);
        if self.classes.len() < 2 {
            return Err(InvalidModel::new(
                est,
                "classes_",
                format!(
                    "has {} classes; a fitted classifier has at least 2",
                    self.classes.len()
                ),
            ));
        }
        check_trees(est, &self.trees, n, self.classes.len())?;
        if !self.average && self.trees.len() != 1 {
            return Err(InvalidModel::new(
                est,
                "estimators_",
                "a single tree has one tree",
            ));
        }
        Ok(())
    }

    /// One tree's `predict_proba` for a leaf, into `p`.
    #[inline]
    fn leaf_proba(&self, v: &[f64], p: &mut [f64]) {
        match self.proba {
            ProbaRule::Stored => p.copy_from_slice(v),
            ProbaRule::Normalize => {
                let mut s = numpy_sum(v);
                if s == 0.0 {
                    s = 1.0;
                }
                for (p, v) in p.iter_mut().zip(v) {
                    *p = v / s;
                }
            }
        }
    }

    /// Probability of the predicted class, and the class index, of rows
    /// of `n` features.
    pub fn evaluate(&self, xs: &[f64], n: usize, score: &mut [f64], label: &mut [u32]) {
        let k = self.classes.len();
        let mut acc = vec![0.0; k];
        let mut p = vec![0.0; k];
        for ((x, s), l) in xs
            .chunks_exact(n)
            .zip(score.iter_mut())
            .zip(label.iter_mut())
        {
            if !self.allow_nan && x.iter().any(|v| v.is_nan()) {
                *s = f64::NAN;
                *l = NO_LABEL;
                continue;
            }
            if self.average {
                acc.fill(0.0);
                for t in &self.trees {
                    self.leaf_proba(t.values(t.leaf(x)), &mut p);
                    for (a, p) in acc.iter_mut().zip(&p) {
                        *a += p;
                    }
                }
                let m = self.trees.len() as f64;
                acc.iter_mut().for_each(|a| *a /= m);
                let i = argmax(&acc);
                *l = i as u32;
                *s = acc[i];
            } else {
                let t = &self.trees[0];
                let v = t.values(t.leaf(x));
                self.leaf_proba(v, &mut p);
                *l = argmax(v) as u32;
                *s = max(&p);
            }
        }
    }
}

/// Fewest rows for which a one-feature ensemble is scored by merging
/// sorted rows with each tree's intervals rather than by walking.
const MERGE_MIN_ROWS: usize = 16;

/// Rows of one feature in the order a merge needs: the f32-cast values of
/// the non-NaN rows ascending (`xs`), their row numbers (`order`), and the
/// NaN rows apart.
struct SortedRows {
    xs: Vec<f64>,
    order: Vec<u32>,
    nan: Vec<u32>,
}

fn sort_rows(values: &[f64]) -> SortedRows {
    let mut order: Vec<u32> = Vec::with_capacity(values.len());
    let mut nan = Vec::new();
    for (i, v) in values.iter().enumerate() {
        if v.is_nan() {
            nan.push(i as u32);
        } else {
            order.push(i as u32);
        }
    }
    let cast = |i: u32| f64::from(values[i as usize] as f32);
    order.sort_unstable_by(|&a, &b| cast(a).total_cmp(&cast(b)));
    let xs = order.iter().map(|&i| cast(i)).collect();
    SortedRows { xs, order, nan }
}

/// For each row of one feature, the sum over `trees` in order of the
/// value (one per node) of the leaf it reaches, starting from 0.0 as
/// scikit-learn's accumulators do. NaN rows are walked (`route_nan`) or
/// get NaN.
fn sum_leaves_one_feature(trees: &[Tree], values: &[f64], route_nan: bool, out: &mut [f64]) {
    let rows = sort_rows(values);
    let mut acc = vec![0.0f64; rows.xs.len()];
    let (mut upper, mut leaf, mut leaves) = (Vec::new(), Vec::new(), vec![0u32; rows.xs.len()]);
    for t in trees {
        t.leaves_sorted(&rows.xs, &mut upper, &mut leaf, &mut leaves);
        for (a, &l) in acc.iter_mut().zip(&leaves) {
            *a += t.value[l as usize];
        }
    }
    for (a, &i) in acc.iter().zip(&rows.order) {
        out[i as usize] = *a;
    }
    for &i in &rows.nan {
        out[i as usize] = if route_nan {
            let x = [f64::NAN];
            let mut sum = 0.0;
            for t in trees {
                sum += t.value[t.leaf(&x)];
            }
            sum
        } else {
            f64::NAN
        };
    }
}

/// numpy's `argmax`: the first maximum (NaN wins, as in numpy).
pub(crate) fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate().skip(1) {
        if v[best].is_nan() {
            break;
        }
        if x > v[best] || x.is_nan() {
            best = i;
        }
    }
    best
}

/// numpy's `max` along a row (NaN propagates).
pub(crate) fn max(v: &[f64]) -> f64 {
    let mut m = v[0];
    for &x in &v[1..] {
        if x.is_nan() || m.is_nan() {
            return f64::NAN;
        }
        if x > m {
            m = x;
        }
    }
    m
}
