#!/usr/bin/python3
"""Dry-run with shadow comparison against real v2 posts (both arrival orders,
signature checked, expiry reported), /dry-run/summary and the `report`
command, and traffic recording (redacted) replayed back."""

import json
import os
import re
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
SECRET = "shadow-secret"


def main():
    report = tmp.join("report.jsonl")
    capture = tmp.join("capture.ndjson")
    routes = [bt.route("shadow", "dry-run", secret=SECRET)]
    cfg = bt.config_text(routes, path="/hook", workers=2,
                         dry_run={"report": report, "v2_path": "/v2", "window_s": 2,
                                  "max_entries": 1000},
                         record={"path": capture})
    b = bt.Bridge(tmp, cfg, "dryrun.conf").start()
    path, raw, doc = bt.v1_fixture()
    tag = uuid.uuid4().hex[:12]
    secret_values = ["leak-%s@example.com" % tag, "Lastname%s" % tag, "Firstname%s" % tag,
                     "10.%d.%d.7" % (int(tag[:2], 16), int(tag[2:4], 16))]

    def v1(pid):
        return bt.v1_variant(doc, participation_id=pid, email=secret_values[0],
                             lastname=secret_values[1], firstname=secret_values[2],
                             ip=secret_values[3])

    def real(pid, **change):
        v2 = json.loads(bt.map_output(tmp.file("in-%s.json" % pid, v1(pid).decode())).stdout)
        v2.update(change)
        body = json.dumps(v2, separators=(",", ":")).encode()
        return body

    def post_real(body, secret=SECRET):
        return bt.curl(b.url("/v2"), body,
                       headers=["X-Qualifio-Signature: sha256=" + bt.hmac_hex(secret, body)])

    try:
        # order 1: translated first, then the identical real v2
        p1 = str(uuid.uuid4())
        r = bt.curl(b.url("/hook"), v1(p1))
        t.is_(r.status, 200, "v1 post answered in dry-run", r)
        r = post_real(real(p1))
        d = r.json() or {}
        t.is_(r.status, 200, "real v2 accepted", r)
        t.is_(d.get("status"), "compared", "real v2 after its translation: compared at once", d)
        t.is_((d.get("comparison") or {}).get("status"), "identical",
              "identical translation and real v2", d)

        # order 2: the real v2 first, differing in campaign.name
        p2 = str(uuid.uuid4())
        body2 = real(p2)
        v2doc = json.loads(body2)
        v2doc["campaign"]["name"] = "Renamed in Qualifio"
        body2 = json.dumps(v2doc, separators=(",", ":")).encode()
        r = post_real(body2)
        t.is_((r.json() or {}).get("status"), "waiting", "real v2 first: waits for its translation", r)
        r = bt.curl(b.url("/hook"), v1(p2))
        t.is_(r.status, 200, "v1 post after its real v2", r)

        # a forged real v2 is refused
        r = post_real(real(str(uuid.uuid4())), secret="wrong")
        bt.check_json_response(t, r, 401, "real v2 with a wrong signature", error="bad_signature")

        # order 3: a translation that never meets its real v2 expires, reported
        p3 = str(uuid.uuid4())
        bt.curl(b.url("/hook"), v1(p3))
        ok = bt.wait_for(lambda: any('"shadow_expired"' in line and p3.upper() in line
                                     for line in b.err_lines), 6)
        t.ok(ok, "unmatched translation expires after the window and is logged")

        r = bt.curl(b.admin_url("/dry-run/summary"))
        s = r.json() or {}
        t.is_(r.status, 200, "/dry-run/summary answers", r)
        t.is_(s.get("matched"), 2, "summary: 2 matched", s)
        t.is_(s.get("identical"), 1, "summary: 1 identical", s)
        t.is_(s.get("different"), 1, "summary: 1 different", s)
        t.is_((s.get("expired") or {}).get("translated"), 1, "summary: 1 translation expired", s)
        paths = [p.get("path") for p in s.get("top_paths", [])]
        t.ok("campaign.name" in paths, "summary names the differing path", s)
        rules = [p.get("rule") for p in s.get("top_paths", []) if p.get("rule")]
        t.ok(rules and all(re.match(r"^[^/]+\.conf:\d+$", x) for x in rules),
             "summary rules name no folder of the host", rules)
    finally:
        bt.stop_and_check(t, b, "dry-run bridge")

    lines = [json.loads(line) for line in open(report, encoding="utf-8")]
    p2_line = [x for x in lines if x.get("participation_id") == p2.upper() and "v2" in x]
    cmp = (p2_line[0].get("comparison") if p2_line else None) or {}
    t.is_(cmp.get("status"), "different", "report: the translation line carries its comparison",
          p2_line)
    diffs = {d.get("path"): d for d in cmp.get("differences", [])}
    rule = (diffs.get("campaign.name") or {}).get("rule") or ""
    t.like(rule, r"^qualifio-v1-to-v2\.conf:\d+$",
           "report names the rule behind the difference, without the host's folders", diffs)
    t.ok(any(x.get("event") == "compared" and x.get("participation_id") == p1.upper()
             for x in lines), "report: a later real v2 gives a 'compared' line")
    t.ok(any(x.get("event") == "expired" and x.get("participation_id") == p3.upper()
             for x in lines), "report: the expiry is a line of its own")

    r = bt.run_cli(["report", "--json", report])
    rep = json.loads(r.stdout or "{}") if r.stdout.strip().startswith("{") else {}
    t.is_(r.rc, 1, "report: exit 1 when some participation differs", r)
    t.is_((rep.get("matched"), rep.get("identical"), rep.get("different")), (2, 1, 1),
          "report command counts what serve wrote", rep)
    t.is_(rep.get("unmatched_translated"), 1, "report command counts the expiry", rep)

    # recording: redacted, and replayable
    data = open(capture, "rb").read()
    t.ok(data.count(b"\n") >= 3, "capture has one line per v1 post")
    leaked = [v for v in secret_values if v and v.encode() in data]
    t.is_(leaked, [], "no redacted value anywhere in the capture")
    r = bt.run_cli(["replay", "--config", b.config_path, "--dry-run", "--json", capture])
    t.is_(r.rc, 0, "the capture replays (maps) without error", r)


try:
    main()
finally:
    tmp.cleanup()
t.done()
