#!/usr/bin/env python3
"""Ingest benchmark: fleetscore serve vs. InfluxDB 1.x, same load, same run.

Starts a fresh `fleetscore serve` and a fresh `influxd` (each on its own
temporary data directory and a free loopback port), drives each with the
same load generator (crates/fleetscore/examples/ingest_load.rs: InfluxDB line
protocol batches over HTTP/1.1 keep-alive, every answer checked; or, with
`--client python`, bench/ingest_client.py, which sends the same bodies byte
for byte from Python threads over http.client), first a warm-up, then the
measured run, and verifies afterwards that each stored exactly the readings
it acknowledged:

* fleetscore: SIGTERM, which makes it write its ingest log into raw/
  Parquet; the rows of raw/ are counted with pyarrow.
* InfluxDB: `SELECT count(*)` over the measurement, summed over fields.

Both answer a write only once it is fsync-durable: fleetscore after the
group-committed fdatasync of its ingest log, InfluxDB 1.x after the fsync
of its WAL (`wal-fsync-delay = "0s"`, the default, kept here).

The load generator runs on the same 2-core machine as the server it drives;
`--pin-loadgen CPU` runs it under `taskset -c CPU` (the servers are never
pinned). Progress goes to stderr, results to stdout; each result line gives
the server's CPU seconds per million readings acknowledged in the measured
run, and the last two lines are

    fleetscore CPU-s per million readings: A.AAA (influx B.BBB)
    fleetscore/influx X.XXx

Only the standard library, plus pyarrow for counting the Parquet rows.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MEASUREMENT = "sensors"
_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """Ends the benchmark with a message and exit code 1."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time all processes spent busy since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen, timeout: float = 120) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise BenchError(f"pid {proc.pid} did not stop within {timeout} s of SIGTERM")


# --------------------------------------------------------------------------
# The load
# --------------------------------------------------------------------------


def loadgen_cmd(args) -> list[str]:
    """The load generator's command, without its arguments."""
    if args.client == "python":
        return [sys.executable, str(REPO / "bench" / "ingest_client.py")]
    return [str(args.loadgen)]


