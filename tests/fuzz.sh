#!/bin/sh
# tests/fuzz.sh SECONDS [NAME...]
#
# Fuzzes the libFuzzer harnesses tests/fuzz_<NAME>.c (all of them when no NAME
# is given) for SECONDS seconds each, e.g.
#
#     sh tests/fuzz.sh 600               # every harness, ten minutes each
#     sh tests/fuzz.sh 60 v1_json convert
#
# Builds with clang -fsanitize=fuzzer,address,undefined into build-fuzz/
# (FUZZ_BUILD_DIR overrides it), installing clang and libclang-rt-14-dev with
# apt-get when they are missing.  Each harness starts from its seed corpus
# tests/corpus/<NAME>/ (plus fixtures/v1/ for the JSON harnesses) and from
# build-fuzz/corpus-<NAME>/, where libFuzzer keeps what it finds from one run
# to the next; the seed corpus itself is never written.
#
# Prints per harness: executions, final coverage (libFuzzer's cov: and ft:)
# and crashes: 0 or 1, since libFuzzer stops at the first crash, leak,
# timeout or OOM; then the sanitizer's summary and the saved input
# (build-fuzz/crashes/<NAME>-crash-<sha1>, leak-, timeout-, oom-).  The full
# output is in build-fuzz/fuzz_<NAME>.log.  To keep a crash in the normal test
# run, copy its input into tests/corpus/<NAME>/: meson test replays every file
# there.  Exits non-zero when any harness crashed or did not build.
set -u
cd "$(dirname "$0")/.."

usage() {
	echo "usage: $0 SECONDS [NAME...]   (names: $(ls tests/fuzz_*.c | sed -n 's|tests/fuzz_\(.*\)\.c|\1|p' | grep -v '^replay$' | tr '\n' ' '))" >&2
	exit 2
}
[ $# -ge 1 ] || usage
secs=$1
shift
case "$secs" in '' | *[!0-9]*) usage ;; esac
names="$*"
[ -n "$names" ] || names=$(ls tests/fuzz_*.c | sed -n 's|tests/fuzz_\(.*\)\.c|\1|p' | grep -v '^replay$')
for n in $names; do
	[ -f "tests/fuzz_$n.c" ] || { echo "fuzz: no tests/fuzz_$n.c" >&2; usage; }
done

missing=""
for p in clang libclang-rt-14-dev; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	echo "fuzz: installing:$missing"
	$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing ||
		exit 1
fi

out=${FUZZ_BUILD_DIR:-build-fuzz}
mkdir -p "$out/obj" "$out/crashes" || exit 1
# The libraries the root meson.build asks for, minus meson's own 'threads'.
pkgs=$(sed -n "s/.*dependency('\([A-Za-z0-9_.+-]*\)'.*/\1/p" meson.build | grep -vx threads | tr '\n' ' ')
CC=clang
CFLAGS="-std=gnu11 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined
-fno-sanitize-recover=undefined -D_GNU_SOURCE -DBRIDGE_VERSION=\"fuzz\" -Iinclude
$(pkg-config --cflags $pkgs)" || exit 1
LIBS="$(pkg-config --libs $pkgs) -lpthread" || exit 1

# The core (bridge/*.c, not the commands of bridge/cmd/), instrumented for
# coverage, as an archive so that each harness links only the modules it
# uses.  A module that does not compile is left out with a warning: only the
# harnesses that need it fail to link.
rm -f "$out/obj/"*.o "$out/libcore.a"
for src in bridge/*.c; do
	o="$out/obj/$(basename "$src" .c).o"
	$CC $CFLAGS -fsanitize=fuzzer-no-link -c "$src" -o "$o" ||
		echo "fuzz: warning: $src does not compile; left out" >&2
done
ar rcs "$out/libcore.a" "$out"/obj/*.o || exit 1

export BRIDGE_SOURCE_ROOT="$(pwd)"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:strict_string_checks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0"

status=0
summary=""
for n in $names; do
	exe="$out/fuzz_$n"
	case $exe in /*) ;; *) exe="./$exe" ;; esac
	log="$out/fuzz_$n.log"
	if ! $CC $CFLAGS -fsanitize=fuzzer "tests/fuzz_$n.c" "$out/libcore.a" $LIBS -o "$exe"; then
		summary="$summary
fuzz_$n: did not build"
		status=1
		continue
	fi
	corpus="tests/corpus/$n"
	case $n in v1_json | mapping) corpus="$corpus fixtures/v1" ;; esac
	mkdir -p "$out/corpus-$n"
	echo "fuzz: fuzz_$n for ${secs}s (log: $log)"
	"$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$out/crashes/$n-" "$out/corpus-$n" $corpus >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	cov=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1 | sed 's/.*\(cov: [0-9]* ft: [0-9]*\).*/\1/')
	crashes=0
	[ $rc -eq 0 ] || crashes=1
	summary="$summary
fuzz_$n: ${execs:-?} execs, ${cov:-no coverage line}, crashes: $crashes"
	if [ $rc -ne 0 ]; then
		status=1
		summary="$summary
$(grep -E '^(==[0-9]+== ?ERROR|fuzz_[a-z0-9_]+: |SUMMARY|.*runtime error|.*Test unit written to)' "$log" |
			head -n 5 | sed 's/^/    /')"
	fi
done
echo "$summary" | sed '/^$/d'
exit $status
