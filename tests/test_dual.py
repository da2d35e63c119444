#!/usr/bin/python3
"""Dual mode (v1 to the legacy importer, authoritative; v2 to the new one at
the same time) and dry-run with a legacy passthrough and a report file."""

import json
import os
import re
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
C_DUAL, C_DRY = 810001, 810002


def main():
    legacy = bt.Sink()
    v2 = bt.Sink()
    report = tmp.join("dry-run.jsonl")
    routes = [
        bt.route("dual", "dual", endpoint=v2.url("/v2"), legacy_endpoint=legacy.url("/v1?k=1"),
                 secret="s3", match={"campaign_id": [C_DUAL]}, timeout_ms=3000),
        bt.route("shadow", "dry-run", legacy_endpoint=legacy.url("/v1-dry"),
                 match={"campaign_id": [C_DRY]}, timeout_ms=3000),
    ]
    cfg = bt.config_text(routes, path="/hook", workers=1, dry_run={"report": report})
    b = bt.Bridge(tmp, cfg, "dual.conf").start()
    path, raw, doc = bt.v1_fixture()
    try:
        # 1. dual: legacy answers 201 with its own body, v2 fails with 500
        legacy.reply(bt.Reply(201, body=b'{"legacy":"ok"}'))
        v2.reply(bt.Reply(500))
        pid = str(uuid.uuid4())
        body = bt.v1_variant(doc, participation_id=pid, campaign_id=C_DUAL)
        r = bt.curl(b.url("/hook"), body,
                    headers=["X-Custom: kept", "Connection: X-Hop", "X-Hop: dropped"])
        t.is_(r.status, 201, "dual: the sender gets the legacy importer's status", r)
        t.is_(r.body, b'{"legacy":"ok"}', "dual: ... and its body, as it is", r)
        t.require(legacy.wait_requests(1), "legacy importer got the post")
        got = legacy.requests[-1]
        t.is_(got.body, body, "legacy importer got the v1 body byte for byte")
        t.is_(got.path, "/v1?k=1", "legacy importer got its own configured path")
        t.is_(got.header("X-Custom"), "kept", "end-to-end headers pass through")
        t.is_(got.header("X-Hop"), None, "headers named by Connection are hop-by-hop: dropped")
        t.is_(got.header("Content-Type"), "application/json", "content type passes through")
        t.ok(v2.wait_requests(1), "new importer got the v2 at the same time")
        sent = v2.requests[-1]
        t.is_(sent.header("X-Qualifio-Signature"), "sha256=" + bt.hmac_hex("s3", sent.body),
              "v2 in dual mode is signed as in forward mode")
        t.is_(json.loads(sent.body)["id"], pid.upper(), "v2 carries the participation")
        m = bt.wait_for(lambda: 'webhook_bridge_dual_v2_total{route="dual",outcome="upstream_status"} 1'
                        in bt.curl(b.admin_url("/metrics")).body.decode(), 5)
        t.ok(m, "dual: the v2 failure is counted, not answered")

        # 2. dual: the legacy importer fails -> that is the answer
        legacy.reply(bt.Reply(503, body=b"busy"))
        r = bt.curl(b.url("/hook"), bt.v1_variant(doc, participation_id=str(uuid.uuid4()),
                                                  campaign_id=C_DUAL))
        t.is_(r.status, 503, "dual: a legacy failure is relayed to the sender", r)

        # 3. dual: translation fails, the legacy importer still gets the post
        n = len(legacy.requests)
        r = bt.curl(b.url("/hook"), bt.v1_variant(doc, participation_id=None, campaign_id=C_DUAL))
        t.is_(r.status, 200, "dual: a post that cannot be translated still reaches legacy", r)
        t.ok(legacy.wait_requests(n + 1), "legacy importer got the untranslatable post")
        t.ok(bt.wait_for(lambda: any('"mapping_failed"' in line for line in list(b.err_lines))),
             "mapping failure logged")

        # 4. dry-run with legacy passthrough: v2 not delivered, report written
        n2 = len(v2.requests)
        pid = str(uuid.uuid4())
        legacy.reply(bt.Reply(200, body=b"ok"))
        r = bt.curl(b.url("/hook"), bt.v1_variant(doc, participation_id=pid, campaign_id=C_DRY))
        t.is_(r.status, 200, "dry-run with legacy: legacy's answer", r)
        t.is_(r.body, b"ok", "dry-run with legacy: legacy's body", r)
        t.is_(len(v2.requests), n2, "dry-run never sends v2")
    finally:
        bt.stop_and_check(t, b, "dual bridge")
        legacy.stop()
        v2.stop()

    lines = [json.loads(line) for line in open(report, encoding="utf-8")]
    t.ok(len(lines) >= 3, "report has a line per translated post and per failure", len(lines))
    dry = [rec for rec in lines if rec.get("participation_id") == pid.upper()]
    t.is_(len(dry), 1, "the dry-run post is in the report once", lines)
    if dry:
        rec = dry[0]
        t.is_(rec.get("route"), "shadow", "report line names the route")
        bt.check_v2(t, rec.get("v2"), "report line's v2 is valid v2")
        prov = {p["path"]: p for p in rec.get("provenance", [])}
        mapping_lines = open(bt.MAPPING, encoding="utf-8").read().splitlines()
        want = [i + 1 for i, line in enumerate(mapping_lines)
                if re.search(r'from\s*=\s*"participation_id"', line)]
        rule = (prov.get("id") or {}).get("rule", "")
        t.ok(rule.endswith("qualifio-v1-to-v2.conf:%d" % want[0]) if want else False,
             "provenance of id names the rule's file:line (%s)" % rule, want)
        t.is_((prov.get("id") or {}).get("from"), "participation_id", "provenance names the v1 key")
    fails = [rec for rec in lines if "error" in rec]
    t.ok(fails and "participation_id" in fails[0]["error"].get("message", ""),
         "report records the translation failure with its message", fails)


try:
    main()
finally:
    tmp.cleanup()
t.done()
