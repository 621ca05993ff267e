#!/usr/bin/env python3
"""Ingest load generator in Python: the same load as ingest_load.rs.

    python3 bench/ingest_client.py --url 'http://127.0.0.1:8080/write?precision=ns' [options]

A second implementation of crates/fleetscore/examples/ingest_load.rs, so that
bench/ingest.py can drive both servers with a client that is not
fleetscore's own Rust code (`--client python`). Same flags, same defaults,
same request bodies byte for byte (line `i` of the run is device
`i % devices` at `start_ns + (i // devices) * interval_ns`, field values from
the same splitmix64 hash, written with two decimals), same one-line JSON
with `--json`, same exit codes (0 valid, 1 a request failed, 2 bad usage).

Every body is generated before the clock starts (in `--gen-procs`
processes, default: the CPUs this process may run on, as the Rust
generator's threads); then `--connections` threads, each with one
`http.client` keep-alive connection, take the next batch from a shared
counter, POST it and wait for the answer before taking the next. Every
answer must be 2xx; anything else, or a connection error, is a failure and
makes the run invalid. Only acknowledged readings count towards readings/s.

`gen_cpu_s` is this process's CPU before the clock starts, plus that of the
generating processes; `loadgen_cpu_s` is this process's CPU while sending.

`--dump-body K` writes the body of batch K to stdout and exits (no --url
needed): a check that it is byte-identical to what ingest_load.rs sends.

Standard library only.
"""

import http.client
import json
import math
import os
import resource
import socket
import sys
import threading
import time

USAGE = """\
usage: ingest_client.py --url URL [options]

  --url URL            http://HOST:PORT/PATH?QUERY to POST to (required)
  --connections C      concurrent keep-alive connections (default 4)
  --batches N          requests to send (default 400)
  --first-batch K      number of the first batch; batches K..K+N are sent,
                       so runs with disjoint ranges carry disjoint readings
                       (default 0)
  --duration S         stop taking new batches after S seconds (default: none)
  --lines L            lines per request (default 5000)
  --devices D          devices in the fleet (default 10000)
  --fields F           numeric fields per line, 1..=8 (default 5)
  --measurement M      measurement name (default sensors)
  --start-ns T         timestamp of the first round (default 1700000000000000000)
  --interval-ns I      time between two lines of one device (default 1000000000)
  --token T            send Authorization: Token T
  --json               print one JSON object instead of text
  --gen-procs P        processes generating the bodies (default: usable CPUs)
  --dump-body K        write the body of batch K to stdout and exit
"""

FIELD_NAMES = ["temp", "hum", "pres", "vib", "volt", "amp", "rpm", "flow"]
# Typical magnitude of each field, in hundredths (as ingest_load.rs).
BASE = [2150, 4000, 101_325, 3, 23_000, 1200, 150_000, 870]
SPREAD = 500

U64 = (1 << 64) - 1


class Usage(Exception):
    pass


class Args:
    def __init__(self):
        self.url = None
        self.host = ""
        self.addr = None  # (ip, port) as resolved
        self.path = ""
        self.connections = 4
        self.batches = 400
        self.first_batch = 0
        self.duration = None
        self.lines = 5000
        self.devices = 10_000
        self.fields = 5
        self.measurement = "sensors"
        self.start_ns = 1_700_000_000_000_000_000
        self.interval_ns = 1_000_000_000
        self.token = None
        self.json = False
        self.gen_procs = None
        self.dump_body = None


def _num(flag: str, v: str) -> int:
    """A non-negative integer, `_` allowed (as Rust's usize parse)."""
    s = v.replace("_", "")
    digits = s[1:] if s[:1] == "+" else s
    if not digits or not digits.isdigit() or not digits.isascii():
        raise Usage(f"{flag}: `{v}` is not a number")
    return int(s)


def _int(flag: str, v: str) -> int:
    s = v.replace("_", "")
    digits = s[1:] if s[:1] in ("-", "+") else s
    if not digits or not digits.isdigit() or not digits.isascii():
        raise Usage(f"{flag}: `{v}` is not an integer")
    n = int(s)
    if not -(1 << 63) <= n < (1 << 63):
        raise Usage(f"{flag}: `{v}` is not an integer")
    return n


