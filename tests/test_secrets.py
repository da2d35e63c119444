#!/usr/bin/python3
"""Credentials and personal data stay where they belong: a capture never
stores an inbound credential, the dry-run report is readable by its owner
only."""

import base64
import json
import os
import signal
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()


body = bt.fresh_v1_body


def listen_config(listen_extra="", routes=None, extra=""):
    return bt.listen_config(listen_extra, routes, extra)


def start(cfg, name, preexec=None):
    return bt.start_bridge(t, tmp, cfg, name, preexec)


def t_record_headers(_t):
    """4: record.headers naming a credential header is refused at load,
    with file:line; the same capture without it starts."""
    cases = [
        ("Authorization", ""),
        ("proxy-authorization", ""),
        ("X-Hook-Key", 'auth = { header = { name = "X-Hook-Key"; value = "k1"; }; };'),
    ]
    for name, listen in cases:
        cfg = listen_config(listen, extra='record = { path = "%s";\n headers = [ "User-Agent",'
                            ' "%s" ]; };' % (tmp.join("cap.ndjson"), name))
        path = tmp.file("rec.conf", cfg)
        r = bt.run_cli(["check", "--config", path], t=t)
        t.ok(r.rc != 0, "check refuses record.headers = %s" % name, repr(r))
        t.like(r.stderr, r"rec\.conf:\d+: .*record\.headers names '%s'" % name,
               "the refusal names file:line and the header (%s)" % name, r.stderr)
    # a route's own inbound auth header counts too
    route = bt.route("dry", auth={"header": {"name": "X-Route-Key", "value": "r1"}})
    cfg = listen_config("", [route], extra='record = { path = "%s"; headers = [ "X-Route-Key" ];'
                        ' };' % tmp.join("cap.ndjson"))
    r = bt.run_cli(["check", "--config", tmp.file("rec2.conf", cfg)], t=t)
    t.ok(r.rc != 0, "check refuses a route's auth header in record.headers", repr(r))
    cfg = listen_config("", extra='record = { path = "%s"; headers = [ "User-Agent" ]; };'
                        % tmp.join("cap.ndjson"))
    r = bt.run_cli(["check", "--config", tmp.file("rec3.conf", cfg)], t=t)
    t.is_(r.rc, 0, "a capture keeping only User-Agent is accepted", repr(r))


def t_report_mode(_t):
    """5: the dry-run report is created 0600 whatever the umask, and a report
    left 0640 by an older version is tightened to 0600."""
    for name, pre in (("new", None), ("old", 0o640)):
        report = tmp.join("report-%s.jsonl" % name)
        if pre is not None:
            with open(report, "w", encoding="utf-8"):
                pass
            os.chmod(report, pre)
        cfg = listen_config(extra='dry_run = { report = "%s"; };' % report)
        b = start(cfg, "report-%s.conf" % name, preexec=lambda: os.umask(0))
        try:
            r = bt.curl(b.url("/hook"), body())
            t.is_(r.status, 200, "%s report: dry-run post answered" % name, r)
            t.ok(bt.wait_for(lambda: os.path.getsize(report) > 0, 5),
                 "%s report: the post is written" % name)
            mode = stat.S_IMODE(os.stat(report).st_mode)
            t.is_(oct(mode), oct(0o600), "%s report: mode 0600" % name)
        finally:
            bt.stop_and_check(t, b)


QUERY_SECRET = "q-s3cr3t-77"
HEADER_SECRET = "hdr-s3cr3t-88"


def queue_route_config(endpoint):
    route = bt.route("q", "forward", endpoint=endpoint, secret="k", delivery="queued",
                     auth_header={"name": "X-Access-Code", "value": HEADER_SECRET})
    return bt.config_text([route], path="/hook",
                          queue={"path": tmp.join("secrets.db"), "backoff_base_ms": 60000,
                                 "backoff_max_ms": 60000})


