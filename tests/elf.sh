#!/bin/sh
# tests/elf.sh BINARY fortify|nofortify
#
# Checks with readelf that BINARY carries the hardening meson.build asks for,
# one TAP line each: position independent (ELF type DYN), full RELRO (a
# GNU_RELRO segment and BIND_NOW, so the GOT is read-only once started), the
# stack protector (__stack_chk_fail imported) and, in builds that optimise,
# _FORTIFY_SOURCE (checked variants such as __snprintf_chk imported).
set -u
bin=$1
mode=${2:-fortify}
command -v readelf >/dev/null 2>&1 || { echo "1..1"; echo "not ok 1 - readelf is not installed (binutils)"; exit 1; }
[ -f "$bin" ] || { echo "1..1"; echo "not ok 1 - $bin does not exist"; exit 1; }

n=0
fails=0
check() {
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		fails=$((fails + 1))
	fi
}

header=$(readelf -h -W "$bin")
segments=$(readelf -l -W "$bin")
dynamic=$(readelf -d -W "$bin")
symbols=$(readelf --dyn-syms -W "$bin")

[ "$mode" = fortify ] && echo "1..5" || echo "1..4"
echo "$header" | grep -q 'Type:[[:space:]]*DYN' ; check $? "position independent executable (ELF type DYN)"
echo "$segments" | grep -q 'GNU_RELRO' ; check $? "GNU_RELRO segment"
echo "$dynamic" | grep -Eq '\(FLAGS\).*BIND_NOW|\(FLAGS_1\).*NOW' ; check $? "BIND_NOW (full RELRO, -z now)"
echo "$symbols" | grep -q '__stack_chk_fail' ; check $? "stack protector (__stack_chk_fail imported)"
if [ "$mode" = fortify ]; then
	echo "$symbols" | grep -Eq '__[a-z_]+_chk(@|[[:space:]]|$)' ; check $? "_FORTIFY_SOURCE (__*_chk functions imported)"
fi
[ "$fails" -eq 0 ]
