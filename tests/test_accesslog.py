#!/usr/bin/python3
"""The access log: one `request` line per request (webhook, shadow path,
refusals 401/403/404/405/413/415/431, admin paths and /healthz at debug),
with client, forwarded client (listen.trusted_proxies), method, path without
its query, HTTP version, user agent, status, bytes, duration, route, ids,
the rule and key of a mapping failure and a readable message; refusals
rate-limited; journald priority prefixes; debug routing lines."""

import http.client
import json
import os
import re
import signal
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
C_DRY, C_LOCK, C_FWD = 920001, 920002, 920003
SECRET = "access-secret"
FIELDS = {"time", "level", "client", "method", "path", "http_version", "status", "bytes_in",
          "bytes_out", "duration_us", "message"}


def body(**kw):
    path, raw, doc = bt.v1_fixture()
    kw.setdefault("participation_id", str(uuid.uuid4()))
    return bt.v1_variant(doc, **kw)


def lines_for(b, path, status=None):
    return [r for r in b.log_records() if r.get("event") == "request" and r.get("path") == path
            and (status is None or r.get("status") == status)]


def wait_line(b, path, status):
    return bt.wait_for(lambda: lines_for(b, path, status), 5) or []


def check_line(name, recs, **want):
    t.ok(recs, "%s: an access line" % name)
    if not recs:
        return None
    r = recs[-1]
    missing = sorted(FIELDS - set(r))
    t.is_(missing, [], "%s: the line has every common field" % name, r)
    for k, v in want.items():
        t.is_(r.get(k), v, "%s: %s" % (name, k), r)
    t.ok(isinstance(r.get("message"), str) and str(r.get("status")) in r["message"],
         "%s: a readable message" % name, r.get("message"))
    return r


