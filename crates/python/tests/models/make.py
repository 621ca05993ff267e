"""Builds the Python-runtime tests' models with real scikit-learn and
LightGBM (crates/python/tests/requirements.txt), and what each gives when
run directly: `python make.py OUT` writes OUT/<name>.pkl and
OUT/expected.json ({name: {kind, rows, score, label, classes}}).

`python make.py --predict OUT ROWS.json` prints what the models of OUT
give when run directly on other rows ({id: {model, rows}} in, {id: {kind,
rows, score, label, classes}} out): what a job's predictions are
compared with.

The tests run this at test time (it takes seconds), so the models always
come from the interpreter under test; nothing here is committed output.
"""

import json
import os
import sys

import joblib
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import teamcode  # noqa: E402
from sklearn.ensemble import IsolationForest  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402
from sklearn.svm import OneClassSVM  # noqa: E402

NO_LABEL = 4294967295


def train_rows(seed, n=400):
    rng = np.random.default_rng(seed)
    return (20 + 5 * rng.standard_normal(n)).clip(0.5, None).reshape(-1, 1)


def models():
    x = train_rows(1)
    out = {}
    out["log1p_iforest"] = Pipeline(
        [
            ("log", FunctionTransformer(np.log1p)),
            ("scale", StandardScaler()),
            ("forest", IsolationForest(n_estimators=50, random_state=0)),
        ]
    ).fit(x)
    out["custom_clip_svm"] = Pipeline(
        [("clip", teamcode.Clip(5.0, 40.0)), ("svm", OneClassSVM(nu=0.1, gamma=0.5))]
    ).fit(x)
    # Native-compilable: registered both ways, the predictions must agree.
    out["native_svm"] = Pipeline(
        [("scale", StandardScaler()), ("svm", OneClassSVM(nu=0.05, gamma="scale"))]
    ).fit(x)
    import lightgbm

    y = np.sin(x[:, 0] / 3.0) + 0.01 * x[:, 0]
    out["lightgbm_regressor"] = lightgbm.LGBMRegressor(
        n_estimators=30, num_leaves=8, min_child_samples=5, verbose=-1, random_state=0
    ).fit(x, y)
    from sklearn.linear_model import LogisticRegression

    out["log1p_classifier"] = Pipeline(
        [("log", FunctionTransformer(np.log1p)), ("clf", LogisticRegression())]
    ).fit(x, np.where(x[:, 0] > 22.0, "high", "normal"))
    for what in ("raise", "sleep", "hog", "exit"):
        out["misbehaves_" + what] = teamcode.Misbehaves(what).fit(x)
    return out


def direct(model, X):
    """What the runtime's rules give when the same code runs here."""
    from sklearn.base import is_classifier, is_outlier_detector

    if is_outlier_detector(model):
        return "outlier", model.decision_function(X), (model.predict(X) == -1).astype(int), []
    if is_classifier(model):
        classes = list(model.classes_)
        label = [classes.index(p) for p in model.predict(X)]
        return "classifier", model.predict_proba(X).max(axis=1), label, [str(c) for c in classes]
    return "regressor", model.predict(X), np.full(len(X), NO_LABEL), []


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rows = np.concatenate([train_rows(7, 60), [[0.0], [3.0], [55.0], [120.0]]])
    expected = {}
    for name, model in models().items():
        joblib.dump(model, os.path.join(out_dir, name + ".pkl"))
        if name.startswith("misbehaves_"):
            continue
        kind, score, label, classes = direct(model, rows)
        expected[name] = {
            "kind": kind,
            "rows": rows[:, 0].tolist(),
            "score": np.asarray(score, dtype=float).tolist(),
            "label": [int(v) for v in label],
            "classes": classes,
        }
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f)


def predict(out_dir, rows_file):
    with open(rows_file) as f:
        wanted = json.load(f)
    expected = {}
    for name, want in wanted.items():
        values = want["rows"]
        model = joblib.load(os.path.join(out_dir, want["model"] + ".pkl"))
        X = np.asarray(values, dtype=np.float64).reshape(-1, 1)
        kind, score, label, classes = direct(model, X)
        expected[name] = {
            "kind": kind,
            "rows": values,
            "score": np.asarray(score, dtype=float).tolist(),
            "label": [int(v) for v in label],
            "classes": classes,
        }
    json.dump(expected, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "--predict":
        predict(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1])
