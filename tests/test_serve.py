#!/usr/bin/python3
"""`serve` in dry-run mode (no upstream): the HTTP API, its errors and routing."""

import json
import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
HOOK = "/webhook/v1"
MAX_BODY = 65536
MAX_HEADERS = 8192

state = {"dry_runs": 0}


def post(bridge, body, ct="application/json", path=HOOK, **kw):
    return bt.curl(bridge.url(path), body, content_type=ct, **kw)


def t_healthz(t, b):
    r = bt.curl(b.url("/healthz"))
    doc = bt.check_json_response(t, r, 200, "GET /healthz")
    t.is_(doc, {"status": "ok"}, "GET /healthz body is {\"status\":\"ok\"}")
    r = bt.curl(b.url("/healthz"), method="HEAD")
    t.is_(r.status, 200, "HEAD /healthz: 200", r)


def t_dry_run(t, b, ctx):
    path, raw, doc = bt.v1_fixture()
    m = bt.map_output(path, t=t)
    t.require(m.rc == 0, "map on the fixture exits 0", m)
    want = json.loads(m.out)
    before = len(b.dry_run_lines())
    r = post(b, raw)
    body = bt.check_json_response(t, r, 200, "dry-run post")
    t.require(body is not None, "dry-run post answered")
    state["dry_runs"] += 1
    t.is_(body.get("status"), "dry-run", "status is dry-run", r)
    t.is_(body.get("route"), "dry", "route is named", r)
    t.like(body.get("delivery_id"), bt.UUID_RE.pattern, "delivery_id is UUID-shaped", r)
    t.is_(body.get("participation_id"), want.get("id"), "participation_id is the v2 id", r)
    t.ok(isinstance(body.get("unmapped"), list), "unmapped is a list", r)
    t.is_(body.get("v2"), want, "response v2 equals `map` output for the same file")
    bt.check_v2(t, body.get("v2"), "response v2")
    ctx["v2"] = want
    ctx["delivery_id"] = body.get("delivery_id")

    bt.wait_for(lambda: len(b.dry_run_lines()) > before, 3)
    new = b.dry_run_lines()[before:]
    t.is_(len(new), 1, "exactly one dry-run line on stdout", "".join(new))
    if new:
        try:
            line = json.loads(new[0])
        except ValueError:
            line = None
        t.ok(isinstance(line, dict), "stdout dry-run line is a JSON object", new[0])
        if isinstance(line, dict):
            t.is_(line.get("event"), "dry-run", "stdout line event is dry-run")
            t.ok(isinstance(line.get("time"), str) and line.get("time"), "stdout line has a time")
            t.is_(line.get("route"), "dry", "stdout line names the route")
            t.is_(line.get("delivery_id"), body.get("delivery_id"),
                  "stdout line delivery_id equals the response's")
            t.is_(line.get("participation_id"), want.get("id"), "stdout line participation_id")
            t.is_(line.get("unmapped"), body.get("unmapped"), "stdout line unmapped list")
            t.is_(line.get("v2"), want, "stdout line v2 equals `map` output")

    r = post(b, raw, ct="application/json; charset=utf-8")
    body2 = bt.check_json_response(t, r, 200, "post with charset parameter")
    state["dry_runs"] += 1
    if body2:
        t.is_(body2.get("v2"), want, "charset parameter: same v2")
        t.is_(body2.get("delivery_id"), body.get("delivery_id"),
              "same post twice: same delivery_id")


def t_form(t, b, ctx):
    path, raw, doc = bt.v1_fixture()
    want = ctx.get("v2")
    t.require(want is not None, "JSON dry-run result available for comparison")
    r = post(b, bt.form_encode(doc), ct="application/x-www-form-urlencoded")
    body = bt.check_json_response(t, r, 200, "form-urlencoded post")
    state["dry_runs"] += 1
    if body:
        t.is_(body.get("status"), "dry-run", "form post: status dry-run", r)
        bt.check_v2(t, body.get("v2"), "form post v2")
        t.is_(bt.stringify_scalars(body.get("v2")), bt.stringify_scalars(want),
              "form post gives the JSON post's v2 (numbers compared as text)")


def t_malformed(t, b):
    body = b'{"participation_id": "0d5b8bd6-2d5f-4f3e-9d2a-1f0c9c4f0a11", "ip": @}'
    at = body.index(b"@")
    r = post(b, body)
    doc = bt.check_json_response(t, r, 400, "malformed JSON", error="invalid_json")
    if doc:
        t.ok(doc.get("offset") in (at, at + 1),
             "malformed JSON: offset is the byte offset %d" % at, repr(r))
    body = b"participation_id=abc&ip=%G1"
    at = body.index(b"%G")
    r = post(b, body, ct="application/x-www-form-urlencoded")
    doc = bt.check_json_response(t, r, 400, "malformed form", error="invalid_form")
    if doc:
        off = doc.get("offset")
        t.ok(isinstance(off, int) and at <= off <= at + 2,
             "malformed form: offset points at the bad escape (%d)" % at, repr(r))


