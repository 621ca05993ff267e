#!/usr/bin/env python3
"""Independent reference for the golden window tests.

Writes `expected.csv` and `expected_counters.json` for every case folder
beside this script from its `input.csv` and `config.json`:

    python3 crates/stream/tests/golden/reference.py          # rewrite
    python3 crates/stream/tests/golden/reference.py --check  # compare only

It shares no code with the Rust crate and works differently on purpose: it
keeps every accepted reading in a plain list and, whenever a window closes,
recomputes the features from the readings that fall into it (the crate
folds readings into running accumulators). The semantics it implements are
the crate docs' (crates/stream/src/lib.rs), restated:

- windows [start, end), end = start + size, start a multiple of hop since
  the epoch; a reading belongs to every window holding it;
- a clock per device (or one for all, watermark = "global") is the newest
  event time seen on it; the horizon is clock - out_of_order -
  allowed_lateness;
- a reading is judged against the horizon before it moves the clock:
  ts >= horizon is accepted; otherwise it is dropped ("too_late") or, under
  late_policy = "adjust", aggregated at ts = horizon ("adjusted");
  NaN/inf values are dropped ("non_finite");
- after a reading that moved its clock forward, every window of that clock
  with end <= horizon is emitted, once; at the end of the input every
  window still open is emitted ("flush");
- features: count, sum, mean, min, max, sample std (empty for count 1),
  first/last = value at the smallest/largest ts, ties broken by arrival
  (first: earliest, last: latest).

expected.csv has the crate's 12 output columns plus two harness columns in
front: `emitted_after` (1-based input row after which the window came out,
or `flush`) and `spec` (size, or size/hop, as the crate prints specs).
Rows are ordered by emission, then (end, spec position, device, tag).
"""

import calendar
import csv
import json
import math
import os
import re
import statistics
import sys
import time

UNITS = {"d": 86_400 * 10**9, "h": 3_600 * 10**9, "m": 60 * 10**9,
         "s": 10**9, "ms": 10**6, "us": 10**3, "µs": 10**3, "ns": 1}
COLUMNS = ["emitted_after", "spec", "device", "tag", "start", "end", "count",
           "sum", "mean", "min", "max", "std", "first", "last"]
COUNTERS = ["received", "accepted", "adjusted", "too_late", "non_finite",
            "out_of_range", "out_of_order", "late_accepted", "windows_emitted"]


def span(text):
    if text == "0":
        return 0
    parts = re.fullmatch(r"(?:\d+(?:d|h|ms|m|s|us|µs|ns))+", text)
    assert parts, f"bad span {text!r}"
    return sum(int(n) * UNITS[u] for n, u in re.findall(r"(\d+)(ms|us|µs|ns|d|h|m|s)", text))


def span_text(ns):
    if ns == 0:
        return "0s"
    out = ""
    for unit in ["d", "h", "m", "s", "ms", "us", "ns"]:
        if ns >= UNITS[unit]:
            out += f"{ns // UNITS[unit]}{unit}"
            ns %= UNITS[unit]
    return out


