#!/usr/bin/env python3
"""Functions of bridge/*.c and bridge/cmd/*.c longer than a limit (default 100 lines), longest
first: file:line, name, lines.  Not a test: the list the code review reads.

  python3 tests/long_functions.py [LIMIT]
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# A definition: a line at column 0 that is not a statement, ending in ')' (or
# continued), followed by a '{' alone at column 0; its body ends at the first
# '}' alone at column 0.
NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def functions(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        if lines[i] == "{" and i > 0:
            j = i - 1
            while j > 0 and lines[j] and lines[j][0] in " \t":
                j -= 1  # continuation lines of the signature
            m = NAME.search(lines[j])
            k = i + 1
            while k < len(lines) and lines[k] != "}":
                k += 1
            if m:
                yield m.group(1), j + 1, k - j + 1
            i = k
        i += 1


def main():
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    found = []
    for sub in ("bridge", "bridge/cmd"):
        d = os.path.join(ROOT, sub)
        for f in sorted(os.listdir(d)):
            if f.endswith(".c"):
                for name, line, n in functions(os.path.join(d, f)):
                    if n > limit:
                        found.append((n, "%s/%s:%d" % (sub, f, line), name))
    for n, where, name in sorted(found, reverse=True):
        print("%4d  %-32s %s" % (n, where, name))
    print("%d functions over %d lines" % (len(found), limit))


if __name__ == "__main__":
    main()
