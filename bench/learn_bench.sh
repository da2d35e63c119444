#!/bin/sh
# learn on 10,000 pairs (the new_york hidden rules of tests/learn_cases.py:
# datetime zones, value maps, choices, separators, opt-in maps, scores,
# uploads), one core; prints the figure.  Target: under 10 s.
#   sh bench/learn_bench.sh [PAIRS]
set -eu
cd "$(dirname "$0")/.."
n=${1:-10000}
bin=build/webhook-bridge
[ -x "$bin" ] || { echo "build first: sh tests/setup.sh" >&2; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
/usr/bin/python3 - "$dir" "$n" <<'PY'
import sys
sys.path.insert(0, "tests")
import learn_cases as lc
d, n = sys.argv[1], int(sys.argv[2])
open(d + "/hidden.conf", "w").write(lc.CASES["new_york"])
lc.write_ndjson(d + "/v1.ndjson", lc.make_v1("new_york", n, 7))
PY
"$bin" map --mapping "$dir/hidden.conf" --ndjson "$dir/v1.ndjson" >"$dir/v2.ndjson"
start=$(date +%s.%N)
taskset -c 0 "$bin" learn --v1 "$dir/v1.ndjson" --v2 "$dir/v2.ndjson" -o "$dir/learned.conf" 2>"$dir/err" || true
end=$(date +%s.%N)
cat "$dir/err"
echo "learn: $n pairs in $(awk "BEGIN { printf \"%.2f\", $end - $start }") s on one core"
