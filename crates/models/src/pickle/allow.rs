//! The allow-list: every global a pickle may name, under every module path
//! scikit-learn 0.20 to 1.9 pickled it from.
//!
//! A pickle names a class by `module.name`, where the module is the one
//! that defined the class in the release that wrote the file (scikit-learn
//! 0.22 moved most of them to private modules: `sklearn.ensemble.iforest`
//! became `sklearn.ensemble._iforest`). Each [`Estimator`] lists all of its
//! paths; they, and the scikit-learn names in `INERT`, were checked
//! against the wheels of 0.20.4, 0.21.3, 0.22.2.post1, 0.24.2, 1.0.2, 1.1.3,
//! 1.2.2, 1.3.2, 1.4.2 and 1.9.1, the numpy ones against numpy 1.16.6,
//! 1.17.5, 1.18.5, 1.19.5 and 2.4.6.
//!
//! [`Class::Inert`] globals are parts of a fitted model that fleetscore
//! never needs (random generators, loss objects, distance metrics): they
//! are built like any other object, their arguments and state recorded,
//! and never interpreted or called.

/// The scikit-learn classes fleetscore reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Estimator {
    /// `sklearn.pipeline.Pipeline`
    Pipeline,
    /// `sklearn.preprocessing.StandardScaler`
    StandardScaler,
    /// `sklearn.preprocessing.MinMaxScaler`
    MinMaxScaler,
    /// `sklearn.preprocessing.RobustScaler`
    RobustScaler,
    /// `sklearn.svm.OneClassSVM`
    OneClassSvm,
    /// `sklearn.ensemble.IsolationForest`
    IsolationForest,
    /// `sklearn.tree.ExtraTreeRegressor`
    ExtraTreeRegressor,
    /// `sklearn.tree.ExtraTreeClassifier`
    ExtraTreeClassifier,
    /// `sklearn.tree.DecisionTreeRegressor`
    DecisionTreeRegressor,
    /// `sklearn.tree.DecisionTreeClassifier`
    DecisionTreeClassifier,
    /// `sklearn.ensemble.RandomForestRegressor`
    RandomForestRegressor,
    /// `sklearn.ensemble.RandomForestClassifier`
    RandomForestClassifier,
    /// `sklearn.ensemble.ExtraTreesRegressor`
    ExtraTreesRegressor,
    /// `sklearn.ensemble.ExtraTreesClassifier`
    ExtraTreesClassifier,
    /// `sklearn.ensemble.GradientBoostingRegressor`
    GradientBoostingRegressor,
    /// `sklearn.ensemble.GradientBoostingClassifier`
    GradientBoostingClassifier,
    /// `sklearn.ensemble.HistGradientBoostingRegressor`
    HistGradientBoostingRegressor,
    /// `sklearn.ensemble.HistGradientBoostingClassifier`
    HistGradientBoostingClassifier,
    /// `sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor`:
    /// one tree of a histogram gradient boosting model.
    TreePredictor,
    /// `sklearn.ensemble._hist_gradient_boosting.binning._BinMapper`
    BinMapper,
    /// `sklearn.tree._tree.Tree`: the arrays of a fitted tree.
    Tree,
    /// `sklearn.dummy.DummyRegressor` (gradient boosting's `init_`).
    DummyRegressor,
    /// `sklearn.dummy.DummyClassifier` (gradient boosting's `init_`).
    DummyClassifier,
    /// `sklearn.neighbors.LocalOutlierFactor`
    LocalOutlierFactor,
    /// `sklearn.neighbors.KDTree` (LocalOutlierFactor's `_tree`).
    KdTree,
    /// `sklearn.neighbors.BallTree` (LocalOutlierFactor's `_tree`).
    BallTree,
    /// `sklearn.covariance.EllipticEnvelope`
    EllipticEnvelope,
    /// `sklearn.linear_model.SGDOneClassSVM`
    SgdOneClassSvm,
    /// `sklearn.linear_model.LinearRegression`
    LinearRegression,
    /// `sklearn.linear_model.Ridge`
    Ridge,
    /// `sklearn.linear_model.Lasso`
    Lasso,
    /// `sklearn.linear_model.ElasticNet`
    ElasticNet,
    /// `sklearn.linear_model.SGDRegressor`
    SgdRegressor,
    /// `sklearn.linear_model.LogisticRegression`
    LogisticRegression,
    /// `sklearn.linear_model.SGDClassifier`
    SgdClassifier,
    /// `sklearn.svm.LinearSVC`
    LinearSvc,
    /// `sklearn.svm.LinearSVR`
    LinearSvr,
    /// `sklearn.svm.SVC`
    Svc,
    /// `sklearn.svm.SVR`
    Svr,
    /// `sklearn.svm.NuSVC`
    NuSvc,
    /// `sklearn.svm.NuSVR`
    NuSvr,
    /// `sklearn.preprocessing.MaxAbsScaler`
    MaxAbsScaler,
    /// `sklearn.preprocessing.Normalizer`
    Normalizer,
    /// `sklearn.preprocessing.Binarizer`
    Binarizer,
    /// `sklearn.impute.SimpleImputer`
    SimpleImputer,
    /// `sklearn.decomposition.PCA`
    Pca,
    /// `sklearn.preprocessing.PolynomialFeatures`
    PolynomialFeatures,
    /// `sklearn.preprocessing.QuantileTransformer`
    QuantileTransformer,
    /// `sklearn.preprocessing.PowerTransformer`
    PowerTransformer,
    /// `sklearn.preprocessing.LabelEncoder` (a histogram gradient boosting
    /// classifier's `_label_encoder`).
    LabelEncoder,
}

