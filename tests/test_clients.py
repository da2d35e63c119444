#!/usr/bin/python3
"""What real HTTP clients expect of the bridge: a Basic challenge on 401 that
challenge-driven clients answer, Retry-After on every 503, an honest
"outcome unknown" when the bridge gives up on a post the endpoint may hold."""

import base64
import shutil
import signal
import socket
import ssl
import gzip
import json
import zlib
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
USER, PASSWORD = "qualifio", "s3cret:pw"


body = bt.fresh_v1_body
listen_config = bt.listen_config


def start(cfg, name):
    return bt.start_bridge(t, tmp, cfg, name)


def t_challenge(_t):
    """12: the 401 names the Basic realm; curl --anyauth and urllib's
    HTTPBasicAuthHandler then send their credential and get through."""
    cfg = listen_config('auth = { basic = { user = "%s"; password = "%s"; }; };'
                        % (USER, PASSWORD))
    b = start(cfg, "challenge.conf")
    try:
        r = bt.curl(b.url("/hook"), body())
        bt.check_json_response(t, r, 401, "no credential", error="unauthorized")
        t.like(r.header("WWW-Authenticate") or "", r'^Basic realm="[^"]+"',
               "401 carries WWW-Authenticate: Basic realm", r)
        p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--anyauth",
                            "-u", "%s:%s" % (USER, PASSWORD), "-H", "Content-Type: "
                            "application/json", "--data-binary", "@-", b.url("/hook")],
                           input=body(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=20)
        t.is_(p.stdout.decode().strip(), "200", "curl --anyauth answers the challenge", p)
        mgr = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        mgr.add_password(None, b.url("/hook"), USER, PASSWORD)
        opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(mgr))
        req = urllib.request.Request(b.url("/hook"), data=body(),
                                     headers={"Content-Type": "application/json"})
        try:
            status = opener.open(req, timeout=10).status
        except urllib.error.HTTPError as e:
            status = e.code
        t.is_(status, 200, "Python's HTTPBasicAuthHandler answers the challenge")
    finally:
        bt.stop_and_check(t, b)

    # a header token alone has no challenge scheme: no WWW-Authenticate
    cfg = listen_config('auth = { header = { name = "X-Token"; value = "tok"; }; };')
    b = start(cfg, "token.conf")
    try:
        r = bt.curl(b.url("/hook"), body())
        t.is_(r.status, 401, "header-token listener refuses without the token", r)
        t.is_(r.header("WWW-Authenticate"), None, "no Basic challenge when Basic is off", r)
        basic = base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode()
        r = bt.curl(b.url("/hook"), body(), headers=["Authorization: Basic " + basic])
        t.is_(r.status, 401, "Basic is not accepted where it is not configured", r)
    finally:
        bt.stop_and_check(t, b)


