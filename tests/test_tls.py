#!/usr/bin/python3
"""`serve` forwarding over HTTPS: trust store, host name check, SNI."""

import json
import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
HOOK = "/qualifio/v1"
SECRET = "tls-s3cret"
C_CA, C_NOCA, C_WRONG, C_SELF, C_LOCALHOST = 700001, 700002, 700003, 700004, 700005


def fwd(name, endpoint, campaign, **kw):
    return bt.route(name, "forward", endpoint=endpoint,
                    auth_header={"name": "Authorization", "value": "Bearer tls"},
                    secret=SECRET, match={"campaign_id": [campaign]}, timeout_ms=3000, **kw)


def post(b, doc, campaign):
    body = bt.v1_variant(doc, campaign_id=campaign, participation_id=str(uuid.uuid4()))
    return bt.curl(b.url(HOOK), body)


def t_trusted(t, b, good, doc, host="127.0.0.1", campaign=C_CA, route="ca"):
    n = len(good.requests)
    r = post(b, doc, campaign)
    d = bt.check_json_response(t, r, 200, "%s: HTTPS delivery" % route)
    t.is_(d and d.get("status"), "delivered", "%s: delivered" % route, repr(r))
    t.is_(d and d.get("upstream_status"), 200, "%s: upstream_status 200" % route, repr(r))
    t.require(good.wait_requests(n + 1, 3), "%s: HTTPS sink received the request" % route,
              "sink TLS errors: %s" % good.tls_errors)
    req = good.requests[n]
    t.is_(req.header("X-Qualifio-Signature"), "sha256=" + bt.hmac_hex(SECRET, req.body),
          "%s: signature verifies over the bytes received" % route)
    t.is_(req.header("Host"), "%s:%d" % (host, good.port), "%s: Host header" % route)
    t.ok(req.tls_version in ("TLSv1.2", "TLSv1.3"), "%s: TLS 1.2 or newer (%s)"
         % (route, req.tls_version))
    want_sni = None if host == "127.0.0.1" else host
    t.is_(req.sni, want_sni, "%s: SNI %s" % (route, "sent for a name" if want_sni
                                              else "not sent for an IP literal"))
    if d:
        t.is_(d.get("participation_id"), json.loads(req.body).get("id"),
              "%s: participation delivered" % route)


def t_rejected(t, b, sink, doc, campaign, route, why):
    n = len(sink.requests)
    r = post(b, doc, campaign)
    d = bt.check_json_response(t, r, 502, "%s (%s)" % (route, why), error="upstream_tls")
    if d:
        t.is_(d.get("route"), route, "%s: route named" % route, repr(r))
        t.like(d.get("delivery_id"), bt.UUID_RE.pattern, "%s: delivery_id present" % route,
               repr(r))
    t.is_(len(sink.requests), n, "%s: no HTTP request reached the untrusted peer" % route)
    t.ok(r.elapsed < 3, "%s: fails fast (%.3f s)" % (route, r.elapsed))


def t_keepalive(t, b, good, doc):
    good.reset()
    statuses = [post(b, doc, C_CA).status for _ in range(5)]
    t.is_(statuses, [200] * 5, "5 sequential HTTPS posts delivered")
    ports = set(r.client[1] for r in good.requests)
    t.is_(len(ports), 1, "HTTPS keep-alive: 5 sequential posts share one TLS connection",
          "client ports in order: %s" % [r.client[1] for r in good.requests])


def main():
    pki = bt.Pki(tmp)
    good = bt.Sink(pki.good_cert, pki.good_key, also_ipv6=True)
    wrong = bt.Sink(pki.wrong_cert, pki.wrong_key)
    selfs = bt.Sink(pki.self_cert, pki.self_key)
    routes = [
        fwd("ca", good.url(), C_CA, ca_file=pki.ca_cert),
        fwd("no-ca", good.url(), C_NOCA),
        fwd("wrong-name", wrong.url(), C_WRONG, ca_file=pki.ca_cert),
        fwd("self-signed", selfs.url(), C_SELF, ca_file=pki.ca_cert),
        fwd("localhost", good.url(host="localhost"), C_LOCALHOST, ca_file=pki.ca_cert),
    ]
    cfg = bt.config_text(routes, path=HOOK, tls_ca=pki.other_ca_cert, workers=1)
    b = t.start(bt.Bridge(tmp, cfg, "tls.conf"), "TLS bridge starts")
    try:
        if b is not None:
            path, raw, doc = bt.v1_fixture()
            t.run("route ca_file = test CA", t_trusted, b, good, doc)
            t.run("tls.ca_file = another CA", t_rejected, b, good, doc, C_NOCA, "no-ca",
                  "issuer not trusted")
            t.run("wrong host name", t_rejected, b, wrong, doc, C_WRONG, "wrong-name",
                  "certificate for wrong.example")
            t.run("self-signed", t_rejected, b, selfs, doc, C_SELF, "self-signed",
                  "self-signed certificate")
            t.run("https://localhost", t_trusted, b, good, doc, "localhost", C_LOCALHOST,
                  "localhost")
            t.run("trusted route after failures", t_trusted, b, good, doc)
            t.run("HTTPS keep-alive", t_keepalive, b, good, doc)
    finally:
        if b is not None:
            bt.stop_and_check(t, b, "TLS bridge")
        for s in (good, wrong, selfs):
            s.stop()


try:
    main()
finally:
    tmp.cleanup()
t.done()
