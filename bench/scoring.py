#!/usr/bin/env python3
"""Side-by-side scoring benchmark: fleetscore vs. a plain scikit-learn batch job.

What it measures
----------------
The wall time, start to finish, of ONE batch scoring job over a fleet of many
small per-(device, tag) models, done two ways:

* the Python anchor: what a competent engineer would write without fleetscore.
  One process reads the readings with pandas, groups them by (Device, Tag),
  unpickles each group's model, calls ``predict`` and ``decision_function``
  (a regressor: ``predict`` only), and writes one Parquet file with the
  results;
* fleetscore: ``fleetscore score`` over the same readings with the same models
  (imported once, untimed, beforehand with ``fleetscore models import``).

Both are timed from outside, as child processes (``time.perf_counter`` around
the spawn and the wait), so interpreter start-up, imports, reading the input
and writing the output count on both sides, as they do in a real cron job.

Model families (``--family``)
-----------------------------
* ``ocsvm`` (default, 10,000 models): ``StandardScaler`` then
  ``OneClassSVM(nu=0.05)`` (RBF kernel, ``gamma='scale'``), 300 training points;
* ``iforest`` (500 models): ``StandardScaler`` then
  ``IsolationForest(n_estimators=100)``, 1,000 training points;
* ``forest`` (500 models): ``RandomForestRegressor(n_estimators=100,
  max_depth=10, min_samples_leaf=5)`` on the bare reading, 1,000 training
  points, fitted to a smooth function of the reading plus noise;
* ``lof`` (500 models): ``StandardScaler`` then
  ``LocalOutlierFactor(novelty=True, n_neighbors=20)``, 1,000 training points.

``--family iforest,forest`` or ``--family all`` runs several in turn; each
family has its own fleet in ``WORK/<family>/``.

Why the comparison is fair
--------------------------
Both sides read the same ``readings.parquet``, use the same pickled
scikit-learn models, compute the same thing for every reading and write the
same columns (TS, Device, Tag, Val, Prediction, Score) to Parquet. A detector
writes Prediction = 1 where ``predict`` is -1 (else 0) and Score =
``decision_function``; the regressor writes Score = ``predict`` and a null
Prediction. The script then joins the two outputs on (TS, Device, Tag) and
fails unless every row is present on both sides, every prediction is equal
(null equals null) and every score agrees to within 1e-9 (relative where the
score is beyond 1 in magnitude). A speed-up is only printed when that check
passes.

Steps of one run (per family)
-----------------------------
1. Generate a fleet in ``WORK/<family>/`` (or reuse it when the same family,
   --models and --seed are already there): N models
   ``models/model_{device}_{tag}``, devices 1..N/5 times tags 1..5, each
   fitted on seeded points and pickled with protocol 5.
2. Generate ``readings.parquet``: 720 readings per model (one hour at 5 s
   from 2024-01-01T00:00:00Z), ~3% outliers, rows sorted by TS, Device, Tag.
3. Time the Python anchor (``--python-repeat`` runs, best kept).
4. Import the models into fleetscore (untimed, but its time and the size of
   the store's models/ are reported), then time ``fleetscore score``
   (``--repeat`` runs, best kept).
5. Verify that the two outputs agree.
6. Print a summary; the last line of stdout is the speed-up (with several
   families, the last lines are their speed-ups, one a line).

Progress goes to stderr; the summary goes to stdout.

Usage
-----
    python3.11 bench/scoring.py                       # 10,000 OneClassSVMs, full run
    python3.11 bench/scoring.py --family iforest      # 500 IsolationForests
    python3.11 bench/scoring.py --family all --work /tmp/fsbench
    python3.11 bench/scoring.py --models 200 --python-only
    python3.11 bench/scoring.py --work /tmp/fsbench   # cached fleet, fast reruns

The script also has two internal modes: ``scoring.py anchor-job ...`` is the
Python anchor itself, and ``scoring.py timed-run -- CMD...`` is the small
launcher that times each run (see ``run_timed``).
"""

from __future__ import annotations

# Only the standard library at module level: the anchor job runs this same
# file in a child process and must pay for its own imports (numpy, pandas,
# scikit-learn through unpickling) exactly like a stand-alone batch job.
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from typing import NamedTuple

# Bump when the generated data changes, so that a cached fleet is rebuilt.
GENERATOR_VERSION = 2

TAGS_PER_DEVICE = 5
READINGS_PER_MODEL = 720  # one hour ...
INTERVAL_NS = 5 * 1_000_000_000  # ... at 5 s intervals
START_NS = 1_704_067_200 * 1_000_000_000  # 2024-01-01T00:00:00Z
OUTLIER_RATE = 0.03
NOISE = 0.1  # noise of a reading, relative to the amplitude of its cycle
NU = 0.05  # OneClassSVM
N_TREES = 100  # IsolationForest, RandomForestRegressor
FOREST_MAX_DEPTH = 10  # RandomForestRegressor: keeps trees (and pickles) bounded
FOREST_MIN_SAMPLES_LEAF = 5
N_NEIGHBORS = 20  # LocalOutlierFactor
PY_TREES = 50  # the Python runtime's IsolationForest (issue 20)
PY_SAMPLE = 10  # models timed with one interpreter each (the replaced system)
TS_UNIT = "ms"  # Parquet TIMESTAMP(MILLIS, UTC), like the reference data

OUTPUT_COLUMNS = ["TS", "Device", "Tag", "Val", "Prediction", "Score"]


class Family(NamedTuple):
    """One kind of model the benchmark can fit, score and compare."""

    name: str
    kind: str  # "detector" (Prediction + decision_function) or "regressor" (predict)
    train_points: int
    default_models: int
    estimator: str  # what is fitted, as Python code (for the summary)
    # Imported with `--runtime python` and scored by fleetscore's Python
    # runtime (no native reader compiles it).
    python: bool = False


