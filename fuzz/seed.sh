#!/usr/bin/env bash
# Seeds fuzz/corpus/import from the scikit-learn fixtures (valid models in
# every supported format, and the malicious/corrupt ones). fuzz/corpus is
# gitignored: the corpus is made at run time, never committed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fixtures="$here/../crates/models/tests/fixtures/sklearn"
corpus="$here/corpus/import"
mkdir -p "$corpus"
n=0
for f in "$fixtures"/models/* "$fixtures"/malicious/*; do
    case "$f" in *.md) continue ;; esac
    [ -f "$f" ] || continue
    cp -- "$f" "$corpus/seed-$(basename "$f")"
    n=$((n + 1))
done
echo "seeded $n files into $corpus"
