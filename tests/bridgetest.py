"""Shared helpers for the integration tests (stdlib + jsonschema only).

The scripts start the real webhook-bridge binary (BRIDGE_BIN) against real
loopback peers: an HTTP/1.1 keep-alive sink, the same sink behind TLS with
certificates made at test time by the openssl CLI, and curl as the client.
Everything listens on 127.0.0.1 (or ::1) only.

Output is TAP: "ok N - name" / "not ok N - name" with "# " diagnostics and the
plan "1..N" at the end; the exit status is non-zero when any test failed.
"""

import atexit
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

SOURCE_ROOT = os.environ.get(
    "BRIDGE_SOURCE_ROOT",
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_ROOT = os.environ.get("BRIDGE_BUILD_ROOT", os.path.join(SOURCE_ROOT, "build"))
BRIDGE_BIN = os.environ.get("BRIDGE_BIN", os.path.join(BUILD_ROOT, "webhook-bridge"))
MAPPING = os.path.join(SOURCE_ROOT, "mappings", "qualifio-v1-to-v2.conf")
SHIPPED_CONFIG = os.path.join(SOURCE_ROOT, "mappings", "bridge.conf")
SCHEMA = os.path.join(SOURCE_ROOT, "fixtures", "schema", "v2.schema.json")
V1_FIXTURES = os.path.join(SOURCE_ROOT, "fixtures", "v1")
VERSION = "0.1.0"

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "WARNING: ThreadSanitizer")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Sanitizer runs: make reports land on stderr where the checks look for them.
os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")


class TestFailure(Exception):
    """Aborts the current test, which is reported as failed.  reported=True when
    a "not ok" line already says why (require()); otherwise Tap.run reports it."""

    def __init__(self, message, reported=False):
        super().__init__(message)
        self.reported = reported


# --------------------------------------------------------------------------
# TAP
# --------------------------------------------------------------------------

