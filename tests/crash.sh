#!/bin/sh
# Crash soak of queued delivery (a longer run of the crash test in
# tests/test_queue.py; not part of tests/run.sh).
#
#   tests/crash.sh [SECONDS [KILLS]]      defaults: 75 s, 6 SIGKILLs
#   tests/crash.sh --shared [SECONDS [KILLS]]
#                                         defaults: 120 s, 12 SIGKILLs: the
#       multi-instance form (tests/test_shared.py): three bridges on one
#       PostgreSQL (a private cluster the run starts), clients spreading
#       INCOMPLETE-then-COMPLETE participations over them, a random bridge
#       SIGKILLed and restarted every few seconds, PostgreSQL restarted once
#       (immediate shutdown) mid-run, then a burst of 10 s at 100x the steady
#       rate (800 posts/s offered by build/tests/loadgen, an open-loop C
#       client; BRIDGE_LOADGEN names another); prints the same figures plus
#       out of order (must be 0).
#
# For SECONDS, three clients post v1 participations (some incomplete then
# complete, some posted twice) to `serve` with a route in delivery =
# "queued", while the endpoint alternates between up (200), failing (500)
# and down (connection refused), and the bridge is killed with SIGKILL KILLS
# times at random moments and restarted on the same store.  Then the
# endpoint stays up until the queue drains, and the run prints, in TAP:
#   acknowledged  participations that got a 202
#   delivered     of those, how many the endpoint accepted at least once
#                 (matched by delivery id)
#   duplicates    extra accepted deliveries of the same delivery id
#                 (at least once, not exactly once)
#   lost          acknowledged - delivered: must be 0
# and checks that no complete participation reached the endpoint before
# its incomplete one was accepted.  Exit 0 when every check passed.
#
# The binary is build/webhook-bridge (run tests/setup.sh first), or
# BRIDGE_BIN; the store lives in a temporary folder on the local disk.
set -eu
cd "$(dirname "$0")/.."
shared=0
if [ "${1:-}" = --shared ]; then
	shared=1
	shift
fi
if [ $shared = 1 ]; then
	seconds=${1:-120}
	kills=${2:-12}
else
	seconds=${1:-75}
	kills=${2:-6}
fi
case "$seconds$kills" in
*[!0-9]*) echo "usage: tests/crash.sh [--shared] [SECONDS [KILLS]]" >&2; exit 2 ;;
esac
if [ "$seconds" -lt 60 ] || [ "$kills" -lt 5 ]; then
	echo "crash.sh: note: the documented soak is at least 60 s and 5 kills" >&2
fi
BRIDGE_BIN=${BRIDGE_BIN:-$(pwd)/build/webhook-bridge}
if [ ! -x "$BRIDGE_BIN" ]; then
	echo "crash.sh: no $BRIDGE_BIN: run tests/setup.sh first (or set BRIDGE_BIN)" >&2
	exit 2
fi
BRIDGE_SOURCE_ROOT=$(pwd)
export BRIDGE_BIN BRIDGE_SOURCE_ROOT PYTHONDONTWRITEBYTECODE=1
if [ $shared = 1 ]; then
	exec /usr/bin/python3 tests/test_shared.py --soak "$seconds" "$kills" 1
fi
exec /usr/bin/python3 tests/test_queue.py --soak "$seconds" "$kills"
