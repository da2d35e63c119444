#!/usr/bin/env bash
# Soak test: a fixed rate of posts through the bridge for MINUTES, RSS before
# and after. See bench/README.md.
#
#   bench/soak.sh [MINUTES]      (default 10)
#
# Builds the optimised bridge, starts the C sink and `webhook-bridge serve`
# (one forward route) on 127.0.0.1, then runs wrk one minute at a time with
# bench/post.lua throttling every connection, printing after each minute the
# posts, the achieved rate, non-2xx answers and the bridge's VmRSS / VmHWM.
# Exits 1 if any answer was not 2xx, a socket error occurred or the sink got
# fewer posts than the bridge answered. Settings (environment):
#   BENCH_SOAK_RATE         target posts per second (200)
#   BENCH_SOAK_CONNECTIONS  keep-alive connections sharing that rate (10)
#   BENCH_SINK_THREADS      sink event loops (1)
#   BENCH_WORKERS           bridge workers (nproc)
#   BENCH_LOG_LEVEL         the bridge's log_level (info)
#   BENCH_PAYLOAD           the v1 post (fixtures/v1/representative.json)
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

bench_count_arg MINUTES 10 "bench/soak.sh [MINUTES]" "${1:-}"
RATE=${BENCH_SOAK_RATE:-200}
CONNS=${BENCH_SOAK_CONNECTIONS:-10}
SINK_THREADS=${BENCH_SINK_THREADS:-1}
WORKERS=${BENCH_WORKERS:-$(nproc)}
LOG_LEVEL=${BENCH_LOG_LEVEL:-info}
PAYLOAD=$(bench_payload)
[ -f "$PAYLOAD" ] || bench_die "no payload file $PAYLOAD"
# Each connection waits this long before each post: CONNS * 1000 / RATE ms.
INTERVAL_MS=$((CONNS * 1000 / RATE))
[ "$INTERVAL_MS" -ge 1 ] || bench_die "BENCH_SOAK_RATE too high for $CONNS connections"

bench_tmp_make
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_tools_core
bench_raise_nofile
bench_build
bench_sink_build
bench_sink_start "$SINK_THREADS"
bench_bridge_config "$BENCH_TMP/bridge.conf" "$LOG_LEVEL" "$WORKERS"
bench_bridge_start "$BENCH_TMP/bridge.conf" "$BENCH_TMP/bridge.log"

answer=$(curl -s --max-time 10 -H 'Content-Type: application/json' --data-binary "@$PAYLOAD" \
	"http://127.0.0.1:$BRIDGE_PORT$BENCH_HOOK_PATH")
case $answer in
*'"status":"delivered"'*) ;;
*) bench_die "the bridge did not deliver the payload: $answer" ;;
esac

rss_before=$(bench_status_kb "$BRIDGE_PID" VmRSS)
echo "soak: $MINUTES min at ~$RATE posts/s over $CONNS connections (each waits ${INTERVAL_MS} ms), $(basename "$PAYLOAD")"
echo "soak: bridge pid $BRIDGE_PID, RSS before: $rss_before kB"
printf '%6s %9s %8s %8s %8s %11s %11s\n' minute posts rate/s p99_ms non2xx VmRSS_kB VmHWM_kB

total=0
bad=0
first_rss=""
for minute in $(seq "$MINUTES"); do
	before=$(bench_sink_posts)
	timeout 120 wrk -t 1 -c "$CONNS" -d 60s --timeout 10s -s "$BENCH_ROOT/bench/post.lua" \
		"http://127.0.0.1:$BRIDGE_PORT$BENCH_HOOK_PATH" -- "$PAYLOAD" "$INTERVAL_MS" \
		>"$BENCH_TMP/soak.wrk" 2>&1 || bench_die "wrk failed: $(tail -3 "$BENCH_TMP/soak.wrk")"
	sleep 0.5
	got=$(($(bench_sink_posts) - before))
	line=$(sed -n 's/^BENCH //p' "$BENCH_TMP/soak.wrk")
	read -r reqs rps p99 non2xx sockerr < <("$BENCH_PY" -c '
import json, sys
r = json.loads(sys.argv[1])
print(r["requests"], "%.1f" % r["rps"], "%.2f" % (r["p99_us"] / 1000), r["non2xx"],
      r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"])' "$line")
	rss=$(bench_status_kb "$BRIDGE_PID" VmRSS)
	[ -n "$first_rss" ] || first_rss=$rss
	printf '%6s %9s %8s %8s %8s %11s %11s\n' "$minute" "$reqs" "$rps" "$p99" "$non2xx" "$rss" \
		"$(bench_status_kb "$BRIDGE_PID" VmHWM)"
	total=$((total + reqs))
	if [ "$non2xx" -ne 0 ] || [ "$sockerr" -ne 0 ] || [ "$got" -lt "$reqs" ]; then
		echo "soak: minute $minute: $non2xx non-2xx, $sockerr socket errors, sink got $got of $reqs"
		bad=1
	fi
	bench_alive "$BRIDGE_PID" || bench_die "the bridge exited during the soak"
done

rss_after=$(bench_status_kb "$BRIDGE_PID" VmRSS)
echo "soak: $total posts; bridge RSS before: $rss_before kB, after minute 1: $first_rss kB, after: $rss_after kB (growth since minute 1: $((rss_after - first_rss)) kB), peak (VmHWM): $(bench_status_kb "$BRIDGE_PID" VmHWM) kB"
if [ "$bad" -ne 0 ]; then
	echo "soak: INVALID: some posts were not delivered (see above)"
	exit 1
fi
