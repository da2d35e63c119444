#!/usr/bin/env bash
# The benchmark suite (not part of the test run). See bench/README.md.
#
#   bench/run.sh [--quick] [--no-record]
#
# Builds an optimised webhook-bridge, starts a C sink, nginx and the bridge on
# 127.0.0.1 and measures, side by side with the same wrk settings:
#   ceiling  wrk -> sink
#   nginx    wrk -> nginx proxy_pass (upstream keep-alive) -> sink
#   bridge   wrk -> webhook-bridge serve, forward mode (parse, map, sign) -> sink
# then the bridge's memory with many keep-alive connections, and
# `webhook-bridge map --ndjson` against the same mapping written in jq.
# Prints a Markdown section and appends it to bench/RESULTS.md.
#
# --quick: one round of 10 s per target, jq timed once. Settings (environment):
#   BENCH_DURATION        seconds per measured wrk run (30; --quick 10)
#   BENCH_WARMUP          seconds of unrecorded load before each (3; --quick 2)
#   BENCH_ROUNDS          rounds over the three targets, median kept (3; --quick 1)
#   BENCH_CONNECTIONS     wrk connections (64)
#   BENCH_WRK_THREADS     wrk threads (1)
#   BENCH_SINK_THREADS    sink event loops (2)
#   BENCH_WORKERS         bridge workers = nginx worker processes (nproc, the
#                         bridge's own default)
#   BENCH_MEM_CONNECTIONS connections for the memory run (1000)
#   BENCH_MEM_DURATION    seconds of the memory run (10; --quick 5)
#   BENCH_NDJSON_COUNT    payloads for the mapping run (100000)
#   BENCH_MAP_RUNS        timed runs of each mapper, median kept (3; --quick: jq 1)
#   BENCH_CALLGRIND_COUNT payloads mapped under callgrind by each mapper (2000;
#                         0 skips the instruction counts)
#   BENCH_LOG_LEVEL       the bridge's log_level (info: one access line per post)
#   BENCH_NGINX_ACCESS_LOG on (default): nginx writes an access line per
#                         request (combined, buffer=64k), as the bridge does
#                         at info; off: none (the baseline before 2026-12-07)
#   BENCH_PAYLOAD         the v1 post (fixtures/v1/representative.json)
#   BENCH_RESULTS         where to append (bench/RESULTS.md)
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

quick=0
record=1
for a in "$@"; do
	case $a in
	--quick) quick=1 ;;
	--no-record) record=0 ;;
	-h | --help)
		bench_help
		exit 0
		;;
	*)
		echo "usage: bench/run.sh [--quick] [--no-record]" >&2
		exit 2
		;;
	esac
done

if [ "$quick" = 1 ]; then
	DURATION=${BENCH_DURATION:-10}
	WARMUP=${BENCH_WARMUP:-2}
	MEM_DURATION=${BENCH_MEM_DURATION:-5}
	ROUNDS=${BENCH_ROUNDS:-1}
	MAP_RUNS=${BENCH_MAP_RUNS:-3}
	JQ_RUNS=${BENCH_MAP_RUNS:-1} # jq takes minutes per run
else
	DURATION=${BENCH_DURATION:-30}
	WARMUP=${BENCH_WARMUP:-3}
	MEM_DURATION=${BENCH_MEM_DURATION:-10}
	ROUNDS=${BENCH_ROUNDS:-3}
	MAP_RUNS=${BENCH_MAP_RUNS:-3}
	JQ_RUNS=${BENCH_MAP_RUNS:-3}
fi
CONNS=${BENCH_CONNECTIONS:-64}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
SINK_THREADS=${BENCH_SINK_THREADS:-2}
WORKERS=${BENCH_WORKERS:-$(nproc)}
MEM_CONNS=${BENCH_MEM_CONNECTIONS:-1000}
NDJSON_COUNT=${BENCH_NDJSON_COUNT:-100000}
CALLGRIND_COUNT=${BENCH_CALLGRIND_COUNT:-2000}
LOG_LEVEL=${BENCH_LOG_LEVEL:-info}
RESULTS=${BENCH_RESULTS:-$BENCH_ROOT/bench/RESULTS.md}
PAYLOAD=$(bench_payload)
[ -f "$PAYLOAD" ] || bench_die "no payload file $PAYLOAD"

bench_tmp_make
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
OUT=$BENCH_TMP/out
mkdir -p "$OUT"
fact() { printf '%s\t%s\n' "$1" "$2" >>"$OUT/facts"; }

