//! Training IsolationForests in Rust, with scikit-learn's algorithm.
//!
//! `sklearn.ensemble.IsolationForest.fit` grows `n_estimators`
//! `ExtraTreeRegressor(max_features=1, splitter="random")` trees on random
//! target values, each on its own subsample, and this module grows the same
//! kind of tree:
//!
//! * **Input**: the rows are cast to float32 first (`validate_data(dtype=
//!   np.float32)`), as at prediction, so the thresholds drawn between the
//!   cast values split the training rows exactly as [`Tree::leaf`] (which
//!   compares `f32(x) <= threshold`) later routes them.
//! * **Subsample**: `max_samples` rows drawn without replacement
//!   (`bootstrap=False`), `min(256, n)` for `'auto'`, each tree its own.
//! * **Depth limit**: `max_depth = ceil(log2(max(max_samples, 2)))`; a
//!   node is a leaf at that depth, with fewer than 2 rows, or when every
//!   feature is constant in it (`max - min <= 1e-7`, scikit-learn's
//!   `FEATURE_THRESHOLD`).
//! * **Split** (`RandomSplitter.node_split` with `max_features=1`): a
//!   feature drawn uniformly among those not constant in the node, and a
//!   threshold drawn uniformly in `[min, max)` of its values there as
//!   `(max - min) * u + min` (`rand_uniform`), replaced by `min` if it
//!   lands on `max`, so that both sides hold a row; `x <= threshold` goes
//!   left. Nodes are numbered depth first, left child first, as
//!   `DepthFirstTreeBuilder` numbers them; `missing_go_to_left` is set as
//!   scikit-learn sets it for training data without NaN (to the larger
//!   side).
//! * **Node values**: what the importer stores for a scikit-learn 1.3+
//!   forest, `(depth + 1 + c(n_node_samples)) - 1` with the root at depth
//!   0 (`_decision_path_lengths + _average_path_length_per_tree - 1`), and
//!   `c` scikit-learn's `_average_path_length`.
//! * **Score**: `IfRule::Sum` with `denominator = n_trees *
//!   c(max_samples)`; `offset_` is -0.5 for `contamination='auto'`, else
//!   numpy's (linear) `percentile` of the training rows' `score_samples` at
//!   `100 * contamination`, so that about that fraction of the training
//!   rows is flagged.
//!
//! The random numbers are this crate's own (deterministic for a seed), not
//! numpy's Mersenne Twister: a forest trained here is a forest
//! scikit-learn could have grown, not the one it grows for the same
//! `random_state`. What is fitted is a plain [`IsolationForest`], held,
//! scored and stored as an imported one is (a one-feature forest compiled
//! to step functions, [`IsolationForest::compile_one_feature`]). NaN inputs are refused in training
//! and, as in scikit-learn before 1.3, score NaN (an anomaly) when scored
//! (`allow_nan: false`).

use crate::model::{Estimator, IfRule, IsolationForest, Model, Tree};
use crate::train::TrainError;

/// scikit-learn's `FEATURE_THRESHOLD`: a feature whose values in a node
/// span no more than this is constant there.
const FEATURE_THRESHOLD: f64 = 1e-7;

/// How many rows each tree is grown on (scikit-learn's `max_samples`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum MaxSamples {
    /// `'auto'`: `min(256, n_samples)`.
    #[default]
    Auto,
    /// A number of rows; more than there are means all of them (as
    /// scikit-learn does, with a warning).
    Count(usize),
    /// A fraction of the rows, in (0, 1]: `int(fraction * n_samples)`.
    Fraction(f64),
}

/// scikit-learn's `contamination`: where `offset_` is put.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Contamination {
    /// `'auto'`: `offset_ = -0.5`, the original paper's threshold.
    #[default]
    Auto,
    /// The expected fraction of outliers in the training rows, in (0, 0.5]:
    /// `offset_` is that percentile of the training scores.
    Fraction(f64),
}