def t_lines(_t):
    sink = bt.Sink()
    routes = [bt.route("dry", "dry-run", secret=SECRET, match={"campaign_id": [C_DRY]}),
              bt.route("fwd", "forward", endpoint=sink.url("/in"), secret=SECRET,
                       match={"campaign_id": [C_FWD]}),
              bt.route("locked", "dry-run", match={"campaign_id": [C_LOCK]},
                       auth={"header": {"name": "X-Key", "value": "k1"}})]
    cfg = bt.config_text(routes, path="/hook", workers=1, log_level="debug",
                         limits={"max_body": 4096, "max_headers": 20},
                         dry_run={"v2_path": "/v2"})
    cfg = cfg.replace('path = "/hook";', 'path = "/hook";\n  trusted_proxies = [ "127.0.0.1/32" ];',
                      1)
    b = bt.Bridge(tmp, cfg, "access.conf").start()
    try:
        pid = str(uuid.uuid4())
        r = bt.curl(b.url("/hook?token=q-secret-77"), body(participation_id=pid, campaign_id=C_DRY),
                    headers=["User-Agent: qualifio-test/1.0",
                             "X-Forwarded-For: 198.51.100.7, 127.0.0.1"])
        t.is_(r.status, 200, "webhook post", r)
        rec = check_line("webhook post", wait_line(b, "/hook", 200), method="POST",
                         client="127.0.0.1", forwarded_for="198.51.100.7",
                         user_agent="qualifio-test/1.0", http_version="1.1", route="dry",
                         participation_id=pid.upper(), bytes_in=len(body(participation_id=pid,
                                                                 campaign_id=C_DRY)))
        t.ok(rec and rec.get("delivery_id") and rec.get("bytes_out", 0) > 0,
             "webhook post: delivery id and bytes out", rec)
        t.ok("q-secret-77" not in b.stderr, "the query string (a token) is never logged")
        bt.wait_for(lambda: any(x.get("event") == "routed" for x in b.log_records()))
        routed = [x for x in b.log_records() if x.get("event") == "routed"]
        t.ok(routed and routed[-1].get("matched_by") == "campaign_id"
             and routed[-1].get("level") == "debug",
             "log_level debug: the routing decision is logged", routed[-1:])

        r = bt.curl(b.url("/hook"), body(campaign_id=C_FWD))
        t.is_(r.status, 200, "forward post delivered", r)
        rec = check_line("forward post",
                         bt.wait_for(lambda: [x for x in lines_for(b, "/hook", 200)
                                              if x.get("route") == "fwd"], 5) or [],
                         upstream_status=200)
        t.ok(rec and rec.get("upstream_bytes_out", 0) > 0, "forward: bytes sent upstream", rec)
        pool = bt.wait_for(lambda: [x for x in b.log_records() if x.get("event") == "pool"
                                    and x.get("route") == "fwd"], 5)
        t.ok(pool and pool[0].get("connections") == 1 and pool[0].get("level") == "debug",
             "log_level debug: the pool's new connection is logged", pool)

        r = bt.curl(b.url("/hook"), body(participation_id=None, campaign_id=C_DRY))
        t.is_(r.status, 422, "mapping failure", r)
        rec = check_line("mapping failure", wait_line(b, "/hook", 422), route="dry",
                         key="participation_id")
        t.like((rec or {}).get("rule", ""), r"qualifio-v1-to-v2\.conf:\d+$",
               "mapping failure: the rule", rec)

        cases = [
            ("404", lambda: bt.curl(b.url("/nope?x=1")), "/nope", 404, "GET"),
            ("405", lambda: bt.curl(b.url("/hook")), "/hook", 405, "GET"),
            ("415", lambda: bt.curl(b.url("/hook"), b"x", content_type="text/plain"), "/hook",
             415, "POST"),
            ("413", lambda: bt.curl(b.url("/hook"), b"{" + b" " * 5000 + b"}"), "/hook", 413,
             "POST"),
            ("431", lambda: bt.curl(b.url("/hook"), body(campaign_id=C_DRY),
                                    headers=["X-H%d: v" % i for i in range(30)]), "/hook", 431,
             "POST"),
            ("401", lambda: bt.curl(b.url("/hook"), body(campaign_id=C_LOCK)), "/hook", 401,
             "POST"),
            ("shadow path", lambda: bt.curl(b.url("/v2"), b'{"id":"x"}',
                                            headers=["X-Qualifio-Signature: sha256=00"]),
             "/v2", None, "POST"),
        ]
        for name, do, path, status, method in cases:
            r = do()
            if status:
                t.is_(r.status, status, "%s answered" % name, r)
            check_line(name, wait_line(b, path, r.status), method=method, status=r.status)
        t.is_(bt.curl(b.url("/healthz")).status, 200, "/healthz")
        check_line("/healthz", wait_line(b, "/healthz", 200), level="debug")
        t.is_(bt.curl(b.admin_url("/metrics")).status, 200, "admin /metrics")
        check_line("admin /metrics", wait_line(b, "/metrics", 200), level="debug")

        # refusals a sender can repeat are rate-limited (50 a second per worker)
        time.sleep(1.1)  # a fresh rate-limit window
        before = len(lines_for(b, "/flood"))
        c = http.client.HTTPConnection("127.0.0.1", b.port, timeout=5)
        for _ in range(120):
            c.request("GET", "/flood")
            c.getresponse().read()
        c.close()
        time.sleep(1.1)  # every line of the burst written, a fresh window again
        total = len(lines_for(b, "/flood"))
        n = total - before
        t.ok(0 < n < 120, "120 refusals in a burst: %d lines (rate-limited)" % n)
        bt.curl(b.url("/flood"))
        last = bt.wait_for(lambda: lines_for(b, "/flood", 404)[total:], 5) or []
        t.ok(last and last[-1].get("suppressed_before", 0) > 0,
             "the next line says how many were suppressed", last[-1:])
    finally:
        bt.stop_and_check(t, b, "access bridge")
        sink.stop()
    b = bt.Bridge(tmp, bt.config_text(routes[:1], path="/hook", workers=1).replace(
        'path = "/hook";', 'path = "/hook";\n  allow = [ "10.0.0.0/8" ];', 1), "deny.conf").start()
    try:
        t.is_(bt.curl(b.url("/hook"), body(campaign_id=C_DRY)).status, 403, "403")
        check_line("403", wait_line(b, "/hook", 403), status=403)
    finally:
        bt.stop_and_check(t, b, "deny bridge")


def t_journald(_t):
    b = bt.Bridge(tmp, bt.config_text([bt.route("dry")], workers=1), "journal.conf")
    b.env = dict(os.environ, JOURNAL_STREAM="8:12345")
    b.start()
    try:
        t.is_(bt.curl(b.url("/"), body()).status, 200, "post")
        with open(b.config_path, "a") as f:
            f.write("bogus = 1;\n")
        b.proc.send_signal(signal.SIGHUP)
        t.ok(bt.wait_for(lambda: any("reload_failed" in x for x in b.err_lines), 5),
             "reload refused")
    finally:
        rc = b.stop()
    t.is_(rc, 0, "journald bridge exits 0")
    lines = [x for x in b.err_lines if x.strip()]
    bad = [x for x in lines if not re.match(r"^<[3-7]>\{", x)]
    t.is_(bad, [], "under journald every line carries its priority prefix")
    pri = {}
    for x in lines:
        m = re.match(r"^<(\d)>(\{.*\})$", x.strip())
        if m:
            rec = json.loads(m.group(2))
            pri.setdefault(rec.get("event"), set()).add(int(m.group(1)))
    t.is_(pri.get("reload_failed"), {3}, "reload_failed is priority 3 (err)", pri)
    t.is_(pri.get("listening"), {6}, "listening is priority 6 (info)", pri)
    t.ok(all(json.loads(x) for x in b.out_lines if x.strip()),
         "stdout (dry-run payloads) stays plain JSON lines")


t.run("access lines", t_lines)
t.run("journald", t_journald)
tmp.cleanup()
t.done()
