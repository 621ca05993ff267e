//! Native model structs and their exact evaluation.
//!
//! A [`Model`] is a chain of preprocessing [`Step`]s followed by one final
//! [`Estimator`]: an outlier detector, a regressor or a classifier (its
//! [`Kind`]). Evaluation follows scikit-learn (and libsvm) operation by
//! operation, in f64, so that scores agree to the last few ulps (bit for
//! bit where the arithmetic allows it) and labels agree exactly.
//!
//! What one row's evaluation gives ([`Model::evaluate_into`]):
//!
//! | kind | score | label |
//! |---|---|---|
//! | outlier detector | `decision_function` | 1 where `predict` says -1 (anomaly), else 0 |
//! | regressor | `predict` | none ([`NO_LABEL`]) |
//! | classifier | `predict_proba(X).max(axis=1)` | index of `predict` in [`Model::classes`] |
//!
//! Each detector keeps scikit-learn's own rule for a decision of exactly
//! 0.0: libsvm's OneClassSVM calls it an anomaly (`dec > 0` is normal),
//! IsolationForest calls it normal (`decision < 0` is an anomaly).
//!
//! # Validation
//!
//! A model is checked once when it is loaded ([`Model::validate`]), never
//! while scoring. Each estimator's checks sit in its own `validate`, each
//! mirroring what scikit-learn checks before predicting or guarantees after
//! `fit`; every path into a `Model` (pickle import, `model.fsm`, the pack,
//! training) runs them. A tree whose child indices point backwards (a
//! cycle) or out of range is refused there, so a walk down a tree always
//! ends within its node count.

use serde::{Deserialize, Serialize};

mod forest;
mod gb;
mod hgb;
mod linear;
mod lof;
mod steps;
mod steptree;
mod svc;
mod svm;
mod tree;

pub use forest::{ForestClassifier, ForestRegressor, IfRule, IsolationForest, ProbaRule};
pub use gb::{GbLoss, GradientBoosting};
pub use hgb::{CategoricalSplit, HgbEncoder, HgbLink, HgbTree, HistGradientBoosting};
pub use linear::{EllipticEnvelope, LinearModel, LinearOutput, SgdOneClassSvm};
pub use lof::{LocalOutlierFactor, Metric, NeighborIndex};
pub use steps::{Norm, PolyProduct, PowerMethod, QuantileOutput, Step};
pub use steptree::{StepForest, StepTree};
pub use svc::{Svc, Svr};
pub use svm::{powi, Kernel, OneClassSvm};
pub use tree::Tree;

/// numpy's `mean` of a contiguous row: its sum divided by the count.
pub(crate) fn numpy_mean(v: &[f64]) -> f64 {
    tree::numpy_sum(v) / v.len() as f64
}

/// The old name of [`Step`], from when every step was a scaler.
pub type Scaler = Step;

/// The old name of [`Estimator`], from when every model was a detector.
pub type Detector = Estimator;

/// The label of a row that has none: every regressor row, and a
/// classifier row scikit-learn would refuse (a NaN input to an estimator
/// that does not route missing values).
pub const NO_LABEL: u32 = u32::MAX;

/// What a model's final estimator predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An outlier detector: `predict` says 1 (normal) or -1 (anomaly).
    Outlier,
    /// A regressor: `predict` is a number.
    Regressor,
    /// A classifier: `predict` is one of its classes.
    Classifier,
}

impl Kind {
    /// `outlier`, `regressor` or `classifier`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Outlier => "outlier",
            Kind::Regressor => "regressor",
            Kind::Classifier => "classifier",
        }
    }

    /// Parses `outlier`, `regressor` or `classifier`.
    pub fn parse(text: &str) -> Result<Kind, String> {
        match text {
            "outlier" => Ok(Kind::Outlier),
            "regressor" => Ok(Kind::Regressor),
            "classifier" => Ok(Kind::Classifier),
            _ => Err(format!(
                "kind {text:?}: write `outlier`, `regressor` or `classifier`"
            )),
        }
    }
}

