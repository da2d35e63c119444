#!/usr/bin/python3
"""The admin listener apart from the webhook listener: /metrics,
/dry-run/summary and /readyz only on the admin port (with its own auth,
allow-list and TLS), the webhook port serves the webhook, the shadow path and
/healthz and 404s the rest without a hint; /readyz says 503 while draining;
answers to the sender name no host, port or folder of the host."""

import base64
import os
import re
import signal
import subprocess
import sys
import threading
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
TOKEN = ["X-Webhook-Token: tok-777"]
ADMIN_PATHS = ["/metrics", "/dry-run/summary", "/readyz"]


def body(**kw):
    path, raw, doc = bt.v1_fixture()
    kw.setdefault("participation_id", str(uuid.uuid4()))
    return bt.v1_variant(doc, **kw)


def routes():
    return [bt.route("shadow", "dry-run", secret="s")]


def no_hint(r):
    text = r.body.decode("utf-8", "replace")
    return not re.search(r"metrics|readyz|summary|admin", text)


def t_split(_t):
    cfg = bt.config_text(routes(), path="/hook", workers=1, dry_run={"v2_path": "/v2"})
    cfg = cfg.replace('path = "/hook";',
                      'path = "/hook";\n  auth = { header = { name = "X-Webhook-Token"; '
                      'value = "tok-777"; }; };', 1)
    b = bt.Bridge(tmp, cfg, "split.conf").start()
    try:
        t.ok(b.admin_port and b.admin_port != b.port, "admin listener on its own port")
        t.is_(bt.curl(b.url("/hook"), body(), headers=TOKEN).status, 200, "webhook post")
        for p in ADMIN_PATHS + ["/nope"]:
            for hdr in ([], TOKEN):
                r = bt.curl(b.url(p), headers=hdr)
                bt.check_json_response(t, r, 404, "webhook port GET %s%s" % (
                    p, " with the credential" if hdr else ""), error="not_found")
                t.ok(no_hint(r), "webhook port 404 for %s gives no hint of the admin paths" % p, r)
        r = bt.curl(b.url("/healthz"))
        t.is_(r.status, 200, "webhook port keeps /healthz for load balancers", r)
        r = bt.curl(b.url("/v2"), b"{}", headers=TOKEN + ["X-Qualifio-Signature: sha256=00"])
        t.ok(r.status in (401, 422) and (r.json() or {}).get("error") in
             ("bad_signature", "missing_id"), "webhook port serves the shadow path", r)

        r = bt.curl(b.admin_url("/metrics"))
        t.is_(r.status, 200, "admin port: /metrics 200", r)
        t.like(r.header("content-type") or "", r"^text/plain", "/metrics is text/plain", r)
        t.like(r.body.decode(), r'webhook_bridge_requests_total\{route="shadow",outcome="dry_run"\} 1',
               "the webhook post is counted", r)
        r = bt.curl(b.admin_url("/dry-run/summary"))
        d = bt.check_json_response(t, r, 200, "admin port: /dry-run/summary")
        t.ok(d is not None and "seen" in d, "summary has its counts", r)
        r = bt.curl(b.admin_url("/readyz"))
        d = bt.check_json_response(t, r, 200, "admin port: /readyz")
        t.is_((d or {}).get("routes"), 1, "/readyz reports the loaded routes", r)
        t.is_(bt.curl(b.admin_url("/healthz")).status, 200, "admin port: /healthz 200")
        r = bt.curl(b.admin_url("/hook"), body())
        bt.check_json_response(t, r, 404, "admin port does not take webhook posts",
                               error="not_found")
        r = bt.curl(b.admin_url("/metrics"), b"x", method="POST")
        bt.check_json_response(t, r, 405, "admin port: POST /metrics", error="method_not_allowed")
        r = bt.curl(b.admin_url("/metrics"), method="HEAD")
        t.is_(r.status, 200, "admin port: HEAD /metrics", r)
    finally:
        bt.stop_and_check(t, b, "split bridge")


