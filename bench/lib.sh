# shellcheck shell=bash disable=SC2034
# Shared by the scripts in bench/ (sourced, bash). Everything runs
# on 127.0.0.1; every process started here is recorded and stopped by
# bench_cleanup, which the callers install as an EXIT trap.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_BUILD=${BENCH_BUILD_DIR:-$BENCH_ROOT/build-bench}
BENCH_BRIDGE=$BENCH_BUILD/webhook-bridge
BENCH_PY=/usr/bin/python3
BENCH_PIDS=()
BENCH_TMP=""
BENCH_HOOK_PATH=/qualifio/v1

# The script's header comment (line 2 up to `set -euo`), its --help.
bench_help() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

# The one argument of a script that takes a count: VAR is set to it (a
# whole number above 0) or to DEFAULT without one; -h/--help prints the
# header and exits 0, anything else the usage and exits 2.
bench_count_arg() { # VAR DEFAULT USAGE [ARG]
	case ${4:-} in
	-h | --help)
		bench_help
		exit 0
		;;
	esac
	local v=${4:-$2}
	case $v in
	'' | *[!0-9]* | 0)
		echo "usage: $3   (a positive whole number, default $2)" >&2
		exit 2
		;;
	esac
	printf -v "$1" '%s' "$v"
}

bench_log() { printf '%s\n' "bench: $*" >&2; }
bench_die() { bench_log "$*"; exit 1; }

bench_tmp_make() {
	BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/webhook-bridge-bench.XXXXXX")
}

# Stops what we started (TERM, then KILL after 5 s) and removes the temp dir.
bench_cleanup() {
	local pid i
	for pid in "${BENCH_PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${BENCH_PIDS[@]}"; do
		for i in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	BENCH_PIDS=()
	if [ -n "${BENCH_PG_STOP+x}" ]; then
		"${BENCH_PG_STOP[@]}" >/dev/null 2>&1 || true
		unset BENCH_PG_STOP
		[ -n "${BENCH_KEEP_TMP:-}" ] || rm -rf "$BENCH_PG_DIR"
	fi
	if [ -n "$BENCH_TMP" ] && [ -z "${BENCH_KEEP_TMP:-}" ]; then
		rm -rf "$BENCH_TMP"
	fi
}

bench_stop() { # PID: stop one process we started and forget it
	local pid=$1 i keep=()
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	for i in "${BENCH_PIDS[@]}"; do
		[ "$i" = "$pid" ] || keep+=("$i")
	done
	BENCH_PIDS=("${keep[@]}")
}

bench_have() { command -v "$1" >/dev/null 2>&1; }

bench_apt() { # PACKAGE...: install with apt-get (root only)
	if [ "$(id -u)" -ne 0 ]; then
		bench_log "missing: $*; install with: sudo apt-get install $*"
		return 1
	fi
	bench_log "installing: $*"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
		>"$BENCH_TMP/apt.log" 2>&1; then
		apt-get update -q >>"$BENCH_TMP/apt.log" 2>&1 || true
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
			>>"$BENCH_TMP/apt.log" 2>&1 || { tail -5 "$BENCH_TMP/apt.log" >&2; return 1; }
	fi
}

# Tools every bench script needs: a C compiler and libevent for the sink,
# meson for the bridge, wrk for load.
bench_tools_core() {
	bench_have cc && bench_have pkg-config || bench_apt gcc libc6-dev pkg-config || exit 1
	pkg-config --exists libevent libevent_pthreads || bench_apt libevent-dev || exit 1
	bench_have meson && bench_have ninja || bench_apt meson ninja-build || exit 1
	bench_have wrk || bench_apt wrk || exit 1
	bench_have curl || bench_apt curl || exit 1
	bench_have ps || bench_apt procps || exit 1
	[ -x "$BENCH_PY" ] || bench_apt python3 || exit 1
}

bench_nginx_bin() {
	if bench_have nginx; then
		command -v nginx
	elif [ -x /usr/sbin/nginx ]; then
		echo /usr/sbin/nginx
	fi
}

bench_tools_nginx() {
	[ -n "$(bench_nginx_bin)" ] || bench_apt nginx-light || bench_apt nginx || exit 1
}

