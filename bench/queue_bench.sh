#!/usr/bin/env bash
# Queued against forward delivery: acknowledged posts per second (a
# benchmark, not a test).
#
#   bench/queue_bench.sh [--quick]
#
# Starts the benchmark sink (bench/sink.c) and one webhook-bridge serve per
# mode, with the same route to the sink, and drives each with the same wrk
# load; every request carries a new participation id, so queued mode stores
# every post (no duplicate short cut):
#   forward  the answer waits for the endpoint (200 after the sink's 200)
#   queued   the answer waits for the store (202 after the fsync of the
#            SQLite WAL, synchronous=FULL); delivery runs behind it
# For queued mode it then waits until the queue is empty and checks with the
# sink that every acknowledged post was delivered.  Prints a Markdown table
# and the ratio queued / forward.
#
# Settings (environment):
#   BENCH_DURATION     seconds per measured run (20; --quick 8)
#   BENCH_WARMUP       seconds of unrecorded load before each (3; --quick 2)
#   BENCH_CONNECTIONS  wrk connections (64)
#   BENCH_WRK_THREADS  wrk threads (1)
#   BENCH_WORKERS      the bridge's worker threads (config `workers`; 0 = cores)
#   BENCH_LOG_LEVEL    the bridge's log_level (info)
#   BENCH_QUEUE_DIR    folder of the queue store (default: a temporary folder;
#                      point it at the disk the bridge will use)
#   BRIDGE_BIN         a webhook-bridge to measure instead of building one
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

quick=0
for a in "$@"; do
	case $a in
	--quick) quick=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "usage: bench/queue_bench.sh [--quick]" >&2
		exit 2
		;;
	esac
done
if [ "$quick" = 1 ]; then
	DURATION=${BENCH_DURATION:-8}
	WARMUP=${BENCH_WARMUP:-2}
else
	DURATION=${BENCH_DURATION:-20}
	WARMUP=${BENCH_WARMUP:-3}
fi
CONNECTIONS=${BENCH_CONNECTIONS:-64}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
WORKERS=${BENCH_WORKERS:-0}
LOG_LEVEL=${BENCH_LOG_LEVEL:-info}

bench_tmp_make
trap bench_cleanup EXIT
bench_tools_core
bench_raise_nofile
if [ -n "${BRIDGE_BIN:-}" ]; then
	BENCH_BRIDGE=$BRIDGE_BIN
else
	bench_log "building an optimised webhook-bridge in $BENCH_BUILD"
	bench_build
fi
QUEUE_DIR=${BENCH_QUEUE_DIR:-$BENCH_TMP}
mkdir -p "$QUEUE_DIR"
STORE=$QUEUE_DIR/queue-bench-$$.db
bench_sink_build
bench_sink_start 2

# wrk: the payload with a new participation id on every request.
cat >"$BENCH_TMP/unique.lua" <<'LUA'
local counter, nthreads = 0, 0
function setup(thread)
	nthreads = nthreads + 1
	thread:set("tid", nthreads)
end
function init(args)
	local f = assert(io.open(args[1], "rb"))
	template = f:read("*a")
	f:close()
	assert(template:find('"participation_id"%s*:%s*"[^"]*"'), "payload has no participation_id")
end
function request()
	counter = counter + 1
	local id = string.format("%08x-0000-4000-8000-%012x", tid, counter)
	local body = template:gsub('("participation_id"%s*:%s*")[^"]*(")', "%1" .. id .. "%2", 1)
	return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end
function done(summary, latency, requests)
	local e = summary.errors
	local secs = summary.duration / 1e6
	io.write(string.format(
		'BENCH {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_us":%d,"p99_us":%d,' ..
		'"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d}\n',
		summary.requests, secs, summary.requests / secs,
		latency:percentile(50), latency:percentile(99),
		e.status, e.connect, e.read, e.write, e.timeout))
end
LUA

write_config() { # FILE MODE(forward|queued)
	local delivery="" queue=""
	BRIDGE_PORT=$(bench_free_port)
	if [ "$2" = queued ]; then
		delivery='delivery = "queued";'
		queue="queue = { path = \"$STORE\"; backoff_base_ms = 100; backoff_max_ms = 2000; };"
	fi
	cat >"$1" <<CONF
# Written by bench/queue_bench.sh
listen = { address = "127.0.0.1"; port = $BRIDGE_PORT; path = "$BENCH_HOOK_PATH"; };
log_level = "$LOG_LEVEL";
workers = $WORKERS;
$queue
routes = (
  { name = "bench";
    mapping = "$BENCH_ROOT/mappings/qualifio-v1-to-v2.conf";
    endpoint = "http://127.0.0.1:$SINK_PORT/import";
    mode = "forward"; $delivery
    auth_header = { name = "Authorization"; value = "Bearer bench-token"; };
    secret = "bench-secret";
    timeout_ms = 10000; }
);
CONF
}

