#!/usr/bin/python3
"""Upstream faults at the integration level (forward mode, one worker so one
pool per route): each fault is answered 502 or 504 with a JSON reason naming
the problem, the bridge keeps serving, and the same route delivers normally
right after (its pool recovers).  Stale keep-alive connections are retried
once on a fresh connection, and only when no response byte arrived."""

import json
import os
import re
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
HOOK = "/qualifio/v1"
SECRET = "fault-s3cret"
TIMEOUT_MS = 1000
MAX_RESPONSE = 65536
C_REFUSED, C_RAW, C_TLS = 810001, 810002, 810003

_, _, DOC = bt.v1_fixture()


def post(b, campaign, pid=None):
    """A post for the route of `campaign`; returns (Response, participation id)."""
    pid = pid or str(uuid.uuid4())
    body = bt.v1_variant(DOC, campaign_id=campaign, participation_id=pid)
    return bt.curl(b.url(HOOK), body, max_time=20), pid.upper()


def body_id(body):
    try:
        return json.loads(body).get("id")
    except (ValueError, AttributeError):
        return None


def copies(up, pid):
    """The requests the raw upstream received carrying this participation."""
    with up.lock:
        return [r for r in up.requests if body_id(r.body) == pid]


def failed(b, r, name, status, code, reason, route):
    """The fault's answer: status, JSON error code, a message naming the
    problem, the route and delivery id; then /healthz."""
    d = bt.check_json_response(t, r, status, name, error=code)
    if d:
        t.ok(not re.search(r"127\.0\.0\.1|\[::1\]|localhost|:\d{2,5}\b", d.get("message", "")),
             "%s: the answer names no host or port" % name, repr(r))
        did = d.get("delivery_id")
        lines = bt.wait_for(lambda: [x for x in b.log_records() if x.get("event") == "request"
                                     and x.get("delivery_id") == did], 5) or []
        t.like(lines[0].get("error", "") if lines else "", reason,
               "%s: the log line gives the reason" % name, lines)
        t.is_(d.get("route"), route, "%s: route named" % name, repr(r))
        t.like(d.get("delivery_id"), bt.UUID_RE.pattern, "%s: delivery_id present" % name,
               repr(r))
    h = bt.curl(b.url("/healthz"))
    t.is_(h.status, 200, "%s: the bridge keeps serving (/healthz)" % name, h)
    return d


def delivered(b, campaign, name, up=None):
    """A normal delivery on the same route right after: 200 delivered (and,
    for the raw upstream, received exactly once)."""
    r, pid = post(b, campaign)
    d = bt.check_json_response(t, r, 200, "%s: next delivery" % name)
    t.is_(d and d.get("status"), "delivered", "%s: the pool recovers, next post delivered"
          % name, repr(r))
    if up is not None:
        t.is_(len(copies(up, pid)), 1, "%s: next post received exactly once" % name)
    return r, pid


# --------------------------------------------------------------------------
# plain HTTP faults (raw upstream)
# --------------------------------------------------------------------------

def t_refused(_t, b, port):
    r, _ = post(b, C_REFUSED)
    failed(b, r, "refused connection", 502, "upstream_unreachable", r"(?i)refused", "refused")
    t.ok(r.elapsed < 3, "refused connection fails fast (%.2f s)" % r.elapsed)
    up = bt.RawUpstream(port=port)         # the endpoint comes up
    try:
        delivered(b, C_REFUSED, "refused connection", up)
    finally:
        up.stop()


def t_reset_mid_response(_t, b, up):
    # hold: the partial answer is read before the reset arrives
    up.behave(bt.upstream_ok(),
              bt.upstream_raw(b"HTTP/1.1 200 OK\r\nContent-Type: appl", then="reset",
                              hold=0.2))
    r0, _ = post(b, C_RAW)
    t.is_(r0.status, 200, "reset mid-response: a first post opens the keep-alive connection",
          r0)
    r, pid = post(b, C_RAW)
    failed(b, r, "reset mid-response", 502, "upstream_protocol", r"(?i)reset mid-response",
           "raw")
    seen = copies(up, pid)
    t.is_(len(seen), 1, "reset mid-response: not retried once response bytes arrived",
          "\n".join(map(repr, seen)))
    t.ok(seen and seen[0].index == 2, "reset mid-response: it was the connection's second "
         "request (a reused connection, where a retry would be tempting)", repr(seen))
    delivered(b, C_RAW, "reset mid-response", up)