def parse_ts(text):
    """RFC 3339 with a `Z`, any number of fraction digits up to 9 -> ns."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z", text)
    assert m, f"bad timestamp {text!r}"
    secs = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    frac = int((m.group(2) or "0").ljust(9, "0"))
    return secs * 10**9 + frac


def format_ts(ns):
    secs, frac = divmod(ns, 10**9)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{base}.{frac:09d}Z" if frac else f"{base}Z"


def features(rows):
    """rows: list of (ts, value) in arrival order."""
    values = [v for _, v in rows]
    n = len(values)
    total = 0.0
    for v in values:
        total += v
    by_time = sorted(range(n), key=lambda i: rows[i][0])  # stable: ties by arrival
    return {
        "count": n,
        "sum": total,
        "mean": math.fsum(values) / n,
        "min": min(values),
        "max": max(values),
        "std": statistics.stdev(values) if n > 1 else None,
        "first": rows[by_time[0]][1],
        "last": rows[by_time[-1]][1],
    }


def run(case_dir):
    with open(os.path.join(case_dir, "config.json")) as f:
        cfg = json.load(f)["aggregator"]
    specs = []
    for w in cfg.get("windows", [{"size": "1m"}]):
        size = span(w["size"])
        hop = span(w["hop"]) if "hop" in w else size
        name = span_text(size) if hop == size else f"{span_text(size)}/{span_text(hop)}"
        specs.append((size, hop, name))
    ooo = span(cfg.get("out_of_order", "5s"))
    lateness = span(cfg.get("allowed_lateness", "0s"))
    adjust = cfg.get("late_policy", "drop") == "adjust"
    global_clock = cfg.get("watermark", "per_device") == "global"

    with open(os.path.join(case_dir, "input.csv")) as f:
        rows = list(csv.DictReader(f))

    counters = dict.fromkeys(COUNTERS, 0)
    clock = {}        # clock name -> newest ts
    accepted = []     # (ts, device, tag, value), arrival order
    emitted = set()   # (spec index, device, tag, start)
    out = []

    def clock_of(device):
        return "*" if global_clock else device

    def windows_of(ts, size, hop):
        start = ts - ts % hop  # Python's % floors, like the epoch alignment
        while ts - start < size:
            yield start
            start -= hop

    def close(label, horizon, clock_name):
        found = set()
        for ts, device, tag, _ in accepted:
            if clock_of(device) != clock_name:
                continue
            for k, (size, hop, _) in enumerate(specs):
                for start in windows_of(ts, size, hop):
                    key = (k, device, tag, start)
                    if start + size <= horizon and key not in emitted:
                        found.add(key)
        for k, device, tag, start in sorted(found, key=lambda w: (w[3] + specs[w[0]][0], w[0], w[1], w[2])):
            size = specs[k][0]
            members = [(ts, v) for ts, d, t, v in accepted
                       if d == device and t == tag and start <= ts < start + size]
            emitted.add((k, device, tag, start))
            out.append({"emitted_after": label, "spec": specs[k][2], "device": device,
                        "tag": tag, "start": start, "end": start + size, **features(members)})
            counters["windows_emitted"] += 1

    for i, row in enumerate(rows, start=1):
        ts, device, tag, value = parse_ts(row["ts"]), row["device"], row["tag"], float(row["value"])
        counters["received"] += 1
        if not math.isfinite(value):
            counters["non_finite"] += 1
            continue
        name = clock_of(device)
        newest = clock.get(name)
        horizon = None if newest is None else newest - ooo - lateness
        if horizon is not None and ts < horizon:
            if not adjust:
                counters["too_late"] += 1
                continue
            counters["adjusted"] += 1
            ts = horizon
        else:
            counters["accepted"] += 1
            if newest is not None and ts < newest:
                counters["out_of_order"] += 1
                if ts < newest - ooo:
                    counters["late_accepted"] += 1
        for k, (size, hop, _) in enumerate(specs):
            for start in windows_of(ts, size, hop):
                assert (k, device, tag, start) not in emitted, f"row {i} reopens an emitted window"
        accepted.append((ts, device, tag, value))
        if newest is None or ts > newest:
            clock[name] = ts
            close(str(i), ts - ooo - lateness, name)
    # flush: every clock at once, then ordered like one batch
    before = len(out)
    for name in list(clock):
        close("flush", float("inf"), name)
    flushed = sorted(out[before:], key=lambda w: (w["end"], [s[2] for s in specs].index(w["spec"]), w["device"], w["tag"]))
    out[before:] = flushed
    return out, counters


def fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def render(windows):
    lines = [",".join(COLUMNS)]
    for w in windows:
        row = dict(w, start=format_ts(w["start"]), end=format_ts(w["end"]))
        lines.append(",".join(fmt(row[c]) for c in COLUMNS))
    return "\n".join(lines) + "\n"


def main():
    check = "--check" in sys.argv
    here = os.path.dirname(os.path.abspath(__file__))
    stale = []
    for name in sorted(os.listdir(here)):
        case = os.path.join(here, name)
        if not os.path.isfile(os.path.join(case, "input.csv")):
            continue
        windows, counters = run(case)
        files = {"expected.csv": render(windows),
                 "expected_counters.json": json.dumps(counters, indent=2) + "\n"}
        for file, text in files.items():
            path = os.path.join(case, file)
            old = open(path).read() if os.path.exists(path) else None
            if old != text:
                stale.append(f"{name}/{file}")
                if not check:
                    with open(path, "w") as f:
                        f.write(text)
    if check and stale:
        print("stale:", ", ".join(stale))
        sys.exit(1)
    print("rewrote:" if stale else "up to date", ", ".join(stale))


if __name__ == "__main__":
    main()
