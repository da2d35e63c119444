#!/usr/bin/python3
"""Framing and limits: a body that can never be taken is refused at once
(413, no "100 Continue", no wait for the request deadline), and the parser
leniencies a stricter front would refuse are 400 bad_request with
Connection: close."""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
MAX_BODY = 256 * 1024
DEADLINE_MS = 6000
QUICK_S = 2.0        # "at once": well under the request deadline


def config():
    return bt.config_text([bt.route("dry")], path="/hook",
                          limits={"max_body": MAX_BODY, "request_deadline_ms": DEADLINE_MS})


def start():
    try:
        return bt.Bridge(tmp, config(), "framing.conf").start()
    except bt.TestFailure as e:
        t.ok(False, "bridge starts", str(e))
        raise


def refused(b, data, status, name, wait_body=False):
    """Send a head (and nothing more); the answer must come at once."""
    c = bt.RawClient(b.port, timeout=DEADLINE_MS / 1000 + 5)
    try:
        c.send(data)
        t0 = time.monotonic()
        r = c.read_response("POST")
        took = time.monotonic() - t0
        t.ok(r is not None, "%s: answered" % name)
        if r is None:
            return
        t.is_(r.status, status, "%s: HTTP %d" % (name, status), repr(r))
        t.ok(took < QUICK_S, "%s: at once (%.2f s, deadline %d ms)" % (name, took, DEADLINE_MS))
        hdr = {k.lower(): v for k, v in r.headers}
        t.is_(hdr.get("connection", "").lower(), "close", "%s: Connection: close" % name)
        try:
            doc = json.loads(r.body)
        except ValueError:
            doc = {}
        t.is_(doc.get("error"), "body_too_large" if status == 413 else "bad_request",
              "%s: JSON error code" % name, repr(r))
        closed, _ = c.wait_close(3.0)
        t.ok(closed, "%s: the connection is closed" % name)
    finally:
        c.close()


def t_ceiling(_t, b):
    """7: a declared Content-Length over the hard ceiling is 413 at once."""
    for cl in ("3145728", str(2 ** 63), str(2 ** 64 + 20)):
        head = ("POST /hook HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
                "Content-Length: %s\r\n\r\n" % cl).encode()
        refused(b, head, 413, "Content-Length %s" % cl)


def t_expect(_t, b):
    """8: Expect: 100-continue over max_body: 413 at once, never 100."""
    head = ("POST /hook HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
            "Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)).encode()
    refused(b, head, 413, "Expect over max_body")
    head = ("POST /hook HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
            "Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (100 * 1024 * 1024)).encode()
    refused(b, head, 413, "Expect over the ceiling")
    # the real curl: 1.5 MB with Expect gets 413 and never uploads it
    path = tmp.file("big.json", "x" * (1536 * 1024))
    p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}",
                        "-H", "Content-Type: application/json", "-H", "Expect: 100-continue",
                        "--expect100-timeout", "30", "--data-binary", "@" + path,
                        b.url("/hook")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=40)
    code, _, up = p.stdout.decode().partition(" ")
    t.is_(code, "413", "curl with Expect: 413", p)
    t.ok(float(up or 0) < MAX_BODY, "curl did not upload the body (%s bytes sent)" % up, p)
    # within max_body, Expect still gets 100 and the post goes through
    r = bt.curl(b.url("/hook"), bt.v1_fixture()[1], expect=True)
    t.is_(r.status, 200, "a small post with Expect is taken", r)


def t_leniencies(_t, b):
    """9: HTTP/01.1, HTTP/1.1 without Host, NUL, obs-fold, bare LF: 400."""
    body = b'{"a":1}'
    cases = [
        ("HTTP/01.1", b"POST /hook HTTP/01.1\r\nHost: h\r\nContent-Length: 7\r\n\r\n" + body),
        ("no Host", b"POST /hook HTTP/1.1\r\nContent-Length: 7\r\n\r\n" + body),
        ("NUL in a value", b"POST /hook HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n"
                           b"Content-Length: 7\r\n\r\n" + body),
        ("obs-fold", b"POST /hook HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n"
                     b"Content-Length: 7\r\n\r\n" + body),
        ("bare LF", b"POST /hook HTTP/1.1\nHost: h\nContent-Length: 7\n\n" + body),
    ]
    for name, data in cases:
        refused(b, data, 400, name)
    r = bt.curl(b.url("/healthz"), method="GET")
    t.is_(r.status, 200, "the bridge answers after the refusals", r)


def t_upstream_lengths(_t):
    """10: an upstream 200 with two different Content-Length headers is 502
    upstream_protocol, and that connection is not used again."""
    up = bt.RawUpstream()
    b = None
    try:
        cfg = bt.config_text([bt.route("raw", "forward", endpoint=up.url(), secret="k",
                                       timeout_ms=5000)], path="/hook")
        b = bt.Bridge(tmp, cfg, "upstream-cl.conf").start()
        up.behave(bt.upstream_raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: 2\r\nContent-Length: 11\r\n\r\n{}"
                                  b"HTTP/1.1 2", then="keep", hold=3.0))
        _, raw, doc = bt.v1_fixture()
        r = bt.curl(b.url("/hook"), raw)
        d = bt.check_json_response(t, r, 502, "two Content-Lengths", error="upstream_protocol")
        t.is_((d or {}).get("error"), "upstream_protocol", "the answer is not counted delivered",
              r)
        before = up.connections
        r = bt.curl(b.url("/hook"), bt.v1_variant(doc, participation_id="P-next"))
        t.is_(r.status, 200, "the next post is delivered", r)
        t.is_(up.connections, before + 1, "on a new connection: the ambiguous one was closed")
        bt.wait_for(lambda: "two different Content-Length headers" in b.stderr, 5)
        t.like(b.stderr, r"two different Content-Length headers",
               "the log names the protocol error")
    finally:
        if b is not None:
            bt.stop_and_check(t, b)
        up.stop()


def main():
    b = start()
    try:
        t.run("Content-Length over the ceiling (item 7)", t_ceiling, b)
        t.run("Expect: 100-continue over max_body (item 8)", t_expect, b)
        t.run("parser leniencies (item 9)", t_leniencies, b)
        t.run("two upstream Content-Lengths (item 10)", t_upstream_lengths)
    finally:
        bt.stop_and_check(t, b)
    tmp.cleanup()
    t.done()


if __name__ == "__main__":
    main()