def run_load(args, url: str, first_batch: int, batches: int, server_pid: int) -> dict:
    cmd = loadgen_cmd(args) + [
        "--url", url,
        "--connections", str(args.connections),
        "--lines", str(args.lines),
        "--devices", str(args.devices),
        "--fields", str(args.fields),
        "--measurement", MEASUREMENT,
        "--first-batch", str(first_batch),
        "--batches", str(batches),
        "--json",
    ]
    if args.pin_loadgen is not None:
        cmd = ["taskset", "-c", str(args.pin_loadgen)] + cmd
    # The generator builds every body first, then times the sends; the
    # server's CPU is read before and after (it is idle while bodies are
    # generated) to report how many cores it used while loaded.
    cpu0, busy0, t0 = cpu_seconds(server_pid), machine_busy_seconds(), time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True)
    cpu1, busy1, t1 = cpu_seconds(server_pid), machine_busy_seconds(), time.monotonic()
    if res.returncode not in (0, 1) or not res.stdout.strip():
        raise BenchError(f"load generator failed ({res.returncode}): {res.stderr.strip()}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["server_cpu_s"] = cpu1 - cpu0
    # Cores kept busy by everything else (e.g. a concurrent build) while the
    # generator ran, body generation included.
    other = (busy1 - busy0) - (cpu1 - cpu0) - out["loadgen_cpu_s"] - out["gen_cpu_s"]
    out["other_cores"] = max(0.0, other) / (t1 - t0)
    if not out["valid"]:
        raise BenchError(
            f"{out['failures']} request(s) failed, the run is invalid; first: {out['first_failure']}"
        )
    return out


def warm_and_measure(args, name: str, url: str, pid: int) -> tuple[dict, int]:
    """Warm-up batches 0..W, measured batches W..W+N; returns the measured
    result and the readings acknowledged in total."""
    log(f"{name}: warm-up, {args.warmup_batches} batches")
    warm = run_load(args, url, 0, args.warmup_batches, pid)
    log(
        f"{name}: warm-up {warm['readings_per_s']:,.0f} readings/s; "
        f"measured run, {args.batches} batches"
    )
    m = run_load(args, url, args.warmup_batches, args.batches, pid)
    log(f"{name}: {m['readings_per_s']:,.0f} readings/s")
    return m, warm["readings_ok"] + m["readings_ok"]


# --------------------------------------------------------------------------
# fleetscore
# --------------------------------------------------------------------------


def bench_fleetscore(args, work: Path) -> dict:
    data = work / "fleetscore"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    errlog = open(work / "fleetscore.stderr", "w")
    cmd = [str(args.fleetscore), "--data", str(data), "-q", "serve", "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errlog, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise BenchError(f"fleetscore serve did not start: {line!r}; see {errlog.name}")
        addr = line.split("listening on ", 1)[1].strip()
        log(f"fleetscore serve at {addr}, data {data}")
        url = f"http://{addr}{args.fleetscore_path}"
        m, acked = warm_and_measure(args, "fleetscore", url, proc.pid)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        raise
    log("fleetscore: SIGTERM (writes the ingest log into raw/)")
    t = time.perf_counter()
    rc = stop(proc)
    if rc != 0:
        raise BenchError(f"fleetscore serve exited with {rc}; see {errlog.name}")
    log(f"fleetscore: stopped in {time.perf_counter() - t:.1f} s; counting raw/ rows")
    import pyarrow.parquet as pq

    files = sorted((data / "store" / "raw").rglob("*.parquet"))
    stored = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    m["stored"] = stored
    m["acknowledged_total"] = acked
    m["verify"] = f"{stored} rows in {len(files)} raw/ Parquet file(s)"
    return m


# --------------------------------------------------------------------------
# InfluxDB
# --------------------------------------------------------------------------

INFLUX_CONF = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  # The default: every write waits for an fsync of the WAL (concurrent
  # writes share one), as fleetscore's group commit.
  wal-fsync-delay = "0s"
  index-version = "inmem"
  query-log-enabled = false
  trace-logging-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  pprof-enabled = false
  max-body-size = 0

[logging]
  level = "warn"
  suppress-logo = true

[continuous_queries]
  enabled = false
"""


def influx_query(port: int, q: str, db: str | None = None) -> dict:
    params = {"q": q}
    if db:
        params["db"] = db
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/query",
        data=urllib.parse.urlencode(params).encode(),
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        out = json.loads(r.read())
    for res in out.get("results", []):
        if "error" in res:
            raise BenchError(f"InfluxDB query {q!r}: {res['error']}")
    return out


def bench_influx(args, work: Path) -> dict:
    root = work / "influxdb"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    http_port, rpc_port = free_port(), free_port()
    conf = root / "influxdb.conf"
    conf.write_text(INFLUX_CONF.format(root=root, http_port=http_port, rpc_port=rpc_port))
    errlog = open(work / "influxd.stderr", "w")
    proc = subprocess.Popen(
        [args.influxd, "run", "-config", str(conf)],
        stdout=errlog,
        stderr=subprocess.STDOUT,
        env={**os.environ, "INFLUXDB_CONFIG_PATH": str(conf)},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise BenchError(f"influxd exited with {proc.returncode}; see {errlog.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ping", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(f"influxd did not answer /ping in 60 s; see {errlog.name}")
                time.sleep(0.2)
        influx_query(http_port, "CREATE DATABASE bench")
        log(f"influxd at 127.0.0.1:{http_port}, data {root}")
        url = f"http://127.0.0.1:{http_port}/write?db=bench&precision=ns"
        m, acked = warm_and_measure(args, "influx", url, proc.pid)
        log("influx: counting stored readings (SELECT count(*))")
        out = influx_query(http_port, f"SELECT count(*) FROM {MEASUREMENT}", db="bench")
        series = out["results"][0].get("series", [])
        stored = sum(v for s in series for row in s["values"] for v in row[1:] if v)
        m["stored"] = stored
        m["acknowledged_total"] = acked
        m["verify"] = f"SELECT count(*): {stored} field values"
    finally:
        stop(proc)
    return m


# --------------------------------------------------------------------------


def cpu_per_million(m: dict) -> float:
    """Server CPU seconds per million readings acknowledged (measured run)."""
    return m["server_cpu_s"] / m["readings_ok"] * 1e6 if m["readings_ok"] else float("nan")


def describe(name: str, m: dict) -> str:
    return (
        f"{name}: {m['readings_per_s']:,.0f} readings/s acknowledged "
        f"({m['readings_ok']:,} readings, {m['batches_ok']} requests in {m['seconds']:.2f} s, "
        f"{m['requests_per_s']:.1f} req/s), latency p50 {m['p50_ms']:.1f} ms p99 {m['p99_ms']:.1f} ms; "
        f"CPU: server {m['server_cpu_s'] / m['seconds']:.2f} cores, "
        f"server {cpu_per_million(m):.2f} CPU-s per million readings, "
        f"load generator {m['loadgen_cpu_s'] / m['seconds']:.2f} cores, "
        f"other processes {m['other_cores']:.2f} cores; "
        f"stored {m['stored']:,} of {m['acknowledged_total']:,} acknowledged (warm-up included)"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=4, help="concurrent connections (default 4)")
    p.add_argument("--batches", type=int, default=800, help="measured requests (default 800 = 20M readings)")
    p.add_argument("--warmup-batches", type=int, default=80, help="warm-up requests (default 80)")
    p.add_argument("--lines", type=int, default=5000, help="lines per request (default 5000)")
    p.add_argument("--fields", type=int, default=5, help="fields (readings) per line (default 5)")
    p.add_argument("--devices", type=int, default=10_000, help="devices (default 10000)")
    p.add_argument("--pin-loadgen", type=int, metavar="CPU", help="run the load generator under taskset -c CPU")
    p.add_argument("--only", choices=["fleetscore", "influx"], help="run one side only (no ratio)")
    p.add_argument("--fleetscore", type=Path, default=REPO / "target/release/fleetscore")
    p.add_argument("--fleetscore-path", default="/write?precision=ns", help="path posted to on fleetscore")
    p.add_argument(
        "--client",
        choices=["rust", "python"],
        default="rust",
        help="load generator: rust = --loadgen (ingest_load example), python = bench/ingest_client.py "
        "(same bodies byte for byte; default rust)",
    )
    p.add_argument("--loadgen", type=Path, default=REPO / "target/release/examples/ingest_load")
    p.add_argument("--influxd", default="influxd")
    p.add_argument("--work", type=Path, help="work dir (default: a new temp dir, removed unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    args = p.parse_args()

    needed = []
    if args.only != "influx":
        needed.append((args.fleetscore, "cargo build --release -p fleetscore"))
    if args.client == "rust":
        needed.append((args.loadgen, "cargo build --release -p fleetscore --example ingest_load"))
    for path, hint in needed:
        if not path.is_file():
            raise BenchError(f"{path} is missing: run `{hint}`")
    if args.only != "fleetscore" and not shutil.which(args.influxd):
        raise BenchError(f"{args.influxd} not found: install InfluxDB 1.x (`apt-get install -y influxdb`)")
    if args.pin_loadgen is not None and not shutil.which("taskset"):
        raise BenchError("taskset not found (util-linux)")

    work = args.work or Path(tempfile.mkdtemp(prefix="fsingest-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    readings = args.batches * args.lines * args.fields
    print(
        f"load: {args.devices} devices x {args.fields} fields, {args.lines} lines "
        f"({args.lines * args.fields} readings) per request, {args.connections} connections; "
        f"warm-up {args.warmup_batches} requests, measured {args.batches} requests ({readings:,} readings)"
    )
    print(
        f"machine: {os.cpu_count()} cores shared by server and load generator"
        + (f" (load generator pinned to CPU {args.pin_loadgen})" if args.pin_loadgen is not None else "")
        + f"; load average before: {os.getloadavg()[0]:.2f}"
    )
    log(f"load generator ({args.client}): {' '.join(loadgen_cmd(args))}")
    ok = False
    try:
        results = {}
        if args.only != "influx":
            results["fleetscore"] = bench_fleetscore(args, work)
        if args.only != "fleetscore":
            results["influx"] = bench_influx(args, work)
        bad = []
        for name, m in results.items():
            print(describe(name, m))
            if m["stored"] != m["acknowledged_total"]:
                bad.append(f"{name} stored {m['stored']} readings but acknowledged {m['acknowledged_total']}")
        if bad:
            raise BenchError("; ".join(bad))
        checks = "; ".join(f"{k}: {m['verify']}" for k, m in results.items())
        print(f"verified: each stored exactly what it acknowledged ({checks})")
        ok = True
        if len(results) == 2:
            print(
                f"fleetscore CPU-s per million readings: {cpu_per_million(results['fleetscore']):.3f} "
                f"(influx {cpu_per_million(results['influx']):.3f})"
            )
            ratio = results["fleetscore"]["readings_per_s"] / results["influx"]["readings_per_s"]
            print(f"fleetscore/influx {ratio:.2f}x")
    finally:
        if ok and not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work dir kept: {work}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"ingest benchmark failed: {e}", file=sys.stderr)
        sys.exit(1)
