#!/usr/bin/env bash
# The API contract test: schemathesis (PyPI) generates requests from the
# OpenAPI document a live `fleetscore serve` publishes at
# /v1/openapi.json, sends them, and fails on any 5xx answer, any status the
# document does not list for the route, and any answer whose body, content
# type or headers do not fit the document. The document is generated from
# the handlers' types (crates/server/src/api/openapi.rs), so this checks
# the server against its own types, on inputs nobody wrote by hand.
#
# The server runs on a temporary data folder with an admin and an ingest
# token, protected reads, and data for every kind of answer: readings over
# two hours; an outlier detector, a regressor whose Box-Cox step makes NaN
# scores for readings at or below 0, a classifier, and a model with no
# readings (a failed model); a job that scored them all, so jobs, tasks,
# failures, predictions, anomalies, the overview and the extent answer
# with rows. schemathesis sends the admin token with every request.
#
# Run by .ci/run; by hand: crates/fleetscore/tests/contract/run.sh
# Environment: FLEETSCORE_CONTRACT_EXAMPLES (test cases per operation and
# phase; default 150, about a minute and a half on two cores),
# FLEETSCORE_CONTRACT_SEED (default a fixed one, so a run is repeatable;
# `random` for a new one each run), FLEETSCORE_BIN (a built binary to
# test; default: `cargo build` one), CARGO_TARGET_DIR.
# schemathesis and its dependencies are pinned in requirements.txt beside
# this file and installed once into a venv under
# ${XDG_CACHE_HOME:-~/.cache}/fleetscore-ci, named by that file's hash.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../../.." && pwd)"
cd "$root"
examples="${FLEETSCORE_CONTRACT_EXAMPLES:-150}"
seed="${FLEETSCORE_CONTRACT_SEED:-20261206}"
admin="contract-admin-secret"

echo "-- schemathesis (pinned in $here/requirements.txt)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/fleetscore-ci"
venv="$cache/schemathesis-$(sha256sum "$here/requirements.txt" | cut -c1-12)"
if [ ! -x "$venv/bin/schemathesis" ]; then
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv" || {
        echo "error: python3 -m venv failed; install the venv module (apt install python3-venv)" >&2
        exit 1
    }
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi
"$venv/bin/schemathesis" --version

if [ -n "${FLEETSCORE_BIN:-}" ]; then
    bin="$FLEETSCORE_BIN"
else
    echo "-- fleetscore (debug build)"
    cargo build --quiet -p fleetscore --bin fleetscore
    bin="${CARGO_TARGET_DIR:-$root/target}/debug/fleetscore"
fi
[ -x "$bin" ] || { echo "error: $bin is not an executable fleetscore" >&2; exit 1; }

work="$(mktemp -d /tmp/fleetscore-contract.XXXXXX)"
server=""
finish() {
    local status=$?
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    if [ "$status" -eq 0 ]; then
        rm -rf "$work"
    else
        echo "kept for a look: $work (data/, the server's serve.err)" >&2
    fi
}
trap finish EXIT
data="$work/data"
mkdir -p "$data"

fs() { "$bin" --data "$data" --quiet "$@"; }
fixtures="$root/crates/models/tests/fixtures/sklearn/models"
echo "-- data: models and two hours of readings"
fs models import "$root/crates/fleetscore/demo/model_fallback_1.pkl" --device '*' --tag 1
fs models import "$fixtures/pt_bc_lin_f1.p4.pkl" --device nan --tag boxcox
fs models import "$fixtures/rfc_str3_f1.p4.pkl" --device cls --tag class
fs models import "$fixtures/pt_bc_lin_f1.p4.pkl" --device ghost --tag silent
python3 - "$data/readings.csv" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("TS,Device,Tag,Value\n")
    for m in range(120):
        ts = f"2024-03-01T{10 + m // 60:02}:{m % 60:02}:00Z"
        for d in range(3):
            wild = d == 2 and m >= 60
            f.write(f"{ts},d{d},1,{500.0 + m if wild else 20.0 + (m % 7) * 0.1}\n")
        # Box-Cox needs values above 0: every fifth is not (a NaN score).
        f.write(f"{ts},nan,boxcox,{-1.0 if m % 5 == 0 else 1.0 + m / 10}\n")
        f.write(f"{ts},cls,class,{(m % 30) / 3.0}\n")
PY
fs ingest "$data/readings.csv"
cat >"$data/config.toml" <<EOF
[auth]
admin_tokens = ["$admin"]
ingest_tokens = ["contract-ingest-secret"]
protect_reads = true
[jobs]
tick_interval = "200ms"
EOF

echo "-- fleetscore serve"
: >"$work/serve.out"
RUST_LOG="${RUST_LOG:-info}" "$bin" --data "$data" serve --listen 127.0.0.1:0 --config "$data/config.toml" \
    >"$work/serve.out" 2>"$work/serve.err" &
server=$!
addr=""
for _ in $(seq 100); do
    addr="$(sed -n 's/^listening on //p' "$work/serve.out" | head -1)"
    [ -n "$addr" ] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$addr" ]; then
    cat "$work/serve.err" >&2
    echo "error: fleetscore serve did not start" >&2
    exit 1
fi
url="http://$addr"
echo "listening on $url"

# One job over both hours, scored by the server's runner. It must succeed
# (the failed model within its threshold): the reads' default range ends
# at the newest succeeded job's window, so that requests without `from`
# and `to` read these rows.
python3 - "$url" "$admin" <<'PY'
import json, sys, time, urllib.request
url, token = sys.argv[1], sys.argv[2]
def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method, data=body,
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)
ids = call("POST", "/v1/jobs", json.dumps(
    {"from": "2024-03-01T10:00:00Z", "to": "2024-03-01T12:00:00Z", "window": "2h",
     "max_failed_models": "50%"}).encode())["jobs"]
deadline = time.time() + 120
while True:
    job = call("GET", f"/v1/jobs/{ids[0]}")
    state = job["job"]["state"]
    if state not in ("queued", "running"):
        break
    if time.time() > deadline:
        sys.exit(f"error: job {ids[0]} still {state} after 120 s")
    time.sleep(0.2)
j = job["job"]
print(f"job {j['id']} {state}: {j['models']} models, {j['rows']} rows, {j['anomalies']} anomalies, "
      f"{j['failed_models']} failed")
if state != "succeeded" or j["rows"] == 0 or not job["failures"]:
    sys.exit(f"error: the seed job did not score as planned: {json.dumps(job)[:2000]}")
rows = call("GET", "/v1/predictions")["rows"]
if not any(r["score"] is None for r in rows) or not any(r["label"] for r in rows):
    sys.exit("error: the default range's predictions lack a NaN score or a class label: "
             "the data no longer covers those answers")
PY

echo "-- schemathesis run: $examples examples per operation, seed $seed"
seed_args=(--seed "$seed")
[ "$seed" = random ] && seed_args=()
status=0
# In the temporary folder: schemathesis keeps a cache in its working
# directory.
cd "$work"
timeout 900 "$venv/bin/schemathesis" run "$url/v1/openapi.json" \
    --header "Authorization: Bearer $admin" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-examples "$examples" "${seed_args[@]}" \
    --workers 1 --request-timeout 60 --no-color || status=$?
if ! kill -0 "$server" 2>/dev/null; then
    tail -50 "$work/serve.err" >&2
    echo "error: fleetscore serve exited during the run" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "error: schemathesis found answers that break the API's contract (each above, with a curl to reproduce it); the server log's tail:" >&2
    tail -30 "$work/serve.err" >&2
    exit "$status"
fi
echo "contract: ok"
