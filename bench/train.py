#!/usr/bin/env python3
"""Training benchmark: fleetscore's Rust OneClassSVM trainer vs. scikit-learn.

Generates a fleet of sensor-like series (default 1,000 series of 1,000
readings: drift, noise, 1% spikes, rounded to 0.01 as devices report them),
fits ``Pipeline(StandardScaler(), OneClassSVM(nu=0.05, gamma='scale'))`` on
each with scikit-learn in this process (timed, one core), writes the data and
the fits to a temporary folder, then runs
``cargo run --release -p fleetscore-models --example train_bench`` on it,
which fits the same series in Rust (one thread, then all cores) and counts
the fits that are bit-identical to scikit-learn's (rho and every dual
coefficient).

Usage (from the repository root, Python 3.11 with bench/requirements.txt)::

    python3 bench/train.py [--models 1000] [--rows 1000] [--nu 0.05] [--gamma scale]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM


def series(rng, rows):
    t = np.arange(rows, dtype=np.float64)
    base = rng.uniform(10, 100)
    sd = rng.uniform(0.2, 3.0)
    x = base + sd * np.sin(t / rng.uniform(50, 300)) + rng.normal(0, sd / 3, rows)
    idx = rng.choice(rows, size=max(1, rows // 100), replace=False)
    x[idx] += rng.choice([-1.0, 1.0], idx.size) * rng.uniform(3, 8, idx.size) * sd
    return x.round(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--nu", type=float, default=0.05)
    ap.add_argument("--gamma", default="scale")
    args = ap.parse_args()
    gamma = args.gamma if args.gamma in ("scale", "auto") else float(args.gamma)
    rng = np.random.default_rng(2024)
    data = [series(rng, args.rows) for _ in range(args.models)]

    fits = []
    t0 = time.perf_counter()
    for x in data:
        est = Pipeline([("scaler", StandardScaler()),
                        ("svm", OneClassSVM(nu=args.nu, gamma=gamma))])
        est.fit(x.reshape(-1, 1))
        fits.append(est)
    sk_seconds = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        np.concatenate(data).astype("<f8").tofile(os.path.join(tmp, "x.f64"))
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump({"models": args.models, "rows": args.rows, "nu": args.nu,
                       "gamma": gamma, "scaler": "standard"}, f)
        with open(os.path.join(tmp, "sklearn.json"), "w") as f:
            json.dump([{"rho": float(-e[1]._intercept_[0]),
                        "n_support": int(len(e[1].support_)),
                        "dual_coef": [float(v) for v in e[1]._dual_coef_[0]]}
                       for e in fits], f)
        out = subprocess.run(
            ["cargo", "run", "--quiet", "--release", "-p", "fleetscore-models",
             "--example", "train_bench", "--", tmp],
            check=True, capture_output=True, text=True).stdout
    rust = json.loads(out)
    print(f"{args.models} models x {args.rows} readings, "
          f"Pipeline(StandardScaler, OneClassSVM(nu={args.nu}, gamma={gamma!r}))")
    print(f"  scikit-learn 1.9.1 fit, 1 core:      {sk_seconds:8.3f} s")
    print(f"  fleetscore Rust, 1 thread:           {rust['single_thread_seconds']:8.3f} s "
          f"({sk_seconds / rust['single_thread_seconds']:.1f}x)")
    print(f"  fleetscore Rust, {rust['threads']} threads:          {rust['parallel_seconds']:8.3f} s")
    print(f"  bit-identical fits: {rust['bit_identical_fits']}/{args.models}, "
          f"same n_support: {rust['same_n_support']}/{args.models}, "
          f"max rho rel diff {rust['max_rho_rel_diff']:.1e}, "
          f"mean libsvm iterations {rust['mean_iterations']:.0f}")


if __name__ == "__main__":
    main()
