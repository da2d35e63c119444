#!/bin/sh
# The whole test suite: every test twice, in build/ (plain) and in
# build-asan/ (AddressSanitizer + UndefinedBehaviorSanitizer, leaks checked),
# then the unit tests and fuzz corpora a third time under valgrind (the
# integration tests' binary is covered by the sanitizer run), then the tests
# of the threaded code (suite tsan) in build-tsan/ (ThreadSanitizer,
# suppressions explained in tests/tsan.supp), then tests/summary.py: totals
# per build and one closing line "N passed, N failed" over every TAP check.
# Run tests/setup.sh first.
set -u
cd "$(dirname "$0")/.."

if [ ! -f build-asan/build.ninja ]; then
	meson setup build-asan -Db_sanitize=address,undefined -Dbuildtype=debug || exit 1
fi
if [ ! -f build-tsan/build.ninja ]; then
	meson setup build-tsan -Db_sanitize=thread -Dbuildtype=debug || exit 1
fi
meson compile -C build || exit 1
meson compile -C build-asan || exit 1
meson compile -C build-tsan || exit 1

export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0"

status=0
meson test -C build --print-errorlogs "$@" || status=1
meson test -C build-asan --print-errorlogs "$@" || status=1
if [ $# -eq 0 ]; then
	meson test -C build --setup valgrind --suite unit --suite fuzz --print-errorlogs || status=1
	valgrind_log=build/meson-logs/testlog-valgrind.json
	TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$(pwd)/tests/tsan.supp" \
		meson test -C build-tsan --suite tsan --print-errorlogs || status=1
	tsan_log=build-tsan/meson-logs/testlog.json
	all=--all
fi

/usr/bin/python3 tests/summary.py ${all:-} build/meson-logs/testlog.json build-asan/meson-logs/testlog.json \
	${valgrind_log:-} ${tsan_log:-} || status=1
exit $status
