//! `LocalOutlierFactor(novelty=True)`: the k nearest training points of a
//! row, found by replaying scikit-learn's own KD-tree or ball-tree query
//! (the same nodes in the same order, the same bounded heap, the same
//! introsort), so that ties between equally distant points pick the same
//! neighbours as scikit-learn; then the local reachability density ratio,
//! averaged as numpy averages.

use serde::{Deserialize, Serialize};

use super::tree::numpy_sum;
use super::InvalidModel;

/// The distance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "metric", rename_all = "snake_case", deny_unknown_fields)]
pub enum Metric {
    /// `euclidean` (`minkowski` with p = 2).
    Euclidean,
    /// `manhattan` (`minkowski` with p = 1).
    Manhattan,
    /// `chebyshev` (`minkowski` with p = inf).
    Chebyshev,
    /// `minkowski` with another p.
    Minkowski {
        /// The power.
        p: f64,
    },
}

impl Metric {
    /// scikit-learn's `p` of the metric.
    fn p(self) -> f64 {
        match self {
            Metric::Euclidean => 2.0,
            Metric::Manhattan => 1.0,
            Metric::Chebyshev => f64::INFINITY,
            Metric::Minkowski { p } => p,
        }
    }

    /// The reduced distance (`rdist`): squared for euclidean, the sum of
    /// powers for minkowski.
    #[inline]
    fn rdist(self, x: &[f64], y: &[f64]) -> f64 {
        let mut d = 0.0;
        match self {
            Metric::Euclidean => {
                for (a, b) in x.iter().zip(y) {
                    let t = a - b;
                    d += t * t;
                }
            }
            Metric::Manhattan => {
                for (a, b) in x.iter().zip(y) {
                    d += (a - b).abs();
                }
            }
            Metric::Chebyshev => {
                for (a, b) in x.iter().zip(y) {
                    d = f64::max(d, (a - b).abs());
                }
            }
            Metric::Minkowski { p } => {
                for (a, b) in x.iter().zip(y) {
                    d += (a - b).abs().powf(p);
                }
            }
        }
        d
    }

    #[inline]
    fn rdist_to_dist(self, r: f64) -> f64 {
        match self {
            Metric::Euclidean => r.sqrt(),
            Metric::Manhattan | Metric::Chebyshev => r,
            Metric::Minkowski { p } => r.powf(1.0 / p),
        }
    }

    #[inline]
    fn dist_to_rdist(self, d: f64) -> f64 {
        match self {
            Metric::Euclidean => d * d,
            Metric::Manhattan | Metric::Chebyshev => d,
            Metric::Minkowski { p } => d.powf(p),
        }
    }

    /// The distance as the ball tree computes it (`tree.dist`).
    #[inline]
    fn dist(self, x: &[f64], y: &[f64]) -> f64 {
        self.rdist_to_dist(self.rdist(x, y))
    }
}

/// How the neighbours are searched, as fitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "index", rename_all = "snake_case", deny_unknown_fields)]
pub enum NeighborIndex {
    /// A `KDTree`: per node, the box `lo..hi` (n_nodes × d each).
    KdTree {
        /// Lower corner per node.
        #[serde(with = "super::floats")]
        lo: Vec<f64>,
        /// Upper corner per node.
        #[serde(with = "super::floats")]
        hi: Vec<f64>,
    },
    /// A `BallTree`: per node, a centroid (n_nodes × d) and a radius.
    BallTree {
        /// Centroid per node.
        centroid: Vec<f64>,
        /// Radius per node.
        radius: Vec<f64>,
    },
}

