//! Translation of unpickled scikit-learn objects into native [`Model`]s.
//!
//! The restricted unpickler ([`crate::pickle`]) yields allow-listed objects
//! with their `__dict__`; this module reads the fitted attributes each
//! estimator's `transform`/`decision_function` uses, accepting the names of
//! every scikit-learn release since 0.18 (`_dual_coef_` or `dual_coef_`,
//! `_intercept_` or `intercept_`, `_gamma` or a numeric `gamma`), and checks
//! that shapes agree.

use std::io::Read;

use crate::model::{Detector, Kernel, Model, OneClassSvm, Scaler};
use crate::pickle::{self, Class, Estimator, NdArray, PickleError, Value};

/// Largest decompressed joblib stream accepted (guards against
/// decompression bombs). Real per-device models are kilobytes.
pub const MAX_DECOMPRESSED: u64 = 1 << 30;

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
    /// A format that is recognised but not supported.
    #[error("{0}")]
    UnsupportedFormat(String),
    /// The objects in the pickle do not form a supported model.
    #[error("{0}")]
    Model(String),
}

/// Reads a scikit-learn model from the bytes of a pickle or `joblib.dump`
/// file (uncompressed, zlib or gzip). Nothing in the file is executed.
pub fn import(bytes: &[u8]) -> Result<Model, ImportError> {
    let data = decompress(bytes)?;
    let value = pickle::load(&data)?;
    translate(&value)
}