def t_retry_after(_t):
    """14: a 503 says when to come back; giving up on a post the endpoint
    holds says the outcome is unknown (and that a retry is safe)."""
    sink = bt.Sink()
    b = None
    try:
        sink.default = bt.Reply(200, delay=8.0)
        cfg = bt.config_text([bt.route("fwd", "forward", endpoint=sink.url("/in"),
                                       secret="k", timeout_ms=20000)], path="/hook")
        b = bt.Bridge(tmp, cfg, "drain.conf")
        b.args = ["--drain-ms", "300"]
        b.start()
        out = {}
        th = threading.Thread(target=lambda: out.setdefault("r", bt.curl(b.url("/hook"),
                                                                          body())))
        th.start()
        t.ok(sink.arrived.wait(10), "the post reached the endpoint")
        b.terminate()
        th.join(20)
        r = out.get("r")
        t.require(r is not None, "in-flight post answered")
        d = bt.check_json_response(t, r, 503, "drain gave up", error="shutting_down")
        t.like(r.header("Retry-After") or "", r"^[0-9]+$", "503 carries Retry-After", r)
        t.like((d or {}).get("message", ""), r"outcome unknown; retry is safe, the delivery id"
               r" is stable", "the drained post says its outcome is unknown", r)
        t.ok((d or {}).get("delivery_id"), "and names the delivery id", r)
    finally:
        if b is not None:
            b.stop()
        sink.stop()

    # a full queue answers 503 queue_unavailable with Retry-After
    cfg = bt.config_text([bt.route("q", "forward", endpoint="http://127.0.0.1:%d/x"
                                   % bt.refused_port(), secret="k", delivery="queued")],
                         path="/hook", queue={"path": tmp.join("full.db"), "max_depth": 1})
    b = start(cfg, "full.conf")
    try:
        t.is_(bt.curl(b.url("/hook"), body()).status, 202, "first post stored")
        r = bt.curl(b.url("/hook"), body())
        bt.check_json_response(t, r, 503, "queue full", error="queue_unavailable")
        t.like(r.header("Retry-After") or "", r"^[0-9]+$", "queue_unavailable has Retry-After",
               r)
    finally:
        bt.stop_and_check(t, b)

    # an upstream timeout says the endpoint may hold it
    sink = bt.Sink()
    try:
        sink.default = bt.Reply(200, delay=3.0)
        cfg = bt.config_text([bt.route("slow", "forward", endpoint=sink.url("/in"),
                                       secret="k", timeout_ms=400)], path="/hook")
        b = start(cfg, "slow.conf")
        try:
            r = bt.curl(b.url("/hook"), body())
            d = bt.check_json_response(t, r, 504, "timeout", error="upstream_timeout")
            t.like((d or {}).get("message", ""), r"outcome unknown; retry is safe",
                   "a timed-out post says its outcome is unknown", r)
        finally:
            bt.stop_and_check(t, b)
    finally:
        sink.stop()


def t_delivery_id(_t):
    """15: the delivery id is a valid RFC 9562 UUID (version 8, variant 10),
    the same for the same post on the same route, another on another route."""
    _, _, doc = bt.v1_fixture()
    post = bt.v1_variant(doc, participation_id=str(uuid.uuid4()))
    ids = {}
    for name in ("alpha", "beta"):
        b = start(listen_config("", [bt.route(name)]), name + ".conf")
        try:
            got = [(bt.curl(b.url("/hook"), post).json() or {}).get("delivery_id")
                   for _ in range(2)]
        finally:
            bt.stop_and_check(t, b)
        t.is_(got[0], got[1], "route %s: same post, same delivery id" % name)
        try:
            u = uuid.UUID(got[0])
        except (TypeError, ValueError):
            u = None
        t.ok(u is not None and str(u) == got[0], "route %s: delivery id parses as a UUID"
             % name, repr(got[0]))
        t.is_(u and u.version, 8, "route %s: version 8" % name, repr(got[0]))
        t.is_(u and u.variant, uuid.RFC_4122, "route %s: RFC 9562 variant" % name,
              repr(got[0]))
        ids[name] = got[0]
    t.ok(ids["alpha"] != ids["beta"], "a renamed route changes the delivery id", repr(ids))


