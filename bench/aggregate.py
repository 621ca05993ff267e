#!/usr/bin/env python3
"""Side-by-side window benchmark: `fleetscore aggregate` vs. DuckDB.

What it measures
----------------
The wall time of ONE batch window computation over a fleet's raw readings,
done two ways over the same Parquet files in fleetscore's raw/ layout:

* DuckDB (``duckdb`` from PyPI, all cores): ``read_parquet`` over every raw
  part, ``time_bucket`` + ``GROUP BY`` computing count, sum, mean, min, max,
  sample std, first and last (by ts) per (device, tag, 1-minute window), and
  ``COPY ... TO`` one Parquet file;
* fleetscore: ``fleetscore --store STORE aggregate --from F --to T --size 1m``,
  which reads the same raw/ parts and writes windows/size=1m/date=…/hour=…/
  part-0.parquet.

Both run as child processes and are timed from outside (wall clock around the
spawn and the wait), so start-up, imports, reading and writing count on both
sides. The ratio is printed only once the outputs agree: the same set of
(device, tag, start) windows on both sides, counts, end, min, max, first and
last exactly equal, sum, mean and std within 1e-9 relative (std null on both
sides for one-reading windows).

The last line of stdout is
``fleetscore / duckdb: X.XXx faster (duckdb Ts, fleetscore Ts, N readings, W windows)``
(``slower`` when the ratio is below 1), with ratio = DuckDB time / fleetscore
time (best of --repeat runs each).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GENERATOR_VERSION = 2
TAGS = 5
PER_SERIES = 2000  # readings per (device, tag): every 10 s, 5h33m20s
PERIOD_MS = 10_000
JITTER_MS = 2_000  # 0 to 2 s late on the 10 s grid
# 2026-11-01T00:00:00Z in ms since the epoch
T0_MS = 1_793_491_200_000
PARTS_PER_HOUR = 2

_T0 = time.perf_counter()


def secs(t: float) -> str:
    return f"{t:.2f}" if t >= 1 else f"{t:.3g}"


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failure that ends the benchmark with a message and exit code 1."""


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


# --------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------


