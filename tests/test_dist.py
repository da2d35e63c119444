#!/usr/bin/python3
"""What dist/ ships for monitoring: the Prometheus alert rules pass
`promtool check rules` and their unit tests (`promtool test rules`); the
Grafana dashboard is valid JSON whose every query is valid PromQL; and every
series the rules and the dashboard read is one a running bridge exports."""

import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
DIST = os.path.join(bt.SOURCE_ROOT, "dist", "monitoring")
RULES = os.path.join(DIST, "webhook-bridge.rules.yml")
RULES_TEST = os.path.join(DIST, "webhook-bridge.rules.test.yml")
DASHBOARD = os.path.join(DIST, "grafana-webhook-bridge.json")
# a series the bridge exports, not a recording rule's name (route:…:…)
SERIES_RE = re.compile(r"(?<![:\w])(webhook_bridge_\w+|process_\w+)(?![\w:])")


def promtool(*args):
    return subprocess.run(["promtool"] + list(args), capture_output=True, text=True)


def t_rules(_t):
    p = promtool("check", "rules", RULES)
    t.is_(p.returncode, 0, "promtool check rules", p.stdout + p.stderr)
    t.like(p.stdout, r"SUCCESS: \d+ rules found", "the rules load", p.stdout)
    p = promtool("test", "rules", RULES_TEST)
    t.is_(p.returncode, 0, "promtool test rules: every alert fires when it should, only then",
          p.stdout + p.stderr)
    with open(RULES) as f:
        text = f.read()
    for name in ("WebhookBridgeEndpointFailing", "WebhookBridgeQueueGrowing",
                 "WebhookBridgeDeadLetters", "WebhookBridgeQueueStoreCorrupt",
                 "WebhookBridgeReloadFailed",
                 "WebhookBridgeShadowIdenticalRateDropping"):
        t.ok("alert: %s\n" % name in text, "rule %s shipped" % name)
        with open(RULES_TEST) as f:
            t.ok("alertname: %s\n" % name in f.read(), "rule %s has a unit test" % name)


def dashboard_exprs():
    with open(DASHBOARD) as f:
        d = json.load(f)
    exprs = [(p["title"], tg["expr"]) for p in d["panels"] for tg in p.get("targets", [])]
    return d, exprs


def t_dashboard(_t):
    d, exprs = dashboard_exprs()
    t.ok(d.get("uid") and d.get("title"), "dashboard has a uid and a title")
    titles = [p["title"] for p in d["panels"]]
    for want in ("Posts by outcome", "v2 identical rate", "Top failure kinds",
                 "Upstream latency", "Queue depth and oldest age", "Dead letters"):
        t.ok(want in titles, "dashboard panel: %s" % want, titles)
    t.ok([v for v in d["templating"]["list"] if v["name"] == "route"],
         "dashboard is per route (a route variable)")
    for title in ("Queue depth and oldest age", "Dead letters"):
        qs = [e for p, e in exprs if p == title and "webhook_bridge_queue_route_" in e]
        t.ok(qs and all('route=~"$route"' in e for e in qs),
             "panel %s reads the per-route queue series of the chosen routes" % title, qs)
    # Grafana's variables replaced by what they expand to; then each query as
    # a recording rule, so that promtool parses the PromQL
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (title, e) in enumerate(exprs):
        e = (e.replace("$__rate_interval", "5m").replace("$__range", "1h")
             .replace("$route", ".*"))
        rules += ["      - record: dashboard:query_%d" % i, "        expr: %s" % json.dumps(e)]
    path = tmp.file("dashboard-rules.yml", "\n".join(rules) + "\n")
    p = promtool("check", "rules", path)
    t.is_(p.returncode, 0, "every dashboard query is valid PromQL (%d queries)" % len(exprs),
          p.stdout + p.stderr)


def t_series_exist(_t):
    sink = bt.Sink()
    routes = [bt.route("dry", "dry-run", secret="s", match={"campaign_id": [1]}),
              bt.route("q", "forward", endpoint=sink.url("/in"), secret="s", delivery="queued"),
              bt.route("d", "dual", endpoint=sink.url("/in"), legacy_endpoint=sink.url("/v1"),
                       secret="s", match={"campaign_id": [2]})]
    cfg = bt.config_text(routes, workers=1, queue={"path": "q.db"},
                         dry_run={"v2_path": "/v2"})
    b = bt.Bridge(tmp, cfg, "dist.conf").start()
    try:
        r = bt.curl(b.admin_url("/metrics"))
        t.is_(r.status, 200, "/metrics", r)
        p = subprocess.run(["promtool", "check", "metrics"], input=r.body.decode(),
                           capture_output=True, text=True)
        t.is_(p.returncode, 0, "promtool check metrics: queue and shadow series included",
              (p.stdout + p.stderr)[:3000])
        exported = set()
        for line in r.body.decode().splitlines():
            m = re.match(r"^# TYPE (\S+) (\S+)$", line)
            if m:
                exported.add(m.group(1))
                if m.group(2) == "histogram":
                    exported |= {m.group(1) + s for s in ("_bucket", "_sum", "_count")}
        with open(RULES) as f:
            used = set(SERIES_RE.findall(f.read()))
        used |= {n for _, e in dashboard_exprs()[1] for n in SERIES_RE.findall(e)}
        t.ok(len(used) >= 10, "the rules and the dashboard read %d series" % len(used),
             sorted(used))
        for f in ("depth", "oldest_age_seconds", "dead_letters"):
            t.ok('webhook_bridge_queue_route_%s{route="q"} 0' % f in r.body.decode(),
                 "the queued route's %s at zero from the start" % f)
        missing = sorted(used - exported)
        t.is_(missing, [], "every series the rules and dashboard read is exported",
              sorted(exported))
    finally:
        bt.stop_and_check(t, b, "dist bridge")
        sink.stop()


t.run("rules", t_rules)
t.run("dashboard", t_dashboard)
t.run("series exist", t_series_exist)
tmp.cleanup()
t.done()