bench_tools_core
bench_tools_nginx
bench_have jq || bench_apt jq || exit 1
bench_have hyperfine || bench_apt hyperfine || bench_log "no hyperfine: timing the mappers with date"
if [ "$CALLGRIND_COUNT" -gt 0 ]; then
	bench_have valgrind || bench_apt valgrind || exit 1
fi
bench_raise_nofile

bench_log "building (release) in $BENCH_BUILD"
bench_build
bench_sink_build

fact date "$(date -u '+%Y-%m-%d %H:%M UTC')"
fact mode "$([ "$quick" = 1 ] && echo quick || echo full)"
commit=$(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$BENCH_ROOT" status --porcelain 2>/dev/null)" ]; then
	commit="$commit (modified tree)"
fi
fact commit "$commit"
fact nproc "$(nproc)"
fact cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
fact kernel "$(uname -sr)"
fact memory "$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
fact load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
fact versions "$("$BENCH_BRIDGE" --version), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), $("$(bench_nginx_bin)" -v 2>&1 | sed 's/.*: //'), $(jq --version), libevent $(pkg-config --modversion libevent)"
fact duration "$DURATION"
fact rounds "$ROUNDS"
fact warmup "$WARMUP"
fact connections "$CONNS"
fact wrk_threads "$WRK_THREADS"
fact sink_threads "$SINK_THREADS"
fact workers "$WORKERS"
fact log_level "$LOG_LEVEL"
fact nginx_access_log "${BENCH_NGINX_ACCESS_LOG:-on}"
fact payload "$(basename "$PAYLOAD"), $(wc -c <"$PAYLOAD") bytes"

bench_sink_start "$SINK_THREADS"
# keepalive: the bridge's default upstream.max_connections, per worker as in nginx.
bench_nginx_start "$WORKERS" 64
bench_bridge_config "$BENCH_TMP/bridge.conf" "$LOG_LEVEL" "$WORKERS"
bench_bridge_start "$BENCH_TMP/bridge.conf" "$BENCH_TMP/bridge.log"
bench_log "sink :$SINK_PORT  nginx :$NGINX_PORT  bridge :$BRIDGE_PORT"

# One post through the bridge: it must say "delivered" before we load it.
answer=$(curl -s --max-time 10 -H 'Content-Type: application/json' --data-binary "@$PAYLOAD" \
	"http://127.0.0.1:$BRIDGE_PORT$BENCH_HOOK_PATH")
case $answer in
*'"status":"delivered"'*) ;;
*) bench_die "the bridge did not deliver the payload: $answer" ;;
esac
fact bridge_idle_rss_kb "$(bench_status_kb "$BRIDGE_PID" VmRSS)"

wrk_run() { # NAME URL CONNECTIONS SECONDS OUTPUT
	if ! timeout $(($4 + 60)) wrk -t "$WRK_THREADS" -c "$3" -d "${4}s" --timeout 10s --latency \
		-s "$BENCH_ROOT/bench/post.lua" "$2" -- "$PAYLOAD" >"$5" 2>&1; then
		tail -3 "$5" >&2
		if [ -n "${BRIDGE_PID:-}" ] && ! bench_alive "$BRIDGE_PID"; then
			bench_log "webhook-bridge has exited; its last log lines:"
			tail -5 "$BENCH_TMP"/bridge*.log >&2
		fi
		bench_die "wrk against $1 failed"
	fi
}

TICK=$(getconf CLK_TCK)
fact clk_tck "$TICK"
cpu_pct() { # TICKS_BEFORE TICKS_AFTER NANOSECONDS
	awk -v a="$1" -v b="$2" -v t="$TICK" -v ns="$3" 'BEGIN {printf "%.0f", (b - a) * 100 / t / (ns / 1e9)}'
}

