#!/usr/bin/python3
"""Who may post and what a hostile peer gets: inbound auth, source allow-list,
the HTTPS listener, per-request deadline, header and string limits, libevent's
own refusals in JSON."""

import base64
import os
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
MAPPING = bt.MAPPING


def config(listen_extra="", limits="", route_extra=""):
    return ('listen = { address = "127.0.0.1"; port = 0; path = "/hook";\n%s };\n'
            'limits = { %s };\n'
            'workers = 1;\n'
            'routes = ( { name = "dry"; mapping = "%s"; mode = "dry-run"; %s } );\n'
            % (listen_extra, limits, MAPPING, route_extra))


body = bt.fresh_v1_body


def t_auth(_t):
    cfg = config('auth = { basic = { user = "qualifio"; password = "p@ss:w0rd"; };\n'
                 '         query = { name = "token"; value = "tok-123"; };\n'
                 '         header = { name = "X-Webhook-Token"; value = "hdr-456"; }; };')
    b = bt.Bridge(tmp, cfg, "auth.conf").start()
    try:
        u = b.url("/hook")
        r = bt.curl(u, body())
        d = bt.check_json_response(t, r, 401, "no credential", error="unauthorized")
        t.is_((d or {}).get("message"), "authentication required",
              "401 does not say which part failed", r)
        basic = base64.b64encode(b"qualifio:p@ss:w0rd").decode()
        r = bt.curl(u, body(), headers=["Authorization: Basic " + basic])
        t.is_(r.status, 200, "HTTP Basic (user-info) accepted; ':' in the password kept", r)
        r = bt.curl("http://qualifio:p%%40ss%%3Aw0rd@127.0.0.1:%d/hook" % b.port, body())
        t.is_(r.status, 200, "credential in the URL's user-info accepted", r)
        wrong = base64.b64encode(b"qualifio:p@ss:w0rD").decode()
        r = bt.curl(u, body(), headers=["Authorization: Basic " + wrong])
        bt.check_json_response(t, r, 401, "wrong password", error="unauthorized")
        r = bt.curl(u + "?token=tok-123", body())
        t.is_(r.status, 200, "query token accepted", r)
        r = bt.curl(u + "?token=tok-12", body())
        bt.check_json_response(t, r, 401, "query token prefix refused", error="unauthorized")
        r = bt.curl(u + "?token=tok-1234", body())
        bt.check_json_response(t, r, 401, "longer query token refused", error="unauthorized")
        r = bt.curl(u, body(), headers=["X-Webhook-Token: hdr-456"])
        t.is_(r.status, 200, "header token accepted", r)
        r = bt.curl(u, body(), headers=["X-Webhook-Token: hdr-457"])
        bt.check_json_response(t, r, 401, "wrong header token", error="unauthorized")
        r = bt.curl(u, body(), headers=["Authorization: Basic !!!notbase64"])
        bt.check_json_response(t, r, 401, "garbage Basic value", error="unauthorized")
        r = bt.curl(b.url("/healthz"))
        t.is_(r.status, 200, "/healthz needs no credential", r)
    finally:
        bt.stop_and_check(t, b, "auth bridge")


def t_route_auth(_t):
    cfg = config(route_extra='auth = { header = { name = "X-Route-Key"; value = "r1"; }; };')
    b = bt.Bridge(tmp, cfg, "route-auth.conf").start()
    try:
        r = bt.curl(b.url("/hook"), body())
        d = bt.check_json_response(t, r, 401, "route-level auth", error="unauthorized")
        t.ok(d is not None and "route" not in d, "401 does not name the route", r)
        r = bt.curl(b.url("/hook"), body(), headers=["X-Route-Key: r1"])
        t.is_(r.status, 200, "route-level auth passes", r)
    finally:
        bt.stop_and_check(t, b, "route-auth bridge")


def t_allow(_t):
    b = bt.Bridge(tmp, config('allow = [ "10.0.0.0/8", "2001:db8::/32" ];'), "deny.conf").start()
    try:
        r = bt.curl(b.url("/hook"), body())
        bt.check_json_response(t, r, 403, "loopback not in the allow-list", error="forbidden")
        r = bt.curl(b.url("/metrics"))
        t.is_(r.status, 403, "/metrics is allow-listed too", r)
        r = bt.curl(b.url("/healthz"))
        t.is_(r.status, 200, "/healthz stays open for probes", r)
    finally:
        bt.stop_and_check(t, b, "deny bridge")
    b = bt.Bridge(tmp, config('allow = [ "127.0.0.0/8" ];'), "allow.conf").start()
    try:
        t.is_(bt.curl(b.url("/hook"), body()).status, 200, "loopback in the allow-list")
    finally:
        bt.stop_and_check(t, b, "allow bridge")
    r = bt.run_cli(["check", "--config",
                    tmp.file("bad-allow.conf", config('allow = [ "10.0.0.1/8" ];'))])
    t.is_(r.rc, 1, "allow-list with host bits set is a config error", r)
    t.like(r.stderr, r"bad-allow\.conf:\d+: 'allow' element 0", "error names file:line", r)