FAMILIES = {
    f.name: f
    for f in [
        Family("ocsvm", "detector", 300, 10_000,
               f'Pipeline([("scaler", StandardScaler()), ("svm", OneClassSVM(nu={NU}))])'),
        Family("iforest", "detector", 1_000, 500,
               'Pipeline([("scaler", StandardScaler()), '
               f'("iforest", IsolationForest(n_estimators={N_TREES}, random_state=<per model>))])'),
        Family("forest", "regressor", 1_000, 500,
               f"RandomForestRegressor(n_estimators={N_TREES}, max_depth={FOREST_MAX_DEPTH}, "
               f"min_samples_leaf={FOREST_MIN_SAMPLES_LEAF}, random_state=<per model>, n_jobs=None)"),
        Family("lof", "detector", 1_000, 500,
               'Pipeline([("scaler", StandardScaler()), '
               f'("lof", LocalOutlierFactor(novelty=True, n_neighbors={N_NEIGHBORS}))])'),
        Family("pyiforest", "detector", 1_000, 1_000,
               'Pipeline([("log", FunctionTransformer(np.log1p)), ("scaler", StandardScaler()), '
               f'("iforest", IsolationForest(n_estimators={PY_TREES}, random_state=<per model>))])',
               python=True),
    ]
}

_T0 = time.perf_counter()


def secs(t: float) -> str:
    """A duration for humans: 25.58, 0.812, 0.0734."""
    return f"{t:.2f}" if t >= 1 else f"{t:.3g}"


def log(msg: str) -> None:
    """Progress line on stderr, stamped with the time since start."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failure that ends the benchmark with a message and exit code 1."""


# --------------------------------------------------------------------------
# Step 1 and 2: the fleet (models + readings)
# --------------------------------------------------------------------------