/// The estimator at the end of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Estimator {
    /// `sklearn.svm.OneClassSVM`
    OneClassSvm(OneClassSvm),
    /// `sklearn.ensemble.IsolationForest`
    IsolationForest(IsolationForest),
    /// `DecisionTreeRegressor`, `ExtraTreeRegressor`,
    /// `RandomForestRegressor`, `ExtraTreesRegressor`: the mean of trees.
    ForestRegressor(ForestRegressor),
    /// `DecisionTreeClassifier`, `ExtraTreeClassifier`,
    /// `RandomForestClassifier`, `ExtraTreesClassifier`.
    ForestClassifier(ForestClassifier),
    /// `GradientBoostingRegressor` and `GradientBoostingClassifier`.
    GradientBoosting(GradientBoosting),
    /// `HistGradientBoostingRegressor` and `HistGradientBoostingClassifier`.
    HistGradientBoosting(HistGradientBoosting),
    /// `sklearn.neighbors.LocalOutlierFactor` fitted with `novelty=True`.
    LocalOutlierFactor(LocalOutlierFactor),
    /// `LinearRegression`, `Ridge`, `Lasso`, `ElasticNet`, `SGDRegressor`,
    /// `LinearSVR`, `LogisticRegression`, `SGDClassifier`, `LinearSVC`.
    Linear(LinearModel),
    /// `sklearn.linear_model.SGDOneClassSVM`
    SgdOneClassSvm(SgdOneClassSvm),
    /// `sklearn.covariance.EllipticEnvelope`
    EllipticEnvelope(EllipticEnvelope),
    /// `SVC` and `NuSVC`: libsvm's one-vs-one classifier.
    Svc(Svc),
    /// `SVR` and `NuSVR`: libsvm's regressor.
    Svr(Svr),
}

impl Estimator {
    /// scikit-learn's class name.
    pub fn name(&self) -> &str {
        match self {
            Estimator::OneClassSvm(_) => "OneClassSVM",
            Estimator::IsolationForest(_) => "IsolationForest",
            Estimator::ForestRegressor(f) => &f.class,
            Estimator::ForestClassifier(f) => &f.class,
            Estimator::GradientBoosting(g) => g.class_name(),
            Estimator::HistGradientBoosting(h) => h.class_name(),
            Estimator::LocalOutlierFactor(_) => "LocalOutlierFactor",
            Estimator::Linear(l) => &l.class,
            Estimator::SgdOneClassSvm(_) => "SGDOneClassSVM",
            Estimator::EllipticEnvelope(_) => "EllipticEnvelope",
            Estimator::Svc(s) => s.class_name(),
            Estimator::Svr(s) => s.class_name(),
        }
    }

    /// What it predicts.
    pub fn kind(&self) -> Kind {
        match self {
            Estimator::OneClassSvm(_) | Estimator::IsolationForest(_) => Kind::Outlier,
            Estimator::ForestRegressor(_) => Kind::Regressor,
            Estimator::ForestClassifier(_) => Kind::Classifier,
            Estimator::GradientBoosting(g) => g.kind(),
            Estimator::HistGradientBoosting(h) => h.kind(),
            Estimator::LocalOutlierFactor(_) => Kind::Outlier,
            Estimator::Linear(l) => l.kind(),
            Estimator::SgdOneClassSvm(_) | Estimator::EllipticEnvelope(_) => Kind::Outlier,
            Estimator::Svc(_) => Kind::Classifier,
            Estimator::Svr(_) => Kind::Regressor,
        }
    }

