//! `HistGradientBoostingRegressor` and `HistGradientBoostingClassifier`:
//! a baseline plus the sum of each iteration's trees, walked on the float64
//! input (these trees, unlike scikit-learn's other trees, do not cast to
//! float32) with missing values routed and categorical splits tested
//! against bitsets, as `_predict_one_from_raw_data` does.

use serde::{Deserialize, Serialize};

use super::forest::{argmax, max};
use super::tree::{numpy_sum, Tree};
use super::{InvalidModel, Kind, NO_LABEL};

/// How raw predictions become outputs (the loss's inverse link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HgbLink {
    /// Regression with the identity link (squared, absolute, quantile).
    Identity,
    /// Regression with the log link (poisson, gamma): `exp(raw)`.
    Log,
    /// Binary classification: `p1 = expit(raw)`, class 1 where `raw > 0`.
    Binomial,
    /// Multiclass: `softmax(raw)`, the class of the largest raw value.
    Multinomial,
}

/// A categorical split of one node: categories in the node's left bitset
/// go left, other known categories go right, and unknown or negative ones
/// follow the missing-value rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoricalSplit {
    /// The node.
    pub node: u32,
    /// The categories (0-255) that go left: 8 words of 32 bits.
    pub left: [u32; 8],
}

/// One tree of a histogram gradient boosting model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HgbTree {
    /// The nodes; a leaf's value is its prediction.
    pub tree: Tree,
    /// The categorical splits, by node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categorical: Vec<CategoricalSplit>,
}

/// The preprocessor scikit-learn 1.4 and later fits inside a model with
/// categorical features: the categorical columns first, each value
/// replaced by its index among the fitted categories (an unknown value or
/// NaN becomes NaN, which the trees route as missing), then the numeric
/// columns as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HgbEncoder {
    /// The input column of each output column.
    pub columns: Vec<u32>,
    /// Per output column: its categories, or none for a numeric column
    /// passed through.
    pub categories: Vec<Option<Vec<f64>>>,
}

impl HgbEncoder {
    fn encode(&self, x: &[f64], out: &mut [f64]) {
        for ((o, &c), cats) in out.iter_mut().zip(&self.columns).zip(&self.categories) {
            let v = x[c as usize];
            *o = match cats {
                None => v,
                // OrdinalEncoder: the index of an equal category.
                Some(cats) => cats
                    .iter()
                    .position(|&k| k == v)
                    .map_or(f64::NAN, |i| i as f64),
            };
        }
    }
}

/// A fitted histogram gradient boosting model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistGradientBoosting {
    /// The trees, iteration by iteration, `k` per iteration.
    pub trees: Vec<HgbTree>,
    /// Trees per iteration.
    pub k: usize,
    /// `_baseline_prediction`, one per tree of an iteration.
    pub baseline: Vec<f64>,
    /// The inverse link.
    pub link: HgbLink,
    /// `str(c)` for each of `classes_` (classifiers).
    pub classes: Vec<String>,
    /// Known categories of each categorical feature (bitsets of 8 words),
    /// by feature; empty for numeric features.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_categories: Vec<Vec<u32>>,
    /// The categorical preprocessor of scikit-learn 1.4 and later, whose
    /// output the trees see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<HgbEncoder>,
}

fn in_bitset(b: &[u32], v: u8) -> bool {
    (b[usize::from(v) / 32] >> (u32::from(v) % 32)) & 1 == 1
}

/// C's `(uint8_t)x` for a non-negative double as x86-64 compiles it: a
/// truncation to a 64-bit integer, then its low byte.
fn as_u8(x: f64) -> u8 {
    (x as i64) as u8
}

