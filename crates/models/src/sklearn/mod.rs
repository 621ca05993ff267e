//! Translation of unpickled scikit-learn objects into native [`Model`]s.
//!
//! The restricted unpickler ([`crate::pickle`]) yields allow-listed objects
//! with their `__dict__`; this module reads the fitted attributes each
//! estimator's `transform`/`decision_function` uses, accepting the names of
//! every scikit-learn release since 0.18 (`_dual_coef_` or `dual_coef_`,
//! `_intercept_` or `intercept_`, `_gamma` or a numeric `gamma`), and checks
//! that shapes agree.

use std::io::Read;

mod hgb;
mod linear;
mod lof;
mod steps;
mod svc;
mod trees;

pub use trees::average_path_length;

use crate::model::{Detector, InvalidModel, Model, OneClassSvm, Scaler};
use crate::pickle::{self, Class, Estimator, NdArray, PickleError, Value};

/// Bounds on what importing one model may use, so that a small upload
/// cannot make the importer allocate gigabytes.
///
/// One number, the model-size limit, bounds every stage: the pickle after
/// decompression (a plain pickle counts as it is), the values the pickle
/// interpreter builds from it (at most [`ImportLimits::HEAP_FACTOR`] times
/// the limit plus [`ImportLimits::HEAP_FLOOR`], estimated before
/// allocating), and each array converted to f64. Real per-device models
/// are kilobytes; the default leaves room for models with hundreds of
/// thousands of support vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// Largest pickle accepted after decompression, in bytes.
    pub max_decompressed_bytes: u64,
}

impl ImportLimits {
    /// The default model-size limit: 64 MiB.
    pub const DEFAULT_MAX_DECOMPRESSED_BYTES: u64 = 64 << 20;
    /// The interpreter may build values of up to this many times the
    /// limit: array bytes are held once (twice for protocol-2 text
    /// arrays), so real pickles stay well under it, while a bomb of tiny
    /// opcodes (each making a list, a memo entry, …) is stopped before
    /// it costs more.
    pub const HEAP_FACTOR: u64 = 4;
    /// Heap every import may use whatever the limit: a small pickle's
    /// objects and dicts cost more than its size in estimated bytes.
    pub const HEAP_FLOOR: u64 = 16 << 20;

    /// Limits with a model-size limit of `max_decompressed_bytes`.
    pub fn new(max_decompressed_bytes: u64) -> ImportLimits {
        ImportLimits {
            max_decompressed_bytes,
        }
    }

    /// Bytes the pickle interpreter may allocate for values.
    pub fn max_heap_bytes(&self) -> usize {
        let bytes = self
            .max_decompressed_bytes
            .saturating_mul(Self::HEAP_FACTOR)
            .saturating_add(Self::HEAP_FLOOR);
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }
}

impl Default for ImportLimits {
    fn default() -> ImportLimits {
        ImportLimits::new(Self::DEFAULT_MAX_DECOMPRESSED_BYTES)
    }
}

/// Why a file could not be imported as a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImportError {
    /// The pickle itself could not be read (corrupt, truncated, or it names
    /// something that is not allowed).
    #[error(transparent)]
    Pickle(#[from] PickleError),
    /// A compressed joblib file that could not be decompressed.
    #[error("cannot decompress this joblib file: {0}")]
    Decompress(String),
    /// The model is larger than the configured model-size limit.
    #[error("{what} is larger than the model size limit of {} ({limit} bytes); if the model is genuine, raise the model size limit in fleetscore's configuration", mib(*.limit))]
    TooLarge {
        /// What exceeded the limit.
        what: String,
        /// The limit, in bytes ([`ImportLimits::max_decompressed_bytes`]).
        limit: u64,
    },
    /// A format that is recognised but not supported.
    #[error("{0}")]
    UnsupportedFormat(String),
    /// The objects in the pickle do not form a supported model.
    #[error("{0}")]
    Model(String),
    /// The fitted model is not internally consistent.
    #[error(transparent)]
    Invalid(#[from] InvalidModel),
}

/// `n` bytes in MiB (or KiB below 1 MiB), for messages.
fn mib(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n as f64 / f64::from(1u32 << 20))
    } else {
        format!("{} KiB", n as f64 / 1024.0)
    }
}

