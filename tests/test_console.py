#!/usr/bin/python3
"""The cutover console (GET / on the admin listener) in a real browser:
Debian's Chromium driven by chromedriver over the W3C WebDriver protocol
(urllib and json only).  The page loads without console errors, shows the
routes and the counts /metrics has, a ramp change made on the page reaches
the API and the routing, the kill button works; a 1280x800 screenshot is
kept in the build folder.  Also: admin.auth protects the page, which carries
a content security policy and may not be framed."""

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
_, _, DOC = bt.v1_fixture()
V1_BODY = b'{"legacy":"ok"}'
C_SHADOW = 4242
SHOT = os.path.join(os.environ.get("BRIDGE_BUILD_ROOT", tmp.join(".")),
                    "console-1280x800.png")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class WebDriver:
    """The few W3C WebDriver commands the test needs."""

    def __init__(self, port):
        self.base = "http://127.0.0.1:%d" % port
        self.sid = None

    def call(self, method, path, body=None, timeout=30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"{}").get("value")
        except urllib.error.HTTPError as e:
            raise bt.TestFailure("WebDriver %s %s: %s" % (method, path,
                                                           e.read()[:500].decode("utf-8",
                                                                                 "replace")))

    def s(self, method, path, body=None):
        return self.call(method, "/session/%s%s" % (self.sid, path), body)

    def start(self):
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": shutil.which("chromium") or "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,800",
                         "--hide-scrollbars", "--no-first-run", "--disable-extensions"]},
            "goog:loggingPrefs": {"browser": "ALL"}}}}
        v = self.call("POST", "/session", caps, timeout=60)
        self.sid = v["sessionId"]
        return v

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        v = self.s("POST", "/element", {"using": "css selector", "value": css})
        return list(v.values())[0]

    def browser_log(self):
        return self.s("POST", "/se/log", {"type": "browser"}) or []

    def wait(self, script, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            v = self.js(script)
            if v or time.monotonic() > deadline:
                return v
            time.sleep(0.05)

    def alert_text(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.s("GET", "/alert/text")
            except bt.TestFailure:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def quit(self):
        if self.sid:
            try:
                self.call("DELETE", "/session/" + self.sid, timeout=15)
            except (bt.TestFailure, OSError):
                pass


def metrics_requests(b):
    """{(route, outcome): count} from /metrics."""
    out = {}
    for line in bt.curl(b.admin_url("/metrics")).body.decode().splitlines():
        if line.startswith("webhook_bridge_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            kv = dict(p.split("=", 1) for p in labels[labels.index("{") + 1:-1].split(","))
            out[(json.loads(kv["route"]), json.loads(kv["outcome"]))] = int(float(value))
    return out


def post(b, pid, status="complete", website=None):
    kw = {"participation_id": pid, "status": status}
    if website:
        kw["website_id"] = website
    return bt.curl(b.url("/hook"), bt.v1_variant(DOC, **kw))


def png_size(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", data[16:24])


def severe(entries):
    return [e for e in entries if e.get("level") == "SEVERE"]


def t_page(_t):
    legacy, v2 = bt.Sink(), bt.Sink()
    legacy.default = bt.Reply(200, body=V1_BODY)
    state = tmp.join("state")
    os.makedirs(state, exist_ok=True)
    routes = [bt.route("crm", "dual", endpoint=v2.url("/v2"), legacy_endpoint=legacy.url("/v1"),
                       secret="s", cutover={"ramp": 0}),
              bt.route("shop", "forward", endpoint=v2.url("/shop"), secret="s",
                       match={"website_id": [77]}),
              bt.route("shadow", "dry-run", secret="s", match={"campaign_id": [C_SHADOW]})]
    cfg = bt.config_text(routes, path="/hook", workers=1,
                         dry_run={"v2_path": "/v2real", "stdout": False})
    b = bt.Bridge(tmp, cfg, "console.conf")
    b.env = dict(os.environ, STATE_DIRECTORY=state)
    b.start()
    drv = None
    wd = WebDriver(free_port())
    try:
        for i in range(12):
            post(b, str(uuid.uuid4()))
        # v1 answers the dual route's posts; their v2 copies may still be on
        # the way, and must be answered 200 before the sink turns to 500
        t.require(v2.wait_requests(12, 10), "the 12 v2 copies reached their sink",
                  "%d arrived" % len(v2.requests))
        v2.default = bt.Reply(500)
        for i in range(3):
            post(b, str(uuid.uuid4()), website=77)
        v2.default = bt.Reply(200)
        post(b, str(uuid.uuid4()), website=77)
        # the shadow comparison: two real v2 like their translation, one not
        for i in range(3):
            pid = str(uuid.uuid4())
            body = bt.v1_variant(DOC, participation_id=pid, campaign_id=C_SHADOW)
            bt.curl(b.url("/hook"), body)
            real = json.loads(bt.map_output(tmp.file("in-%d.json" % i, body.decode())).stdout)
            if i == 2:
                real["campaign"]["name"] = "Another name"
            rb = json.dumps(real, separators=(",", ":")).encode()
            r = bt.curl(b.url("/v2real"), rb,
                        headers=["X-Qualifio-Signature: sha256=" + bt.hmac_hex("s", rb)])
            t.is_((r.json() or {}).get("status"), "compared", "real v2 %d compared" % i, r)
        r = bt.curl(b.url("/hook"), bt.v1_variant(DOC, participation_id=str(uuid.uuid4()),
                                                   zz_extra_key="x"))
        t.is_(r.status, 200, "a post with an unmapped key", r)
        r = bt.curl(b.admin_url("/"))
        t.is_(r.status, 200, "GET / on the admin listener", r)
        t.like(r.header("content-type") or "", r"^text/html", "the console is HTML")
        t.like(r.header("content-security-policy") or "", r"default-src 'self'",
               "it carries a content security policy: nothing from elsewhere")
        t.is_(r.header("x-frame-options"), "DENY", "and may not be framed")
        t.ok(b"http://" not in r.body and b"https://" not in r.body,
             "the page names no other site (no CDN)")
        t.is_(bt.curl(b.admin_url("/favicon.svg")).status, 200, "its icon is served")
        js = bt.curl(b.admin_url("/console.js"))
        t.ok(js.status == 200 and b"X-Bridge-Token" in js.body, "its script is served", js)

        drv = subprocess.Popen(["chromedriver", "--port=%d" % int(wd.base.rsplit(":", 1)[1])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t.require(bt.wait_for(lambda: _ready(wd), 20), "chromedriver answers")
        wd.start()
        # the viewport itself 1280x800, whatever the window's frame takes
        wd.s("POST", "/goog/cdp/execute", {"cmd": "Emulation.setDeviceMetricsOverride",
                                           "params": {"width": 1280, "height": 800,
                                                      "deviceScaleFactor": 1,
                                                      "mobile": False}})
        wd.s("POST", "/url", {"url": b.admin_url("/")})
        t.require(wd.wait("return document.body.getAttribute('data-loaded')"),
                  "the page loaded its data", wd.js("return document.body.innerText"))
        errs = severe(wd.browser_log())
        t.is_(errs, [], "no console errors on load")
        shown = wd.js("return Array.from(document.querySelectorAll('#cutover-rows tr'))"
                      ".map(function (e) { return e.getAttribute('data-route'); })")
        t.is_(shown, ["crm"], "the cutover table shows the dual route")
        counts = wd.js("var o = {}; document.querySelectorAll('td.count').forEach(function (e)"
                       " { o[e.getAttribute('data-route') + ' ' + e.getAttribute("
                       "'data-outcome')] = parseInt(e.textContent, 10); }); return o;")
        want = {"%s %s" % k: v for k, v in metrics_requests(b).items() if v}
        t.is_(counts, want, "the page's counts are /metrics' counts")
        t.is_(want.get("crm legacy_delivered"), 13, "(13 posts answered by v1 on crm)")
        t.is_(want.get("shop upstream_status"), 3, "(3 failures on shop)")
        text = wd.js("return document.body.innerText")
        t.like(text, r"crm: v1 13 ok / 0 failed, v2 13 ok / 0 failed",
               "the chart's caption counts crm's posts of the last hour (v2: the copies)",
               text[:2000])
        t.like(text, r"shop: v1 0 ok / 0 failed, v2 1 ok / 3 failed",
               "... and shop's", text[:2000])
        t.ok(wd.js("return document.querySelectorAll('svg.chart polyline').length") == 12,
             "one chart per route, four lines each")
        t.like(text, r"Identical: 66\.7 % \(2 of 3 compared; 1 different\)",
               "the shadow comparison's identical rate", text[:3000])
        t.like(text, r"campaign\.name\s+1\s+qualifio-v1-to-v2\.conf:\d+",
               "the differing v2 path with the rule file:line behind it", text[:3000])
        t.like(text, r"crm\s+zz_extra_key\s+1", "the unmapped v1 key", text[:3000])

        inp = wd.find("tr[data-route='crm'] .ramp-input")
        wd.s("POST", "/element/%s/clear" % inp, {})
        wd.s("POST", "/element/%s/value" % inp, {"text": "42"})
        shown = wd.js("return document.getElementById('updated').textContent")
        t.ok(wd.wait("return document.getElementById('updated').textContent !== %s"
                     % json.dumps(shown), 10), "the page refreshes itself")
        t.is_(wd.js("return document.querySelector(\"tr[data-route='crm'] .ramp-input\").value"),
              "42",
              "a ramp being typed survives the refresh (the row is updated in place)")
        wd.s("POST", "/element/%s/clear" % inp, {})
        wd.s("POST", "/element/%s/value" % inp, {"text": "100"})
        wd.s("POST", "/element/%s/click" % wd.find("tr[data-route='crm'] .set-ramp"), {})
        t.like(wd.alert_text(), r"Set the ramp of crm to 100 %\?", "the page asks first")
        wd.s("POST", "/alert/accept", {})
        t.ok(bt.wait_for(lambda: _ramp(b) == 100, 10), "the ramp set on the page reaches the API")
        r = post(b, str(uuid.uuid4()))
        t.ok(r.status == 200 and (r.json() or {}).get("status") == "delivered",
             "... and the routing: v2 answers", r)
        t.ok(wd.wait("return document.querySelector(\"tr[data-route='crm'] [data-field="
                     "'ramp']\").textContent === '100 %'"), "the page shows the new ramp")
        # the log line is written by the log thread, and read by the test's reader, later
        def ramp_records():
            return [x for x in b.log_records() if x.get("event") == "cutover_changed"
                    and x.get("route") == "crm" and x.get("ramp") == 100]
        bt.wait_for(ramp_records, 10)
        recs = ramp_records()
        t.ok(recs and "admin API" in recs[-1].get("by", ""), "the change is logged with who",
             recs[-1:])

        wd.s("POST", "/element/%s/click" % wd.find("tr[data-route='crm'] .kill"), {})
        t.like(wd.alert_text(), r"Put v1 back", "the kill button asks first")
        wd.s("POST", "/alert/dismiss", {})
        t.is_(_ramp(b), 100, "dismissed: nothing changed")
        wd.s("POST", "/element/%s/click" % wd.find("tr[data-route='crm'] .kill"), {})
        wd.alert_text()
        wd.s("POST", "/alert/accept", {})
        t.ok(bt.wait_for(lambda: _state(b).get("status") == "killed", 10),
             "the kill button kills the route")
        r = post(b, str(uuid.uuid4()))
        t.is_(r.body, V1_BODY, "after the kill v1 answers", r)
        t.ok(wd.wait("return document.querySelector(\"tr[data-route='crm'] [data-field="
                     "'status']\").textContent.indexOf('killed') === 0"),
             "the page shows the route killed")
        wd.js("window.scrollTo(0, 0)")
        shot = base64.b64decode(wd.s("GET", "/screenshot"))
        with open(SHOT, "wb") as f:
            f.write(shot)
        t.is_(png_size(shot), (1280, 800), "screenshot of the page at 1280x800 kept (%s)" % SHOT)
        t.is_(severe(wd.browser_log()), [], "no console errors after the changes")
    finally:
        wd.quit()
        if drv:
            drv.terminate()
            try:
                drv.wait(10)
            except subprocess.TimeoutExpired:
                drv.kill()
        bt.stop_and_check(t, b, "console bridge")
        legacy.stop()
        v2.stop()


def t_auth(_t):
    sink = bt.Sink()
    admin = {"address": "127.0.0.1", "port": 0,
             "auth": {"basic": {"user": "ops", "password": "pw-123"}}}
    cfg = bt.config_text([bt.route("crm", "dual", endpoint=sink.url("/v2"),
                                   legacy_endpoint=sink.url("/v1"), secret="s")],
                         path="/hook", workers=1, admin=admin)
    b = bt.Bridge(tmp, cfg, "console-auth.conf")
    b.env = dict(os.environ, STATE_DIRECTORY=tmp.join("state"))
    b.start()
    try:
        for p in ["/", "/console.js", "/console/data", "/cutover"]:
            r = bt.curl(b.admin_url(p))
            t.is_(r.status, 401, "admin.auth protects %s" % p, r)
        r = bt.curl(b.admin_url("/"), headers=["Authorization: Basic " +
                                               base64.b64encode(b"ops:pw-123").decode()])
        t.is_(r.status, 200, "with the credential the page loads", r)
    finally:
        bt.stop_and_check(t, b, "console auth bridge")
        sink.stop()


def _ready(wd):
    try:
        return (wd.call("GET", "/status", timeout=2) or {}).get("ready")
    except (OSError, bt.TestFailure):
        return False


def _state(b):
    for r in (bt.curl(b.admin_url("/cutover")).json() or {}).get("routes", []):
        if r["route"] == "crm":
            return r
    return {}


def _ramp(b):
    return _state(b).get("ramp")


try:
    t.run("console in a browser", t_page)
    t.run("console behind admin.auth", t_auth)
finally:
    tmp.cleanup()
t.done()