def t_media_type(t, b):
    path, raw, doc = bt.v1_fixture()
    r = post(b, raw, ct="text/plain")
    bt.check_json_response(t, r, 415, "text/plain", error="unsupported_media_type")
    r = post(b, raw, ct=None)
    bt.check_json_response(t, r, 415, "no Content-Type", error="unsupported_media_type")


def t_methods_paths(t, b):
    r = bt.curl(b.url(HOOK))
    bt.check_json_response(t, r, 405, "GET on the webhook path", error="method_not_allowed")
    r = bt.curl(b.url(HOOK), b"{}", method="PUT")
    bt.check_json_response(t, r, 405, "PUT on the webhook path", error="method_not_allowed")
    path, raw, doc = bt.v1_fixture()
    r = post(b, raw, path="/")
    bt.check_json_response(t, r, 404, "POST on an unknown path", error="not_found")
    r = bt.curl(b.url("/nope"))
    bt.check_json_response(t, r, 404, "GET on an unknown path", error="not_found")
    r = post(b, b"{}", path="/healthz")
    bt.check_json_response(t, r, 405, "POST on /healthz", error="method_not_allowed")


def t_too_large(t, b):
    path, raw, doc = bt.v1_fixture()
    filler = "x" * (MAX_BODY + 100)
    big = bt.v1_variant(doc, padding=filler)
    r = post(b, big)
    bt.check_json_response(t, r, 413, "body over max_body", error="body_too_large")
    r = post(b, big, expect=True, headers=["Expect: 100-continue"])
    bt.check_json_response(t, r, 413, "body over max_body with Expect: 100-continue",
                           error="body_too_large")
    r = bt.curl(b.url("/healthz"))
    t.is_(r.status, 200, "bridge still serves after 413s", r)


def t_far_too_large(t, b):
    path, raw, doc = bt.v1_fixture()
    # Past the hard ceiling (2 x max_body + 64 KiB) libevent refuses the body
    # itself, before the bridge sees the request; the bridge rewrites
    # libevent's HTML page into its JSON error shape.
    big = bt.v1_variant(doc, padding="x" * (MAX_BODY * 4))
    r = post(b, big)
    bt.check_json_response(t, r, 413, "body at 4 x max_body", error="body_too_large")
    r = post(b, raw, headers=["X-Filler: " + "y" * (MAX_HEADERS + 1000)])
    t.ok(r.status in (400, 413, 431), "headers over max_header_bytes refused (%d)" % r.status, r)
    bt.check_json_response(t, r, r.status, "headers over max_header_bytes answered in JSON")
    r = bt.curl(b.url("/healthz"))
    t.is_(r.status, 200, "bridge still serves after oversize requests", r)