def t_encodings(_t):
    """13, 16: a compressed body or a non-UTF-8 charset is refused 415 with
    a reason, never parsed as if it were plain UTF-8 (no invalid_json)."""
    b = start(listen_config(""), "enc.conf")
    try:
        raw = body()
        for name, data in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw)),
                           ("br", raw)):
            r = bt.curl(b.url("/hook"), data, headers=["Content-Encoding: " + name])
            d = bt.check_json_response(t, r, 415, "Content-Encoding %s" % name,
                                       error="unsupported_encoding")
            t.like((d or {}).get("message", ""), name, "the 415 names %s" % name, r)
            t.is_(r.header("Accept-Encoding"), "identity",
                  "the 415 says Accept-Encoding: identity (%s)" % name, r)
        r = bt.curl(b.url("/hook"), raw, headers=["Content-Encoding: identity"])
        t.is_(r.status, 200, "Content-Encoding: identity is plain", r)
        form = bt.form_encode(json.loads(raw))
        latin = form.replace(b"firstname=", b"firstname=Ren%E9%20", 1)
        for ct in ("application/x-www-form-urlencoded; charset=iso-8859-1",
                   'application/x-www-form-urlencoded; charset="windows-1252"',
                   "application/json; charset=latin1"):
            r = bt.curl(b.url("/hook"), latin if "form" in ct else raw, content_type=ct)
            d = bt.check_json_response(t, r, 415, ct, error="unsupported_charset")
            cs = ct.split("charset=")[1].strip('"')
            t.like((d or {}).get("message", ""), "charset %s" % cs,
                   "the 415 names the charset %s" % cs, r)
        for ct in ("application/x-www-form-urlencoded; charset=utf-8",
                   "application/x-www-form-urlencoded; charset=UTF-8",
                   "application/x-www-form-urlencoded"):
            r = bt.curl(b.url("/hook"), form, content_type=ct)
            t.is_(r.status, 200, "form post with %s is taken" % ct, r)
    finally:
        bt.stop_and_check(t, b)


def t_trace(_t):
    """17: traceparent and X-Request-Id reach the endpoint and the request
    log line; a route's static headers are sent with every delivery."""
    sink = bt.Sink()
    b = None
    try:
        route = bt.route("fwd", "forward", endpoint=sink.url("/in"), secret="k",
                         headers=[{"name": "X-Tenant", "value": "acme"},
                                  {"name": "X-Env", "value": "prod eu"}])
        b = start(listen_config("", [route]), "trace.conf")
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        r = bt.curl(b.url("/hook"), body(), headers=["traceparent: " + tp,
                                                    "X-Request-Id: req-42.a"])
        t.is_(r.status, 200, "traced post delivered", r)
        t.require(sink.wait_requests(1), "the endpoint got it")
        got = sink.requests[-1]
        t.is_(got.header("traceparent"), tp, "traceparent passed to the endpoint", got)
        t.is_(got.header("X-Request-Id"), "req-42.a", "X-Request-Id passed to the endpoint",
              got)
        t.is_(got.header("X-Tenant"), "acme", "static route header sent", got)
        t.is_(got.header("X-Env"), "prod eu", "second static route header sent", got)
        def traced():
            lines = [json.loads(x) for x in list(b.err_lines) if '"event":"request"' in x]
            return [x for x in lines if x.get("traceparent") == tp
                    and x.get("request_id") == "req-42.a"]
        # the log line goes out through the writer thread: wait for it
        t.ok(bt.wait_for(traced), "the request log line carries both",
             [x for x in list(b.err_lines) if '"event":"request"' in x][-1:])
        r = bt.curl(b.url("/hook"), body(), headers=["traceparent: not-a-trace"])
        t.is_(r.status, 200, "a malformed traceparent does not block the post", r)
        t.require(sink.wait_requests(2), "the endpoint got the second post")
        t.is_(sink.requests[-1].header("traceparent"), None,
              "a malformed traceparent is not passed on", sink.requests[-1])
    finally:
        if b is not None:
            bt.stop_and_check(t, b)
        sink.stop()
    bad = listen_config("", [bt.route("f", "forward", endpoint="http://127.0.0.1:9/x",
                                      secret="k",
                                      headers=[{"name": "Content-Length", "value": "1"}])])
    r = bt.run_cli(["check", "--config", tmp.file("badhdr.conf", bad)], t=t)
    t.ok(r.rc != 0 and "Content-Length" in r.stderr,
         "a static header the bridge sets itself is refused at load", r)


def start_https(pki, cert, key, name):
    """A started bridge whose listener speaks HTTPS with cert/key."""
    cfg = listen_config('tls = { cert_file = "%s"; key_file = "%s"; };' % (cert, key))
    return bt.start_bridge(t, tmp, cfg, name, https_ca=pki.ca_cert)