# An optimised bridge in $BENCH_BUILD (release: -O3, no assertions).
bench_build() {
	if [ ! -f "$BENCH_BUILD/build.ninja" ]; then
		meson setup "$BENCH_BUILD" "$BENCH_ROOT" -Dbuildtype=release >"$BENCH_TMP/meson.log" 2>&1 ||
			{ tail -20 "$BENCH_TMP/meson.log" >&2; bench_die "meson setup failed"; }
	elif ! meson introspect --buildoptions "$BENCH_BUILD" 2>/dev/null | "$BENCH_PY" -c '
import json, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
sys.exit(0 if o.get("buildtype") == "release" else 1)'; then
		meson configure "$BENCH_BUILD" -Dbuildtype=release >"$BENCH_TMP/meson.log" 2>&1 ||
			bench_die "meson configure failed"
	fi
	meson compile -C "$BENCH_BUILD" webhook-bridge >"$BENCH_TMP/compile.log" 2>&1 ||
		{ tail -30 "$BENCH_TMP/compile.log" >&2; bench_die "building webhook-bridge failed"; }
}

bench_sink_build() {
	# shellcheck disable=SC2046
	cc -std=gnu11 -O2 -Wall -Wextra -Wno-unused-parameter -o "$BENCH_TMP/sink" \
		"$BENCH_ROOT/bench/sink.c" $(pkg-config --cflags --libs libevent libevent_pthreads) -lpthread ||
		bench_die "building bench/sink.c failed"
}