    /// Checks the fitted estimator for input rows of `n` features. Each
    /// estimator's checks live in its own `validate`.
    pub fn validate(&self, n: usize) -> Result<(), InvalidModel> {
        match self {
            Estimator::OneClassSvm(svm) => svm.validate(n),
            Estimator::IsolationForest(f) => f.validate(n),
            Estimator::ForestRegressor(f) => f.validate(n),
            Estimator::ForestClassifier(f) => f.validate(n),
            Estimator::GradientBoosting(g) => g.validate(n),
            Estimator::HistGradientBoosting(h) => h.validate(n),
            Estimator::LocalOutlierFactor(l) => l.validate(n),
            Estimator::Linear(l) => l.validate(n),
            Estimator::SgdOneClassSvm(d) => d.validate(n),
            Estimator::EllipticEnvelope(e) => e.validate(n),
            Estimator::Svc(s) => s.validate(n),
            Estimator::Svr(s) => s.validate(n),
        }
    }

    /// A short description with its sizes, e.g.
    /// `IsolationForest(100 trees, 25,431 nodes)`.
    pub fn describe(&self) -> String {
        match self {
            Estimator::OneClassSvm(svm) => {
                let n = svm.n_support();
                format!(
                    "OneClassSVM(kernel={}, gamma={}, {n} support vector{})",
                    svm.kernel.name(),
                    svm.gamma,
                    plural(n)
                )
            }
            Estimator::IsolationForest(f) => match &f.compiled {
                None => format!("IsolationForest({})", tree_sizes(&f.trees)),
                Some(c) => format!(
                    "IsolationForest({} trees, {} nodes, depth {}; one feature, held as step functions)",
                    c.trees.len(),
                    c.nodes,
                    c.depth
                ),
            },
            Estimator::ForestRegressor(f) => match &f.compiled {
                None => format!("{}({})", f.class, tree_sizes(&f.trees)),
                Some(c) => format!(
                    "{}({} trees, {} nodes, depth {}; one feature, held as step functions)",
                    f.class,
                    c.trees.len(),
                    c.nodes,
                    c.depth
                ),
            },
            Estimator::ForestClassifier(f) => format!(
                "{}({}, {} classes)",
                f.class,
                tree_sizes(&f.trees),
                f.classes.len()
            ),
            Estimator::GradientBoosting(g) => g.describe(),
            Estimator::HistGradientBoosting(h) => h.describe(),
            Estimator::LocalOutlierFactor(l) => l.describe(),
            Estimator::Linear(l) => l.describe(),
            Estimator::SgdOneClassSvm(d) => format!("SGDOneClassSVM({} features)", d.coef.len()),
            Estimator::EllipticEnvelope(e) => {
                format!("EllipticEnvelope({} features)", e.location.len())
            }
            Estimator::Svc(s) => s.describe(),
            Estimator::Svr(s) => s.describe(),
        }
    }

