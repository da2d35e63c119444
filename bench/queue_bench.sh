#!/usr/bin/env bash
# Queued against forward delivery, on SQLite and on PostgreSQL with one and
# three bridges: acknowledged posts per second, p99 and the time to drain (a
# benchmark, not a test).
#
#   bench/queue_bench.sh [--quick]
#
# Starts the benchmark sink (bench/sink.c), a private PostgreSQL cluster
# (initdb in the temporary folder, Unix socket, fsync on; as root it runs as
# the `postgres` user) and, one mode after the other, webhook-bridge serve
# with the same route to the sink, driven by the same wrk load; every
# request carries a new participation id, so queued modes store every post
# (no duplicate short cut):
#   forward      the answer waits for the endpoint (200 after the sink's 200)
#   queued-sqlite  the answer waits for the store (202 after the fsync of the
#                SQLite WAL, synchronous=FULL); delivery runs behind it
#   queued-pg-1  the same on PostgreSQL (202 after COMMIT), one bridge
#   queued-pg-3  three bridges on one database, each driven by its own wrk
#                with a third of the connections (posts/s summed, p99 the
#                worst of the three)
# For queued modes it then waits until the queue is empty and checks with
# the sink that every acknowledged post was delivered.  Prints a Markdown
# table, and the first bridge's CPU by thread (worker-N, queue-writer,
# queue-deliver, store-ckpt, log-writer) over the measured run; for SQLite,
# the bytes the first bridge wrote to storage per acknowledged post.
#
# Settings (environment):
#   BENCH_DURATION     seconds per measured run (20; --quick 8)
#   BENCH_WARMUP       seconds of unrecorded load before each (3; --quick 2)
#   BENCH_CONNECTIONS  wrk connections (64)
#   BENCH_WRK_THREADS  wrk threads (1)
#   BENCH_WORKERS      the bridge's worker threads (config `workers`; 0 = cores)
#   BENCH_LOG_LEVEL    the bridge's log_level (info)
#   BENCH_MODES        the modes to run, a comma list (default: all four,
#                      forward,queued-sqlite,queued-pg-1,queued-pg-3); without a
#                      PostgreSQL mode no cluster is started
#   BENCH_QUEUE_DIR    folder of the SQLite store and of the PostgreSQL cluster
#                      (default: a temporary folder; point it at the disk the
#                      bridge will use)
#   BENCH_SECURE_DELETE the SQLite store's queue.secure_delete (fast)
#   BENCH_CONCURRENCY  the queue's per_endpoint_concurrency (4, its default)
#   BENCH_DELIVERY_NICE the queue's delivery_nice (unset: the bridge's default)
#   BENCH_ROUNDS       rounds (1): with more, the modes run in turn that many
#                      times (each queued run on a new store or database), the
#                      table shows each mode's median round by posts/s, and a
#                      second table gives every round's posts/s and each queued
#                      mode's ratio to forward in the same round, with their
#                      median: one pair of runs is as noisy as the ratio's
#                      distance from its target
#   BRIDGE_BIN         a webhook-bridge to measure instead of building one
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

quick=0
for a in "$@"; do
	case $a in
	--quick) quick=1 ;;
	-h | --help)
		bench_help
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
CONCURRENCY=${BENCH_CONCURRENCY:-4}
ROUNDS=${BENCH_ROUNDS:-1}
case $ROUNDS in '' | *[!0-9]* | 0) echo "BENCH_ROUNDS: a whole number above 0" >&2; exit 2 ;; esac
ALL_MODES=(forward queued-sqlite queued-pg-1 queued-pg-3)
MODES=()
IFS=, read -r -a wanted <<<"${BENCH_MODES:-$(IFS=,; echo "${ALL_MODES[*]}")}"
for m in "${ALL_MODES[@]}"; do # in the table's order, whatever the list's
	for w in "${wanted[@]}"; do [ "$w" = "$m" ] && MODES+=("$m") && break; done