def t_slow(_t, b, up):
    up.behave(bt.upstream_stall(TIMEOUT_MS / 1000.0 + 3))
    r, pid = post(b, C_RAW)
    failed(b, r, "slow upstream", 504, "upstream_timeout", r"%d ms" % TIMEOUT_MS, "raw")
    t.ok(TIMEOUT_MS / 1000.0 * 0.9 <= r.elapsed <= TIMEOUT_MS / 1000.0 + 1.0,
         "slow upstream: 504 after about timeout_ms (%d ms): %.2f s" % (TIMEOUT_MS, r.elapsed))
    t.is_(len(copies(up, pid)), 1, "slow upstream: sent once, not retried")
    n = up.connections
    rr, _ = delivered(b, C_RAW, "slow upstream", up)
    t.ok(rr.elapsed < 1.0, "slow upstream: the next post is not held up (%.2f s)" % rr.elapsed)
    t.ok(up.connections > n, "slow upstream: the timed-out connection was not reused")


def t_garbage(_t, b, up):
    protocol = ("upstream_protocol",)
    cases = [
        ("garbage status line", b"HELLO WORLD\r\n\r\n", protocol),
        ("binary answer", bytes(range(256)), protocol),
        ("HTTP/2 status line", b"HTTP/2 200\r\nContent-Length: 2\r\n\r\n{}", protocol),
        ("header line without a colon",
         b"HTTP/1.1 200 OK\r\nthis is not a header\r\nContent-Length: 2\r\n\r\n{}", protocol),
        ("body shorter than its Content-Length",
         b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}", protocol),
        # status-code = 3DIGIT (RFC 9112 4): "200abc" is not a 200
        ("status code 200abc", b"HTTP/1.1 200abc OK\r\nContent-Length: 2\r\n\r\n{}", protocol),
        # out of range: refused either way, as a protocol error or as a non-2xx status
        ("status code 99999", b"HTTP/1.1 99999 Big\r\nContent-Length: 0\r\n\r\n",
         ("upstream_protocol", "upstream_status")),
    ]
    for name, data, codes in cases:
        up.behave(bt.upstream_raw(data, then="close"))
        r, pid = post(b, C_RAW)
        code = None
        try:
            code = r.json().get("error")
        except (ValueError, AttributeError):
            pass
        failed(b, r, name, 502, code if code in codes else codes[0],
               r"(?i)malformed|status|header|broke|answered", "raw")
        t.ok(len(copies(up, pid)) >= 1, "%s: the request reached the upstream" % name)
        delivered(b, C_RAW, name, up)


