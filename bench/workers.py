#!/usr/bin/env python3
"""Scale-out benchmark: the same scoring job with 1 and with 2 `fleetscore
worker` processes on one PostgreSQL job store, and its cost per million
models.

Builds the release binary, makes a fleet (default 2,000 devices x 5 tags =
10,000 per-device models, copies of the demo's scikit-learn pickles under
per-device names, and an hour of readings every 10 s: 3.6M readings),
imports and ingests it into a local store, then for N in 1, 2:

1. starts N workers (`fleetscore worker --threads 1 --slots 1 --cpus K`:
   each worker is one core's worth, as one small host or pod would be, on
   a core of its own, worker K on the K-th CPU the script may use; `--no-pin` leaves the placing of
   threads to the kernel),
2. `--runs` times (default 4), one after the other on the same workers:
   queues the hour as one job (`fleetscore backfill --queue`, 1,000 models
   a task: the product's default `[jobs] batch_size`; `--batch-size`
   changes it) and waits until it has succeeded (polling PostgreSQL over one
   psql session), reading the workers' CPU time (user + system) from the
   kernel before and after,
3. stops the workers with SIGTERM.

Every run scores exactly the same job (each overwrites the previous one's
predictions; with --fresh, the previous job's predictions are deleted
before the next job is queued, outside the timing, so that each job writes
new files as an hourly schedule does rather than replacing files, which
costs ext4 the old files' eviction). A job's time is from its creation to its end as the job
store records them: planning, the map tasks (which read the window,
shared among the workers), the score tasks and finalizing (the time from
queueing to seeing it done is printed too). The whole machine's busy CPU
time over the job (every process and the kernel, from /proc/stat) is
printed beside the workers' own. The first job of each worker count is "cold": the workers
have just started and touch their memory for the first time, which costs
a lot on a VM with transparent huge pages. Workers are long-running
processes, so the speed-up is taken on the warm jobs (the median of the
others); the cold one is printed too. A worker's memory keeps growing
for a few more jobs (with two workers, for about eight: each has more
threads, and each thread's allocator keeps its own pages), and each job
of that growth faults in and zeroes new pages; `--warmup K` runs K more
jobs before the measured ones, as a worker that has been up for a while
would have. It prints, per job, the wall time,
the workers' CPU seconds and the CPU seconds per million models scored,
then the control and the speed-up of 2 workers over 1 last. The control
(skip it with --no-control) copies the store and runs two independent
one-worker setups, each with its own store and its own database, scoring
the hour at the same time: twice the work of one in the time they take is
what this machine can give two workers at all, sharing nothing. On this 2-core machine the
target is at least 1.7x. The machine is shared: run it when it is
otherwise quiet, and more than once.

With --interleave, the 1-worker and the 2-worker setups (each its own
copy of the store and its own database) are both up throughout and score
the hour alternately, one job at a time, and each 1-worker job is also
compared with the 2-worker job right after it: on a shared machine whose
speed drifts over minutes, that compares like with like.

Usage (from the repository root; PostgreSQL on 127.0.0.1:5432 or
FLEETSCORE_TEST_POSTGRES)::

    python3 bench/workers.py [--devices 2000] [--tags 5] [--batch-size 1000] [--runs 4] [--warmup 0] [--interleave] [--fresh] [--work /tmp/fsworkers]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
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


def cpu_seconds(pid):
    """User + system CPU of a live process, from the kernel (10 ms ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy():
    """CPU seconds the whole machine has spent busy (every process and the
    kernel: the workers, PostgreSQL, file I/O), from /proc/stat."""
    with open("/proc/stat") as f:
        f = f.readline().split()[1:]
    user, nice, system, idle, iowait, irq, softirq = (int(x) for x in f[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


# Whether each worker runs on one CPU of its own (`worker --cpus K`,
# worker K on the K-th CPU this script may use, cycling), as on a host of one core;
# --no-pin leaves placing the threads to the kernel.
PIN = True


def worker_cmd(binary, data, db, k, poll):
    """`fleetscore worker` as the benchmarks run it: one core's worth."""
    cmd = [binary, "--data", data, "--db", db, "worker", "--threads", "1", "--slots", "1",
           "--poll", poll]
    if PIN:
        cpus = sorted(os.sched_getaffinity(0))  # those this script may use
        cmd += ["--cpus", str(cpus[k % len(cpus)])]
    return cmd


class Setup:
    """`workers` workers on one (data folder, database) pair, and a psql
    session to poll its jobs."""

    def __init__(self, binary, data, db, workers, batch, poll="50ms", fresh=False):
        self.binary, self.data, self.db, self.batch = binary, data, db, batch
        self.fresh = fresh
        self.procs = [subprocess.Popen(worker_cmd(binary, data, db, k, poll),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                      for k in range(workers)]
        # Poll over one psql session (one process, one connection), not
        # the binary nor a psql per poll: starting a process every few ms
        # took a tenth of the machine from the workers.
        self.poller = subprocess.Popen(["psql", db, "-At", "-q"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)

    def job(self):
        """Queues the hour as one job and waits for it; returns (wall,
        polled, workers' CPU, machine busy CPU, job record)."""
        procs = self.procs
        if self.fresh:
            # Untimed: the previous job's predictions go, and their pages
            # are written back first, so the job writes new files.
            shutil.rmtree(os.path.join(self.data, "store", "predictions"), ignore_errors=True)
            os.sync()
            time.sleep(0.3)
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        busy0 = machine_busy()
        t0 = time.perf_counter()
        queued = fleetscore(self.binary, self.data, self.db, "backfill", "--from",
                            "2024-01-01T00:00:00Z", "--to", "2024-01-01T01:00:00Z",
                            "--batch-size", str(self.batch), "--queue", capture=True)
        job = int(queued.strip().splitlines()[-1])
        while True:
            self.poller.stdin.write(f"SELECT state FROM jobs WHERE id = {job};\n")
            self.poller.stdin.flush()
            state = self.poller.stdout.readline().strip()
            if state not in ("queued", "running"):
                break
            time.sleep(0.02)
        polled = time.perf_counter() - t0
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
        busy = machine_busy() - busy0
        j = json.loads(fleetscore(self.binary, self.data, self.db, "jobs", "show", str(job),
                                  "--json", capture=True))
        assert j["job"]["state"] == "succeeded", j["job"]
        # The job's own time, from its creation to its end as the job
        # store records them (not the queueing command's start-up, nor
        # the poll's granularity).
        wall = (j["job"]["finished_at"] - j["job"]["created_at"]) / 1e9
        return (wall, polled, cpu, busy, j["job"])

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            p.wait()
        self.poller.stdin.close()
        self.poller.wait()


def run(binary, data, db, workers, batch, runs, fresh=False):
    """Starts `workers` workers, then scores the hour `runs` times, one job
    after the other on the same workers; returns (wall, cpu, job) per run."""
    setup = Setup(binary, data, db, workers, batch, fresh=fresh)
    try:
        return [setup.job() for _ in range(runs)]
    finally:
        setup.stop()


def interleaved(binary, one, two, batch, runs, fresh=False):
    """One worker on `one` and two workers on `two` (each a (data folder,
    database) pair of its own), all started at once; then the hour is
    scored `runs` times on each, alternately, one job at a time, so both
    see the same machine. Idle workers wait on PostgreSQL's announcements
    (their poll is 1 s). Returns both lists of runs."""
    a = Setup(binary, *one, 1, batch, poll="1s", fresh=fresh)
    b = Setup(binary, *two, 2, batch, poll="1s", fresh=fresh)
    out = ([], [])
    try:
        for _ in range(runs):
            out[0].append(a.job())
            out[1].append(b.job())
    finally:
        a.stop()
        b.stop()
    return out


def side_by_side(binary, pairs, batch, runs, warmup=0):
    """The control: one worker on each (data, db) pair, each pair its own
    store and job store, scoring the same hour at the same time. Returns
    each pair's job times (the first job of each, cold, and the next
    `warmup` left out)."""
    procs = [subprocess.Popen(worker_cmd(binary, data, db, k, "50ms"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for k, (data, db) in enumerate(pairs)]
    times = []
    try:
        for i in range(runs):
            # Queue on both, then wait for both (the jobs overlap but for
            # a queueing command's start-up).
            jobs = []
            for data, db in pairs:
                out = fleetscore(binary, data, db, "backfill", "--from", "2024-01-01T00:00:00Z",
                                 "--to", "2024-01-01T01:00:00Z", "--batch-size", str(batch),
                                 "--queue", capture=True)
                jobs.append(int(out.strip().splitlines()[-1]))
            done = []
            for (data, db), job in zip(pairs, jobs):
                while True:
                    j = json.loads(fleetscore(binary, data, db, "jobs", "show", str(job),
                                              "--json", capture=True))["job"]
                    if j["state"] not in ("queued", "running"):
                        break
                    time.sleep(0.05)
                assert j["state"] == "succeeded", j
                done.append((j["finished_at"] - j["created_at"]) / 1e9)
            if i > warmup:
                times.append(done)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--tags", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=4,
                    help="jobs per worker count, on the same workers; the first is cold")
    ap.add_argument("--no-control", dest="control", action="store_false",
                    help="skip the control (two independent one-worker setups side by side)")
    ap.add_argument("--interleave", action="store_true",
                    help="run the 1-worker and the 2-worker jobs alternately (each setup its own "
                         "store copy and database, all workers up throughout), so a machine that "
                         "drifts during the run affects both alike")
    ap.add_argument("--fresh", action="store_true",
                    help="delete the previous job's predictions before each job (untimed), so each "
                         "job writes new files as an hourly schedule does instead of replacing them")
    ap.add_argument("--warmup", type=int, default=0, metavar="K",
                    help="after the cold job, K more jobs that are printed but left out of the "
                         "warm medians (and of the control's): a worker's memory keeps growing "
                         "for several jobs, longer with two workers, so K > 0 measures workers "
                         "that have run for a while, as long-running ones have")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="let the kernel place the workers' threads on any core (by default each "
                         "worker runs on one core of its own, `worker --cpus K`, as on a host of "
                         "one core)")
    ap.add_argument("--work", default="/tmp/fsworkers")
    args = ap.parse_args()
    global PIN
    PIN = args.pin
    runs_needed = 2 + args.warmup
    if args.runs < runs_needed:
        ap.error(f"--runs must be at least {runs_needed} with --warmup {args.warmup} "
                 "(the cold job, the warm-up jobs and one measured job)")

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
    twin = data + "-twin"
    db2 = db + "_twin"

    def make_twin():
        if os.path.exists(twin):
            shutil.rmtree(twin)
        shutil.copytree(data, twin, symlinks=True)
        sh("createdb", "-h", h, "-p", port or "5432", "-U", "postgres", name + "_twin")

    def drop_twin():
        sh("dropdb", "-h", h, "-p", port or "5432", "-U", "postgres", "--if-exists",
           name + "_twin")
        shutil.rmtree(twin, ignore_errors=True)

    try:
        cold, warm, cores = {}, {}, {}
        if args.interleave:
            make_twin()
            try:
                both = interleaved(binary, (data, db), (twin, db2), args.batch_size, args.runs,
                                   args.fresh)
            finally:
                drop_twin()
            by_count = {1: both[0], 2: both[1]}
        else:
            by_count = {n: run(binary, data, db, n, args.batch_size, args.runs, args.fresh)
                            for n in (1, 2)}
        for n in (1, 2):
            runs = by_count[n]
            for i, (wall, polled, cpu, busy, job) in enumerate(runs):
                models = job["models"]
                kind = ("cold: workers just started" if i == 0
                        else "warm-up, not counted" if i <= args.warmup else "warm")
                print(f"{n} worker(s), job {i + 1} ({kind}): "
                      f"{wall:6.2f} s job ({polled:.2f} s from queueing to seeing it done; "
                      f"planning + map tasks' reads and writes, summed over workers, {job['load_ms'] / 1000:.2f} s), "
                      f"workers {cpu:5.2f} CPU-s, machine {busy:5.2f} CPU-s ({busy / polled:.2f} of "
                      f"{os.cpu_count()} cores busy), {models} models, {job['rows']} rows, "
                      f"{job['tasks']} tasks: {cpu / models * 1e6:,.0f} CPU-s per million models")
            cold[n] = runs[0][0]
            warm_runs = runs[1 + args.warmup:]
            warm[n] = statistics.median(r[0] for r in warm_runs)
            cores[n] = statistics.median(r[3] / r[1] for r in warm_runs)
        print(f"cold (first job after the workers start): 1 worker {cold[1]:.2f} s, "
              f"2 workers {cold[2]:.2f} s: {cold[1] / cold[2]:.2f}x")
        print(f"cores busy (workers, PostgreSQL, the kernel; warm median): 1 worker "
              f"{cores[1]:.2f}, 2 workers {cores[2]:.2f} of {os.cpu_count()}")
        # The control: what this machine gives two workers that share
        # nothing (each its own store and database) over one.
        ceiling = None
        if args.control:
            make_twin()
            try:
                pairs = side_by_side(binary, [(data, db), (twin, db2)], args.batch_size, args.runs,
                                     args.warmup)
            finally:
                drop_twin()
            both = statistics.median(max(p) for p in pairs)
            ceiling = 2 * warm[1] / both
            print(f"control: two independent one-worker setups (own store, own database) scoring "
                  f"the hour at the same time take {both:.2f} s (median of the slower; alone "
                  f"{warm[1]:.2f} s): this machine gives two workers at most "
                  f"{ceiling:.2f}x the throughput of one")
        if args.interleave:
            skip = 1 + args.warmup
            pairs_ratio = [a[0] / b[0] for a, b in zip(by_count[1][skip:], by_count[2][skip:])]
            if pairs_ratio:
                print(f"interleaved pairs (1-worker job / the 2-worker job right after it, warm): "
                      + ", ".join(f"{r:.2f}x" for r in pairs_ratio)
                      + f"; median {statistics.median(pairs_ratio):.2f}x")
        print(f"speed-up, 2 workers over 1 (warm, median of {len(warm_runs)} job(s)): "
              f"{warm[1]:.2f} s / {warm[2]:.2f} s = {warm[1] / warm[2]:.2f}x (target >= 1.7x"
              + (f"; the control's ceiling here {ceiling:.2f}x)" if ceiling else ")"))
    finally:
        sh("dropdb", "-h", h, "-p", port or "5432", "-U", "postgres", "--if-exists", name)


if __name__ == "__main__":
    sys.exit(main())
