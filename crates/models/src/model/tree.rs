//! The decision tree every scikit-learn tree model is made of
//! (`sklearn.tree._tree.Tree`), and its exact walk.
//!
//! scikit-learn casts the input to float32 before it walks a tree
//! (`_validate_X_predict` with `dtype=np.float32`), while the thresholds
//! are float64 midpoints: the cast decides the side of a value close to a
//! threshold, so the walk compares `(x as f32) as f64 <= threshold`, as
//! `_apply_dense` does.

use serde::{Deserialize, Serialize};

use super::InvalidModel;

/// One fitted tree, as arrays over its nodes (node 0 is the root).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// Left child of each node; -1 at a leaf.
    pub left: Vec<i32>,
    /// Right child of each node; -1 at a leaf.
    pub right: Vec<i32>,
    /// Feature (column of the input row) each split tests.
    pub feature: Vec<u32>,
    /// `x <= threshold` goes left (`+inf` in a split of missing values).
    #[serde(with = "super::floats")]
    pub threshold: Vec<f64>,
    /// Where a missing value (NaN) goes: left when set (scikit-learn
    /// 1.3's `missing_go_to_left`); earlier trees send NaN right.
    pub missing_left: Vec<bool>,
    /// `n_values` values per node: a regression tree's prediction, a
    /// classification tree's class counts (1.3 and older) or fractions
    /// (1.4 and newer), or an isolation tree's path length term.
    pub value: Vec<f64>,
    /// Values per node.
    pub n_values: usize,
}

/// The most nodes one tree may have (node indices are `i32`).
pub const MAX_NODES: usize = i32::MAX as usize;