/// Hyper-parameters of `IsolationForest`, with scikit-learn's defaults
/// (and seed 0).
#[derive(Debug, Clone, PartialEq)]
pub struct IForestParams {
    /// Number of trees (default 100).
    pub n_estimators: usize,
    /// Rows per tree (default `'auto'`).
    pub max_samples: MaxSamples,
    /// Where the decision threshold is put (default `'auto'`).
    pub contamination: Contamination,
    /// Seed of the subsamples, features and thresholds: the same seed and
    /// rows give the same forest.
    pub seed: u64,
}

impl Default for IForestParams {
    fn default() -> Self {
        IForestParams {
            n_estimators: 100,
            max_samples: MaxSamples::Auto,
            contamination: Contamination::Auto,
            seed: 0,
        }
    }
}

/// Facts about one fit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IForestFit {
    /// Rows trained on.
    pub n_samples: usize,
    /// Rows per tree (scikit-learn's `max_samples_`).
    pub max_samples: usize,
    /// The depth limit, `ceil(log2(max_samples))`.
    pub max_depth: usize,
    /// scikit-learn's `offset_`.
    pub offset: f64,
    /// Nodes over all trees.
    pub n_nodes: usize,
    /// Training rows the fitted forest calls anomalies.
    pub training_anomalies: usize,
}

/// scikit-learn's `_average_path_length` (0.21 and later), as the reader
/// computes it for imported forests.
pub use crate::sklearn::average_path_length;