def parse_args(argv: list[str]) -> Args:
    a = Args()
    it = iter(argv)
    for flag in it:
        if flag == "--json":
            a.json = True
            continue
        if flag in ("-h", "--help"):
            raise Usage("")
        value = next(it, None)
        if value is None:
            raise Usage(f"{flag} needs a value")
        if flag == "--url":
            a.url = value
        elif flag == "--connections":
            a.connections = _num(flag, value)
        elif flag == "--batches":
            a.batches = _num(flag, value)
        elif flag == "--first-batch":
            a.first_batch = _num(flag, value)
        elif flag == "--duration":
            try:
                a.duration = float(value)
            except ValueError:
                raise Usage(f"--duration: `{value}` is not a number") from None
        elif flag == "--lines":
            a.lines = _num(flag, value)
        elif flag == "--devices":
            a.devices = _num(flag, value)
        elif flag == "--fields":
            a.fields = _num(flag, value)
        elif flag == "--measurement":
            a.measurement = value
        elif flag == "--start-ns":
            a.start_ns = _int(flag, value)
        elif flag == "--interval-ns":
            a.interval_ns = _int(flag, value)
        elif flag == "--token":
            a.token = value
        elif flag == "--gen-procs":
            a.gen_procs = _num(flag, value)
        elif flag == "--dump-body":
            a.dump_body = _num(flag, value)
        else:
            raise Usage(f"unknown option {flag}")
    if a.connections == 0 or a.lines == 0 or a.devices == 0 or a.batches == 0:
        raise Usage("--connections, --lines, --devices and --batches must be positive")
    if not 1 <= a.fields <= len(FIELD_NAMES):
        raise Usage(f"--fields must be 1..={len(FIELD_NAMES)}")
    if a.dump_body is not None:
        return a
    if a.url is None:
        raise Usage("--url is required")
    if not a.url.startswith("http://"):
        raise Usage("--url must start with http:// (no TLS)")
    rest = a.url[len("http://"):]
    i = rest.find("/")
    host, path = (rest[:i], rest[i:]) if i >= 0 else (rest, "/")
    # Resolve once, as the Rust generator does (HOST:PORT, [v6]:PORT).
    name, sep, port = host.rpartition(":")
    if not sep or not port.isdigit():
        raise Usage(f"resolving {host}: invalid socket address")
    name = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        infos = socket.getaddrinfo(name, int(port), type=socket.SOCK_STREAM)
    except (OSError, OverflowError) as e:
        raise Usage(f"resolving {host}: {e}") from None
    if not infos:
        raise Usage(f"{host} resolves to nothing")
    a.addr = infos[0][4][:2]
    a.host, a.path = host, path
    return a


# --------------------------------------------------------------------------
# The bodies (ingest_load.rs `body()`, byte for byte)
# --------------------------------------------------------------------------


def mix(x: int) -> int:
    """splitmix64 finaliser, as ingest_load.rs `mix` (wrapping u64)."""
    x = (x + 0x9E37_79B9_7F4A_7C15) & U64
    x = ((x ^ (x >> 30)) * 0xBF58_476D_1CE4_E5B9) & U64
    x = ((x ^ (x >> 27)) * 0x94D0_49BB_1331_11EB) & U64
    return x ^ (x >> 31)


def centi(hundredths: int) -> str:
    """`hundredths / 100` with two decimals, e.g. 2153 -> `21.53`, -5 -> `-0.05`."""
    h = abs(hundredths)
    return f"{'-' if hundredths < 0 else ''}{h // 100}.{h % 100:02d}"


def wrap_i64(v: int) -> int:
    """Two's-complement wrap (the Rust generator's release-build arithmetic)."""
    return ((v + (1 << 63)) & U64) - (1 << 63)