/// Reads a scikit-learn model from the bytes of a pickle or `joblib.dump`
/// file (uncompressed, zlib or gzip), with the default [`ImportLimits`].
/// Nothing in the file is executed.
pub fn import(bytes: &[u8]) -> Result<Model, ImportError> {
    import_with_limits(bytes, &ImportLimits::default())
}

/// As [`import`], within `limits` (the server and CLI pass the configured
/// model-size limit).
pub fn import_with_limits(bytes: &[u8], limits: &ImportLimits) -> Result<Model, ImportError> {
    let data = decompress_with_limits(bytes, limits)?;
    let value = pickle::load_with_limit(&data, limits.max_heap_bytes())?;
    translate_with_limits(&value, limits)
}

/// Undoes joblib's compression with the default [`ImportLimits`]; see
/// [`decompress_with_limits`].
pub fn decompress(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, ImportError> {
    decompress_with_limits(bytes, &ImportLimits::default())
}

/// Undoes joblib's compression, recognised by magic bytes; plain pickles
/// are returned as they are. Decompression stops as soon as the output
/// passes `limits.max_decompressed_bytes`, so a bomb costs at most the
/// limit; a plain pickle larger than the limit is refused too.
pub fn decompress_with_limits<'a>(
    bytes: &'a [u8],
    limits: &ImportLimits,
) -> Result<std::borrow::Cow<'a, [u8]>, ImportError> {
    let max = limits.max_decompressed_bytes;
    let limited = |r: &mut dyn Read| -> Result<Vec<u8>, ImportError> {
        let mut out = Vec::new();
        r.take(max.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| ImportError::Decompress(e.to_string()))?;
        if out.len() as u64 > max {
            return Err(ImportError::TooLarge {
                what: format!(
                    "this compressed joblib file ({} bytes) expands to more than the limit: it",
                    bytes.len()
                ),
                limit: max,
            });
        }
        Ok(out)
    };
    match bytes {
        [0x78, b, ..] if (u16::from(0x78u8) << 8 | u16::from(*b)) % 31 == 0 => {
            Ok(limited(&mut flate2::read::ZlibDecoder::new(bytes))?.into())
        }
        [0x1f, 0x8b, ..] => Ok(limited(&mut flate2::read::MultiGzDecoder::new(bytes))?.into()),
        [b'B', b'Z', b'h', ..] => Err(unsupported_compression("bz2")),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Err(unsupported_compression("xz")),
        [0x5d, 0, 0, ..] => Err(unsupported_compression("lzma")),
        [0x04, 0x22, 0x4d, 0x18, ..] => Err(unsupported_compression("lz4")),
        [b'Z', b'F', ..] => Err(ImportError::UnsupportedFormat(
            "this is a joblib file from joblib 0.9 or older (compressed `ZF` format, arrays in separate .npy files); load it with joblib and re-save it with a current joblib.dump or pickle.dump".into(),
        )),
        _ if bytes.len() as u64 > max => Err(ImportError::TooLarge {
            what: format!("this pickle ({} bytes)", bytes.len()),
            limit: max,
        }),
        _ => Ok(bytes.into()),
    }
}

fn unsupported_compression(kind: &str) -> ImportError {
    ImportError::UnsupportedFormat(format!(
        "this joblib file is compressed with {kind}, which fleetscore does not read; re-save it uncompressed or with compress=('zlib', 3) or ('gzip', 3)"
    ))
}

/// Maximum nesting of pipelines accepted (a pipeline inside a pipeline is
/// flattened; deeper nesting is refused rather than recursed into).
const MAX_DEPTH: usize = 8;
/// Maximum estimators visited in one model. Pickles share objects, so a
/// small file can list the same sub-pipeline many times at every level;
/// without a bound the walk is exponential.
const MAX_STEPS: usize = 256;