// Module paths, newest last where a release renamed them (≤0.21 public
// file, 0.22+ private file), then the public package that re-exports the
// class (a hand-written pickle may name it so).
const PREPROCESSING: &[&str] = &[
    "sklearn.preprocessing.data",
    "sklearn.preprocessing._data",
    "sklearn.preprocessing",
];
const SVM: &[&str] = &["sklearn.svm.classes", "sklearn.svm._classes", "sklearn.svm"];
const TREE: &[&str] = &["sklearn.tree.tree", "sklearn.tree._classes", "sklearn.tree"];
const FOREST: &[&str] = &[
    "sklearn.ensemble.forest",
    "sklearn.ensemble._forest",
    "sklearn.ensemble",
];
const GB: &[&str] = &[
    "sklearn.ensemble.gradient_boosting",
    "sklearn.ensemble._gb",
    "sklearn.ensemble",
];
const HGB: &[&str] = &[
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting",
    "sklearn.ensemble",
];
const SGD: &[&str] = &[
    "sklearn.linear_model.stochastic_gradient",
    "sklearn.linear_model._stochastic_gradient",
    "sklearn.linear_model",
];
const COORDINATE_DESCENT: &[&str] = &[
    "sklearn.linear_model.coordinate_descent",
    "sklearn.linear_model._coordinate_descent",
    "sklearn.linear_model",
];

impl Estimator {
    /// Every estimator, in declaration order.
    pub const ALL: [Estimator; 50] = {
        use Estimator::*;
        [
            Pipeline,
            StandardScaler,
            MinMaxScaler,
            RobustScaler,
            OneClassSvm,
            IsolationForest,
            ExtraTreeRegressor,
            ExtraTreeClassifier,
            DecisionTreeRegressor,
            DecisionTreeClassifier,
            RandomForestRegressor,
            RandomForestClassifier,
            ExtraTreesRegressor,
            ExtraTreesClassifier,
            GradientBoostingRegressor,
            GradientBoostingClassifier,
            HistGradientBoostingRegressor,
            HistGradientBoostingClassifier,
            TreePredictor,
            BinMapper,
            Tree,
            DummyRegressor,
            DummyClassifier,
            LocalOutlierFactor,
            KdTree,
            BallTree,
            EllipticEnvelope,
            SgdOneClassSvm,
            LinearRegression,
            Ridge,
            Lasso,
            ElasticNet,
            SgdRegressor,
            LogisticRegression,
            SgdClassifier,
            LinearSvc,
            LinearSvr,
            Svc,
            Svr,
            NuSvc,
            NuSvr,
            MaxAbsScaler,
            Normalizer,
            Binarizer,
            SimpleImputer,
            Pca,
            PolynomialFeatures,
            QuantileTransformer,
            PowerTransformer,
            LabelEncoder,
        ]
    };