def t_oversized(_t, b, up):
    big = b"x" * (2 * MAX_RESPONSE)
    chunked = b"".join(b"%x\r\n%s\r\n" % (8192, b"y" * 8192) for _ in range(2 * MAX_RESPONSE
                                                                              // 8192))
    cases = [
        ("oversized response (Content-Length)",
         b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
         % (len(big), big), r"(?i)larger than %d" % MAX_RESPONSE),
        ("oversized response (chunked)",
         b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
         + chunked + b"0\r\n\r\n", r"(?i)larger than %d" % MAX_RESPONSE),
        ("oversized response (close-delimited)",
         b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + big,
         r"(?i)larger than %d" % MAX_RESPONSE),
        ("oversized response headers",
         b"HTTP/1.1 200 OK\r\nX-Big: " + b"h" * (100 * 1024) + b"\r\nContent-Length: 0\r\n\r\n",
         r"(?i)headers? larger"),
    ]
    for name, data, reason in cases:
        up.behave(bt.upstream_raw(data, then="close"))
        r, _ = post(b, C_RAW)
        failed(b, r, name, 502, "upstream_too_large", reason, "raw")
        delivered(b, C_RAW, name, up)


def t_close_delimited(_t, b, up):
    up.behave(bt.upstream_raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
                              b'{"accepted":true}', then="close"))
    r, pid = post(b, C_RAW)
    d = bt.check_json_response(t, r, 200, "200 then close without Content-Length")
    t.is_(d and d.get("status"), "delivered", "close-delimited 200: delivered", repr(r))
    t.is_(d and d.get("upstream_status"), 200, "close-delimited 200: upstream_status 200",
          repr(r))
    t.is_(len(copies(up, pid)), 1, "close-delimited 200: sent once")
    n = up.connections
    delivered(b, C_RAW, "close-delimited 200", up)
    t.ok(up.connections > n, "close-delimited 200: the closed connection was not reused")


def t_closed_fresh(_t, b, up):
    """A brand-new connection closed without a byte: no retry (only stale
    keep-alive connections are retried)."""
    up.behave(bt.upstream_ok(close=True), bt.upstream_raw(b"", then="close"))
    post(b, C_RAW)                         # leaves no idle connection behind
    t.ok(b.wait_no_connections_to(up.port), "closed fresh: the pool dropped the closed "
         "connection")
    r, pid = post(b, C_RAW)
    failed(b, r, "closed before answering (fresh connection)", 502, "upstream_protocol",
           r"(?i)closed before any response byte", "raw")
    seen = copies(up, pid)
    t.ok(seen and seen[0].index == 1, "fresh-connection close: it was the connection's first "
         "request", repr(seen))
    t.is_(len(seen), 1, "fresh-connection close: not retried", "\n".join(map(repr, seen)))
    delivered(b, C_RAW, "closed before answering (fresh connection)", up)


# --------------------------------------------------------------------------
# stale keep-alive connections
# --------------------------------------------------------------------------

def t_stale_idle(_t, b, up):
    """The upstream closes the idle keep-alive connection between two posts."""
    up.behave(bt.upstream_ok(close=True))  # start from an empty pool
    post(b, C_RAW)
    t.ok(b.wait_no_connections_to(up.port), "stale idle: the pool starts empty")
    closed = up.closed
    up.behave(bt.upstream_ok_then_idle_close(0.2))
    r1, pid1 = post(b, C_RAW)
    t.is_(r1.status, 200, "stale idle: first post delivered", r1)
    t.ok(up.wait_closed(closed + 1), "stale idle: the upstream closed the idle connection")
    r2, pid2 = post(b, C_RAW)
    d = bt.check_json_response(t, r2, 200, "stale idle: second post")
    t.is_(d and d.get("status"), "delivered", "stale idle: second post delivered", repr(r2))
    s1, s2 = copies(up, pid1), copies(up, pid2)
    t.is_(len(s2), 1, "stale idle: the upstream saw the second post exactly once",
          "\n".join(map(repr, s2)))
    t.ok(s1 and s2 and s1[0].conn != s2[0].conn,
         "stale idle: the second post went on a new connection", (s1, s2))


def t_stale_race(_t, b, up, how):
    """The upstream closes a reused keep-alive connection just as the next
    request arrives (the request is read, no response byte is sent): the
    bridge retries once on a fresh connection with the same delivery id."""
    up.behave(bt.upstream_ok(close=True))
    post(b, C_RAW)
    t.ok(b.wait_no_connections_to(up.port), "the pool starts empty")
    up.behave(bt.upstream_ok(), bt.upstream_raw(b"", then=how))
    r1, pid1 = post(b, C_RAW)
    t.is_(r1.status, 200, "stale (%s): first post delivered" % how, r1)
    r2, pid2 = post(b, C_RAW)
    d = bt.check_json_response(t, r2, 200, "stale (%s): second post" % how)
    t.is_(d and d.get("status"), "delivered", "stale (%s): second post delivered after one "
          "retry" % how, repr(r2))
    s1, s2 = copies(up, pid1), copies(up, pid2)
    t.is_(len(s2), 2, "stale (%s): sent twice: the lost attempt and the retry" % how,
          "\n".join(map(repr, s2)))
    if len(s2) == 2 and s1:
        t.ok(s2[0].conn == s1[0].conn and s2[0].index == 2,
             "stale (%s): the lost attempt was on the reused connection" % how, (s1, s2))
        t.ok(s2[1].conn != s1[0].conn and s2[1].index == 1,
             "stale (%s): the retry was on a fresh connection" % how, s2)
        t.is_(s2[1].header("X-Bridge-Delivery-Id"), s2[0].header("X-Bridge-Delivery-Id"),
              "stale (%s): the retry carries the same delivery id" % how)
        t.is_(s2[1].body, s2[0].body, "stale (%s): the retry carries the same body" % how)
        t.is_(s2[1].header("X-Qualifio-Signature"), s2[0].header("X-Qualifio-Signature"),
              "stale (%s): the retry carries the same signature" % how)
        t.is_(d and d.get("delivery_id"), s2[1].header("X-Bridge-Delivery-Id"),
              "stale (%s): the answer's delivery_id is the one sent" % how, repr(r2))
    # log_level = "debug" logs the retry and why the first attempt failed
    retries = bt.wait_for(lambda: [x for x in b.log_records() if x.get("event") == "retry"
                                   and x.get("participation_id") == pid2], 5) or []
    t.ok(len(retries) == 1 and retries[0].get("route") == "raw" and
         retries[0].get("level") == "debug" and
         "before any response byte" in retries[0].get("error", ""),
         "stale (%s): one debug retry line naming the route and the reason" % how, retries)
    t.ok(not [x for x in b.log_records() if x.get("event") == "retry"
              and x.get("participation_id") == pid1],
         "stale (%s): no retry line for the post that was not retried" % how)


def t_stale_twice(_t, b, up):
    """Only one retry: a reused connection closes, and so does the fresh one."""
    up.behave(bt.upstream_ok(close=True))
    post(b, C_RAW)
    t.ok(b.wait_no_connections_to(up.port), "the pool starts empty")
    up.behave(bt.upstream_ok(), bt.upstream_raw(b"", then="close"),
              bt.upstream_raw(b"", then="close"))
    post(b, C_RAW)
    r, pid = post(b, C_RAW)
    failed(b, r, "stale then closed again", 502, "upstream_protocol",
           r"(?i)closed before any response byte", "raw")
    t.is_(len(copies(up, pid)), 2, "stale then closed again: one retry, not more")
    delivered(b, C_RAW, "stale then closed again", up)


# --------------------------------------------------------------------------
# the client side of a pending delivery
# --------------------------------------------------------------------------

def t_client_half_close(_t, b, up):
    """The sender half-closes while its delivery is pending upstream: the
    answer still arrives."""
    up.behave(bt.upstream_raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", then="keep",
                              delay=0.5))
    pid = str(uuid.uuid4())
    body = bt.v1_variant(DOC, campaign_id=C_RAW, participation_id=pid)
    c = bt.RawClient(b.port, 10)
    try:
        c.send(bt.http_request("POST", HOOK, body))
        c.shut_wr()
        r = c.read_response("POST")
    finally:
        c.close()
    t.ok(r is not None and r.status == 200, "half-closed sender, pending delivery: the 200 "
         "arrives", repr(r))
    t.is_(len(copies(up, pid.upper())), 1, "half-closed sender: delivered once")