    /// Scores rows that went through every step (row-major, `n` values
    /// each). Returns the number of anomalies (detectors only).
    fn evaluate(&self, xs: &[f64], n: usize, score: &mut [f64], label: &mut [u32]) -> usize {
        match self {
            Estimator::OneClassSvm(svm) => {
                svm.decision_batch(xs, n, score);
                let mut anomalies = 0;
                for (s, l) in score.iter().zip(label.iter_mut()) {
                    // libsvm: normal only when the decision is strictly
                    // positive; 0.0 and NaN are anomalies.
                    let a = s.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater);
                    *l = u32::from(a);
                    anomalies += usize::from(a);
                }
                anomalies
            }
            Estimator::IsolationForest(f) => f.evaluate(xs, n, score, label),
            Estimator::ForestRegressor(f) => {
                f.evaluate(xs, n, score);
                label.fill(NO_LABEL);
                0
            }
            Estimator::ForestClassifier(f) => {
                f.evaluate(xs, n, score, label);
                0
            }
            Estimator::GradientBoosting(g) => {
                g.evaluate(xs, n, score, label);
                0
            }
            Estimator::LocalOutlierFactor(l) => l.evaluate(xs, n, score, label),
            Estimator::HistGradientBoosting(h) => {
                h.evaluate(xs, n, score, label);
                0
            }
            Estimator::Linear(l) => {
                l.evaluate(xs, n, score, label);
                0
            }
            Estimator::SgdOneClassSvm(d) => d.evaluate(xs, n, score, label),
            Estimator::EllipticEnvelope(e) => e.evaluate(xs, n, score, label),
            Estimator::Svc(s) => {
                s.evaluate(xs, n, score, label);
                0
            }
            Estimator::Svr(s) => {
                s.evaluate(xs, n, score);
                label.fill(NO_LABEL);
                0
            }
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn tree_sizes(trees: &[Tree]) -> String {
    let nodes: usize = trees.iter().map(Tree::len).sum();
    let depth = trees.iter().map(Tree::depth).max().unwrap_or(0);
    format!(
        "{} tree{}, {nodes} nodes, depth {depth}",
        trees.len(),
        plural(trees.len())
    )
}

/// A complete model: preprocessing steps, then the final estimator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Number of input features (1 for raw readings).
    pub n_features: usize,
    /// Preprocessing steps applied in order.
    pub steps: Vec<Step>,
    /// The final estimator (`detector` in `model.fsm` version 1).
    #[serde(alias = "detector")]
    pub estimator: Estimator,
}

/// Why a model could not score its input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The input has the wrong number of columns.
    #[error("the model expects {expected} feature(s) per row but the input has {found}")]
    FeatureMismatch {
        /// Features the model was trained on.
        expected: usize,
        /// Features per row in the input.
        found: usize,
    },
    /// The output buffers do not hold one value per row.
    #[error("{rows} rows but output buffers of {score} scores and {label} labels")]
    Output {
        /// Rows in the input.
        rows: usize,
        /// Length of the score buffer.
        score: usize,
        /// Length of the label buffer.
        label: usize,
    },
    /// The input's length is not a multiple of its row width.
    #[error("{values} values do not form whole rows of {width} features")]
    Ragged {
        /// Number of values.
        values: usize,
        /// Row width.
        width: usize,
    },
}

/// A fitted model that is not internally consistent: an array of the wrong
/// shape, a non-finite value, or a parameter that scikit-learn's `fit`
/// never produces. Such a file was altered or corrupted after fitting, and
/// scoring it would give meaningless (or, in libsvm, out-of-bounds)
/// results. The message names the estimator, the scikit-learn attribute
/// and why it is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{estimator}: {attribute} {problem}; the model file was altered or corrupted after fitting: re-export it from the fitted estimator (or refit it)")]
pub struct InvalidModel {
    /// scikit-learn's class name, e.g. `OneClassSVM`.
    pub estimator: &'static str,
    /// The fitted attribute, with scikit-learn's name, e.g. `_n_support`.
    pub attribute: String,
    /// What is wrong with it.
    pub problem: String,
}

impl InvalidModel {
    /// An inconsistency in `estimator.attribute`.
    pub fn new(
        estimator: &'static str,
        attribute: impl Into<String>,
        problem: impl Into<String>,
    ) -> InvalidModel {
        InvalidModel {
            estimator,
            attribute: attribute.into(),
            problem: problem.into(),
        }
    }
}

/// `v` has one value per feature.
pub(crate) fn check_width(
    est: &'static str,
    attr: &str,
    v: &[f64],
    n: usize,
) -> Result<(), InvalidModel> {
    if v.len() == n {
        return Ok(());
    }
    Err(InvalidModel::new(
        est,
        attr,
        format!("has {} values but the model has {n} features", v.len()),
    ))
}

/// Every value of `v` is finite.
pub(crate) fn check_finite(est: &'static str, attr: &str, v: &[f64]) -> Result<(), InvalidModel> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(InvalidModel::new(
            est,
            format!("{attr}[{i}]"),
            format!("is {}, and only finite values can be scored", v[i]),
        )),
        None => Ok(()),
    }
}

/// A divisor or multiplier of a scaler: finite and positive, as every
/// scikit-learn scaler's `fit` leaves it (a constant feature gets 1, not
/// 0, through `_handle_zeros_in_scale`).
pub(crate) fn check_scale(
    est: &'static str,
    attr: &str,
    v: &[f64],
    n: usize,
) -> Result<(), InvalidModel> {
    check_width(est, attr, v, n)?;
    check_finite(est, attr, v)?;
    match v.iter().position(|&x| x <= 0.0) {
        Some(i) => Err(InvalidModel::new(
            est,
            format!("{attr}[{i}]"),
            format!(
                "is {}, but fit always makes it positive (a constant feature gets 1 through `_handle_zeros_in_scale`)",
                v[i]
            ),
        )),
        None => Ok(()),
    }
}

