#!/usr/bin/python3
"""`serve` in forward mode against a real loopback HTTP/1.1 sink."""

import collections
import json
import os
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
HOOK = "/qualifio/v1"
SECRET = "s3cret"
C_B64, C_ROT, C_SLOW, C_REF = 900001, 900002, 900003, 900004
TIMEOUT_MS = 1000
EXPECTED_HEADERS = ["host", "content-length", "content-type", "authorization",
                    "x-qualifio-signature", "x-bridge-delivery-id", "user-agent"]


def make_config(sink):
    routes = [
        bt.route("b64", "forward", endpoint=sink.url("/b64"),
                 auth_header={"name": "X-Api-Token", "value": "tok-123"},
                 secret=SECRET, signature_encoding="base64",
                 signature_header="X-Sig", delivery_id_header="X-Delivery",
                 match={"campaign_id": [C_B64]}, timeout_ms=5000),
        bt.route("rotation", "forward", endpoint=sink.url("/rot"),
                 auth_header={"name": "Authorization", "value": "Basic dXNlcjpwdw=="},
                 secrets=["new-secret", "old-secret"],
                 match={"campaign_id": [C_ROT]}, timeout_ms=5000),
        bt.route("slow", "forward", endpoint=sink.url("/slow"),
                 auth_header={"name": "Authorization", "value": "Bearer abc"},
                 secret=SECRET, match={"campaign_id": [C_SLOW]}, timeout_ms=TIMEOUT_MS),
        bt.route("refused", "forward", endpoint="http://127.0.0.1:%d/x" % bt.refused_port(),
                 auth_header={"name": "Authorization", "value": "Bearer abc"},
                 secret=SECRET, match={"campaign_id": [C_REF]}, timeout_ms=5000),
        bt.route("hex", "forward", endpoint=sink.url("/hook?src=bridge"),
                 auth_header={"name": "Authorization", "value": "Bearer abc"},
                 secret=SECRET, signature_encoding="hex", timeout_ms=5000),
    ]
    # one worker: the keep-alive test counts the upstream connections of one pool
    return bt.config_text(routes, path=HOOK, limits={"request_timeout_ms": 10000}, workers=1)


def post(b, body, ct="application/json"):
    return bt.curl(b.url(HOOK), body, content_type=ct)


def variant(doc, **kw):
    kw.setdefault("participation_id", str(uuid.uuid4()))
    return bt.v1_variant(doc, **kw)


def last_request(sink, n_before):
    t.require(sink.wait_requests(n_before + 1, 5), "sink received the request")
    return sink.requests[n_before]


def t_exact(t, b, sink):
    path, raw, doc = bt.v1_fixture()
    m = bt.map_output(path, t=t)
    t.require(m.rc == 0, "map on the fixture exits 0", m)
    want = m.out[:-1] if m.out.endswith(b"\n") else m.out
    n = len(sink.requests)
    r = post(b, raw)
    d = bt.check_json_response(t, r, 200, "forward post")
    req = last_request(sink, n)
    t.is_(req.body, want, "sink got exactly the bytes `map` prints (minus newline)")
    t.is_(req.method, "POST", "upstream method POST")
    t.is_(req.path, "/hook?src=bridge", "upstream path and query from the endpoint")
    names = [k.lower() for k, v in req.headers]
    t.is_(sorted(names), sorted(EXPECTED_HEADERS), "upstream request has exactly the spec headers",
          repr(req))
    t.is_(req.header("Host"), "127.0.0.1:%d" % sink.port, "Host header")
    t.is_(req.header("Content-Length"), str(len(req.body)), "Content-Length header")
    t.is_(req.header("Content-Type"), "application/json", "Content-Type: application/json")
    t.is_(req.header("Authorization"), "Bearer abc", "auth header exact")
    t.is_(req.header("User-Agent"), "webhook-bridge/%s" % bt.VERSION, "User-Agent")
    t.is_(req.header("X-Qualifio-Signature"), "sha256=" + bt.hmac_hex(SECRET, req.body),
          "X-Qualifio-Signature = sha256=<hex HMAC-SHA256(secret, body)>")
    did = req.header("X-Bridge-Delivery-Id")
    t.like(did, bt.UUID_RE.pattern, "X-Bridge-Delivery-Id is UUID-shaped")
    if d:
        t.is_(d.get("status"), "delivered", "status delivered", repr(r))
        t.is_(d.get("route"), "hex", "route hex", repr(r))
        t.is_(d.get("upstream_status"), 200, "upstream_status 200", repr(r))
        t.is_(d.get("delivery_id"), did, "response delivery_id equals the header sent")
        t.is_(d.get("participation_id"), json.loads(want).get("id"), "participation_id")

    # same post again -> same id; another participation -> another id
    n = len(sink.requests)
    r2 = post(b, raw)
    req2 = last_request(sink, n)
    t.is_(req2.header("X-Bridge-Delivery-Id"), did, "identical post: identical delivery id")
    t.is_(req2.body, req.body, "identical post: identical body")
    n = len(sink.requests)
    r3 = post(b, variant(doc))
    req3 = last_request(sink, n)
    t.ok(req3.header("X-Bridge-Delivery-Id") not in (None, did),
         "different participation: different delivery id",
         "%s vs %s" % (req3.header("X-Bridge-Delivery-Id"), did))
    del r2, r3