    /// scikit-learn's class name: `IsolationForest`, `OneClassSVM`,
    /// `_BinMapper`, `KDTree`.
    pub fn class_name(self) -> &'static str {
        use Estimator::*;
        match self {
            Pipeline => "Pipeline",
            StandardScaler => "StandardScaler",
            MinMaxScaler => "MinMaxScaler",
            RobustScaler => "RobustScaler",
            OneClassSvm => "OneClassSVM",
            IsolationForest => "IsolationForest",
            ExtraTreeRegressor => "ExtraTreeRegressor",
            ExtraTreeClassifier => "ExtraTreeClassifier",
            DecisionTreeRegressor => "DecisionTreeRegressor",
            DecisionTreeClassifier => "DecisionTreeClassifier",
            RandomForestRegressor => "RandomForestRegressor",
            RandomForestClassifier => "RandomForestClassifier",
            ExtraTreesRegressor => "ExtraTreesRegressor",
            ExtraTreesClassifier => "ExtraTreesClassifier",
            GradientBoostingRegressor => "GradientBoostingRegressor",
            GradientBoostingClassifier => "GradientBoostingClassifier",
            HistGradientBoostingRegressor => "HistGradientBoostingRegressor",
            HistGradientBoostingClassifier => "HistGradientBoostingClassifier",
            TreePredictor => "TreePredictor",
            BinMapper => "_BinMapper",
            Tree => "Tree",
            DummyRegressor => "DummyRegressor",
            DummyClassifier => "DummyClassifier",
            LocalOutlierFactor => "LocalOutlierFactor",
            KdTree => "KDTree",
            BallTree => "BallTree",
            EllipticEnvelope => "EllipticEnvelope",
            SgdOneClassSvm => "SGDOneClassSVM",
            LinearRegression => "LinearRegression",
            Ridge => "Ridge",
            Lasso => "Lasso",
            ElasticNet => "ElasticNet",
            SgdRegressor => "SGDRegressor",
            LogisticRegression => "LogisticRegression",
            SgdClassifier => "SGDClassifier",
            LinearSvc => "LinearSVC",
            LinearSvr => "LinearSVR",
            Svc => "SVC",
            Svr => "SVR",
            NuSvc => "NuSVC",
            NuSvr => "NuSVR",
            MaxAbsScaler => "MaxAbsScaler",
            Normalizer => "Normalizer",
            Binarizer => "Binarizer",
            SimpleImputer => "SimpleImputer",
            Pca => "PCA",
            PolynomialFeatures => "PolynomialFeatures",
            QuantileTransformer => "QuantileTransformer",
            PowerTransformer => "PowerTransformer",
            LabelEncoder => "LabelEncoder",
        }
    }

    /// The name users import it by, for messages:
    /// `sklearn.ensemble.IsolationForest`.
    pub fn python_name(self) -> &'static str {
        use Estimator::*;
        match self {
            Pipeline => "sklearn.pipeline.Pipeline",
            StandardScaler => "sklearn.preprocessing.StandardScaler",
            MinMaxScaler => "sklearn.preprocessing.MinMaxScaler",
            RobustScaler => "sklearn.preprocessing.RobustScaler",
            OneClassSvm => "sklearn.svm.OneClassSVM",
            IsolationForest => "sklearn.ensemble.IsolationForest",
            ExtraTreeRegressor => "sklearn.tree.ExtraTreeRegressor",
            ExtraTreeClassifier => "sklearn.tree.ExtraTreeClassifier",
            DecisionTreeRegressor => "sklearn.tree.DecisionTreeRegressor",
            DecisionTreeClassifier => "sklearn.tree.DecisionTreeClassifier",
            RandomForestRegressor => "sklearn.ensemble.RandomForestRegressor",
            RandomForestClassifier => "sklearn.ensemble.RandomForestClassifier",
            ExtraTreesRegressor => "sklearn.ensemble.ExtraTreesRegressor",
            ExtraTreesClassifier => "sklearn.ensemble.ExtraTreesClassifier",
            GradientBoostingRegressor => "sklearn.ensemble.GradientBoostingRegressor",
            GradientBoostingClassifier => "sklearn.ensemble.GradientBoostingClassifier",
            HistGradientBoostingRegressor => "sklearn.ensemble.HistGradientBoostingRegressor",
            HistGradientBoostingClassifier => "sklearn.ensemble.HistGradientBoostingClassifier",
            TreePredictor => "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
            BinMapper => "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
            Tree => "sklearn.tree._tree.Tree",
            DummyRegressor => "sklearn.dummy.DummyRegressor",
            DummyClassifier => "sklearn.dummy.DummyClassifier",
            LocalOutlierFactor => "sklearn.neighbors.LocalOutlierFactor",
            KdTree => "sklearn.neighbors.KDTree",
            BallTree => "sklearn.neighbors.BallTree",
            EllipticEnvelope => "sklearn.covariance.EllipticEnvelope",
            SgdOneClassSvm => "sklearn.linear_model.SGDOneClassSVM",
            LinearRegression => "sklearn.linear_model.LinearRegression",
            Ridge => "sklearn.linear_model.Ridge",
            Lasso => "sklearn.linear_model.Lasso",
            ElasticNet => "sklearn.linear_model.ElasticNet",
            SgdRegressor => "sklearn.linear_model.SGDRegressor",
            LogisticRegression => "sklearn.linear_model.LogisticRegression",
            SgdClassifier => "sklearn.linear_model.SGDClassifier",
            LinearSvc => "sklearn.svm.LinearSVC",
            LinearSvr => "sklearn.svm.LinearSVR",
            Svc => "sklearn.svm.SVC",
            Svr => "sklearn.svm.SVR",
            NuSvc => "sklearn.svm.NuSVC",
            NuSvr => "sklearn.svm.NuSVR",
            MaxAbsScaler => "sklearn.preprocessing.MaxAbsScaler",
            Normalizer => "sklearn.preprocessing.Normalizer",
            Binarizer => "sklearn.preprocessing.Binarizer",
            SimpleImputer => "sklearn.impute.SimpleImputer",
            Pca => "sklearn.decomposition.PCA",
            PolynomialFeatures => "sklearn.preprocessing.PolynomialFeatures",
            QuantileTransformer => "sklearn.preprocessing.QuantileTransformer",
            PowerTransformer => "sklearn.preprocessing.PowerTransformer",
            LabelEncoder => "sklearn.preprocessing.LabelEncoder",
        }
    }

    /// Every module a pickle may name the class from.
    pub fn modules(self) -> &'static [&'static str] {
        use Estimator::*;
        match self {
            Pipeline => &["sklearn.pipeline"],
            StandardScaler | MinMaxScaler | RobustScaler | MaxAbsScaler | Normalizer
            | Binarizer | QuantileTransformer | PowerTransformer => PREPROCESSING,
            // 1.0 moved PolynomialFeatures to its own file.
            PolynomialFeatures => &[
                "sklearn.preprocessing.data",
                "sklearn.preprocessing._data",
                "sklearn.preprocessing._polynomial",
                "sklearn.preprocessing",
            ],
            LabelEncoder => &[
                "sklearn.preprocessing.label",
                "sklearn.preprocessing._label",
                "sklearn.preprocessing",
            ],
            OneClassSvm | LinearSvc | LinearSvr | Svc | Svr | NuSvc | NuSvr => SVM,
            IsolationForest => &[
                "sklearn.ensemble.iforest",
                "sklearn.ensemble._iforest",
                "sklearn.ensemble",
            ],
            ExtraTreeRegressor
            | ExtraTreeClassifier
            | DecisionTreeRegressor
            | DecisionTreeClassifier => TREE,
            RandomForestRegressor
            | RandomForestClassifier
            | ExtraTreesRegressor
            | ExtraTreesClassifier => FOREST,
            GradientBoostingRegressor | GradientBoostingClassifier => GB,
            // 0.21 and later (experimental before 1.0, same module).
            HistGradientBoostingRegressor | HistGradientBoostingClassifier => HGB,
            TreePredictor => &["sklearn.ensemble._hist_gradient_boosting.predictor"],
            BinMapper => &["sklearn.ensemble._hist_gradient_boosting.binning"],
            Tree => &["sklearn.tree._tree"],
            DummyRegressor | DummyClassifier => &["sklearn.dummy"],
            LocalOutlierFactor => &[
                "sklearn.neighbors.lof",
                "sklearn.neighbors._lof",
                "sklearn.neighbors",
            ],
            KdTree => &[
                "sklearn.neighbors.kd_tree",
                "sklearn.neighbors._kd_tree",
                "sklearn.neighbors",
            ],
            BallTree => &[
                "sklearn.neighbors.ball_tree",
                "sklearn.neighbors._ball_tree",
                "sklearn.neighbors",
            ],
            EllipticEnvelope => &[
                "sklearn.covariance.elliptic_envelope",
                "sklearn.covariance._elliptic_envelope",
                "sklearn.covariance",
            ],
            SgdRegressor | SgdClassifier => SGD,
            // New in 1.0, after the move to private modules.
            SgdOneClassSvm => &[
                "sklearn.linear_model._stochastic_gradient",
                "sklearn.linear_model",
            ],
            LinearRegression => &[
                "sklearn.linear_model.base",
                "sklearn.linear_model._base",
                "sklearn.linear_model",
            ],
            Ridge => &[
                "sklearn.linear_model.ridge",
                "sklearn.linear_model._ridge",
                "sklearn.linear_model",
            ],
            Lasso | ElasticNet => COORDINATE_DESCENT,
            LogisticRegression => &[
                "sklearn.linear_model.logistic",
                "sklearn.linear_model._logistic",
                "sklearn.linear_model",
            ],
            // 0.20 had a single `sklearn/impute.py`.
            SimpleImputer => &["sklearn.impute", "sklearn.impute._base"],
            Pca => &[
                "sklearn.decomposition.pca",
                "sklearn.decomposition._pca",
                "sklearn.decomposition",
            ],
        }
    }
}