def t_masking(_t):
    """2, 3: an auth header under any name and every query value of an
    endpoint are masked in check, the route log line (start and reload),
    queue list --json and queue show; --reveal shows them."""
    endpoint = "http://127.0.0.1:%d/in?key=%s" % (bt.refused_port(), QUERY_SECRET)
    cfg = queue_route_config(endpoint)
    cfg_path = tmp.file("mask.conf", cfg)
    r = bt.run_cli(["check", "--config", cfg_path], t=t)
    t.is_(r.rc, 0, "check accepts the config", r)
    t.ok(QUERY_SECRET not in r.stdout + r.stderr, "check does not print the query value", r)
    t.like(r.stdout, r"endpoint http://127\.0\.0\.1:\d+/in\?key=\*\*\*",
           "check shows the endpoint with its value masked", r)
    b = start(cfg, "mask.conf")
    try:
        t.is_(bt.curl(b.url("/hook"), body()).status, 202, "post queued (endpoint down)")
        b.proc.send_signal(signal.SIGHUP)
        t.ok(bt.wait_for(lambda: any('"reloaded"' in x for x in b.err_lines), 10),
             "reload logged")
        routes = [x for x in b.err_lines if '"event":"route"' in x]
        t.ok(len(routes) >= 1 and all("key=***" in x for x in routes),
             "route log lines show the masked endpoint", routes)
        t.ok(QUERY_SECRET not in b.stderr, "no log line holds the query value",
             b.stderr[-2000:])
        lst = bt.run_cli(["queue", "--config", cfg_path, "list", "--json"], t=t)
        t.is_(lst.rc, 0, "queue list --json runs", lst)
        t.ok(QUERY_SECRET not in lst.stdout, "queue list --json masks the query value", lst)
        rows = [json.loads(x) for x in lst.stdout.splitlines() if x.strip()]
        t.require(len(rows) == 1, "one queued row", lst)
        qid = str(rows[0]["id"])
        for args in (["show", qid], ["show", qid, "--json"]):
            sh = bt.run_cli(["queue", "--config", cfg_path] + args, t=t)
            t.is_(sh.rc, 0, "queue %s runs" % " ".join(args), sh)
            t.ok(HEADER_SECRET not in sh.stdout,
                 "queue %s masks the auth header X-Access-Code" % " ".join(args), sh)
            t.ok(QUERY_SECRET not in sh.stdout,
                 "queue %s masks the query value" % " ".join(args), sh)
            t.ok("X-Access-Code" in sh.stdout, "queue %s still names the header"
                 % " ".join(args), sh)
        sh = bt.run_cli(["queue", "--config", cfg_path, "show", qid, "--reveal"], t=t)
        t.ok(HEADER_SECRET in sh.stdout and QUERY_SECRET in sh.stdout,
             "queue show --reveal shows both", sh)
    finally:
        bt.stop_and_check(t, b)

    # an endpoint with user-info is refused without echoing the password
    bad = bt.config_text([bt.route("f", "forward", endpoint="http://bob:hunter2pw@127.0.0.1/x",
                                   secret="k")], path="/hook")
    r = bt.run_cli(["check", "--config", tmp.file("userinfo.conf", bad)], t=t)
    t.ok(r.rc != 0, "user-info in an endpoint is refused", r)
    t.like(r.stderr, r"userinfo\.conf:\d+: endpoint 'http://bob:\*\*\*@127\.0\.0\.1/x'",
           "the refusal quotes the URL with the password masked", r)
    t.ok("hunter2pw" not in r.stderr + r.stdout, "the password is not echoed", r)


def t_legacy_credentials(_t):
    """1: the legacy passthrough never forwards the bridge's own inbound
    credentials (Basic, header token, the route's auth header); it sends
    legacy_auth_header instead, and every end-to-end header up to
    limits.max_headers, not just 63."""
    legacy = bt.Sink()
    v2 = bt.Sink()
    b = None
    try:
        routes = [bt.route("dual", "dual", endpoint=v2.url("/v2"), secret="k",
                           legacy_endpoint=legacy.url("/v1"),
                           auth={"header": {"name": "X-Route-Key", "value": "route-k"}},
                           legacy_auth_header={"name": "Authorization",
                                               "value": "Bearer legacy-own"})]
        listen = ('auth = { basic = { user = "q"; password = "basic-pw"; };\n'
                  '         header = { name = "X-Hook-Token"; value = "hook-t"; };\n'
                  '         query = { name = "token"; value = "query-t"; }; };')
        cfg = listen_config(listen, routes, extra="limits = { max_headers = 120; };")
        b = start(cfg, "legacy.conf")
        extra = ["X-Extra-%03d: v%d" % (i, i) for i in range(80)]
        basic = "Basic " + base64.b64encode(b"q:basic-pw").decode()
        r = bt.curl(b.url("/hook?token=query-t"), body(),
                    headers=["Authorization: " + basic, "X-Hook-Token: hook-t",
                             "X-Route-Key: route-k"] + extra)
        t.is_(r.status, 200, "dual post with every credential answered", r)
        t.require(legacy.wait_requests(1, 10), "the legacy importer got the post")
        got = legacy.requests[-1]
        t.is_(got.all("Authorization"), ["Bearer legacy-own"],
              "legacy gets only its own legacy_auth_header, not the sender's Basic", got)
        t.is_(got.header("X-Hook-Token"), None, "the listen.auth header token is stripped", got)
        t.is_(got.header("X-Route-Key"), None, "the route's auth header is stripped", got)
        t.ok("query-t" not in got.path, "the query token is not in the forwarded URL",
             got.path)
        kept = [h for h in extra if got.header(h.split(":")[0]) == h.split(": ")[1]]
        t.is_(len(kept), len(extra), "all %d end-to-end headers forwarded (not just 63)"
              % len(extra), got)
    finally:
        if b is not None:
            bt.stop_and_check(t, b)
        legacy.stop()
        v2.stop()


def main():
    t.run("record.headers refuses credential headers (item 4)", t_record_headers)
    t.run("dry-run report is 0600 (item 5)", t_report_mode)
    t.run("credentials masked (items 2, 3)", t_masking)
    t.run("legacy passthrough credentials and headers (item 1)", t_legacy_credentials)
    tmp.cleanup()
    t.done()


if __name__ == "__main__":
    main()
