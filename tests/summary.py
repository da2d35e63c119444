"""Totals the TAP checks of meson's test logs into one closing line.

Usage: summary.py [--all] TESTLOG.json...

Prints one line per failing test, the totals of each build (plain, sanitizers,
valgrind), then "N passed, N failed".  A test program fails the run when:
  - it failed without printing any "not ok" (crash, timeout, sanitizer abort:
    one failed check);
  - it printed no TAP plan ("1..N"), or a plan that does not match the
    checks it printed (a program that stopped early);
  - it skipped a check ("# SKIP") that ALLOWED_SKIPS does not name.
With --all (the whole test command), every program tests/meson.build lists
must appear in each log (in the valgrind log: the unit tests and fuzz
harnesses), so a test that was renamed or dropped from the run is a failure,
not a smaller total; and every tests/test_*.c, test_*.py and fuzz_*.c must be
named by those lists (configuring checks this too, but a build folder set up
before the file was added is not configured again).  Exit status 1 when
anything failed or nothing ran.
"""
import json
import os
import re
import sys

OK = re.compile(r"^(not )?ok\b")
PLAN = re.compile(r"^1\.\.(\d+)\b")
SKIP = re.compile(r"#\s*SKIP\b", re.IGNORECASE)

# Skips that are allowed, as "test name: check text" -> why.  None today: a
# missing dependency is a failure, never a skip.
ALLOWED_SKIPS = {}

# Tests meson.build defines outside the three lists.
LINT_TESTS = ["lint / format", "lint / elf", "integration / learn"]


def meson_list(text, name):
    m = re.search(r"^%s\s*=\s*\[(.*?)\]" % re.escape(name), text, re.S | re.M)
    if not m:
        raise ValueError("tests/meson.build has no list %s" % name)
    return re.findall(r"'([^']+)'", m.group(1))


HERE = os.path.dirname(os.path.abspath(__file__))


def meson_text():
    with open(os.path.join(HERE, "meson.build"), encoding="utf-8") as f:
        return f.read()


def unlisted_files():
    """The test files in tests/ that no list of tests/meson.build names."""
    text = meson_text()
    listed = set(meson_list(text, "listed"))
    for name in meson_list(text, "unit_tests") + meson_list(text, "pg_unit_tests"):
        listed.add("test_%s.c" % name)
    for name in meson_list(text, "integration_tests"):
        listed.add("test_%s.py" % name)
    for name in meson_list(text, "fuzz_harnesses"):
        listed.add("fuzz_%s.c" % name)
    found = [f for f in os.listdir(HERE)
             if re.match(r"^(test_.*\.(c|py)|fuzz_.*\.c)$", f)]
    return sorted(f for f in found if f not in listed)


def expected_tests():
    """(every test of a build, the tests of the valgrind pass) as "suite / name",
    from tests/meson.build."""
    text = meson_text()
    unit = ["unit / " + n for n in meson_list(text, "unit_tests")]
    fuzz = ["fuzz / fuzz_" + n for n in meson_list(text, "fuzz_harnesses")]
    integration = ["integration / " + n for n in meson_list(text, "integration_tests")]
    pg = (["pg / " + n for n in meson_list(text, "pg_unit_tests")] +
          ["pg / %s_unit_pg" % n for n in meson_list(text, "pg_engine_tests")])
    everything = unit + integration + fuzz + pg + LINT_TESTS
    tsan = (["unit / " + n for n in meson_list(text, "tsan_unit")] +
            ["integration / " + n for n in meson_list(text, "tsan_integration")] +
            ["pg / " + n for n in meson_list(text, "tsan_pg")])
    return everything, unit + fuzz, tsan


def build_name(path):
    d = path.split("/")[0]
    if "valgrind" in path:
        return d + " (valgrind)"
    return {"build": "build (plain)", "build-asan": "build-asan (ASan+UBSan)",
            "build-tsan": "build-tsan (TSan)"}.get(d, d)


def tally(rec):
    """(passed, failed, skipped, problems) of one test record."""
    out = rec.get("stdout") or ""
    name = rec.get("name")
    p = f = s = 0
    plans = []
    problems = []
    for line in out.splitlines():
        m = OK.match(line)
        if m:
            if m.group(1):
                f += 1
            elif SKIP.search(line):
                s += 1
                text = line.split("-", 1)[-1].split("#", 1)[0].strip()
                if "%s: %s" % (name, text) not in ALLOWED_SKIPS:
                    problems.append("skipped check not allowed: " + line.strip())
            else:
                p += 1
            continue
        m = PLAN.match(line)
        if m:
            plans.append(int(m.group(1)))
    if rec.get("result") not in ("OK", "EXPECTEDFAIL") and f == 0:
        f = 1
        problems.append("result %s without a failed check" % rec.get("result"))
    if not plans:
        problems.append("no TAP plan (1..N)")
    elif len(plans) > 1:
        problems.append("%d TAP plans" % len(plans))
    elif plans[0] != p + f + s and rec.get("result") in ("OK", "EXPECTEDFAIL"):
        problems.append("plan 1..%d but %d checks" % (plans[0], p + f + s))
    return p, f, s, problems


def failed_lines(out, most=8, diag=3, width=300):
    """The first `most` "not ok" lines of a TAP stream, each with the first
    `diag` diagnostic lines after it, cut to `width` characters: so the end of
    a run names what failed, not only how many."""
    shown = []
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("not ok"):
            continue
        if len(shown) >= most * (diag + 1):
            shown.append("... (more failed checks in the test log)")
            break
        shown.append(line[:width])
        for d in lines[i + 1:i + 1 + diag]:
            if not d.startswith("#"):
                break
            shown.append("  " + d[:width])
    return shown


def main(argv):
    want_all = "--all" in argv
    paths = [a for a in argv if a != "--all"]
    everything, valgrind_tests, tsan_tests = expected_tests()
    passed = failed = skipped = 0
    lines = []
    for path in paths:
        build = build_name(path)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                records = [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError) as e:
            print(f"summary: {path}: {e}")
            failed += 1
            continue
        bp = bf = bs = 0
        seen = set()
        for rec in records:
            # "project:suite+suite / name"
            suites, _, test = str(rec.get("name")).split(":", 1)[-1].partition(" / ")
            seen.update(s + " / " + test for s in suites.split("+"))
            p, f, s, problems = tally(rec)
            if problems and not f:
                f = 1
            if f:
                why = "; ".join(problems)
                print(f"FAILED {build}: {rec.get('name')} ({rec.get('result')}, "
                      f"{f} failed check(s){': ' + why if why else ''})")
                for line in failed_lines(rec.get("stdout") or ""):
                    print("    " + line)
            bp += p
            bf += f
            bs += s
        if want_all:
            if "valgrind" in path:
                want = valgrind_tests
            elif path.startswith("build-tsan"):
                want = tsan_tests
            else:
                want = everything
            for name in want:
                if name not in seen:
                    print(f"FAILED {build}: {name} did not run (listed in tests/meson.build)")
                    bf += 1
        lines.append(f"  {build}: {len(records)} programs, {bp} passed, {bf} failed, "
                     f"{bs} skipped")
        passed += bp
        failed += bf
        skipped += bs
    if want_all:
        for f in unlisted_files():
            print(f"FAILED: tests/{f} is not named in tests/meson.build, so it never ran")
            failed += 1
    if passed + failed == 0:
        print("summary: no test ran")
        failed = 1
    print("per build:")
    for line in lines:
        print(line)
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