def t_framing(t, b):
    """Our own framing checks (libevent's framing is lax): ambiguous bodies are refused."""
    body = b'{"participation_id":"x"}'
    head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" % HOOK
    cases = [
        ("two Content-Length headers",
         head + "Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(body), len(body))),
        ("Transfer-Encoding with Content-Length",
         head + "Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n" % (len(body) + 7)),
    ]
    for name, h in cases:
        data = h.encode() + (body if "Transfer" not in name else
                             b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        r = bt.raw_request(b.port, data)
        # Debian's libevent refuses TE + CL itself; its page is rewritten to JSON
        bt.check_json_response(t, r, 400, name)


def t_missing_key(t, b):
    path, raw, doc = bt.v1_fixture()
    r = post(b, bt.v1_variant(doc, participation_id=None))
    d = bt.check_json_response(t, r, 422, "missing participation_id", error="mapping_failed")
    if d:
        t.is_(d.get("key"), "participation_id", "mapping_failed names the key", repr(r))
        t.like(d.get("message"), r"participation_id", "message names the key", repr(r))
        t.like(d.get("rule"), r"^.+:\d+$", "mapping_failed names the rule as file:line", repr(r))
        t.is_(d.get("route"), "dry", "error after routing names the route", repr(r))


def t_routing(t):
    W, C = 4242, 987654
    routes = [
        bt.route("catch-all"),
        bt.route("by-website", match={"website_id": [W, 7]}),
        bt.route("by-website-2", match={"website_id": [W]}),
        bt.route("by-campaign", match={"campaign_id": [11, C]}),
        bt.route("by-campaign-2", match={"campaign_id": [C]}),
    ]
    b = bt.Bridge(tmp, bt.config_text(routes, path=HOOK), "routing.conf").start()
    try:
        path, raw, doc = bt.v1_fixture()
        cases = [
            ((W, C), "by-campaign", "campaign route beats website route and catch-all"),
            ((W, C + 1), "by-website", "website route beats catch-all"),
            ((W + 1, C + 1), "catch-all", "catch-all takes the rest"),
            ((W + 1, C), "by-campaign", "campaign route without website match"),
            ((7, 11), "by-campaign", "any id of a match list counts"),
            ((str(W), str(C + 1)), "by-website", "numeric strings match like numbers"),
        ]
        for (w, c), want, name in cases:
            r = post(b, bt.v1_variant(doc, website_id=w, campaign_id=c,
                                       participation_id=str(uuid.uuid4())))
            d = bt.check_json_response(t, r, 200, "routing %s/%s" % (w, c))
            t.is_(d and d.get("route"), want, name, repr(r))
    finally:
        bt.stop_and_check(t, b, "routing bridge")


def t_unrouted(t):
    routes = [bt.route("only-site-1", match={"website_id": [1]})]
    path, raw, doc = bt.v1_fixture()
    W, C = 31337, 424242
    post_body = bt.v1_variant(doc, website_id=W, campaign_id=C)
    b = bt.Bridge(tmp, bt.config_text(routes, path=HOOK), "unrouted-reject.conf").start()
    try:
        r = post(b, post_body)
        d = bt.check_json_response(t, r, 422, "unrouted post (reject)", error="no_route")
        if d:
            t.is_(str(d.get("website_id")), str(W), "no_route carries website_id", repr(r))
            t.is_(str(d.get("campaign_id")), str(C), "no_route carries campaign_id", repr(r))
            msg = d.get("message") or ""
            t.ok(str(W) in msg and str(C) in msg, "no_route message names both ids", repr(r))
        r = post(b, bt.v1_variant(doc, website_id=1, campaign_id=C))
        d = bt.check_json_response(t, r, 200, "website 1 still routed")
        t.is_(d and d.get("route"), "only-site-1", "website 1 goes to its route", repr(r))
    finally:
        bt.stop_and_check(t, b, "unrouted=reject bridge")
    t.is_(len(b.dry_run_lines()), 1, "rejected post printed no dry-run line", b.stdout)

    b = bt.Bridge(tmp, bt.config_text(routes, path=HOOK, unrouted="accept"),
                  "unrouted-accept.conf").start()
    try:
        r = post(b, post_body)
        d = bt.check_json_response(t, r, 202, "unrouted post (accept)")
        t.is_(d and d.get("status"), "dropped", "unrouted=accept: status dropped", repr(r))
    finally:
        bt.stop_and_check(t, b, "unrouted=accept bridge")
    t.is_(len(b.dry_run_lines()), 0, "dropped post printed no dry-run line", b.stdout)
    t.ok(any(rec.get("level") for rec in b.log_records()
             if str(W) in json.dumps(rec) or "drop" in json.dumps(rec)),
         "dropped post is logged", b.stderr[-2000:])


def main():
    cfg = bt.config_text([bt.route("dry")], path=HOOK,
                         limits={"max_body": MAX_BODY, "max_header_bytes": MAX_HEADERS,
                                 "request_timeout_ms": 5000})
    b = t.start(bt.Bridge(tmp, cfg, "serve.conf"), "dry-run bridge starts")
    if b is not None:
        ctx = {}
        try:
            t.run("healthz", t_healthz, b)
            t.run("dry-run post", t_dry_run, b, ctx)
            t.run("form post", t_form, b, ctx)
            t.run("malformed bodies", t_malformed, b)
            t.run("media types", t_media_type, b)
            t.run("methods and paths", t_methods_paths, b)
            t.run("body too large", t_too_large, b)
            t.run("missing required key", t_missing_key, b)
            t.run("far too large", t_far_too_large, b)
            t.run("ambiguous framing", t_framing, b)
        finally:
            bt.stop_and_check(t, b, "dry-run bridge")
        t.is_(len(b.dry_run_lines()), state["dry_runs"],
              "stdout has exactly one line per successful dry-run post", b.stdout[-3000:])
        bad = [l for l in b.dry_run_lines() if not _is_dry_run_line(l)]
        t.ok(not bad, "every stdout line is a dry-run JSON record", "".join(bad[:5]))
    t.run("route precedence", t_routing)
    t.run("unrouted posts", t_unrouted)


def _is_dry_run_line(line):
    try:
        d = json.loads(line)
    except ValueError:
        return False
    return isinstance(d, dict) and d.get("event") == "dry-run" and isinstance(d.get("v2"), dict)


try:
    main()
finally:
    tmp.cleanup()
t.done()
