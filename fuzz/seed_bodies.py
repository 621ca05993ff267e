#!/usr/bin/env python3
"""Seeds fuzz/corpus/{lineproto,json,csvbody,payload} for the ingest targets.

The seeds are the request bodies of the codecs tests: every string literal
(plain, raw `r#"..."#` and byte `b"..."`, Rust escapes decoded) in the
test code of crates/codecs/src/{lineproto,json,csvbody,ingest}.rs and
crates/codecs/tests/ingest.rs, sorted to the targets by a loose look at
the text (a body with `=` for line protocol, `{`/`[` for JSON, `,` for
CSV; a wrong guess only costs the fuzzer one useless seed), plus a few
bodies as real clients send them (Telegraf-style line protocol, NDJSON,
the first rows of examples/fleet/data/sensor_data.csv).

The `lineproto` and `csvbody` targets read their settings from the
input's first byte (see fuzz_targets/*.rs), so each of their seeds is
written once per settings byte in LP_SETTINGS / CSV_SETTINGS.

fuzz/corpus is gitignored: the corpus is made at run time, never committed.
Usage: fuzz/seed_bodies.py  (from anywhere; prints what it wrote)
"""

import hashlib
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SOURCES = [
    "crates/codecs/src/lineproto.rs",
    "crates/codecs/src/json.rs",
    "crates/codecs/src/csvbody.rs",
    "crates/codecs/src/ingest.rs",
    "crates/codecs/tests/ingest.rs",
    "crates/codecs/src/message.rs",
]
# Settings bytes (fuzz_targets/lineproto.rs): 0x00 defaults, 0x18 device
# tag `host` with measurement prefix, 0x23 seconds with booleans skipped.
LP_SETTINGS = [0x00, 0x18, 0x23]
# Settings bytes (fuzz_targets/csvbody.rs): 0x00 header by name, 0x02
# extra columns ignored, 0x11 no header, columns by position.
CSV_SETTINGS = [0x00, 0x02, 0x11]
# Settings bytes (fuzz_targets/payload.rs): 0xc0 auto with topic device and
# tag, 0x40 JSON with a topic device only, 0x0a seconds, no topic names.
PAYLOAD_SETTINGS = [0xC0, 0x40, 0x0A]

LITERAL = re.compile(
    r'(?P<raw>b?r(?P<hashes>#*)"(?P<rawbody>.*?)"(?P=hashes))'
    r'|(?P<plain>b?"(?P<body>(?:\\.|[^"\\])*)")',
    re.S,
)
ESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|\n\s*|.)', re.S)


def unescape(text, is_bytes):
    """Decodes a Rust string literal's escapes into bytes."""
    out = bytearray()
    pos = 0
    for m in ESCAPE.finditer(text):
        out += text[pos : m.start()].encode()
        e = m.group(1)
        if e.startswith("x"):
            v = int(e[1:], 16)
            out += bytes([v]) if is_bytes else chr(v).encode()
        elif e.startswith("u{"):
            out += chr(int(e[2:-1], 16)).encode()
        elif e[0] == "\n":
            pass  # a line continuation: the newline and the indent go
        else:
            out += {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0"}.get(e, e.encode())
        pos = m.end()
    out += text[pos:].encode()
    return bytes(out)


def test_code(path):
    """The test part of a file: all of a tests/ file, else from #[cfg(test)]."""
    text = open(os.path.join(ROOT, path), encoding="utf-8").read()
    if "/tests/" in path:
        return text
    i = text.find("#[cfg(test)]")
    return text[i:] if i >= 0 else ""


def literals(code):
    for m in LITERAL.finditer(code):
        if m.group("raw"):
            yield m.group("raw").startswith("b"), m.group("rawbody").encode()
        else:
            is_bytes = m.group("plain").startswith("b")
            yield is_bytes, unescape(m.group("body"), is_bytes)


def client_bodies():
    """Bodies as real clients send them."""
    lp = "".join(
        f"sensors,device=d{i % 7},site=north temp={20 + i % 9}.5,hum={40 + i}i,ok=true,"
        f'note="run {i}" {1_700_000_000_000_000_000 + i * 1_000_000_000}\n'
        for i in range(20)
    ).encode()
    lp_v2 = (
        b"# telegraf\ncpu,host=h1,cpu=cpu0 usage_user=1.5,usage_system=0.25 1700000000\r\n"
        b"mem,host=h1 used_percent=42.125,available=1024u 1700000000\r\n"
    )
    ndjson = "".join(
        f'{{"ts": "2026-01-15T00:00:{i:02}Z", "device": "{i % 3}", "tag": "t{i % 2}", "value": {i * 0.5}}}\n'
        for i in range(10)
    ).encode()
    array = b'[{"TS": "2026-01-15 00:00:05.000", "Device": 1, "Tag": 2, "Value": 4.4}, {"ts": 1700000000000000000, "device": "pump 7", "tag": "temp", "value": -0.0}]'
    with open(os.path.join(ROOT, "examples/fleet/data/sensor_data.csv"), "rb") as f:
        fleet = b"".join(f.readlines()[:40])
    payloads = [
        b"21.5",
        b'{"value": 20, "ts": 1764887621.5}',
        b'{"ts": 1764887621, "temp": 21.3, "vib": 0.02, "status": "ok"}',
        b'[{"device": "a", "t": 1}, {"device": "b", "tag": "x", "value": 2, "ts": "2026-01-15T00:00:05Z"}]',
    ]
    return {
        "lineproto": [lp, lp_v2],
        "json": [ndjson, array],
        "csvbody": [fleet],
        "payload": payloads,
    }


def main():
    seeds = {"lineproto": set(), "json": set(), "csvbody": set(), "payload": set()}
    for path in SOURCES:
        for _, body in literals(test_code(path)):
            if len(body) < 3:
                continue
            if b"=" in body:
                seeds["lineproto"].add(body)
            if body.lstrip()[:1] in (b"{", b"["):
                seeds["json"].add(body)
                seeds["payload"].add(body)
            if b"," in body:
                seeds["csvbody"].add(body)
    for target, bodies in client_bodies().items():
        seeds[target].update(bodies)
    settings = {
        "lineproto": LP_SETTINGS,
        "json": [None],
        "csvbody": CSV_SETTINGS,
        "payload": PAYLOAD_SETTINGS,
    }
    for target, bodies in seeds.items():
        corpus = os.path.join(HERE, "corpus", target)
        os.makedirs(corpus, exist_ok=True)
        n = 0
        for body in sorted(bodies):
            for s in settings[target]:
                data = body if s is None else bytes([s]) + body
                name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
                with open(os.path.join(corpus, name), "wb") as f:
                    f.write(data)
                n += 1
        print(f"seeded {n} files into {corpus} ({len(bodies)} bodies)")


if __name__ == "__main__":
    sys.exit(main())
