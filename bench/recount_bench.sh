#!/usr/bin/env bash
# A post's latency while `serve` counts its store again after another
# process's change (a `queue purge`), against a backlog of a million rows (a
# benchmark, not a test).
#
#   bench/recount_bench.sh [ROWS]
#
# Builds the optimised bridge, stores one post through a queued route whose
# endpoint refuses connections (the rows stay pending, ten minutes between
# attempts), adds ROWS (default 1,000,000) small copies of it with sqlite3,
# starts serve on the store, then three times: a `queue purge` of one row
# while 60 posts go one after the other, and prints the purge's time and the
# slowest of those posts beside three posts alone.  Everything listens on
# 127.0.0.1 only. Then BENCH_BULK_ROWS (200,000; 0: none) dead letters, and a
# `queue retry --all` of them beside posts (see the end of the script).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ROWS=${1:-1000000}
bench_tmp_make
trap bench_cleanup EXIT
bench_tools_core
bench_have sqlite3 || bench_apt sqlite3 || bench_die "install sqlite3"
if [ -n "${BRIDGE_BIN:-}" ]; then
	BENCH_BRIDGE=$BRIDGE_BIN
else
	bench_log "building an optimised webhook-bridge in $BENCH_BUILD"
	bench_build
fi
BRIDGE_PORT=$(bench_free_port)
ADMIN_PORT=$(bench_free_port)
REFUSED=$(bench_free_port)
CONF=$BENCH_TMP/recount.conf
cat >"$CONF" <<CONF
listen = { address = "127.0.0.1"; port = $BRIDGE_PORT; path = "/hook"; };
admin = { address = "127.0.0.1"; port = $ADMIN_PORT; };
log_level = "warn";
queue = { path = "$BENCH_TMP/recount.db"; backoff_base_ms = 600000; backoff_max_ms = 600000;
          max_attempts = 100; max_depth = 100000000; };
routes = (
  { name = "bench"; mapping = "$BENCH_ROOT/mappings/qualifio-v1-to-v2.conf";
    endpoint = "http://127.0.0.1:$REFUSED/import"; mode = "forward"; delivery = "queued";
    secret = "bench-secret"; timeout_ms = 10000; }
);
CONF
PAYLOAD=$(bench_payload)
N_POSTS=0
post() { # a new participation each time: a row stored, not a duplicate
	N_POSTS=$((N_POSTS + 1))
	sed "s/\"participation_id\": *\"[^\"]*\"/\"participation_id\": \"recount-$BASHPID-$N_POSTS\"/" "$PAYLOAD" |
		curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -H 'Content-Type: application/json' \
			--data-binary @- "http://127.0.0.1:$BRIDGE_PORT/hook"
}
depth() {
	curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '$1 == "webhook_bridge_queue_depth" { print $2 }'
}

# A new store of one real post and N copies of it with STATUS (0 pending, 1
# dead) and BODY (SQL), then serve on it.  The copies are due in an hour: the
# original's next attempt has a full jitter (it may be a second away), and a
# copy's checksum does not match a body of its own, so an attempted copy
# would become a dead letter.
store_with_copies() { # N STATUS BODY
	rm -f "$BENCH_TMP"/recount.db*
	bench_bridge_start "$CONF" "$BENCH_TMP/serve.log"
	[ "$(post | cut -d' ' -f1)" = 202 ] || bench_die "the first post was not queued"
	bench_stop "$BRIDGE_PID"
	bench_log "adding $1 rows of status $2 to the store"
	sqlite3 "$BENCH_TMP/recount.db" <<SQL
WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < $1)
INSERT INTO deliveries (status, route, endpoint, ca_file, timeout_ms, delivery_id,
    participation_id, state, headers, body, attempts, created_ms, since_ms, next_attempt_ms,
    checksum)
SELECT $2, route, endpoint, ca_file, timeout_ms, delivery_id || '-' || k,
    participation_id || '-' || k, state, headers, $3, attempts, created_ms, since_ms,
    created_ms + 3600000, checksum
FROM deliveries, n WHERE id = (SELECT MIN(id) FROM deliveries);
SQL
	bench_bridge_start "$CONF" "$BENCH_TMP/serve.log"
}

store_with_copies "$ROWS" 0 "x'7b7d'"
bench_log "serve started; queue depth $(depth)"
echo "### A post beside a recount of $ROWS rows ($(date -u +%Y-%m-%d), $(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "posts alone: $(for i in 1 2 3; do post | cut -d' ' -f2; done | tr '\n' ' ')s"
for k in 1 2 3; do
	(for j in $(seq 60); do post; done >"$BENCH_TMP/lat") &
	LOOP=$!
	sleep 0.05
	start=$(date +%s%N)
	"$BENCH_BRIDGE" queue --config "$CONF" purge $((k + 1)) >/dev/null
	took=$((($(date +%s%N) - start) / 1000000))
	wait "$LOOP"
	echo "purge $((k + 1)) in ${took} ms; slowest of 60 posts beside it: $(sort -k2 -n "$BENCH_TMP/lat" | tail -1 | cut -d' ' -f2) s (status $(cut -d' ' -f1 "$BENCH_TMP/lat" | sort -u | tr '\n' ' '))"
done
sleep 1
echo "queue depth at the end: $(depth) (want $((ROWS + 1 + 3 + 180 - 3))); in the store: $("$BENCH_BRIDGE" queue --config "$CONF" stats | awk '$1 == "webhook_bridge_queue_depth" { print $2 }')"

# A bulk command: BULK dead letters as large as the payload's v2 (copies of
# a real row), `queue retry --all` while posts go one after the other; the
# bridge's CPU by thread over the command.
BULK=${BENCH_BULK_ROWS:-200000}
[ "$BULK" -gt 0 ] || exit 0
bench_stop "$BRIDGE_PID"
store_with_copies "$BULK" 1 body
threads() { for t in /proc/"$BRIDGE_PID"/task/*; do echo "$(cat "$t/comm") $(awk '{ print $14 + $15 }' "$t/stat")"; done | sort; }
(end=$((SECONDS + ${BENCH_BULK_SECONDS:-25})); while [ "$SECONDS" -lt "$end" ]; do post; done >"$BENCH_TMP/lat") &
LOOP=$!
sleep 1
threads >"$BENCH_TMP/cpu0"
start=$(date +%s%N)
"$BENCH_BRIDGE" queue --config "$CONF" retry --all >/dev/null
took=$((($(date +%s%N) - start) / 1000000))
threads >"$BENCH_TMP/cpu1"
wait "$LOOP"
echo "retry --all of $BULK dead letters in ${took} ms; $(wc -l <"$BENCH_TMP/lat") posts beside it, slowest $(sort -k2 -n "$BENCH_TMP/lat" | tail -3 | cut -d' ' -f2 | tr '\n' ' ')s (status $(cut -d' ' -f1 "$BENCH_TMP/lat" | sort -u | tr '\n' ' '))"
echo "bridge CPU during the command: $(join "$BENCH_TMP/cpu0" "$BENCH_TMP/cpu1" | awk '$3 > $2 { printf "%s %.2f s, ", $1, ($3 - $2) / 100 }')"
