"""Totals the TAP checks of meson's test logs into one closing line.

Usage: summary.py TESTLOG.json...  Prints one line per failing test, then
"N passed, N failed".  A test that failed without printing any "not ok"
(crash, timeout, sanitizer abort) counts as one failed check.  Exit status 1
when anything failed or nothing ran.
"""
import json
import re
import sys

OK = re.compile(r"^(not )?ok\b")


def main(paths):
    passed = failed = 0
    for path in paths:
        build = path.split("/")[0] + ("+valgrind" if "valgrind" in path else "")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                records = [json.loads(line) for line in f if line.strip()]
        except OSError as e:
            print(f"summary: {path}: {e}")
            failed += 1
            continue
        for rec in records:
            out = rec.get("stdout") or ""
            p = f = 0
            for line in out.splitlines():
                m = OK.match(line)
                if m:
                    if m.group(1):
                        f += 1
                    else:
                        p += 1
            if rec.get("result") not in ("OK", "EXPECTEDFAIL") and f == 0:
                f = 1
            if f:
                print(f"FAILED {build}: {rec.get('name')} ({rec.get('result')}, {f} failed check(s))")
            passed += p
            failed += f
    if passed + failed == 0:
        print("summary: no test ran")
        failed = 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
