#!/bin/sh
# The whole test suite: every test twice, in build/ (plain) and in
# build-asan/ (AddressSanitizer + UndefinedBehaviorSanitizer, leaks checked),
# then the unit tests and fuzz corpora a third time under valgrind (the
# integration tests' binary is covered by the sanitizer run), then one
# closing line "N passed, N failed" over every TAP check run.
# Run tests/setup.sh first.
set -u
cd "$(dirname "$0")/.."

if [ ! -f build-asan/build.ninja ]; then
	meson setup build-asan -Db_sanitize=address,undefined -Dbuildtype=debug || exit 1
fi
meson compile -C build || exit 1
meson compile -C build-asan || exit 1

export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0"

status=0
meson test -C build --print-errorlogs "$@" || status=1
meson test -C build-asan --print-errorlogs "$@" || status=1
if [ $# -eq 0 ]; then
	meson test -C build --setup valgrind --suite unit --suite fuzz --print-errorlogs || status=1
	valgrind_log=build/meson-logs/testlog-valgrind.json
fi

/usr/bin/python3 tests/summary.py build/meson-logs/testlog.json build-asan/meson-logs/testlog.json \
	${valgrind_log:-} || status=1
exit $status