def t_base64_and_names(t, b, sink):
    path, raw, doc = bt.v1_fixture()
    n = len(sink.requests)
    r = post(b, variant(doc, campaign_id=C_B64))
    d = bt.check_json_response(t, r, 200, "base64 route post")
    req = last_request(sink, n)
    t.is_(req.path, "/b64", "base64 route endpoint")
    t.is_(req.header("X-Sig"), "sha256=" + bt.hmac_b64(SECRET, req.body),
          "configured signature header, base64 digest")
    t.is_(req.header("X-Api-Token"), "tok-123", "configured auth header name and value")
    t.like(req.header("X-Delivery"), bt.UUID_RE.pattern, "configured delivery id header")
    t.is_(req.all("X-Qualifio-Signature") + req.all("X-Bridge-Delivery-Id")
          + req.all("Authorization"), [], "default header names not sent as well", repr(req))
    if d:
        t.is_(d.get("route"), "b64", "route b64", repr(r))
        t.is_(d.get("delivery_id"), req.header("X-Delivery"), "delivery_id matches header")


def t_rotation(t, b, sink):
    path, raw, doc = bt.v1_fixture()
    n = len(sink.requests)
    r = post(b, variant(doc, campaign_id=C_ROT))
    bt.check_json_response(t, r, 200, "secret rotation route post")
    req = last_request(sink, n)
    t.is_(req.header("X-Qualifio-Signature"), "sha256=" + bt.hmac_hex("new-secret", req.body),
          "secrets list: the first one signs")
    t.is_(req.header("Authorization"), "Basic dXNlcjpwdw==", "Basic auth header exact")


def t_statuses(t, b, sink):
    path, raw, doc = bt.v1_fixture()
    for up, want in ((200, 200), (201, 200), (204, 200), (404, 502), (500, 502)):
        sink.reply(bt.Reply(up, b'{"upstream":"says"}' if up != 204 else b""))
        r = post(b, variant(doc))
        if want == 200:
            d = bt.check_json_response(t, r, 200, "upstream %d" % up)
            t.is_(d and d.get("status"), "delivered", "upstream %d: delivered" % up, repr(r))
        else:
            d = bt.check_json_response(t, r, 502, "upstream %d" % up, error="upstream_status")
        if d:
            t.is_(d.get("upstream_status"), up, "upstream %d: upstream_status reported" % up,
                  repr(r))
            t.is_(d.get("route"), "hex", "upstream %d: route named" % up, repr(r))
            t.like(d.get("delivery_id"), bt.UUID_RE.pattern,
                   "upstream %d: delivery_id present" % up, repr(r))


def t_timeout(t, b, sink):
    path, raw, doc = bt.v1_fixture()
    sink.reply(bt.Reply(bt.NEVER))
    n = len(sink.requests)
    r = post(b, variant(doc, campaign_id=C_SLOW))
    d = bt.check_json_response(t, r, 504, "upstream never answers", error="upstream_timeout")
    t.ok(sink.wait_requests(n + 1, 1), "the request reached the sink")
    t.ok(TIMEOUT_MS / 1000.0 * 0.9 <= r.elapsed <= TIMEOUT_MS / 1000.0 + 1.5,
         "504 after about timeout_ms (%d ms): took %.3f s" % (TIMEOUT_MS, r.elapsed))
    if d:
        t.is_(d.get("route"), "slow", "timeout: route named", repr(r))
        t.like(d.get("delivery_id"), bt.UUID_RE.pattern, "timeout: delivery_id present", repr(r))
    r = post(b, variant(doc, campaign_id=C_SLOW))
    d = bt.check_json_response(t, r, 200, "same route answers after a timeout")
    t.is_(d and d.get("status"), "delivered", "next request delivered", repr(r))
    t.ok(r.elapsed < 1.0, "next request is not delayed (%.3f s)" % r.elapsed)
    r = post(b, variant(doc))
    t.is_(r.status, 200, "other route still serves after a timeout", r)