def t_client_gone(_t, b, up):
    """The sender disconnects while its delivery is pending: nothing breaks,
    the delivery completes once, the bridge keeps serving."""
    gate = threading.Event()

    def slow_ok(u, conn, req):
        gate.set()
        u.stopping.wait(0.5)
        return bt.upstream_ok()(u, conn, req)
    up.behave(slow_ok)
    pid = str(uuid.uuid4())
    body = bt.v1_variant(DOC, campaign_id=C_RAW, participation_id=pid)
    c = bt.RawClient(b.port, 10)
    c.send(bt.http_request("POST", HOOK, body))
    t.ok(gate.wait(5), "vanishing sender: the delivery reached the upstream")
    bt.RawUpstream.reset(c.sock)
    t.ok(b.wait_log(lambda r: r.get("event") == "request" and
                    (r.get("participation_id") or "").upper() == pid.upper()),
         "vanishing sender: the exchange ended (its request line)")
    t.is_(len(copies(up, pid.upper())), 1, "vanishing sender: delivered once")
    t.ok(b.proc.poll() is None, "vanishing sender: the bridge is still running")
    h = bt.curl(b.url("/healthz"))
    t.is_(h.status, 200, "vanishing sender: /healthz 200", h)
    delivered(b, C_RAW, "vanishing sender", up)


