#!/usr/bin/env python3
"""Kafka ingest benchmark: readings into fleetscore's durable log through a
Kafka topic, beside the HTTP path, in one run.

1. A Kafka-protocol broker (tansu, memory storage) on a free loopback port,
   a topic of `--partitions` partitions, and `--messages` messages produced
   into it before anything consumes them (kafka-python): each message is a
   line protocol batch of `--lines` lines x `--fields` fields, the shape of
   bench/ingest.py's bodies.
2. `fleetscore serve` (built with `--features kafka`) with `[kafka]`
   (`payload.format = "line_protocol"`) started on the full topic. The
   clock runs from the first reading stored to the last
   (`fleetscore_source_readings_stored_total{source="kafka"}` read from
   /metrics every 20 ms); the server's CPU is sampled over the same span
   (/proc). Every reading is durable in the ingest log (fsynced) before its
   offsets are committed, as for HTTP.
3. The HTTP side: bench/ingest.py's fleetscore run with the same readings
   per body and the same number of bodies (its Rust load generator over
   keep-alive connections, on the same machine).

After each run the server is stopped (SIGTERM writes its log into raw/) and
raw/ is counted: each must hold exactly the readings it took. The last two
lines are

    kafka CPU-s per million readings: A.AAA (http B.BBB)
    kafka/http X.XXx   (readings per second)

Needs: `cargo build --release -p fleetscore --features kafka --example
ingest_load`; tansu (`cargo install --locked tansu@0.6.0 --features
dynostore,libsql`, or FLEETSCORE_TEST_TANSU); `pip install kafka-python
pyarrow`.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest  # noqa: E402  (the HTTP side and the shared helpers)

from ingest import REPO, BenchError, CpuSampler, free_port, log, stop  # noqa: E402

STORED = 'fleetscore_source_readings_stored_total{source="kafka"}'


def tansu_path() -> Path:
    p = os.environ.get("FLEETSCORE_TEST_TANSU")
    if p:
        return Path(p)
    return Path.home() / ".cache/fleetscore-ci/tansu-0.6.0/bin/tansu"


def bodies(args) -> list[bytes]:
    """The messages: line protocol batches, devices in turn, fields f0..."""
    out = []
    t0 = 1_764_887_621_000_000_000
    n = 0
    for m in range(args.messages):
        lines = []
        for j in range(args.lines):
            dev = n % args.devices
            fields = ",".join(f"f{k}={(n * 7 + k) % 1000 / 10}" for k in range(args.fields))
            lines.append(f"{ingest.MEASUREMENT},device=d{dev} {fields} {t0 + n * 1_000_000}")
            n += 1
        out.append(("\n".join(lines) + "\n").encode())
    return out


def metric(addr: str, series: str) -> float:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def bench_kafka(args, work: Path) -> dict:
    broker_dir = work / "tansu"
    broker_dir.mkdir(parents=True)
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    tansu = subprocess.Popen(
        [str(args.tansu), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        cwd=broker_dir, stdout=subprocess.DEVNULL, stderr=open(work / "tansu.stderr", "w"),
    )
    try:
        deadline = time.monotonic() + 30
        import socket

        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError("tansu did not listen")
                time.sleep(0.05)
        subprocess.run(
            [str(args.tansu), "topic", "create", "bench", "--broker", url,
             "--partitions", str(args.partitions)],
            cwd=broker_dir, check=True, capture_output=True,
        )
        from kafka import KafkaProducer

        msgs = bodies(args)
        readings = args.messages * args.lines * args.fields
        log(f"kafka: producing {len(msgs)} messages ({readings:,} readings, "
            f"{sum(map(len, msgs)) / 1e6:.1f} MB)")
        p = KafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", linger_ms=5,
                          max_request_size=8 << 20, acks=1)
        for i, body in enumerate(msgs):
            p.send("bench", key=f"k{i}".encode(), value=body)
        p.flush()
        p.close()

        data = work / "fleetscore-kafka"
        data.mkdir()
        cfg = work / "kafka.toml"
        cfg.write_text(
            f'[kafka]\nbrokers = "127.0.0.1:{port}"\ntopics = ["bench"]\n'
            f'group_id = "bench"\npayload = {{ format = "line_protocol" }}\n'
        )
        errlog = open(work / "fleetscore-kafka.stderr", "w")
        proc = subprocess.Popen(
            [str(args.fleetscore), "--data", str(data), "-q", "serve", "--listen", "127.0.0.1:0",
             "--config", str(cfg)],
            stdout=subprocess.PIPE, stderr=errlog, text=True,
        )
        try:
            line = proc.stdout.readline()
            if not line.startswith("listening on "):
                raise BenchError(f"fleetscore serve did not start: {line!r}; see {errlog.name}")
            addr = line.split("listening on ", 1)[1].strip()
            sampler = CpuSampler(proc.pid)
            sampler.start()
            first = last = None
            deadline = time.monotonic() + args.timeout
            while True:
                v = metric(addr, STORED)
                now = time.monotonic()
                if v > 0 and first is None:
                    first = now
                if v >= readings:
                    last = now
                    break
                if now > deadline:
                    raise BenchError(f"only {v:,.0f} of {readings:,} readings stored in {args.timeout} s")
                time.sleep(0.02)
            sampler.finish()
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            raise
        cpu0, _ = sampler.at(first)
        cpu1, _ = sampler.at(last)
        seconds = last - first
        log("kafka: SIGTERM (writes the ingest log into raw/)")
        if stop(proc) != 0:
            raise BenchError(f"fleetscore serve failed; see {errlog.name}")
        import pyarrow.parquet as pq

        files = sorted((data / "store" / "raw").rglob("*.parquet"))
        stored = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        return {
            "readings": readings,
            "seconds": seconds,
            "readings_per_s": readings / seconds if seconds > 0 else float("inf"),
            "server_cpu_s": cpu1 - cpu0,
            "stored": stored,
        }
    finally:
        tansu.kill()
        tansu.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=400, help="messages (HTTP: bodies) (default 400)")
    p.add_argument("--lines", type=int, default=1000, help="lines per message (default 1000)")
    p.add_argument("--fields", type=int, default=5, help="fields (readings) per line (default 5)")
    p.add_argument("--devices", type=int, default=10_000, help="devices (default 10000)")
    p.add_argument("--partitions", type=int, default=4, help="topic partitions (default 4)")
    p.add_argument("--timeout", type=float, default=600, help="longest wait for the topic, s")
    p.add_argument("--fleetscore", type=Path, default=REPO / "target/release/fleetscore")
    p.add_argument("--loadgen", type=Path, default=REPO / "target/release/examples/ingest_load")
    p.add_argument("--tansu", type=Path, default=tansu_path())
    p.add_argument("--work", type=Path, help="work dir (default: a new temp dir, removed)")
    args = p.parse_args()
    for path, hint in [
        (args.fleetscore, "cargo build --release -p fleetscore --features kafka"),
        (args.loadgen, "cargo build --release -p fleetscore --example ingest_load"),
        (args.tansu, "cargo install --locked tansu@0.6.0 --features dynostore,libsql"),
    ]:
        if not path.is_file():
            raise BenchError(f"{path} is missing: run `{hint}`")
    work = args.work or Path(tempfile.mkdtemp(prefix="fskafka-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    readings = args.messages * args.lines * args.fields
    print(f"load: {args.messages} messages/bodies of {args.lines} lines x {args.fields} fields "
          f"({readings:,} readings), {args.devices} devices, {args.partitions} partitions; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    try:
        k = bench_kafka(args, work)
        print(f"kafka: {k['readings_per_s']:,.0f} readings/s into the durable log "
              f"({k['readings']:,} readings in {k['seconds']:.2f} s, first to last stored); "
              f"server {k['server_cpu_s'] / k['seconds']:.2f} cores, "
              f"{k['server_cpu_s'] / k['readings'] * 1e6:.3f} CPU-s per million; "
              f"raw/ holds {k['stored']:,}")
        # The HTTP side with the same bodies: bench/ingest.py's fleetscore run.
        http_args = argparse.Namespace(
            connections=4, batches=args.messages, warmup_batches=max(1, args.messages // 10),
            lines=args.lines, fields=args.fields, devices=args.devices, pin_loadgen=None,
            fleetscore=args.fleetscore, fleetscore_path="/write?precision=ns", client="rust",
            loadgen=args.loadgen,
        )
        h = ingest.bench_fleetscore(http_args, work)
        print(ingest.describe("http", h))
        bad = []
        if k["stored"] != k["readings"]:
            bad.append(f"kafka: raw/ holds {k['stored']} of {k['readings']}")
        if h["stored"] != h["acknowledged_total"]:
            bad.append(f"http: raw/ holds {h['stored']} of {h['acknowledged_total']}")
        if bad:
            raise BenchError("; ".join(bad))
        print("verified: raw/ holds exactly the readings each path took")
        kc = k["server_cpu_s"] / k["readings"] * 1e6
        print(f"kafka CPU-s per million readings: {kc:.3f} (http {ingest.cpu_per_million(h):.3f})")
        print(f"kafka/http {k['readings_per_s'] / h['readings_per_s']:.2f}x")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