/// Globals built but never interpreted or called ([`Class::Inert`]), as
/// `module.name`. A name ending in `*` matches every name of the module
/// with that prefix: scikit-learn's Cython losses (`CyHalfSquaredError`,
/// …) and their `__pyx_unpickle_Cy…` restorers, a family that grows with
/// each release.
const INERT: &[&str] = &[
    // numpy random generators (GradientBoosting's `_rng`, HGB's
    // `_feature_subsample_rng`, `random_state` instances). numpy < 1.17:
    // `__RandomState_ctor`; 1.17: public bit generator modules; 1.18:
    // all private; 1.19+: `bit_generator` public again.
    "numpy.random.__RandomState_ctor",
    "numpy.random._pickle.__randomstate_ctor",
    "numpy.random._pickle.__bit_generator_ctor",
    "numpy.random._pickle.__generator_ctor",
    "numpy.random.mt19937.MT19937",
    "numpy.random.pcg64.PCG64",
    "numpy.random.philox.Philox",
    "numpy.random.sfc64.SFC64",
    "numpy.random._mt19937.MT19937",
    "numpy.random._pcg64.PCG64",
    "numpy.random._pcg64.PCG64DXSM",
    "numpy.random._philox.Philox",
    "numpy.random._sfc64.SFC64",
    "numpy.random.bit_generator.SeedSequence",
    "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
    "numpy.random.bit_generator.__pyx_unpickle_SeedlessSeedSequence",
    "numpy.random._bit_generator.SeedSequence",
    "numpy.random._bit_generator.__pyx_unpickle_SeedSequence",
    "numpy.random._bit_generator.__pyx_unpickle_SeedlessSeedSequence",
    // GradientBoosting losses 0.21–1.3.
    "sklearn.ensemble._gb_losses.LeastSquaresError",
    "sklearn.ensemble._gb_losses.LeastAbsoluteError",
    "sklearn.ensemble._gb_losses.HuberLossFunction",
    "sklearn.ensemble._gb_losses.QuantileLossFunction",
    "sklearn.ensemble._gb_losses.BinomialDeviance",
    "sklearn.ensemble._gb_losses.MultinomialDeviance",
    "sklearn.ensemble._gb_losses.ExponentialLoss",
    // GradientBoosting 0.20 (and deprecated copies in 0.21): init
    // estimators and losses.
    "sklearn.ensemble.gradient_boosting.QuantileEstimator",
    "sklearn.ensemble.gradient_boosting.MeanEstimator",
    "sklearn.ensemble.gradient_boosting.LogOddsEstimator",
    "sklearn.ensemble.gradient_boosting.ScaledLogOddsEstimator",
    "sklearn.ensemble.gradient_boosting.PriorProbabilityEstimator",
    "sklearn.ensemble.gradient_boosting.ZeroEstimator",
    "sklearn.ensemble.gradient_boosting.LeastSquaresError",
    "sklearn.ensemble.gradient_boosting.LeastAbsoluteError",
    "sklearn.ensemble.gradient_boosting.HuberLossFunction",
    "sklearn.ensemble.gradient_boosting.QuantileLossFunction",
    "sklearn.ensemble.gradient_boosting.BinomialDeviance",
    "sklearn.ensemble.gradient_boosting.MultinomialDeviance",
    "sklearn.ensemble.gradient_boosting.ExponentialLoss",
    // HistGradientBoosting losses 0.21–1.0.
    "sklearn.ensemble._hist_gradient_boosting.loss.LeastSquares",
    "sklearn.ensemble._hist_gradient_boosting.loss.LeastAbsoluteDeviation",
    "sklearn.ensemble._hist_gradient_boosting.loss.Poisson",
    "sklearn.ensemble._hist_gradient_boosting.loss.BinaryCrossEntropy",
    "sklearn.ensemble._hist_gradient_boosting.loss.CategoricalCrossEntropy",
    // Common losses and links, 1.1+ (GB from 1.4, HGB, linear models).
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.loss.AbsoluteError",
    "sklearn._loss.loss.PinballLoss",
    "sklearn._loss.loss.HuberLoss",
    "sklearn._loss.loss.HalfPoissonLoss",
    "sklearn._loss.loss.HalfGammaLoss",
    "sklearn._loss.loss.HalfTweedieLoss",
    "sklearn._loss.loss.HalfTweedieLossIdentity",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.ExponentialLoss",
    "sklearn._loss.loss.HalfBinomialLossArrayAPI",
    "sklearn._loss.loss.HalfMultinomialLossArrayAPI",
    "sklearn._loss.loss.HalfPoissonLossArrayAPI",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.LogLink",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.HalfLogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss._loss.Cy*",
    "sklearn._loss._loss.__pyx_unpickle_Cy*",
    // SGD losses (Cython), ≤0.21 and 0.22+.
    "sklearn.linear_model.sgd_fast.Hinge",
    "sklearn.linear_model.sgd_fast.ModifiedHuber",
    "sklearn.linear_model.sgd_fast.Log",
    "sklearn.linear_model.sgd_fast.SquaredLoss",
    "sklearn.linear_model.sgd_fast.SquaredHinge",
    "sklearn.linear_model.sgd_fast.Huber",
    "sklearn.linear_model.sgd_fast.EpsilonInsensitive",
    "sklearn.linear_model.sgd_fast.SquaredEpsilonInsensitive",
    "sklearn.linear_model._sgd_fast.Hinge",
    "sklearn.linear_model._sgd_fast.ModifiedHuber",
    "sklearn.linear_model._sgd_fast.Log",
    "sklearn.linear_model._sgd_fast.SquaredLoss",
    "sklearn.linear_model._sgd_fast.SquaredHinge",
    "sklearn.linear_model._sgd_fast.Huber",
    "sklearn.linear_model._sgd_fast.EpsilonInsensitive",
    "sklearn.linear_model._sgd_fast.SquaredEpsilonInsensitive",
    // KDTree/BallTree and distance metrics pickle as `newObj(cls)` plus a
    // state; see `Class::is_new_obj`. Metrics: ≤0.21, 0.22–0.24, 1.0+
    // (`…64` from 1.3).
    "sklearn.neighbors.kd_tree.newObj",
    "sklearn.neighbors._kd_tree.newObj",
    "sklearn.neighbors.ball_tree.newObj",
    "sklearn.neighbors._ball_tree.newObj",
    "sklearn.neighbors.dist_metrics.newObj",
    "sklearn.neighbors.dist_metrics.EuclideanDistance",
    "sklearn.neighbors.dist_metrics.ManhattanDistance",
    "sklearn.neighbors.dist_metrics.ChebyshevDistance",
    "sklearn.neighbors.dist_metrics.MinkowskiDistance",
    "sklearn.neighbors._dist_metrics.newObj",
    "sklearn.neighbors._dist_metrics.EuclideanDistance",
    "sklearn.neighbors._dist_metrics.ManhattanDistance",
    "sklearn.neighbors._dist_metrics.ChebyshevDistance",
    "sklearn.neighbors._dist_metrics.MinkowskiDistance",
    "sklearn.metrics._dist_metrics.newObj",
    "sklearn.metrics._dist_metrics.EuclideanDistance",
    "sklearn.metrics._dist_metrics.ManhattanDistance",
    "sklearn.metrics._dist_metrics.ChebyshevDistance",
    "sklearn.metrics._dist_metrics.MinkowskiDistance",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    // Python objects used as plain values (`slice(0, 3)`, the type
    // `np.float64` as a `dtype` parameter).
    "builtins.slice",
    // HistGradientBoosting 1.4+ with categorical features keeps its own
    // preprocessor: a ColumnTransformer of an OrdinalEncoder and a
    // FunctionTransformer of `partial(check_array, ...)`. The translator
    // reads them there and refuses a FunctionTransformer anywhere else.
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.preprocessing._encoders.OrdinalEncoder",
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "functools.partial",
    "sklearn.utils.validation.check_array",
    "__builtin__.slice",
    "numpy.float64",
];

