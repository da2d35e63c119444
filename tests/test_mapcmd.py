#!/usr/bin/python3
"""`map --ndjson` on several threads: the same bytes in the same order as one
thread, error lines named by their input line, memory bounded by a round."""

import json
import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()


def main():
    path, raw, doc = bt.v1_fixture()
    lines, bad = [], []
    for i in range(6000):
        if i % 997 == 5:
            lines.append('{"participation_id": "broken"')
            bad.append(i + 1)
        elif i % 1499 == 7:
            lines.append("")
        else:
            lines.append(bt.v1_variant(doc, participation_id=str(uuid.UUID(int=i + 1))).decode())
    src = tmp.file("in.ndjson", "\n".join(lines) + "\n")
    one = bt.run_cli(["map", "--mapping", bt.MAPPING, "--ndjson", "--jobs", "1", src], timeout=120)
    many = bt.run_cli(["map", "--mapping", bt.MAPPING, "--ndjson", "--jobs", "4", src], timeout=120)
    t.is_(one.rc, 1, "one thread: exit 1 (some lines cannot be mapped)", one.stderr[:300])
    t.is_(many.rc, 1, "four threads: exit 1", many.stderr[:300])
    t.ok(one.out == many.out, "four threads write the same bytes as one, in input order")
    out = one.out.decode().splitlines()
    want = len([line for line in lines if line]) - len(bad)
    t.is_(len(out), want, "one v2 line per mappable input line")
    ids = [json.loads(line)["id"] for line in out]
    t.is_(ids[:3], [str(uuid.UUID(int=k)).upper() for k in (1, 2, 3)], "order kept")
    got_bad = sorted(int(line.split(":")[2]) for line in many.stderr.splitlines()
                     if line.startswith("error:"))
    t.is_(got_bad, bad, "each error names its input line number")


try:
    main()
finally:
    tmp.cleanup()
t.done()