impl Model {
    /// Checks that the model is internally consistent: every array has
    /// the width of the input, and each estimator holds only what its
    /// scikit-learn `fit` can produce (see [`Step::validate`] and
    /// [`Estimator::validate`]). Run on every path into a `Model`: pickle
    /// import, `model.fsm` and pack decoding, and training. It runs once
    /// per load, never per row.
    pub fn validate(&self) -> Result<(), InvalidModel> {
        let n = self.n_features;
        if n == 0 {
            return Err(InvalidModel::new(
                "Model",
                "n_features",
                "is 0; a model needs at least one feature",
            ));
        }
        // Each step is checked at the width it receives; the estimator at
        // the width the last step gives.
        let mut width = n;
        for s in &self.steps {
            s.validate(width)?;
            width = s.out_width(width);
            if width == 0 {
                return Err(InvalidModel::new(
                    s.name(),
                    "output",
                    "has no columns left; nothing can be scored",
                ));
            }
        }
        self.estimator.validate(width)
    }

    /// Width of the rows the final estimator receives.
    pub fn estimator_width(&self) -> usize {
        self.steps
            .iter()
            .fold(self.n_features, |w, s| s.out_width(w))
    }

    /// What the model predicts.
    pub fn kind(&self) -> Kind {
        self.estimator.kind()
    }

    /// A classifier's class labels as text (Python's `str` of each of
    /// `classes_`), indexed by the labels [`Model::evaluate_into`] gives;
    /// empty for other kinds.
    pub fn classes(&self) -> &[String] {
        match &self.estimator {
            Estimator::ForestClassifier(f) => &f.classes,
            Estimator::GradientBoosting(g) => &g.classes,
            Estimator::HistGradientBoosting(h) => &h.classes,
            Estimator::Linear(l) => &l.classes,
            Estimator::Svc(s) => &s.classes,
            _ => &[],
        }
    }