def t_refused(t, b):
    path, raw, doc = bt.v1_fixture()
    r = post(b, variant(doc, campaign_id=C_REF))
    d = bt.check_json_response(t, r, 502, "refused port", error="upstream_unreachable")
    if d:
        t.is_(d.get("route"), "refused", "refused: route named", repr(r))
        t.like(d.get("delivery_id"), bt.UUID_RE.pattern, "refused: delivery_id present", repr(r))
    t.ok(r.elapsed < 3, "refused connection fails fast (%.3f s)" % r.elapsed)


def t_keepalive(t, b, sink):
    path, raw, doc = bt.v1_fixture()
    sink.reset()
    statuses = []
    for _ in range(30):
        statuses.append(post(b, variant(doc)).status)
    t.is_(statuses, [200] * 30, "30 sequential posts delivered")
    t.ok(sink.wait_requests(30, 3), "sink got 30 requests")
    ports = set(r.client[1] for r in sink.requests)
    t.is_(len(ports), 1, "30 sequential posts share one upstream connection",
          "client ports in order: %s" % [r.client[1] for r in sink.requests])


def t_concurrent(t, b, sink):
    path, raw, doc = bt.v1_fixture()
    sink.reset()
    sink.default = bt.Reply(200, delay=0.2)
    ids = [str(uuid.uuid4()) for _ in range(20)]
    results = {}

    def one(i):
        results[i] = post(b, bt.v1_variant(doc, participation_id=i))

    threads = [threading.Thread(target=one, args=(i,)) for i in ids]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    elapsed = time.monotonic() - t0
    bad = {i: r for i, r in results.items()
           if r.status != 200 or _status(r) != "delivered"}
    t.ok(len(results) == 20 and not bad, "20 concurrent posts all delivered",
         "\n".join(repr(r) for r in list(bad.values())[:3]))
    # every answer was "delivered", which the bridge sends only once the sink
    # answered its last attempt: no copy of these posts can still be on the way
    t.ok(sink.wait_requests(20, 3), "sink got 20 requests")
    got = collections.Counter(json.loads(r.body).get("id") for r in sink.requests)
    want = collections.Counter(i.upper() for i in ids)
    t.is_(got, want, "each participation delivered exactly once")
    sig_bad = [r for r in sink.requests
               if r.header("X-Qualifio-Signature") != "sha256=" + bt.hmac_hex(SECRET, r.body)]
    t.is_(len(sig_bad), 0, "every concurrent delivery correctly signed")
    t.ok(sink.max_inflight >= 2, "concurrent posts overlap upstream (%d at once at most; "
         "%.2f s for 20 x 0.2 s)" % (sink.max_inflight, elapsed))
    sink.default = bt.Reply(200)


def _status(r):
    try:
        return r.json().get("status")
    except (ValueError, AttributeError):
        return None


def t_graceful(t, b, sink):
    """SIGTERM while a delivery is in flight: it is answered, then exit 0."""
    path, raw, doc = bt.v1_fixture()
    sink.reset()
    sink.reply(bt.Reply(200, delay=0.8))
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("r", post(b, variant(doc))))
    th.start()
    t.ok(sink.arrived.wait(5), "in-flight request reached the sink")
    b.terminate()
    th.join(15)
    r = out.get("r")
    t.ok(r is not None and r.status == 200, "in-flight request answered 200 after SIGTERM",
         repr(r))


def main():
    sink = bt.Sink()
    b = t.start(bt.Bridge(tmp, make_config(sink), "forward.conf"), "forward bridge starts")
    try:
        if b is not None:
            t.run("exact body, headers, signature, delivery id", t_exact, b, sink)
            t.run("base64 signature and header names", t_base64_and_names, b, sink)
            t.run("secret rotation", t_rotation, b, sink)
            t.run("upstream statuses", t_statuses, b, sink)
            t.run("upstream timeout", t_timeout, b, sink)
            t.run("refused upstream", t_refused, b)
            t.run("keep-alive", t_keepalive, b, sink)
            t.run("concurrency", t_concurrent, b, sink)
            t.run("graceful shutdown", t_graceful, b, sink)
    finally:
        if b is not None:
            bt.stop_and_check(t, b, "forward bridge")
        sink.stop()


try:
    main()
finally:
    tmp.cleanup()
t.done()