impl HistGradientBoosting {
    /// scikit-learn's class name.
    pub fn class_name(&self) -> &'static str {
        match self.link {
            HgbLink::Identity | HgbLink::Log => "HistGradientBoostingRegressor",
            _ => "HistGradientBoostingClassifier",
        }
    }

    /// What it predicts.
    pub fn kind(&self) -> Kind {
        match self.link {
            HgbLink::Identity | HgbLink::Log => Kind::Regressor,
            _ => Kind::Classifier,
        }
    }

    /// A short description with its sizes.
    pub fn describe(&self) -> String {
        let nodes: usize = self.trees.iter().map(|t| t.tree.len()).sum();
        let classes = if self.classes.is_empty() {
            String::new()
        } else {
            format!(", {} classes", self.classes.len())
        };
        format!(
            "{}({} iterations of {} tree{}, {nodes} nodes{classes})",
            self.class_name(),
            self.trees.len().checked_div(self.k).unwrap_or(0),
            self.k,
            if self.k == 1 { "" } else { "s" }
        )
    }

    /// Checks the model for rows of `n` features.
    pub fn validate(&self, n_in: usize) -> Result<(), InvalidModel> {
        let est = self.class_name();
        let n = match &self.encoder {
            None => n_in,
            Some(e) => {
                if e.columns.len() != e.categories.len()
                    || e.columns.iter().any(|&c| c as usize >= n_in)
                {
                    return Err(InvalidModel::new(
                        est,
                        "_preprocessor",
                        format!("does not map {n_in} input columns consistently"),
                    ));
                }
                if e.categories
                    .iter()
                    .flatten()
                    .flatten()
                    .any(|c| !c.is_finite())
                {
                    return Err(InvalidModel::new(
                        est,
                        "_preprocessor.categories_",
                        "holds a non-finite category",
                    ));
                }
                e.columns.len()
            }
        };
        if self.k == 0 || !self.trees.len().is_multiple_of(self.k) {
            return Err(InvalidModel::new(
                est,
                "_predictors",
                format!(
                    "holds {} trees, not whole iterations of {}",
                    self.trees.len(),
                    self.k
                ),
            ));
        }
        if self.baseline.len() != self.k || self.baseline.iter().any(|b| !b.is_finite()) {
            return Err(InvalidModel::new(
                est,
                "_baseline_prediction",
                format!("must hold {} finite values", self.k),
            ));
        }
        let classes = match self.link {
            HgbLink::Identity | HgbLink::Log => 0,
            HgbLink::Binomial => 2,
            HgbLink::Multinomial => self.k,
        };
        if self.classes.len() != classes
            || (self.link == HgbLink::Multinomial && self.k < 3)
            || (self.link != HgbLink::Multinomial && self.k != 1)
        {
            return Err(InvalidModel::new(
                est,
                "classes_",
                format!(
                    "has {} classes for {} trees per iteration",
                    self.classes.len(),
                    self.k
                ),
            ));
        }
        if !self.known_categories.is_empty() && self.known_categories.len() != n {
            return Err(InvalidModel::new(
                est,
                "_bin_mapper.is_categorical_",
                format!("covers {} features, not {n}", self.known_categories.len()),
            ));
        }
        for k in &self.known_categories {
            if !(k.is_empty() || k.len() == 8) {
                return Err(InvalidModel::new(
                    est,
                    "_bin_mapper.bin_thresholds_",
                    "a categorical feature's known categories are a bitset of 8 words",
                ));
            }
        }
        for (i, t) in self.trees.iter().enumerate() {
            let at = format!("_predictors[{}][{}]", i / self.k, i % self.k);
            t.tree.validate(est, &at, n)?;
            if t.tree.n_values != 1 {
                return Err(InvalidModel::new(
                    est,
                    format!("{at}.nodes"),
                    "has more than one value per node",
                ));
            }
            let mut last = None;
            for c in &t.categorical {
                let node = c.node as usize;
                if node >= t.tree.len() || t.tree.is_leaf(node) || last.is_some_and(|l| l >= c.node)
                {
                    return Err(InvalidModel::new(
                        est,
                        format!("{at}.nodes"),
                        format!("categorical split at node {node} is not a split node in order"),
                    ));
                }
                let f = t.tree.feature[node] as usize;
                if self.known_categories.get(f).is_none_or(|k| k.is_empty()) {
                    return Err(InvalidModel::new(
                        est,
                        format!("{at}.nodes"),
                        format!(
                            "node {node} splits feature {f} by category, but it is not categorical"
                        ),
                    ));
                }
                last = Some(c.node);
            }
        }
        Ok(())
    }

    /// The leaf value a row reaches in one tree.
    #[inline]
    fn predict_tree(&self, t: &HgbTree, x: &[f64]) -> f64 {
        let tree = &t.tree;
        let mut i = 0usize;
        loop {
            let l = tree.left[i];
            if l < 0 {
                return tree.value[i];
            }
            let f = tree.feature[i] as usize;
            let v = x[f];
            let left = if v.is_nan() {
                tree.missing_left[i]
            } else if let Some(c) = (!t.categorical.is_empty())
                .then(|| {
                    t.categorical
                        .binary_search_by_key(&(i as u32), |c| c.node)
                        .ok()
                })
                .flatten()
            {
                let c = &t.categorical[c];
                if v < 0.0 {
                    tree.missing_left[i]
                } else if in_bitset(&c.left, as_u8(v)) {
                    true
                } else if in_bitset(&self.known_categories[f], as_u8(v)) {
                    false
                } else {
                    // An unknown category is treated as missing.
                    tree.missing_left[i]
                }
            } else {
                v <= tree.threshold[i]
            };
            i = if left {
                l as usize
            } else {
                tree.right[i] as usize
            };
        }
    }

    /// Scores and labels of rows of `n` features.
    pub fn evaluate(&self, xs: &[f64], n: usize, score: &mut [f64], label: &mut [u32]) {
        let k = self.k;
        let mut raw = vec![0.0; k];
        let mut p = vec![0.0; k];
        let mut encoded = vec![0.0; self.encoder.as_ref().map_or(0, |e| e.columns.len())];
        for ((x, s), l) in xs
            .chunks_exact(n)
            .zip(score.iter_mut())
            .zip(label.iter_mut())
        {
            let x = match &self.encoder {
                None => x,
                Some(e) => {
                    e.encode(x, &mut encoded);
                    &encoded[..]
                }
            };
            // raw = zeros; raw += baseline; raw[:, k] += predictor(X).
            for (r, b) in raw.iter_mut().zip(&self.baseline) {
                *r = 0.0 + b;
            }
            for it in self.trees.chunks_exact(k) {
                for (r, t) in raw.iter_mut().zip(it) {
                    *r += self.predict_tree(t, x);
                }
            }
            match self.link {
                HgbLink::Identity => {
                    *s = raw[0];
                    *l = NO_LABEL;
                }
                HgbLink::Log => {
                    *s = raw[0].exp();
                    *l = NO_LABEL;
                }
                HgbLink::Binomial => {
                    let p1 = 1.0 / (1.0 + (-raw[0]).exp());
                    let p0 = 1.0 - p1;
                    *l = u32::from(raw[0] > 0.0);
                    *s = if p1 > p0 { p1 } else { p0 };
                }
                HgbLink::Multinomial => {
                    let m = max(&raw);
                    for (p, r) in p.iter_mut().zip(&raw) {
                        *p = (r - m).exp();
                    }
                    let sum = numpy_sum(&p);
                    p.iter_mut().for_each(|p| *p /= sum);
                    *l = argmax(&raw) as u32;
                    *s = max(&p);
                }
            }
        }
    }
}