/// Translates an unpickled estimator into a [`Model`], with the default
/// [`ImportLimits`].
pub fn translate(value: &Value) -> Result<Model, ImportError> {
    translate_with_limits(value, &ImportLimits::default())
}

/// Translates an unpickled estimator into a [`Model`], checking the
/// attributes only the pickle holds (`_n_support`, `support_`,
/// `shape_fit_`, `n_features_in_`, array shapes) and then the model itself
/// ([`Model::validate`]).
pub fn translate_with_limits(value: &Value, limits: &ImportLimits) -> Result<Model, ImportError> {
    let mut steps = Vec::new();
    let mut detector = None;
    let mut visited = 0;
    let mut cx = Walk {
        steps: &mut steps,
        detector: &mut detector,
        visited: &mut visited,
        limits,
    };
    collect(value, &mut cx, 0)?;
    let (detector, n_features) = detector.ok_or_else(|| {
        ImportError::Model(format!(
            "the model has no final estimator: the last step must be a detector, regressor or classifier (supported: {})",
            pickle::SUPPORTED
        ))
    })?;
    let model = Model {
        n_features: steps::input_width(&steps, n_features),
        steps,
        estimator: detector,
    };
    model.validate()?;
    Ok(model)
}

/// What the walk over a pipeline collects, and the limits it checks.
struct Walk<'a> {
    steps: &'a mut Vec<Scaler>,
    detector: &'a mut Option<(Detector, usize)>,
    visited: &'a mut usize,
    limits: &'a ImportLimits,
}

fn collect(value: &Value, cx: &mut Walk<'_>, depth: usize) -> Result<(), ImportError> {
    let limits = cx.limits;
    if depth > MAX_DEPTH {
        return Err(ImportError::Model(
            "pipelines nested more than 8 deep".into(),
        ));
    }
    *cx.visited += 1;
    if *cx.visited > MAX_STEPS {
        return Err(ImportError::Model(format!(
            "the model has more than {MAX_STEPS} pipeline steps"
        )));
    }
    if let Some((last, _)) = cx.detector.as_ref() {
        return Err(ImportError::Model(format!(
            "a step follows the {}; the final estimator must be the last step of the pipeline",
            last.name()
        )));
    }
    // `None` and 'passthrough' are identity steps in a Pipeline.
    match value {
        Value::None => return Ok(()),
        v if v.as_text().as_deref() == Some("passthrough") => return Ok(()),
        _ => {}
    }
    let Some(Class::Sklearn(est)) = value.object_class() else {
        return Err(ImportError::Model(format!(
            "expected a scikit-learn estimator, found a {} (supported: {})",
            describe_value(value),
            pickle::SUPPORTED
        )));
    };
    let state = value.object_state().ok_or_else(|| {
        ImportError::Model(format!(
            "the {est:?} has no fitted state (was it saved before fit?)"
        ))
    })?;
    let attrs = Attrs {
        est,
        state: &state,
        limits,
    };
    match est {
        Estimator::Pipeline => {
            let list = attrs.get("steps")?;
            let items = list
                .sequence_items()
                .ok_or_else(|| attrs.bad("steps", "is not a list"))?;
            for step in items {
                let pair = step
                    .sequence_items()
                    .filter(|p| p.len() == 2)
                    .ok_or_else(|| {
                        attrs.bad(
                            "steps",
                            "holds an item that is not a (name, estimator) pair",
                        )
                    })?;
                collect(&pair[1], cx, depth + 1)?;
            }
        }
        Estimator::StandardScaler
        | Estimator::MinMaxScaler
        | Estimator::RobustScaler
        | Estimator::MaxAbsScaler
        | Estimator::Normalizer
        | Estimator::Binarizer
        | Estimator::SimpleImputer
        | Estimator::Pca
        | Estimator::PolynomialFeatures
        | Estimator::QuantileTransformer
        | Estimator::PowerTransformer => {
            let step = steps::step(&attrs, cx.steps)?;
            cx.steps.push(step);
        }
        Estimator::OneClassSvm => {
            *cx.detector = Some(one_class_svm(&attrs)?);
        }
        Estimator::IsolationForest => {
            *cx.detector = Some(trees::isolation_forest(&attrs)?);
        }
        Estimator::DecisionTreeRegressor
        | Estimator::ExtraTreeRegressor
        | Estimator::RandomForestRegressor
        | Estimator::ExtraTreesRegressor
        | Estimator::DecisionTreeClassifier
        | Estimator::ExtraTreeClassifier
        | Estimator::RandomForestClassifier
        | Estimator::ExtraTreesClassifier => {
            *cx.detector = Some(trees::forest(&attrs, est)?);
        }
        Estimator::GradientBoostingRegressor | Estimator::GradientBoostingClassifier => {
            *cx.detector = Some(trees::gradient_boosting(&attrs, est)?);
        }
        Estimator::LocalOutlierFactor => {
            *cx.detector = Some(lof::local_outlier_factor(&attrs)?);
        }
        Estimator::HistGradientBoostingRegressor | Estimator::HistGradientBoostingClassifier => {
            *cx.detector = Some(hgb::hist_gradient_boosting(&attrs, est)?);
        }
        Estimator::Svc => {
            *cx.detector = Some(svc::svc(&attrs, false)?);
        }
        Estimator::Svr => {
            *cx.detector = Some(svc::svr(&attrs, false)?);
        }
        Estimator::NuSvc => {
            *cx.detector = Some(svc::svc(&attrs, true)?);
        }
        Estimator::NuSvr => {
            *cx.detector = Some(svc::svr(&attrs, true)?);
        }
        Estimator::LinearRegression
        | Estimator::Ridge
        | Estimator::Lasso
        | Estimator::ElasticNet
        | Estimator::SgdRegressor
        | Estimator::LinearSvr
        | Estimator::LogisticRegression
        | Estimator::SgdClassifier
        | Estimator::LinearSvc => {
            *cx.detector = Some(linear::linear(&attrs, est)?);
        }
        Estimator::SgdOneClassSvm => {
            *cx.detector = Some(linear::sgd_one_class_svm(&attrs)?);
        }
        Estimator::EllipticEnvelope => {
            *cx.detector = Some(linear::elliptic_envelope(&attrs)?);
        }
        #[allow(unreachable_patterns)]
        _ => {
            return Err(ImportError::Model(format!(
                "{} is not supported by the native reader yet (supported: {})",
                Class::Sklearn(est).python_name(),
                pickle::SUPPORTED
            )))
        }
    }
    Ok(())
}

