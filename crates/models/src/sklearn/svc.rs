//! `SVC`/`NuSVC` and `SVR`/`NuSVR` from their pickles, every release from
//! 0.20.
//!
//! What libsvm's `predict` reads: `support_vectors_`, `_n_support` (per
//! class; `n_support_` up to 0.21), `_dual_coef_` and `_intercept_` (the
//! unflipped copies a binary SVC keeps beside its public, sign-flipped
//! `dual_coef_`/`intercept_`; all releases since 0.20 write them),
//! `_gamma`, `coef0`, `degree`, and for Platt scaling `_probA`/`_probB`
//! (`probA_`/`probB_` up to 0.23). The classifier adds `classes_`,
//! `decision_function_shape` (`None` before 0.19 means `'ovo'`) and
//! `break_ties` (0.22 and later). Models fitted on sparse data, with a
//! precomputed or callable kernel, are refused.

use crate::model::{Estimator as Native, Kernel, Svc, Svr};
use crate::pickle::Value;

use super::{check_shape_fit, check_support, Attrs, ImportError};

/// What every libsvm estimator's pickle gives (OneClassSVM's too).
pub(super) struct Libsvm {
    pub(super) kernel: Kernel,
    pub(super) gamma: f64,
    pub(super) coef0: f64,
    pub(super) degree: i32,
    pub(super) support_vectors: Vec<f64>,
    pub(super) n_sv: usize,
    pub(super) n_features: usize,
}

/// The kernel, its parameters and the support vectors, after checking
/// `_impl` (the libsvm type) and `_sparse`.
pub(super) fn libsvm(a: &Attrs, class: &str, impl_name: &str) -> Result<Libsvm, ImportError> {
    if let Some(v) = a.find("_impl") {
        match v.as_text() {
            Some(t) if t == impl_name => {}
            Some(t) => {
                return Err(a.invalid(
                    "_impl",
                    format!("is {t:?}, but this {class} needs libsvm's {impl_name:?}"),
                ))
            }
            None => return Err(a.bad("_impl", "is not a string")),
        }
    }
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
        "precomputed" => {
            return Err(ImportError::Model(format!(
                "this {class} uses kernel='precomputed': it scores rows of kernel values against its training set, not readings; refit it with a named kernel (rbf, linear, poly or sigmoid)"
            )))
        }
        other => {
            return Err(ImportError::Model(format!(
                "{class} kernel {other:?} is not supported (supported: rbf, linear, poly, sigmoid)"
            )))
        }
    };
    if a.bool_or("_sparse", false)? {
        return Err(ImportError::Model(format!(
            "this {class} was fitted on sparse data; refit it on a dense array"
        )));
    }
    // `_gamma` is the value libsvm used (fit resolves 'scale' and 'auto').
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
    let [n_sv, n_features] = sv.shape[..] else {
        return Err(a.bad("support_vectors_", "is not a 2-D array"));
    };
    let support_vectors = a.to_f64("support_vectors_", &sv)?;
    let n_samples = check_shape_fit(a, n_sv, n_features)?;
    check_support(a, n_sv, n_samples)?;
    a.check_n_features_in(n_features)?;
    Ok(Libsvm {
        kernel,
        gamma,
        coef0,
        degree,
        support_vectors,
        n_sv,
        n_features,
    })
}