/// The entry of [`INERT`] that admits `module.name`.
fn inert(module: &str, name: &str) -> Option<&'static str> {
    INERT.iter().copied().find(|entry| {
        let Some((m, n)) = entry.rsplit_once('.') else {
            return false;
        };
        if m != module {
            return false;
        }
        match n.strip_suffix('*') {
            Some(prefix) => {
                name.len() > prefix.len()
                    && name.starts_with(prefix)
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }
            None => n == name,
        }
    })
}

/// Every global a pickle may name: the allow-list. Anything else is refused
/// when the pickle names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A supported scikit-learn estimator class.
    Sklearn(Estimator),
    /// A class or function whose objects are built (arguments and state
    /// recorded) but never interpreted or called: random generators, loss
    /// objects, distance metrics. Holds its entry in the allow-list, which
    /// is the Python name (`numpy.random._mt19937.MT19937`), or a pattern
    /// ending in `*` for a family matched by prefix
    /// (`sklearn._loss._loss.Cy*`).
    Inert(&'static str),
    /// `numpy.ndarray` (the class passed to `_reconstruct`).
    NumpyNdarray,
    /// `numpy.dtype`
    NumpyDtype,
    /// `numpy.core.multiarray._reconstruct` (numpy 1) or
    /// `numpy._core.multiarray._reconstruct` (numpy 2).
    NumpyReconstruct,
    /// `numpy.core.multiarray.scalar`: a numpy scalar such as `np.float64`.
    NumpyScalar,
    /// `numpy.core.numeric._frombuffer`: arrays at pickle protocol 5.
    NumpyFrombuffer,
    /// `joblib.numpy_pickle.NumpyArrayWrapper` (also under
    /// `sklearn.externals.joblib`).
    JoblibArrayWrapper,
    /// `copyreg._reconstructor` (protocol 0 and 1 object creation).
    CopyregReconstructor,
    /// `builtins.object`
    BuiltinObject,
    /// `_codecs.encode`: bytes at protocol 2.
    CodecsEncode,
    /// `builtins.set`
    BuiltinSet,
    /// `builtins.frozenset`
    BuiltinFrozenset,
    /// `builtins.bytearray`
    BuiltinBytearray,
    /// `builtins.bytes` (how protocol 2 writes an empty `bytes`).
    BuiltinBytes,
}

