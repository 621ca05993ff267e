"""fleetscore's Python runtime worker.

This script is embedded in the fleetscore binary and started by it as
`python -u -c <this script> <parent pid> <memory limit> <cache bytes>`;
it is never read from a repository at run time. It loads the models
fleetscore sends it (pickle or joblib bytes) and scores batches of rows
with them, one request at a time, until its input closes.

Frames, both ways: a 4-byte little-endian length and a JSON header, then
an 8-byte little-endian length and a payload (possibly empty).

Requests:
  {"op": "score", "id": ID, "kind": null|KIND, "methods": [...]}
      payload: an Arrow IPC stream of one batch, float64 columns x0.. (rows)
  {"op": "load", "id": ID}
      payload: the model file's bytes (pickle or joblib)
  {"op": "load", "id": ID, "path": PATH}
      the model file is PATH on this host (a local store's), read here
Answers:
  {"ok": true, "kind": KIND, "classes": [...]} + an Arrow IPC stream of
      one batch with `score` (float64) and `label` (uint32)
  {"ok": true} to a load
  {"ok": false, "missing": true}: score a model that is not loaded
  {"ok": false, "error": TEXT, "restart": BOOL, "limit": "memory"|null}
The first frame this worker writes is a hello: the versions of Python and
of the packages it needs, or the package that is missing.

KIND is outlier, regressor or classifier; what each writes:
  outlier:    score = methods[0] (decision_function), label = 1 where
              methods[1] (predict) says -1, else 0
  regressor:  score = methods[0] (predict), label = 4294967295 (none)
  classifier: label = index of methods[0] (predict) in classes_, score =
              the row's largest methods[1] (predict_proba), NaN without it
"""

import os
import struct
import sys

NO_LABEL = 4294967295
DEFAULT_METHODS = {
    "outlier": ["decision_function", "predict"],
    "regressor": ["predict"],
    "classifier": ["predict", "predict_proba"],
}


def die_with_parent(parent):
    # The kernel kills this process when the thread that started it ends
    # (fleetscore's worker thread, or the whole process on SIGKILL).
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        # Ctrl-C in a terminal reaches the whole process group: fleetscore
        # stops its workers itself.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except Exception:
        pass
    if os.getppid() != parent:
        os._exit(0)