def t_https_listener(_t):
    """11: plain HTTP to the HTTPS listener gets a plain-HTTP 400 saying so;
    TLS 1.2 offers AEAD suites only; no session tickets."""
    pki = bt.Pki(tmp)
    b = start_https(pki, pki.good_cert, pki.good_key, "https.conf")
    try:
        r = bt.raw_request(b.port, bt.http_request("POST", "/hook", body()))
        t.is_(r.status, 400, "plain HTTP to the HTTPS port: a plain-HTTP 400", r)
        t.like(r.body.decode("utf-8", "replace"), "speaks HTTPS",
               "the answer says the port speaks HTTPS", r)

        def handshake(ciphers):
            ctx = ssl.create_default_context(cafile=pki.ca_cert)
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(ciphers)
            with socket.create_connection(("127.0.0.1", b.port), timeout=5) as raw:
                try:
                    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                        return tls.cipher()[0], tls.session
                except (ssl.SSLError, OSError):
                    return None, None
        for cbc in ("ECDHE+AES128+SHA", "ECDHE+AES256+SHA384", "AES128-SHA256"):
            got, _ = handshake(cbc)
            t.is_(got, None, "TLS 1.2 CBC suite %s refused" % cbc)
        got, session = handshake("ECDHE+AESGCM")
        t.like(got or "", r"GCM", "TLS 1.2 AEAD suite accepted")
        t.ok(session is not None and not session.has_ticket, "no session ticket issued",
             repr(session))
        r = bt.curl(b.url("/hook"), body())
        t.is_(r.status, 0, "curl without the CA fails verification (sanity)", r)
    finally:
        bt.stop_and_check(t, b)


def t_cert_reload(_t):
    """11: SIGHUP reloads the listener's certificate and key (ACME renewal);
    a broken pair keeps the running one."""
    pki = bt.Pki(tmp)
    cert, key = tmp.join("live-cert.pem"), tmp.join("live-key.pem")
    shutil.copy(pki.good_cert, cert)
    shutil.copy(pki.good_key, key)
    b = start_https(pki, cert, key, "renew.conf")

    def served():
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", b.port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as tls:
                return tls.getpeercert(binary_form=True)

    def pem_der(path):
        with open(path, encoding="ascii") as f:
            return ssl.PEM_cert_to_DER_cert(f.read())
    try:
        t.is_(served(), pem_der(pki.good_cert), "the first certificate is served")
        shutil.copy(pki.self_cert, cert)
        shutil.copy(pki.self_key, key)
        n = len(b.err_lines)
        b.proc.send_signal(signal.SIGHUP)
        t.ok(bt.wait_for(lambda: any('"reloaded"' in x for x in b.err_lines[n:]), 10),
             "reload logged")
        t.ok(bt.wait_for(lambda: served() == pem_der(pki.self_cert), 5),
             "after SIGHUP new connections get the renewed certificate")
        with open(key, "w", encoding="ascii") as f:
            f.write("not a key\n")
        n = len(b.err_lines)
        b.proc.send_signal(signal.SIGHUP)
        t.ok(bt.wait_for(lambda: any("the running certificate stays" in x
                                     for x in b.err_lines[n:]), 10),
             "a broken key is refused at reload, with the reason")
        t.is_(served(), pem_der(pki.self_cert), "and the running certificate stays")
    finally:
        bt.stop_and_check(t, b)


def main():
    t.run("401 challenge (item 12)", t_challenge)
    t.run("Retry-After, outcome unknown (item 14)", t_retry_after)
    t.run("v8 UUID delivery ids (item 15)", t_delivery_id)
    t.run("compressed bodies and charsets (items 13, 16)", t_encodings)
    t.run("trace context and static headers (item 17)", t_trace)
    t.run("HTTPS listener (item 11)", t_https_listener)
    t.run("certificate reload on SIGHUP (item 11)", t_cert_reload)
    tmp.cleanup()
    t.done()


if __name__ == "__main__":
    main()