done
for w in "${wanted[@]}"; do
	case " ${ALL_MODES[*]} " in
	*" $w "*) ;;
	*) echo "BENCH_MODES: unknown mode '$w' (modes: ${ALL_MODES[*]})" >&2; exit 2 ;;
	esac
done
[ "${#MODES[@]}" -gt 0 ] || { echo "BENCH_MODES: no mode" >&2; exit 2; }
WANT_PG=0
case " ${MODES[*]} " in *" queued-pg-"*) WANT_PG=1 ;; esac

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
if [ "$WANT_PG" = 1 ]; then
	# not under $BENCH_TMP (mode 0700): as root the server runs as `postgres`
	PG_DIR=$(mktemp -d "${BENCH_QUEUE_DIR:-${TMPDIR:-/tmp}}/webhook-bridge-pg.XXXXXX")
	bench_pg_start "$PG_DIR"
fi

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

write_config() { # FILE MODE(forward|sqlite|pg) [DATABASE INSTANCE]
	local delivery="" queue="" shared=""
	BRIDGE_PORT=$(bench_free_port)
	ADMIN_PORT=$(bench_free_port)
	case $2 in
	sqlite)
		delivery='delivery = "queued";'
		queue="queue = { path = \"$STORE\"; backoff_base_ms = 100; backoff_max_ms = 2000;"
		queue+=" per_endpoint_concurrency = $CONCURRENCY;"
		queue+=" secure_delete = \"${BENCH_SECURE_DELETE:-fast}\";"
		queue+="${BENCH_DELIVERY_NICE:+ delivery_nice = $BENCH_DELIVERY_NICE;} };"
		;;
	pg)
		delivery='delivery = "queued";'
		queue="queue = { backoff_base_ms = 100; backoff_max_ms = 2000;"
		queue+=" per_endpoint_concurrency = $CONCURRENCY;"
		queue+="${BENCH_DELIVERY_NICE:+ delivery_nice = $BENCH_DELIVERY_NICE;} };"
		shared="shared = { url = \"postgresql://bench@/$3?host=$PG_DIR\"; instance = \"$4\"; };"
		;;
	esac
	cat >"$1" <<CONF
# Written by bench/queue_bench.sh
listen = { address = "127.0.0.1"; port = $BRIDGE_PORT; path = "$BENCH_HOOK_PATH"; };
admin = { address = "127.0.0.1"; port = $ADMIN_PORT; };
log_level = "$LOG_LEVEL";
workers = $WORKERS;
$queue
$shared
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

run_wrk() { # SECONDS OUT PORT CONNECTIONS: prints the BENCH json
	timeout $(($1 + 60)) wrk -t "$WRK_THREADS" -c "$4" -d "${1}s" --timeout 10s \
		--latency -s "$BENCH_TMP/unique.lua" "http://127.0.0.1:$3$BENCH_HOOK_PATH" \
		-- "$(bench_payload)" >"$2" 2>&1 || bench_die "wrk failed: $(tail -3 "$2")"
	grep '^BENCH ' "$2" | sed 's/^BENCH //'
}