/// numpy's `percentile(a, q)` with the default `'linear'` method; `a`
/// need not be sorted, and holds no NaN.
pub fn numpy_percentile(a: &[f64], q: f64) -> f64 {
    let mut s = a.to_vec();
    s.sort_unstable_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    // `np.true_divide(q, 100)`, then the virtual index `(n - 1) * q`.
    let virtual_index = (n - 1) as f64 * (q / 100.0);
    if virtual_index >= (n - 1) as f64 {
        return s[n - 1];
    }
    if virtual_index < 0.0 {
        return s[0];
    }
    let prev = virtual_index.floor();
    let (a, b) = (s[prev as usize], s[prev as usize + 1]);
    let t = virtual_index - prev;
    // numpy's `_lerp`: from the nearer end.
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// splitmix64: small, fast, and deterministic for a seed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n), n > 0 (Lemire's multiply-shift; the bias is
    /// below 2^-32 for the sizes used here).
    fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

/// Fits an `IsolationForest` to `rows` (row-major, `n_features` per row)
/// as scikit-learn's `fit` does (see the [module docs](self)), and returns
/// it as a [`Model`] with no preprocessing steps.
pub fn train_iforest(
    rows: &[f64],
    n_features: usize,
    params: &IForestParams,
) -> Result<(Model, IForestFit), TrainError> {
    if n_features == 0 || !rows.len().is_multiple_of(n_features) {
        return Err(TrainError::Ragged {
            values: rows.len(),
            width: n_features,
        });
    }
    if rows.is_empty() {
        return Err(TrainError::Empty);
    }
    if let Some(index) = rows.iter().position(|v| !v.is_finite()) {
        return Err(TrainError::NonFinite {
            index,
            value: rows[index],
        });
    }
    let n = rows.len() / n_features;
    if params.n_estimators == 0 {
        return Err(TrainError::Param(
            "n_estimators is 0; a forest needs at least one tree".into(),
        ));
    }
    let max_samples = match params.max_samples {
        MaxSamples::Auto => n.min(256),
        MaxSamples::Count(0) => {
            return Err(TrainError::Param(
                "max_samples is 0; each tree needs at least one row".into(),
            ))
        }
        MaxSamples::Count(m) => m.min(n),
        MaxSamples::Fraction(f) => {
            if !(f > 0.0 && f <= 1.0) {
                return Err(TrainError::Param(format!(
                    "max_samples is {f}; a fraction must be in (0, 1]"
                )));
            }
            let m = (f * n as f64) as usize;
            if m == 0 {
                return Err(TrainError::Param(format!(
                    "max_samples {f} of {n} rows is 0 rows; use a larger fraction"
                )));
            }
            m
        }
    };
    if let Contamination::Fraction(c) = params.contamination {
        if !(c > 0.0 && c <= 0.5) {
            return Err(TrainError::Param(format!(
                "contamination is {c}; it must be in (0, 0.5] (or 'auto')"
            )));
        }
    }
    // `ceil(log2(max(max_samples, 2)))`, in integers.
    let max_depth = (usize::BITS - (max_samples.max(2) - 1).leading_zeros()) as usize;

    // The rows as scikit-learn trains on them: cast to float32.
    let x: Vec<f64> = rows.iter().map(|&v| f64::from(v as f32)).collect();
    let mut rng = Rng(params.seed);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut trees = Vec::with_capacity(params.n_estimators);
    let mut grower = Grower {
        x: &x,
        n_features,
        max_depth,
        candidates: Vec::with_capacity(n_features),
    };
    for _ in 0..params.n_estimators {
        // A partial Fisher-Yates shuffle of the previous order draws a
        // uniform sample without replacement in O(max_samples).
        for i in 0..max_samples {
            let j = i + rng.below(n - i);
            order.swap(i, j);
        }
        let mut samples = order[..max_samples].to_vec();
        trees.push(grower.grow(&mut samples, &mut rng));
    }
    let n_nodes = trees.iter().map(Tree::len).sum();
    let n_trees = trees.len() as f64;
    let mut forest = IsolationForest {
        trees,
        compiled: None,
        rule: IfRule::Sum {
            denominator: n_trees * average_path_length(max_samples as f64),
            guard: true,
        },
        offset: 0.0,
        threshold: 0.0,
        allow_nan: false,
    };
    // `score_samples` of the training rows: the decision with offset 0
    // (no score is within 2 ulps of 0, so none is snapped).
    let mut scores = vec![0.0; n];
    let mut labels = vec![0u32; n];
    forest.evaluate(rows, n_features, &mut scores, &mut labels);
    let offset = match params.contamination {
        Contamination::Auto => -0.5,
        Contamination::Fraction(c) => numpy_percentile(&scores, 100.0 * c),
    };
    forest.offset = offset;
    // As `predict` labels them: a decision below 0.
    let training_anomalies = scores
        .iter()
        .filter(|&&s| forest.decision(s) < forest.threshold)
        .count();
    let model = Model {
        n_features,
        steps: Vec::new(),
        // Held as the importer holds a scikit-learn forest: a one-feature
        // forest as step functions.
        estimator: Estimator::IsolationForest(forest.compile_one_feature(n_features)),
    };
    // The same checks as every imported model: an inconsistent fit is a
    // bug here, reported rather than stored.
    model
        .validate()
        .map_err(|e| TrainError::Param(e.to_string()))?;
    Ok((
        model,
        IForestFit {
            n_samples: n,
            max_samples,
            max_depth,
            offset,
            n_nodes,
            training_anomalies,
        },
    ))
}

/// Grows isolation trees on the float32-cast rows.
struct Grower<'a> {
    x: &'a [f64],
    n_features: usize,
    max_depth: usize,
    candidates: Vec<usize>,
}

/// A node waiting to be built: its rows `samples[start..end]`, its depth,
/// and its parent (`-1` for the root) and side.
struct Pending {
    start: usize,
    end: usize,
    depth: usize,
    parent: i32,
    left: bool,
}

