#!/usr/bin/env bash
# The cost of one forwarded post in `webhook-bridge serve`, as counts that
# repeat from run to run on a busy machine:
#
#   bench/fwd_profile.sh [cpu|callgrind|record|strace|mem]...   (default: cpu callgrind)
#
# cpu       wrk posts for BENCH_DURATION s (10) over BENCH_CONNECTIONS (64)
#           keep-alive connections through a forward route to the sink; prints
#           the bridge's user and system CPU µs per post (/proc/PID/stat) and
#           its system calls, context switches and page faults per post
#           (perf stat: raw_syscalls:sys_enter, context-switches, page-faults).
# callgrind the bridge under valgrind --tool=callgrind (one worker); after a
#           warm-up the counters are zeroed, BENCH_CALLGRIND_SECONDS (5) of
#           wrk over 8 connections follow, and the instructions of the bridge
#           process (user space: the bridge and its libraries) are divided by
#           the posts the sink got; the functions with the most instructions
#           go to $BENCH_PROFILE_OUT/callgrind.txt (default: a temp dir).
# record    perf record (cpu-clock samples, call graphs) on the bridge for
#           BENCH_DURATION s of the cpu mode's load; the report by shared
#           object and by symbol goes to $BENCH_PROFILE_OUT/perf-*.txt.
# strace    strace -c -f on the bridge for BENCH_STRACE_SECONDS (5) of wrk
#           over 8 connections: each system call's count per post.
# mem       a fresh bridge under BENCH_MEM_CONNECTIONS (1000) keep-alive
#           connections for BENCH_MEM_DURATION s (5): its RSS idle, its peak
#           (VmHWM) and after, as bench/run.sh's memory run measures them.
#
# "posts" is always what the sink counted over the measured window.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

DURATION=${BENCH_DURATION:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
WORKERS=${BENCH_WORKERS:-$(nproc)}
CG_SECONDS=${BENCH_CALLGRIND_SECONDS:-5}
ST_SECONDS=${BENCH_STRACE_SECONDS:-5}
MEM_CONNS=${BENCH_MEM_CONNECTIONS:-1000}
MEM_DURATION=${BENCH_MEM_DURATION:-5}
PAYLOAD=${BENCH_PAYLOAD:-$BENCH_ROOT/fixtures/v1/representative.json}
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(cpu callgrind)
case " ${MODES[*]} " in *" --help "* | *" -h "*)
	sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
esac

bench_tmp_make
trap bench_cleanup EXIT
OUT=${BENCH_PROFILE_OUT:-$BENCH_TMP}
mkdir -p "$OUT"
bench_tools_core
bench_build
bench_sink_build
bench_sink_start 2
bench_log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

wrk_run() { # CONNECTIONS SECONDS
	wrk -t1 -c "$1" -d "${2}s" --timeout 10s -s "$BENCH_ROOT/bench/post.lua" \
		"http://127.0.0.1:$BRIDGE_PORT$BENCH_HOOK_PATH" -- "$PAYLOAD" >"$BENCH_TMP/wrk.out" 2>&1 ||
		bench_die "wrk failed: $(tail -3 "$BENCH_TMP/wrk.out")"
	grep -q '"non2xx":0,' "$BENCH_TMP/wrk.out" || bench_die "non-2xx answers: $(grep BENCH "$BENCH_TMP/wrk.out")"
}

ticks() { awk '{print $14, $15}' "/proc/$1/stat"; } # user, system

start_bridge() { # WRAPPER...: the bridge (under WRAPPER) on a fresh config
	bench_bridge_config "$BENCH_TMP/bridge.conf" info "$WORKERS"
	"$@" "$BENCH_BRIDGE" serve --config "$BENCH_TMP/bridge.conf" \
		>"$BENCH_TMP/bridge.stdout" 2>"$BENCH_TMP/bridge.log" &
	BRIDGE_PID=$!
	BENCH_PIDS+=("$BRIDGE_PID")
	bench_wait_for 60 curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$BRIDGE_PORT/healthz" ||
		{ tail -5 "$BENCH_TMP/bridge.log" >&2; bench_die "webhook-bridge serve did not start"; }
}

