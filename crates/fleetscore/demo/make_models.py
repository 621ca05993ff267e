"""Make the scikit-learn models bundled in the fleetscore binary for `fleetscore demo`.

Five fallback models, one per sensor tag 1..5, each
Pipeline(StandardScaler, OneClassSVM(nu=0.01, gamma=0.1)) trained on 300
readings of that tag's normal behaviour. `fleetscore demo` registers them as
the fallback models (*, tag), so every generated device is scored by them.
The demo's reading generator (src/demo.rs, TAGS) uses the same means and
standard deviations.

Run from this folder with the versions pinned in
../../models/tests/fixtures/sklearn/requirements.txt:
    python make_models.py
"""
import pickle

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

# (mean, std) per tag; keep in sync with TAGS in src/demo.rs.
TAGS = [(20.0, 2.0), (55.0, 5.0), (1.5, 0.2), (300.0, 12.0), (80.0, 4.0)]

for tag, (mean, std) in enumerate(TAGS, start=1):
    rng = np.random.default_rng(1000 + tag)
    x = rng.normal(mean, std, size=(300, 1))
    model = Pipeline([("scaler", StandardScaler()), ("svm", OneClassSVM(nu=0.01, gamma=0.1))]).fit(x)
    with open(f"model_fallback_{tag}.pkl", "wb") as f:
        pickle.dump(model, f, protocol=4)
    print(tag, len(model[-1].support_vectors_), "support vectors")