def read_exact(f, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = f.readinto(view[got:])
        if not k:
            return None
        got += k
    return buf


def read_frame(f):
    import json

    head = read_exact(f, 4)
    if head is None:
        return None, None
    (hlen,) = struct.unpack("<I", head)
    header = json.loads(bytes(read_exact(f, hlen) or b"null"))
    (plen,) = struct.unpack("<Q", read_exact(f, 8) or b"\0" * 8)
    payload = read_exact(f, plen) if plen else b""
    return header, payload


def write_frame(f, header, payload=b""):
    import json

    h = json.dumps(header).encode()
    f.write(struct.pack("<I", len(h)) + h + struct.pack("<Q", len(payload)))
    if payload:
        f.write(payload)
    f.flush()


def describe_error(e):
    """The exception's own text, with where it was raised."""
    import traceback

    text = "".join(traceback.format_exception_only(type(e), e)).strip()
    tb = traceback.extract_tb(e.__traceback__)
    if tb:
        last = tb[-1]
        text += " (raised at %s:%s in %s)" % (last.filename, last.lineno, last.name)
    return text[:4000]


def load_model(joblib, io, payload):
    """A plain pickle with pickle's C unpickler; a joblib file (its arrays
    follow the pickle, or it is compressed) with joblib, whose unpickler is
    written in Python and several times slower."""
    if payload[:1] == b"\x80" and b"joblib.numpy_pickle" not in payload:
        import pickle

        return pickle.loads(payload)
    return joblib.load(io.BytesIO(payload))


def detect_kind(model):
    try:
        from sklearn.base import is_classifier, is_outlier_detector, is_regressor

        if is_outlier_detector(model):
            return "outlier"
        if is_classifier(model):
            return "classifier"
        if is_regressor(model):
            return "regressor"
    except Exception:
        pass
    t = getattr(model, "_estimator_type", None)
    if t == "outlier_detector":
        return "outlier"
    if t in ("classifier", "regressor"):
        return t
    if hasattr(model, "predict_proba") and hasattr(model, "classes_"):
        return "classifier"
    return "regressor"


def column(np, values, n, what):
    a = np.asarray(values)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(
            "%s returned shape %s for %d rows; fleetscore writes one value per row"
            % (what, getattr(a, "shape", "?"), n)
        )
    return a


def score(np, pa, model, header, payload):
    table = pa.ipc.open_stream(payload).read_all()
    n = table.num_rows
    X = np.empty((n, table.num_columns), dtype=np.float64)
    for i in range(table.num_columns):
        X[:, i] = table.column(i).to_numpy()
    kind = header.get("kind") or detect_kind(model)
    if kind not in DEFAULT_METHODS:
        raise ValueError("unknown kind %r: outlier, regressor or classifier" % kind)
    methods = header.get("methods") or DEFAULT_METHODS[kind]

    def call(i):
        name = methods[i]
        f = getattr(model, name, None)
        if f is None:
            raise AttributeError("%s has no method %s" % (type(model).__name__, name))
        return f(X)

    classes = []
    if kind == "outlier":
        s = column(np, call(0), n, methods[0]).astype(np.float64)
        pred = column(np, call(1), n, methods[1])
        label = (pred == -1).astype(np.uint32)
    elif kind == "regressor":
        s = column(np, call(0), n, methods[0]).astype(np.float64)
        label = np.full(n, NO_LABEL, dtype=np.uint32)
    else:
        known = getattr(model, "classes_", None)
        if known is None:
            raise AttributeError("the classifier has no classes_")
        known = list(np.asarray(known).tolist())
        classes = [str(c) for c in known]
        index = {c: i for i, c in enumerate(known)}
        pred = column(np, call(0), n, methods[0]).tolist()
        label = np.array([index.get(p, NO_LABEL) for p in pred], dtype=np.uint32)
        if len(methods) > 1 and hasattr(model, methods[1]):
            proba = np.asarray(call(1), dtype=np.float64)
            s = proba.max(axis=1) if proba.ndim == 2 else proba
        else:
            s = np.full(n, np.nan)
    batch = pa.record_batch(
        [pa.array(s, type=pa.float64()), pa.array(label, type=pa.uint32())],
        names=["score", "label"],
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return {"ok": True, "kind": kind, "classes": classes}, sink.getvalue().to_pybytes()


def main():
    parent, memory_limit, cache_bytes = (int(a) for a in sys.argv[1:4])
    die_with_parent(parent)
    # The pipe fleetscore reads is this process's own copy of stdout; what
    # a model prints goes to stderr (fleetscore logs it).
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer

    versions = {"python": "%d.%d.%d" % sys.version_info[:3]}
    if sys.version_info < (3, 8):
        write_frame(out, {"ok": False, "error": "Python %s is too old: 3.8 or later" % versions["python"]})
        return 3
    for name in ("numpy", "pyarrow", "joblib"):
        try:
            versions[name] = __import__(name).__version__
        except Exception as e:
            write_frame(
                out,
                {"ok": False, "missing": name, "error": "%s: %s" % (type(e).__name__, e)},
            )
            return 3
    import io
    from collections import OrderedDict

    import joblib
    import numpy as np
    import pyarrow as pa

    if memory_limit > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    versions.update(ok=True, pid=os.getpid())
    write_frame(out, versions)

    cache = OrderedDict()  # id -> (model, bytes)
    cached = 0
    while True:
        header, payload = read_frame(inp)
        if header is None:
            return 0
        op, mid = header.get("op"), header.get("id")
        try:
            if op == "load":
                if header.get("path"):
                    with open(header["path"], "rb") as f:
                        payload = f.read()
                model = load_model(joblib, io, payload)
                cache[mid] = (model, len(payload))
                cached += len(payload)
                while cached > cache_bytes and len(cache) > 1:
                    _, (_, size) = cache.popitem(last=False)
                    cached -= size
                write_frame(out, {"ok": True})
            elif op == "score":
                if mid not in cache:
                    write_frame(out, {"ok": False, "missing": True})
                    continue
                cache.move_to_end(mid)
                answer, body = score(np, pa, cache[mid][0], header, payload)
                write_frame(out, answer, body)
            else:
                write_frame(out, {"ok": False, "error": "unknown op %r" % op, "restart": True})
        except MemoryError as e:
            write_frame(
                out,
                {"ok": False, "error": describe_error(e), "limit": "memory", "restart": True},
            )
            return 0
        except BaseException as e:  # a model's SystemExit too: it fails that model only
            write_frame(out, {"ok": False, "error": describe_error(e)})


if __name__ == "__main__":
    sys.exit(main())
