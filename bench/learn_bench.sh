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
# Wall time and the CPU time learn itself used (user + sys: the fair figure
# on a shared machine).
/usr/bin/python3 - "$bin" "$dir" "$n" <<'PY'
import resource, subprocess, sys, time
b, d, n = sys.argv[1:4]
t0 = time.monotonic()
r = subprocess.run(["taskset", "-c", "0", b, "learn", "--v1", d + "/v1.ndjson", "--v2",
                    d + "/v2.ndjson", "-o", d + "/learned.conf"], stderr=subprocess.PIPE)
wall = time.monotonic() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
sys.stdout.write(r.stderr.decode())
print("learn: %s pairs in %.2f s wall, %.2f s CPU on one core (target: under 10 s)"
      % (n, wall, ru.ru_utime + ru.ru_stime))
PY