measure() { # NAME URL ROUND PROXY_PID (empty for the ceiling)
	local name=$1 url=$2 round=$3 proxy=$4 before after p0=0 p1=0 s0 s1 t0 t1
	bench_log "round $round, $name: ${WARMUP}s warm-up, ${DURATION}s measured, $CONNS connections"
	if [ "$WARMUP" -gt 0 ]; then
		wrk_run "$name" "$url" "$CONNS" "$WARMUP" "$OUT/$name.r$round.warmup"
	fi
	before=$(bench_sink_posts)
	[ -z "$proxy" ] || p0=$(bench_cpu_ticks "$proxy")
	s0=$(bench_cpu_ticks "$SINK_PID")
	t0=$(date +%s%N)
	wrk_run "$name" "$url" "$CONNS" "$DURATION" "$OUT/$name.r$round.wrk"
	t1=$(date +%s%N)
	[ -z "$proxy" ] || p1=$(bench_cpu_ticks "$proxy")
	s1=$(bench_cpu_ticks "$SINK_PID")
	sleep 0.5
	after=$(bench_sink_posts)
	fact "$name.r$round.sink_posts" "$((after - before))"
	[ -z "$proxy" ] || fact "$name.r$round.proxy_cpu" "$(cpu_pct "$p0" "$p1" $((t1 - t0)))"
	fact "$name.r$round.sink_cpu" "$(cpu_pct "$s0" "$s1" $((t1 - t0)))"
	# Raw CPU ticks of the measured run: report.py divides them by the
	# requests wrk counted, giving CPU microseconds per request.
	[ -z "$proxy" ] || fact "$name.r$round.proxy_ticks" "$((p1 - p0))"
	fact "$name.r$round.sink_ticks" "$((s1 - s0))"
}

# The three targets in turn, ROUNDS times: the report keeps each target's
# median round, so a slow moment of a shared machine hits all three alike.
for round in $(seq "$ROUNDS"); do
	measure ceiling "http://127.0.0.1:$SINK_PORT/import" "$round" ""
	measure nginx "http://127.0.0.1:$NGINX_PORT/import" "$round" "$NGINX_PID"
	measure bridge "http://127.0.0.1:$BRIDGE_PORT$BENCH_HOOK_PATH" "$round" "$BRIDGE_PID"
	bench_alive "$BRIDGE_PID" || bench_die "webhook-bridge exited during the run"
done
fact nginx.hwm_kb "$(bench_tree_kb "$NGINX_PID" VmHWM)"
fact bridge.hwm_kb "$(bench_status_kb "$BRIDGE_PID" VmHWM)"
fact bridge.rss_after_kb "$(bench_status_kb "$BRIDGE_PID" VmRSS)"
fact bridge.log_problems "$(grep -c '"level":"\(warn\|error\)"' "$BENCH_TMP/bridge.log" || true)"

# Memory under many connections: a fresh bridge, so its peak is this run's.
bench_stop "$BRIDGE_PID"
bench_bridge_start "$BENCH_TMP/bridge.conf" "$BENCH_TMP/bridge-mem.log"
fact mem.connections "$MEM_CONNS"
fact mem.duration "$MEM_DURATION"
fact mem.idle_rss_kb "$(bench_status_kb "$BRIDGE_PID" VmRSS)"
bench_log "memory: $MEM_CONNS connections for ${MEM_DURATION}s"
before=$(bench_sink_posts)
wrk_run mem "http://127.0.0.1:$BRIDGE_PORT$BENCH_HOOK_PATH" "$MEM_CONNS" "$MEM_DURATION" "$OUT/mem.wrk" &
wrk_pid=$!
peak=0
while kill -0 "$wrk_pid" 2>/dev/null; do
	r=$(bench_status_kb "$BRIDGE_PID" VmRSS)
	[ "$r" -le "$peak" ] || peak=$r
	sleep 0.5
done
wait "$wrk_pid"
sleep 0.5
fact mem.sink_posts "$(($(bench_sink_posts) - before))"
fact mem.rss_sampled_peak_kb "$peak"
fact mem.hwm_kb "$(bench_status_kb "$BRIDGE_PID" VmHWM)"
fact mem.rss_after_kb "$(bench_status_kb "$BRIDGE_PID" VmRSS)"
bench_stop "$BRIDGE_PID"
bench_stop "$NGINX_PID"
bench_stop "$SINK_PID"

# Mapping throughput: the bridge's mapper against the same mapping in jq.
NDJSON=$BENCH_TMP/v1.ndjson
bench_log "mapping: generating $NDJSON_COUNT payloads"
"$BENCH_PY" "$BENCH_ROOT/bench/gen_ndjson.py" --count "$NDJSON_COUNT" "$NDJSON"
fact map.count "$NDJSON_COUNT"
fact map.bytes "$(wc -c <"$NDJSON")"
MAPPING=$BENCH_ROOT/mappings/qualifio-v1-to-v2.conf
JQPROG=$BENCH_ROOT/bench/v1-to-v2.jq
head -n 2000 "$NDJSON" >"$BENCH_TMP/sample.ndjson"
"$BENCH_BRIDGE" map --mapping "$MAPPING" --ndjson "$BENCH_TMP/sample.ndjson" >"$BENCH_TMP/sample.bridge"
jq -c -f "$JQPROG" "$BENCH_TMP/sample.ndjson" >"$BENCH_TMP/sample.jq"
if cmp -s "$BENCH_TMP/sample.bridge" "$BENCH_TMP/sample.jq"; then
	fact map.same_output "yes (first 2000 payloads, byte for byte)"
