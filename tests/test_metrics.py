#!/usr/bin/python3
"""The /metrics exposition: `promtool check metrics` accepts it after mixed
traffic; counters survive a reload (per route name), a removed route stops
being exported, an added one starts at zero; the reload series, process_*,
build_info, the shadow comparison series and sub-millisecond durations."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
SECRET = "metrics-secret"
C_A, C_B, C_C, C_FWD = 810001, 810002, 810003, 810004


def scrape(b):
    r = bt.curl(b.admin_url("/metrics"))
    t.is_(r.status, 200, "/metrics 200", r)
    return r.body.decode()


def values(text):
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?) (\S+)$", line)
        if m and not line.startswith("#"):
            out[m.group(1)] = float(m.group(2))
    return out


def promtool(text, name):
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True)
    t.is_(p.returncode, 0, "promtool check metrics: %s" % name,
          (p.stdout + p.stderr)[:3000])


def config(routes):
    return bt.config_text(routes, path="/hook", workers=2,
                          dry_run={"v2_path": "/v2", "window_s": 60})


def main():
    sink = bt.Sink()
    path, raw, doc = bt.v1_fixture()

    def routes(names):
        r = []
        for n, c in names:
            if n == "fwd":
                r.append(bt.route(n, "forward", endpoint=sink.url("/in"), secret=SECRET,
                                  match={"campaign_id": [c]}))
            else:
                r.append(bt.route(n, "dry-run", secret=SECRET, match={"campaign_id": [c]}))
        return r

    first = [("a", C_A), ("b", C_B), ("fwd", C_FWD)]
    b = bt.Bridge(tmp, config(routes(first)), "metrics.conf").start()
    try:
        def post(campaign, **kw):
            kw.setdefault("participation_id", str(uuid.uuid4()))
            return bt.curl(b.url("/hook"), bt.v1_variant(doc, campaign_id=campaign, **kw))

        m0 = values(scrape(b))
        for n, _ in first:
            for o in ("delivered", "dry_run", "mapping_failed", "upstream_status"):
                t.is_(m0.get('webhook_bridge_requests_total{route="%s",outcome="%s"}' % (n, o)),
                      0.0, "route %s outcome %s present at zero from the start" % (n, o))
            for o in ("delivered", "dry_run", "upstream_timeout"):
                k = 'webhook_bridge_request_duration_seconds_%s{route="%s",outcome="%s"%s}'
                t.is_(m0.get(k % ("count", n, o, "")), 0.0,
                      "duration of route %s outcome %s present at zero from the start" % (n, o))
                t.is_(m0.get(k % ("bucket", n, o, ',le="+Inf"')), 0.0,
                      "its +Inf bucket at zero too")
        t.ok(not [k for k in m0 if k.startswith('webhook_bridge_request_duration_seconds_count'
                                                '{route="",')],
             "before routing: only what happened")
        t.is_(m0.get('webhook_bridge_shadow_comparisons_total{route="a",result="identical"}'),
              0.0, "shadow comparisons at zero from the start")
        t.is_(m0.get('webhook_bridge_shadow_expired_total{route="a",side="real",reason="ttl"}'),
              0.0, "shadow expiries at zero from the start")
        t.is_(m0.get("webhook_bridge_config_last_reload_successful"), 1.0, "reload gauge 1")
        t.ok(any(k.startswith("webhook_bridge_build_info{version=") and 'libevent="2.1' in k
                 and 'openssl="3' in k for k in m0), "build_info names version, libevent, openssl",
             [k for k in m0 if "build_info" in k])
        for k in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                  "process_open_fds", "process_max_fds", "process_start_time_seconds"):
            t.ok(m0.get(k, 0) > 0, "%s present and positive" % k, m0.get(k))

        # mixed traffic
        for _ in range(3):
            t.is_(post(C_A).status, 200, "dry-run post on a")
        t.is_(post(C_B).status, 200, "dry-run post on b")
        t.is_(post(C_A, participation_id=None).status, 422, "mapping failure on a")
        t.is_(post(C_A, extra_unmapped_z="1").status, 200, "unmapped key on a")
        t.is_(post(C_FWD).status, 200, "forward delivered")
        sink.reply(bt.Reply(500))
        t.is_(post(C_FWD).status, 502, "forward failed")
        r = bt.curl(b.url("/hook"), b'{"broken":', content_type="application/json")
        t.is_(r.status, 400, "invalid JSON")
        pid = str(uuid.uuid4())
        v1 = bt.v1_variant(doc, participation_id=pid, campaign_id=C_A)
        t.is_(bt.curl(b.url("/hook"), v1).status, 200, "translated side offered")
        v2 = json.loads(bt.map_output(tmp.file("in-%s.json" % pid, v1.decode())).stdout)
        body = json.dumps(v2, separators=(",", ":")).encode()
        r = bt.curl(b.url("/v2"), body,
                    headers=["X-Qualifio-Signature: sha256=" + bt.hmac_hex(SECRET, body)])
        t.is_((r.json() or {}).get("status"), "compared", "real v2 compared", r)
        t.is_(post(C_B).status, 200, "one more on b, left waiting")

        text = scrape(b)
        promtool(text, "after mixed traffic")
        m1 = values(text)
        want = {
            'webhook_bridge_requests_total{route="a",outcome="dry_run"}': 5,
            'webhook_bridge_requests_total{route="a",outcome="mapping_failed"}': 1,
            'webhook_bridge_requests_total{route="b",outcome="dry_run"}': 2,
            'webhook_bridge_requests_total{route="fwd",outcome="delivered"}': 1,
            'webhook_bridge_requests_total{route="fwd",outcome="upstream_status"}': 1,
            'webhook_bridge_requests_total{route="",outcome="invalid_input"}': 1,
            'webhook_bridge_unmapped_variables_total{route="a",variable="extra_unmapped_z"}': 1,
            'webhook_bridge_shadow_comparisons_total{route="a",result="identical"}': 1,
            'webhook_bridge_shadow_comparisons_total{route="a",result="different"}': 0,
            'webhook_bridge_request_duration_seconds_count{route="a",outcome="dry_run"}': 5,
            'webhook_bridge_upstream_latency_seconds_count{route="fwd"}': 2,
        }
        for k, v in want.items():
            t.is_(m1.get(k), float(v), "after traffic: %s" % k)
        t.ok(m1.get("webhook_bridge_shadow_waiting", 0) >= 4, "shadow_waiting counts the waiting",
             m1.get("webhook_bridge_shadow_waiting"))
        s = m1.get('webhook_bridge_request_duration_seconds_sum{route="a",outcome="dry_run"}', 0)
        t.ok(0 < s < 5, "request duration sum is in seconds with sub-ms resolution (%g)" % s)
        s = m1.get('webhook_bridge_upstream_latency_seconds_sum{route="fwd"}', 0)
        t.ok(s > 0, "upstream latency sum is not rounded to whole milliseconds (%g)" % s)
        errs = [k for k in m1 if k.startswith("webhook_bridge_mapping_errors_total{")]
        t.ok(len(errs) == 1 and re.search(r'route="a",rule="[^/"]+\.conf:\d+"', errs[0]),
             "mapping error by route and rule, no folder", errs)

        # reload: a stays, b goes, c comes
        start = m1["process_start_time_seconds"]
        with open(b.config_path, "w") as f:
            f.write(config(routes([("a", C_A), ("c", C_C), ("fwd", C_FWD)])))
        n = len([x for x in b.log_records() if x.get("event") == "reloaded"])
        b.proc.send_signal(signal.SIGHUP)
        t.ok(bt.wait_for(lambda: len([x for x in b.log_records()
                                      if x.get("event") == "reloaded"]) > n, 5), "reloaded")
        text = scrape(b)
        promtool(text, "after a reload")
        m2 = values(text)
        for k in [k for k in want if 'route="a"' in k or 'route="fwd"' in k]:
            t.is_(m2.get(k), float(want[k]), "survives the reload: %s" % k)
        t.is_(m2.get('webhook_bridge_requests_total{route="c",outcome="dry_run"}'), 0.0,
              "an added route starts at zero")
        t.ok(not [k for k in m2 if 'route="b"' in k], "a removed route is no longer exported",
             [k for k in m2 if 'route="b"' in k])
        t.is_(m2.get("process_start_time_seconds"), start, "process_start_time unchanged")
        t.is_(m2.get("webhook_bridge_config_last_reload_successful"), 1.0, "reload successful")
        t.ok(m2.get("webhook_bridge_config_last_reload_success_timestamp_seconds", 0) >=
             m1.get("webhook_bridge_config_last_reload_success_timestamp_seconds", 0),
             "reload timestamp moved on")
        t.is_(post(C_A).status, 200, "a post on a after the reload")
        m3 = values(scrape(b))
        t.is_(m3.get('webhook_bridge_requests_total{route="a",outcome="dry_run"}'), 6.0,
              "a keeps counting after the reload")

        # a refused reload
        with open(b.config_path, "w") as f:
            f.write(config(routes([("a", C_A)])) + "bogus = 1;\n")
        n = len([x for x in b.log_records() if x.get("event") == "reload_failed"])
        b.proc.send_signal(signal.SIGHUP)
        t.ok(bt.wait_for(lambda: len([x for x in b.log_records()
                                      if x.get("event") == "reload_failed"]) > n, 5),
             "reload refused")
        m4 = values(scrape(b))
        t.is_(m4.get("webhook_bridge_config_last_reload_successful"), 0.0,
              "a refused reload sets the gauge to 0")
        t.is_(m4.get('webhook_bridge_requests_total{route="a",outcome="dry_run"}'), 6.0,
              "counts unchanged by a refused reload")
        t.is_(m4.get('webhook_bridge_requests_total{route="c",outcome="dry_run"}'), 0.0,
              "the running config's routes still exported")
    finally:
        bt.stop_and_check(t, b, "metrics bridge")
        sink.stop()


def t_refusals(_t):
    """Every refusal before a post is read (a 404, a 405 on the webhook or
    the v2 path, a 401 on the v2 path, a 503 while stopping aside) is
    counted under route "" and has its access line."""
    cfg = config([bt.route("a", secret=SECRET, match={"campaign_id": [C_A]})])
    cfg = cfg.replace('path = "/hook";', 'path = "/hook";\n  auth = %s;'
                      % bt.cfg_value({"header": {"name": "X-Key", "value": "k1"}}), 1)
    b = t.start(bt.Bridge(tmp, cfg, "refusals.conf"), "bridge with listen.auth and a v2 path")
    if not b:
        return
    try:
        cases = [("GET /v2", "/v2", None, [], 405), ("POST /v2 without the key", "/v2", b"{}",
                                                      [], 401),
                 ("GET /hook", "/hook", None, ["X-Key: k1"], 405),
                 ("GET /nope", "/nope", None, ["X-Key: k1"], 404)]
        for name, path, data, headers, status in cases:
            r = bt.curl(b.url(path), data, headers=headers)
            t.is_(r.status, status, "%s: %d" % (name, status), r)
            recs = bt.wait_for(lambda: [x for x in b.log_records()
                                        if x.get("event") == "request"
                                        and x.get("path") == path
                                        and x.get("status") == status], 5)
            t.ok(recs, "%s: an access line" % name, b.stderr[-2000:])
        t.is_(bt.curl(b.url("/healthz")).status, 200, "/healthz")
        m = values(scrape(b))
        t.is_(m.get('webhook_bridge_requests_total{route="",outcome="invalid_input"}'), 3.0,
              "the 405s and the 404 are counted", sorted(m.items()))
        t.is_(m.get('webhook_bridge_requests_total{route="",outcome="unauthorized"}'), 1.0,
              "the 401 on the v2 path is counted", sorted(m.items()))
        total = sum(v for k, v in m.items() if k.startswith("webhook_bridge_requests_total"))
        t.is_(total, 4.0, "/healthz is not a post: not counted", sorted(m.items()))
    finally:
        bt.stop_and_check(t, b, "refusals bridge")


def t_worker_connections(_t):
    """A client that opens its pool at once: the two workers share it (one
    stops accepting while it holds more than one connection more than the
    other), and webhook_bridge_worker_connections shows each one's share."""
    cfg = bt.config_text([bt.route("dry")], path="/hook", workers=2)
    b = t.start(bt.Bridge(tmp, cfg, "share.conf"), "bridge with two workers")
    socks = []
    try:
        conn = {}

        def gauges():
            m = values(scrape(b))
            return {k: v for k, v in m.items()
                    if k.startswith("webhook_bridge_worker_connections")}

        conn = gauges()
        t.is_(sorted(conn), ['webhook_bridge_worker_connections{worker="0"}',
                             'webhook_bridge_worker_connections{worker="1"}'],
              "one gauge per worker", conn)
        socks = [socket.create_connection(("127.0.0.1", b.port)) for _ in range(40)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            conn = gauges()
            if sum(conn.values()) >= 40:
                break
            time.sleep(0.2)
        # the admin scrape's own connection is not on the webhook port
        t.is_(sum(conn.values()), 40.0, "the 40 connections are counted", conn)
        t.ok(all(v >= 16 for v in conn.values()),
             "each worker holds a share of the 40 (16 or more)", conn)
        for s in socks:
            s.close()
        socks = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(gauges().values()) > 0:
            time.sleep(0.2)
        t.is_(sum(gauges().values()), 0.0, "closed connections leave the gauges", gauges())
    finally:
        for s in socks:
            s.close()
        bt.stop_and_check(t, b, "two-worker bridge")


t.run("metrics", lambda _t: main())
t.run("refusals", t_refusals)
t.run("worker connections", t_worker_connections)
tmp.cleanup()
t.done()