/// Undoes joblib's compression, recognised by magic bytes; plain pickles
/// are returned as they are.
pub fn decompress(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, ImportError> {
    let limited = |r: &mut dyn Read| -> Result<Vec<u8>, ImportError> {
        let mut out = Vec::new();
        r.take(MAX_DECOMPRESSED + 1)
            .read_to_end(&mut out)
            .map_err(|e| ImportError::Decompress(e.to_string()))?;
        if out.len() as u64 > MAX_DECOMPRESSED {
            return Err(ImportError::Decompress(format!(
                "it expands to more than {} MiB, which no supported model needs",
                MAX_DECOMPRESSED >> 20
            )));
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

/// Translates an unpickled estimator into a [`Model`].
pub fn translate(value: &Value) -> Result<Model, ImportError> {
    let mut steps = Vec::new();
    let mut detector = None;
    let mut visited = 0;
    collect(value, &mut steps, &mut detector, 0, &mut visited)?;
    let (detector, n_features) = detector.ok_or_else(|| {
        ImportError::Model(format!(
            "the model has no outlier detector: the last step must be a OneClassSVM (supported: {})",
            pickle::SUPPORTED
        ))
    })?;
    let model = Model {
        n_features,
        steps,
        detector,
    };
    model.validate().map_err(ImportError::Model)?;
    Ok(model)
}

fn collect(
    value: &Value,
    steps: &mut Vec<Scaler>,
    detector: &mut Option<(Detector, usize)>,
    depth: usize,
    visited: &mut usize,
) -> Result<(), ImportError> {
    if depth > MAX_DEPTH {
        return Err(ImportError::Model(
            "pipelines nested more than 8 deep".into(),
        ));
    }
    *visited += 1;
    if *visited > MAX_STEPS {
        return Err(ImportError::Model(format!(
            "the model has more than {MAX_STEPS} pipeline steps"
        )));
    }
    if detector.is_some() {
        return Err(ImportError::Model(
            "a step follows the OneClassSVM; the detector must be the last step of the pipeline"
                .into(),
        ));
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
    let attrs = Attrs { est, state: &state };
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
                collect(&pair[1], steps, detector, depth + 1, visited)?;
            }
        }
        Estimator::StandardScaler => {
            let with_mean = attrs.bool_or("with_mean", true)?;
            let with_std = attrs.bool_or("with_std", true)?;
            steps.push(Scaler::StandardScaler {
                mean: if with_mean {
                    attrs.opt_vec("mean_")?
                } else {
                    None
                },
                scale: if with_std {
                    attrs.opt_vec("scale_")?
                } else {
                    None
                },
            });
        }
        Estimator::MinMaxScaler => {
            let clip = if attrs.bool_or("clip", false)? {
                let r = attrs.get("feature_range")?;
                let r = r
                    .sequence_items()
                    .filter(|r| r.len() == 2)
                    .ok_or_else(|| attrs.bad("feature_range", "is not a pair"))?;
                let lo = r[0]
                    .as_f64()
                    .ok_or_else(|| attrs.bad("feature_range", "is not numeric"))?;
                let hi = r[1]
                    .as_f64()
                    .ok_or_else(|| attrs.bad("feature_range", "is not numeric"))?;
                Some((lo, hi))
            } else {
                None
            };
            steps.push(Scaler::MinMaxScaler {
                scale: attrs.vec("scale_")?,
                min: attrs.vec("min_")?,
                clip,
            });
        }
        Estimator::RobustScaler => {
            let with_centering = attrs.bool_or("with_centering", true)?;
            let with_scaling = attrs.bool_or("with_scaling", true)?;
            steps.push(Scaler::RobustScaler {
                center: if with_centering {
                    attrs.opt_vec("center_")?
                } else {
                    None
                },
                scale: if with_scaling {
                    attrs.opt_vec("scale_")?
                } else {
                    None
                },
            });
        }
        Estimator::OneClassSvm => {
            *detector = Some(one_class_svm(&attrs)?);
        }
    }
    Ok(())
}

fn one_class_svm(a: &Attrs) -> Result<(Detector, usize), ImportError> {
    let kernel_name = a.get("kernel")?.as_text().ok_or_else(|| {
        a.bad(
            "kernel",
            "is not a string (callable kernels cannot be imported)",
        )
    })?;
    let kernel = match kernel_name.as_str() {
        "rbf" => Kernel::Rbf,
        "linear" => Kernel::Linear,
        "poly" => Kernel::Poly,
        "sigmoid" => Kernel::Sigmoid,
        other => {
            return Err(ImportError::Model(format!(
            "OneClassSVM kernel {other:?} is not supported (supported: rbf, linear, poly, sigmoid)"
        )))
        }
    };
    if a.bool_or("_sparse", false)? {
        return Err(ImportError::Model(
            "this OneClassSVM was fitted on sparse data; refit it on a dense array".into(),
        ));
    }
    // `_gamma` is the value libsvm used (fit resolves 'scale' and 'auto');
    // very old pickles may only have a numeric `gamma`.
    let gamma = match a.find("_gamma") {
        Some(g) => g
            .as_f64()
            .ok_or_else(|| a.bad("_gamma", "is not a number"))?,
        None => a.get("gamma")?.as_f64().ok_or_else(|| {
            a.bad(
                "gamma",
                "is 'scale' or 'auto' but `_gamma` (its fitted value) is missing",
            )
        })?,
    };
    let coef0 = a.f64_or("coef0", 0.0)?;
    let degree = a.find("degree").map_or(Ok(3), |d| {
        d.as_i64()
            .or_else(|| d.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .and_then(|d| i32::try_from(d).ok())
            .ok_or_else(|| a.bad("degree", "is not an integer"))
    })?;
    let sv = a.array("support_vectors_")?;
    let (n_sv, n_features) = match sv.shape[..] {
        [r, c] => (r, c),
        _ => return Err(a.bad("support_vectors_", "is not a 2-D array")),
    };
    let support_vectors = sv.to_f64().map_err(|e| a.bad("support_vectors_", &e))?;
    let dual = a.array_either("_dual_coef_", "dual_coef_")?;
    let dual_coef = dual.to_f64().map_err(|e| a.bad("dual_coef_", &e))?;
    if dual_coef.len() != n_sv {
        return Err(a.bad(
            "dual_coef_",
            &format!("has {} values for {n_sv} support vectors", dual_coef.len()),
        ));
    }
    let icpt = a.array_either("_intercept_", "intercept_")?;
    let icpt = icpt.to_f64().map_err(|e| a.bad("intercept_", &e))?;
    let [intercept] = icpt[..] else {
        return Err(a.bad("intercept_", "does not hold exactly one value"));
    };
    if let Some(n) = a.find("n_features_in_").and_then(|v| v.as_i64()) {
        if usize::try_from(n).ok() != Some(n_features) {
            return Err(a.bad(
                "n_features_in_",
                "disagrees with the support vectors' width",
            ));
        }
    }
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

/// The `__dict__` of one estimator, with accessors that name the estimator
/// and attribute in their errors.
struct Attrs<'a> {
    est: Estimator,
    state: &'a Value,
}

impl Attrs<'_> {
    fn name(&self) -> &'static str {
        match self.est {
            Estimator::Pipeline => "Pipeline",
            Estimator::StandardScaler => "StandardScaler",
            Estimator::MinMaxScaler => "MinMaxScaler",
            Estimator::RobustScaler => "RobustScaler",
            Estimator::OneClassSvm => "OneClassSVM",
        }
    }

    fn bad(&self, attr: &str, why: &str) -> ImportError {
        ImportError::Model(format!("{}.{attr} {why}", self.name()))
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

    fn array_either(&self, first: &str, second: &str) -> Result<NdArray, ImportError> {
        if self.find(first).is_some() {
            self.array(first)
        } else {
            self.array(second)
        }
    }

    fn vec(&self, attr: &str) -> Result<Vec<f64>, ImportError> {
        self.array(attr)?.to_f64().map_err(|e| self.bad(attr, &e))
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