def model_keys(n: int) -> list[tuple[int, int]]:
    """The first n keys (device, tag): devices 1.., tags 1..5, device-major."""
    return [(i // TAGS_PER_DEVICE + 1, i % TAGS_PER_DEVICE + 1) for i in range(n)]


def _fit_model(family: str, rng, mean: float, scale: float, train):
    """Fits one model of `family` on `train` (n x 1); returns (model, stats).

    Draws from `rng` only for the families other than ocsvm, so that the
    OneClassSVM fleet stays the one of GENERATOR_VERSION 2.
    """
    import numpy as np
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if family == "ocsvm":
        from sklearn.svm import OneClassSVM

        model = Pipeline([("scaler", StandardScaler()), ("svm", OneClassSVM(nu=NU))])
        model.fit(train)
        return model, {"support_vectors": int(model.named_steps["svm"].support_vectors_.shape[0])}

    model_seed = int(rng.integers(0, 2**31 - 1))
    if family == "iforest":
        from sklearn.ensemble import IsolationForest

        model = Pipeline([("scaler", StandardScaler()),
                          ("iforest", IsolationForest(n_estimators=N_TREES, random_state=model_seed))])
        model.fit(train)
        trees = [t.tree_ for t in model.named_steps["iforest"].estimators_]
    elif family == "forest":
        from sklearn.ensemble import RandomForestRegressor

        # The target: a second quantity that depends smoothly on the reading
        # (think of a load that grows with the distance from a set point),
        # 10 + 5 z^2 with z the reading in scales from the sensor's mean, plus
        # N(0, 0.5) noise.
        z = (train[:, 0] - mean) / scale
        target = 10.0 + 5.0 * z * z + 0.5 * rng.standard_normal(z.size)
        model = RandomForestRegressor(n_estimators=N_TREES, max_depth=FOREST_MAX_DEPTH,
                                      min_samples_leaf=FOREST_MIN_SAMPLES_LEAF,
                                      random_state=model_seed, n_jobs=None)
        model.fit(train, target)
        trees = [t.tree_ for t in model.estimators_]
    elif family == "pyiforest":
        from sklearn.ensemble import IsolationForest
        from sklearn.preprocessing import FunctionTransformer

        model = Pipeline([("log", FunctionTransformer(np.log1p)), ("scaler", StandardScaler()),
                          ("iforest", IsolationForest(n_estimators=PY_TREES, random_state=model_seed))])
        model.fit(train)
        trees = [t.tree_ for t in model.named_steps["iforest"].estimators_]
    elif family == "lof":
        from sklearn.neighbors import LocalOutlierFactor

        model = Pipeline([("scaler", StandardScaler()),
                          ("lof", LocalOutlierFactor(novelty=True, n_neighbors=N_NEIGHBORS))])
        model.fit(train)
        return model, {"fit_method": str(model.named_steps["lof"]._fit_method)}
    else:
        raise ValueError(f"unknown family {family!r}")
    return model, {"nodes": int(sum(t.node_count for t in trees)),
                   "max_depth": int(max(t.max_depth for t in trees)),
                   "mean_depth": float(np.mean([t.max_depth for t in trees]))}


def _fit_chunk(job: tuple[str, int, str, list[tuple[int, int]]]) -> list[tuple[int, int, dict, object]]:
    """Worker: fit, pickle and write the models of one chunk of keys.

    Everything about a model (its mean and scale, its training points and its
    readings) comes from a generator seeded with (seed, device, tag), so a
    model does not depend on N or on which worker fitted it.

    The values follow a noisy cycle rather than a plain normal distribution:
    on 1-D normal data, OneClassSVM(nu=0.05, gamma='scale') stops with ~60
    support vectors, flags ~20% of the points and has a nearly flat decision
    function over the bulk of the data; on this data it keeps ~19 support
    vectors (nu * 300 = 15 at the least) and flags ~6%, as expected of nu.

    Returns (device, tag, stats, readings) per model.
    """
    import pickle

    import numpy as np

    family, seed, models_dir, keys = job
    train_points = FAMILIES[family].train_points
    out = []
    for device, tag in keys:
        rng = np.random.default_rng([seed, device, tag])
        mean = rng.uniform(-100.0, 100.0)
        scale = rng.uniform(0.5, 20.0)
        if family == "pyiforest":
            # log1p needs values above -1: 100..200, outliers stay above 15.
            mean = 100.0 + abs(mean)

        def normal_values(size: int) -> np.ndarray:
            # A sensor that follows a cycle (e.g. daily temperature), with
            # noise: mean + scale * (sin(phase) + 0.1 * N(0, 1)).
            phase = rng.uniform(0.0, 2.0 * np.pi, size)
            return mean + scale * (np.sin(phase) + NOISE * rng.standard_normal(size))

        train = normal_values(train_points).reshape(-1, 1)
        model, stats = _fit_model(family, rng, mean, scale, train)
        with open(os.path.join(models_dir, f"model_{device}_{tag}"), "wb") as f:
            pickle.dump(model, f, protocol=5)

        readings = normal_values(READINGS_PER_MODEL)
        outliers = np.flatnonzero(rng.random(READINGS_PER_MODEL) < OUTLIER_RATE)
        signs = rng.choice([-1.0, 1.0], outliers.size)
        readings[outliers] = mean + signs * rng.uniform(1.5, 4.0, outliers.size) * scale
        out.append((device, tag, stats, readings))
    return out


def fleet_params(family: Family, models: int, seed: int) -> dict:
    """What identifies a fleet; a cached fleet is reused only if all match."""
    import sklearn

    return {
        "generator_version": GENERATOR_VERSION,
        "family": family.name,
        "estimator": family.estimator,
        "models": models,
        "seed": seed,
        "readings_per_model": READINGS_PER_MODEL,
        "train_points": family.train_points,
        "ts_unit": TS_UNIT,
        "sklearn": sklearn.__version__,
    }


def load_cached_fleet(work: Path, params: dict) -> dict | None:
    """The manifest of the fleet in `work` if it is the one asked for."""
    manifest = work / "fleet.json"
    if not manifest.is_file():
        return None
    try:
        info = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if info.get("params") != params or not (work / "readings.parquet").is_file():
        return None
    models_dir = work / "models"
    if not models_dir.is_dir() or sum(1 for _ in models_dir.iterdir()) != params["models"]:
        return None
    return info


def structure_stats(family: str, stats: list[dict]) -> dict:
    """Fleet-wide figures of the fitted models' structure, for the summary."""
    import numpy as np

    n = len(stats)
    if family == "ocsvm":
        n_support = np.array([s["support_vectors"] for s in stats], dtype=np.int64)
        return {
            "support_vectors": {
                "total": int(n_support.sum()),
                "min": int(n_support.min()),
                "max": int(n_support.max()),
                "mean": float(n_support.mean()),
            },
            # One RBF kernel evaluation per (support vector, reading) pair.
            "kernel_evals_per_pass": int(n_support.sum()) * READINGS_PER_MODEL,
        }
    if family in ("iforest", "forest", "pyiforest"):
        nodes = np.array([s["nodes"] for s in stats], dtype=np.int64)
        n_trees = PY_TREES if family == "pyiforest" else N_TREES
        return {
            "trees": {
                "per_model": n_trees,
                "nodes_total": int(nodes.sum()),
                "nodes_per_tree_mean": float(nodes.sum() / (n * n_trees)),
                "nodes_per_model_min": int(nodes.min()),
                "nodes_per_model_max": int(nodes.max()),
                "max_depth": int(max(s["max_depth"] for s in stats)),
                "mean_depth": float(np.mean([s["mean_depth"] for s in stats])),
            },
            # One root-to-leaf walk per (tree, reading) pair.
            "tree_walks_per_pass": n * n_trees * READINGS_PER_MODEL,
        }
    if family == "lof":
        return {
            "lof": {
                "n_neighbors": N_NEIGHBORS,
                "fit_methods": sorted({s["fit_method"] for s in stats}),
            },
            # One k-nearest-neighbour query per reading.
            "neighbour_queries_per_pass": n * READINGS_PER_MODEL,
        }
    raise ValueError(f"unknown family {family!r}")


def generate_fleet(work: Path, params: dict, jobs: int) -> dict:
    """Steps 1 and 2: fit and pickle the models, write readings.parquet."""
    import multiprocessing

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = params["models"]
    seed = params["seed"]
    family = params["family"]
    (work / "fleet.json").unlink(missing_ok=True)  # invalid until we finish
    models_dir = work / "models"
    if models_dir.exists():
        shutil.rmtree(models_dir)  # may hold a fleet of another size
    models_dir.mkdir(parents=True)

    # --- step 1: models, fitted in `jobs` processes -----------------------
    keys = model_keys(n)
    chunk = 50 if family == "ocsvm" else 10  # forests take ~0.1 s a model
    chunks = [(family, seed, str(models_dir), keys[i : i + chunk]) for i in range(0, n, chunk)]
    index = {key: i for i, key in enumerate(keys)}
    values = np.empty((READINGS_PER_MODEL, n), dtype=np.float64)  # time-major
    stats: list[dict] = [{}] * n

    log(f"fitting {n} {family} models ({jobs} processes) into {models_dir}")
    t0 = time.perf_counter()
    done, next_report = 0, 0.0
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ctx.Pool(jobs) as pool:
        for results in pool.imap_unordered(_fit_chunk, chunks):
            for device, tag, model_stats, readings in results:
                i = index[(device, tag)]
                stats[i] = model_stats
                values[:, i] = readings
            done += len(results)
            elapsed = time.perf_counter() - t0
            if elapsed >= next_report or done == n:
                rate = done / elapsed if elapsed > 0 else 0.0
                eta = (n - done) / rate if rate > 0 else 0.0
                log(f"  fitted {done}/{n} models ({rate:.0f}/s, ~{eta:.0f}s left)")
                next_report = elapsed + 5.0
    fit_s = time.perf_counter() - t0
    pickle_bytes = sum(f.stat().st_size for f in models_dir.iterdir())
    log(f"fitted {n} models in {fit_s:.1f}s; pickles {pickle_bytes / 1e6:.1f} MB")

    # --- step 2: readings, one Parquet file sorted by TS, Device, Tag -----
    t1 = time.perf_counter()
    devices = np.fromiter((d for d, _ in keys), dtype=np.int64, count=n)
    tags = np.fromiter((t for _, t in keys), dtype=np.int64, count=n)
    ts = START_NS + INTERVAL_NS * np.arange(READINGS_PER_MODEL, dtype=np.int64)
    table = pa.table(
        {
            "TS": pa.array(np.repeat(ts, n).astype("datetime64[ns]").astype(f"datetime64[{TS_UNIT}]"),
                           type=pa.timestamp(TS_UNIT, tz="UTC")),
            "Device": pa.array(np.tile(devices, READINGS_PER_MODEL), type=pa.int64()),
            "Tag": pa.array(np.tile(tags, READINGS_PER_MODEL), type=pa.int64()),
            "Value": pa.array(values.ravel(), type=pa.float64()),
        }
    )
    tmp = work / "readings.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.replace(work / "readings.parquet")
    readings_s = time.perf_counter() - t1
    log(f"wrote {table.num_rows} readings to {work / 'readings.parquet'} in {readings_s:.1f}s")

    info = {
        "params": params,
        "rows": int(table.num_rows),
        "pickle_bytes": int(pickle_bytes),
        "generation_seconds": {"fit": round(fit_s, 2), "readings": round(readings_s, 2)},
    }
    info.update(structure_stats(family, stats))
    (work / "fleet.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# --------------------------------------------------------------------------
# Step 3: the Python anchor (runs in a child process: `anchor-job`)
# --------------------------------------------------------------------------


def anchor_job(readings: str, models_dir: str, out: str, kind: str) -> None:
    """The reference batch job: one process, pandas + scikit-learn.

    kind "detector": Prediction = 1 where predict is -1 (else 0), Score =
    decision_function. kind "regressor": Score = predict, Prediction null.
    Prints one JSON line on stdout: rows, anomalies (null for a regressor),
    models.
    """
    import pickle

    import numpy as np
    import pandas as pd

    detector = kind == "detector"
    df = pd.read_parquet(readings, columns=["TS", "Device", "Tag", "Value"])
    parts = []
    for (device, tag), group in df.groupby(["Device", "Tag"], sort=True):
        with open(os.path.join(models_dir, f"model_{device}_{tag}"), "rb") as f:
            model = pickle.load(f)
        x = group["Value"].to_numpy(dtype=np.float64).reshape(-1, 1)
        n = len(x)
        columns = {
            "TS": group["TS"].array,
            "Device": np.full(n, device, dtype=np.int64),
            "Tag": np.full(n, tag, dtype=np.int64),
            "Val": x[:, 0],
        }
        if detector:
            prediction = model.predict(x)
            columns["Prediction"] = (prediction == -1).astype(np.int32)
            columns["Score"] = model.decision_function(x)
        else:
            columns["Score"] = model.predict(x)
        parts.append(pd.DataFrame(columns, copy=False))
    result = pd.concat(parts, ignore_index=True)
    if not detector:
        # A regressor has no anomaly label: a null Int32 column, like
        # fleetscore's predictions schema.
        rows = len(result)
        result.insert(4, "Prediction", pd.arrays.IntegerArray(np.zeros(rows, dtype=np.int32),
                                                              np.ones(rows, dtype=bool)))
    result.to_parquet(out, index=False)
    anomalies = int(result["Prediction"].sum()) if detector else None
    print(json.dumps({"rows": len(result), "anomalies": anomalies, "models": len(parts)}), flush=True)


# --------------------------------------------------------------------------
# Timing child processes
# --------------------------------------------------------------------------


class Run:
    """One timed run of a child process."""

    def __init__(self, wall: float, cpu: float, max_rss_mb: float, other_cpus: float | None,
                 stdout: str):
        self.wall = wall
        self.cpu = cpu  # user + system seconds of the child
        self.max_rss_mb = max_rss_mb
        self.other_cpus = other_cpus  # CPUs kept busy by other processes, on average
        self.stdout = stdout

    def text(self) -> str:
        other = "" if self.other_cpus is None else f", other processes {self.other_cpus:.2f} cpus"
        return f"{secs(self.wall)}s wall, cpu {secs(self.cpu)}s, peak RSS {self.max_rss_mb:.0f} MiB{other}"


def cpu_busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def busy_cpus(seconds: float = 1.0) -> float | None:
    """How many CPUs were busy on average (all processes) over the next `seconds`."""
    before = cpu_busy_seconds()
    t0 = time.perf_counter()
    time.sleep(seconds)
    after = cpu_busy_seconds()
    if before is None or after is None:
        return None
    return (after - before) / (time.perf_counter() - t0)


def check_quiet(what: str) -> str:
    """Logs (and returns) how busy the machine is just before timing `what`."""
    busy = busy_cpus()
    if busy is None:
        return "unknown"
    text = f"{busy:.2f} of {os.cpu_count()} cpus busy"
    if busy > 0.25:
        log(f"warning: {text} just before timing {what}: other work competes with the benchmark")
    else:
        log(f"machine quiet before timing {what} ({text})")
    return text


def measure(cmd: list[str], stdout_path: str | None) -> dict:
    """Runs cmd to completion and measures it; the body of `timed-run`.

    perf_counter() around the spawn and the wait, exactly what timing
    subprocess.run(cmd) would give, but waiting with os.wait4 so that the
    child's own CPU time and peak RSS come with it. Also how many CPUs other
    processes kept busy meanwhile (machine-wide busy time less the child's).
    """
    out = open(stdout_path, "wb") if stdout_path else None
    try:
        busy0 = cpu_busy_seconds()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out if out else sys.stderr.fileno(),
                                stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        busy1 = cpu_busy_seconds()
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if out:
            out.close()
    cpu = usage.ru_utime + usage.ru_stime
    other = None
    if busy0 is not None and busy1 is not None and wall > 0:
        other = max(0.0, (busy1 - busy0 - cpu) / wall)
    return {"returncode": proc.returncode, "wall": wall, "cpu": cpu,
            "max_rss_mb": usage.ru_maxrss / 1024.0, "other_cpus": other}


def run_timed(cmd: list[str], capture: Path | None = None) -> Run:
    """Runs cmd to completion, timed from outside; returns the measurements.

    The measuring is done by a small launcher, this script's `timed-run`
    mode, not by this (by now large) process: Linux reports as a child's peak
    RSS at least the peak RSS of the process that spawned it, which would
    hide a lean fleetscore behind our own pandas frames. The launcher only
    imports the standard library. The child's stdout goes to `capture` or to
    our stderr, so that our stdout keeps only the summary.
    """
    launcher = [sys.executable, os.path.abspath(__file__), "timed-run"]
    if capture:
        launcher += ["--stdout", str(capture)]
    done = subprocess.run(launcher + ["--", *cmd], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        m = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"the timing launcher failed (exit code {done.returncode}): {' '.join(cmd)}")
    if m["returncode"] != 0:
        raise BenchError(f"command failed with exit code {m['returncode']}: {' '.join(cmd)}")
    text = capture.read_text(errors="replace") if capture else ""
    run = Run(m["wall"], m["cpu"], m["max_rss_mb"], m["other_cpus"], text)
    log(f"  {run.text()}")
    if run.other_cpus is not None and run.other_cpus > 0.25:
        log(f"  warning: other processes kept {run.other_cpus:.2f} cpus busy during this run; "
            "its time is not trustworthy")
    return run


def describe(runs: list[Run]) -> str:
    best = min(runs, key=lambda r: r.wall)
    walls = ", ".join(secs(r.wall) for r in runs)
    return f"best {secs(best.wall)}s of {len(runs)} [{walls}]; that run: {best.text()}"


def time_python(work: Path, family: Family, repeat: int) -> tuple[list[Run], dict]:
    cmd = [sys.executable, os.path.abspath(__file__), "anchor-job",
           "--readings", str(work / "readings.parquet"),
           "--models-dir", str(work / "models"),
           "--out", str(work / "py-out.parquet"),
           "--kind", family.kind]
    runs, result = [], {}
    for i in range(repeat):
        (work / "py-out.parquet").unlink(missing_ok=True)
        log(f"python anchor run {i + 1}/{repeat}: {' '.join(cmd)}")
        run = run_timed(cmd, capture=work / "py-anchor.stdout")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        log(f"  {result['rows']} rows, {anomalies_text(result['anomalies'])}")
        runs.append(run)
    return runs, result


def anomalies_text(anomalies: int | None) -> str:
    return "no anomaly labels (regressor)" if anomalies is None else f"{anomalies} anomalies"


def disk_usage(path: Path) -> dict:
    """Files, apparent bytes and bytes on disk (`du -s -B1`) under path."""
    files, apparent = 0, 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                apparent += os.lstat(os.path.join(root, name)).st_size
                files += 1
            except OSError:
                pass
    on_disk = None
    try:
        done = subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True)
        if done.returncode == 0:
            on_disk = int(done.stdout.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return {"files": files, "apparent_bytes": apparent, "du_bytes": on_disk}


def python_config(work: Path, workers: int = 0) -> Path:
    """A fleetscore config that runs Python models with this interpreter."""
    path = work / f"python-{workers}.toml"
    path.write_text(f"[python]\nenabled = true\ninterpreter = {json.dumps(sys.executable)}\n"
                    f"workers = {workers}\n")
    return path


def time_fleetscore(binary: str, work: Path, repeat: int,
                    family: Family | None = None) -> tuple[Run, dict, list[Run]]:
    """Imports the models (untimed, but reported), then times `repeat` scoring runs.

    Returns the import run, the size of the store's models/ and the scoring runs.
    A Python-runtime family is imported with `--runtime python` and scored
    with `[python] enabled` on this interpreter, one worker per core.
    """
    data, out = work / "fsdata", work / "fs-out"
    if data.exists():
        shutil.rmtree(data)  # import into a fresh store every run
    config = ["--config", str(python_config(work))] if family and family.python else []
    cmd = [binary, "--data", str(data), "models", "import", str(work / "models")]
    if family and family.python:
        cmd += ["--runtime", "python"]
    log(f"fleetscore import (untimed): {' '.join(cmd)}")
    import_run = run_timed(cmd)
    # The store's models/ (fsdata/store/models in the local layout).
    models = next((d for d in (data / "store" / "models", data / "models") if d.is_dir()), data)
    pack = disk_usage(models)
    pack["path"] = str(models.relative_to(work))
    pack_file = models / "pack.fsp"
    pack["pack_fsp_bytes"] = pack_file.stat().st_size if pack_file.is_file() else None
    log(f"  {pack['path']}/: {pack['files']} files, {pack['apparent_bytes'] / 1e6:.1f} MB")

    cmd = [binary, *config, "--data", str(data), "score", "--input", str(work / "readings.parquet"),
           "--out", str(out), "--format", "parquet"]
    runs = []
    for i in range(repeat):
        if out.exists():
            shutil.rmtree(out)  # no stale files from the previous run
        log(f"fleetscore run {i + 1}/{repeat}: {' '.join(cmd)}")
        runs.append(run_timed(cmd))
    return import_run, pack, runs


def time_python_runtime(binary: str, work: Path, family: Family, n: int,
                        py_result: dict) -> tuple[Run, list[Run]]:
    """The Python runtime's own costs: one scoring run with a single worker
    (against the one-process anchor: the per-model overhead), and PY_SAMPLE
    models each scored by a Python process of its own (what the replaced
    system paid per model, without its container start)."""
    data, out = work / "fsdata", work / "fs-out-1"
    if out.exists():
        shutil.rmtree(out)
    cmd = [binary, "--config", str(python_config(work, 1)), "--data", str(data), "score",
           "--input", str(work / "readings.parquet"), "--out", str(out), "--format", "parquet"]
    log(f"fleetscore with one Python worker: {' '.join(cmd)}")
    one = run_timed(cmd)
    sample = []
    for device, tag in model_keys(n)[:: max(1, n // PY_SAMPLE)][:PY_SAMPLE]:
        cmd = [sys.executable, os.path.abspath(__file__), "per-model-job",
               "--readings", str(work / "readings.parquet"),
               "--model", str(work / "models" / f"model_{device}_{tag}"),
               "--device", str(device), "--tag", str(tag),
               "--out", str(work / f"one-{device}-{tag}.parquet")]
        sample.append(run_timed(cmd))
    log(f"one interpreter per model: {len(sample)} runs, "
        f"{sum(r.wall for r in sample) / len(sample):.2f}s each on average")
    return one, sample


def per_model_job(readings: str, model: str, device: int, tag: int, out: str) -> None:
    """One model's job in a process of its own, as the replaced system ran
    it (one container per model): start, import, read its readings, load,
    score, write."""
    import pickle

    import numpy as np
    import pandas as pd

    df = pd.read_parquet(readings, columns=["TS", "Device", "Tag", "Value"],
                         filters=[("Device", "==", device), ("Tag", "==", tag)])
    with open(model, "rb") as f:
        m = pickle.load(f)
    x = df["Value"].to_numpy(dtype=np.float64).reshape(-1, 1)
    df = df.rename(columns={"Value": "Val"})
    df["Prediction"] = (m.predict(x) == -1).astype(np.int32)
    df["Score"] = m.decision_function(x)
    df.to_parquet(out, index=False)


# --------------------------------------------------------------------------
# Step 5: verification
# --------------------------------------------------------------------------


def _ts_to_ns(col):
    """Any timestamp column (tz-aware, naive = UTC, text, epoch ints) -> int64 ns."""
    import numpy as np
    import pandas as pd

    if isinstance(col.dtype, pd.DatetimeTZDtype):
        return col.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]").astype(np.int64)
    if pd.api.types.is_datetime64_dtype(col.dtype):
        return col.astype("datetime64[ns]").astype(np.int64)
    if pd.api.types.is_integer_dtype(col.dtype):
        v = col.astype(np.int64)
        sample = int(v.abs().max()) if len(v) else 0
        # guess the unit from the magnitude of a 21st-century epoch
        factor = 1 if sample > 10**17 else 1_000 if sample > 10**14 else 1_000_000 if sample > 10**11 else 10**9
        return v * factor
    parsed = pd.to_datetime(col, utc=True, format="ISO8601")
    return parsed.dt.tz_localize(None).astype("datetime64[ns]").astype(np.int64)


NULL_PREDICTION = -1  # stands for a null Prediction once normalized


def _normalize(df, side: str):
    import numpy as np
    import pandas as pd

    missing = [c for c in OUTPUT_COLUMNS if c not in df.columns]
    if missing:
        raise BenchError(f"{side} output lacks columns {missing} (has {list(df.columns)})")
    # Prediction is nullable (Int32 with nulls reads back as float64 with
    # NaN, or as object None when the column is all null).
    pred = pd.Series(df["Prediction"]).astype("Int64").fillna(NULL_PREDICTION).to_numpy(dtype=np.int64)
    if "Label" in df.columns:
        labels = int(df["Label"].notna().sum())
    else:
        labels = 0
    return pd.DataFrame(
        {
            "ts": _ts_to_ns(df["TS"]).to_numpy(),
            "device": df["Device"].astype(str).to_numpy(dtype=object),
            "tag": df["Tag"].astype(str).to_numpy(dtype=object),
            "val": df["Val"].astype(np.float64).to_numpy(),
            "pred": pred,
            "score": df["Score"].astype(np.float64).to_numpy(),
        }
    ), labels


def verify(work: Path, tolerance: float) -> dict:
    """Joins fleetscore's and Python's outputs on (TS, Device, Tag) and compares.

    Scores agree when |fs - py| <= tolerance * max(1, |py|): absolute up to 1,
    relative beyond. A Label column in fleetscore's output must be all null
    (these families have no class labels).
    """
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    files = sorted(p for p in (work / "fs-out").rglob("*.parquet") if p.is_file())
    if not files:
        raise BenchError(f"fleetscore wrote no *.parquet under {work / 'fs-out'}")
    log(f"verifying: {len(files)} fleetscore file(s) vs. py-out.parquet")
    parts, fs_labels = [], 0
    for f in files:
        part, labels = _normalize(pq.read_table(f).to_pandas(), f"fleetscore ({f.name})")
        parts.append(part)
        fs_labels += labels
    fs = pd.concat(parts, ignore_index=True)
    py, _ = _normalize(pd.read_parquet(work / "py-out.parquet"), "python")

    try:
        m = py.merge(fs, on=["ts", "device", "tag"], how="outer", suffixes=("_py", "_fs"),
                     indicator=True, validate="one_to_one")
    except pd.errors.MergeError as e:
        dup_py = int(py.duplicated(["ts", "device", "tag"]).sum())
        dup_fs = int(fs.duplicated(["ts", "device", "tag"]).sum())
        raise BenchError(f"duplicate (TS, Device, Tag) keys: python {dup_py}, fleetscore {dup_fs} ({e})")
    both = m[m["_merge"] == "both"]
    only_py = int((m["_merge"] == "left_only").sum())
    only_fs = int((m["_merge"] == "right_only").sum())
    pred_diff = both["pred_py"].to_numpy() != both["pred_fs"].to_numpy()
    score_py = both["score_py"].to_numpy()
    score_abs = np.abs(score_py - both["score_fs"].to_numpy())
    score_bound = tolerance * np.maximum(1.0, np.abs(score_py))
    score_bad = ~(score_abs <= score_bound)  # NaN is bad
    score_rel = score_abs / np.maximum(1.0, np.abs(score_py))
    val_abs = np.abs(both["val_py"].to_numpy() - both["val_fs"].to_numpy())
    nan_scores = int(np.isnan(score_abs).sum())
    report = {
        "rows_python": len(py),
        "rows_fleetscore": len(fs),
        "rows_compared": len(both),
        "missing_in_fleetscore": only_py,
        "extra_in_fleetscore": only_fs,
        "prediction_mismatches": int(pred_diff.sum()),
        "null_predictions_fleetscore": int((fs["pred"] == NULL_PREDICTION).sum()),
        "labels_fleetscore": fs_labels,
        "max_abs_score_diff": float(np.nanmax(score_abs)) if len(both) else 0.0,
        "max_rel_score_diff": float(np.nanmax(score_rel)) if len(both) else 0.0,
        "score_mismatches": int(score_bad.sum()),
        "nan_score_diffs": nan_scores,
        "max_abs_val_diff": float(np.nanmax(val_abs)) if len(both) else 0.0,
        "anomalies_fleetscore": int((fs["pred"] == 1).sum()),
    }
    problems = []
    if only_py or only_fs or len(py) != len(fs):
        problems.append(f"rows differ: python {len(py)}, fleetscore {len(fs)}, "
                        f"{only_py} missing in fleetscore, {only_fs} extra in fleetscore")
    if report["prediction_mismatches"]:
        problems.append(f"{report['prediction_mismatches']} prediction mismatches "
                        f"(null shown as {NULL_PREDICTION})")
    if report["score_mismatches"]:
        problems.append(f"{report['score_mismatches']} scores beyond the tolerance: "
                        f"max |Score - python| = {report['max_abs_score_diff']:.3g}, "
                        f"relative beyond 1: {report['max_rel_score_diff']:.3g} (> {tolerance:g}), "
                        f"{nan_scores} NaN")
    if report["max_abs_val_diff"] != 0 or np.isnan(val_abs).any():
        problems.append(f"Val differs from the input value (max diff {report['max_abs_val_diff']:.3g})")
    if fs_labels:
        problems.append(f"{fs_labels} non-null Label values in fleetscore's output (expected none)")
    if problems:
        bad = both[pred_diff | score_bad]
        if len(bad):
            show = bad.drop(columns=["_merge"]).head(10).copy()
            show.insert(0, "ts_utc", pd.to_datetime(show["ts"], unit="ns", utc=True))
            show["score_diff"] = show["score_fs"] - show["score_py"]
            report["first_mismatches"] = show.drop(columns=["ts"]).to_string(
                index=False, float_format=lambda v: f"{v:.17g}")
            log("first mismatching rows:\n" + report["first_mismatches"])
        report["problems"] = problems
    return report


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_families(text: str) -> list[Family]:
    """`--family`: one name, a comma-separated list, or `all`."""
    names = list(FAMILIES) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown family {', '.join(unknown) or repr(text)}: choose from {', '.join(FAMILIES)}, "
            "a comma-separated list of them, or all")
    return [FAMILIES[n] for n in dict.fromkeys(names)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    repo = Path(__file__).resolve().parent.parent
    defaults = ", ".join(f"{f.name} {f.default_models}" for f in FAMILIES.values())
    p = argparse.ArgumentParser(
        description="Time one batch scoring job over many small scikit-learn models: "
                    "a plain pandas + scikit-learn job vs. fleetscore, and check they agree. "
                    "The last line of stdout is the speed-up.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--family", type=parse_families, default="ocsvm", metavar="F",
                   help=f"model family: {', '.join(FAMILIES)}; a comma-separated list or 'all' "
                        "runs each in turn, in its own WORK/<family>/")
    p.add_argument("--models", type=int, default=None, metavar="N",
                   help=f"number of models: devices 1..N/5 times tags 1..5 (default per family: {defaults})")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated fleet")
    p.add_argument("--work", type=Path, default=None, metavar="DIR",
                   help="work dir (kept; a fleet with the same family/--models/--seed in "
                        "DIR/<family>/ is reused). "
                        "Default: a new temp dir under /tmp, removed at the end unless --keep")
    p.add_argument("--keep", action="store_true", help="keep the default temp work dir")
    p.add_argument("--fleetscore", default=str(repo / "target" / "release" / "fleetscore"),
                   metavar="PATH", help="fleetscore binary")
    p.add_argument("--repeat", type=int, default=3, metavar="R",
                   help="timed fleetscore runs; the best is kept")
    p.add_argument("--python-repeat", type=int, default=1, metavar="R",
                   help="timed Python anchor runs; the best is kept")
    p.add_argument("--python-only", action="store_true",
                   help="only generate and time the Python anchor (no fleetscore, no verification)")
    p.add_argument("--jobs", type=int, default=2, help="processes used to fit the models")
    p.add_argument("--tolerance", type=float, default=1e-9,
                   help="largest |Score - python score| accepted (relative where |python score| > 1)")
    args = p.parse_args(argv)
    if isinstance(args.family, str):  # the default is not run through `type`
        args.family = parse_families(args.family)
    if args.models is not None and args.models < 1:
        p.error("--models must be at least 1")
    if args.repeat < 1 or args.python_repeat < 1 or args.jobs < 1:
        p.error("--repeat, --python-repeat and --jobs must be at least 1")
    return args


def structure_lines(family: Family, info: dict) -> list[str]:
    """The summary lines that describe the fitted models and the work they imply."""
    if family.name == "ocsvm":
        sv = info["support_vectors"]
        kernel_evals = info["kernel_evals_per_pass"]
        return [
            f"support vectors: {sv['total']} in all, {sv['mean']:.2f} per model (min {sv['min']}, max {sv['max']})",
            f"RBF kernel evaluations: {kernel_evals} per scoring pass "
            f"(sum over models of n_support_vectors * n_readings); the Python job makes two passes "
            f"(predict + decision_function) = {2 * kernel_evals}; at 1 ns per evaluation "
            f"(one vectorized exp) that is {kernel_evals / 1e6:.0f} ms of arithmetic per pass on one core",
        ]
    if family.name in ("iforest", "forest", "pyiforest"):
        t = info["trees"]
        walks = info["tree_walks_per_pass"]
        passes = ("the Python job makes two passes (predict + decision_function)"
                  if family.kind == "detector" else "the Python job makes one pass (predict)")
        return [
            f"trees:        {t['per_model']} per model, {t['nodes_total']} nodes in all, "
            f"{t['nodes_per_tree_mean']:.1f} nodes per tree (per model {t['nodes_per_model_min']} to "
            f"{t['nodes_per_model_max']}), depth {t['mean_depth']:.1f} on average, {t['max_depth']} at most",
            f"tree walks:   {walks} per scoring pass (models x trees x readings); {passes}",
        ]
    if family.name == "lof":
        lof = info["lof"]
        return [
            f"LOF:          {family.train_points} training points and {lof['n_neighbors']} neighbours per "
            f"model, neighbour search by {'/'.join(lof['fit_methods'])}; "
            f"{info['neighbour_queries_per_pass']} k-neighbour queries per scoring pass; "
            "the Python job makes two passes (predict + decision_function)",
        ]
    return []


def mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def benchmark(args: argparse.Namespace, family: Family, work: Path) -> tuple[int, str]:
    """One family, steps 1-6; returns the exit code and the last (ratio) line."""
    import numpy
    import pandas
    import pyarrow
    import sklearn

    n = args.models if args.models is not None else family.default_models
    work.mkdir(parents=True, exist_ok=True)

    # --- steps 1-2 --------------------------------------------------------
    params = fleet_params(family, n, args.seed)
    info = load_cached_fleet(work, params)
    if info:
        log(f"reusing the {family.name} fleet in {work} ({n} models, seed {args.seed})")
    else:
        t0 = time.perf_counter()
        info = generate_fleet(work, params, args.jobs)
        log(f"generated the fleet in {time.perf_counter() - t0:.1f}s")
    rows = info["rows"]

    # --- step 3 -----------------------------------------------------------
    busy = {"python": check_quiet(f"the Python anchor ({family.name})")}
    py_runs, py_result = time_python(work, family, args.python_repeat)
    py_best = min(r.wall for r in py_runs)

    # --- steps 4-5 --------------------------------------------------------
    fs_runs, import_run, pack, report = [], None, None, None
    if not args.python_only:
        busy["fleetscore"] = check_quiet(f"fleetscore ({family.name})")
        import_run, pack, fs_runs = time_fleetscore(args.fleetscore, work, args.repeat, family)
        report = verify(work, args.tolerance)
        if family.python:
            runtime = time_python_runtime(args.fleetscore, work, family, n, py_result)

    # --- step 6 -----------------------------------------------------------
    devices = (n + TAGS_PER_DEVICE - 1) // TAGS_PER_DEVICE
    gen = info["generation_seconds"]
    lines = [
        f"== fleetscore scoring benchmark: {family.name} ==",
        f"machine:      {os.cpu_count()} cpus; before timing: "
        + ", ".join(f"{k} {v}" for k, v in busy.items())
        + f"; python {sys.version.split()[0]}, scikit-learn {sklearn.__version__}, numpy {numpy.__version__}, "
        f"pandas {pandas.__version__}, pyarrow {pyarrow.__version__}",
        f"fleet:        {n} models ({devices} devices x {TAGS_PER_DEVICE} tags), seed {args.seed}, "
        f"in {work}; generated in {gen['fit']:.1f}s (fit) + {gen['readings']:.1f}s (readings)",
        f"models:       {family.estimator}, each fitted on {family.train_points} points; "
        f"pickles {mb(info['pickle_bytes'])} ({info['pickle_bytes'] / n / 1e3:.1f} kB per model)",
        f"readings:     {rows} ({READINGS_PER_MODEL} per model, one Parquet file)",
        *structure_lines(family, info),
        f"python:       {describe(py_runs)}; {py_result['rows']} rows, {anomalies_text(py_result['anomalies'])}",
    ]
    if not args.python_only:
        fs_anomalies = ("" if family.kind != "detector"
                        else f", fleetscore anomalies {report['anomalies_fleetscore']}")
        lines += [
            f"fleetscore:   {describe(fs_runs)}",
            f"import:       (untimed) {import_run.text()}; {pack['path']}/: {pack['files']} files, "
            f"{mb(pack['apparent_bytes'])} ({mb(pack['du_bytes'])} on disk, du)"
            + ("" if pack["pack_fsp_bytes"] is None else f", of which pack.fsp {mb(pack['pack_fsp_bytes'])}"),
            f"verification: {report['rows_compared']} rows compared (python {report['rows_python']}, "
            f"fleetscore {report['rows_fleetscore']}), {report['prediction_mismatches']} prediction "
            f"mismatches ({report['null_predictions_fleetscore']} null predictions in fleetscore's output), "
            f"{report['score_mismatches']} score mismatches, max |Score diff| = {report['max_abs_score_diff']:.3g} "
            f"(relative beyond 1: {report['max_rel_score_diff']:.3g}), "
            f"max |Val diff| = {report['max_abs_val_diff']:.3g}{fs_anomalies}",
        ]
    print("\n".join(lines), flush=True)

    if args.python_only:
        last = (f"scikit-learn only ({family.name}): python {secs(py_best)}s, {n} models, {rows} readings "
                "(fleetscore not run: --python-only)")
        print(last, flush=True)
        return 0, last
    if "problems" in report:
        if "first_mismatches" in report:
            print("first mismatching rows:\n" + report["first_mismatches"], flush=True)
        for problem in report["problems"]:
            print(f"VERIFICATION FAILED ({family.name}): {problem}", flush=True)
        return 1, f"VERIFICATION FAILED ({family.name}): " + "; ".join(report["problems"])
    fs_best = min(r.wall for r in fs_runs)
    if family.python:
        one_worker, per_interpreter = runtime
        overhead = (one_worker.wall - py_best) / n
        per_model = sum(r.wall for r in per_interpreter) / len(per_interpreter)
        print("\n".join([
            f"python runtime, one worker: {one_worker.text()}; against the one-process job: "
            f"{overhead * 1e3:+.2f} ms per model (pipes, Arrow IPC, scheduling, the model file sent "
            f"once, minus the anchor's pandas work)",
            f"one interpreter per model (the replaced system, without its containers): "
            f"{len(per_interpreter)} models timed, {per_model:.2f}s each on average "
            f"(start, imports, read, load, score, write) = ~{per_model * n:.0f}s for {n} models "
            f"one at a time, ~{per_model * n / (os.cpu_count() or 1):.0f}s on {os.cpu_count()} cores; "
            f"fleetscore {per_model * n / (os.cpu_count() or 1) / fs_best:.1f}x faster than that "
            f"on all cores",
        ]), flush=True)
    ratio = py_best / fs_best
    last = (f"fleetscore / scikit-learn: {ratio:.1f}x faster "
            f"({family.name}: python {secs(py_best)}s, fleetscore {secs(fs_best)}s, {n} models, {rows} readings)")
    print(last, flush=True)
    return 0, last


def main(argv: list[str]) -> int:
    if argv[:1] == ["anchor-job"]:
        p = argparse.ArgumentParser(prog="scoring.py anchor-job",
                                    description="Internal: the Python anchor batch job.")
        p.add_argument("--readings", required=True)
        p.add_argument("--models-dir", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--kind", choices=["detector", "regressor"], default="detector")
        a = p.parse_args(argv[1:])
        anchor_job(a.readings, a.models_dir, a.out, a.kind)
        return 0

    if argv[:1] == ["per-model-job"]:
        p = argparse.ArgumentParser(prog="scoring.py per-model-job",
                                    description="Internal: one model's job in its own process.")
        p.add_argument("--readings", required=True)
        p.add_argument("--model", required=True)
        p.add_argument("--device", type=int, required=True)
        p.add_argument("--tag", type=int, required=True)
        p.add_argument("--out", required=True)
        a = p.parse_args(argv[1:])
        per_model_job(a.readings, a.model, a.device, a.tag, a.out)
        return 0

    if argv[:1] == ["timed-run"]:
        p = argparse.ArgumentParser(prog="scoring.py timed-run",
                                    description="Internal: run a command, print its measurements as JSON.")
        p.add_argument("--stdout", default=None, help="file for the command's stdout")
        p.add_argument("cmd", nargs=argparse.REMAINDER)
        a = p.parse_args(argv[1:])
        cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
        if not cmd:
            p.error("no command")
        print(json.dumps(measure(cmd, a.stdout)), flush=True)
        return 0

    args = parse_args(argv)
    if not args.python_only and not os.access(args.fleetscore, os.X_OK):
        print(f"error: no fleetscore binary at {args.fleetscore} (build it with "
              "`cargo build --release`, pass --fleetscore PATH, or use --python-only)",
              file=sys.stderr)
        return 1
    temp = args.work is None
    work = Path(tempfile.mkdtemp(prefix="fleetscore-bench-", dir="/tmp")) if temp else args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"work dir: {work}")
    codes, lasts = [], []
    try:
        for family in args.family:
            try:
                code, last = benchmark(args, family, work / family.name)
            except BenchError as e:
                print(f"error ({family.name}): {e}", file=sys.stderr)
                code, last = 1, f"error ({family.name}): {e}"
            codes.append(code)
            lasts.append(last)
        if len(args.family) > 1:
            # The ratios last, one a line, whatever happened before them.
            print("== results, one line per family ==", flush=True)
            print("\n".join(lasts), flush=True)
        return max(codes)
    finally:
        if temp and codes and not any(codes) and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif temp:
            log(f"work dir kept: {work}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