def t_tls_listener(_t):
    pki = bt.Pki(tmp)
    cfg = config('tls = { cert_file = "%s"; key_file = "%s"; };' % (pki.good_cert, pki.good_key))
    b = bt.Bridge(tmp, cfg, "tls-listen.conf")
    b.https_ca = pki.ca_cert
    b.start()
    try:
        r = bt.curl(b.url("/hook"), body(), headers=[])
        t.is_(r.status, 0, "HTTPS listener: curl without the CA refuses the certificate", r)
        p = subprocess.run(["curl", "-sS", "--cacert", pki.ca_cert, "-o", "/dev/null", "-w",
                            "%{http_code} %{ssl_verify_result}", "-H",
                            "Content-Type: application/json", "--data-binary", body(),
                            b.url("/hook")], capture_output=True, text=True)
        t.is_(p.stdout.strip(), "200 0", "HTTPS listener: verified TLS post answered 200", p)
        p = subprocess.run(["curl", "-sS", "--cacert", pki.ca_cert, "--tlsv1.0", "--tls-max",
                            "1.1", "-o", "/dev/null", "-w", "%{http_code}", b.url("/healthz")],
                           capture_output=True, text=True)
        t.ok(p.returncode != 0, "HTTPS listener refuses TLS 1.1", p)
        ctx = ssl.create_default_context(cafile=pki.ca_cert)
        with socket.create_connection(("127.0.0.1", b.port)) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                t.ok(s.version() in ("TLSv1.2", "TLSv1.3"), "negotiated %s" % s.version())
    finally:
        bt.stop_and_check(t, b, "tls-listener bridge")


def t_limits(_t):
    cfg = config(limits="max_body = 4096; max_headers = 20; max_string = 256; "
                        "request_deadline_ms = 1500;")
    b = bt.Bridge(tmp, cfg, "limits.conf").start()
    try:
        hdrs = ["X-H%d: v" % i for i in range(30)]
        r = bt.curl(b.url("/hook"), body(), headers=hdrs)
        bt.check_json_response(t, r, 431, "more header lines than limits.max_headers",
                               error="too_many_headers")
        path, raw, doc = bt.v1_fixture()
        r = bt.curl(b.url("/hook"), bt.v1_variant(doc, lastname="x" * 300))
        bt.check_json_response(t, r, 400, "string over limits.max_string", error="invalid_json")
        r = bt.curl(b.url("/hook"), b"{" + b'"a":"b",' * 2000 + b'"z":1}')
        bt.check_json_response(t, r, 413, "body over max_body", error="body_too_large")
        r = bt.curl(b.url("/hook"), b"x" * (4096 * 2 + 65536 + 1000))
        bt.check_json_response(t, r, 413, "body over the hard ceiling: libevent's 413 in JSON",
                               error="body_too_large")
        # slow drip: one byte every 0.2 s never completes within the deadline
        s = socket.create_connection(("127.0.0.1", b.port))
        s.settimeout(10)
        req = (b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 200\r\n\r\n")
        t0 = time.monotonic()
        closed = False
        try:
            for ch in req + b" " * 200:
                s.send(bytes([ch]))
                time.sleep(0.2)
                if time.monotonic() - t0 > 8:
                    break
        except OSError:
            closed = True
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        s.close()
        elapsed = time.monotonic() - t0
        t.ok(closed or data, "slow drip cut off", (closed, data))
        t.ok(elapsed < 6, "slow drip cut within the deadline and a sweep (%.1fs)" % elapsed)
        t.like(data.decode("latin-1"), r"(?s)^HTTP/1.1 408 .*request_timeout",
               "slow drip answered 408 request_timeout", data)
        r = bt.curl(b.url("/healthz"))
        t.is_(r.status, 200, "bridge still answers after the drip", r)
        t.ok(bt.wait_for(lambda: any('"request_deadline"' in line
                                     for line in list(b.err_lines))), "deadline logged")
    finally:
        bt.stop_and_check(t, b, "limits bridge")


def t_keys(_t):
    b = bt.Bridge(tmp, config(limits="max_keys = 40;"), "keys.conf").start()
    try:
        body = "{" + ",".join('"k%d":"v"' % i for i in range(41)) + "}"
        r = bt.curl(b.url("/hook"), body.encode())
        d = bt.check_json_response(t, r, 400, "more keys than limits.max_keys", error="invalid_json")
        t.like((d or {}).get("message", ""), r"more than 40 keys", "message names the key limit", d)
    finally:
        bt.stop_and_check(t, b, "keys bridge")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def t_emfile(_t):
    """Out of descriptors: the listener pauses instead of spinning, and the
    bridge serves again once connections close (libevent 2.1 would spin on EMFILE)."""
    import resource
    b = bt.Bridge(tmp, config(limits="request_timeout_ms = 60000;"), "emfile.conf")
    b.preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    b.start()
    conns = []
    try:
        for _ in range(120):
            s = socket.create_connection(("127.0.0.1", b.port), timeout=5)
            conns.append(s)
        t.ok(b.wait_log(lambda r: r.get("event") == "accept_paused", 10),
             "out of descriptors: the listener paused")
        # CPU over a fixed window of the paused state: a measurement, not a wait
        cpu0, t0 = cpu_seconds(b.proc.pid), time.monotonic()
        time.sleep(2.0)
        used = (cpu_seconds(b.proc.pid) - cpu0) / (time.monotonic() - t0)
        t.ok(used < 0.3, "listener paused, not spinning, while out of descriptors "
             "(CPU %.0f%% of a core)" % (used * 100))
        t.ok(any('"accept_paused"' in line for line in b.err_lines), "accept pause logged")
        for s in conns:
            s.close()
        conns = []
        ok = bt.wait_for(lambda: bt.curl(b.url("/healthz"), max_time=2).status == 200, 10)
        t.ok(ok, "serves again once descriptors are free")
        t.is_(bt.curl(b.url("/hook"), body()).status, 200, "and takes posts again")
    finally:
        for s in conns:
            s.close()
        bt.stop_and_check(t, b, "emfile bridge")


for name, fn in [("keys", t_keys), ("emfile", t_emfile), ("auth", t_auth), ("route auth", t_route_auth), ("allow-list", t_allow),
                 ("TLS listener", t_tls_listener), ("limits", t_limits)]:
    t.run(name, fn)
tmp.cleanup()
t.done()
