#!/bin/sh
# tests/mutate.sh [--quick] [NAME...]
#
# Mutation check of the test suite (not part of tests/run.sh): plants small
# bugs one at a time in a scratch copy of the tree, runs the test suite there
# (the plain build: `meson test`, without the lint tests, which flag any edit
# and need a git index), and reports for each bug whether the suite
# caught it (some test failed) or missed it (everything still passed).  A bug
# whose text is no longer in the source is reported "not planted": update its
# line below.  Exits 1 when a bug was missed or could not be planted.
#
# --quick runs, for each bug, only the tests its line names (the last field)
# instead of the whole suite: minutes instead of an hour.  Those tests are
# part of the suite, so "caught" holds for the suite; a "MISSED" under
# --quick says only that the named tests miss it: rerun without --quick.
#
# MUTATE_DIR names the scratch copy (default: a fresh mktemp folder, removed
# at the end); the output of each run is kept in $MUTATE_DIR/NAME.log.
# Run tests/setup.sh first (it installs what the suite needs).
set -u
cd "$(dirname "$0")/.."
src=$(pwd)

# name|file|sed expression (applied once; the text must occur exactly once)|the bug|
# the tests expected to catch it (--quick)
MUTANTS='signature_key|bridge/sign.c|s/HMAC(EVP_sha256(), key, (int)key_len,/HMAC(EVP_sha256(), key, (int)key_len \/ 2,/|HMAC over half the secret|sign forward
body_byte|bridge/upstream.c|s/r->body, r->len) < 0)/r->body, r->len - (r->len > 1)) < 0)/|the last byte of the delivered body dropped|forward
upstream_500_as_200|bridge/server_deliver.c|s/r->status >= 200 \&\& r->status < 300) {/r->status >= 200 \&\& r->status < 600) {/|an endpoint 5xx answered as delivered|forward
dst_policy|bridge/convert.c|s/if (sol\[i\] > sol\[j\])/if (sol[i] < sol[j])/|ambiguous local time: "earlier" picks the later instant|convert
queue_order|bridge/store.c|s/ORDER BY d.next_attempt_ms, d.id LIMIT/ORDER BY d.next_attempt_ms, d.id DESC LIMIT/|due deliveries taken newest first|store queue
redaction|bridge/record.c|s/if (record_pattern_match(r->redact\[i\], key, key_len))/if (record_pattern_match(r->redact[i], key, key_len) \&\& 0)/|captures no longer redact|record
auth|bridge/access.c|s/return CRYPTO_memcmp(a, b, al) == 0;/return al == bl;/|any credential accepted|access hardening
serve_start|bridge/cmd/serve.c|s/^\tif (!a\.level_given \&\& cfg->log_level >= 0)$/\tif (cfg->allow.n)\n\t\treturn 1;\n&/|serve exits at start whenever an allow list is configured|hardening'

quick=
if [ "${1:-}" = --quick ]; then
	quick=1
	shift
fi
want="$*"
scratch=${MUTATE_DIR:-}
if [ -z "$scratch" ]; then
	scratch=$(mktemp -d)
	trap 'rm -rf "$scratch"' EXIT
fi
mkdir -p "$scratch/tree"
rm -f "$scratch/tally"
# the tree as it is now (uncommitted edits too), without build folders
tar -C "$src" --exclude='./build*' --exclude=./.git -cf - . | tar -C "$scratch/tree" -xf -
cd "$scratch/tree" || exit 1
if [ ! -f build/build.ninja ]; then
	meson setup build >"$scratch/setup.log" 2>&1 || { cat "$scratch/setup.log"; exit 1; }
fi
meson compile -C build >"$scratch/compile.log" 2>&1 || { tail "$scratch/compile.log"; exit 1; }

caught=0
missed=0
unplanted=0
printf '%s\n' "$MUTANTS" | while IFS='|' read -r name file expr what tests; do
	if [ -n "$want" ] && ! echo " $want " | grep -q " $name "; then
		continue
	fi
	cp "$file" "$scratch/orig"
	sed "$expr" "$scratch/orig" >"$file"
	changed=$(diff "$scratch/orig" "$file" | grep -c '^>')
	if [ "$changed" -eq 0 ]; then
		echo "not planted  $name: $what ($file no longer has the text)"
		cp "$scratch/orig" "$file"
		echo unplanted >>"$scratch/tally"
		continue
	fi
	start=$(date +%s)
	if ! meson compile -C build >"$scratch/$name.log" 2>&1; then
		result="caught (does not build)"
	elif if [ -n "$quick" ]; then
		# shellcheck disable=SC2086 # the names, one word each
		meson test -C build --no-rebuild --no-suite lint $tests
	else
		meson test -C build --no-rebuild --no-suite lint
	fi >>"$scratch/$name.log" 2>&1; then
		result=MISSED
	else
		failing=$(grep -E '^ *[0-9]+/[0-9]+ .* (FAIL|ERROR|TIMEOUT)' "$scratch/$name.log" |
			sed 's/.* \/ \([^ ]*\) .*/\1/' | tr '\n' ' ')
		result="caught by: $failing"
	fi
	cp "$scratch/orig" "$file"
	echo "$result" | grep -q '^caught' && echo caught >>"$scratch/tally" || echo missed >>"$scratch/tally"
	printf '%-12s %s: %s (%ss)\n' "$(echo "$result" | cut -d' ' -f1)" "$name" "$what" \
		"$(($(date +%s) - start))"
	[ "$result" = MISSED ] || echo "             ${result#caught }"
done
meson compile -C build >/dev/null 2>&1
caught=$(grep -c '^caught' "$scratch/tally" 2>/dev/null)
missed=$(grep -c '^missed' "$scratch/tally" 2>/dev/null)
unplanted=$(grep -c '^unplanted' "$scratch/tally" 2>/dev/null)
echo "mutants: ${caught:-0} caught, ${missed:-0} missed, ${unplanted:-0} not planted"
[ "${missed:-0}" -eq 0 ] && [ "${unplanted:-0}" -eq 0 ]
