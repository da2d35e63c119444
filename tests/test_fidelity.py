#!/usr/bin/python3
"""Output that cannot be written is an error: every command whose result goes
to stdout (map, diff, report, replay's summary, check, --help) exits non-zero
with a one-line message when stdout is a full device or a closed descriptor;
serve in dry-run mode logs and counts each lost dry-run line.  Also: a
whitespace-only NDJSON line is skipped like an empty one."""

import json
import re
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


def serve_dry_run_to_full():
    """serve in dry-run mode with stdout on /dev/full: each lost line is an
    error log line with the running count, the post is still answered."""
    cfg = bt.config_text([bt.route("dry", "dry-run")], path="/hook")
    b = bt.Bridge(tmp, cfg, "full.conf")

    def to_full():
        fd = os.open("/dev/full", os.O_WRONLY)
        os.dup2(fd, 1)

    b.preexec = to_full
    b.start()
    try:
        doc = bt.v1_fixture()[2]
        for i in range(2):
            r = bt.curl(b.url("/hook"), bt.v1_variant(doc, participation_id="full-%d" % i))
            t.is_(r.status, 200, "dry-run post %d answered" % i, r)

        def dropped():
            r = bt.curl(b.admin_url("/metrics"))
            m = re.search(r'^webhook_bridge_log_dropped_total\{stream="stdout"\} (\d+)',
                          r.body.decode("utf-8", "replace"), re.M)
            return int(m.group(1)) if m else -1

        bt.wait_for(lambda: dropped() >= 2, timeout=10)
        t.is_(dropped(), 2, "each dry-run line lost on a full stdout is counted in "
              "webhook_bridge_log_dropped_total{stream=\"stdout\"}", b.stderr[-2000:])
        r = bt.curl(b.url("/healthz"))
        t.is_(r.status, 200, "the bridge keeps answering with stdout full", r)
    finally:
        bt.stop_and_check(t, b)


def ndjson_blank_lines():
    """A line of spaces and tabs is skipped like an empty line."""
    doc = bt.v1_fixture()[2]
    one = bt.v1_variant(doc).decode()
    src = tmp.file("blank.ndjson", one + "\n   \n\t\n \t \r\n\n" + one + "\n")
    r = bt.run_cli(["map", "--mapping", bt.MAPPING, "--ndjson", src], t=t)
    t.is_(r.rc, 0, "whitespace-only NDJSON lines are not errors", r)
    t.is_(len(r.out.splitlines()), 2, "both payload lines mapped", r)


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
    ndjson_blank_lines()
    serve_dry_run_to_full()


try:
    main()
finally:
    tmp.cleanup()
t.done()