/// A fitted `LocalOutlierFactor(novelty=True)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalOutlierFactor {
    /// The training points (the tree's `data`), n_fit × d.
    pub fit_x: Vec<f64>,
    /// `n_neighbors_`.
    pub k: usize,
    /// The distance.
    pub metric: Metric,
    /// The tree.
    pub index: NeighborIndex,
    /// The tree's `idx_array`: a permutation of the training points.
    pub idx_array: Vec<u32>,
    /// Per node: its first position in `idx_array`.
    pub node_start: Vec<u32>,
    /// Per node: one past its last position.
    pub node_end: Vec<u32>,
    /// Per node: whether it is a leaf.
    pub node_leaf: Vec<bool>,
    /// `_distances_fit_X_[:, k - 1]`: each training point's k-distance.
    pub k_distance: Vec<f64>,
    /// `_lrd`: each training point's local reachability density.
    pub lrd: Vec<f64>,
    /// `offset_`.
    pub offset: f64,
}

/// scikit-learn's `NeighborsHeap._push` for one row: a max-heap of `k`
/// values whose root is the largest; a value not below the root is
/// ignored, so the first of equal distances stays.
fn heap_push(vals: &mut [f64], idx: &mut [u32], val: f64, i_val: u32) {
    let size = vals.len();
    if val >= vals[0] {
        return;
    }
    vals[0] = val;
    idx[0] = i_val;
    let mut cur = 0;
    loop {
        let l = 2 * cur + 1;
        let r = l + 1;
        let swap = if l >= size {
            break;
        } else if r >= size || vals[l] >= vals[r] {
            if val < vals[l] {
                l
            } else {
                break;
            }
        } else if val < vals[r] {
            r
        } else {
            break;
        };
        vals[cur] = vals[swap];
        idx[cur] = idx[swap];
        cur = swap;
    }
    vals[cur] = val;
    idx[cur] = i_val;
}

/// `sklearn.utils._sorting.simultaneous_sort` (2-way introsort), so that
/// tied distances end in scikit-learn's order.
fn simultaneous_sort(v: &mut [f64], ix: &mut [u32]) {
    let n = v.len();
    if n == 0 {
        return;
    }
    let maxd = 2 * (n as f64).log2() as i64;
    introsort(v, ix, maxd);
}

fn introsort(mut v: &mut [f64], mut ix: &mut [u32], mut maxd: i64) {
    while v.len() > 15 {
        let n = v.len();
        if maxd <= 0 {
            heapsort(v, ix);
            return;
        }
        maxd -= 1;
        // inplace_median3
        let p = n / 2;
        if v[0] > v[n - 1] {
            v.swap(0, n - 1);
            ix.swap(0, n - 1);
        }
        if v[n - 1] > v[p] {
            v.swap(n - 1, p);
            ix.swap(n - 1, p);
            if v[0] > v[n - 1] {
                v.swap(0, n - 1);
                ix.swap(0, n - 1);
            }
        }
        let pivot = v[n - 1];
        let (mut i, mut j) = (1usize, n - 2);
        loop {
            while i <= j && v[i] < pivot {
                i += 1;
            }
            while i <= j && v[j] > pivot {
                if j == 0 {
                    break;
                }
                j -= 1;
            }
            if i >= j {
                break;
            }
            v.swap(i, j);
            ix.swap(i, j);
            i += 1;
            j -= 1;
        }
        let pi = i;
        v.swap(pi, n - 1);
        ix.swap(pi, n - 1);
        let (lv, rv) = std::mem::take(&mut v).split_at_mut(pi);
        let (li, ri) = std::mem::take(&mut ix).split_at_mut(pi);
        introsort(lv, li, maxd);
        v = &mut rv[1..];
        ix = &mut ri[1..];
    }
    // insertion sort
    for i in 1..v.len() {
        let (tv, ti) = (v[i], ix[i]);
        let mut j = i;
        while j > 0 && v[j - 1] > tv {
            v[j] = v[j - 1];
            ix[j] = ix[j - 1];
            j -= 1;
        }
        v[j] = tv;
        ix[j] = ti;
    }
}

