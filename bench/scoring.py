#!/usr/bin/env python3
"""Side-by-side scoring benchmark: fleetscore vs. a plain scikit-learn batch job.

What it measures
----------------
The wall time, start to finish, of ONE batch scoring job over a fleet of many
small per-(device, tag) anomaly models, done two ways:

* the Python anchor: what a competent engineer would write without fleetscore.
  One process reads the readings with pandas, groups them by (Device, Tag),
  unpickles each group's model, calls ``predict`` and ``decision_function``,
  and writes one Parquet file with the results;
* fleetscore: ``fleetscore score`` over the same readings with the same models
  (imported once, untimed, beforehand with ``fleetscore models import``).

Both are timed from outside, as child processes (``time.perf_counter`` around
the spawn and the wait), so interpreter start-up, imports, reading the input
and writing the output count on both sides, as they do in a real cron job.

Why the comparison is fair
--------------------------
Both sides read the same ``readings.parquet``, use the same pickled
scikit-learn pipelines (``StandardScaler`` then ``OneClassSVM(nu=0.05)``, RBF
kernel, ``gamma='scale'``), compute the same thing for every reading (the
prediction and the decision-function score) and write the same columns
(TS, Device, Tag, Val, Prediction, Score) to Parquet. The script then joins
the two outputs on (TS, Device, Tag) and fails unless every row is present on
both sides, every prediction is equal and every score agrees to within 1e-9.
A speed-up is only printed when that check passes.

Steps of one run
----------------
1. Generate a fleet in the work dir (or reuse it when the same --models and
   --seed are already there): N models ``models/model_{device}_{tag}``,
   devices 1..N/5 times tags 1..5, each fitted on ~300 seeded points and
   pickled with protocol 5.
2. Generate ``readings.parquet``: 720 readings per model (one hour at 5 s
   from 2024-01-01T00:00:00Z), ~3% outliers, rows sorted by TS, Device, Tag.
3. Time the Python anchor (``--python-repeat`` runs, best kept).
4. Import the models into fleetscore (untimed), then time
   ``fleetscore score`` (``--repeat`` runs, best kept).
5. Verify that the two outputs agree.
6. Print a summary; the last line of stdout is the speed-up.

Progress goes to stderr; the summary goes to stdout.

Usage
-----
    python3.11 bench/scoring.py                       # 10,000 models, full run
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

# Bump when the generated data changes, so that a cached fleet is rebuilt.
GENERATOR_VERSION = 2

TAGS_PER_DEVICE = 5
TRAIN_POINTS = 300
READINGS_PER_MODEL = 720  # one hour ...
INTERVAL_NS = 5 * 1_000_000_000  # ... at 5 s intervals
START_NS = 1_704_067_200 * 1_000_000_000  # 2024-01-01T00:00:00Z
OUTLIER_RATE = 0.03
NOISE = 0.1  # noise of a reading, relative to the amplitude of its cycle
NU = 0.05
TS_UNIT = "ms"  # Parquet TIMESTAMP(MILLIS, UTC), like the reference data

OUTPUT_COLUMNS = ["TS", "Device", "Tag", "Val", "Prediction", "Score"]

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


def _fit_chunk(job: tuple[int, str, list[tuple[int, int]]]) -> list[tuple[int, int, int, object]]:
    """Worker: fit, pickle and write the models of one chunk of keys.

    Everything about a model (its mean and scale, its training points and its
    readings) comes from a generator seeded with (seed, device, tag), so a
    model does not depend on N or on which worker fitted it.

    The values follow a noisy cycle rather than a plain normal distribution:
    on 1-D normal data, OneClassSVM(nu=0.05, gamma='scale') stops with ~60
    support vectors, flags ~20% of the points and has a nearly flat decision
    function over the bulk of the data; on this data it keeps ~19 support
    vectors (nu * 300 = 15 at the least) and flags ~6%, as expected of nu.

    Returns (device, tag, n_support_vectors, readings) per model.
    """
    import pickle

    import numpy as np
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import OneClassSVM

    seed, models_dir, keys = job
    out = []
    for device, tag in keys:
        rng = np.random.default_rng([seed, device, tag])
        mean = rng.uniform(-100.0, 100.0)
        scale = rng.uniform(0.5, 20.0)

        def normal_values(size: int) -> np.ndarray:
            # A sensor that follows a cycle (e.g. daily temperature), with
            # noise: mean + scale * (sin(phase) + 0.1 * N(0, 1)).
            phase = rng.uniform(0.0, 2.0 * np.pi, size)
            return mean + scale * (np.sin(phase) + NOISE * rng.standard_normal(size))

        train = normal_values(TRAIN_POINTS).reshape(-1, 1)
        model = Pipeline([("scaler", StandardScaler()), ("svm", OneClassSVM(nu=NU))])
        model.fit(train)
        with open(os.path.join(models_dir, f"model_{device}_{tag}"), "wb") as f:
            pickle.dump(model, f, protocol=5)
        n_sv = int(model.named_steps["svm"].support_vectors_.shape[0])

        readings = normal_values(READINGS_PER_MODEL)
        outliers = np.flatnonzero(rng.random(READINGS_PER_MODEL) < OUTLIER_RATE)
        signs = rng.choice([-1.0, 1.0], outliers.size)
        readings[outliers] = mean + signs * rng.uniform(1.5, 4.0, outliers.size) * scale
        out.append((device, tag, n_sv, readings))
    return out


def fleet_params(args: argparse.Namespace) -> dict:
    """What identifies a fleet; a cached fleet is reused only if all match."""
    import sklearn

    return {
        "generator_version": GENERATOR_VERSION,
        "models": args.models,
        "seed": args.seed,
        "readings_per_model": READINGS_PER_MODEL,
        "train_points": TRAIN_POINTS,
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


def generate_fleet(work: Path, params: dict, jobs: int) -> dict:
    """Steps 1 and 2: fit and pickle the models, write readings.parquet."""
    import multiprocessing

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = params["models"]
    seed = params["seed"]
    (work / "fleet.json").unlink(missing_ok=True)  # invalid until we finish
    models_dir = work / "models"
    if models_dir.exists():
        shutil.rmtree(models_dir)  # may hold a fleet of another size
    models_dir.mkdir(parents=True)

    # --- step 1: models, fitted in `jobs` processes -----------------------
    keys = model_keys(n)
    chunk = 50
    chunks = [(seed, str(models_dir), keys[i : i + chunk]) for i in range(0, n, chunk)]
    index = {key: i for i, key in enumerate(keys)}
    values = np.empty((READINGS_PER_MODEL, n), dtype=np.float64)  # time-major
    n_support = np.empty(n, dtype=np.int64)

    log(f"fitting {n} models ({jobs} processes) into {models_dir}")
    t0 = time.perf_counter()
    done, next_report = 0, 0.0
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ctx.Pool(jobs) as pool:
        for results in pool.imap_unordered(_fit_chunk, chunks):
            for device, tag, n_sv, readings in results:
                i = index[(device, tag)]
                n_support[i] = n_sv
                values[:, i] = readings
            done += len(results)
            elapsed = time.perf_counter() - t0
            if elapsed >= next_report or done == n:
                rate = done / elapsed if elapsed > 0 else 0.0
                eta = (n - done) / rate if rate > 0 else 0.0
                log(f"  fitted {done}/{n} models ({rate:.0f}/s, ~{eta:.0f}s left)")
                next_report = elapsed + 5.0
    fit_s = time.perf_counter() - t0
    log(f"fitted {n} models in {fit_s:.1f}s")

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
        "support_vectors": {
            "total": int(n_support.sum()),
            "min": int(n_support.min()),
            "max": int(n_support.max()),
            "mean": float(n_support.mean()),
        },
        # One RBF kernel evaluation per (support vector, reading) pair.
        "kernel_evals_per_pass": int(n_support.sum()) * READINGS_PER_MODEL,
        "generation_seconds": {"fit": round(fit_s, 2), "readings": round(readings_s, 2)},
    }
    (work / "fleet.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# --------------------------------------------------------------------------
# Step 3: the Python anchor (runs in a child process: `anchor-job`)
# --------------------------------------------------------------------------


def anchor_job(readings: str, models_dir: str, out: str) -> None:
    """The reference batch job: one process, pandas + scikit-learn.

    Prints one JSON line on stdout: rows, anomalies, models.
    """
    import pickle

    import numpy as np
    import pandas as pd

    df = pd.read_parquet(readings, columns=["TS", "Device", "Tag", "Value"])
    parts = []
    for (device, tag), group in df.groupby(["Device", "Tag"], sort=True):
        with open(os.path.join(models_dir, f"model_{device}_{tag}"), "rb") as f:
            model = pickle.load(f)
        x = group["Value"].to_numpy(dtype=np.float64).reshape(-1, 1)
        prediction = model.predict(x)
        score = model.decision_function(x)
        n = len(x)
        parts.append(
            pd.DataFrame(
                {
                    "TS": group["TS"].array,
                    "Device": np.full(n, device, dtype=np.int64),
                    "Tag": np.full(n, tag, dtype=np.int64),
                    "Val": x[:, 0],
                    "Prediction": (prediction == -1).astype(np.int64),
                    "Score": score,
                },
                copy=False,
            )
        )
    result = pd.concat(parts, ignore_index=True)
    result.to_parquet(out, index=False)
    print(
        json.dumps(
            {"rows": len(result), "anomalies": int(result["Prediction"].sum()), "models": len(parts)}
        ),
        flush=True,
    )


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


def time_python(work: Path, repeat: int) -> tuple[list[Run], dict]:
    cmd = [sys.executable, os.path.abspath(__file__), "anchor-job",
           "--readings", str(work / "readings.parquet"),
           "--models-dir", str(work / "models"),
           "--out", str(work / "py-out.parquet")]
    runs, result = [], {}
    for i in range(repeat):
        (work / "py-out.parquet").unlink(missing_ok=True)
        log(f"python anchor run {i + 1}/{repeat}: {' '.join(cmd)}")
        run = run_timed(cmd, capture=work / "py-anchor.stdout")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        log(f"  {result['rows']} rows, {result['anomalies']} anomalies")
        runs.append(run)
    return runs, result


def time_fleetscore(binary: str, work: Path, repeat: int) -> tuple[float, list[Run]]:
    data, out = work / "fsdata", work / "fs-out"
    if data.exists():
        shutil.rmtree(data)  # import into a fresh store every run
    cmd = [binary, "--data", str(data), "models", "import", str(work / "models")]
    log(f"fleetscore import (untimed): {' '.join(cmd)}")
    import_run = run_timed(cmd)

    cmd = [binary, "--data", str(data), "score", "--input", str(work / "readings.parquet"),
           "--out", str(out), "--format", "parquet"]
    runs = []
    for i in range(repeat):
        if out.exists():
            shutil.rmtree(out)  # no stale files from the previous run
        log(f"fleetscore run {i + 1}/{repeat}: {' '.join(cmd)}")
        runs.append(run_timed(cmd))
    return import_run.wall, runs


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


def _normalize(df, side: str):
    import numpy as np
    import pandas as pd

    missing = [c for c in OUTPUT_COLUMNS if c not in df.columns]
    if missing:
        raise BenchError(f"{side} output lacks columns {missing} (has {list(df.columns)})")
    return pd.DataFrame(
        {
            "ts": _ts_to_ns(df["TS"]).to_numpy(),
            "device": df["Device"].astype(str).to_numpy(dtype=object),
            "tag": df["Tag"].astype(str).to_numpy(dtype=object),
            "val": df["Val"].astype(np.float64).to_numpy(),
            "pred": df["Prediction"].astype(np.int64).to_numpy(),
            "score": df["Score"].astype(np.float64).to_numpy(),
        }
    )


def verify(work: Path, tolerance: float) -> dict:
    """Joins fleetscore's and Python's outputs on (TS, Device, Tag) and compares."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    files = sorted(p for p in (work / "fs-out").rglob("*.parquet") if p.is_file())
    if not files:
        raise BenchError(f"fleetscore wrote no *.parquet under {work / 'fs-out'}")
    log(f"verifying: {len(files)} fleetscore file(s) vs. py-out.parquet")
    fs = pd.concat([_normalize(pq.read_table(f).to_pandas(), f"fleetscore ({f.name})") for f in files],
                   ignore_index=True)
    py = _normalize(pd.read_parquet(work / "py-out.parquet"), "python")

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
    score_abs = np.abs(both["score_py"].to_numpy() - both["score_fs"].to_numpy())
    val_abs = np.abs(both["val_py"].to_numpy() - both["val_fs"].to_numpy())
    nan_scores = int(np.isnan(score_abs).sum())
    report = {
        "rows_python": len(py),
        "rows_fleetscore": len(fs),
        "rows_compared": len(both),
        "missing_in_fleetscore": only_py,
        "extra_in_fleetscore": only_fs,
        "prediction_mismatches": int(pred_diff.sum()),
        "max_abs_score_diff": float(np.nanmax(score_abs)) if len(both) else 0.0,
        "nan_score_diffs": nan_scores,
        "max_abs_val_diff": float(np.nanmax(val_abs)) if len(both) else 0.0,
        "anomalies_fleetscore": int(fs["pred"].sum()),
    }
    problems = []
    if only_py or only_fs or len(py) != len(fs):
        problems.append(f"rows differ: python {len(py)}, fleetscore {len(fs)}, "
                        f"{only_py} missing in fleetscore, {only_fs} extra in fleetscore")
    if report["prediction_mismatches"]:
        problems.append(f"{report['prediction_mismatches']} prediction mismatches")
    if nan_scores or report["max_abs_score_diff"] > tolerance:
        problems.append(f"max |Score - decision| = {report['max_abs_score_diff']:.3g} "
                        f"(> {tolerance:g}), {nan_scores} NaN")
    if report["max_abs_val_diff"] != 0 or np.isnan(val_abs).any():
        problems.append(f"Val differs from the input value (max diff {report['max_abs_val_diff']:.3g})")
    if problems:
        bad = both[pred_diff | ~(score_abs <= tolerance)].head(5)
        if len(bad):
            log("first mismatching rows:\n" + bad.to_string())
        report["problems"] = problems
    return report


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    repo = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(
        description="Time one batch scoring job over many small scikit-learn models: "
                    "a plain pandas + scikit-learn job vs. fleetscore, and check they agree. "
                    "The last line of stdout is the speed-up.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", type=int, default=10_000, metavar="N",
                   help="number of models: devices 1..N/5 times tags 1..5")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated fleet")
    p.add_argument("--work", type=Path, default=None, metavar="DIR",
                   help="work dir (kept; a fleet with the same --models/--seed in it is reused). "
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
                   help="largest |Score - decision_function| accepted")
    args = p.parse_args(argv)
    if args.models < 1:
        p.error("--models must be at least 1")
    if args.repeat < 1 or args.python_repeat < 1 or args.jobs < 1:
        p.error("--repeat, --python-repeat and --jobs must be at least 1")
    return args


