"""A team's own module, as a data scientist ships it beside their models:
a custom transformer, and estimators that misbehave in the ways the
runtime must contain (raising, hanging, eating memory, exiting)."""

import os
import time

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, TransformerMixin


class Clip(TransformerMixin, BaseEstimator):
    """Clips each feature to [low, high]."""

    def __init__(self, low=0.0, high=100.0):
        self.low = low
        self.high = high

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.clip(np.asarray(X, dtype=float), self.low, self.high)


class Misbehaves(OutlierMixin, BaseEstimator):
    """A detector whose methods do `what`: raise, sleep, hog, exit."""

    def __init__(self, what="raise"):
        self.what = what

    def fit(self, X, y=None):
        return self

    def decision_function(self, X):
        if self.what == "raise":
            raise ValueError("sensor calibration table missing for this device")
        if self.what == "sleep":
            time.sleep(3600)
        if self.what == "hog":
            hog = np.ones((1 << 33) // 8)  # 8 GiB
            return hog[: len(X)]
        if self.what == "exit":
            os._exit(3)
        return np.zeros(len(X))

    def predict(self, X):
        return np.where(self.decision_function(X) < 0, -1, 1)