fn heapsort(v: &mut [f64], ix: &mut [u32]) {
    let n = v.len();
    if n < 2 {
        return;
    }
    let mut start = (n - 2) / 2;
    loop {
        sift_down(v, ix, start, n);
        if start == 0 {
            break;
        }
        start -= 1;
    }
    let mut end = n - 1;
    while end > 0 {
        v.swap(0, end);
        ix.swap(0, end);
        sift_down(v, ix, 0, end);
        end -= 1;
    }
}

fn sift_down(v: &mut [f64], ix: &mut [u32], start: usize, end: usize) {
    let mut root = start;
    loop {
        let child = root * 2 + 1;
        let mut maxind = root;
        if child < end && v[maxind] < v[child] {
            maxind = child;
        }
        if child + 1 < end && v[maxind] < v[child + 1] {
            maxind = child + 1;
        }
        if maxind == root {
            break;
        }
        v.swap(root, maxind);
        ix.swap(root, maxind);
        root = maxind;
    }
}

/// Deepest tree walked; a fitted tree of n points has about log2(n /
/// leaf_size) levels.
const MAX_LEVELS: usize = 48;

impl LocalOutlierFactor {
    /// Training points.
    pub fn n_fit(&self) -> usize {
        self.lrd.len()
    }

    /// Tree nodes.
    pub fn n_nodes(&self) -> usize {
        self.node_start.len()
    }

    /// A short description with its sizes.
    pub fn describe(&self) -> String {
        format!(
            "LocalOutlierFactor(novelty=True, {} neighbours of {} training points, {}, {})",
            self.k,
            self.n_fit(),
            match self.metric {
                Metric::Euclidean => "euclidean".to_string(),
                Metric::Manhattan => "manhattan".to_string(),
                Metric::Chebyshev => "chebyshev".to_string(),
                Metric::Minkowski { p } => format!("minkowski p={p}"),
            },
            match self.index {
                NeighborIndex::KdTree { .. } => "KD tree",
                NeighborIndex::BallTree { .. } => "ball tree",
            }
        )
    }