def body(a: Args, k: int) -> bytes:
    """The body of batch `k`: lines `k*lines .. (k+1)*lines` of the run."""
    half = SPREAD // 2
    # Each field's text (separator, name, `=`, value) for the SPREAD noises.
    tables = [
        [("," if f else " ") + FIELD_NAMES[f] + "=" + centi(BASE[f] + n - half) for n in range(SPREAD)]
        for f in range(a.fields)
    ]
    fields = list(enumerate(tables))
    prefix = a.measurement + ",device=d"
    devices = a.devices
    parts = []
    ap = parts.append
    ts_round, ts_text = None, ""
    for i in range(k * a.lines, (k + 1) * a.lines):
        rnd = i // devices
        if rnd != ts_round:
            ts_round = rnd
            ts_text = f" {wrap_i64(a.start_ns + wrap_i64(rnd * a.interval_ns))}\n"
        ap(prefix)
        ap(str(i % devices))
        hi = (i << 3) & U64
        for f, table in fields:
            # mix((i << 3) | f), inlined
            x = ((hi | f) + 0x9E37_79B9_7F4A_7C15) & U64
            x = ((x ^ (x >> 30)) * 0xBF58_476D_1CE4_E5B9) & U64
            x = ((x ^ (x >> 27)) * 0x94D0_49BB_1331_11EB) & U64
            ap(table[(x ^ (x >> 31)) % SPREAD])
        ap(ts_text)
    # surrogateescape: a measurement given as non-UTF-8 bytes on the command
    # line goes out as those bytes, as Rust's OsString would (it refuses
    # them; this is only for completeness).
    return "".join(parts).encode("utf-8", "surrogateescape")


def _gen_batch(job):
    a, k = job
    return body(a, k)


