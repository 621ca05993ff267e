//! One-feature trees compiled to the step functions they are.
//!
//! A tree over one feature maps its input to a leaf by comparisons with
//! thresholds, so it is a step function of the input: sorted interval
//! bounds and the leaf of each interval ([`Tree::intervals`]). scikit-learn
//! compares the input cast to float32 with float64 thresholds, so only
//! float32 inputs ever reach a comparison, and `v <= t` for a float32 `v`
//! holds exactly when `v <= t32`, `t32` being the largest float32 not
//! above `t`. The bounds are therefore stored as float32 without changing
//! any result, and an interval that holds no float32 value is dropped.
//! Leaf values repeat (an isolation tree's path term depends only on a
//! leaf's depth and sample count), so each forest keeps a table of its
//! distinct values and each leaf an index into it.
//!
//! This is how a one-feature IsolationForest is held: about 5 bytes a leaf
//! instead of the 30 of a node, and scored by merging a model's sorted
//! rows with each tree's bounds rather than walking each row down.

use serde::{Deserialize, Serialize};

use super::tree::Tree;
use super::InvalidModel;

/// One tree as a step function of one float32 input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepTree {
    /// Upper bounds, strictly ascending, the last `+inf`: a value `v`
    /// reaches `leaf[i]` for the first `i` with `v <= upper[i]`.
    #[serde(with = "super::floats")]
    pub upper: Vec<f32>,
    /// The value index (into [`StepForest::values`]) of each interval.
    pub leaf: Vec<u16>,
    /// The value index of the leaf a missing value (NaN) reaches.
    pub nan_leaf: u16,
}

/// The trees of a one-feature ensemble as step functions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepForest {
    /// The distinct leaf values.
    pub values: Vec<f64>,
    /// The trees, in the ensemble's order.
    pub trees: Vec<StepTree>,
    /// Nodes of the trees this was compiled from (for descriptions).
    pub nodes: u64,
    /// Depth of the deepest of them.
    pub depth: u32,
}

/// The largest float32 not above `t` (`t` is not NaN).
fn f32_floor(t: f64) -> f32 {
    let f = t as f32; // nearest, ties to even
    if f64::from(f) <= t {
        f
    } else {
        f.next_down()
    }
}

impl StepForest {
    /// Compiles one-feature trees whose nodes each hold one value, or
    /// `None` when a tree splits on another feature or the trees hold more
    /// than 65,536 distinct values.
    pub fn compile(trees: &[Tree]) -> Option<StepForest> {
        let mut values: Vec<f64> = Vec::new();
        let mut index: std::collections::HashMap<u64, u16> = Default::default();
        let mut id = |v: f64, values: &mut Vec<f64>| -> Option<u16> {
            if let Some(&i) = index.get(&v.to_bits()) {
                return Some(i);
            }
            let i = u16::try_from(values.len()).ok()?;
            values.push(v);
            index.insert(v.to_bits(), i);
            Some(i)
        };
        let (mut upper, mut leaf) = (Vec::new(), Vec::new());
        let mut out = Vec::with_capacity(trees.len());
        let (mut nodes, mut depth) = (0u64, 0u32);
        for t in trees {
            // Only a valid tree is compiled: an invalid one (a cycle, a
            // child out of range) stays as it is, for `validate` to refuse.
            if t.n_values != 1
                || t.validate("tree", "tree_", 1).is_err()
                || !t.splits_on_first_feature_only()
            {
                return None;
            }
            nodes += t.len() as u64;
            depth = depth.max(t.depth() as u32);
            t.intervals(&mut upper, &mut leaf);
            let mut st = StepTree {
                upper: Vec::with_capacity(upper.len()),
                leaf: Vec::with_capacity(upper.len()),
                nan_leaf: id(t.value[t.leaf(&[f64::NAN])], &mut values)?,
            };
            for (&u, &l) in upper.iter().zip(&leaf) {
                let u32_ = f32_floor(u);
                // An interval whose float32 bound equals the previous one
                // holds no float32 value.
                if st.upper.last().is_some_and(|&p| p >= u32_) {
                    continue;
                }
                st.upper.push(u32_);
                st.leaf.push(id(t.value[l as usize], &mut values)?);
            }
            out.push(st);
        }
        Some(StepForest {
            values,
            trees: out,
            nodes,
            depth,
        })
    }