# --------------------------------------------------------------------------
# TLS faults (a sink whose certificate changes between posts)
# --------------------------------------------------------------------------

def t_tls(_t, b, sink, pki):
    cases = [
        ("untrusted certificate (self-signed)", (pki.self_cert, pki.self_key),
         r"(?i)certificate verify failed.*(self.signed|unable to get|untrusted)"),
        ("certificate for another host", (pki.wrong_cert, pki.wrong_key),
         r"(?i)certificate verify failed.*(host|IP address) mismatch"),
        ("expired certificate", pki.expired(), r"(?i)certificate verify failed.*expired"),
        ("plain HTTP on an https endpoint", (None, None),
         r"(?i)TLS|SSL|wrong version|packet length|record"),
    ]
    r = delivered(b, C_TLS, "TLS baseline")
    del r
    for name, (cert, key), reason in cases:
        sink.use_tls(cert, key)
        t.ok(sink.drop_connections(b), "%s: the bridge dropped its connections to the sink"
             % name)
        n = len(sink.requests)
        r, _ = post(b, C_TLS)
        failed(b, r, name, 502, "upstream_tls", reason, "tls")
        t.is_(len(sink.requests), n, "%s: no HTTP request reached that peer" % name)
        t.ok(r.elapsed < 3, "%s: fails fast (%.2f s)" % (name, r.elapsed))
        sink.use_tls(pki.good_cert, pki.good_key)
        delivered(b, C_TLS, name)


def main():
    pki = bt.Pki(tmp)
    up = bt.RawUpstream()
    sink = bt.Sink(pki.good_cert, pki.good_key)
    refused = bt.refused_port()

    def fwd(name, endpoint, campaign, **kw):
        return bt.route(name, "forward", endpoint=endpoint, secret=SECRET,
                        match={"campaign_id": [campaign]}, timeout_ms=TIMEOUT_MS, **kw)
    routes = [fwd("refused", "http://127.0.0.1:%d/hook" % refused, C_REFUSED),
              fwd("raw", up.url(), C_RAW),
              fwd("tls", sink.url(), C_TLS, ca_file=pki.ca_cert)]
    cfg = bt.config_text(routes, path=HOOK, workers=1,
                         upstream={"max_response_body": MAX_RESPONSE,
                                   "idle_timeout_ms": 30000}, log_level="debug")
    b = t.start(bt.Bridge(tmp, cfg, "faults.conf"), "bridge starts")
    try:
        if b is not None:
            cases = [
                ("refused connection", t_refused, b, refused),
                ("reset mid-response", t_reset_mid_response, b, up),
                ("slow upstream", t_slow, b, up),
                ("garbage answers", t_garbage, b, up),
                ("oversized answers", t_oversized, b, up),
                ("200 then close, no Content-Length", t_close_delimited, b, up),
                ("closed before answering, fresh connection", t_closed_fresh, b, up),
                ("stale keep-alive, closed while idle", t_stale_idle, b, up),
                ("stale keep-alive, closed on arrival (FIN)", t_stale_race, b, up, "close"),
                ("stale keep-alive, closed on arrival (RST)", t_stale_race, b, up, "reset"),
                ("stale keep-alive, retried once only", t_stale_twice, b, up),
                ("sender half-closes", t_client_half_close, b, up),
                ("sender vanishes", t_client_gone, b, up),
                ("TLS faults", t_tls, b, sink, pki),
            ]
            for case in cases:
                t0 = time.monotonic()
                with up.lock:
                    up.script.clear()
                t.run(case[0], case[1], *case[2:])
                t.diag("%s: %.2f s" % (case[0], time.monotonic() - t0))
                if b.proc.poll() is not None:
                    t.ok(False, "the bridge died during: %s" % case[0], b.stderr[-3000:])
                    break
    finally:
        if b is not None:
            bt.stop_and_check(t, b, "faults bridge")
        up.stop()
        sink.stop()


try:
    main()
finally:
    tmp.cleanup()
t.done()