mode_cpu() {
	local hz p0 p1 u0 s0 u1 s1 n sys cs pf
	hz=$(getconf CLK_TCK)
	start_bridge
	wrk_run "$CONNECTIONS" 2
	p0=$(bench_sink_posts)
	read -r u0 s0 < <(ticks "$BRIDGE_PID")
	perf stat -x, -e raw_syscalls:sys_enter,context-switches,page-faults -p "$BRIDGE_PID" \
		-o "$BENCH_TMP/perf.txt" \
		-- sleep "$((DURATION + 1))" &
	local perf_pid=$!
	wrk_run "$CONNECTIONS" "$DURATION"
	read -r u1 s1 < <(ticks "$BRIDGE_PID")
	p1=$(bench_sink_posts)
	wait "$perf_pid"
	n=$((p1 - p0))
	sys=$(awk -F, '/raw_syscalls/ {print $1}' "$BENCH_TMP/perf.txt")
	cs=$(awk -F, '/context-switches/ {print $1}' "$BENCH_TMP/perf.txt")
	pf=$(awk -F, '/page-faults/ {print $1}' "$BENCH_TMP/perf.txt")
	awk -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" -v sc="$sys" -v d="$DURATION" \
		-v c="$CONNECTIONS" -v w="$WORKERS" -v cs="$cs" -v pf="$pf" 'BEGIN {
		printf "cpu: %d posts in %d s (%.0f/s, %d connections, %d workers): user %.1f µs, system %.1f µs, total %.1f µs CPU per post; per post %.2f system calls, %.3f context switches, %.3f page faults (counted over %d s + 1)\n",
			n, d, n / d, c, w, u * 1e6 / hz / n, s * 1e6 / hz / n, (u + s) * 1e6 / hz / n, sc / n, cs / n, pf / n, d }'
	bench_stop "$BRIDGE_PID"
}

mode_callgrind() {
	local p0 p1 dump ir
	bench_have valgrind || bench_apt valgrind || exit 1
	WORKERS=1 start_bridge valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p"
	wrk_run 8 2
	callgrind_control -z "$BRIDGE_PID" >/dev/null
	p0=$(bench_sink_posts)
	wrk_run 8 "$CG_SECONDS"
	p1=$(bench_sink_posts)
	callgrind_control -d "$BRIDGE_PID" >/dev/null
	dump=$OUT/callgrind.out.$BRIDGE_PID.1 # the first dump on request
	ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
	callgrind_annotate --threshold=100 "$dump" >"$OUT/callgrind.txt" 2>/dev/null || true
	awk -v n=$((p1 - p0)) -v ir="$ir" 'BEGIN {
		printf "callgrind: %d posts, %d instructions in user space, %.1f k per post\n", n, ir, ir / n / 1000 }'
	bench_stop "$BRIDGE_PID"
}

mode_record() {
	start_bridge
	wrk_run "$CONNECTIONS" 2
	perf record -q -F 999 -g -o "$OUT/perf.data" -p "$BRIDGE_PID" -- sleep "$DURATION" \
		>/dev/null 2>&1 &
	local rec=$!
	wrk_run "$CONNECTIONS" "$DURATION"
	wait "$rec"
	perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2>/dev/null |
		grep -v '^#' | grep -v '^$' >"$OUT/perf-dso.txt" || true
	perf report -i "$OUT/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null |
		grep -v '^#' | grep -v '^$' >"$OUT/perf-sym.txt" || true
	perf report -i "$OUT/perf.data" --children --sort sym --stdio -g none 2>/dev/null |
		grep -v '^#' | grep -v '^$' >"$OUT/perf-children.txt" || true
	bench_log "record: $(grep -c . "$OUT/perf-sym.txt") symbols; $OUT/perf-{dso,sym,children}.txt"
	bench_stop "$BRIDGE_PID"
}

mode_strace() {
	local p0 p1
	bench_have strace || bench_apt strace || exit 1
	start_bridge
	wrk_run 8 2
	p0=$(bench_sink_posts)
	strace -c -f -q -o "$BENCH_TMP/strace.txt" -p "$BRIDGE_PID" &
	local st=$!
	sleep 0.5
	wrk_run 8 "$ST_SECONDS"
	p1=$(bench_sink_posts)
	kill -INT "$st"
	wait "$st" || true
	awk -v n=$((p1 - p0)) 'BEGIN { printf "strace: %d posts; system calls per post:\n", n }
		$1 ~ /^[0-9.]+$/ && NF >= 5 { printf "  %-20s %7.2f\n", $NF, $4 / n }' \
		"$BENCH_TMP/strace.txt"
	bench_stop "$BRIDGE_PID"
}

mode_mem() {
	local idle
	bench_raise_nofile
	start_bridge
	idle=$(bench_status_kb "$BRIDGE_PID" VmRSS)
	wrk_run "$MEM_CONNS" "$MEM_DURATION"
	awk -v c="$MEM_CONNS" -v d="$MEM_DURATION" -v i="$idle" \
		-v p="$(bench_status_kb "$BRIDGE_PID" VmHWM)" -v a="$(bench_status_kb "$BRIDGE_PID" VmRSS)" 'BEGIN {
		printf "mem: %d connections for %d s: RSS %.1f MiB idle, peak %.1f MiB (VmHWM), %.1f MiB after\n",
			c, d, i / 1024, p / 1024, a / 1024 }'
	bench_stop "$BRIDGE_PID"
}

for m in "${MODES[@]}"; do
	case $m in
	cpu) mode_cpu ;;
	callgrind) mode_callgrind ;;
	record) mode_record ;;
	strace) mode_strace ;;
	mem) mode_mem ;;
	*) bench_die "unknown mode: $m (cpu, callgrind, record, strace, mem)" ;;
	esac
done
bench_log "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
