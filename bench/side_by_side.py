#!/usr/bin/env python3
"""What this machine gives two busy processes: each workload alone, then
two copies of it side by side, and the throughput of two over one.

`bench/workers.py` asks two fleetscore workers to score a job 1.7x faster
than one. On a 2-core VM that is only possible if two busy processes do
not slow each other down. This script measures that for a few kinds of
work, from plain compute to memory traffic to fleetscore itself:

- `sha256`: `sha256sum` of a 1.5 GB file in /dev/shm (compute, SHA
  instructions);
- `numpy-matmul`: 1500x1500 matrix products, one BLAS thread (compute,
  AVX);
- `numpy-exp`: `exp` of 20M doubles, 15 times (streams 160 MB arrays
  through memory);
- `python-loop`: a CPython integer loop (branchy interpreter code);
- `fleetscore-score` (with `--data DIR`, a data folder `bench/workers.py`
  made, e.g. /tmp/fsworkers/data-2000x5): `fleetscore score` of its hour
  with one rayon thread. It reads, decodes, scores and writes 3.6M
  readings, the work the workers share.

For each it prints the time alone, the two times side by side, and
`2 x alone / slower of the two`: 2.00x means two copies together get twice
the throughput of one, 1.00x that they get nothing more.

Usage::

    python3 bench/side_by_side.py [--data /tmp/fsworkers/data-2000x5] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(cmds):
    """Starts every command at once; returns each one's wall time."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    ends = [0.0] * len(procs)
    pending = set(range(len(procs)))
    while pending:
        for i in list(pending):
            if procs[i].poll() is not None:
                ends[i] = time.perf_counter() - t0
                pending.discard(i)
                if procs[i].returncode != 0:
                    sys.exit(f"{' '.join(cmds[i])} failed: {procs[i].stderr.read().decode()}")
        time.sleep(0.002)
    return ends


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="a data folder of bench/workers.py, to time fleetscore score too")
    ap.add_argument("--runs", type=int, default=3, help="runs of each; medians are printed")
    ap.add_argument("--fleetscore", default=os.path.join(ROOT, "target", "release", "fleetscore"))
    args = ap.parse_args()

    py = sys.executable
    one = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    blob = os.path.join("/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
                        f"side-by-side-{os.getpid()}.bin")
    with open(blob, "wb") as f:
        for _ in range(1500):
            f.write(os.urandom(1 << 20))
    out = tempfile.mkdtemp(prefix="side-by-side-")
    work = {
        "sha256": lambda i: ["sha256sum", blob],
        "numpy-matmul": lambda i: ["env", *[f"{k}={v}" for k, v in one.items()], py, "-c",
                                   "import numpy as np; a=np.random.rand(1500,1500); [a@a for _ in range(12)]"],
        "numpy-exp": lambda i: ["env", *[f"{k}={v}" for k, v in one.items()], py, "-c",
                                "import numpy as np; a=np.random.rand(20_000_000); [np.exp(a).sum() for _ in range(15)]"],
        "python-loop": lambda i: [py, "-c", "s=0\nfor i in range(40_000_000): s+=i*i"],
    }
    if args.data:
        if not os.access(args.fleetscore, os.X_OK):
            sys.exit(f"no binary at {args.fleetscore}: cargo build --release (or --fleetscore PATH)")
        work["fleetscore-score"] = lambda i: [
            "env", "RAYON_NUM_THREADS=1", args.fleetscore, "--data", args.data, "--store",
            os.path.join(args.data, "store"), "--quiet", "score", "--from", "2024-01-01T00:00:00Z",
            "--to", "2024-01-01T01:00:00Z", "--out", os.path.join(out, f"out-{i}")]
    try:
        print(f"{'workload':<18} {'alone':>8} {'side by side':>16} {'two over one':>13}")
        for name, cmd in work.items():
            timed([cmd(0)])  # warm the page cache and the allocator's first touch
            alone = statistics.median(timed([cmd(0)])[0] for _ in range(args.runs))
            pairs = [timed([cmd(0), cmd(1)]) for _ in range(args.runs)]
            a = statistics.median(p[0] for p in pairs)
            b = statistics.median(p[1] for p in pairs)
            print(f"{name:<18} {alone:7.2f}s {a:7.2f}s {b:7.2f}s {2 * alone / max(a, b):12.2f}x",
                  flush=True)
    finally:
        os.remove(blob)
        subprocess.run(["rm", "-rf", out])


if __name__ == "__main__":
    main()
