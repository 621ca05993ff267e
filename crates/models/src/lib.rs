//! Models: import from scikit-learn without Python, exact evaluation, and
//! fleetscore's own formats.
//!
//! The path of a model through this crate:
//!
//! ```text
//! pickle / joblib bytes ──► pickle::load ──► sklearn::translate ──► Model
//!   (restricted interpreter:     (allow-listed objects      (scalers + detector,
//!    nothing is executed)          → fitted attributes)       evaluated exactly)
//!                                                               │
//!                  format::to_json (model.fsm, one per version) ◄┤
//!                  pack::Pack (all live models in one file)    ◄┘
//! ```
//!
//! Parity with scikit-learn is the contract: [`Model::decision_function`]
//! reproduces `decision_function` to within a few ulps and
//! [`Model::predict`] reproduces `predict` exactly, including libsvm's rule
//! that a decision of exactly 0.0 is an outlier.
#![deny(missing_docs)]

mod fastexp;
pub mod format;
pub mod model;
pub mod pack;
pub mod pickle;
pub mod sklearn;
pub mod train;

pub use format::FormatError;
pub use model::{is_inlier, Detector, EvalError, InvalidModel, Kernel, Model, OneClassSvm, Scaler};
pub use pack::{Pack, PackEntry};
pub use sklearn::{import as import_sklearn, import_with_limits, ImportError, ImportLimits};
pub use train::{train, FitInfo, Gamma, ScalerChoice, SvmParams, TrainError, TrainParams};