else
	fact map.same_output "NO: the outputs differ on the first 2000 payloads"
fi
# One core each: jq is single-threaded, so the bridge maps with one thread too.
BRIDGE_MAP_CMD="$BENCH_BRIDGE map --mapping $MAPPING --ndjson --jobs 1 $NDJSON > /dev/null"
JQ_MAP_CMD="jq -c -f $JQPROG $NDJSON > /dev/null"
time_runs() { # NAME RUNS COMMAND: median seconds into facts
	local name=$1 runs=$2 cmd=$3 t0 t1
	bench_log "mapping: $name, $runs run(s)"
	if bench_have hyperfine; then
		timeout 3600 hyperfine --runs "$runs" --style none --export-json "$OUT/$name.hyperfine.json" \
			"$cmd" >/dev/null 2>&1 || bench_die "$name failed under hyperfine"
		fact "$name.median_s" "$("$BENCH_PY" -c 'import json,sys; print("%.3f" % json.load(open(sys.argv[1]))["results"][0]["median"])' "$OUT/$name.hyperfine.json")"
		fact "$name.timer" "hyperfine"
	else
		: >"$OUT/$name.times"
		for _ in $(seq "$runs"); do
			t0=$(date +%s.%N)
			timeout 3600 sh -c "$cmd" || bench_die "$name failed"
			t1=$(date +%s.%N)
			awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", b - a}' >>"$OUT/$name.times"
		done
		fact "$name.median_s" "$(sort -n "$OUT/$name.times" | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')"
		fact "$name.timer" "date"
	fi
	fact "$name.runs" "$runs"
}
time_runs map_bridge "$MAP_RUNS" "$BRIDGE_MAP_CMD"
# Peak RSS of one more run (ru_maxrss of the finished child, kB).
fact map_bridge.peak_rss_kb "$("$BENCH_PY" -c '
import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$BENCH_BRIDGE" map --mapping "$MAPPING" --ndjson "$NDJSON")"
time_runs map_jq "$JQ_RUNS" "$JQ_MAP_CMD"

# Instructions per payload under callgrind: a count that does not depend on
# what else the machine is doing, unlike the wall-clock times above.
callgrind_count() { # NAME COMMAND...: total instructions (Ir) into facts
	local name=$1 log=$OUT/$1.callgrind.log
	shift
	bench_log "instructions: $name under callgrind, $CALLGRIND_COUNT payloads"
	timeout 3600 valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.callgrind.out" \
		"$@" >/dev/null 2>"$log" || bench_die "$name failed under callgrind (see $log)"
	fact "$name.instructions" "$(awk '/Collected :/ {print $NF}' "$log" | tail -1)"
}
if [ "$CALLGRIND_COUNT" -gt 0 ]; then
	head -n "$CALLGRIND_COUNT" "$NDJSON" >"$BENCH_TMP/callgrind.ndjson"
	fact callgrind.count "$(wc -l <"$BENCH_TMP/callgrind.ndjson")"
	fact callgrind.version "$(valgrind --version)"
	callgrind_count ir_bridge "$BENCH_BRIDGE" map --mapping "$MAPPING" --ndjson --jobs 1 "$BENCH_TMP/callgrind.ndjson"
	callgrind_count ir_jq jq -c -f "$JQPROG" "$BENCH_TMP/callgrind.ndjson"
fi

fact load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
"$BENCH_PY" "$BENCH_ROOT/bench/report.py" "$OUT" >"$BENCH_TMP/section.md"
cat "$BENCH_TMP/section.md"
if [ "$record" = 1 ]; then
	{ echo; cat "$BENCH_TMP/section.md"; } >>"$RESULTS"
	bench_log "appended to $RESULTS"
fi
if grep -q 'INVALID' "$BENCH_TMP/section.md"; then
	bench_log "some figures are INVALID (see above)"
	exit 1
fi
