#!/usr/bin/env python3
"""Scale-out benchmark: the same scoring job with 1 and with 2 `fleetscore
worker` processes on one PostgreSQL job store, and its cost per million
models.

Builds the release binary, makes a fleet (default 2,000 devices x 5 tags =
10,000 per-device models, copies of the demo's scikit-learn pickles under
per-device names, and an hour of readings every 10 s: 3.6M readings),
imports and ingests it into a local store, then for N in 1, 2:

1. queues the hour as one job (`fleetscore backfill --queue`, 100 models a
   task),
2. starts N workers (`fleetscore worker --threads 1 --slots 1`: each worker
   is one core's worth, as one small host or pod would be),
3. waits until the job has succeeded (polling PostgreSQL), stops the
   workers with SIGTERM and reads their CPU time (user + system) from the
   kernel.

Both runs score exactly the same job (the second overwrites the first's
predictions). It prints, per run, the wall time (planning included: one
worker reads the window and stages the tasks while the others wait), the
workers' CPU seconds and the CPU seconds per million models scored, then
the speed-up of 2 workers over 1 last. On this 2-core machine the target is
at least 1.7x. The machine is shared: run it when it is otherwise quiet, and
more than once.

Usage (from the repository root; PostgreSQL on 127.0.0.1:5432 or
FLEETSCORE_TEST_POSTGRES)::

    python3 bench/workers.py [--devices 2000] [--tags 5] [--batch-size 100] [--work /tmp/fsworkers]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def fleetscore(binary, data, db, *args, capture=False):
    cmd = [binary, "--data", data, "--quiet"]
    if db:
        cmd += ["--db", db]
    cmd += list(args)
    if capture:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    sh(*cmd)
    return None


def make_fleet(binary, data, devices, tags):
    models = os.path.join(data, "models-in")
    os.makedirs(models, exist_ok=True)
    demo = os.path.join(ROOT, "crates/fleetscore/demo")
    for d in range(devices):
        for t in range(1, tags + 1):
            dst = os.path.join(models, f"model_d{d:05}_{t}.pkl")
            if not os.path.exists(dst):
                os.link(os.path.join(demo, f"model_fallback_{t}.pkl"), dst)
    fleetscore(binary, data, None, "models", "import", models)
    csv = os.path.join(data, "readings.csv")
    n = 0
    with open(csv, "w") as f:
        f.write("TS,Device,Tag,Value\n")
        for i in range(360):
            m, s = divmod(i * 10, 60)
            ts = f"2024-01-01 00:{m:02}:{s:02}"
            for d in range(devices):
                for t in range(1, tags + 1):
                    v = 20.0 + t + ((i * 7 + d * 13) % 17) * 0.3 + (5.0 if (i + d) % 97 == 0 else 0.0)
                    f.write(f"{ts},d{d:05},{t},{v:.2f}\n")
                    n += 1
    fleetscore(binary, data, None, "ingest", csv)
    return n


def run(binary, data, db, workers, batch):
    out = fleetscore(binary, data, db, "backfill", "--from", "2024-01-01T00:00:00Z",
                     "--to", "2024-01-01T01:00:00Z", "--batch-size", str(batch), "--queue",
                     capture=True)
    job = out.strip().splitlines()[-1]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([binary, "--data", data, "--db", db, "worker", "--threads", "1",
                               "--slots", "1", "--poll", "50ms"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(workers)]
    # Poll with psql (cheap), not the binary, so the poller takes no CPU
    # from the workers worth speaking of.
    while True:
        state = subprocess.run(["psql", db, "-Atc", f"SELECT state FROM jobs WHERE id = {int(job)}"],
                               check=True, capture_output=True, text=True).stdout.strip()
        if state not in ("queued", "running"):
            break
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    j = json.loads(fleetscore(binary, data, db, "jobs", "show", job, "--json", capture=True))
    cpu = 0.0
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = status
        cpu += ru.ru_utime + ru.ru_stime
    assert j["job"]["state"] == "succeeded", j["job"]
    return wall, cpu, j["job"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--tags", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--work", default="/tmp/fsworkers")
    args = ap.parse_args()

    sh("cargo", "build", "--release", "-q", "-p", "fleetscore", cwd=ROOT)  # honours CARGO_TARGET_DIR
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "release", "fleetscore")
    data = os.path.join(args.work, f"data-{args.devices}x{args.tags}")
    if os.path.exists(data):
        shutil.rmtree(data)
    os.makedirs(data)
    t = time.perf_counter()
    readings = make_fleet(binary, data, args.devices, args.tags)
    print(f"fleet: {args.devices * args.tags} models, {readings} readings "
          f"(made in {time.perf_counter() - t:.1f} s)")

    server = os.environ.get("FLEETSCORE_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
    name = f"fs_test_bench_{os.getpid()}"
    host = server.split("@")[-1].split("/")[0]
    h, _, port = host.partition(":")
    sh("createdb", "-h", h, "-p", port or "5432", "-U", "postgres", name)
    db = server.rsplit("/", 1)[0] + "/" + name
    try:
        results = {}
        for n in (1, 2):
            wall, cpu, job = run(binary, data, db, n, args.batch_size)
            models = job["models"]
            results[n] = wall
            print(f"{n} worker(s): {wall:7.2f} s wall (planning {job['load_ms'] / 1000:.2f} s), "
                  f"{cpu:7.2f} CPU-s, {models} models, {job['rows']} rows, {job['tasks']} tasks: "
                  f"{cpu / models * 1e6:,.0f} CPU-s per million models")
        print(f"speed-up, 2 workers over 1: {results[1] / results[2]:.2f}x (target >= 1.7x)")
    finally:
        sh("dropdb", "-h", h, "-p", port or "5432", "-U", "postgres", "--if-exists", name)


if __name__ == "__main__":
    sys.exit(main())
