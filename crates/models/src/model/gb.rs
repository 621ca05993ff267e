//! `GradientBoostingRegressor` and `GradientBoostingClassifier`: an
//! initial raw prediction plus, stage by stage, `learning_rate` times each
//! tree's leaf value, added as scikit-learn's `predict_stages` adds them
//! (`out += scale * value`, a multiply then an add, never fused).

use serde::{Deserialize, Serialize};

use super::forest::{argmax, max};
use super::tree::Tree;
use super::{InvalidModel, Kind, NO_LABEL};

/// How the raw predictions become the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GbLoss {
    /// A regression loss (squared, absolute, huber, quantile): the raw
    /// prediction is the prediction.
    Regression,
    /// Binary log-loss: `p1 = expit(raw)`. From 1.4, `raw >= 0` predicts
    /// the second class; before, `argmax([1 - p1, p1])` (a tie is the
    /// first class).
    Binomial {
        /// Predict from the raw value's sign (1.4 and later).
        sign_rule: bool,
    },
    /// Binary exponential loss: `p1 = expit(2 raw)`, `raw >= 0` predicts
    /// the second class.
    Exponential,
    /// Multinomial log-loss: `softmax(raw)`. From 1.4 the prediction is
    /// the argmax of the raw values, before of the probabilities.
    Multinomial {
        /// Predict from the raw values (1.4 and later).
        raw_argmax: bool,
    },
}

/// A fitted gradient boosting model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradientBoosting {
    /// The trees, stage by stage, `k` per stage.
    pub trees: Vec<Tree>,
    /// Trees per stage: 1, or the number of classes of a multiclass model.
    pub k: usize,
    /// `learning_rate`.
    pub learning_rate: f64,
    /// The initial raw prediction per tree of a stage (the init
    /// estimator's, through the loss's link; zeros for `init='zero'`).
    pub init: Vec<f64>,
    /// How raw predictions become outputs.
    pub loss: GbLoss,
    /// `str(c)` for each of `classes_` (classifiers).
    pub classes: Vec<String>,
}

fn expit(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl GradientBoosting {
    /// scikit-learn's class name.
    pub fn class_name(&self) -> &'static str {
        if self.loss == GbLoss::Regression {
            "GradientBoostingRegressor"
        } else {
            "GradientBoostingClassifier"
        }
    }

    /// What it predicts.
    pub fn kind(&self) -> Kind {
        if self.loss == GbLoss::Regression {
            Kind::Regressor
        } else {
            Kind::Classifier
        }
    }

    /// Stages of `k` trees.
    pub fn n_stages(&self) -> usize {
        self.trees.len().checked_div(self.k).unwrap_or(0)
    }

    /// A short description with its sizes.
    pub fn describe(&self) -> String {
        let nodes: usize = self.trees.iter().map(Tree::len).sum();
        let classes = if self.classes.is_empty() {
            String::new()
        } else {
            format!(", {} classes", self.classes.len())
        };
        format!(
            "{}({} stages of {} tree{}, {nodes} nodes{classes})",
            self.class_name(),
            self.n_stages(),
            self.k,
            if self.k == 1 { "" } else { "s" }
        )
    }

    /// Checks the model for rows of `n` features.
    pub fn validate(&self, n: usize) -> Result<(), InvalidModel> {
        let est = self.class_name();
        if self.k == 0 || self.trees.is_empty() || !self.trees.len().is_multiple_of(self.k) {
            return Err(InvalidModel::new(
                est,
                "estimators_",
                format!(
                    "holds {} trees, not whole stages of {}",
                    self.trees.len(),
                    self.k
                ),
            ));
        }
        if self.init.len() != self.k {
            return Err(InvalidModel::new(
                est,
                "init_",
                format!(
                    "gives {} raw values for {} trees per stage",
                    self.init.len(),
                    self.k
                ),
            ));
        }
        if !self.learning_rate.is_finite() || self.init.iter().any(|v| !v.is_finite()) {
            return Err(InvalidModel::new(
                est,
                "learning_rate",
                "or the initial prediction is not finite",
            ));
        }
        let classes = match self.loss {
            GbLoss::Regression => 0,
            GbLoss::Binomial { .. } | GbLoss::Exponential => 2,
            GbLoss::Multinomial { .. } => self.k,
        };
        if self.classes.len() != classes || (classes > 0 && classes < 2) {
            return Err(InvalidModel::new(
                est,
                "classes_",
                format!(
                    "has {} classes, but the loss needs {classes}",
                    self.classes.len()
                ),
            ));
        }
        if matches!(self.loss, GbLoss::Multinomial { .. }) && self.k < 3 {
            return Err(InvalidModel::new(
                est,
                "estimators_",
                "a multinomial model has 3 or more trees per stage",
            ));
        }
        for (i, t) in self.trees.iter().enumerate() {
            t.validate(
                est,
                &format!("estimators_[{}, {}].tree_", i / self.k, i % self.k),
                n,
            )?;
            if t.n_values != 1 {
                return Err(InvalidModel::new(
                    est,
                    format!("estimators_[{}, {}].tree_.value", i / self.k, i % self.k),
                    "has more than one value per node; boosting trees are regression trees",
                ));
            }
        }
        Ok(())
    }

    /// Scores and labels of rows of `n` features. NaN rows, which
    /// scikit-learn refuses, get NaN and no label.
    pub fn evaluate(&self, xs: &[f64], n: usize, score: &mut [f64], label: &mut [u32]) {
        let k = self.k;
        let mut raw = vec![0.0; k];
        let mut p = vec![0.0; k];
        for ((x, s), l) in xs
            .chunks_exact(n)
            .zip(score.iter_mut())
            .zip(label.iter_mut())
        {
            if x.iter().any(|v| v.is_nan()) {
                *s = f64::NAN;
                *l = NO_LABEL;
                continue;
            }
            raw.copy_from_slice(&self.init);
            for stage in self.trees.chunks_exact(k) {
                for (r, t) in raw.iter_mut().zip(stage) {
                    *r += self.learning_rate * t.value[t.leaf(x)];
                }
            }
            match self.loss {
                GbLoss::Regression => {
                    *s = raw[0];
                    *l = NO_LABEL;
                }
                GbLoss::Binomial { sign_rule } => {
                    let p1 = expit(raw[0]);
                    let p0 = 1.0 - p1;
                    let second = if sign_rule { raw[0] >= 0.0 } else { p1 > p0 };
                    *l = u32::from(second);
                    *s = if p1 > p0 { p1 } else { p0 };
                }
                GbLoss::Exponential => {
                    let p1 = expit(2.0 * raw[0]);
                    let p0 = 1.0 - p1;
                    *l = u32::from(raw[0] >= 0.0);
                    *s = if p1 > p0 { p1 } else { p0 };
                }
                GbLoss::Multinomial { raw_argmax } => {
                    // sklearn.utils.extmath.softmax: subtract the row's
                    // max, exp, divide by the sum.
                    let m = max(&raw);
                    for (p, r) in p.iter_mut().zip(&raw) {
                        *p = (r - m).exp();
                    }
                    let sum = super::tree::numpy_sum(&p);
                    p.iter_mut().for_each(|p| *p /= sum);
                    *l = argmax(if raw_argmax { &raw } else { &p }) as u32;
                    *s = max(&p);
                }
            }
        }
    }
}
