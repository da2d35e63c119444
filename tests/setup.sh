#!/bin/sh
# Installs what is missing (Debian 12; run as root, or with sudo available),
# then builds.  Safe to run again: it only installs packages that are absent
# and only reconfigures when needed.
#   sh tests/setup.sh run   what running the bridge needs: the compiler, the
#                           libraries, build/webhook-bridge alone
#   sh tests/setup.sh       everything the test command needs, and all targets
set -eu
cd "$(dirname "$0")/.."

RUN_PKGS="gcc libc6-dev pkg-config meson ninja-build libevent-dev libyajl-dev libconfig-dev
libssl-dev libsqlite3-dev libpq-dev tzdata ca-certificates"
TEST_PKGS="curl openssl python3 python3-jsonschema valgrind clang-format git prometheus mandoc
systemd procps chromium chromium-driver postgresql"
case "${1:-test}" in
run) PKGS=$RUN_PKGS ;;
test) PKGS="$RUN_PKGS $TEST_PKGS" ;;
*) echo "usage: sh tests/setup.sh [run | test]" >&2; exit 2 ;;
esac

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
# libevent must carry Debian's security fixes (2.1.12-stable-8+deb12u1): pkg-config
# cannot tell, dpkg can.
if dpkg-query -W -f='${Version}' libevent-dev >/dev/null 2>&1 &&
	! dpkg --compare-versions "$(dpkg-query -W -f='${Version}' libevent-dev)" ge 2.1.12-stable-8+deb12u1; then
	missing="$missing libevent-dev libevent-2.1-7 libevent-core-2.1-7 libevent-openssl-2.1-7"
fi
if [ -n "$missing" ]; then
	echo "setup: installing:$missing"
	$SUDO apt-get update
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
fi
v=$(dpkg-query -W -f='${Version}' libevent-dev)
if ! dpkg --compare-versions "$v" ge 2.1.12-stable-8+deb12u1; then
	echo "setup: libevent-dev $v lacks Debian's security fixes (need 2.1.12-stable-8+deb12u1 or later)" >&2
	exit 1
fi

if [ ! -f build/build.ninja ]; then
	meson setup build
fi
if [ "${1:-test}" = run ]; then
	meson compile -C build webhook-bridge
else
	meson compile -C build
fi