def t_admin_auth(_t):
    admin = {"address": "127.0.0.1", "port": 0,
             "auth": {"basic": {"user": "ops", "password": "adm-pw"}}}
    b = bt.Bridge(tmp, bt.config_text(routes(), workers=1, admin=admin), "admin-auth.conf").start()
    try:
        for p in ["/metrics", "/readyz"]:
            r = bt.curl(b.admin_url(p))
            bt.check_json_response(t, r, 401, "admin.auth set, no credential: %s" % p,
                                   error="unauthorized")
        good = "Authorization: Basic " + base64.b64encode(b"ops:adm-pw").decode()
        bad = "Authorization: Basic " + base64.b64encode(b"ops:adm-px").decode()
        t.is_(bt.curl(b.admin_url("/metrics"), headers=[good]).status, 200,
              "admin.auth: the right credential gets /metrics")
        t.is_(bt.curl(b.admin_url("/metrics"), headers=[bad]).status, 401,
              "admin.auth: a wrong password is 401")
        t.is_(bt.curl(b.url("/"), body()).status, 200,
              "admin.auth does not apply to the webhook port")
        # admin.auth follows a reload (address, port and TLS need a restart)
        with open(b.config_path, "w") as f:
            f.write(bt.config_text(routes(), workers=1, admin={
                "address": "127.0.0.1", "port": 0,
                "auth": {"basic": {"user": "ops", "password": "rotated"}}}))
        b.proc.send_signal(signal.SIGHUP)
        t.ok(bt.wait_for(lambda: any(x.get("event") == "reloaded" for x in b.log_records()), 5),
             "reloaded with a new admin password")
        t.is_(bt.curl(b.admin_url("/metrics"), headers=[good]).status, 401,
              "after the reload the old admin password is refused")
        new = "Authorization: Basic " + base64.b64encode(b"ops:rotated").decode()
        t.is_(bt.curl(b.admin_url("/metrics"), headers=[new]).status, 200,
              "after the reload the new admin password is accepted")
    finally:
        bt.stop_and_check(t, b, "admin-auth bridge")
    admin = {"address": "127.0.0.1", "port": 0, "allow": ["10.0.0.0/8"]}
    b = bt.Bridge(tmp, bt.config_text(routes(), workers=1, admin=admin), "admin-deny.conf").start()
    try:
        r = bt.curl(b.admin_url("/metrics"))
        bt.check_json_response(t, r, 403, "admin.allow without loopback", error="forbidden")
        t.is_(bt.curl(b.url("/"), body()).status, 200, "admin.allow does not apply to webhooks")
    finally:
        bt.stop_and_check(t, b, "admin-deny bridge")


def t_admin_tls(_t):
    pki = bt.Pki(tmp)
    admin = {"address": "127.0.0.1", "port": 0,
             "tls": {"cert_file": pki.good_cert, "key_file": pki.good_key}}
    b = bt.Bridge(tmp, bt.config_text(routes(), workers=1, admin=admin), "admin-tls.conf").start()
    try:
        p = subprocess.run(["curl", "-sS", "--cacert", pki.ca_cert, "-o", "/dev/null", "-w",
                            "%{http_code} %{ssl_verify_result}",
                            b.admin_url("/metrics", "https")], capture_output=True, text=True)
        t.is_(p.stdout.strip(), "200 0", "admin.tls: verified HTTPS /metrics 200", p)
        t.is_(bt.curl(b.admin_url("/metrics")).status, 0, "admin.tls: plain HTTP gets nothing")
        t.is_(bt.curl(b.url("/"), body()).status, 200, "the webhook port stays plain HTTP")
    finally:
        bt.stop_and_check(t, b, "admin-tls bridge")


def t_no_admin(_t):
    b = bt.Bridge(tmp, bt.config_text(routes(), workers=1, admin=None), "no-admin.conf").start()
    try:
        t.is_(b.admin_port, None, "no admin group: no admin listener")
        for p in ADMIN_PATHS:
            r = bt.curl(b.url(p))
            t.is_(r.status, 404, "no admin group: %s is not served" % p, r)
        t.is_(bt.curl(b.url("/healthz")).status, 200, "no admin group: /healthz still answers")
    finally:
        bt.stop_and_check(t, b, "no-admin bridge")
    r = bt.run_cli(["check", "--config", tmp.file("same-port.conf", bt.config_text(
        routes(), port=18555, admin={"address": "127.0.0.1", "port": 18555}))])
    t.is_(r.rc, 1, "admin and listen on the same address and port: config error", r)
    t.like(r.stderr, r"cannot share", "the error says why", r)