impl Tree {
    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.left.len()
    }

    /// Whether the tree has no nodes (never true of a valid tree).
    pub fn is_empty(&self) -> bool {
        self.left.is_empty()
    }

    /// Whether node `i` is a leaf.
    #[inline]
    pub fn is_leaf(&self, i: usize) -> bool {
        self.left[i] < 0
    }

    /// Depth of the deepest leaf (the root alone has depth 0).
    pub fn depth(&self) -> usize {
        self.node_depths().into_iter().max().unwrap_or(0)
    }

    /// Depth of every node (root 0). Valid trees number children after
    /// their parent, so one pass in index order sees each parent first.
    pub fn node_depths(&self) -> Vec<usize> {
        let mut d = vec![0usize; self.len()];
        for i in 0..self.len() {
            if !self.is_leaf(i) {
                let next = d[i] + 1;
                for c in [self.left[i], self.right[i]] {
                    if let Some(slot) = usize::try_from(c).ok().and_then(|c| d.get_mut(c)) {
                        *slot = next;
                    }
                }
            }
        }
        d
    }

    /// The values of node `i`.
    #[inline]
    pub fn values(&self, i: usize) -> &[f64] {
        &self.value[i * self.n_values..(i + 1) * self.n_values]
    }

    /// The leaf a row ends in, comparing `f32(x)` with each threshold as
    /// scikit-learn does. NaN goes where `missing_left` says.
    #[inline]
    pub fn leaf(&self, x: &[f64]) -> usize {
        let mut i = 0usize;
        loop {
            let l = self.left[i];
            if l < 0 {
                return i;
            }
            let v = f64::from(x[self.feature[i] as usize] as f32);
            let go_left = if v.is_nan() {
                self.missing_left[i]
            } else {
                v <= self.threshold[i]
            };
            i = if go_left {
                l as usize
            } else {
                self.right[i] as usize
            };
        }
    }

    /// Whether every split tests feature 0: the tree is then a step
    /// function of one value, and [`Tree::leaves_sorted`] applies.
    pub fn splits_on_first_feature_only(&self) -> bool {
        (0..self.len()).all(|i| self.is_leaf(i) || self.feature[i] == 0)
    }

    /// The leaves of a one-feature tree as intervals of the input: leaf
    /// `leaf[i]` holds the values in `(upper[i - 1], upper[i]]`, with
    /// `upper` ascending and the last `+inf`. Each leaf's interval is the
    /// intersection of the conditions on its path, so the intervals agree
    /// with [`Tree::leaf`] for every value but NaN, whatever the
    /// thresholds (a leaf no value reaches gets no interval).
    pub fn intervals(&self, upper: &mut Vec<f64>, leaf: &mut Vec<u32>) {
        upper.clear();
        leaf.clear();
        // Depth-first, left child first: the leaves come in input order.
        // A valid tree visits each node once; the bound keeps an invalid
        // one (a cycle) from looping.
        let mut stack = vec![(0usize, f64::NEG_INFINITY, f64::INFINITY)];
        let mut visits = 0usize;
        while let Some((i, lo, hi)) = stack.pop() {
            visits += 1;
            if visits > self.len() || i >= self.len() {
                break;
            }
            if self.is_leaf(i) {
                upper.push(hi);
                leaf.push(i as u32);
                continue;
            }
            let t = self.threshold[i];
            // Right: (max(lo, t), hi]; left: (lo, min(hi, t)]. Pushed
            // right first so that left is taken first; empty ones dropped.
            let (rlo, lhi) = (lo.max(t), hi.min(t));
            if rlo < hi {
                stack.push((self.right[i] as usize, rlo, hi));
            }
            if lo < lhi || (lo == f64::NEG_INFINITY && lhi == f64::NEG_INFINITY) {
                stack.push((self.left[i] as usize, lo, lhi));
            }
        }
    }

    /// The leaf of each value of `xs`, which are ascending, not NaN and
    /// already cast through f32, by one merge with the tree's intervals
    /// (built into the `upper`/`leaf` scratch vectors).
    pub fn leaves_sorted(
        &self,
        xs: &[f64],
        upper: &mut Vec<f64>,
        leaf: &mut Vec<u32>,
        out: &mut [u32],
    ) {
        self.intervals(upper, leaf);
        let mut j = 0;
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            // The first interval whose upper bound is >= x: x <= t goes
            // left, so the interval closed above holds x. The last upper
            // bound is +inf, so j stays in range.
            while upper[j] < *x {
                j += 1;
            }
            *o = leaf[j];
        }
    }

    /// Checks the tree for rows of `n` features and `n_values` values per
    /// node. `est` names the estimator in messages and `at` the tree
    /// (e.g. `estimators_[3].tree_`).
    pub fn validate(&self, est: &'static str, at: &str, n: usize) -> Result<(), InvalidModel> {
        let count = self.len();
        let bad = |attr: &str, why: String| InvalidModel::new(est, format!("{at}.{attr}"), why);
        if count == 0 {
            return Err(bad(
                "node_count",
                "is 0, but a fitted tree has a root".into(),
            ));
        }
        if count > MAX_NODES {
            return Err(bad(
                "node_count",
                format!("is {count}, more than {MAX_NODES}"),
            ));
        }
        for (name, len) in [
            ("right_child", self.right.len()),
            ("feature", self.feature.len()),
            ("threshold", self.threshold.len()),
            ("missing_go_to_left", self.missing_left.len()),
        ] {
            if len != count {
                return Err(bad(
                    name,
                    format!("has {len} entries but the tree has {count} nodes"),
                ));
            }
        }
        if self.n_values == 0 || self.n_values.checked_mul(count) != Some(self.value.len()) {
            return Err(bad(
                "value",
                format!(
                    "has {} values, but {count} nodes of {} values each need {}",
                    self.value.len(),
                    self.n_values,
                    count.saturating_mul(self.n_values)
                ),
            ));
        }
        if let Some(i) = self.value.iter().position(|v| !v.is_finite()) {
            return Err(bad(
                &format!("value[{}]", i / self.n_values),
                format!(
                    "is {}, and only finite values can be predicted",
                    self.value[i]
                ),
            ));
        }
        // Both builders number a node's children after it, so requiring
        // child > parent rules out cycles and bounds every walk; a node
        // with two parents is refused too.
        let mut parent = vec![false; count];
        for i in 0..count {
            let (l, r) = (self.left[i], self.right[i]);
            if l < 0 || r < 0 {
                if l != -1 || r != -1 {
                    return Err(bad(
                        "children_left",
                        format!(
                            "node {i} has children ({l}, {r}): a leaf has both -1, a split neither"
                        ),
                    ));
                }
                continue;
            }
            for c in [l, r] {
                let c = c as usize;
                if c <= i || c >= count {
                    return Err(bad(
                        "children_left",
                        format!("node {i} points to node {c}, but children come after their parent and within the {count} nodes (a cycle or an index out of range)"),
                    ));
                }
                if std::mem::replace(&mut parent[c], true) {
                    return Err(bad(
                        "children_left",
                        format!("node {c} has two parents; a tree's nodes have one"),
                    ));
                }
            }
            if l == r {
                return Err(bad(
                    "children_left",
                    format!("node {i} has the same node {l} as both children"),
                ));
            }
            let f = self.feature[i] as usize;
            if f >= n {
                return Err(bad(
                    "feature",
                    format!("node {i} splits on feature {f}, but the input has {n} features"),
                ));
            }
            if self.threshold[i].is_nan() {
                return Err(bad(
                    "threshold",
                    format!("node {i} has a NaN threshold, which scikit-learn's fit never makes"),
                ));
            }
        }
        Ok(())
    }
}

