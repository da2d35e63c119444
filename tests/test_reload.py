#!/usr/bin/python3
"""SIGHUP reloads config and mappings without dropping in-flight requests; a
bad new config keeps the old one running and logs why (file:line)."""

import json
import os
import signal
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()


def records(b, event):
    out = []
    for line in b.err_lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == event:
            out.append(rec)
    return out


def t_reload(_t):
    sink = bt.Sink()
    path, raw, doc = bt.v1_fixture()

    def cfg(route_name, timeout_ms=5000):
        return bt.config_text([bt.route(route_name, "forward", endpoint=sink.url("/in"),
                                        secret="k", timeout_ms=timeout_ms)],
                              path="/hook", workers=2)

    b = bt.Bridge(tmp, cfg("first"), "reload.conf").start()
    try:
        def post():
            return bt.curl(b.url("/hook"), bt.v1_variant(doc, participation_id=str(uuid.uuid4())))

        r = post()
        t.is_((r.json() or {}).get("route"), "first", "before reload: route 'first'", r)

        # a slow delivery in flight across the reload
        sink.reply(bt.Reply(200, delay=1.5))
        slow = {}
        th = threading.Thread(target=lambda: slow.setdefault("r", post()))
        th.start()
        # the slow one is the sink's second request (the first post's handler
        # may still count as in flight just after its answer was sent)
        t.ok(bt.wait_for(lambda: len(sink.requests) >= 2 and sink.inflight > 0, 5),
             "slow delivery is in flight")
        with open(b.config_path, "w") as f:
            f.write(cfg("second"))
        b.proc.send_signal(signal.SIGHUP)
        t.ok(bt.wait_for(lambda: records(b, "reloaded"), 5), "reload logged")
        th.join(10)
        r = slow.get("r")
        t.ok(r is not None and r.status == 200, "in-flight request answered 200 across the reload", r)
        t.is_((r.json() or {}).get("route") if r else None, "first",
              "in-flight request finished with the config it started with", r)
        ok_second = bt.wait_for(lambda: (post().json() or {}).get("route") == "second", 5)
        t.ok(ok_second, "after reload: route 'second' on every worker")
        routes = {(post().json() or {}).get("route") for _ in range(8)}
        t.is_(routes, {"second"}, "no worker kept the old config", routes)

        # a broken config: the running one stays, the log says file:line
        with open(b.config_path, "w") as f:
            f.write(cfg("third").replace("routes = (", "bogus = 1;\nroutes = ("))
        b.proc.send_signal(signal.SIGHUP)
        t.ok(bt.wait_for(lambda: records(b, "reload_failed"), 5), "failed reload logged")
        fail = (records(b, "reload_failed") or [{}])[-1]
        t.like(fail.get("diagnostics", ""), r"reload\.conf:\d+: unknown setting 'bogus'",
               "failed reload names file:line", fail)
        t.is_((post().json() or {}).get("route"), "second", "old config still serves", None)

        # a change that needs a restart is refused, not half-applied
        with open(b.config_path, "w") as f:
            f.write(cfg("fourth").replace("port = 0", "port = 1", 1))
        b.proc.send_signal(signal.SIGHUP)
        t.ok(bt.wait_for(lambda: any(r.get("setting") for r in records(b, "reload_failed")), 5),
             "listen port change refused with the setting named")
        t.is_((post().json() or {}).get("route"), "second", "still the second config", None)
        m = bt.curl(b.admin_url("/metrics")).body.decode()
        t.like(m, r'webhook_bridge_requests_total\{route="second",outcome="delivered"\} \d+',
               "metrics follow the reloaded routes", m[:400])
    finally:
        bt.stop_and_check(t, b, "reload bridge")
        sink.stop()


t.run("reload", t_reload)
tmp.cleanup()
t.done()