    /// Checks the compiled trees.
    pub fn validate(&self, est: &'static str) -> Result<(), InvalidModel> {
        let bad = |why: String| Err(InvalidModel::new(est, "trees", why));
        if self.trees.is_empty() {
            return bad("are empty".into());
        }
        if let Some(v) = self.values.iter().find(|v| !v.is_finite()) {
            return bad(format!(
                "hold the value {v}; only finite values can be scored"
            ));
        }
        let n = self.values.len();
        for (i, t) in self.trees.iter().enumerate() {
            if t.upper.is_empty()
                || t.upper.len() != t.leaf.len()
                || t.upper.last() != Some(&f32::INFINITY)
                || t.upper
                    .windows(2)
                    .any(|w| w[0].partial_cmp(&w[1]) != Some(std::cmp::Ordering::Less))
            {
                return bad(format!(
                    "tree {i}: its bounds are not strictly ascending up to +inf, one per leaf"
                ));
            }
            if t.leaf
                .iter()
                .chain([&t.nan_leaf])
                .any(|&l| usize::from(l) >= n)
            {
                return bad(format!(
                    "tree {i}: a leaf names a value past the {n} values"
                ));
            }
        }
        Ok(())
    }

    /// For each value of `xs` (one feature), the sum over the trees in
    /// order of the leaf values it reaches, starting from 0.0 as
    /// scikit-learn's accumulators do. NaN rows take each tree's NaN leaf
    /// when `route_nan`, else their sum is NaN.
    pub fn sum_leaves(&self, xs: &[f64], route_nan: bool, out: &mut [f64]) {
        // Rows by their float32 value; NaN rows apart.
        let mut order: Vec<(f32, u32)> = Vec::with_capacity(xs.len());
        let mut nan = Vec::new();
        for (i, &x) in xs.iter().enumerate() {
            if x.is_nan() {
                nan.push(i);
            } else {
                order.push((x as f32, i as u32));
            }
        }
        order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut acc = vec![0.0f64; order.len()];
        for t in &self.trees {
            let mut j = 0;
            for (a, &(v, _)) in acc.iter_mut().zip(&order) {
                // The last bound is +inf: j stays in range. -0.0 and 0.0
                // compare equal here, as in the walk.
                while t.upper[j] < v {
                    j += 1;
                }
                *a += self.values[usize::from(t.leaf[j])];
            }
        }
        for (a, &(_, i)) in acc.iter().zip(&order) {
            out[i as usize] = *a;
        }
        for i in nan {
            out[i] = if route_nan {
                let mut sum = 0.0;
                for t in &self.trees {
                    sum += self.values[usize::from(t.nan_leaf)];
                }
                sum
            } else {
                f64::NAN
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_floor_is_the_largest_float32_not_above() {
        for t in [
            0.1,
            -0.1,
            1.0,
            1e-40,
            -1e-40,
            3.5e38,
            -3.5e38,
            0.0,
            f64::INFINITY,
        ] {
            let f = f32_floor(t);
            assert!(f64::from(f) <= t, "{t}");
            assert!(f == f32::INFINITY || f64::from(f.next_up()) > t, "{t}");
        }
    }

    #[test]
    fn compiled_trees_give_the_walk_sums() {
        // Two stumps on feature 0 with thresholds between float32 values.
        let stump = |t: f64, a: f64, b: f64| Tree {
            left: vec![1, -1, -1],
            right: vec![2, -1, -1],
            feature: vec![0; 3],
            threshold: vec![t, 0.0, 0.0],
            missing_left: vec![true, false, false],
            value: vec![0.0, a, b],
            n_values: 1,
        };
        let trees = vec![
            stump(0.1, 1.0, 2.0),
            stump(0.100_000_001, 3.0, 4.0),
            stump(-5.0, 0.5, 0.25),
        ];
        let f = StepForest::compile(&trees).unwrap();
        f.validate("T").unwrap();
        let xs = [
            0.1,
            0.099_999_999,
            0.100_000_002,
            -5.0,
            -6.0,
            1e30,
            -1e30,
            f64::NAN,
            0.0,
            -0.0,
        ];
        let mut out = vec![0.0; xs.len()];
        f.sum_leaves(&xs, true, &mut out);
        for (x, o) in xs.iter().zip(&out) {
            let mut want = 0.0;
            for t in &trees {
                want += t.value[t.leaf(&[*x])];
            }
            assert_eq!(o.to_bits(), want.to_bits(), "{x}");
        }
    }
}