fn one_class_svm(a: &Attrs) -> Result<(Detector, usize), ImportError> {
    let svc::Libsvm {
        kernel,
        gamma,
        coef0,
        degree,
        support_vectors,
        n_sv,
        n_features,
    } = svc::libsvm(a, "OneClassSVM", "one_class")?;
    // libsvm's one-class model has nr_class - 1 = 1 row of coefficients,
    // one per support vector (set_model: sv_coef[0] = dual_coef + 0 * l),
    // and one rho.
    let (dual_coef, intercept) = svc::one_row(a, n_sv, "a one-class SVM")?;
    check_n_support(a, n_sv)?;
    let svm = OneClassSvm {
        kernel,
        gamma,
        coef0,
        degree,
        support_vectors,
        dual_coef,
        intercept,
    };
    Ok((Detector::OneClassSvm(svm), n_features))
}

/// `_n_support`, the number of support vectors per class, must agree
/// with `support_vectors_`. scikit-learn refuses a model whose
/// `n_support_.sum()` differs from `support_vectors_.shape[0]`
/// (`BaseLibSVM._validate_for_predict`, the fix for CVE-2020-28975; for a
/// one-class model `n_support_` is `[_n_support[0]]`). libsvm sizes its
/// model by `len(_n_support)` (`nr_class`, 2 for one-class: one row of
/// coefficients, one rho), so the length must be 2 and no count negative.
///
/// Pickles from scikit-learn 0.22 and older have `n_support_` instead;
/// for one-class models those releases never wrote its values
/// (`copy_nSV` returns early when the model has no labels, leaving
/// `np.empty` memory), so only its shape is checked.
fn check_n_support(a: &Attrs, n_sv: usize) -> Result<(), ImportError> {
    let (name, legacy) = match (a.find("_n_support"), a.find("n_support_")) {
        (Some(_), _) => ("_n_support", false),
        (None, Some(_)) => ("n_support_", true),
        (None, None) => return Ok(()),
    };
    let arr = a.array(name)?;
    if arr.shape.len() != 1 || !matches!(arr.dtype.kind, 'i' | 'u') {
        return Err(a.invalid(
            name,
            format!(
                "is not a 1-D integer array (shape {:?}, dtype {}{})",
                arr.shape, arr.dtype.kind, arr.dtype.itemsize
            ),
        ));
    }
    if arr.len() != 2 {
        return Err(a.invalid(
            name,
            format!(
                "has {} entries, but libsvm's one-class model has 2 (scikit-learn writes [n_SV, n_SV])",
                arr.len()
            ),
        ));
    }
    if legacy {
        return Ok(());
    }
    let counts = a.to_f64(name, &arr)?;
    if let Some(i) = counts.iter().position(|&c| c < 0.0) {
        return Err(a.invalid(
            format!("{name}[{i}]"),
            format!(
                "is {}, but a count of support vectors cannot be negative",
                counts[i]
            ),
        ));
    }
    if counts[0] != n_sv as f64 {
        return Err(a.invalid(
            name,
            format!(
                "says {} support vectors but support_vectors_ has {n_sv} rows (scikit-learn refuses this model too: \"The internal representation of OneClassSVM was altered\")",
                counts[0]
            ),
        ));
    }
    Ok(())
}

