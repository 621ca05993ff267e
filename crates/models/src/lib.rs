//! Models: import from scikit-learn without Python, exact evaluation, and
//! fleetscore's own formats.
//!
//! The path of a model through this crate:
//!
//! ```text
//! pickle / joblib bytes ──► pickle::load ──► sklearn::translate ──► Model
//!   (restricted interpreter:     (allow-listed objects      (steps + estimator,
//!    nothing is executed)          → fitted attributes)       evaluated exactly)
//!                                                               │
//!                  format::to_json (model.fsm, one per version) ◄┤
//!                  pack::Pack (all live models in one file)    ◄┘
//! ```
//!
//! Parity with scikit-learn is the contract: [`Model::evaluate_into`]
//! reproduces `decision_function` (detectors), `predict` (regressors) or
//! the predicted class's probability (classifiers) to within a few ulps,
//! bit for bit where the arithmetic allows it, and `predict`'s labels
//! exactly, including each detector's rule for a decision of exactly 0.0.
#![deny(missing_docs)]
// `unsafe` only in the SIMD dispatch of `model::svm` and `model::svc`;
// every block says why it is sound
// (`undocumented_unsafe_blocks`, `unsafe_op_in_unsafe_fn` in the workspace lints).
// A library reports through return values and `tracing`, never by printing.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod fastexp;
pub mod format;
pub mod model;
pub mod pack;
pub mod pickle;
pub mod sklearn;
pub mod train;
pub mod train_iforest;

pub use format::FormatError;
pub use model::{
    Detector, Estimator, EvalError, InvalidModel, Kernel, Kind, Model, OneClassSvm, Scaler, Step,
    NO_LABEL,
};
pub use pack::{Pack, PackEntry};
pub use sklearn::{import as import_sklearn, import_with_limits, ImportError, ImportLimits};
pub use train::{train, FitInfo, Gamma, ScalerChoice, SvmParams, TrainError, TrainParams};
pub use train_iforest::{train_iforest, Contamination, IForestFit, IForestParams, MaxSamples};
