#!/usr/bin/env python3
"""The Python runtime in a long-running process: two hourly jobs in one
`fleetscore backfill`, sharing one pool of Python workers, against the
one-process Python job of one hour.

The first job pays the workers' start and loads every model; the second
finds the workers up and the models loaded (`[python] cache_bytes`), as
every job after the first does in `serve` or `fleetscore worker`. The
anchor is `bench/scoring.py`'s one-process job over one hour, run in the
same session.

Needs the `pyiforest` fleet of `bench/scoring.py` (it makes one when
WORK/pyiforest has none):

    python3.11 bench/python_warm.py --work /work/bench-py

The last line of stdout is the ratio of the anchor to the warm job.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scoring  # noqa: E402


def main(argv: list[str]) -> int:
    repo = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--fleetscore", default=str(repo / "target" / "release" / "fleetscore"))
    p.add_argument("--python-repeat", type=int, default=2)
    a = p.parse_args(argv)
    family = scoring.FAMILIES["pyiforest"]
    work = a.work / family.name
    work.mkdir(parents=True, exist_ok=True)
    params = scoring.fleet_params(family, family.default_models, 1)
    if not scoring.load_cached_fleet(work, params):
        scoring.generate_fleet(work, params, 2)

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    # Two hours: the fleet's hour, and the same readings an hour later.
    data = work / "fsdata-warm"
    if data.exists():
        shutil.rmtree(data)
    hour = pq.read_table(work / "readings.parquet")
    later = hour.set_column(0, "TS", pc.add(hour["TS"], pa.scalar(3_600_000, pa.duration("ms"))))
    for name, table in (("h0.parquet", hour), ("h1.parquet", later)):
        pq.write_table(table, work / name)
    fs = a.fleetscore
    cfg = scoring.python_config(work)
    run = lambda *args: subprocess.run([fs, "--quiet", "--config", str(cfg), "--data", str(data), *args],
                                       check=True, capture_output=True, text=True)
    run("ingest", str(work / "h0.parquet"), str(work / "h1.parquet"))
    run("models", "import", str(work / "models"), "--runtime", "python")

    scoring.check_quiet("the anchor")
    py_runs, _ = scoring.time_python(work, family, a.python_repeat)
    py_best = min(r.wall for r in py_runs)

    scoring.check_quiet("fleetscore")
    t = time.perf_counter()
    run("backfill", "--from", "2024-01-01T00:00:00Z", "--to", "2024-01-01T02:00:00Z")
    total = time.perf_counter() - t
    jobs = json.loads(run("jobs", "list", "--json").stdout)
    jobs = sorted(jobs, key=lambda j: j["window_start"])
    took = [(j["finished_at"] - j["started_at"]) / 1e9 for j in jobs]
    rows = [j["rows"] for j in jobs]
    print("\n".join([
        "== the Python runtime, cold and warm: two hourly jobs in one process ==",
        f"fleet:       {family.default_models} models: {family.estimator}; {rows} rows per job",
        f"python:      {scoring.describe(py_runs)} (one hour, one process)",
        f"fleetscore:  backfill of two hours in {total:.2f}s: job 1 (workers start, models load) "
        f"{took[0]:.2f}s, job 2 (workers up, models loaded) {took[1]:.2f}s",
        f"cold job:    {py_best / took[0]:.2f}x the anchor's speed",
    ]), flush=True)
    print(f"warm job / one-process Python job: {py_best / took[1]:.2f}x faster "
          f"(python {py_best:.2f}s, fleetscore warm job {took[1]:.2f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