/// `_n_support` (or `n_support_` up to 0.21) as counts: a 1-D integer
/// array of `len` entries (a classifier's class count; 2 for a
/// regressor, libsvm's layout). `None` when absent, or for a regressor
/// with only the legacy name (0.21 and older never wrote a regressor's
/// counts: `copy_nSV` left `np.empty` memory).
fn n_support(a: &Attrs, len: usize, regressor: bool) -> Result<Option<Vec<f64>>, ImportError> {
    let (name, legacy) = match (a.find("_n_support"), a.find("n_support_")) {
        (Some(_), _) => ("_n_support", false),
        (None, Some(_)) => ("n_support_", true),
        (None, None) => return Ok(None),
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
    if arr.len() != len {
        return Err(a.invalid(
            name,
            if regressor {
                format!(
                    "has {} entries, but a regressor has 2 (libsvm's two-class layout: scikit-learn writes [n_SV, n_SV])",
                    arr.len()
                )
            } else {
                format!("has {} entries, but the model has {len} classes", arr.len())
            },
        ));
    }
    if legacy && regressor {
        return Ok(None);
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
    Ok(Some(counts))
}

/// The first of two attribute names present (each release writes one).
/// The coefficients and intercept of a libsvm model with one row of
/// coefficients (a regressor, a one-class SVM): `_dual_coef_` of shape
/// `[1, n_sv]` and one `_intercept_` (libsvm's `-rho`); `what` names the
/// model in messages.
pub(super) fn one_row(a: &Attrs, n_sv: usize, what: &str) -> Result<(Vec<f64>, f64), ImportError> {
    let dual_name = a.either("_dual_coef_", "dual_coef_");
    let dual = a.array(dual_name)?;
    if dual.shape[..] != [1, n_sv] {
        return Err(a.invalid(
            dual_name,
            format!(
                "has shape {:?}, but {what} with {n_sv} support vectors has shape [1, {n_sv}]",
                dual.shape
            ),
        ));
    }
    let dual_coef = a.to_f64(dual_name, &dual)?;
    let icpt_name = a.either("_intercept_", "intercept_");
    let icpt = a.vec(icpt_name)?;
    let [intercept] = icpt[..] else {
        return Err(a.invalid(
            icpt_name,
            format!(
                "has {} values, but {what} has exactly one (libsvm's -rho)",
                icpt.len()
            ),
        ));
    };
    Ok((dual_coef, intercept))
}

/// `SVC` (`nu` false) or `NuSVC` (`nu` true).
pub(super) fn svc(a: &Attrs, nu: bool) -> Result<(Native, usize), ImportError> {
    let (class, impl_name) = if nu {
        ("NuSVC", "nu_svc")
    } else {
        ("SVC", "c_svc")
    };
    let lib = libsvm(a, class, impl_name)?;
    let n_sv = lib.n_sv;
    let classes = a
        .array("classes_")?
        .to_strings()
        .map_err(|e| a.bad("classes_", &e))?;
    let k = classes.len();
    if k < 2 {
        return Err(a.invalid(
            "classes_",
            format!("has {k} classes; a fitted classifier has at least 2"),
        ));
    }
    let m = k * (k - 1) / 2;
    let counts = n_support(a, k, false)?.ok_or_else(|| {
        ImportError::Model(format!(
            "the {class} has no attribute `_n_support` (is it fitted, and saved by scikit-learn 0.20 or later?)"
        ))
    })?;
    let sum: f64 = counts.iter().sum();
    if sum != n_sv as f64 {
        return Err(a.invalid(
            a.either("_n_support", "n_support_"),
            format!(
                "says {sum} support vectors in all but support_vectors_ has {n_sv} rows (scikit-learn refuses this model too: \"The internal representation of {class} was altered\")"
            ),
        ));
    }
    let n_support = counts.iter().map(|&c| c as u32).collect();
    // A binary model's public dual_coef_ and intercept_ are negated; only
    // the underscored copies are libsvm's.
    let (dual_name, icpt_name) = if k == 2 {
        ("_dual_coef_", "_intercept_")
    } else {
        (
            a.either("_dual_coef_", "dual_coef_"),
            a.either("_intercept_", "intercept_"),
        )
    };
    if k == 2 && (a.find(dual_name).is_none() || a.find(icpt_name).is_none()) {
        return Err(ImportError::Model(format!(
            "the {class} has no `{dual_name}` or `{icpt_name}`: a binary model's public dual_coef_ and intercept_ have their signs flipped, so only the private copies (written by every release since 0.20) can be scored; re-save the fitted model with scikit-learn 0.20 or later"
        )));
    }
    let dual = a.array(dual_name)?;
    if dual.shape[..] != [k - 1, n_sv] {
        return Err(a.invalid(
            dual_name,
            format!(
                "has shape {:?}, but {k} classes and {n_sv} support vectors make [{}, {n_sv}]",
                dual.shape,
                k - 1
            ),
        ));
    }
    let dual_coef = a.to_f64(dual_name, &dual)?;
    let intercept = a.vec(icpt_name)?;
    if intercept.len() != m {
        return Err(a.invalid(
            icpt_name,
            format!(
                "has {} values, but {k} classes make {m} one-vs-one pairs",
                intercept.len()
            ),
        ));
    }
    let ovr = match a.find("decision_function_shape") {
        None | Some(Value::None) => false,
        Some(v) => match v.as_text().as_deref() {
            Some("ovr") => true,
            Some("ovo") => false,
            _ => return Err(a.bad("decision_function_shape", "is not 'ovr', 'ovo' or None")),
        },
    };
    let break_ties = a.bool_or("break_ties", false)?;
    if break_ties && !ovr && k > 2 {
        return Err(ImportError::Model(format!(
            "this {class} has break_ties=True with decision_function_shape='ovo', which scikit-learn refuses to predict with (\"break_ties must be False when decision_function_shape is 'ovo'\"); refit it with decision_function_shape='ovr' or break_ties=False"
        )));
    }
    // predict_proba needs probability=True (1.9's 'deprecated' default
    // means False) and the Platt parameters fit computed.
    let probability = matches!(a.find("probability"), Some(Value::Bool(true)))
        || matches!(a.find("probability"), Some(Value::Int(i)) if i != 0);
    let (pa_name, pb_name) = (a.either("_probA", "probA_"), a.either("_probB", "probB_"));
    let (prob_a, prob_b) = if probability {
        let pa = a.vec(pa_name)?;
        let pb = a.vec(pb_name)?;
        for (name, v) in [(pa_name, &pa), (pb_name, &pb)] {
            if v.len() != m {
                return Err(a.invalid(
                    name,
                    format!(
                        "has {} values, but a model fitted with probability=True has one per pair of classes ({m})",
                        v.len()
                    ),
                ));
            }
        }
        (pa, pb)
    } else {
        (Vec::new(), Vec::new())
    };
    let svc = Svc {
        nu,
        kernel: lib.kernel,
        gamma: lib.gamma,
        coef0: lib.coef0,
        degree: lib.degree,
        classes,
        n_support,
        support_vectors: lib.support_vectors,
        dual_coef,
        intercept,
        ovr,
        break_ties,
        prob_a,
        prob_b,
    };
    Ok((Native::Svc(svc), lib.n_features))
}

/// `SVR` (`nu` false) or `NuSVR` (`nu` true).
pub(super) fn svr(a: &Attrs, nu: bool) -> Result<(Native, usize), ImportError> {
    let (class, impl_name) = if nu {
        ("NuSVR", "nu_svr")
    } else {
        ("SVR", "epsilon_svr")
    };
    let lib = libsvm(a, class, impl_name)?;
    let n_sv = lib.n_sv;
    // libsvm sizes a regressor as two classes: scikit-learn writes
    // [n_SV, n_SV].
    if let Some(counts) = n_support(a, 2, true)? {
        if counts[0] != n_sv as f64 {
            return Err(a.invalid(
                "_n_support",
                format!(
                    "says {} support vectors but support_vectors_ has {n_sv} rows (scikit-learn refuses this model too: \"The internal representation of {class} was altered\")",
                    counts[0]
                ),
            ));
        }
    }
    let (dual_coef, intercept) = one_row(a, n_sv, "a regressor")?;
    let svr = Svr {
        nu,
        kernel: lib.kernel,
        gamma: lib.gamma,
        coef0: lib.coef0,
        degree: lib.degree,
        support_vectors: lib.support_vectors,
        dual_coef,
        intercept,
    };
    Ok((Native::Svr(svr), lib.n_features))
}