class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0
        self.current = None

    def _emit(self, line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def diag(self, text):
        for line in str(text).splitlines() or [""]:
            self._emit("# " + line)

    def ok(self, cond, name, diag=None):
        self.n += 1
        if cond:
            self._emit("ok %d - %s" % (self.n, name))
        else:
            self.failed += 1
            self._emit("not ok %d - %s" % (self.n, name))
            if diag is not None:
                self.diag(diag)
        return bool(cond)

    def is_(self, got, want, name, diag=None):
        good = got == want
        text = None
        if not good:
            text = "got:  %s\nwant: %s" % (_short(got), _short(want))
            if diag:
                text += "\n" + str(diag)
        return self.ok(good, name, text)

    def like(self, got, pattern, name, diag=None):
        good = isinstance(got, str) and re.search(pattern, got) is not None
        text = None
        if not good:
            text = "got:  %s\nwant match of: %s" % (_short(got), pattern)
            if diag:
                text += "\n" + str(diag)
        return self.ok(good, name, text)

    def require(self, cond, name, diag=None):
        """ok() that aborts the current test function when it fails."""
        if not self.ok(cond, name, diag):
            raise TestFailure(name, reported=True)

    def run(self, name, fn, *args):
        """Run one test function; an uncaught exception is one "not ok", and so
        is a TestFailure no "not ok" line reported yet (a bridge that did not
        start), so a test that stops early never just shrinks the plan."""
        self.current = name
        try:
            fn(self, *args)
        except TestFailure as e:
            if not e.reported:
                self.ok(False, "%s: %s" % (name, str(e).split("\n", 1)[0]), str(e))
        except Exception:  # noqa: BLE001 - the whole point is to report it
            self.ok(False, "%s: uncaught exception" % name, traceback.format_exc())
        finally:
            self.current = None

    def start(self, bridge, name):
        """Starts bridge as one check: it is running and listening.  Returns the
        bridge, or None (reported as "not ok" with the reason) when it did not
        start."""
        try:
            bridge.start()
        except Exception as e:  # noqa: BLE001 - reported as the failed check
            bridge.kill()
            self.ok(False, name, str(e))
            return None
        self.ok(bridge.proc.poll() is None and bridge.port is not None,
                "%s on port %s" % (name, bridge.port), bridge.stderr)
        return bridge

    def done(self):
        if self.n == 0:
            self.ok(False, "no test ran")
        self._emit("1..%d" % self.n)
        if self.failed:
            self.diag("%d of %d failed" % (self.failed, self.n))
        sys.exit(1 if self.failed else 0)


def _short(v, limit=1500):
    s = v if isinstance(v, str) else repr(v)
    return s if len(s) <= limit else s[:limit] + "...(%d more)" % (len(s) - limit)


# The build under test was instrumented (meson's b_sanitize, set by
# tests/meson.build): only there does "no sanitizer report" check anything.
INSTRUMENTED = os.environ.get("BRIDGE_SANITIZE", "none") not in ("", "none")


def check_no_sanitizer_report(t, text, name):
    """One check "no sanitizer report" in instrumented builds; in a plain build
    a report cannot come, so nothing is counted unless one did."""
    rep = sanitizer_report(text)
    if INSTRUMENTED or rep:
        t.ok(not rep, name, rep or None)


def sanitizer_report(text):
    """The sanitizer lines of a stderr capture ("" when clean)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    hits = [l for l in text.splitlines() if any(m in l for m in SANITIZER_MARKERS)]
    if not hits:
        return ""
    return text[-6000:]


# --------------------------------------------------------------------------
# Files, fixtures, schema
# --------------------------------------------------------------------------

class TempDir:
    def __init__(self, prefix="bridgetest-"):
        self.path = tempfile.mkdtemp(prefix=prefix)

    def file(self, name, content):
        p = os.path.join(self.path, name)
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(p, mode) as f:
            f.write(content)
        return p

    def join(self, name):
        return os.path.join(self.path, name)

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


def representative_fixture():
    """Path of the representative v1 fixture: the one named *representative*,
    else the complete/basic one, else the first in name order."""
    try:
        names = sorted(n for n in os.listdir(V1_FIXTURES) if n.endswith(".json"))
    except OSError:
        names = []
    if not names:
        raise TestFailure("no v1 fixture in fixtures/v1/*.json")
    for key in ("representative", "complete", "basic", "minimal"):
        for n in names:
            if key in n:
                return os.path.join(V1_FIXTURES, n)
    return os.path.join(V1_FIXTURES, names[0])


def load_json_exact(data):
    """Parse JSON keeping number texts (as NumText) so nothing is rounded."""
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    return json.loads(data, parse_int=NumText, parse_float=NumText)


class NumText(str):
    """A JSON number kept as its exact text; dumps back as a bare number."""


def dumps_exact(obj):
    """Compact JSON from a load_json_exact() tree (numbers re-emitted verbatim)."""
    if isinstance(obj, NumText):
        return str(obj)
    if isinstance(obj, dict):
        return "{" + ",".join(json.dumps(k) + ":" + dumps_exact(v) for k, v in obj.items()) + "}"
    if isinstance(obj, list):
        return "[" + ",".join(dumps_exact(v) for v in obj) + "]"
    return json.dumps(obj, ensure_ascii=False)


def v1_fixture():
    """(path, raw bytes, ordered dict with exact numbers) of the representative fixture."""
    path = representative_fixture()
    with open(path, "rb") as f:
        raw = f.read()
    return path, raw, load_json_exact(raw)


def v1_variant(doc, **changes):
    """A copy of a v1 dict with keys replaced (None removes); returns compact JSON bytes."""
    d = dict(doc)
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        elif isinstance(v, int) and not isinstance(v, bool):
            d[k] = NumText(str(v))
        else:
            d[k] = v
    return dumps_exact(d).encode("utf-8")


def fresh_v1_body():
    """The representative fixture under a new participation id, as JSON bytes."""
    _, _, doc = v1_fixture()
    return v1_variant(doc, participation_id=str(uuid.uuid4()))


def form_encode(doc):
    """application/x-www-form-urlencoded form of a flat v1 dict: numbers by
    their text, arrays as repeated keys, true/false as text, null as empty."""
    from urllib.parse import quote_plus
    parts = []
    for k, v in doc.items():
        vals = v if isinstance(v, list) else [v]
        for x in vals:
            if x is None:
                s = ""
            elif x is True:
                s = "true"
            elif x is False:
                s = "false"
            else:
                s = str(x)
            parts.append(quote_plus(k) + "=" + quote_plus(s))
    return "&".join(parts).encode("ascii")


def stringify_scalars(obj):
    """Numbers and numeric strings compare equal after this (form posts carry text)."""
    if isinstance(obj, dict):
        return {k: stringify_scalars(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [stringify_scalars(v) for v in obj]
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, (int, float)):
        return str(obj)
    return obj


_validator = None


def v2_errors(doc):
    """Schema errors of a v2 document (list of strings; empty = valid).
    A missing or unreadable schema is itself an error."""
    global _validator
    if _validator is None:
        import jsonschema
        try:
            with open(SCHEMA) as f:
                schema = json.load(f)
            jsonschema.Draft7Validator.check_schema(schema)
        except Exception as e:  # noqa: BLE001
            return ["schema %s unusable: %s" % (SCHEMA, e)]
        _validator = jsonschema.Draft7Validator(schema)
    return ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(root)", e.message)
            for e in _validator.iter_errors(doc)]


def check_v2(t, doc, name):
    errs = v2_errors(doc)
    return t.ok(not errs, name + " (validates against v2 schema)", "\n".join(errs[:20]))


def hmac_hex(secret, body):
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def hmac_b64(secret, body):
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


# --------------------------------------------------------------------------
# Running the CLI
# --------------------------------------------------------------------------

class Result:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err

    @property
    def stdout(self):
        return self.out.decode("utf-8", "replace")

    @property
    def stderr(self):
        return self.err.decode("utf-8", "replace")

    def __repr__(self):
        return "exit %s\nstdout: %s\nstderr: %s" % (self.rc, _short(self.stdout, 800),
                                                   _short(self.stderr, 800))


def run_cli(args, stdin=b"", timeout=20, t=None):
    """Run the binary with args; when t is given, sanitizer output fails a test."""
    p = subprocess.run([BRIDGE_BIN] + list(args), input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    r = Result(p.returncode, p.stdout, p.stderr)
    if t is not None:
        check_no_sanitizer_report(t, r.err, "no sanitizer report from %s" % " ".join(args[:2]))
    return r


def map_output(input_path, extra=(), t=None):
    """Run `map` on a file; returns the Result."""
    return run_cli(["map", "--mapping", MAPPING] + list(extra) + [input_path], t=t)


# --------------------------------------------------------------------------
# libconfig writer
# --------------------------------------------------------------------------

def cfg_value(v, indent=""):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        inner = indent + "  "
        body = "".join("%s%s = %s;\n" % (inner, k, cfg_value(x, inner)) for k, x in v.items())
        return "{\n" + body + indent + "}"
    if isinstance(v, list):
        if v and isinstance(v[0], dict):
            inner = indent + "  "
            return "(\n" + ",\n".join(inner + cfg_value(x, inner) for x in v) + "\n" + indent + ")"
        return "[ " + ", ".join(cfg_value(x, indent) for x in v) + " ]"
    raise TypeError("cannot write %r as libconfig" % (v,))


def config_text(routes, port=0, path="/", limits=None, tls_ca=None, unrouted=None,
                match_keys=None, admin=True, **extra):
    """admin=True: an admin listener on an ephemeral port; a dict: that admin
    group; None: no admin group."""
    cfg = {"listen": {"address": "127.0.0.1", "port": port, "path": path}}
    if admin:
        cfg["admin"] = {"address": "127.0.0.1", "port": 0} if admin is True else admin
    cfg.update(extra)
    if limits:
        cfg["limits"] = limits
    if tls_ca:
        cfg["tls"] = {"ca_file": tls_ca}
    if unrouted:
        cfg["unrouted"] = unrouted
    if match_keys:
        cfg["match_keys"] = match_keys
    cfg["routes"] = routes
    return "".join("%s = %s;\n" % (k, cfg_value(v)) for k, v in cfg.items())


def listen_config(listen_extra="", routes=None, extra=None):
    """A listener on 127.0.0.1 (ephemeral port, path /hook) with listen_extra
    inside its group, the top-level text extra (when given) and routes (one
    dry-run route by default)."""
    routes = routes or [route("dry")]
    return ('listen = { address = "127.0.0.1"; port = 0; path = "/hook"; %s };\n'
            '%sroutes = %s;\n' % (listen_extra, "" if extra is None else extra + "\n",
                                   cfg_value(routes)))


def route(name, mode="dry-run", **kw):
    r = {"name": name, "mapping": MAPPING, "mode": mode}
    r.update(kw)
    return r


# --------------------------------------------------------------------------
# The bridge under test
# --------------------------------------------------------------------------

# "<6>" before a log line: the bridge's stderr under journald (JOURNAL_STREAM)
JOURNAL_PRIORITY = re.compile(r"^<[0-7]>")


def _reader(stream, sink, ev=None):
    for line in iter(stream.readline, b""):
        sink.append(line.decode("utf-8", "replace"))
        if ev is not None:
            ev.set()
    stream.close()


# Every Bridge started, so that one a failed check left running is killed
# when the test program exits (it would hold its port and CPU after the run).
_STARTED = []


@atexit.register
def _kill_started():
    for b in _STARTED:
        b.kill()


class Bridge:
    """`webhook-bridge serve` on an ephemeral port with a generated config."""

    def __init__(self, tmp, config, name="bridge.conf"):
        self.tmp = tmp
        self.config_path = tmp.file(name, config)
        self.config = config
        self.proc = None
        self.port = None
        self.admin_port = None  # from the admin_listening line, when there is an admin group
        self.out_lines = []
        self.err_lines = []
        self.rc = None
        self.terminated = False
        self.https_ca = None  # set to a CA file when the bridge listens with TLS
        self.preexec = None   # run in the child before exec (e.g. to set rlimits)
        self.env = None       # the child's environment (None: this one's)
        self.args = []        # more `serve` options (e.g. --drain-ms)

    @property
    def base(self):
        return "%s://127.0.0.1:%d" % ("https" if self.https_ca else "http", self.port)

    def url(self, path="/"):
        return self.base + path

    def admin_url(self, path="/metrics", scheme="http"):
        if self.admin_port is None:
            raise TestFailure("this bridge has no admin listener (no admin_listening line)")
        return "%s://127.0.0.1:%d%s" % (scheme, self.admin_port, path)

    def start(self, timeout=10.0):
        argv = [BRIDGE_BIN, "serve", "--config", self.config_path] + self.args
        self.proc = subprocess.Popen(argv,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, preexec_fn=self.preexec,
                                     env=self.env)
        _STARTED.append(self)
        ev = threading.Event()
        self._threads = [
            threading.Thread(target=_reader, args=(self.proc.stdout, self.out_lines), daemon=True),
            threading.Thread(target=_reader, args=(self.proc.stderr, self.err_lines, ev),
                             daemon=True),
        ]
        for th in self._threads:
            th.start()
        deadline = time.monotonic() + timeout
        seen = 0
        while self.port is None:
            if time.monotonic() > deadline:
                self.kill()
                raise TestFailure("no 'listening' log line within %.0fs; stderr:\n%s"
                                  % (timeout, self.stderr))
            if self.proc.poll() is not None and seen >= len(self.err_lines):
                self._threads[1].join(5)  # its last lines: the reader ends at EOF
                if seen >= len(self.err_lines):
                    raise TestFailure("bridge exited with %s before listening; stderr:\n%s"
                                      % (self.proc.returncode, self.stderr))
            ev.wait(0.05)
            ev.clear()
            while seen < len(self.err_lines):
                line = self.err_lines[seen]
                seen += 1
                try:
                    rec = json.loads(JOURNAL_PRIORITY.sub("", line, 1))
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("event") == "admin_listening":
                    self.admin_port = int(rec["port"])
                if isinstance(rec, dict) and rec.get("event") == "listening":
                    self.port = int(rec["port"])
        while True:
            try:
                if self.https_ca:
                    ctx = ssl.create_default_context(cafile=self.https_ca)
                    c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=2,
                                                    context=ctx)
                else:
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/healthz")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TestFailure("/healthz not 200 within %.0fs; stderr:\n%s"
                                  % (timeout, self.stderr))
            time.sleep(0.05)
        return self

    def stop(self, timeout=10.0):
        """SIGTERM; returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if not self.terminated:
                self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.rc = None
                return None
        for th in self._threads:
            th.join(5)
        self.rc = self.proc.returncode
        return self.rc

    def terminate(self):
        """Send SIGTERM once (a second one would cut the drain short)."""
        self.terminated = True
        self.proc.send_signal(signal.SIGTERM)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def stderr(self):
        return "".join(self.err_lines)

    @property
    def stdout(self):
        return "".join(self.out_lines)

    def connections_to(self, port):
        """TCP connections the bridge process holds to 127.0.0.1:port (any
        state but TIME_WAIT, which no process owns), from /proc."""
        return tcp_connections_to(self.proc.pid, port)

    def wait_no_connections_to(self, port, timeout=5.0):
        """Wait until the bridge holds no connection to port (its pool dropped
        a connection the peer closed)."""
        return wait_for(lambda: self.connections_to(port) == 0, timeout)

    def wait_log(self, pred, timeout=5.0):
        """Wait for a log record for which pred(record) is true; returns it or None."""
        found = []

        def seen():
            found[:] = [r for r in self.log_records() if isinstance(r, dict) and pred(r)]
            return bool(found)
        wait_for(seen, timeout)
        return found[0] if found else None

    def log_records(self):
        recs = []
        for line in list(self.err_lines):
            try:
                recs.append(json.loads(JOURNAL_PRIORITY.sub("", line, 1)))
            except ValueError:
                pass
        return recs

    def dry_run_lines(self):
        return [l for l in list(self.out_lines) if l.strip()]


def start_bridge(t, tmp, cfg, name, preexec=None, https_ca=None):
    """A started bridge from config text cfg; one that does not start is a
    "not ok" naming it, and the TestFailure goes on to end the test."""
    b = Bridge(tmp, cfg, name)
    b.preexec = preexec
    if https_ca is not None:
        b.https_ca = https_ca
    try:
        return b.start()
    except TestFailure as e:
        t.ok(False, "%sbridge %s starts" % ("HTTPS " if https_ca else "", name), str(e))
        raise


def soak_args(duration, kills):
    """(seconds, kills, rest of argv) when the program was run as
    `PROG --soak [SECONDS [KILLS ...]]` (duration and kills the defaults),
    else None."""
    argv = sys.argv[1:]
    if not argv or argv[0] != "--soak":
        return None
    seconds = float(argv[1]) if len(argv) > 1 else duration
    n = int(argv[2]) if len(argv) > 2 else kills
    return seconds, n, argv[3:]


def metric(bridge, name):
    """The value of an unlabelled series on the bridge's /metrics, or None."""
    r = curl(bridge.admin_url("/metrics"), method="GET")
    for line in r.body.decode("utf-8", "replace").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def stop_and_check(t, bridge, name="bridge"):
    """Stop with SIGTERM: exit code 0, no sanitizer report, stderr all JSON lines."""
    rc = bridge.stop()
    t.is_(rc, 0, "%s exits 0 on SIGTERM" % name, "stderr tail:\n" + bridge.stderr[-3000:])
    check_no_sanitizer_report(t, bridge.stderr, "%s: no sanitizer report" % name)
    bad = []
    for line in bridge.err_lines:
        if any(m in line for m in SANITIZER_MARKERS):
            continue
        try:
            rec = json.loads(line)
            if not (isinstance(rec, dict) and "time" in rec and "level" in rec and "event" in rec):
                bad.append(line)
        except ValueError:
            bad.append(line)
    t.ok(not bad, "%s: every stderr line is a JSON log record with time/level/event" % name,
         "".join(bad[:10]))


# --------------------------------------------------------------------------
# curl client
# --------------------------------------------------------------------------

class Response:
    def __init__(self, status, headers, body, elapsed, curl_rc=0, curl_err=""):
        self.status = status
        self.headers = headers      # list of (name, value) in order
        self.body = body
        self.elapsed = elapsed
        self.curl_rc = curl_rc
        self.curl_err = curl_err

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "HTTP %s in %.3fs\n%s\n%s%s" % (
            self.status, self.elapsed,
            "\n".join("%s: %s" % h for h in self.headers),
            _short(self.body.decode("utf-8", "replace"), 1500),
            ("\ncurl exit %d: %s" % (self.curl_rc, self.curl_err)) if self.curl_rc else "")


def curl(url, body=None, content_type="application/json", method=None, headers=(),
         max_time=15, expect=False):
    """One request with the real curl; returns a Response (status 0 if curl failed)."""
    d = tempfile.mkdtemp(prefix="curl-")
    try:
        args = ["curl", "-sS", "--max-time", str(max_time), "-o", os.path.join(d, "body"),
                "-D", os.path.join(d, "head"), "-w", "%{http_code}"]
        if not expect:
            args += ["-H", "Expect:"]
        if body is not None:
            bp = os.path.join(d, "req")
            with open(bp, "wb") as f:
                f.write(body)
            args += ["--data-binary", "@" + bp]
            if content_type is not None:
                args += ["-H", "Content-Type: " + content_type]
            else:
                args += ["-H", "Content-Type:"]
        for h in headers:
            args += ["-H", h]
        if method:
            if method == "HEAD":
                args += ["-I"]
            else:
                args += ["-X", method]
        args.append(url)
        t0 = time.monotonic()
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=max_time + 10)
        elapsed = time.monotonic() - t0
        try:
            status = int(p.stdout.decode().strip() or 0)
        except ValueError:
            status = 0
        hdrs = []
        try:
            with open(os.path.join(d, "head"), "rb") as f:
                block = f.read().decode("latin-1")
            # the last header block (after any 100 Continue)
            blocks = [b for b in re.split(r"\r?\n\r?\n", block) if b.strip()]
            if blocks:
                for line in blocks[-1].splitlines()[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        hdrs.append((k.strip(), v.strip()))
        except OSError:
            pass
        try:
            with open(os.path.join(d, "body"), "rb") as f:
                rbody = f.read()
        except OSError:
            rbody = b""
        return Response(status, hdrs, rbody, elapsed, p.returncode,
                        p.stderr.decode("utf-8", "replace").strip())
    finally:
        shutil.rmtree(d, ignore_errors=True)


def raw_request(port, data, timeout=10):
    """Send raw bytes to 127.0.0.1:port; returns a Response (status 0 when the
    connection closed without an answer)."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except OSError:
            pass
        resp = http.client.HTTPResponse(s)
        try:
            resp.begin()
            body = resp.read()
        except (http.client.HTTPException, OSError) as e:
            return Response(0, [], b"", time.monotonic() - t0, 1, repr(e))
        return Response(resp.status, list(resp.getheaders()), body, time.monotonic() - t0)
    finally:
        s.close()


def check_json_response(t, r, status, name, error=None):
    """Status, Content-Type application/json and a JSON object body (and the
    error code when given). Returns the parsed body or None."""
    t.is_(r.status, status, "%s: HTTP %d" % (name, status), repr(r))
    ct = r.header("Content-Type") or ""
    t.ok(ct.split(";")[0].strip().lower() == "application/json",
         "%s: Content-Type application/json" % name, "Content-Type: %r" % ct)
    try:
        doc = r.json()
    except Exception as e:  # noqa: BLE001
        t.ok(False, "%s: body is JSON" % name, "%s\n%r" % (e, r))
        return None
    t.ok(isinstance(doc, dict), "%s: body is a JSON object" % name, repr(r))
    if error is not None and isinstance(doc, dict):
        t.is_(doc.get("error"), error, "%s: error code %s" % (name, error), repr(r))
        t.ok(isinstance(doc.get("message"), str) and doc.get("message"),
             "%s: error has a human message" % name, repr(r))
    return doc if isinstance(doc, dict) else None


# --------------------------------------------------------------------------
# Loopback HTTP(S) sink
# --------------------------------------------------------------------------

class Reply:
    """What the sink answers to one request. status None = never answer
    (the connection is held open until the sink stops); hold: a
    threading.Event the answer waits for."""

    def __init__(self, status=200, body=b'{"ok":true}', delay=0.0,
                 content_type="application/json", hold=None):
        self.hold = hold
        self.status = status
        self.body = body if isinstance(body, bytes) else body.encode()
        self.delay = delay
        self.content_type = content_type


NEVER = None


class Recorded:
    def __init__(self, method, path, headers, body, client, tls_version=None, sni=None):
        self.method = method
        self.path = path
        self.headers = headers    # list of (name, value) as received, in order
        self.body = body
        self.client = client      # (address, port)
        self.tls_version = tls_version
        self.sni = sni
        self.time = time.monotonic()

    def header(self, name):
        vals = self.all(name)
        return vals[0] if vals else None

    def all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def __repr__(self):
        return "%s %s from %s\n%s\n\n%s" % (
            self.method, self.path, self.client,
            "\n".join("%s: %s" % h for h in self.headers),
            _short(self.body.decode("utf-8", "replace"), 1000))


class _SinkHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sink/1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def setup(self):
        sink = self.server.sink
        conn = self.request
        # One response = header write + body write: without NODELAY, Nagle and
        # the peer's delayed ACK add ~40 ms to every exchange.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(conn, ssl.SSLSocket):
            conn.settimeout(10)
            try:
                conn.do_handshake()
            except (ssl.SSLError, OSError) as e:
                with sink.lock:
                    sink.tls_errors.append(repr(e))
                raise
            conn.settimeout(None)
        with sink.lock:
            sink.connections.append(conn)
            sink.client_ports.append(self.client_address[1])
        super().setup()

    def handle(self):
        try:
            super().handle()
        except (OSError, ssl.SSLError):
            pass

    def _serve(self):
        sink = self.server.sink
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if te:
            body = self._read_chunked() if "chunked" in te else b""
        else:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
        tls_version = sni = None
        if isinstance(self.request, ssl.SSLSocket):
            tls_version = self.request.version()
            sni = getattr(self.request, "sni_name", None)
        rec = Recorded(self.command, self.path, list(self.headers.items()), body,
                       self.client_address, tls_version, sni)
        with sink.lock:
            sink.requests.append(rec)
            reply = sink.script.pop(0) if sink.script else sink.default
            sink.inflight += 1
            sink.max_inflight = max(sink.max_inflight, sink.inflight)
        sink.arrived.set()
        try:
            if reply.status is NEVER:
                sink.stopping.wait(120)
                self.close_connection = True
                return
            if reply.hold is not None:
                reply.hold.wait(120)
            if reply.delay:
                time.sleep(reply.delay)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
            self.wfile.flush()
        finally:
            with sink.lock:
                sink.inflight -= 1

    def _read_chunked(self):
        out = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline().strip():
                    pass
                return out
            out += self.rfile.read(size)
            self.rfile.readline()

    do_POST = do_GET = do_PUT = do_HEAD = do_DELETE = do_PATCH = _serve


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, sink, family=socket.AF_INET):
        self.address_family = family
        self.sink = sink
        super().__init__(addr, _SinkHandler)

    def get_request(self):
        sock, addr = super().get_request()
        with self.sink.lock:
            self.sink.accepted.append(addr[1])  # in accept order, on the server's thread
        if self.sink.ssl_context is not None:
            sock = self.sink.ssl_context.wrap_socket(sock, server_side=True,
                                                     do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        pass


class Sink:
    """Records every request; answers from `script` (a list of Reply, consumed
    in order) then `default`.  With certfile/keyfile it speaks TLS; port 0:
    an ephemeral one."""

    def __init__(self, certfile=None, keyfile=None, also_ipv6=False, port=0):
        self.lock = threading.Lock()
        self.requests = []
        self.connections = []
        self.client_ports = []
        self.tls_errors = []
        self.inflight = 0
        self.accepted = []      # client port of every connection, in accept order
        self.max_inflight = 0   # most requests held at once (before answering)
        self.script = []
        self.default = Reply(200)
        self.arrived = threading.Event()
        self.stopping = threading.Event()
        self.ssl_context = None
        if certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)

            def sni_cb(sslobj, name, _ctx):
                sslobj.sni_name = name  # recorded per connection
            ctx.sni_callback = sni_cb
            self.ssl_context = ctx
        self.servers = [_Server(("127.0.0.1", port), self)]
        self.port = self.servers[0].server_address[1]
        if also_ipv6:
            try:
                self.servers.append(_Server(("::1", self.port), self, socket.AF_INET6))
            except OSError:
                pass
        for s in self.servers:
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True).start()

    def url(self, path="/hook", host="127.0.0.1"):
        scheme = "https" if self.ssl_context else "http"
        return "%s://%s:%d%s" % (scheme, host, self.port, path)

    def reply(self, *replies):
        with self.lock:
            self.script.extend(replies)

    def reset(self):
        with self.lock:
            self.requests.clear()
            self.client_ports.clear()
            self.tls_errors.clear()
            self.max_inflight = self.inflight
            self.script.clear()
            self.default = Reply(200)
            self.arrived.clear()

    def wait_requests(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return True
            time.sleep(0.02)
        return False

    def connections_since(self, accepted_before):
        """Connections accepted after the first `accepted_before` (a length of
        self.accepted), known for sure once a marker connection of our own is
        accepted: the listener accepts in arrival order, so every connection
        opened before the marker has been accepted by then.  The marker is not
        counted; None when it was not accepted within 5 s."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as m:
            port = m.getsockname()[1]

            def marker_at():
                with self.lock:
                    return self.accepted.index(port) + 1 if port in self.accepted else 0
            at = wait_for(marker_at, 5)
        return at - 1 - accepted_before if at else None

    def stop(self):
        self.stopping.set()
        for s in self.servers:
            s.shutdown()
            s.server_close()
        with self.lock:
            conns = list(self.connections)
        close_sockets(conns)


def close_sockets(socks):
    """Shut down and close each socket, ignoring the ones already gone."""
    for c in socks:
        try:
            c.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            c.close()
        except OSError:
            pass


def tcp_connections_to(pid, port):
    """Sockets of process pid connected to remote port `port` (IPv4 or IPv6)."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return 0
    n = 0
    for table in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, table)) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if int(cols[2].rsplit(":", 1)[1], 16) == port and cols[9] in inodes:
                        n += 1
        except OSError:
            pass
    return n


def wait_for(cond, timeout=5.0, step=0.02):
    """Poll cond() until true or timeout; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def pty_read_all(master):
    """Everything written to a pseudo-terminal until its last writer closed it."""
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO once the other side is closed
            break
        if not chunk:
            break
        out += chunk
    return out


def run_on_pty(args, env=None, columns=None, stderr_too=False):
    """The binary with stdout (and stderr when asked) on a pseudo-terminal of
    `columns` columns; returns (exit code, everything it wrote there)."""
    import fcntl
    import pty
    import struct
    import termios
    master, slave = pty.openpty()
    if columns:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    p = subprocess.Popen([BRIDGE_BIN] + args, stdin=subprocess.DEVNULL, stdout=slave,
                         stderr=slave if stderr_too else subprocess.PIPE, env=env)
    os.close(slave)
    out = pty_read_all(master)
    p.communicate(timeout=60)
    os.close(master)
    return p.returncode, out


def refused_port():
    """A loopback port nobody listens on (bound, then closed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------
# Certificates (openssl CLI)
# --------------------------------------------------------------------------

_OPENSSL_CNF = """\
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = placeholder
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""


class Pki:
    """A test CA, a server cert for 127.0.0.1/localhost signed by it, one for the
    wrong name (DNS:wrong.example), a self-signed one for 127.0.0.1/localhost,
    and an unrelated second CA."""

    def __init__(self, tmp):
        self.dir = tmp.join("pki")
        os.makedirs(self.dir, exist_ok=True)
        self.cnf = os.path.join(self.dir, "openssl.cnf")
        with open(self.cnf, "w") as f:
            f.write(_OPENSSL_CNF)
        self.ca_cert, self.ca_key = self._ca("ca", "bridgetest CA")
        self.other_ca_cert, _ = self._ca("other-ca", "bridgetest other CA")
        self.good_cert, self.good_key = self._leaf("good", "127.0.0.1",
                                                   "IP:127.0.0.1,IP:::1,DNS:localhost")
        self.wrong_cert, self.wrong_key = self._leaf("wrong", "wrong.example",
                                                     "DNS:wrong.example")
        self.self_cert, self.self_key = self._self_signed("self", "127.0.0.1",
                                                          "IP:127.0.0.1,IP:::1,DNS:localhost")

    def _run(self, *args):
        p = subprocess.run(["openssl"] + list(args), cwd=self.dir, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError("openssl %s failed: %s" % (" ".join(args),
                                                          p.stderr.decode(errors="replace")))

    def _p(self, name):
        return os.path.join(self.dir, name)

    def _key(self, name):
        self._run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-out", self._p(name + ".key"))
        return self._p(name + ".key")

    def _ca(self, name, cn):
        key = self._key(name)
        self._run("req", "-config", self.cnf, "-new", "-x509", "-key", key, "-days", "2",
                  "-subj", "/CN=" + cn, "-extensions", "v3_ca", "-out", self._p(name + ".pem"))
        return self._p(name + ".pem"), key

    def _ext(self, name, san):
        p = self._p(name + ".ext")
        with open(p, "w") as f:
            f.write("basicConstraints = CA:FALSE\n"
                    "keyUsage = critical, digitalSignature\n"
                    "extendedKeyUsage = serverAuth\n"
                    "subjectAltName = %s\n" % san)
        return p

    def _leaf(self, name, cn, san):
        key = self._key(name)
        csr = self._p(name + ".csr")
        self._run("req", "-config", self.cnf, "-new", "-key", key, "-subj", "/CN=" + cn,
                  "-out", csr)
        self._run("x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
                  "-CAcreateserial", "-days", "2", "-extfile", self._ext(name, san),
                  "-out", self._p(name + ".pem"))
        return self._p(name + ".pem"), key

    def _self_signed(self, name, cn, san):
        key = self._key(name)
        csr = self._p(name + ".csr")
        self._run("req", "-config", self.cnf, "-new", "-key", key, "-subj", "/CN=" + cn,
                  "-out", csr)
        self._run("x509", "-req", "-in", csr, "-signkey", key, "-days", "2",
                  "-extfile", self._ext(name, san), "-out", self._p(name + ".pem"))
        return self._p(name + ".pem"), key


# --------------------------------------------------------------------------
# Hostile peers: a raw HTTP/1.1 client, a misbehaving upstream, process figures
# --------------------------------------------------------------------------

def _expired_pki_cnf(pki):
    return ("[ ca ]\n"
            "default_ca = test_ca\n"
            "[ test_ca ]\n"
            "database = %s\n"
            "new_certs_dir = %s\n"
            "certificate = %s\n"
            "private_key = %s\n"
            "serial = %s\n"
            "default_md = sha256\n"
            "policy = policy_any\n"
            "unique_subject = no\n"
            "copy_extensions = none\n"
            "[ policy_any ]\n"
            "commonName = supplied\n"
            % (pki._p("ca-index.txt"), pki._p("ca-certs"), pki.ca_cert, pki.ca_key,
               pki._p("ca-serial")))


def _pki_expired(self):
    """(cert, key) for 127.0.0.1/localhost signed by the test CA, valid from ten
    days ago until yesterday (made with `openssl ca -startdate/-enddate`).
    Made on first use."""
    if getattr(self, "_expired", None):
        return self._expired
    cnf = self._p("ca.cnf")
    with open(cnf, "w") as f:
        f.write(_expired_pki_cnf(self))
    open(self._p("ca-index.txt"), "w").close()
    with open(self._p("ca-serial"), "w") as f:
        f.write("%016X\n" % int.from_bytes(os.urandom(8), "big"))
    os.makedirs(self._p("ca-certs"), exist_ok=True)
    key = self._key("expired")
    csr = self._p("expired.csr")
    self._run("req", "-config", self.cnf, "-new", "-key", key, "-subj", "/CN=127.0.0.1",
              "-out", csr)
    now = time.time()
    stamp = lambda t: time.strftime("%Y%m%d%H%M%SZ", time.gmtime(t))  # noqa: E731
    self._run("ca", "-batch", "-config", cnf, "-notext", "-in", csr,
              "-startdate", stamp(now - 10 * 86400), "-enddate", stamp(now - 86400),
              "-extfile", self._ext("expired", "IP:127.0.0.1,IP:::1,DNS:localhost"),
              "-out", self._p("expired.pem"))
    self._expired = (self._p("expired.pem"), key)
    return self._expired


Pki.expired = _pki_expired


def _sink_use_tls(self, certfile=None, keyfile=None):
    """Serve the next connections with this certificate (None: plain HTTP).
    Connections already open keep theirs."""
    ctx = None
    if certfile:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile, keyfile)

        def sni_cb(sslobj, name, _ctx):
            sslobj.sni_name = name
        ctx.sni_callback = sni_cb
    with self.lock:
        self.ssl_context = ctx


Sink.use_tls = _sink_use_tls


def proc_rss_kb(pid):
    """Resident set size of a process in KiB (VmRSS), or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_socket_count(pid):
    """Sockets a process holds open (its /proc/PID/fd entries that are sockets)."""
    n = 0
    d = "/proc/%d/fd" % pid
    try:
        names = os.listdir(d)
    except OSError:
        return None
    for name in names:
        try:
            if os.readlink(os.path.join(d, name)).startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


class RawResponse(Response):
    """A Response read off a raw socket; `framed` is False when the body had
    neither Content-Length nor chunked framing and the connection stayed open
    (the client cannot tell where it ends)."""

    def __init__(self, status, headers, body, elapsed, framed=True, version=""):
        super().__init__(status, headers, body, elapsed)
        self.framed = framed
        self.version = version


class RawClient:
    """One loopback TCP connection speaking raw bytes, with an HTTP/1.1
    response reader that honours the request method (HEAD answers have no
    body) and the response's own framing, so pipelined answers can be told
    apart."""

    def __init__(self, port, timeout=10.0, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.eof = False
        self.t0 = time.monotonic()

    def send(self, data):
        """sendall(); False when the peer already closed or reset."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def shut_wr(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, deadline):
        """Read more; False at EOF (or reset). socket.timeout past the deadline."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no data before the deadline")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _line(self, deadline):
        while b"\n" not in self.buf:
            if not self._fill(deadline):
                return None
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def _exact(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, method="GET", timeout=None, unframed_wait=2.0):
        """The next response, or None when the connection closed before a
        status line. Raises socket.timeout when nothing complete arrives."""
        t0 = time.monotonic()
        deadline = t0 + (timeout if timeout is not None else self.timeout)
        line = self._line(deadline)
        if line is None:
            if self.buf:
                raise http.client.BadStatusLine(repr(self.buf[:200]))
            return None
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", line)
        if not m:
            raise http.client.BadStatusLine(repr(line[:200]))
        status = int(m.group(2))
        headers = []
        while True:
            h = self._line(deadline)
            if h is None:
                raise http.client.IncompleteRead(b"", None)
            if not h:
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers.append((k.strip(), v.strip()))
        lower = {k.lower(): v for k, v in headers}
        framed = True
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in lower.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size_line = self._line(deadline)
                if size_line is None:
                    raise http.client.IncompleteRead(body, None)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self._line(deadline):
                        pass
                    break
                body += self._exact(size, deadline) or b""
                self._line(deadline)
        elif "content-length" in lower:
            body = self._exact(int(lower["content-length"]), deadline)
            if body is None:
                raise http.client.IncompleteRead(self.buf, None)
        else:
            # close-delimited: only a closing peer delimits it
            end = min(deadline, time.monotonic() + unframed_wait)
            try:
                while self._fill(end):
                    pass
            except socket.timeout:
                framed = False
            body, self.buf = self.buf, b""
        return RawResponse(status, headers, body, time.monotonic() - t0, framed,
                           m.group(1).decode())

    def wait_close(self, timeout=5.0):
        """(closed, bytes received meanwhile): did the peer close (FIN or
        reset) within timeout?"""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except socket.timeout:
            return False, self.buf
        return True, self.buf


def http_request(method, path, body=None, headers=(), content_type="application/json",
                 host="127.0.0.1", version="HTTP/1.1"):
    """Raw bytes of one request; Content-Length is added for a body unless a
    header in `headers` already frames it."""
    lines = ["%s %s %s" % (method, path, version), "Host: %s" % host]
    names = [h.split(":", 1)[0].strip().lower() for h in headers]
    if body is not None and content_type is not None:
        lines.append("Content-Type: " + content_type)
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    lines.extend(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class RawRequest:
    """One request a RawUpstream read: request line, headers, body, the
    connection it came on (1, 2, ...) and its position on that connection."""

    def __init__(self, line, headers, body, conn, index):
        self.line = line
        self.headers = headers
        self.body = body
        self.conn = conn
        self.index = index
        self.time = time.monotonic()

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return "conn %d #%d: %s %s" % (self.conn, self.index, self.line,
                                        _short(self.body.decode("utf-8", "replace"), 300))


def upstream_ok(status=200, body=b'{"ok":true}', close=False):
    """Behaviour: a well-framed answer; close=True closes the connection after it."""
    def act(up, conn, req):
        conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n%s\r\n" % (status, len(body),
                                                         b"Connection: close\r\n" if close
                                                         else b"") + body)
        return not close
    return act


def upstream_raw(data, then="close", delay=0.0, hold=0.0):
    """Behaviour: send these bytes as the answer (after delay seconds), wait
    hold seconds, then "close" (FIN), "reset" (RST through SO_LINGER 0) or
    "keep"."""
    def act(up, conn, req):
        if delay:
            up.stopping.wait(delay)
        if data:
            conn.sendall(data)
        if hold:
            up.stopping.wait(hold)
        if then == "reset":
            RawUpstream.reset(conn)
        return then == "keep"
    return act


def upstream_stall(seconds):
    """Behaviour: read the request, answer nothing for `seconds` (or until the
    server stops), then close."""
    def act(up, conn, req):
        up.stopping.wait(seconds)
        return False
    return act


def upstream_ok_then_idle_close(after, body=b'{"ok":true}'):
    """Behaviour: a keep-alive answer, then the server closes that idle
    connection `after` seconds later (its keep-alive timeout)."""
    def act(up, conn, req):
        upstream_ok(body=body)(up, conn, req)
        up.stopping.wait(after)
        return False
    return act


class RawUpstream:
    """A loopback HTTP/1.1 upstream scripted per request.  Each request read
    (head + Content-Length body) is recorded in `requests`, then answered by
    the next behaviour of `script` (else `default`): a callable
    (upstream, socket, RawRequest) that writes what it likes and returns True
    to keep the connection for another request."""

    def __init__(self, port=0):
        self.lock = threading.Lock()
        self.requests = []
        self.script = []
        self.default = upstream_ok()
        self.connections = 0
        self.closed = 0  # connections this upstream has closed (or seen closed)
        self.stopping = threading.Event()
        self._socks = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path="/hook", scheme="http"):
        return "%s://127.0.0.1:%d%s" % (scheme, self.port, path)

    def behave(self, *behaviours):
        with self.lock:
            self.script.extend(behaviours)

    def count(self, pred=None):
        with self.lock:
            return len([r for r in self.requests if pred is None or pred(r)])

    def wait_requests(self, n, timeout=5.0):
        return wait_for(lambda: self.count() >= n, timeout)

    def wait_closed(self, n, timeout=5.0):
        """Wait until this upstream has closed (or seen closed) n connections."""
        return wait_for(lambda: self.closed >= n, timeout)

    @staticmethod
    def reset(conn):
        """Close with RST instead of FIN."""
        import struct
        try:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        conn.close()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                n = self.connections
                self._socks.append(conn)
            threading.Thread(target=self._serve, args=(conn, n), daemon=True).start()

    def _read_request(self, conn, buf, n, index):
        while b"\r\n\r\n" not in buf[0]:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buf[0] += chunk
        head, buf[0] = buf[0].split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
        length = 0
        for k, v in headers:
            if k.lower() == "content-length":
                length = int(v)
        while len(buf[0]) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buf[0] += chunk
        body, buf[0] = buf[0][:length], buf[0][length:]
        return RawRequest(lines[0], headers, body, n, index)

    def _serve(self, conn, n):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = [b""]
        index = 0
        try:
            while not self.stopping.is_set():
                index += 1
                req = self._read_request(conn, buf, n, index)
                if req is None:
                    return
                with self.lock:
                    self.requests.append(req)
                    act = self.script.pop(0) if self.script else self.default
                if not act(self, conn, req):
                    return
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with self.lock:
                self.closed += 1

    def stop(self):
        self.stopping.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self._socks)
        close_sockets(socks)


def _sink_drop_connections(self, bridge, timeout=5.0):
    """Close every connection the sink holds (the bridge's pooled ones too), so
    the next delivery opens a new one; True once bridge holds none to the
    sink (its pool dropped them)."""
    with self.lock:
        conns = list(self.connections)
        self.connections.clear()
    for c in conns:
        try:
            c.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    return bridge.wait_no_connections_to(self.port, timeout)


Sink.drop_connections = _sink_drop_connections


class PgCluster:
    """A private PostgreSQL server for one test program: initdb into a
    temporary folder, its Unix socket in that folder and no TCP listener,
    fsync on (so an acknowledged commit survives an immediate shutdown).
    initdb refuses root: as root (CI), the server runs as Debian's
    `postgres` system user, which owns the folder.  A missing server is a
    TestFailure, never a skip."""

    USER = "bridge"      # the cluster's superuser, trusted on the socket only
    DATABASE = "bridge"

    def __init__(self):
        self.bindir = self._find_bindir()
        self.dir = tempfile.mkdtemp(prefix="bridgepg-")
        self.data = os.path.join(self.dir, "data")
        self.logfile = os.path.join(self.dir, "server.log")
        self.as_user = []
        if os.getuid() == 0:
            try:
                import pwd
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise TestFailure("running as root, and there is no 'postgres' user to run "
                                  "PostgreSQL as (the postgresql package creates it)")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.running = False

    @staticmethod
    def _find_bindir():
        base = "/usr/lib/postgresql"
        versions = sorted(os.listdir(base), key=lambda v: int(v) if v.isdigit() else 0) \
            if os.path.isdir(base) else []
        for v in reversed(versions):
            b = os.path.join(base, v, "bin")
            if os.path.exists(os.path.join(b, "initdb")):
                return b
        raise TestFailure("PostgreSQL server not installed (no %s/*/bin/initdb): "
                          "run sh tests/setup.sh (package postgresql)" % base)

    def _run(self, tool, *args, timeout=60, check=True, tool_path=True):
        exe = os.path.join(self.bindir, tool) if tool_path else tool
        r = subprocess.run(self.as_user + [exe] + list(args),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout, cwd=self.dir)
        if check and r.returncode != 0:
            raise TestFailure("%s failed (%d): %s\nserver log:\n%s"
                              % (tool, r.returncode, r.stdout.decode(errors="replace"),
                                 self.log_tail()))
        return r

    def log_tail(self, n=3000):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    @property
    def url(self):
        return self.db_url(self.DATABASE)

    def db_url(self, db):
        return "postgresql://%s@/%s?host=%s" % (self.USER, db, self.dir)

    def database(self, name):
        """A fresh database of its own (so that tests do not see each other's
        rows); its URL."""
        name = re.sub(r"[^a-z0-9_]", "_", name.lower())
        self.psql("DROP DATABASE IF EXISTS %s" % name, db="postgres")
        self.psql("CREATE DATABASE %s" % name, db="postgres")
        return self.db_url(name)

    @property
    def conninfo(self):
        return "host=%s user=%s dbname=%s" % (self.dir, self.USER, self.DATABASE)

    def start(self):
        if not os.path.exists(self.data):
            self._run("initdb", "-D", self.data, "-U", self.USER, "-A", "trust", "-E", "UTF8",
                      "--no-instructions", "--locale=C")
            # in the cluster's own file, so that a plain `pg_ctl start` (the C
            # tests restart it so) gets them too
            conf = ("listen_addresses = ''\nunix_socket_directories = '%s'\nfsync = on\n"
                    "synchronous_commit = on\nmax_connections = 200\n" % self.dir)
            self._run("sh", "-c", "cat >> '%s/postgresql.conf' <<'EOF'\n%sEOF"
                      % (self.data, conf), tool_path=False)
        self._run("pg_ctl", "-D", self.data, "-l", self.logfile, "-w", "-t", "60", "start")
        self.running = True
        if self.psql("SELECT 1 FROM pg_database WHERE datname = '%s'" % self.DATABASE,
                     db="postgres") != "1":
            self.psql("CREATE DATABASE %s" % self.DATABASE, db="postgres")
        return self

    def stop(self, mode="fast"):
        if self.running:
            self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop",
                      check=False)
            self.running = False

    def restart(self, mode="fast"):
        self.stop(mode)
        self.start()

    def psql(self, sql, db=None):
        """One statement through psql; its output, unaligned, without header."""
        r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h",
                            self.dir, "-U", self.USER, "-d", db or self.DATABASE, "-c", sql],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        if r.returncode != 0:
            raise TestFailure("psql %r failed: %s" % (sql, r.stderr.decode(errors="replace")))
        return r.stdout.decode().strip()

    def cleanup(self):
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()
        return False


def pg_main(body):
    """body(t, pg, tmp, doc) beside a started PgCluster, a TempDir and the v1
    fixture, all cleaned up after it; without a server, a failing TAP line."""
    t = Tap()
    try:
        pg = PgCluster().start()
    except TestFailure as e:
        t.ok(False, "a PostgreSQL server for the test", str(e))
        t.done()
        return
    tmp = TempDir()
    _, _, doc = v1_fixture()
    try:
        body(t, pg, tmp, doc)
    finally:
        tmp.cleanup()
        pg.cleanup()
    t.done()