    /// A one-line description, e.g.
    /// `Pipeline(StandardScaler, OneClassSVM(kernel=rbf, gamma=0.1, 15 support vectors))`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.steps.iter().map(|s| s.name().to_string()).collect();
        parts.push(self.estimator.describe());
        if parts.len() == 1 {
            parts.pop().unwrap_or_default()
        } else {
            format!("Pipeline({})", parts.join(", "))
        }
    }

    /// Scores `rows` (row-major, `width` values per row): one score and one
    /// label per row (see the table in the [module docs](self)). Returns
    /// the number of anomalies (0 for a regressor or classifier).
    pub fn evaluate_into(
        &self,
        rows: &[f64],
        width: usize,
        score: &mut [f64],
        label: &mut [u32],
    ) -> Result<usize, EvalError> {
        if width != self.n_features {
            return Err(EvalError::FeatureMismatch {
                expected: self.n_features,
                found: width,
            });
        }
        if width == 0 || !rows.len().is_multiple_of(width) {
            return Err(EvalError::Ragged {
                values: rows.len(),
                width,
            });
        }
        let n_rows = rows.len() / width;
        if score.len() != n_rows || label.len() != n_rows {
            return Err(EvalError::Output {
                rows: n_rows,
                score: score.len(),
                label: label.len(),
            });
        }
        if self.steps.is_empty() {
            return Ok(self.estimator.evaluate(rows, width, score, label));
        }
        // Every step over every row first (as scikit-learn's pipeline
        // does), then the estimator over the whole batch.
        let mut xs = rows.to_vec();
        let mut w = width;
        for s in &self.steps {
            if s.changes_width() {
                let out_w = s.out_width(w);
                let mut next = vec![0.0; n_rows * out_w];
                for (row, out) in xs.chunks_exact(w).zip(next.chunks_exact_mut(out_w)) {
                    s.transform_into(row, out);
                }
                xs = next;
                w = out_w;
            } else {
                for row in xs.chunks_exact_mut(w) {
                    s.transform(row);
                }
            }
        }
        Ok(self.estimator.evaluate(&xs, w, score, label))
    }

    /// Scores only: `decision_function` for a detector, `predict` for a
    /// regressor, the predicted class's probability for a classifier.
    pub fn decision_function(
        &self,
        rows: &[f64],
        width: usize,
        out: &mut Vec<f64>,
    ) -> Result<(), EvalError> {
        out.clear();
        out.resize(rows.len().checked_div(width).unwrap_or(0), 0.0);
        self.decision_function_into(rows, width, out)
    }

    /// As [`Model::decision_function`], into a slice of exactly one value
    /// per row.
    pub fn decision_function_into(
        &self,
        rows: &[f64],
        width: usize,
        out: &mut [f64],
    ) -> Result<(), EvalError> {
        let mut label = vec![0; out.len()];
        self.evaluate_into(rows, width, out, &mut label).map(|_| ())
    }

    /// A detector's labels as scikit-learn's `predict`: `1` (inlier) or
    /// `-1` (outlier). For other kinds, every label is 0.
    pub fn predict(&self, rows: &[f64], width: usize) -> Result<Vec<i8>, EvalError> {
        let n = rows.len().checked_div(width).unwrap_or(0);
        let (mut score, mut label) = (vec![0.0; n], vec![0; n]);
        self.evaluate_into(rows, width, &mut score, &mut label)?;
        Ok(match self.kind() {
            Kind::Outlier => label.iter().map(|&l| if l == 1 { -1 } else { 1 }).collect(),
            _ => vec![0; n],
        })
    }
}

/// Serde for float arrays that may hold infinities (a tree's threshold
/// for missing values, a step function's last bound): JSON has no
/// infinity, so `inf`, `-inf` and `nan` are written as those strings and
/// read back; finite values stay numbers.
pub(crate) mod floats {
    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};

    /// A float JSON can hold or its name.
    pub(crate) trait Float: Copy {
        fn to_f64(self) -> f64;
        fn from_f64(v: f64) -> Self;
    }
    impl Float for f64 {
        fn to_f64(self) -> f64 {
            self
        }
        fn from_f64(v: f64) -> Self {
            v
        }
    }
    impl Float for f32 {
        fn to_f64(self) -> f64 {
            f64::from(self)
        }
        fn from_f64(v: f64) -> Self {
            v as f32
        }
    }

    pub(crate) fn serialize<S: Serializer, F: Float + serde::Serialize>(
        v: &[F],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for x in v {
            let f = x.to_f64();
            if f.is_finite() {
                seq.serialize_element(x)?;
            } else if f.is_nan() {
                seq.serialize_element("nan")?;
            } else if f > 0.0 {
                seq.serialize_element("inf")?;
            } else {
                seq.serialize_element("-inf")?;
            }
        }
        seq.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, F: Float + serde::Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<F>, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Item<F> {
            Num(F),
            Name(String),
        }
        struct V<F>(std::marker::PhantomData<F>);
        impl<'de, F: Float + serde::Deserialize<'de>> Visitor<'de> for V<F> {
            type Value = Vec<F>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of numbers, \"inf\", \"-inf\" or \"nan\"")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Vec<F>, A::Error> {
                let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(item) = a.next_element::<Item<F>>()? {
                    out.push(match item {
                        Item::Num(x) => x,
                        Item::Name(n) => F::from_f64(match n.as_str() {
                            "inf" => f64::INFINITY,
                            "-inf" => f64::NEG_INFINITY,
                            "nan" => f64::NAN,
                            other => {
                                return Err(de::Error::custom(format!(
                                    "{other:?} is not a number, \"inf\", \"-inf\" or \"nan\""
                                )))
                            }
                        }),
                    });
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}