def params_for(readings: int, seed: int) -> dict:
    devices = max(1, -(-readings // (TAGS * PER_SERIES)))
    n = devices * TAGS * PER_SERIES
    end_ms = T0_MS + PER_SERIES * PERIOD_MS + JITTER_MS + 1
    hours = -(-(end_ms - T0_MS) // 3_600_000)
    return {
        "generator": GENERATOR_VERSION,
        "seed": seed,
        "devices": devices,
        "tags": TAGS,
        "per_series": PER_SERIES,
        "readings": n,
        "from": iso(T0_MS),
        "to": iso(T0_MS + hours * 3_600_000),
        "hours": hours,
        "parts_per_hour": PARTS_PER_HOUR,
    }


def generate(store: Path, p: dict) -> None:
    """Writes STORE/raw/date=…/hour=…/part-<id>.parquet as fleetscore does.

    Every (device, tag) reports every 10 s from T0 with a per-series phase
    and 0 to 2 s of jitter (millisecond timestamps), value = a per-series level
    + a slow cycle + noise, rounded to 1e-3. Per hour: rows sorted by
    (ts, device, tag), split in PARTS_PER_HOUR parts by time (as successive
    ingests or log compactions write them), each part sorted, columns ts
    Timestamp(ns, UTC), device utf8, tag utf8, value f64, none nullable;
    snappy, row groups of 1,048,576 rows (arrow-rs' and pyarrow's default).
    """
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        pa.field("ts", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("device", pa.string(), nullable=False),
        pa.field("tag", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ])
    raw = store / "raw"
    if raw.exists():
        shutil.rmtree(raw)
    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    seed = p["seed"]
    for h in range(p["hours"]):
        lo = T0_MS + h * 3_600_000
        hi = lo + 3_600_000
        k_lo = max(0, (lo - T0_MS - PERIOD_MS - JITTER_MS) // PERIOD_MS)
        k_hi = min(p["per_series"], (hi - T0_MS) // PERIOD_MS + 2)
        q = f"""
        WITH s AS (
          SELECT d, t FROM range(1, {p['devices']} + 1) r(d), range(1, {TAGS} + 1) q(t)
        ), g AS (
          SELECT d, t, k,
            {T0_MS} + k * {PERIOD_MS} + (hash({seed}, d, t) % {PERIOD_MS})::BIGINT
              + (hash({seed}, d, t, k, 1) % {JITTER_MS + 1})::BIGINT AS ms,
            10.0 * t + (hash({seed}, d, t, 2) % 5000)::DOUBLE / 100.0
              + 3.0 * sin(k / 30.0 + (hash({seed}, d, t, 3) % 628)::DOUBLE / 100.0)
              + ((hash({seed}, d, t, k, 4) % 2001)::DOUBLE - 1000.0) / 1000.0 AS v
          FROM s, range({k_lo}, {k_hi}) kk(k)
        )
        SELECT (ms * 1000000)::BIGINT AS ts, d::VARCHAR AS device, t::VARCHAR AS tag,
               round(v, 3) AS value
        FROM g WHERE ms >= {lo} AND ms < {hi}
        ORDER BY ts, device, tag
        """
        table = con.sql(q).to_arrow_table()
        if table.num_rows == 0:
            continue
        table = pa.table([
            table.column("ts").cast(pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
            table.column("device").cast(pa.string()),
            table.column("tag").cast(pa.string()),
            table.column("value").cast(pa.float64()),
        ], schema=schema)
        date, hour = iso(lo)[:10], iso(lo)[11:13]
        part_dir = raw / f"date={date}" / f"hour={hour}"
        part_dir.mkdir(parents=True, exist_ok=True)
        n = table.num_rows
        for i in range(PARTS_PER_HOUR):
            a, b = n * i // PARTS_PER_HOUR, n * (i + 1) // PARTS_PER_HOUR
            if a == b:
                continue
            pid = hashlib.sha256(f"bench-{seed}-{i}date={date}/hour={hour}".encode()).hexdigest()[:16]
            pq.write_table(table.slice(a, b - a), part_dir / f"part-{pid}.parquet",
                           compression="snappy", row_group_size=1024 * 1024)
        log(f"  hour {h}: {n} readings")


def ensure_data(work: Path, p: dict) -> Path:
    store = work / "store"
    meta = work / "raw.json"
    if meta.exists():
        try:
            if json.loads(meta.read_text()).get("params") == p:
                log(f"reusing the raw readings in {store}/raw ({p['readings']} readings)")
                return store
        except ValueError:
            pass
        meta.unlink()
    log(f"generating {p['readings']} readings ({p['devices']} devices x {TAGS} tags) in {store}/raw")
    t0 = time.perf_counter()
    generate(store, p)
    took = time.perf_counter() - t0
    meta.write_text(json.dumps({"params": p, "seconds": took}, indent=1))
    size = sum(f.stat().st_size for f in (store / "raw").rglob("*.parquet"))
    log(f"generated in {secs(took)}s, {size / 1e6:.0f} MB of Parquet")
    return store


# --------------------------------------------------------------------------
# The DuckDB job (run as a child process)
# --------------------------------------------------------------------------

DUCKDB_SQL = """
COPY (
  SELECT device, tag, start, start + INTERVAL '{size_s} seconds' AS "end",
         count, sum, mean, min, max, std, first, last
  FROM (
    SELECT device, tag,
           time_bucket(INTERVAL '{size_s} seconds', ts::TIMESTAMPTZ) AS start,
           count(*) AS count,
           sum(value) AS sum,
           avg(value) AS mean,
           min(value) AS min,
           max(value) AS max,
           stddev_samp(value) AS std,
           arg_min(value, ts) AS first,
           arg_max(value, ts) AS last
    FROM read_parquet('{raw}/*/*/*.parquet', hive_partitioning = false)
    GROUP BY device, tag, start
  )
) TO '{out}' (FORMAT parquet, COMPRESSION snappy)
"""


def duckdb_job(raw: str, out: str, size_s: int, threads: int) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(DUCKDB_SQL.format(raw=raw, out=out, size_s=size_s))
    n = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
    print(f"duckdb wrote {n} windows to {out}", flush=True)


# --------------------------------------------------------------------------
# Timing child processes
# --------------------------------------------------------------------------


def cpu_busy_seconds() -> float | None:
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
        busy = sum(fields) - fields[3] - fields[4]
        return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def busy_cpus(seconds: float = 1.0) -> float | None:
    before = cpu_busy_seconds()
    t0 = time.perf_counter()
    time.sleep(seconds)
    after = cpu_busy_seconds()
    if before is None or after is None:
        return None
    return (after - before) / (time.perf_counter() - t0)


def check_quiet(what: str) -> None:
    busy = busy_cpus()
    if busy is None:
        return
    text = f"{busy:.2f} of {os.cpu_count()} cpus busy"
    if busy > 0.25:
        log(f"warning: {text} just before timing {what}: other work competes with the benchmark")
    else:
        log(f"machine quiet before timing {what} ({text})")


class Run:
    def __init__(self, wall: float, cpu: float, max_rss_mb: float, other: float | None, stdout: str):
        self.wall, self.cpu, self.max_rss_mb, self.other, self.stdout = wall, cpu, max_rss_mb, other, stdout

    def text(self) -> str:
        other = "" if self.other is None else f", other processes {self.other:.2f} cpus"
        return f"{secs(self.wall)}s wall, cpu {secs(self.cpu)}s, peak RSS {self.max_rss_mb:.0f} MiB{other}"


def run_timed(cmd: list[str]) -> Run:
    """Spawns cmd, waits with os.wait4; wall time around spawn and wait."""
    busy0 = cpu_busy_seconds()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    busy1 = cpu_busy_seconds()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise BenchError(f"command failed with exit code {code}: {' '.join(cmd)}")
    cpu = usage.ru_utime + usage.ru_stime
    other = None
    if busy0 is not None and busy1 is not None and wall > 0:
        other = max(0.0, (busy1 - busy0 - cpu) / wall)
    run = Run(wall, cpu, usage.ru_maxrss / 1024.0, other, out.decode(errors="replace"))
    log(f"  {run.text()}")
    if run.other is not None and run.other > 0.25:
        log(f"  warning: other processes kept {run.other:.2f} cpus busy during this run")
    return run


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------

VERIFY_SQL = """
WITH f AS (SELECT * FROM read_parquet('{fs}/*/*/*.parquet', hive_partitioning = false)),
     d AS (SELECT * FROM read_parquet('{dd}')),
     j AS (
       SELECT f.device AS fd, d.device AS dd, f.count AS fc, d.count AS dc,
              f."end"::TIMESTAMPTZ AS fe, d."end"::TIMESTAMPTZ AS de,
              f.sum AS fsum, d.sum AS dsum, f.mean AS fmean, d.mean AS dmean,
              f.std AS fstd, d.std AS dstd, f.min AS fmin, d.min AS dmin,
              f.max AS fmax, d.max AS dmax, f.first AS ffirst, d.first AS dfirst,
              f.last AS flast, d.last AS dlast
       FROM f FULL OUTER JOIN d
         ON f.device = d.device AND f.tag = d.tag AND f.start::TIMESTAMPTZ = d.start::TIMESTAMPTZ
     )
SELECT
  count(*) AS joined,
  count(fd) AS fleetscore_windows,
  count(dd) AS duckdb_windows,
  count(*) FILTER (WHERE fd IS NULL) AS only_duckdb,
  count(*) FILTER (WHERE dd IS NULL) AS only_fleetscore,
  count(*) FILTER (WHERE fd IS NOT NULL AND dd IS NOT NULL AND fc <> dc) AS bad_count,
  count(*) FILTER (WHERE fd IS NOT NULL AND dd IS NOT NULL AND fe <> de) AS bad_end,
  count(*) FILTER (WHERE fd IS NOT NULL AND dd IS NOT NULL AND NOT (abs(fsum - dsum) <= {tol} * greatest(abs(fsum), abs(dsum)))) AS bad_sum,
  count(*) FILTER (WHERE fd IS NOT NULL AND dd IS NOT NULL AND NOT (abs(fmean - dmean) <= {tol} * greatest(abs(fmean), abs(dmean)))) AS bad_mean,
  count(*) FILTER (WHERE fd IS NOT NULL AND dd IS NOT NULL AND NOT (
      (fstd IS NULL AND dstd IS NULL)
      OR (fstd IS NOT NULL AND dstd IS NOT NULL AND abs(fstd - dstd) <= {tol} * greatest(abs(fstd), abs(dstd))))) AS bad_std,
  count(*) FILTER (WHERE fd IS NOT NULL AND dd IS NOT NULL AND fmin <> dmin) AS bad_min,
  count(*) FILTER (WHERE fd IS NOT NULL AND dd IS NOT NULL AND fmax <> dmax) AS bad_max,
  count(*) FILTER (WHERE fd IS NOT NULL AND dd IS NOT NULL AND ffirst <> dfirst) AS bad_first,
  count(*) FILTER (WHERE fd IS NOT NULL AND dd IS NOT NULL AND flast <> dlast) AS bad_last,
  coalesce(sum(fc), 0) AS fleetscore_readings,
  coalesce(sum(dc), 0) AS duckdb_readings,
  count(*) FILTER (WHERE fstd IS NULL AND fd IS NOT NULL) AS one_reading_windows,
  max(abs(fsum - dsum) / greatest(abs(fsum), abs(dsum), 1e-300)) AS max_rel_sum,
  max(abs(fstd - dstd) / greatest(abs(fstd), abs(dstd), 1e-300)) AS max_rel_std
FROM j
"""


def verify(fs_windows: Path, dd_out: Path, readings: int, tol: float) -> dict:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    dup = con.execute(
        f"SELECT count(*) FROM (SELECT device, tag, start FROM read_parquet('{fs_windows}/*/*/*.parquet', hive_partitioning = false) "
        "GROUP BY ALL HAVING count(*) > 1)").fetchone()[0]
    dup += con.execute(
        f"SELECT count(*) FROM (SELECT device, tag, start FROM read_parquet('{dd_out}') "
        "GROUP BY ALL HAVING count(*) > 1)").fetchone()[0]
    cur = con.execute(VERIFY_SQL.format(fs=fs_windows, dd=dd_out, tol=tol))
    names = [c[0] for c in cur.description]
    r = dict(zip(names, cur.fetchone()))
    r["duplicate_keys"] = dup
    problems = [f"{k}={r[k]}" for k in names if (k.startswith("bad_") or k.startswith("only_")) and r[k]]
    if dup:
        problems.append(f"duplicate (device, tag, start) keys: {dup}")
    if r["fleetscore_readings"] != readings or r["duckdb_readings"] != readings:
        problems.append(f"windows hold {r['fleetscore_readings']} (fleetscore) / "
                        f"{r['duckdb_readings']} (duckdb) readings, generated {readings}")
    r["problems"] = problems
    return r


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readings", type=int, default=100_000_000,
                   help="readings to generate (devices = readings / 10,000, 5 tags, 2,000 each) [100M]")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", default="/tmp/fsagg",
                   help="work dir; the raw readings are generated once and reused [/tmp/fsagg]")
    p.add_argument("--fleetscore", default=str(REPO / "target" / "release" / "fleetscore"))
    p.add_argument("--repeat", type=int, default=1, help="timed runs of each side, best kept [1]")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="DuckDB threads [all cores]")
    p.add_argument("--tolerance", type=float, default=1e-9)
    p.add_argument("--generate-only", action="store_true")
    return p.parse_args(argv)


def benchmark(a: argparse.Namespace) -> int:
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    p = params_for(a.readings, a.seed)
    store = ensure_data(work, p)
    if a.generate_only:
        return 0
    binary = a.fleetscore
    if not os.access(binary, os.X_OK):
        raise BenchError(f"no fleetscore binary at {binary}; run `cargo build --release` first")
    fs_windows = store / "windows" / "size=1m"
    dd_out = work / "duckdb-windows.parquet"
    fs_cmd = [binary, "--data", str(work / "fsdata"), "--store", str(store), "-q",
              "aggregate", "--from", p["from"], "--to", p["to"], "--size", "1m"]
    dd_cmd = [sys.executable, os.path.abspath(__file__), "duckdb-job", "--raw", str(store / "raw"),
              "--out", str(dd_out), "--size-s", "60", "--threads", str(a.threads)]
    fs_runs: list[Run] = []
    dd_runs: list[Run] = []
    for i in range(a.repeat):
        if dd_out.exists():
            dd_out.unlink()
        check_quiet("duckdb")
        log(f"duckdb run {i + 1}/{a.repeat}: {' '.join(dd_cmd)}")
        dd_runs.append(run_timed(dd_cmd))
        if (store / "windows").exists():
            shutil.rmtree(store / "windows")
        check_quiet("fleetscore")
        log(f"fleetscore run {i + 1}/{a.repeat}: {' '.join(fs_cmd)}")
        fs_runs.append(run_timed(fs_cmd))
        log(f"  {fs_runs[-1].stdout.strip()}")
    log("verifying: full outer join of both outputs on (device, tag, start)")
    t0 = time.perf_counter()
    r = verify(fs_windows, dd_out, p["readings"], a.tolerance)
    log(f"verified in {secs(time.perf_counter() - t0)}s")
    fs_best = min(fs_runs, key=lambda r: r.wall)
    dd_best = min(dd_runs, key=lambda r: r.wall)
    print(f"readings: {p['readings']} ({p['devices']} devices x {TAGS} tags x {PER_SERIES}, "
          f"every 10 s + 0-2 s jitter, {p['hours']} hours, {PARTS_PER_HOUR} raw parts per hour)")
    print(f"windows: {r['fleetscore_windows']} fleetscore, {r['duckdb_windows']} duckdb, "
          f"{r['joined']} joined, {r['one_reading_windows']} with one reading; "
          f"max relative difference sum {r['max_rel_sum']:.3g}, std {r['max_rel_std']:.3g}")
    for name, runs in (("duckdb", dd_runs), ("fleetscore", fs_runs)):
        walls = ", ".join(secs(x.wall) for x in runs)
        best = min(runs, key=lambda x: x.wall)
        print(f"{name}: best {secs(best.wall)}s of {len(runs)} [{walls}]; {best.text()}")
    if r["problems"]:
        for prob in r["problems"]:
            print(f"VERIFICATION FAILED: {prob}")
        return 1
    ratio = dd_best.wall / fs_best.wall
    word = "faster" if ratio >= 1 else "slower"
    print(f"fleetscore / duckdb: {ratio:.2f}x {word} (duckdb {secs(dd_best.wall)}s, fleetscore "
          f"{secs(fs_best.wall)}s, {p['readings']} readings, {r['fleetscore_windows']} windows)")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["duckdb-job"]:
        p = argparse.ArgumentParser(prog="aggregate.py duckdb-job")
        p.add_argument("--raw", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--size-s", type=int, default=60)
        p.add_argument("--threads", type=int, default=os.cpu_count())
        a = p.parse_args(argv[1:])
        duckdb_job(a.raw, a.out, a.size_s, a.threads)
        return 0
    try:
        return benchmark(parse_args(argv))
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