def benchmark(args: argparse.Namespace, work: Path) -> int:
    import numpy
    import pandas
    import pyarrow
    import sklearn

    # --- steps 1-2 --------------------------------------------------------
    params = fleet_params(args)
    info = load_cached_fleet(work, params)
    if info:
        log(f"reusing the fleet in {work} ({args.models} models, seed {args.seed})")
    else:
        t0 = time.perf_counter()
        info = generate_fleet(work, params, args.jobs)
        log(f"generated the fleet in {time.perf_counter() - t0:.1f}s")
    rows = info["rows"]
    sv = info["support_vectors"]
    kernel_evals = info["kernel_evals_per_pass"]

    # --- step 3 -----------------------------------------------------------
    busy = {"python": check_quiet("the Python anchor")}
    py_runs, py_result = time_python(work, args.python_repeat)
    py_best = min(r.wall for r in py_runs)

    # --- steps 4-5 --------------------------------------------------------
    fs_runs, import_s, report = [], None, None
    if not args.python_only:
        busy["fleetscore"] = check_quiet("fleetscore")
        import_s, fs_runs = time_fleetscore(args.fleetscore, work, args.repeat)
        report = verify(work, args.tolerance)

    # --- step 6 -----------------------------------------------------------
    n = args.models
    devices = (n + TAGS_PER_DEVICE - 1) // TAGS_PER_DEVICE
    gen = info["generation_seconds"]
    lines = [
        "== fleetscore scoring benchmark ==",
        f"machine:      {os.cpu_count()} cpus; before timing: "
        + ", ".join(f"{k} {v}" for k, v in busy.items())
        + f"; python {sys.version.split()[0]}, scikit-learn {sklearn.__version__}, numpy {numpy.__version__}, "
        f"pandas {pandas.__version__}, pyarrow {pyarrow.__version__}",
        f"fleet:        {n} models ({devices} devices x {TAGS_PER_DEVICE} tags), seed {args.seed}, "
        f"in {work}; generated in {gen['fit']:.1f}s (fit) + {gen['readings']:.1f}s (readings)",
        f"readings:     {rows} ({READINGS_PER_MODEL} per model, one Parquet file)",
        f"support vectors: {sv['total']} in all, {sv['mean']:.2f} per model (min {sv['min']}, max {sv['max']})",
        f"RBF kernel evaluations: {kernel_evals} per scoring pass "
        f"(sum over models of n_support_vectors * n_readings); the Python job makes two passes "
        f"(predict + decision_function) = {2 * kernel_evals}; at 1 ns per evaluation "
        f"(one vectorized exp) that is {kernel_evals / 1e6:.0f} ms of arithmetic per pass on one core",
        f"python:       {describe(py_runs)}; {py_result['rows']} rows, {py_result['anomalies']} anomalies",
    ]
    if not args.python_only:
        lines += [
            f"fleetscore:   {describe(fs_runs)}; import (untimed) {secs(import_s)}s",
            f"verification: {report['rows_compared']} rows compared (python {report['rows_python']}, "
            f"fleetscore {report['rows_fleetscore']}), {report['prediction_mismatches']} prediction "
            f"mismatches, max |Score - decision| = {report['max_abs_score_diff']:.3g}, "
            f"max |Val diff| = {report['max_abs_val_diff']:.3g}, "
            f"fleetscore anomalies {report['anomalies_fleetscore']}",
        ]
    print("\n".join(lines), flush=True)

    if args.python_only:
        print(f"scikit-learn only: python {secs(py_best)}s, {n} models, {rows} readings "
              "(fleetscore not run: --python-only)")
        return 0
    if "problems" in report:
        for problem in report["problems"]:
            print(f"VERIFICATION FAILED: {problem}", flush=True)
        return 1
    fs_best = min(r.wall for r in fs_runs)
    ratio = py_best / fs_best
    print(f"fleetscore / scikit-learn: {ratio:.1f}x faster "
          f"(python {secs(py_best)}s, fleetscore {secs(fs_best)}s, {n} models, {rows} readings)")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["anchor-job"]:
        p = argparse.ArgumentParser(prog="scoring.py anchor-job",
                                    description="Internal: the Python anchor batch job.")
        p.add_argument("--readings", required=True)
        p.add_argument("--models-dir", required=True)
        p.add_argument("--out", required=True)
        a = p.parse_args(argv[1:])
        anchor_job(a.readings, a.models_dir, a.out)
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
    ok = False
    try:
        code = benchmark(args, work)
        ok = code == 0
        return code
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if temp and ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif temp:
            log(f"work dir kept: {work}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