impl Class {
    /// Looks a global up in the allow-list.
    pub fn resolve(module: &str, name: &str) -> Option<Class> {
        if let Some(e) = Estimator::ALL
            .iter()
            .find(|e| e.class_name() == name && e.modules().contains(&module))
        {
            return Some(Class::Sklearn(*e));
        }
        if let Some(entry) = inert(module, name) {
            return Some(Class::Inert(entry));
        }
        let c = match (module, name) {
            ("numpy", "ndarray") => Class::NumpyNdarray,
            ("numpy", "dtype") => Class::NumpyDtype,
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                Class::NumpyReconstruct
            }
            ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Class::NumpyScalar,
            ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => Class::NumpyFrombuffer,
            (
                "joblib.numpy_pickle" | "sklearn.externals.joblib.numpy_pickle",
                "NumpyArrayWrapper",
            ) => Class::JoblibArrayWrapper,
            ("copyreg" | "copy_reg", "_reconstructor") => Class::CopyregReconstructor,
            ("builtins" | "__builtin__", "object") => Class::BuiltinObject,
            ("builtins" | "__builtin__", "set") => Class::BuiltinSet,
            ("builtins" | "__builtin__", "frozenset") => Class::BuiltinFrozenset,
            ("builtins" | "__builtin__", "bytearray") => Class::BuiltinBytearray,
            ("builtins" | "__builtin__", "bytes") => Class::BuiltinBytes,
            ("_codecs", "encode") => Class::CodecsEncode,
            _ => return None,
        };
        Some(c)
    }

    /// Whether this is one of the neighbours modules' `newObj(cls)`, which
    /// is `cls.__new__(cls)`: `KDTree`, `BallTree` and the distance metrics
    /// pickle as `(newObj, (cls,), state)`.
    pub fn is_new_obj(&self) -> bool {
        matches!(self, Class::Inert(n) if n.ends_with(".newObj"))
    }

    /// The Python name, for messages.
    pub fn python_name(&self) -> &'static str {
        match self {
            Class::Sklearn(e) => e.python_name(),
            Class::Inert(entry) => entry,
            Class::NumpyNdarray => "numpy.ndarray",
            Class::NumpyDtype => "numpy.dtype",
            Class::NumpyReconstruct => "numpy.core.multiarray._reconstruct",
            Class::NumpyScalar => "numpy.core.multiarray.scalar",
            Class::NumpyFrombuffer => "numpy.core.numeric._frombuffer",
            Class::JoblibArrayWrapper => "joblib.numpy_pickle.NumpyArrayWrapper",
            Class::CopyregReconstructor => "copyreg._reconstructor",
            Class::BuiltinObject => "builtins.object",
            Class::CodecsEncode => "_codecs.encode",
            Class::BuiltinSet => "builtins.set",
            Class::BuiltinFrozenset => "builtins.frozenset",
            Class::BuiltinBytearray => "builtins.bytearray",
            Class::BuiltinBytes => "builtins.bytes",
        }
    }
}
