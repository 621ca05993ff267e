#!/usr/bin/env python3
"""A/B of builds or settings on the scale-out job: several setups, each a
(fleetscore binary, worker count) with its own copy of the store and its
own PostgreSQL database, all up at once, score the hour alternately, one
job at a time, so a machine whose speed drifts affects all alike.

Run `bench/workers.py` once first: it makes the fleet this copies
(`--data`, default /tmp/fsworkers/data-2000x5). Then, for example::

    cp "$CARGO_TARGET_DIR/release/fleetscore" /tmp/fs-before   # before a change
    # ... change, cargo build --release ...
    python3 bench/ab.py --runs 8 /tmp/fs-before:1 /tmp/fs-before:2 \\
        "$CARGO_TARGET_DIR/release/fleetscore:1" "$CARGO_TARGET_DIR/release/fleetscore:2"

Each setup is BINARY:WORKERS (`worker --threads 1 --slots 1 --cpus K`,
worker K of a setup on the K-th CPU it may use, as in bench/workers.py; `--no-pin` leaves
out `--cpus`, for a binary without it or to compare). Prints each round's job times (creation to end, from
the job store), then each setup's warm median (the first job left out)
and the first setup's median over each other's, and each setup's median
context switches per job: of the workers' threads, and of the PostgreSQL
backends serving its database (each round trip to the database wakes
both sides; the count includes the bench's own polling, the same for
every setup). Options: --batch-size
(models per task, default 1000 as in the product), --fresh (delete the previous job's
predictions before each job, untimed), --sync-off K (setups from index K
on get `ALTER DATABASE … SET synchronous_commit = off`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("setups", nargs="+", metavar="BINARY:WORKERS")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--data", default="/tmp/fsworkers/data-2000x5")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--sync-off", type=int, default=None, metavar="K")
    ap.add_argument("--no-pin", action="store_true")
    args = ap.parse_args()
    if not os.path.isdir(args.data):
        raise SystemExit(f"no fleet at {args.data}: run bench/workers.py first (or --data)")
    server = os.environ.get("FLEETSCORE_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
    base = server.rsplit("/", 1)[0]
    host = server.split("@")[-1].split("/")[0]
    h, _, port = host.partition(":")
    pg = ["-h", h, "-p", port or "5432", "-U", "postgres"]
    setups = []
    try:
        for i, spec in enumerate(args.setups):
            binary, _, n = spec.rpartition(":")
            if not binary or not n.isdigit() or not os.path.isfile(binary):
                raise SystemExit(f"setup {spec!r}: expected BINARY:WORKERS with an existing binary")
            data = f"{args.data}-ab{i}"
            shutil.rmtree(data, ignore_errors=True)
            shutil.copytree(args.data, data, symlinks=True)
            name = f"fs_test_ab_{os.getpid()}_{i}"
            subprocess.run(["createdb", *pg, name], check=True)
            url = f"{base}/{name}"
            if args.sync_off is not None and i >= args.sync_off:
                subprocess.run(["psql", *pg, "-qc",
                                f"ALTER DATABASE {name} SET synchronous_commit = off", "postgres"],
                               check=True)
            s = dict(binary=binary, data=data, url=url, name=name, times=[],
                     label=f"{os.path.basename(binary)}x{n}#{i}", procs=[], switches=[])
            setups.append(s)
            # The schema first, so the workers do not race to create it.
            subprocess.run([binary, "--data", data, "--db", url, "--quiet", "jobs", "list"],
                           check=True, capture_output=True)
            for k in range(int(n)):
                cmd = [binary, "--data", data, "--db", url, "worker", "--threads", "1",
                       "--slots", "1", "--poll", "1s"]
                if not args.no_pin:
                    cpus = sorted(os.sched_getaffinity(0))  # those this script may use
                    cmd += ["--cpus", str(cpus[k % len(cpus)])]
                s["procs"].append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL))
            s["psql"] = subprocess.Popen(["psql", url, "-At", "-q"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)

        def query(s, sql):
            s["psql"].stdin.write(sql + ";\n")
            s["psql"].stdin.flush()
            return s["psql"].stdout.readline().strip()

        def switches(s):
            """Context switches so far of the workers' threads and of the
            database's backends (those up now)."""
            pids = [p.pid for p in s["procs"]]
            backends = query(s, "SELECT string_agg(pid::text, ',') FROM pg_stat_activity "
                                f"WHERE datname = '{s['name']}'")
            pids += [int(p) for p in backends.split(",") if p]
            total = 0
            for pid in pids:
                try:
                    threads = os.listdir(f"/proc/{pid}/task")
                except OSError:
                    continue
                for t in threads:
                    try:
                        with open(f"/proc/{pid}/task/{t}/status") as f:
                            for line in f:
                                if "ctxt_switches:" in line:
                                    total += int(line.split()[-1])
                    except OSError:
                        pass
            return total

        def job(s):
            if args.fresh:
                shutil.rmtree(os.path.join(s["data"], "store", "predictions"), ignore_errors=True)
                os.sync()
                time.sleep(0.3)
            out = subprocess.run([s["binary"], "--data", s["data"], "--db", s["url"], "--quiet",
                                  "backfill", "--from", "2024-01-01T00:00:00Z", "--to",
                                  "2024-01-01T01:00:00Z", "--batch-size", str(args.batch_size),
                                  "--queue"], capture_output=True, text=True, check=True).stdout
            j = int(out.strip().splitlines()[-1])
            before = switches(s)
            while query(s, f"SELECT state FROM jobs WHERE id = {j}") in ("queued", "running"):
                time.sleep(0.02)
            state = query(s, f"SELECT state FROM jobs WHERE id = {j}")
            if state != "succeeded":
                raise SystemExit(f"{s['label']}: job {j} {state}")
            s["switches"].append(switches(s) - before)
            return float(query(s, f"SELECT (finished_at - created_at) / 1e9 FROM jobs WHERE id = {j}"))

        for _ in range(args.runs):
            for s in setups:
                s["times"].append(job(s))
            print("  ".join(f"{s['label']} {s['times'][-1]:.3f} s" for s in setups), flush=True)
    finally:
        for s in setups:
            for p in s["procs"]:
                p.send_signal(signal.SIGTERM)
            for p in s["procs"]:
                p.wait()
            if "psql" in s:
                s["psql"].stdin.close()
                s["psql"].wait()
            subprocess.run(["dropdb", *pg, "--if-exists", s["name"]], check=False)
            shutil.rmtree(s["data"], ignore_errors=True)
    medians = [statistics.median(s["times"][1:] or s["times"]) for s in setups]
    for s, m in zip(setups, medians):
        sw = statistics.median(s["switches"][1:] or s["switches"])
        print(f"{s['label']}: warm median {m:.3f} s, {sw:.0f} context switches per job "
              "(workers' threads and the database's backends)")
    for s, m in zip(setups[1:], medians[1:]):
        print(f"{setups[0]['label']} / {s['label']}: {medians[0] / m:.2f}x")


if __name__ == "__main__":
    main()
