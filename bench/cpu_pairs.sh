#!/usr/bin/env bash
# CPU per request of nginx and of the bridge in short runs taken in turn, and
# the ratio of each pair: what a busy machine does to one ratio shows as the
# spread of the pairs, and their median holds where a long run's does not
# (a benchmark, not a test).
#
#   bench/cpu_pairs.sh [PAIRS]      (default 10)
#
# Builds the optimised bridge, starts the C sink, nginx (proxy_pass with
# keep-alive, access log on) and `webhook-bridge serve` (one forward route),
# set up as bench/run.sh sets them up, then PAIRS times: nginx, then the
# bridge, each BENCH_WARMUP s of unrecorded wrk load and BENCH_DURATION s
# measured. For each run: requests, user and system CPU microseconds per
# request (the process and its children, from /proc/PID/stat). Then the
# pairs' ratios bridge/nginx of CPU per request and of requests/s, sorted,
# with their median and quartiles. Exits 1 on a non-2xx answer or a socket
# error. Settings (environment):
#   BENCH_DURATION     seconds per measured run (5)
#   BENCH_WARMUP       seconds of unrecorded load before each (1)
#   BENCH_CONNECTIONS  wrk connections (64)
#   BENCH_WRK_THREADS  wrk threads (1)
#   BENCH_SINK_THREADS sink event loops (2)
#   BENCH_WORKERS      bridge workers = nginx worker processes (nproc)
#   BENCH_LOG_LEVEL    the bridge's log_level (info)
#   BENCH_PAYLOAD      the v1 post (fixtures/v1/representative.json)
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

bench_count_arg PAIRS 10 "bench/cpu_pairs.sh [PAIRS]" "${1:-}"
DURATION=${BENCH_DURATION:-5}
WARMUP=${BENCH_WARMUP:-1}
CONNS=${BENCH_CONNECTIONS:-64}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
SINK_THREADS=${BENCH_SINK_THREADS:-2}
WORKERS=${BENCH_WORKERS:-$(nproc)}
PAYLOAD=$(bench_payload)

bench_tmp_make
trap bench_cleanup EXIT
bench_tools_core
bench_tools_nginx
bench_build
bench_sink_build
bench_raise_nofile
bench_sink_start "$SINK_THREADS"
bench_nginx_start "$WORKERS" 64
bench_bridge_config "$BENCH_TMP/bridge.conf" "${BENCH_LOG_LEVEL:-info}" "$WORKERS"
bench_bridge_start "$BENCH_TMP/bridge.conf" "$BENCH_TMP/bridge.log"
bench_log "commit $(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown), $PAIRS pairs of ${DURATION}s runs, $CONNS connections, $WORKERS workers, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# user and system clock ticks of a process and its children
ticks() {
	local u=0 s=0 a b pid
	for pid in "$1" $(bench_children "$1"); do
		read -r a b < <(awk '{print $14, $15}' "/proc/$pid/stat" 2>/dev/null || echo "0 0")
		u=$((u + a))
		s=$((s + b))
	done
	echo "$u $s"
}

wrk_run() { # URL SECONDS OUT
	wrk -t "$WRK_THREADS" -c "$CONNS" -d "${2}s" --timeout 10s -s "$BENCH_ROOT/bench/post.lua" \
		"$1" -- "$PAYLOAD" >"$3" 2>&1 || bench_die "wrk failed: $(tail -3 "$3")"
	grep -q '"non2xx":0,' "$3" || bench_die "non-2xx answers: $(grep BENCH "$3")"
	grep -q '"connect_errors":0,"read_errors":0,"write_errors":0,"timeouts":0' "$3" ||
		bench_die "socket errors: $(grep BENCH "$3")"
}

# one measured run: "requests user_us system_us" per request
measure() { # URL PID
	local u0 s0 u1 s1 n
	wrk_run "$1" "$WARMUP" "$BENCH_TMP/warm.out"
	read -r u0 s0 < <(ticks "$2")
	wrk_run "$1" "$DURATION" "$BENCH_TMP/run.out"
	read -r u1 s1 < <(ticks "$2")
	n=$(sed -n 's/^BENCH .*"requests":\([0-9]*\).*/\1/p' "$BENCH_TMP/run.out")
	case $n in '' | *[!0-9]* | 0) bench_die "no request count in wrk's output" ;; esac
	awk -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" \
		'BEGIN { printf "%d %.2f %.2f\n", n, u * 1e6 / hz / n, s * 1e6 / hz / n }'
}

printf '| pair | nginx requests/s | nginx user / system µs | bridge requests/s | bridge user / system µs | CPU ratio | requests/s ratio |\n'
printf '|---:|---:|---:|---:|---:|---:|---:|\n'
: >"$BENCH_TMP/ratios"
for i in $(seq "$PAIRS"); do
	read -r nn nu ns < <(measure "http://127.0.0.1:$NGINX_PORT/import" "$NGINX_PID")
	read -r bn bu bs < <(measure "http://127.0.0.1:$BRIDGE_PORT$BENCH_HOOK_PATH" "$BRIDGE_PID")
	bench_alive "$BRIDGE_PID" || bench_die "webhook-bridge exited during the run"
	awk -v i="$i" -v d="$DURATION" -v nn="$nn" -v nu="$nu" -v ns="$ns" -v bn="$bn" -v bu="$bu" \
		-v bs="$bs" -v out="$BENCH_TMP/ratios" 'BEGIN {
		c = (bu + bs) / (nu + ns); r = bn / nn
		printf "| %d | %.0f | %.1f / %.1f | %.0f | %.1f / %.1f | %.2f× | %.2f× |\n", i, nn / d, nu, ns, bn / d, bu, bs, c, r
		printf "%.4f %.4f\n", c, r >> out }'
done
sort -n "$BENCH_TMP/ratios" | awk '{ c[NR] = $1 } END {
	n = NR; q1 = c[int((n + 3) / 4)]; m = (n % 2) ? c[(n + 1) / 2] : (c[n / 2] + c[n / 2 + 1]) / 2; q3 = c[n - int((n - 1) / 4)]
	printf "\nCPU per request, bridge/nginx, %d pairs: median **%.2f×** (quartiles %.2f× and %.2f×; lowest %.2f×, highest %.2f×)\n", n, m, q1, q3, c[1], c[n] }'
sort -n -k2 "$BENCH_TMP/ratios" | awk '{ r[NR] = $2 } END {
	n = NR; m = (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
	printf "requests/s, bridge/nginx: median **%.2f×** (lowest %.2f×, highest %.2f×)\n", m, r[1], r[n] }'