    /// Checks the model for rows of `d` features.
    pub fn validate(&self, d: usize) -> Result<(), InvalidModel> {
        const EST: &str = "LocalOutlierFactor";
        let bad = |attr: &str, why: String| Err(InvalidModel::new(EST, attr, why));
        let n = self.n_fit();
        if n == 0 || self.fit_x.len() != n.saturating_mul(d) {
            return bad(
                "_fit_X",
                format!(
                    "holds {} values for {n} points of {d} features",
                    self.fit_x.len()
                ),
            );
        }
        if self.k == 0 || self.k > n {
            return bad(
                "n_neighbors_",
                format!("is {}, but there are {n} training points", self.k),
            );
        }
        if self.k_distance.len() != n {
            return bad(
                "_distances_fit_X_",
                format!("has {} rows for {n} points", self.k_distance.len()),
            );
        }
        for (attr, v) in [
            ("_fit_X", &self.fit_x),
            ("_distances_fit_X_", &self.k_distance),
            ("_lrd", &self.lrd),
        ] {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return bad(attr, format!("[{i}] is {}, not finite", v[i]));
            }
        }
        if !self.offset.is_finite() {
            return bad("offset_", format!("is {}", self.offset));
        }
        if let Metric::Minkowski { p } = self.metric {
            if !(p.is_finite() && p >= 1.0) {
                return bad(
                    "effective_metric_params_",
                    format!("p is {p}; minkowski needs p >= 1"),
                );
            }
        }
        // idx_array is a permutation of the training points.
        if self.idx_array.len() != n {
            return bad(
                "_tree.idx_array",
                format!("has {} entries for {n} points", self.idx_array.len()),
            );
        }
        let mut seen = vec![false; n];
        for &i in &self.idx_array {
            match seen.get_mut(i as usize) {
                Some(s) if !*s => *s = true,
                _ => {
                    return bad(
                        "_tree.idx_array",
                        format!("is not a permutation of the {n} points ({i})"),
                    )
                }
            }
        }
        let nodes = self.n_nodes();
        // A complete binary tree of 2^levels - 1 nodes.
        if nodes == 0
            || !(nodes + 1).is_power_of_two()
            || (nodes + 1).trailing_zeros() as usize > MAX_LEVELS
        {
            return bad(
                "_tree.node_data",
                format!("has {nodes} nodes, not 2^levels - 1"),
            );
        }
        if self.node_end.len() != nodes || self.node_leaf.len() != nodes {
            return bad("_tree.node_data", "fields differ in length".into());
        }
        for i in 0..nodes {
            let (s, e) = (self.node_start[i] as usize, self.node_end[i] as usize);
            if s > e || e > n {
                return bad(
                    "_tree.node_data",
                    format!("node {i} spans {s}..{e} of {n} points"),
                );
            }
            let children = 2 * i + 2 < nodes;
            if !self.node_leaf[i] && !children {
                return bad(
                    "_tree.node_data",
                    format!("node {i} is not a leaf but has no children"),
                );
            }
            if !self.node_leaf[i] {
                let (a, b) = (2 * i + 1, 2 * i + 2);
                if self.node_start[a] as usize != s
                    || self.node_end[a] != self.node_start[b]
                    || self.node_end[b] as usize != e
                {
                    return bad(
                        "_tree.node_data",
                        format!("node {i}'s children do not split its points"),
                    );
                }
            }
        }
        match &self.index {
            NeighborIndex::KdTree { lo, hi } => {
                if lo.len() != nodes * d || hi.len() != nodes * d {
                    return bad(
                        "_tree.node_bounds",
                        format!("does not hold {nodes} boxes of {d} features"),
                    );
                }
                if lo.iter().chain(hi).any(|x| x.is_nan()) {
                    return bad("_tree.node_bounds", "holds NaN".into());
                }
            }
            NeighborIndex::BallTree { centroid, radius } => {
                if centroid.len() != nodes * d || radius.len() != nodes {
                    return bad(
                        "_tree.node_bounds",
                        format!("does not hold {nodes} balls of {d} features"),
                    );
                }
                if centroid.iter().chain(radius).any(|x| !x.is_finite()) {
                    return bad("_tree.node_bounds", "holds a non-finite value".into());
                }
            }
        }
        Ok(())
    }

    /// scikit-learn's `min_rdist` of node `i` for point `pt`.
    #[inline]
    fn min_rdist(&self, i: usize, pt: &[f64]) -> f64 {
        let d = pt.len();
        match &self.index {
            NeighborIndex::KdTree { lo, hi } => {
                let (lo, hi) = (&lo[i * d..(i + 1) * d], &hi[i * d..(i + 1) * d]);
                let p = self.metric.p();
                let mut rdist = 0.0;
                for j in 0..d {
                    let d_lo = lo[j] - pt[j];
                    let d_hi = pt[j] - hi[j];
                    let dd = (d_lo + d_lo.abs()) + (d_hi + d_hi.abs());
                    if p == f64::INFINITY {
                        rdist = f64::max(rdist, 0.5 * dd);
                    } else {
                        rdist += (0.5 * dd).powf(p);
                    }
                }
                rdist
            }
            NeighborIndex::BallTree { centroid, radius } => {
                let c = &centroid[i * d..(i + 1) * d];
                let dist = self.metric.dist(pt, c);
                self.metric.dist_to_rdist(f64::max(0.0, dist - radius[i]))
            }
        }
    }

    fn query(
        &self,
        i: usize,
        pt: &[f64],
        lb: f64,
        vals: &mut [f64],
        idx: &mut [u32],
        depth: usize,
    ) {
        if lb > vals[0] || depth > MAX_LEVELS {
            return;
        }
        let d = pt.len();
        if self.node_leaf[i] {
            for q in self.node_start[i]..self.node_end[i] {
                let p = self.idx_array[q as usize];
                let x = &self.fit_x[p as usize * d..(p as usize + 1) * d];
                heap_push(vals, idx, self.metric.rdist(pt, x), p);
            }
            return;
        }
        let (i1, i2) = (2 * i + 1, 2 * i + 2);
        let (a, b) = (self.min_rdist(i1, pt), self.min_rdist(i2, pt));
        if a <= b {
            self.query(i1, pt, a, vals, idx, depth + 1);
            self.query(i2, pt, b, vals, idx, depth + 1);
        } else {
            self.query(i2, pt, b, vals, idx, depth + 1);
            self.query(i1, pt, a, vals, idx, depth + 1);
        }
    }

    /// `score_samples` of one row.
    fn score_samples(
        &self,
        pt: &[f64],
        vals: &mut [f64],
        idx: &mut [u32],
        work: &mut [f64],
    ) -> f64 {
        vals.fill(f64::INFINITY);
        idx.fill(0);
        self.query(0, pt, self.min_rdist(0, pt), vals, idx, 0);
        simultaneous_sort(vals, idx);
        let k = self.k as f64;
        // reach = max(dist, k-distance of the neighbour).
        for ((w, v), &i) in work.iter_mut().zip(vals.iter()).zip(idx.iter()) {
            let dist = self.metric.rdist_to_dist(*v);
            *w = f64::max(dist, self.k_distance[i as usize]);
        }
        let lrd = 1.0 / (numpy_sum(work) / k + 1e-10);
        for (w, &i) in work.iter_mut().zip(idx.iter()) {
            *w = self.lrd[i as usize] / lrd;
        }
        -(numpy_sum(work) / k)
    }

    /// Decisions and labels (1 = anomaly) of rows of `d` features;
    /// returns the number of anomalies. NaN rows, which scikit-learn
    /// refuses, score NaN and count as anomalies.
    pub fn evaluate(&self, xs: &[f64], d: usize, score: &mut [f64], label: &mut [u32]) -> usize {
        let mut vals = vec![0.0; self.k];
        let mut idx = vec![0u32; self.k];
        let mut work = vec![0.0; self.k];
        let mut anomalies = 0;
        for ((x, s), l) in xs
            .chunks_exact(d)
            .zip(score.iter_mut())
            .zip(label.iter_mut())
        {
            *s = if x.iter().any(|v| !v.is_finite()) {
                f64::NAN
            } else {
                self.score_samples(x, &mut vals, &mut idx, &mut work) - self.offset
            };
            // scikit-learn: -1 where decision < 0.
            let a = *s < 0.0 || s.is_nan();
            *l = u32::from(a);
            anomalies += usize::from(a);
        }
        anomalies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sort_orders_values_and_keeps_pairs() {
        let mut v: Vec<f64> = (0..40).map(|i| f64::from((i * 7919) % 13)).collect();
        let mut ix: Vec<u32> = (0..40).collect();
        let orig = v.clone();
        simultaneous_sort(&mut v, &mut ix);
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
        for (val, i) in v.iter().zip(&ix) {
            assert_eq!(*val, orig[*i as usize]);
        }
        // The heapsort path.
        let mut v: Vec<f64> = (0..100).rev().map(f64::from).collect();
        let mut ix: Vec<u32> = (0..100).collect();
        heapsort(&mut v, &mut ix);
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn the_heap_keeps_the_first_of_equal_distances() {
        let (mut v, mut ix) = (vec![f64::INFINITY; 2], vec![0u32; 2]);
        for (d, i) in [(1.0, 5), (1.0, 6), (0.5, 7), (1.0, 8)] {
            heap_push(&mut v, &mut ix, d, i);
        }
        simultaneous_sort(&mut v, &mut ix);
        assert_eq!((v, ix), (vec![0.5, 1.0], vec![7, 5]));
    }
}