bench_wait_for() { # SECONDS COMMAND...: poll until COMMAND succeeds
	local n=$(($1 * 10))
	shift
	while [ "$n" -gt 0 ]; do
		"$@" && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

bench_alive() { kill -0 "$1" 2>/dev/null; }

# Sets SINK_PID and SINK_PORT.
bench_sink_start() { # THREADS
	: >"$BENCH_TMP/sink.out"
	"$BENCH_TMP/sink" --threads "$1" >"$BENCH_TMP/sink.out" 2>"$BENCH_TMP/sink.err" &
	SINK_PID=$!
	BENCH_PIDS+=("$SINK_PID")
	bench_wait_for 10 grep -q '^port ' "$BENCH_TMP/sink.out" || bench_die "sink did not start: $(cat "$BENCH_TMP/sink.err")"
	SINK_PORT=$(awk '/^port /{print $2}' "$BENCH_TMP/sink.out")
}

bench_sink_posts() {
	curl -s --max-time 5 "http://127.0.0.1:$SINK_PORT/stats" | "$BENCH_PY" -c 'import json,sys; print(json.load(sys.stdin)["posts"])'
}

# Sets BRIDGE_PORT (a free port: the "listening" log line, which gives the
# port of `port = 0`, is not written below log_level info).
bench_bridge_config() { # FILE LOG_LEVEL WORKERS: a forward route to the sink
	BRIDGE_PORT=$(bench_free_port)
	cat >"$1" <<EOF
# Written by bench/: one forward route to the benchmark sink.
listen = { address = "127.0.0.1"; port = $BRIDGE_PORT; path = "$BENCH_HOOK_PATH"; };
log_level = "$2";
workers = $3;
routes = (
  { name = "bench";
    mapping = "$BENCH_ROOT/mappings/qualifio-v1-to-v2.conf";
    endpoint = "http://127.0.0.1:$SINK_PORT/import";
    mode = "forward";
    auth_header = { name = "Authorization"; value = "Bearer bench-token"; };
    secret = "bench-secret";
    timeout_ms = 10000; }
);
EOF
}

# Sets BRIDGE_PID; ready once GET /healthz answers.
bench_bridge_start() { # CONFIG LOG
	local conf=$1 log=$2
	"$BENCH_BRIDGE" serve --config "$conf" >"$log.stdout" 2>"$log" &
	BRIDGE_PID=$!
	BENCH_PIDS+=("$BRIDGE_PID")
	bench_wait_for 10 curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$BRIDGE_PORT/healthz" ||
		{ tail -5 "$log" >&2; bench_die "webhook-bridge serve did not start"; }
}

bench_free_port() {
	"$BENCH_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# nginx as the current user, everything under $BENCH_TMP/nginx; no system file
# is read or written. Sets NGINX_PID (master) and NGINX_PORT.
bench_nginx_start() { # WORKERS KEEPALIVE
	local dir=$BENCH_TMP/nginx user_line=""
	mkdir -p "$dir/tmp"
	NGINX_PORT=$(bench_free_port)
	# Only a root master switches its workers' user; keep them as ourselves.
	[ "$(id -u)" -ne 0 ] || user_line="user $(id -un) $(id -gn);"
	# An access line per request, as the bridge writes one per post at
	# log_level info (BENCH_LOG_LEVEL), buffered as the bridge's writer
	# thread batches its lines; BENCH_NGINX_ACCESS_LOG=off for none.
	local access_log="access_log $dir/access.log combined buffer=64k flush=1s;"
	[ "${BENCH_NGINX_ACCESS_LOG:-on}" != off ] || access_log="access_log off;"
	cat >"$dir/nginx.conf" <<EOF
$user_line
worker_processes $1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  $access_log
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  upstream sink {
    server 127.0.0.1:$SINK_PORT;
    keepalive $2;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://sink;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
	"$(bench_nginx_bin)" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;' \
		>"$dir/stdout" 2>&1 &
	NGINX_PID=$!
	BENCH_PIDS+=("$NGINX_PID")
	bench_wait_for 10 curl -s -o /dev/null --max-time 1 -X POST -d '{}' "http://127.0.0.1:$NGINX_PORT/" ||
		{ cat "$dir/stdout" "$dir/error.log" >&2; bench_die "nginx did not start"; }
}

# CPU time (user + system, clock ticks) of processes and their direct children.
bench_cpu_ticks() { # PID...
	local total=0 pid t
	for pid in "$@" $(for p in "$@"; do bench_children "$p"; done); do
		t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null)
		total=$((total + ${t:-0}))
	done
	echo "$total"
}

bench_children() { ps -o pid= --ppid "$1" | tr -d ' '; }

bench_status_kb() { # PID FIELD (VmRSS, VmHWM): kB, 0 when gone
	local kb
	kb=$(awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null)
	echo "${kb:-0}"
}

# Peak RSS of a process tree (master + direct children), kB.
bench_tree_kb() { # PID FIELD
	local total pid
	total=$(bench_status_kb "$1" "$2")
	for pid in $(bench_children "$1"); do
		total=$((total + $(bench_status_kb "$pid" "$2")))
	done
	echo "$total"
}

# The representative v1 post (BENCH_PAYLOAD overrides).
bench_payload() { echo "${BENCH_PAYLOAD:-$BENCH_ROOT/fixtures/v1/representative.json}"; }

bench_raise_nofile() { ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; }

# A private PostgreSQL cluster in DIR (initdb, Unix socket in DIR, no TCP,
# fsync on; as root the server runs as Debian's `postgres` user, which gets
# DIR: its parent must let it through); stopped and removed by
# bench_cleanup.  Sets BENCH_PG_DIR.
bench_pg_start() { # DIR
	local dir=$1 bin as=()
	bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
	[ -x "$bin/initdb" ] || bench_die "no PostgreSQL server: apt-get install postgresql"
	mkdir -p "$dir"
	if [ "$(id -u)" -eq 0 ]; then
		chown postgres: "$dir"
		as=(runuser -u postgres --)
	fi
	"${as[@]}" "$bin/initdb" -D "$dir/data" -U bench -A trust -E UTF8 --locale=C \
		--no-instructions >"$BENCH_TMP/initdb.log" 2>&1 || bench_die "initdb failed: $(tail -3 "$BENCH_TMP/initdb.log")"
	printf "listen_addresses = ''\nunix_socket_directories = '%s'\nfsync = on\nmax_connections = 200\n" \
		"$dir" | "${as[@]}" tee -a "$dir/data/postgresql.conf" >/dev/null
	"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null ||
		bench_die "PostgreSQL did not start: $(tail -3 "$dir/server.log")"
	BENCH_PG_DIR=$dir
	BENCH_PG_STOP=("${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop)
}

bench_pg_database() { # NAME
	psql -X -q -h "$BENCH_PG_DIR" -U bench -d postgres -c "CREATE DATABASE $1" >/dev/null ||
		bench_die "cannot create database $1"
}

bench_pg_version() { psql -X -A -t -h "$BENCH_PG_DIR" -U bench -d postgres -c 'SHOW server_version'; }