def t_readyz_draining(_t):
    sink = bt.Sink()
    sink.default = bt.Reply(200, delay=3.0)
    rts = [bt.route("slow", "forward", endpoint=sink.url("/in"), secret="s")]
    b = bt.Bridge(tmp, bt.config_text(rts, workers=1), "drain.conf").start()
    try:
        t.is_(bt.curl(b.admin_url("/readyz")).status, 200, "/readyz 200 before the drain")
        got = {}
        th = threading.Thread(target=lambda: got.setdefault("r", bt.curl(b.url("/"), body())))
        th.start()
        t.ok(sink.wait_requests(1), "the slow endpoint has the post")
        b.terminate()
        t.ok(bt.wait_for(lambda: any(x.get("event") == "stopping" for x in b.log_records()), 5),
             "the bridge is stopping")
        r = bt.curl(b.admin_url("/readyz"))
        d = bt.check_json_response(t, r, 503, "/readyz while draining", error="not_ready")
        t.like((d or {}).get("message", ""), "draining", "/readyz says it is draining", r)
        t.is_(bt.curl(b.admin_url("/metrics")).status, 200, "/metrics still answers while draining")
        th.join(15)
        t.is_(got.get("r") and got["r"].status, 200, "the post in flight is delivered")
    finally:
        bt.stop_and_check(t, b, "drain bridge")
        sink.stop()


def t_inside_hidden(_t):
    port = bt.refused_port()
    rts = [bt.route("down", "forward", endpoint="http://127.0.0.1:%d/x" % port, secret="s")]
    b = bt.Bridge(tmp, bt.config_text(rts, workers=1), "inside.conf").start()
    try:
        r = bt.curl(b.url("/"), body())
        d = bt.check_json_response(t, r, 502, "endpoint down", error="upstream_unreachable")
        t.is_((d or {}).get("route"), "down", "502 names the route", r)
        t.ok(str(port) not in r.body.decode() and "127.0.0.1" not in r.body.decode(),
             "502 body names no host:port", r)
        did = (d or {}).get("delivery_id")
        lines = bt.wait_for(lambda: [x for x in b.log_records() if x.get("event") == "request"
                                     and x.get("delivery_id") == did], 5) or [{}]
        t.like(lines[0].get("error", ""), r"127\.0\.0\.1:%d" % port, "the log has host:port",
               lines)
        r = bt.curl(b.url("/"), body(participation_id=None))
        d = bt.check_json_response(t, r, 422, "mapping failure", error="mapping_failed")
        t.like((d or {}).get("rule", ""), r"^qualifio-v1-to-v2\.conf:\d+$",
               "the rule is named without the host's folders", r)
    finally:
        bt.stop_and_check(t, b, "inside bridge")
    # a mapping under the config's folder is named relative to it
    os.makedirs(tmp.join("cfgdir/mappings"), exist_ok=True)
    with open(bt.MAPPING) as f:
        tmp.file("cfgdir/mappings/rules.conf", f.read())
    rts = [bt.route("rel", "dry-run", mapping="mappings/rules.conf")]
    b = bt.Bridge(tmp, bt.config_text(rts, workers=1), "cfgdir/rel.conf").start()
    try:
        r = bt.curl(b.url("/"), body(participation_id=None))
        d = bt.check_json_response(t, r, 422, "mapping failure", error="mapping_failed")
        t.like((d or {}).get("rule", ""), r"^mappings/rules\.conf:\d+$",
               "the rule is relative to the config's folder", r)
        m = bt.curl(b.admin_url("/metrics")).body.decode()
        t.like(m, r'webhook_bridge_mapping_errors_total\{route="rel",rule="mappings/rules\.conf:\d+"\} 1',
               "the metric label is relative too", m[:2000])
    finally:
        bt.stop_and_check(t, b, "relative bridge")


t.run("split", t_split)
t.run("admin auth and allow", t_admin_auth)
t.run("admin tls", t_admin_tls)
t.run("no admin group", t_no_admin)
t.run("readyz while draining", t_readyz_draining)
t.run("inside hidden", t_inside_hidden)
tmp.cleanup()
t.done()
