#!/usr/bin/env python3
"""Writes reproducers for importer bugs found by code review during the first
fuzz campaign (the fuzzer itself did not reach them in 10 minutes).

    python3 fuzz/review_findings.py            # writes fuzz/artifacts/review/*.pkl
    cargo fuzz run import fuzz/artifacts/review/f16.pkl   # (with RUSTC_BOOTSTRAP=1)

fuzz/artifacts is gitignored. See fuzz/README.md for what each file shows.
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts", "review")


def s(t):
    b = t.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def array(shape, dtype, data, fortran=False, elsize=b"J\xff\xff\xff\xff"):
    """numpy.core.multiarray._reconstruct(ndarray, (0,), b'b') with BUILD state."""
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
        + b"(K\x01" + shape
        + b"cnumpy\ndtype\n" + s(dtype) + b"\x89\x88\x87R"
        + b"(K\x03" + s("<") + b"NNN" + elsize + b"J\xff\xff\xff\xffK\x00tb"
        + (b"\x88" if fortran else b"\x89")
        + b"B" + struct.pack("<I", len(data)) + data
        + b"tb"
    )


def ocsvm(support_vectors):
    p = b"\x80\x02csklearn.svm\nOneClassSVM\n)\x81}("
    p += s("kernel") + s("rbf") + s("_gamma") + b"G?\xf0\x00\x00\x00\x00\x00\x00"
    p += s("support_vectors_") + support_vectors
    p += s("_dual_coef_") + array(b"K\x01K\x02\x86", "f8", b"\x00" * 16)
    p += s("_intercept_") + array(b"K\x01\x85", "f8", b"\x00" * 8)
    return p + b"ub."


def fanout(m, levels=8):
    """Pipelines 8 deep, each listing the one below m times through the memo:
    translate visits m**8 StandardScalers."""
    p = b"\x80\x02csklearn.pipeline\nPipeline\nq\x00"
    p += b"csklearn.preprocessing\nStandardScaler\nq\x01"
    p += b"h\x01)\x81}bq\x02" + s("s") + b"h\x02\x86q\x03"
    step, nxt = 3, 4
    for _ in range(levels):
        p += b"h\x00)\x81}" + s("steps") + b"](" + (b"h" + bytes([step])) * m + b"esb"
        obj = nxt
        p += b"q" + bytes([obj]) + s("p") + b"h" + bytes([obj]) + b"\x86q" + bytes([obj + 1])
        step, nxt = obj + 1, obj + 2
    return p + b"h" + bytes([obj]) + b"."


def copies(n, k):
    """An n-tuple in the memo passed to numpy.dtype k times: REDUCE copies the
    arguments each time, n*k values from n + 5k bytes."""
    return b"\x80\x02cnumpy\ndtype\nq\x00(" + b"N" * n + b"tq\x01" + b"h\x00h\x01R" * k + b"N."


FILES = {
    # float128 array: NdArray::to_f64 copies 16 bytes into an [u8; 8] (panic).
    "f16.pkl": ocsvm(array(b"K\x02K\x01\x86", "f16", b"\x00" * 32)),
    # 'S0' (itemsize 0) Fortran-ordered 2x2 array: to_f64 yields no values,
    # then the transpose indexes them (panic).
    "s0_fortran.pkl": ocsvm(array(b"K\x02K\x02\x86", "S0", b"", fortran=True, elsize=b"K\x00")),
    # 534 bytes -> ~3.4 s and ~1.2 GB; m=12 needs tens of GB.
    "fanout_8.pkl": fanout(8),
    # 20 KB -> ~475 MB; memory grows with the square of the file size.
    "copies_20k.pkl": copies(10000, 2000),
}

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, data in FILES.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print(f"{os.path.join(OUT, name)}: {len(data)} bytes")
