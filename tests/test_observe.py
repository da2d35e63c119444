#!/usr/bin/python3
"""Observability: /metrics counts exactly the traffic sent, /healthz and
/readyz answer, every log line on stderr is one JSON object."""

import json
import os
import re
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
HOOK = "/hook"
C_DRY, C_FWD, C_FAIL = 700001, 700002, 700003


def metrics(b):
    r = bt.curl(b.admin_url("/metrics"))
    t.is_(r.status, 200, "/metrics answers 200", r)
    t.like(r.header("content-type") or "", r"^text/plain", "/metrics is text/plain", r)
    values = {}
    for line in r.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?) (\S+)$", line)
        t.ok(m is not None, "exposition line well-formed: %s" % line[:80])
        if m:
            values[m.group(1)] = float(m.group(2))
    return values


def main():
    sink = bt.Sink()
    routes = [
        bt.route("dry", match={"campaign_id": [C_DRY]}),
        bt.route("fwd", "forward", endpoint=sink.url("/ok"), secret="k",
                 match={"campaign_id": [C_FWD]}),
        bt.route("fail", "forward", endpoint=sink.url("/fail"), secret="k",
                 match={"campaign_id": [C_FAIL]}),
    ]
    b = bt.Bridge(tmp, bt.config_text(routes, path=HOOK, workers=2), "observe.conf").start()
    try:
        path, raw, doc = bt.v1_fixture()

        def post(campaign, **kw):
            kw.setdefault("participation_id", str(uuid.uuid4()))
            return bt.curl(b.url(HOOK), bt.v1_variant(doc, campaign_id=campaign, **kw))

        r = bt.curl(b.url("/healthz"))
        t.is_(r.status, 200, "/healthz 200", r)
        r = bt.curl(b.admin_url("/readyz"))
        t.is_(r.status, 200, "/readyz 200", r)
        t.is_((r.json() or {}).get("routes"), 3, "/readyz reports the loaded routes", r)

        for _ in range(3):
            t.is_(post(C_DRY).status, 200, "dry-run post answered 200")
        for _ in range(2):
            t.is_(post(C_FWD).status, 200, "forward post delivered")
        sink.reply(bt.Reply(500), bt.Reply(500))
        # the scripted 500s go to whichever route asks first: only the failing route posts now
        for _ in range(2):
            t.is_(post(C_FAIL).status, 502, "endpoint 500 -> 502")
        t.is_(post(C_DRY, participation_id=None).status, 422, "missing required key -> 422")
        r = bt.curl(b.url(HOOK), b'{"broken":', content_type="application/json")
        t.is_(r.status, 400, "malformed JSON -> 400", r)
        t.is_(post(C_DRY, extra_unmapped_a="1").status, 200, "unmapped key post")

        m = metrics(b)
        want = {
            'webhook_bridge_requests_total{route="dry",outcome="dry_run"}': 4,
            'webhook_bridge_requests_total{route="fwd",outcome="delivered"}': 2,
            'webhook_bridge_requests_total{route="fail",outcome="upstream_status"}': 2,
            'webhook_bridge_requests_total{route="dry",outcome="mapping_failed"}': 1,
            'webhook_bridge_requests_total{route="",outcome="invalid_input"}': 1,
            'webhook_bridge_unmapped_variables_total{route="dry",variable="extra_unmapped_a"}': 1,
            'webhook_bridge_upstream_latency_seconds_count{route="fwd"}': 2,
            'webhook_bridge_upstream_latency_seconds_count{route="fail"}': 2,
            'webhook_bridge_upstream_latency_seconds_bucket{route="fwd",le="+Inf"}': 2,
            "webhook_bridge_in_flight_requests": 0,
            "webhook_bridge_workers": 2,
        }
        for k, v in want.items():
            t.is_(m.get(k), v, "metric %s" % k, sorted(m.items()))
        rule = [k for k in m if k.startswith('webhook_bridge_mapping_errors_total{route="dry",rule=')]
        t.ok(len(rule) == 1 and re.search(r'rule="qualifio-v1-to-v2\.conf:\d+"', rule[0]),
             "mapping error counted under its rule file:line, no folder of the host", rule)
        outcomes = sum(v for k, v in m.items() if k.startswith("webhook_bridge_requests_total"))
        t.is_(outcomes, 10, "every webhook post counted exactly once", m)
        buckets = [v for k, v in m.items()
                   if k.startswith('webhook_bridge_upstream_latency_seconds_bucket{route="fwd"')]
        t.ok(buckets == sorted(buckets), "histogram buckets are cumulative", buckets)
        t.ok(m.get('webhook_bridge_upstream_connections{route="fwd"}') is not None,
             "pool connection gauge present")
    finally:
        bt.stop_and_check(t, b, "observe bridge")
        sink.stop()

    # every stderr line is one JSON object with time, level and event
    bad = []
    access = []
    for line in b.err_lines:
        try:
            rec = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if not all(k in rec for k in ("time", "level", "event")):
            bad.append(line)
        if rec.get("event") == "request":
            access.append(rec)
    t.is_(bad, [], "every log line is a JSON object with time, level, event")
    t.is_(len(access), 10, "one access-log line per webhook post", len(access))
    fields = {"time", "status", "latency_ms", "bytes_in", "bytes_out"}
    t.ok(all(fields <= set(a) for a in access), "access lines carry status, latency, bytes")
    delivered = [a for a in access if a.get("route") == "fwd"]
    t.ok(delivered and all(a.get("upstream_status") == 200 and a.get("participation_id")
                           for a in delivered),
         "delivered lines carry upstream status and participation id", delivered)


try:
    main()
finally:
    tmp.cleanup()
t.done()
