#!/usr/bin/env bash
# Seeds every fuzz target's corpus: fuzz/corpus/import here, and the ingest
# body targets' (lineproto, json, csvbody) through seed_bodies.py.
#
# fuzz/corpus/import comes from the model fixtures: valid scikit-learn models
# of every supported family and format (sklearn/models), the malicious and
# corrupt ones (sklearn/malicious), the internally inconsistent ones
# (sklearn/invalid), and the pickle interpreter's estimator and node fixtures
# (pickle/estimators, pickle/*.pkl|*.joblib|*.z). fuzz/corpus is gitignored:
# the corpus is made at run time, never committed.
#
# Files larger than SEED_MAX_BYTES (default 32768) are left out: libFuzzer
# sets -max_len to the largest seed when it is not given, and a few
# 100-500 KB IsolationForest/LOF fixtures would make every mutation and
# execution slow. Every family has smaller fixtures. Set SEED_MAX_BYTES=0 to
# copy everything.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fixtures="$here/../crates/models/tests/fixtures"
corpus="$here/corpus/import"
max="${SEED_MAX_BYTES:-32768}"
mkdir -p "$corpus"
n=0
skipped=0
for dir in sklearn/models sklearn/malicious sklearn/invalid pickle/estimators pickle; do
    tag="${dir//\//-}"
    for f in "$fixtures/$dir"/*; do
        [ -f "$f" ] || continue
        case "$f" in *.md | *.py | *.json | *.txt) continue ;; esac
        if [ "$max" -gt 0 ] && [ "$(stat -c %s -- "$f")" -gt "$max" ]; then
            skipped=$((skipped + 1))
            continue
        fi
        cp -- "$f" "$corpus/seed-$tag-$(basename "$f")"
        n=$((n + 1))
    done
done
echo "seeded $n files into $corpus ($skipped larger than $max bytes left out)"
python3 "$here/seed_bodies.py"
