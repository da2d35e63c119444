#!/usr/bin/python3
"""Output that cannot be written is an error: every command whose result goes
to stdout (map, diff, report, replay's summary, check, --help) exits non-zero
with a one-line message when stdout is a full device or a closed descriptor,
instead of reporting success for output nobody received."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
REP = os.path.join(bt.SOURCE_ROOT, "fixtures", "v1", "representative.json")
REPORT = os.path.join(bt.SOURCE_ROOT, "fixtures", "diff", "dry-run-report.ndjson")
V2 = os.path.join(bt.SOURCE_ROOT, "fixtures", "v2", "representative.json")
CHANGED = os.path.join(bt.SOURCE_ROOT, "fixtures", "diff", "representative-changed.json")

COMMANDS = [
    ("map", ["map", "--mapping", bt.MAPPING, REP]),
    ("map --ndjson", ["map", "--mapping", bt.MAPPING, "--ndjson",
                      tmp.file("in.ndjson", (bt.v1_variant(bt.v1_fixture()[2]) + b"\n") * 50)]),
    ("diff provenance", ["diff", "--mapping", bt.MAPPING, REP]),
    ("diff A/B", ["diff", V2, CHANGED]),
    ("report", ["report", REPORT]),
    ("replay summary", ["replay", "--config", bt.SHIPPED_CONFIG, "--dry-run", REP]),
    ("check", ["check", "--mapping", bt.MAPPING]),
    ("--help", ["--help"]),
]


def run_to(args, stdout):
    p = subprocess.run([bt.BRIDGE_BIN] + args, stdin=subprocess.DEVNULL, stdout=stdout,
                       stderr=subprocess.PIPE, timeout=60)
    return p.returncode, p.stderr.decode("utf-8", "replace")


def main():
    for name, args in COMMANDS:
        with open(os.devnull, "wb") as null:
            ok_rc, ok_err = run_to(args, null)
        with open("/dev/full", "wb") as full:
            rc, err = run_to(args, full)
        t.ok(rc != 0, "%s > /dev/full: non-zero exit (%d; %d when the output is written)"
             % (name, rc, ok_rc), err)
        if ok_rc == 0:
            t.is_(rc, 2, "%s > /dev/full: exit 2 where it would exit 0" % name)
        lines = [line for line in err.splitlines() if "cannot write to stdout" in line]
        t.is_(len(lines), 1, "%s > /dev/full: one message says stdout could not be written"
              % name, err)
    with open("/dev/full", "wb") as full:
        p = subprocess.run([bt.BRIDGE_BIN, "map", "--mapping", bt.MAPPING, REP],
                           stdin=subprocess.DEVNULL, stdout=full, stderr=subprocess.PIPE,
                           timeout=60)
    t.ok(b"No space left" in p.stderr or b"earlier write failed" in p.stderr,
         "the message says why", p.stderr.decode("utf-8", "replace"))
    closed = subprocess.run(["sh", "-c", 'exec "$0" "$@" >&-', bt.BRIDGE_BIN, "map",
                             "--mapping", bt.MAPPING, REP], stderr=subprocess.PIPE, timeout=60)
    t.is_(closed.returncode, 2, "map with stdout closed: exit 2",
          closed.stderr.decode("utf-8", "replace"))


try:
    main()
finally:
    tmp.cleanup()
t.done()