/// `shape_fit_` is the training data's `X.shape`: its width is the
/// model's, and the support vectors are some of its rows. Returns the
/// number of training rows when present.
fn check_shape_fit(
    a: &Attrs,
    n_sv: usize,
    n_features: usize,
) -> Result<Option<usize>, ImportError> {
    let Some(v) = a.find("shape_fit_") else {
        return Ok(None);
    };
    let Some(shape) = v.shape() else {
        return Err(a.invalid("shape_fit_", "is not a tuple of non-negative integers"));
    };
    let [rows, cols] = shape[..] else {
        return Err(a.invalid(
            "shape_fit_",
            format!("is {shape:?}, not the (rows, features) of a 2-D training set"),
        ));
    };
    if cols != n_features {
        return Err(a.invalid(
            "shape_fit_",
            format!(
                "says the model was fitted on {cols} features but its support vectors have {n_features}"
            ),
        ));
    }
    if n_sv > rows {
        return Err(a.invalid(
            "shape_fit_",
            format!(
                "says {rows} training rows, fewer than the {n_sv} support vectors taken from them"
            ),
        ));
    }
    Ok(Some(rows))
}

/// `support_` holds the training-row index of each support vector.
/// libsvm sizes its model by it (`set_model`: `model->l =
/// support.shape[0]`, then reads that many support vectors and
/// coefficients), so its length must match; each index lies in the
/// training set.
fn check_support(a: &Attrs, n_sv: usize, n_samples: Option<usize>) -> Result<(), ImportError> {
    if a.find("support_").is_none() {
        return Ok(());
    }
    let arr = a.array("support_")?;
    if arr.shape.len() != 1 || !matches!(arr.dtype.kind, 'i' | 'u') {
        return Err(a.invalid("support_", "is not a 1-D integer array"));
    }
    if arr.len() != n_sv {
        return Err(a.invalid(
            "support_",
            format!(
                "has {} indices but support_vectors_ has {n_sv} rows (libsvm would read past the arrays)",
                arr.len()
            ),
        ));
    }
    let idx = a.to_f64("support_", &arr)?;
    let bound = n_samples.map_or(f64::INFINITY, |n| n as f64);
    if let Some(i) = idx.iter().position(|&x| x < 0.0 || x >= bound) {
        return Err(a.invalid(
            format!("support_[{i}]"),
            format!(
                "is {}, not the index of a training row (shape_fit_ has {} rows)",
                idx[i],
                n_samples.unwrap_or(0)
            ),
        ));
    }
    Ok(())
}