start_bridge() { # CONFIG LOG
	"$BENCH_BRIDGE" serve --config "$1" >"$2.stdout" 2>"$2" &
	BRIDGE_PID=$!
	BENCH_PIDS+=("$BRIDGE_PID")
	bench_wait_for 10 curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$BRIDGE_PORT/healthz" ||
		{ tail -5 "$2" >&2; bench_die "webhook-bridge serve did not start"; }
}

run_wrk() { # SECONDS OUT: prints the BENCH json
	timeout $(($1 + 60)) wrk -t "$WRK_THREADS" -c "$CONNECTIONS" -d "${1}s" --timeout 10s \
		--latency -s "$BENCH_TMP/unique.lua" "http://127.0.0.1:$BRIDGE_PORT$BENCH_HOOK_PATH" \
		-- "$(bench_payload)" >"$2" 2>&1 || bench_die "wrk failed: $(tail -3 "$2")"
	grep '^BENCH ' "$2" | sed 's/^BENCH //'
}

field() { "$BENCH_PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

calc() { "$BENCH_PY" -c "print($1)"; }

metric() { # NAME: its value on /metrics
	curl -s --max-time 5 "http://127.0.0.1:$BRIDGE_PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'
}

queue_empty() { [ "$(metric webhook_bridge_queue_depth)" = 0 ]; }

declare -A RESULT
for mode in forward queued; do
	write_config "$BENCH_TMP/$mode.conf" "$mode"
	if ! "$BENCH_BRIDGE" check --config "$BENCH_TMP/$mode.conf" >/dev/null \
		2>"$BENCH_TMP/check.err"; then
		bench_die "$mode config refused: $(head -3 "$BENCH_TMP/check.err")"
	fi
	posts_start=$(bench_sink_posts)
	start_bridge "$BENCH_TMP/$mode.conf" "$BENCH_TMP/$mode.log"
	bench_log "$mode: warm-up ${WARMUP}s, then ${DURATION}s, $CONNECTIONS connections"
	if [ "$WARMUP" -gt 0 ]; then
		run_wrk "$WARMUP" "$BENCH_TMP/$mode-warmup.out" >/dev/null
	fi
	RESULT[$mode]=$(run_wrk "$DURATION" "$BENCH_TMP/$mode.out")
	if [ "$mode" = queued ]; then
		DEPTH_AT_END=$(metric webhook_bridge_queue_depth)
		t0=$(date +%s.%N)
		bench_wait_for 600 queue_empty || bench_die "the queue did not drain"
		DRAIN=$(calc "'%.1f' % ($(date +%s.%N) - $t0)")
		ACKED=$(metric webhook_bridge_queue_enqueued_total)
		DELIVERED=$(($(bench_sink_posts) - posts_start))
		STORE_BYTES=$(cat "$STORE" "$STORE-wal" 2>/dev/null | wc -c)
	fi
	bench_stop "$BRIDGE_PID"
done

f=${RESULT[forward]}
q=${RESULT[queued]}
ratio=$(calc "'%.2f' % ($(field "$q" rps) / $(field "$f" rps))")
echo
echo "### Queued vs forward delivery ($(date -u +%Y-%m-%d), $(nproc) cores," \
	"wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s, workers $WORKERS, log_level $LOG_LEVEL)"
echo
echo "| mode | answered posts/s | p50 ms | p99 ms | non-2xx | socket errors |"
echo "|---|---:|---:|---:|---:|---:|"
for mode in forward queued; do
	r=${RESULT[$mode]}
	errors=$(($(field "$r" connect_errors) + $(field "$r" read_errors) + \
		$(field "$r" write_errors) + $(field "$r" timeouts)))
	echo "| $mode | $(field "$r" rps) | $(calc "'%.2f' % ($(field "$r" p50_us) / 1000)") |" \
		"$(calc "'%.2f' % ($(field "$r" p99_us) / 1000)") | $(field "$r" non2xx) | $errors |"
done
echo
echo "queued / forward = $ratio.  Queued mode: $ACKED posts stored and answered 202 (warm-up"
echo "included), $DELIVERED delivered to the sink; $DEPTH_AT_END were still queued when the load"
echo "stopped and the queue drained in $DRAIN s.  Store on" \
	"$(df -P "$QUEUE_DIR" | awk 'NR == 2 {print $1}') ($(stat -f -c %T "$QUEUE_DIR")):" \
	"$STORE_BYTES bytes (database + WAL) at the end."
rm -f "$STORE" "$STORE-wal" "$STORE-shm" "$STORE.lock"
[ "$DELIVERED" -ge "$ACKED" ] ||
	bench_die "only $DELIVERED of $ACKED acknowledged posts reached the sink"