/// numpy's sum of a contiguous row (`np.add.reduce` along the last axis):
/// a plain loop below 8 values, 8 interleaved accumulators up to 128, and
/// halves beyond, so that probability normalisation rounds as numpy does.
pub(crate) fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = -0.0;
        for &x in a {
            res += x;
        }
        return res;
    }
    if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        return res;
    }
    let mut n2 = n / 2;
    n2 -= n2 % 8;
    numpy_sum(&a[..n2]) + numpy_sum(&a[n2..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stump() -> Tree {
        Tree {
            left: vec![1, -1, -1],
            right: vec![2, -1, -1],
            feature: vec![0, 0, 0],
            threshold: vec![0.1, -2.0, -2.0],
            missing_left: vec![true, false, false],
            value: vec![0.0, 1.0, 2.0],
            n_values: 1,
        }
    }

    #[test]
    fn the_walk_compares_the_float32_value() {
        let t = stump();
        // 0.1 as f32 is 0.100000001490116..., above the f64 threshold 0.1.
        assert_eq!(t.leaf(&[0.1]), 2);
        assert_eq!(t.leaf(&[0.099_999_999]), 2);
        assert_eq!(t.leaf(&[0.099_999]), 1);
        assert_eq!(t.leaf(&[f64::NAN]), 1);
        assert_eq!(t.leaf(&[1e300]), 2);
        assert_eq!(t.leaf(&[-1e300]), 1);
    }

    #[test]
    fn intervals_agree_with_the_walk() {
        // Thresholds out of order below the root too: the intervals are
        // intersections, so an unreachable leaf gets none.
        let t = Tree {
            left: vec![1, 3, -1, -1, -1],
            right: vec![2, 4, -1, -1, -1],
            feature: vec![0; 5],
            threshold: vec![0.5, 2.0, 0.0, 0.0, 0.0],
            missing_left: vec![false; 5],
            value: vec![0.0, 0.0, 3.0, 1.0, 2.0],
            n_values: 1,
        };
        let mut xs: Vec<f64> = [
            -f64::INFINITY,
            -1.0,
            0.1,
            0.5,
            0.500_000_1,
            1.0,
            2.0,
            3.0,
            f64::INFINITY,
        ]
        .iter()
        .map(|&x: &f64| f64::from(x as f32))
        .collect();
        xs.sort_by(f64::total_cmp);
        let (mut up, mut lf, mut out) = (Vec::new(), Vec::new(), vec![0; xs.len()]);
        t.leaves_sorted(&xs, &mut up, &mut lf, &mut out);
        for (x, l) in xs.iter().zip(&out) {
            assert_eq!(*l as usize, t.leaf(&[*x]), "{x}");
        }
        // Node 4 (right of node 1, x > 2.0 within x <= 0.5) is unreachable.
        assert!(!lf.contains(&4));
    }

    #[test]
    fn cycles_and_bad_children_are_refused() {
        let mut t = stump();
        t.left[0] = 0;
        let e = t.validate("T", "tree_", 1).unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
        let mut t = stump();
        t.right[0] = 7;
        assert!(t.validate("T", "tree_", 1).is_err());
        let mut t = stump();
        t.right[0] = -1;
        assert!(t.validate("T", "tree_", 1).is_err());
        let mut t = stump();
        t.threshold[0] = f64::NAN;
        assert!(t.validate("T", "tree_", 1).is_err());
        let mut t = stump();
        t.feature[0] = 1;
        assert!(t.validate("T", "tree_", 1).is_err());
        assert!(stump().validate("T", "tree_", 1).is_ok());
    }

    #[test]
    fn numpy_sum_matches_its_blocking() {
        let v: Vec<f64> = (0..300).map(|i| 1.0 / f64::from(i + 1)).collect();
        for n in [0, 1, 5, 8, 9, 20, 128, 129, 300] {
            let s = numpy_sum(&v[..n]);
            let plain: f64 = v[..n].iter().sum();
            assert!((s - plain).abs() <= 1e-12, "{n}");
        }
        assert_eq!(numpy_sum(&[]).to_bits(), (-0.0f64).to_bits());
    }
}