/// The `__dict__` of one estimator, with accessors that name the estimator
/// and attribute in their errors.
struct Attrs<'a> {
    est: Estimator,
    state: &'a Value,
    limits: &'a ImportLimits,
}

impl Attrs<'_> {
    fn name(&self) -> &'static str {
        self.est.class_name()
    }

    fn bad(&self, attr: &str, why: &str) -> ImportError {
        ImportError::Model(format!("{}.{attr} {why}", self.name()))
    }

    /// An attribute that is present and readable but inconsistent.
    fn invalid(&self, attr: impl Into<String>, problem: impl Into<String>) -> ImportError {
        ImportError::Invalid(InvalidModel::new(self.name(), attr, problem))
    }

    /// `n_features_in_` (scikit-learn 0.24 and later), when present, is
    /// the width of the estimator's arrays.
    fn check_n_features_in(&self, width: usize) -> Result<(), ImportError> {
        let Some(v) = self.find("n_features_in_") else {
            return Ok(());
        };
        match v.as_i64() {
            Some(n) if usize::try_from(n).ok() == Some(width) => Ok(()),
            Some(n) => Err(self.invalid(
                "n_features_in_",
                format!("is {n}, but the fitted arrays have {width} features"),
            )),
            None => Err(self.invalid("n_features_in_", "is not an integer")),
        }
    }

    /// The elements of `arr` as f64, refusing arrays whose f64 copy would
    /// pass the model-size limit (a 1-byte dtype grows eightfold).
    fn to_f64(&self, attr: &str, arr: &NdArray) -> Result<Vec<f64>, ImportError> {
        let bytes = (arr.len() as u64).saturating_mul(8);
        if bytes > self.limits.max_decompressed_bytes {
            return Err(ImportError::TooLarge {
                what: format!("{}.{attr} ({} values as f64)", self.name(), arr.len()),
                limit: self.limits.max_decompressed_bytes,
            });
        }
        arr.to_f64().map_err(|e| self.bad(attr, &e))
    }

    fn find(&self, attr: &str) -> Option<Value> {
        self.state.dict_get(attr)
    }

    fn get(&self, attr: &str) -> Result<Value, ImportError> {
        self.find(attr).ok_or_else(|| {
            ImportError::Model(format!(
                "the {} has no attribute `{attr}` (is it fitted, and saved by scikit-learn 0.18 or later?)",
                self.name()
            ))
        })
    }

    fn bool_or(&self, attr: &str, default: bool) -> Result<bool, ImportError> {
        match self.find(attr) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(b),
            Some(Value::Int(i)) => Ok(i != 0),
            Some(_) => Err(self.bad(attr, "is not a boolean")),
        }
    }

    fn f64_or(&self, attr: &str, default: f64) -> Result<f64, ImportError> {
        match self.find(attr) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.bad(attr, "is not a number")),
        }
    }

    fn array(&self, attr: &str) -> Result<NdArray, ImportError> {
        let v = self.get(attr)?;
        NdArray::from_value(&v)
            .map_err(|e| self.bad(attr, &format!("is not a usable numpy array: {e}")))
    }

    /// The first of two attribute names present (a release's name, or an
    /// older one), else the second.
    fn either<'n>(&self, first: &'n str, second: &'n str) -> &'n str {
        if self.find(first).is_some() {
            first
        } else {
            second
        }
    }

    fn vec(&self, attr: &str) -> Result<Vec<f64>, ImportError> {
        let arr = self.array(attr)?;
        self.to_f64(attr, &arr)
    }

    fn opt_vec(&self, attr: &str) -> Result<Option<Vec<f64>>, ImportError> {
        match self.find(attr) {
            None | Some(Value::None) => Ok(None),
            Some(Value::Float(f)) => Ok(Some(vec![f])),
            Some(_) => self.vec(attr).map(Some),
        }
    }
}

fn describe_value(v: &Value) -> String {
    match v.object_class() {
        Some(c) => c.python_name().to_string(),
        None => v.kind().to_string(),
    }
}
