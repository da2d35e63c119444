#!/bin/sh
# TAP: every C file of the tree is formatted as .clang-format says (the
# formatter is the style's single source of truth; run `clang-format -i` on
# a file this reports).
cd "${BRIDGE_SOURCE_ROOT:-$(dirname "$0")/..}" || exit 1
files=$(git ls-files 'bridge/*.c' 'bridge/**/*.c' 'bridge/*.h' 'bridge/**/*.h' 'include/*.h' 'include/**/*.h' 'tests/*.c' 'bench/*.c' 2>/dev/null | sort -u)
[ -n "$files" ] || files=$(find bridge include tests bench -name '*.[ch]' | sort)
n=$(echo "$files" | wc -l)
echo "1..$n"
i=0
for f in $files; do
	i=$((i + 1))
	if clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
		echo "ok $i - formatted: $f"
	else
		echo "not ok $i - not formatted as .clang-format says: $f (run clang-format -i $f)"
	fi
done