impl Grower<'_> {
    /// The smallest and largest value of feature `f` over `rows`.
    fn min_max(&self, rows: &[u32], f: usize) -> (f64, f64) {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for &r in rows {
            let v = self.x[r as usize * self.n_features + f];
            lo = lo.min(v);
            hi = hi.max(v);
        }
        (lo, hi)
    }

    /// One isolation tree on `samples` (row numbers), depth first and left
    /// first, as scikit-learn's `DepthFirstTreeBuilder` numbers nodes.
    fn grow(&mut self, samples: &mut [u32], rng: &mut Rng) -> Tree {
        let nf = self.n_features;
        let mut t = Tree {
            left: Vec::new(),
            right: Vec::new(),
            feature: Vec::new(),
            threshold: Vec::new(),
            missing_left: Vec::new(),
            value: Vec::new(),
            n_values: 1,
        };
        let mut stack = vec![Pending {
            start: 0,
            end: samples.len(),
            depth: 0,
            parent: -1,
            left: false,
        }];
        while let Some(p) = stack.pop() {
            let id = t.left.len() as i32;
            if p.parent >= 0 {
                let slot = if p.left { &mut t.left } else { &mut t.right };
                slot[p.parent as usize] = id;
            }
            let count = p.end - p.start;
            // `_decision_path_lengths` counts the root as 1.
            t.value
                .push(((p.depth + 1) as f64 + average_path_length(count as f64)) - 1.0);
            // A leaf as scikit-learn stores it (feature 0 here for the
            // TREE_UNDEFINED -2 it stores), until a split is found.
            t.left.push(-1);
            t.right.push(-1);
            t.feature.push(0);
            t.threshold.push(-2.0);
            t.missing_left.push(false);
            if p.depth >= self.max_depth || count < 2 {
                continue;
            }
            let rows = &mut samples[p.start..p.end];
            // A feature drawn uniformly among those not constant here.
            self.candidates.clear();
            self.candidates.extend(0..nf);
            let mut split = None;
            while !self.candidates.is_empty() {
                let f = self
                    .candidates
                    .swap_remove(rng.below(self.candidates.len()));
                let (lo, hi) = self.min_max(rows, f);
                if hi <= lo + FEATURE_THRESHOLD {
                    continue;
                }
                let mut th = (hi - lo) * rng.uniform() + lo;
                if th >= hi {
                    th = lo;
                }
                split = Some((f, th));
                break;
            }
            let Some((f, th)) = split else {
                continue;
            };
            // Partition: `x <= th` first.
            let mut pos = 0;
            for i in 0..rows.len() {
                if self.x[rows[i] as usize * nf + f] <= th {
                    rows.swap(i, pos);
                    pos += 1;
                }
            }
            let i = id as usize;
            t.feature[i] = f as u32;
            t.threshold[i] = th;
            t.missing_left[i] = pos > count - pos;
            stack.push(Pending {
                start: p.start + pos,
                end: p.end,
                depth: p.depth + 1,
                parent: id,
                left: false,
            });
            stack.push(Pending {
                start: p.start,
                end: p.start + pos,
                depth: p.depth + 1,
                parent: id,
                left: true,
            });
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Normal-ish values from a seeded generator (Box-Muller).
    fn normals(seed: u64, n: usize) -> Vec<f64> {
        let mut r = Rng(seed);
        (0..n)
            .map(|_| {
                let u1 = r.uniform().max(f64::MIN_POSITIVE);
                let u2 = r.uniform();
                (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            })
            .collect()
    }

    fn forest(m: &Model) -> &IsolationForest {
        match &m.estimator {
            Estimator::IsolationForest(f) => f,
            _ => panic!("not a forest"),
        }
    }

    #[test]
    fn average_path_length_is_scikit_learns() {
        assert_eq!(average_path_length(0.0), 0.0);
        assert_eq!(average_path_length(1.0), 0.0);
        assert_eq!(average_path_length(2.0), 1.0);
        // scikit-learn 1.9.1: _average_path_length([256]) and ([3]).
        assert_eq!(average_path_length(256.0), 10.244_770_920_119_917);
        assert_eq!(
            average_path_length(3.0),
            2.0 * (2f64.ln() + 0.577_215_664_901_532_9) - 2.0 * 2.0 / 3.0
        );
    }

    #[test]
    fn percentile_is_numpys_linear_one() {
        // np.percentile([3, 1, 2, 4], q) for these q.
        let a = [3.0, 1.0, 2.0, 4.0];
        assert_eq!(numpy_percentile(&a, 0.0), 1.0);
        assert_eq!(numpy_percentile(&a, 100.0), 4.0);
        assert_eq!(numpy_percentile(&a, 50.0), 2.5);
        assert_eq!(numpy_percentile(&a, 10.0), 1.3);
        assert_eq!(numpy_percentile(&a, 90.0), 3.7);
        assert_eq!(numpy_percentile(&[5.0], 30.0), 5.0);
    }

    #[test]
    fn trained_forests_validate_and_have_scikit_learns_shape() {
        let x = normals(1, 3 * 500);
        let (m, fit) = train_iforest(&x, 3, &IForestParams::default()).unwrap();
        m.validate().unwrap();
        let f = forest(&m);
        assert_eq!(f.trees.len(), 100);
        assert_eq!(
            (fit.n_samples, fit.max_samples, fit.max_depth),
            (500, 256, 8)
        );
        assert_eq!(f.offset, -0.5);
        assert_eq!(f.threshold, 0.0);
        assert!(!f.allow_nan);
        assert_eq!(
            f.rule,
            IfRule::Sum {
                denominator: 100.0 * average_path_length(256.0),
                guard: true
            }
        );
        for t in &f.trees {
            assert!(t.depth() <= 8);
            // The root holds all 256 rows at depth 0.
            assert_eq!(t.value[0], (1.0 + average_path_length(256.0)) - 1.0);
            // Every feature gets split on somewhere in the forest.
            assert!(t.feature.iter().all(|&f| f < 3));
        }
        for k in 0..3 {
            assert!(f
                .trees
                .iter()
                .any(|t| (0..t.len()).any(|i| !t.is_leaf(i) && t.feature[i] == k)));
        }
        // Round trip through the native format.
        let json = crate::format::to_json(&m);
        assert_eq!(crate::format::from_json(&json).unwrap(), m);
        // One feature: held as step functions, as imported forests are.
        let (m, _) = train_iforest(&x[..500], 1, &IForestParams::default()).unwrap();
        m.validate().unwrap();
        let f = forest(&m);
        assert!(f.compiled.is_some() && f.trees.is_empty());
        assert_eq!(f.n_trees(), 100);
    }

    /// The registry stores every version as `model.fsm` and reads it back
    /// (`models show`, pack rebuilds): a one-feature forest, whose step
    /// functions end at `+inf`, must survive the JSON.
    #[test]
    fn a_one_feature_forest_round_trips_through_model_fsm() {
        let x = normals(12, 500);
        let (m, _) = train_iforest(&x, 1, &IForestParams::default()).unwrap();
        let json = crate::format::to_json(&m);
        assert_eq!(crate::format::from_json(&json).unwrap(), m);
    }

    /// Each leaf's value encodes the rows the builder put there; walking
    /// the training rows with [`Tree::leaf`] (which casts to f32) must put
    /// the same number there, even for values f32 cannot hold exactly.
    /// (A constant second column keeps the forest in trees.)
    #[test]
    fn the_walk_routes_training_rows_as_the_builder_split_them() {
        let x: Vec<f64> = (0..300)
            .flat_map(|i| [0.1 * f64::from(i % 97) + 1e-9 * f64::from(i), 1.0])
            .collect();
        let params = IForestParams {
            n_estimators: 20,
            max_samples: MaxSamples::Count(300),
            seed: 7,
            ..IForestParams::default()
        };
        let (m, _) = train_iforest(&x, 2, &params).unwrap();
        assert_eq!(forest(&m).trees.len(), 20);
        for t in &forest(&m).trees {
            let mut counts = vec![0usize; t.len()];
            for row in x.chunks_exact(2) {
                counts[t.leaf(row)] += 1;
            }
            let depth = t.node_depths();
            for i in (0..t.len()).filter(|&i| t.is_leaf(i)) {
                let want = ((depth[i] + 1) as f64 + average_path_length(counts[i] as f64)) - 1.0;
                assert_eq!(t.value[i], want, "leaf {i} with {} rows", counts[i]);
                assert!(counts[i] > 0, "leaf {i} is empty");
            }
        }
    }

    #[test]
    fn outliers_score_lower_than_inliers() {
        let mut x = normals(2, 2 * 400);
        // Four far points.
        x.extend([8.0, 8.0, -7.0, 9.0, 0.0, 10.0, -9.0, -9.0]);
        let params = IForestParams {
            contamination: Contamination::Fraction(0.01),
            seed: 3,
            ..IForestParams::default()
        };
        let (m, fit) = train_iforest(&x, 2, &params).unwrap();
        let mut d = Vec::new();
        m.decision_function(&x, 2, &mut d).unwrap();
        let labels = m.predict(&x, 2).unwrap();
        let worst_outlier = d[400..].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut inliers = d[..400].to_vec();
        inliers.sort_by(f64::total_cmp);
        assert!(
            worst_outlier < inliers[200],
            "{worst_outlier} vs median {}",
            inliers[200]
        );
        assert!(
            labels[400..].iter().all(|&l| l == -1),
            "{:?}",
            &labels[400..]
        );
        // About 1% of 404 training rows.
        assert!((3..=6).contains(&fit.training_anomalies), "{fit:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_forest() {
        let x = normals(4, 600);
        let p = |seed| IForestParams {
            seed,
            contamination: Contamination::Fraction(0.05),
            ..IForestParams::default()
        };
        let (a, _) = train_iforest(&x, 1, &p(9)).unwrap();
        let (b, _) = train_iforest(&x, 1, &p(9)).unwrap();
        let (c, _) = train_iforest(&x, 1, &p(10)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_forest_on_normal_data_flags_about_contamination_of_fresh_data() {
        let train = normals(5, 5000);
        let fresh = normals(6, 50_000);
        for c in [0.01, 0.05] {
            let params = IForestParams {
                contamination: Contamination::Fraction(c),
                seed: 11,
                ..IForestParams::default()
            };
            let (m, fit) = train_iforest(&train, 1, &params).unwrap();
            let share = |rows: &[f64]| {
                let l = m.predict(rows, 1).unwrap();
                l.iter().filter(|&&l| l == -1).count() as f64 / l.len() as f64
            };
            let (on_train, on_fresh) = (share(&train), share(&fresh));
            assert!(
                (on_train - c).abs() <= 0.2 * c,
                "{c}: training {on_train} ({fit:?})"
            );
            assert!(
                (on_fresh - c).abs() <= 0.35 * c,
                "{c}: fresh {on_fresh} ({fit:?})"
            );
        }
    }

    #[test]
    fn constant_data_gives_single_leaf_trees() {
        let x = vec![2.5; 50];
        let (m, fit) = train_iforest(&x, 1, &IForestParams::default()).unwrap();
        assert_eq!((forest(&m).n_trees(), fit.n_nodes), (100, 100));
        // Every row alike: none is an outlier ('auto' puts offset at -0.5
        // and every score is -2^-1 = -0.5, a decision of exactly 0).
        assert_eq!(fit.training_anomalies, 0);
    }

    #[test]
    fn bad_parameters_and_rows_are_refused_by_name() {
        let x = normals(8, 10);
        let with = |f: fn(&mut IForestParams)| {
            let mut p = IForestParams::default();
            f(&mut p);
            train_iforest(&x, 1, &p).unwrap_err().to_string()
        };
        assert!(with(|p| p.n_estimators = 0).contains("n_estimators"));
        assert!(with(|p| p.max_samples = MaxSamples::Count(0)).contains("max_samples"));
        assert!(with(|p| p.max_samples = MaxSamples::Fraction(1.5)).contains("max_samples"));
        assert!(with(|p| p.max_samples = MaxSamples::Fraction(0.01)).contains("max_samples"));
        assert!(with(|p| p.contamination = Contamination::Fraction(0.7)).contains("contamination"));
        let p = IForestParams::default();
        assert!(matches!(train_iforest(&[], 1, &p), Err(TrainError::Empty)));
        assert!(matches!(
            train_iforest(&[1.0, 2.0, 3.0], 2, &p),
            Err(TrainError::Ragged { .. })
        ));
        assert!(matches!(
            train_iforest(&[1.0, f64::NAN], 1, &p),
            Err(TrainError::NonFinite { index: 1, .. })
        ));
        // More rows asked for than there are: all of them.
        let (_, fit) = train_iforest(
            &x,
            1,
            &IForestParams {
                max_samples: MaxSamples::Count(1000),
                ..IForestParams::default()
            },
        )
        .unwrap();
        assert_eq!(fit.max_samples, 10);
    }
}