def generate(a: Args) -> list[bytes]:
    ks = [a.first_batch + j for j in range(a.batches)]
    procs = a.gen_procs
    if procs is None:
        try:
            procs = len(os.sched_getaffinity(0))
        except AttributeError:
            procs = os.cpu_count() or 1
    procs = max(1, min(procs, a.batches))
    if procs == 1:
        return [body(a, k) for k in ks]
    import concurrent.futures
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(procs, mp_context=ctx) as pool:
        return list(pool.map(_gen_batch, [(a, k) for k in ks], chunksize=max(1, min(16, a.batches // (4 * procs)))))


# --------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------


class Tally:
    def __init__(self):
        self.ok_batches = 0
        self.ok_readings = 0
        self.failures = 0
        self.first_failure = None
        self.latencies_us = []

    def fail(self, why: str) -> None:
        self.failures += 1
        if self.first_failure is None:
            self.first_failure = why


def addr_text(addr) -> str:
    ip, port = addr
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def worker(a: Args, bodies: list[bytes], take, deadline, readings_per_batch: int, t: Tally) -> None:
    conn = http.client.HTTPConnection(a.addr[0], a.addr[1])
    connected = False
    fixed = [
        ("Host", a.host),
        ("User-Agent", "fleetscore-ingest-load (python)"),
        ("Content-Type", "text/plain; charset=utf-8"),
    ]
    if a.token is not None:
        fixed.append(("Authorization", f"Token {a.token}"))
    try:
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                break
            i = take()
            if i >= len(bodies):
                break
            b = bodies[i]
            start = time.perf_counter()
            if not connected or conn.sock is None:
                try:
                    conn.close()
                    conn.connect()  # sets TCP_NODELAY
                    connected = True
                except OSError as e:
                    t.fail(f"connecting to {addr_text(a.addr)}: {e}")
                    time.sleep(0.1)
                    continue
            try:
                conn.putrequest("POST", a.path, skip_host=True, skip_accept_encoding=True)
                for name, value in fixed:
                    conn.putheader(name, value)
                conn.putheader("Content-Length", str(len(b)))
                conn.endheaders(b)
                resp = conn.getresponse()
                answer = resp.read()
                status = resp.status
                close = resp.will_close
            except (OSError, http.client.HTTPException) as e:
                t.fail(f"batch {i}: {str(e) or repr(e)}")
                conn.close()
                connected = False
                continue
            elapsed = time.perf_counter() - start
            if 200 <= status < 300:
                t.ok_batches += 1
                t.ok_readings += readings_per_batch
                t.latencies_us.append(min(int(elapsed * 1e6), 0xFFFF_FFFF))
            else:
                text = answer[:300].decode("utf-8", "replace")
                t.fail(f"batch {i}: HTTP {status}: {text}")
            if close:
                conn.close()
                connected = False
    finally:
        conn.close()


def cpu_seconds() -> float:
    """utime + stime of this process (all its threads)."""
    r = os.times()
    return r.user + r.system


def children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def percentile(sorted_us: list[int], p: float) -> float:
    if not sorted_us:
        return 0.0
    i = math.floor((len(sorted_us) - 1) * p + 0.5)  # Rust's f64::round
    return sorted_us[i] / 1000.0


def main(argv: list[str]) -> int:
    try:
        a = parse_args(argv)
    except Usage as e:
        if str(e):
            print(f"ingest_client: {e}", file=sys.stderr)
        sys.stderr.write(USAGE)
        return 2
    if a.dump_body is not None:
        sys.stdout.flush()
        sys.stdout.buffer.write(body(a, a.dump_body))
        sys.stdout.buffer.flush()
        return 0
    readings_per_batch = a.lines * a.fields

    # Generate every body before the clock starts.
    gen_start = time.monotonic()
    child0 = children_cpu_seconds()
    bodies = generate(a)
    child_cpu = children_cpu_seconds() - child0
    body_bytes = sum(len(b) for b in bodies)
    gen_secs = time.monotonic() - gen_start
    if not a.json:
        print(
            f"generated {a.batches} batches x {a.lines} lines x {a.fields} fields = "
            f"{a.batches * readings_per_batch} readings, {body_bytes / 1e6:.1f} MB, in {gen_secs:.2f} s",
            file=sys.stderr,
        )

    lock = threading.Lock()
    counter = [0]

    def take() -> int:
        with lock:
            i = counter[0]
            counter[0] += 1
            return i

    tallies = [Tally() for _ in range(a.connections)]
    cpu0 = cpu_seconds()
    start = time.monotonic()
    deadline = start + a.duration if a.duration is not None else None
    threads = [
        threading.Thread(target=worker, args=(a, bodies, take, deadline, readings_per_batch, t), daemon=True)
        for t in tallies
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    secs = time.monotonic() - start
    cpu = cpu_seconds() - cpu0

    total = Tally()
    for t in tallies:
        total.ok_batches += t.ok_batches
        total.ok_readings += t.ok_readings
        total.failures += t.failures
        if total.first_failure is None:
            total.first_failure = t.first_failure
        total.latencies_us.extend(t.latencies_us)
    lat = sorted(total.latencies_us)
    p50, p99, mx = percentile(lat, 0.50), percentile(lat, 0.99), percentile(lat, 1.0)
    rps = total.ok_readings / secs
    qps = total.ok_batches / secs
    valid = total.failures == 0
    if a.json:
        # The Rust generator's JSON, key for key and with the same precision.
        first = "null" if total.first_failure is None else json.dumps(total.first_failure, ensure_ascii=False)
        print(
            f'{{"url_path":{json.dumps(a.path, ensure_ascii=False)},"connections":{a.connections},'
            f'"lines_per_batch":{a.lines},"fields":{a.fields},'
            f'"batches_ok":{total.ok_batches},"readings_ok":{total.ok_readings},'
            f'"failures":{total.failures},"first_failure":{first},'
            f'"seconds":{secs:.6f},"readings_per_s":{rps:.1f},"requests_per_s":{qps:.3f},'
            f'"p50_ms":{p50:.3f},"p99_ms":{p99:.3f},"max_ms":{mx:.3f},"body_bytes":{body_bytes},'
            f'"loadgen_cpu_s":{cpu:.2f},"gen_cpu_s":{cpu0 + child_cpu:.2f},"gen_seconds":{gen_secs:.2f},'
            f'"valid":{"true" if valid else "false"}}}',
            flush=True,
        )
    else:
        print(
            f"target: http://{a.host}{a.path} ({a.connections} connections, "
            f"{a.lines} lines x {a.fields} fields per request)"
        )
        print(
            f"acknowledged: {total.ok_batches} requests, {total.ok_readings} readings in {secs:.3f} s; "
            f"failures: {total.failures}"
        )
        if total.first_failure is not None:
            print(f"first failure: {total.first_failure}")
        print(
            f"latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {mx:.1f} ms; "
            f"load generator CPU {cpu:.2f} s ({cpu / secs:.2f} cores)"
        )
        print(
            f"{rps:.0f} readings/s acknowledged, {qps:.1f} requests/s"
            + ("" if valid else " (INVALID: failures)"),
            flush=True,
        )
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