field() { "$BENCH_PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

calc() { "$BENCH_PY" -c "print($1)"; }

metric() { # ADMIN_PORT NAME: its value on /metrics
	curl -s --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'
}

queue_empty() { [ "$(metric "$1" webhook_bridge_queue_depth)" = 0 ]; }

thread_ticks() { # PID: "name ticks" per thread (user + system clock ticks)
	local t
	for t in /proc/"$1"/task/*; do
		printf '%s %s\n' "$(cat "$t/comm" 2>/dev/null)" \
			"$(awk '{print $14 + $15}' "$t/stat" 2>/dev/null)"
	done
}

# The first bridge's threads over the measured window, in cores (one core = 1):
# "worker-0 0.25, worker-1 0.24, queue-writer 0.34, ..." (workers summed by name).
thread_cores() { # BEFORE AFTER SECONDS
	"$BENCH_PY" - "$1" "$2" "$3" "$(getconf CLK_TCK)" <<'PY'
import sys
def load(path):
    out = {}
    for line in open(path):
        name, _, ticks = line.rstrip("\n").rpartition(" ")
        if ticks.isdigit():
            out[name] = out.get(name, 0) + int(ticks)
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
secs, hz = float(sys.argv[3]), float(sys.argv[4])
parts = ["%s %.2f" % (k, (b[k] - a.get(k, 0)) / hz / secs) for k in sorted(b)]
print(", ".join(p for p in parts if not p.endswith(" 0.00")))
PY
}

# One measured run of MODE over N bridges: RESULT[MODE] = the summed BENCH
# json, DRAIN[MODE], ACKED[MODE], DELIVERED[MODE].
declare -A RESULT DRAIN ACKED DELIVERED THREADS WRITTEN LOADRATE DRAINRATE
measure() { # MODE KIND(forward|sqlite|pg) N ROUND
	local mode=$1 kind=$2 n=$3 i pids=() ports=() admins=() conns outs=() posts_start wpids
	local posts_measured posts_loaded key="${1}_r$4" db="${1//-/_}_r$4"
	conns=$((CONNECTIONS / n))
	[ "$kind" = pg ] && bench_pg_database "$db"
	[ "$kind" = sqlite ] && rm -f "$STORE" "$STORE-wal" "$STORE-shm" "$STORE.lock"
	posts_start=$(bench_sink_posts)
	for i in $(seq "$n"); do
		write_config "$BENCH_TMP/$mode-$i.conf" "$kind" "$db" "b$i"
		"$BENCH_BRIDGE" check --config "$BENCH_TMP/$mode-$i.conf" >/dev/null \
			2>"$BENCH_TMP/check.err" ||
			bench_die "$mode config refused: $(head -3 "$BENCH_TMP/check.err")"
		start_bridge "$BENCH_TMP/$mode-$i.conf" "$BENCH_TMP/$mode-$i.log"
		pids+=("$BRIDGE_PID")
		ports+=("$BRIDGE_PORT")
		admins+=("$ADMIN_PORT")
	done
	bench_log "$mode (round $4 of $ROUNDS): $n bridge(s), warm-up ${WARMUP}s, then ${DURATION}s, $CONNECTIONS connections"
	if [ "$WARMUP" -gt 0 ]; then
		wpids=()
		for i in $(seq 0 $((n - 1))); do
			run_wrk "$WARMUP" "$BENCH_TMP/$mode-warmup-$i.out" "${ports[$i]}" "$conns" >/dev/null &
			wpids+=($!)
		done
		wait "${wpids[@]}" # the load only: the bridges and the sink run on
	fi
	wpids=()
	posts_measured=$(bench_sink_posts)
	thread_ticks "${pids[0]}" >"$BENCH_TMP/$mode.threads0"
	for i in $(seq 0 $((n - 1))); do
		run_wrk "$DURATION" "$BENCH_TMP/$mode-$i.out" "${ports[$i]}" "$conns" \
			>"$BENCH_TMP/$mode-$i.json" &
		wpids+=($!)
	done
	wait "${wpids[@]}"
	posts_loaded=$(bench_sink_posts)
	thread_ticks "${pids[0]}" >"$BENCH_TMP/$mode.threads1"
	THREADS[$key]=$(thread_cores "$BENCH_TMP/$mode.threads0" "$BENCH_TMP/$mode.threads1" "$DURATION")
	for i in $(seq 0 $((n - 1))); do outs+=("$(cat "$BENCH_TMP/$mode-$i.json")"); done
	RESULT[$key]=$("$BENCH_PY" -c '
import json, sys
rs = [json.loads(a) for a in sys.argv[1:]]
out = {k: sum(r[k] for r in rs) for k in rs[0]}
out["seconds"] = max(r["seconds"] for r in rs)
out["rps"] = round(sum(r["rps"] for r in rs), 1)
out["p50_us"] = max(r["p50_us"] for r in rs)
out["p99_us"] = max(r["p99_us"] for r in rs)
print(json.dumps(out))' "${outs[@]}")
	if [ "$kind" != forward ]; then
		local t0
		t0=$(date +%s.%N)
		bench_wait_for 600 queue_empty "${admins[0]}" || bench_die "$mode: the queue did not drain"
		DRAIN[$key]=$(calc "'%.1f' % ($(date +%s.%N) - $t0)")
		LOADRATE[$key]=$(calc "'%.0f' % (($posts_loaded - $posts_measured) / $DURATION)")
		ACKED[$key]=0
		for i in $(seq 0 $((n - 1))); do
			ACKED[$key]=$((ACKED[$key] + $(metric "${admins[$i]}" webhook_bridge_queue_enqueued_total)))
		done
		DELIVERED[$key]=$(($(bench_sink_posts) - posts_start))
		DRAINRATE[$key]=$(calc "'%.0f' % (($(bench_sink_posts) - $posts_loaded) / \
			max(0.1, ${DRAIN[$key]}))")
		# the store's writes: every post taken was inserted, delivered and
		# deleted by now (the sockets' bytes are not in write_bytes)
		WRITTEN[$key]=$(awk '$1 == "write_bytes:" {print $2}' "/proc/${pids[0]}/io")
		WRITTEN[$key]=$(calc "'%.0f' % (${WRITTEN[$key]} / \
			max(1, $(metric "${admins[0]}" webhook_bridge_queue_enqueued_total)))")
	fi
	for i in "${pids[@]}"; do bench_stop "$i"; done
	if [ "$kind" != forward ] && [ "${DELIVERED[$key]}" -lt "${ACKED[$key]}" ]; then
		bench_die "$mode: only ${DELIVERED[$key]} of ${ACKED[$key]} acknowledged posts reached the sink"
	fi
}

for round in $(seq "$ROUNDS"); do
	for mode in "${MODES[@]}"; do
		case $mode in
		forward) measure forward forward 1 "$round" ;;
		queued-sqlite) measure queued-sqlite sqlite 1 "$round" ;;
		queued-pg-1) measure queued-pg-1 pg 1 "$round" ;;
		queued-pg-3) measure queued-pg-3 pg 3 "$round" ;;
		esac
	done
done
rm -f "$STORE" "$STORE-wal" "$STORE-shm" "$STORE.lock"

rps_of() { field "${RESULT[$1]}" rps; } # KEY

# Each mode's median round (the lower of the middle two for an even count)
# becomes its row of the main table.
for mode in "${MODES[@]}"; do
	med=$(for r in $(seq "$ROUNDS"); do echo "$(rps_of "${mode}_r$r") $r"; done |
		sort -g | sed -n "$(((ROUNDS + 1) / 2))p" | cut -d' ' -f2)
	for arr in RESULT DRAIN ACKED DELIVERED THREADS WRITTEN LOADRATE DRAINRATE; do
		declare -n ref=$arr
		# shellcheck disable=SC2004 # ref names an associative array: the key is text
		if [ -n "${ref[${mode}_r$med]+set}" ]; then ref[$mode]=${ref[${mode}_r$med]}; fi
		unset -n ref
	done
done

echo
title="forward, SQLite, PostgreSQL with 1 and 3 bridges"
if [ "${#MODES[@]}" != "${#ALL_MODES[@]}" ]; then
	title=$(IFS=,; echo "${MODES[*]}")
	title=${title//,/, }
fi
echo "### Queued delivery: $title ($(date -u +%Y-%m-%d)," \
	"$(nproc) cores, wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s, workers $WORKERS," \
	"log_level $LOG_LEVEL$([ "$WANT_PG" = 0 ] || echo ", PostgreSQL $(bench_pg_version)"))"
echo
echo "| mode | bridges | acknowledged posts/s | p50 ms | p99 ms | non-2xx | socket errors | drain s | acknowledged | delivered |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for mode in "${MODES[@]}"; do
	r=${RESULT[$mode]}
	errors=$(($(field "$r" connect_errors) + $(field "$r" read_errors) + \
		$(field "$r" write_errors) + $(field "$r" timeouts)))
	echo "| $mode | $([ "$mode" = queued-pg-3 ] && echo 3 || echo 1) | $(field "$r" rps) |" \
		"$(calc "'%.2f' % ($(field "$r" p50_us) / 1000)") |" \
		"$(calc "'%.2f' % ($(field "$r" p99_us) / 1000)") | $(field "$r" non2xx) | $errors |" \
		"${DRAIN[$mode]:--} | ${ACKED[$mode]:--} | ${DELIVERED[$mode]:--} |"
done
echo
echo "Acknowledged counts the warm-up too; delivered is what the sink received (every"
echo "acknowledged post reached it, or the run fails).  The drain is the time from the end of"
echo "the load to an empty queue.  Three bridges: posts/s summed, p50/p99 the worst bridge's."
echo
echo "CPU of the (first) bridge's threads over the measured run, in cores (1 = one core busy):"
echo
for mode in "${MODES[@]}"; do
	echo "- $mode: ${THREADS[$mode]}"
done
if [ "${#LOADRATE[@]}" -gt 0 ]; then
	echo
	echo "Deliveries per second (per_endpoint_concurrency $CONCURRENCY), posts the sink got: during"
	echo "the measured run, beside the posts taken, and during the drain:"
	echo
	for mode in "${MODES[@]}"; do
		[ -n "${LOADRATE[$mode]:-}" ] || continue
		echo "- $mode: ${LOADRATE[$mode]}/s under load, ${DRAINRATE[$mode]}/s in the drain"
	done
fi
if [ -n "${WRITTEN[queued-sqlite]:-}" ]; then
	echo
	echo "Bytes the (first) bridge wrote to storage per acknowledged post, from its start to the"
	echo "drained queue (/proc/PID/io write_bytes: the store's file, its WAL and the logs):"
	echo
	echo "- queued-sqlite: ${WRITTEN[queued-sqlite]}"
fi
if [ "$ROUNDS" -gt 1 ]; then
	echo
	echo "Rounds (the modes in turn, in this order, each round; the table above shows each mode's"
	echo "median round by posts/s):"
	echo
	head="| round |"
	rule="|---:|"
	for mode in "${MODES[@]}"; do head+=" $mode posts/s |"; rule+="---:|"; done
	has_fwd=0
	case " ${MODES[*]} " in *" forward "*) has_fwd=1 ;; esac
	if [ "$has_fwd" = 1 ]; then
		for mode in "${MODES[@]}"; do
			[ "$mode" = forward ] && continue
			head+=" $mode / forward |"
			rule+="---:|"
		done
	fi
	echo "$head"
	echo "$rule"
	declare -A RATIOS
	for r in $(seq "$ROUNDS"); do
		row="| $r |"
		for mode in "${MODES[@]}"; do row+=" $(rps_of "${mode}_r$r") |"; done
		if [ "$has_fwd" = 1 ]; then
			for mode in "${MODES[@]}"; do
				[ "$mode" = forward ] && continue
				ratio=$(calc "'%.2f' % ($(rps_of "${mode}_r$r") / $(rps_of "forward_r$r"))")
				RATIOS[$mode]+="$ratio "
				row+=" ${ratio}× |"
			done
		fi
		echo "$row"
	done
	echo
	echo "Each round's threads (in cores) and, for queued modes, the deliveries under load:"
	echo
	for r in $(seq "$ROUNDS"); do
		for mode in "${MODES[@]}"; do
			line="- round $r, $mode: ${THREADS[${mode}_r$r]}"
			[ -z "${LOADRATE[${mode}_r$r]:-}" ] || line+="; ${LOADRATE[${mode}_r$r]} deliveries/s"
			echo "$line"
		done
	done
	if [ "$has_fwd" = 1 ]; then
		echo
		for mode in "${MODES[@]}"; do
			[ "$mode" = forward ] && continue
			# shellcheck disable=SC2086 # the ratios are one word each
			echo "- $mode / forward over $ROUNDS rounds: $("$BENCH_PY" -c '
import statistics, sys
v = sorted(float(a) for a in sys.argv[1:])
print("median **%.2f×** (lowest %.2f×, highest %.2f×)" % (statistics.median(v), v[0], v[-1]))
' ${RATIOS[$mode]})"
		done
	fi
fi
