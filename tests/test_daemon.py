#!/usr/bin/python3
"""`serve` as a daemon: it never blocks on a reader of stdout or stderr, it
owns its port, and it talks to systemd."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
HOOK = "/webhook/v1"


def get(port, path, timeout=5):
    """(status, body, seconds) of one GET on a fresh connection."""
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read(), time.monotonic() - t0
    finally:
        c.close()


def wait_healthy(port, proc, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if get(port, "/healthz", timeout=1)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def t_unread_pipes(t):
    """stdout and stderr each a pipe nobody reads: every post answered,
    /healthz fast throughout, drops counted, SIGTERM exits 0 in time."""
    port, admin = bt.refused_port(), bt.refused_port()
    cfg = tmp.file("pipes.conf", bt.config_text(
        [bt.route("r")], path=HOOK, port=port, workers=1, log_buffer=65536,
        dry_run={"stdout": True}, admin={"address": "127.0.0.1", "port": admin}))
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    proc = subprocess.Popen([bt.BRIDGE_BIN, "serve", "--config", cfg, "--drain-ms", "5000"],
                            stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w)
    os.close(out_w)
    os.close(err_w)
    try:
        t.require(wait_healthy(port, proc), "bridge with unread pipes answers /healthz")
        _, raw, _ = bt.v1_fixture()
        probe = {"max": 0.0, "n": 0, "bad": 0, "stop": False}

        def prober():
            while not probe["stop"]:
                try:
                    st, _, dt = get(port, "/healthz", timeout=2)
                    probe["max"] = max(probe["max"], dt)
                    probe["n"] += 1
                    if st != 200:
                        probe["bad"] += 1
                except OSError:
                    probe["bad"] += 1
                time.sleep(0.02)

        th = threading.Thread(target=prober, daemon=True)
        th.start()
        answered = 0
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(1000):
            c.request("POST", HOOK, body=raw, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            if r.status == 200:
                answered += 1
        c.close()
        probe["stop"] = True
        th.join(5)
        t.is_(answered, 1000, "1,000 posts all answered 200 with stdout and stderr unread")
        t.ok(probe["n"] > 0 and probe["bad"] == 0, "/healthz answered 200 every time",
             "%d probes, %d failed" % (probe["n"], probe["bad"]))
        # a loop blocked on a full pipe never answers (the probe's 2 s
        # timeout counts it as failed); 500 ms leaves room for a loaded
        # machine's scheduling under the sanitizers
        t.ok(probe["max"] < 0.5, "/healthz within 500 ms throughout",
             "slowest %.3fs over %d probes" % (probe["max"], probe["n"]))
        st, body, _ = get(admin, "/metrics")
        text = body.decode()
        counts = {}
        for line in text.splitlines():
            for stream in ("stdout", "stderr"):
                if line.startswith('webhook_bridge_log_dropped_total{stream="%s"}' % stream):
                    counts[stream] = int(line.split()[-1])
        t.ok(counts.get("stdout", 0) > 0 and counts.get("stderr", 0) > 0,
             "webhook_bridge_log_dropped_total counts drops on both streams", counts)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(5)
        except subprocess.TimeoutExpired:
            rc = None
        t.is_(rc, 0, "SIGTERM exits 0 with the pipes still unread")
        t.ok(time.monotonic() - t0 < 5, "and within the drain time (5 s)",
             "%.2fs" % (time.monotonic() - t0))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(out_r)
        os.close(err_r)


def t_lines_lost(t):
    """After a stall, the next line that gets through says how many were lost."""
    port = bt.refused_port()
    cfg = tmp.file("lost.conf", bt.config_text(
        [bt.route("r")], path=HOOK, port=port, workers=1, log_buffer=8192, admin=None))
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    proc = subprocess.Popen([bt.BRIDGE_BIN, "serve", "--config", cfg],
                            stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w)
    os.close(out_w)
    os.close(err_w)
    sinks = {"out": [], "err": []}
    try:
        t.require(wait_healthy(port, proc), "bridge answers /healthz")
        _, raw, _ = bt.v1_fixture()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(300):  # far more than a 64 KiB pipe and 8 KiB buffer hold
            c.request("POST", HOOK, body=raw, headers={"Content-Type": "application/json"})
            c.getresponse().read()
        readers = [
            threading.Thread(target=bt._reader, args=(os.fdopen(out_r, "rb"), sinks["out"]),
                             daemon=True),
            threading.Thread(target=bt._reader, args=(os.fdopen(err_r, "rb"), sinks["err"]),
                             daemon=True),
        ]
        out_r = err_r = None
        for r in readers:
            r.start()

        def lost(lines):
            for line in list(lines):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("lines_lost", 0) > 0:
                    return rec
            return None

        def post_until_reported():
            c.request("POST", HOOK, body=raw, headers={"Content-Type": "application/json"})
            c.getresponse().read()
            return lost(sinks["out"]) and lost(sinks["err"])

        bt.wait_for(post_until_reported, timeout=10, step=0.05)
        c.close()
        rec_out, rec_err = lost(sinks["out"]), lost(sinks["err"])
        t.ok(rec_out and rec_out.get("event") == "dry-run",
             "stdout: the first dry-run line after the stall carries lines_lost", rec_out)
        t.ok(rec_err and rec_err.get("event") and "level" in rec_err,
             "stderr: the first log line after the stall carries lines_lost", rec_err)
        bad = [l for l in sinks["out"] + sinks["err"] if not l.startswith("{")]
        t.ok(not bad, "no torn line on either stream", bad[:3])
        proc.send_signal(signal.SIGTERM)
        t.is_(proc.wait(10), 0, "SIGTERM exits 0")
        for r in readers:
            r.join(5)
        rep = bt.sanitizer_report("".join(sinks["err"]))
        t.ok(not rep, "no sanitizer report", rep)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for fd in (out_r, err_r):
            if fd is not None:
                os.close(fd)


def t_stdout_off(t):
    """dry_run.stdout = false: nothing on stdout, the answer still holds the v2."""
    b = bt.Bridge(tmp, bt.config_text([bt.route("r")], path=HOOK, dry_run={"stdout": False}),
                  name="quiet.conf").start()
    _, raw, _ = bt.v1_fixture()
    r = bt.curl(b.url(HOOK), raw)
    t.is_(r.status, 200, "dry-run post answered 200", r)
    t.ok("v2" in r.json(), "the answer holds the v2 payload", r)
    bt.stop_and_check(t, b)
    t.is_(b.dry_run_lines(), [], "dry_run.stdout = false: no line on stdout")


def serve_cmd(cfg, *extra):
    return [bt.BRIDGE_BIN, "serve", "--config", cfg] + list(extra)


def t_port_owned(t):
    """A second process on the same address and port: exit 1 "address in use",
    whatever the worker count; listen.reuseport = true allows sharing."""
    port = bt.refused_port()
    listen = "127.0.0.1:%d" % port
    cfg = tmp.file("own.conf", bt.config_text([bt.route("r")], path=HOOK, port=8080, admin=None))
    proc = subprocess.Popen(serve_cmd(cfg, "--listen", listen, "--workers", "2"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        t.require(wait_healthy(port, proc), "--listen %s overrides listen.port" % listen)
        for workers in ("1", "2", "4"):
            r = subprocess.run(serve_cmd(cfg, "--listen", listen, "--workers", workers),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=20)
            err = r.stderr.decode()
            t.is_(r.returncode, 1, "second bridge with %s worker(s): exit 1" % workers, err)
            t.like(err, r"address in use", "and it says \"address in use\"")
    finally:
        proc.send_signal(signal.SIGTERM)
        t.is_(proc.wait(15), 0, "first bridge exits 0")
    other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    other.bind(("127.0.0.1", 0))
    other.listen(5)
    try:
        r = subprocess.run(serve_cmd(cfg, "--listen", "127.0.0.1:%d" % other.getsockname()[1],
                                     "--workers", "3"),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=20)
        t.is_(r.returncode, 1, "port held by another program: exit 1", r.stderr)
        t.like(r.stderr.decode(), r"address in use", "and it says \"address in use\"")
    finally:
        other.close()


def t_reuseport(t):
    port = bt.refused_port()
    cfg = tmp.file("share.conf", bt.config_text([bt.route("r")], path=HOOK, port=port, admin=None)
                   .replace('path = "%s";' % HOOK, 'path = "%s";\n  reuseport = true;' % HOOK))
    procs = []
    try:
        for i in range(2):
            p = subprocess.Popen(serve_cmd(cfg, "--workers", "2"), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append(p)
            started = False
            for line in iter(p.stderr.readline, b""):
                if b'"event":"listening"' in line:
                    started = True
                    break
            t.ok(started, "listen.reuseport = true: bridge %d listens on the shared port"
                 % (i + 1))
        t.ok(wait_healthy(port, procs[1]), "the port answers")
        t.ok(all(p.poll() is None for p in procs), "both still run")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        t.is_([p.wait(15) for p in procs], [0, 0], "both exit 0")
        for p in procs:
            p.stderr.close()


def t_listen_flag(t):
    cfg = tmp.file("flag.conf", bt.config_text([bt.route("r")], path=HOOK, admin=None))
    for bad in ("8080", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:80x", "::1:80",
                "[::1]80", "nothost:80"):
        r = bt.run_cli(["serve", "--config", cfg, "--listen", bad])
        want = 1 if bad == "nothost:80" else 2
        t.is_(r.rc, want, "serve --listen %r: exit %d" % (bad, want), r)
    port = bt.refused_port()
    proc = subprocess.Popen(serve_cmd(cfg, "--listen", "[::1]:%d" % port),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        ok = False
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not ok and proc.poll() is None:
            try:
                c = http.client.HTTPConnection("::1", port, timeout=1)
                c.request("GET", "/healthz")
                ok = c.getresponse().status == 200
                c.close()
            except OSError:
                time.sleep(0.05)
        t.ok(ok, "serve --listen [::1]:PORT answers on ::1")
    finally:
        proc.send_signal(signal.SIGTERM)
        t.is_(proc.wait(15), 0, "exits 0")


class NotifySocket:
    """The service manager's side of sd_notify: a datagram socket we bind."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.msgs = []

    def wait(self, pred, timeout=10):
        deadline = time.monotonic() + timeout
        for m in self.msgs:
            if pred(m):
                return m
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                m = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            self.msgs.append(m)
            if pred(m):
                return m
        return None

    def fields(self, m):
        return dict(line.split("=", 1) for line in m.splitlines() if "=" in line)


def t_notify(t):
    path = tmp.join("notify.sock")
    ns = NotifySocket(path)
    text = bt.config_text([bt.route("r")], path=HOOK)
    b = bt.Bridge(tmp, text, name="notify.conf")
    env = dict(os.environ)
    os.environ.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="200000")
    try:
        b.start()
    finally:
        os.environ.clear()
        os.environ.update(env)
    ready = ns.wait(lambda m: "READY=1" in m.splitlines())
    t.ok(ready, "READY=1 once listening", ns.msgs)
    st = ns.fields(ready or "").get("STATUS", "")
    t.like(st, r"serving 1 route\(s\) on 127\.0\.0\.1 port %d; last reload: none" % b.port,
           "STATUS= names the routes and the port")
    t.ok(ns.wait(lambda m: m == "WATCHDOG=1"), "WATCHDOG=1 when WATCHDOG_USEC is set")
    n = len(ns.msgs)
    b.proc.send_signal(signal.SIGHUP)
    rel = ns.wait(lambda m: m.startswith("RELOADING=1"))
    t.ok(rel and "MONOTONIC_USEC=" in rel, "SIGHUP: RELOADING=1 with MONOTONIC_USEC", ns.msgs[n:])
    done = ns.wait(lambda m: "READY=1" in m.splitlines() and "last reload: ok" in m)
    t.ok(done, "then READY=1 with STATUS= last reload: ok", ns.msgs[n:])
    with open(b.config_path, "w") as f:
        f.write(text + "bogus_setting = 1;\n")
    b.proc.send_signal(signal.SIGHUP)
    bad = ns.wait(lambda m: "READY=1" in m.splitlines() and "last reload: failed" in m)
    t.ok(bad, "a refused reload: READY=1 with STATUS= last reload: failed ...", ns.msgs[n:])
    b.terminate()
    t.ok(ns.wait(lambda m: m.startswith("STOPPING=1")), "SIGTERM: STOPPING=1")
    bt.stop_and_check(t, b)
    ns.sock.close()


def t_notify_pid(t):
    """WATCHDOG_PID naming another process: no pings, as sd_watchdog_enabled(3)."""
    ns = NotifySocket("\0bridgetest-notify-%d" % os.getpid())
    b = bt.Bridge(tmp, bt.config_text([bt.route("r")], path=HOOK), name="notify2.conf")
    env = dict(os.environ)
    os.environ.update(NOTIFY_SOCKET="@bridgetest-notify-%d" % os.getpid(),
                      WATCHDOG_USEC="100000", WATCHDOG_PID="1")
    try:
        b.start()
    finally:
        os.environ.clear()
        os.environ.update(env)
    t.ok(ns.wait(lambda m: "READY=1" in m.splitlines()), "abstract @socket: READY=1")
    t.ok(not ns.wait(lambda m: m == "WATCHDOG=1", timeout=0.5),
         "no WATCHDOG=1 when WATCHDOG_PID is another process")
    bt.stop_and_check(t, b)
    ns.sock.close()


def t_strict_numbers(t):
    """Numeric flags are whole numbers in range, or a usage error (exit 2)."""
    cfg = tmp.file("flags.conf", bt.config_text([bt.route("r")], path=HOOK, admin=None))
    fixture = bt.v1_fixture()[0]
    cases = [
        (["serve", "--config", cfg, "--drain-ms"], "serve"),
        (["serve", "--config", cfg, "--workers"], "serve"),
        (["map", "--mapping", bt.MAPPING, "--jobs"], "map"),
        (["replay", "--config", cfg, "--dry-run", "--concurrency"], "replay"),
        (["replay", "--config", cfg, "--dry-run", "--rate"], "replay"),
        (["report", "--top"], "report"),
        (["learn", "--v1", fixture, "--v2", fixture, "--min-support"], "learn"),
        (["queue", "--store", tmp.join("flags.db"), "list", "--limit"], "queue"),
        (["queue", "--store", tmp.join("flags.db"), "purge", "--dead", "--older-than"], "queue"),
        (["cutover", "--config", cfg, "r", "--ramp"], "cutover"),
    ]
    for args, cmd in cases:
        for bad in ("abc", "1e3", "99999999999", "99999999999999999999", "3x", " 7", "+7", "",
                    "0x10", "-"):
            if bad == "99999999999" and args[-1] == "--limit":
                continue  # a valid --limit (0 is all): the next value overflows
            argv = args + [bad] + ([fixture] if cmd in ("map", "replay", "report") else [])
            r = bt.run_cli(argv)
            t.is_(r.rc, 2, "%s %s %r: exit 2" % (cmd, args[-1], bad), r)
            t.like(r.stderr, r"^webhook-bridge %s: .*\nTry 'webhook-bridge %s --help'\.\n" % (cmd, cmd),
                   "%s %s %r: one error style" % (cmd, args[-1], bad))


def t_secret_files(t):
    """*_file secrets: read at start and on reload, relative names in
    $CREDENTIALS_DIRECTORY, absolute paths allowed; ${...} refused; check
    warns about a readable config with inline secrets."""
    creds = tmp.join("creds")
    os.makedirs(creds, exist_ok=True)
    with open(os.path.join(creds, "sign"), "w") as f:
        f.write("from-credentials\n")
    with open(os.path.join(creds, "bearer"), "w") as f:
        f.write("Bearer from-file\n")
    token = tmp.file("token.txt", "tok-123\n")
    sink = bt.Sink()
    try:
        cfg = bt.config_text(
            [bt.route("f", mode="forward", endpoint=sink.url(), secret_file="sign",
                      auth_header={"name": "Authorization", "value_file": "bearer"})],
            path=HOOK)
        cfg = cfg.replace('path = "%s";' % HOOK, 'path = "%s";\n  auth = { query = { name = '
                          '"token"; value_file = "%s"; }; };' % (HOOK, token), 1)
        env = dict(os.environ)
        os.environ["CREDENTIALS_DIRECTORY"] = creds
        try:
            r = bt.run_cli(["check", "--config", tmp.file("secrets.conf", cfg)])
            t.is_(r.rc, 0, "check: secret_file, value_file (relative: credentials dir) and "
                  "an absolute value_file", r)
            b = bt.Bridge(tmp, cfg, name="secrets.conf").start()
        finally:
            os.environ.clear()
            os.environ.update(env)
        _, raw, _ = bt.v1_fixture()
        r = bt.curl(b.url(HOOK + "?token=tok-123"), raw)
        t.is_(r.status, 200, "post with the token from the file: delivered", r)
        t.require(sink.wait_requests(1, 5), "sink got the delivery")
        req = sink.requests[-1]
        t.is_(req.header("X-Qualifio-Signature"),
              "sha256=" + bt.hmac_hex("from-credentials", req.body),
              "signed with the secret from $CREDENTIALS_DIRECTORY/sign (newline dropped)")
        t.is_(req.header("Authorization"), "Bearer from-file", "auth header value from its file")
        r = bt.curl(b.url(HOOK + "?token=wrong"), raw)
        t.is_(r.status, 401, "a wrong token: 401", r)
        with open(os.path.join(creds, "sign"), "w") as f:
            f.write("rotated\n")
        n = len(b.err_lines)
        b.proc.send_signal(signal.SIGHUP)
        t.ok(bt.wait_for(lambda: any('"reloaded"' in l for l in b.err_lines[n:]), 10),
             "SIGHUP reloads")
        r = bt.curl(b.url(HOOK + "?token=tok-123"), raw)
        t.require(sink.wait_requests(2, 5), "sink got the second delivery")
        req = sink.requests[-1]
        t.is_(req.header("X-Qualifio-Signature"), "sha256=" + bt.hmac_hex("rotated", req.body),
              "the secret file is read again on reload")
        bt.stop_and_check(t, b)
    finally:
        sink.stop()
    refused = [
        ("dollar", {"secret": "${WEBHOOK_SECRET}"},
         r"dollar\.conf:\d+: 'secret' holds '\$\{': nothing is expanded"),
        ("missing", {"secret_file": "/nonexistent/secret"},
         r"secret_file '/nonexistent/secret': No such file"),
    ]
    for name, kw, pattern in refused:
        conf = bt.config_text([bt.route("f", mode="forward", endpoint="http://127.0.0.1:1/",
                                        **kw)], admin=None)
        r = bt.run_cli(["check", "--config", tmp.file(name + ".conf", conf)])
        t.is_(r.rc, 1, "check refuses %r" % kw, r)
        t.like(r.stderr, pattern, "and says why with the file")
    inline = bt.config_text([bt.route("f", mode="forward", endpoint="http://127.0.0.1:1/",
                                      secret="inline")], admin=None)
    path = tmp.file("inline.conf", inline)
    os.chmod(path, 0o644)
    r = bt.run_cli(["check", "--config", path])
    t.ok(r.rc == 0 and "holds secrets and is readable by others" in r.stderr,
         "check warns: inline secrets in a world-readable config", r)
    os.chmod(path, 0o600)
    r = bt.run_cli(["check", "--config", path])
    t.ok(r.rc == 0 and "warning" not in r.stderr, "no warning once it is 0600", r)


def t_state_dirs(t):
    """Relative report and queue paths go under $LOGS_DIRECTORY and
    $STATE_DIRECTORY; the report is created 0600."""
    logs, state = tmp.join("logs"), tmp.join("state")
    os.makedirs(logs, exist_ok=True)
    os.makedirs(state, exist_ok=True)
    cfg = bt.config_text([bt.route("r")], path=HOOK, dry_run={"report": "report.jsonl"},
                         queue={"path": "queue.db"}, record={"path": "capture.ndjson"})
    env = dict(os.environ)
    os.environ.update(LOGS_DIRECTORY=logs, STATE_DIRECTORY=state)
    try:
        b = bt.Bridge(tmp, cfg, name="state.conf").start()
    finally:
        os.environ.clear()
        os.environ.update(env)
    _, raw, _ = bt.v1_fixture()
    r = bt.curl(b.url(HOOK), raw)
    t.is_(r.status, 200, "dry-run post", r)
    rep = os.path.join(logs, "report.jsonl")
    t.ok(bt.wait_for(lambda: os.path.exists(rep) and os.path.getsize(rep) > 0),
         "dry_run.report = \"report.jsonl\" is written under $LOGS_DIRECTORY")
    t.is_(oct(os.stat(rep).st_mode & 0o777) if os.path.exists(rep) else None, "0o600",
          "the report is created 0600")
    t.ok(bt.wait_for(lambda: os.path.exists(os.path.join(logs, "capture.ndjson"))),
         "record.path = \"capture.ndjson\" is written under $LOGS_DIRECTORY")
    t.ok(os.path.exists(os.path.join(state, "queue.db")),
         "queue.path = \"queue.db\" is opened under $STATE_DIRECTORY")
    t.ok(not any(os.path.exists(tmp.join(f)) for f in ("report.jsonl", "capture.ndjson",
                                                        "queue.db")),
         "nothing written beside the config")
    bt.stop_and_check(t, b)


def make_cert(name):
    key, crt = tmp.join(name + ".key"), tmp.join(name + ".crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", crt],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return crt, key


def serve_refusal(path, env=None):
    """serve's exit code and the messages it gave: the file:line lines of the
    loader, or the message of its start_failed log line."""
    p = subprocess.run([bt.BRIDGE_BIN, "serve", "--config", path], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20,
                       env=dict(os.environ, **(env or {})))
    err = p.stderr.decode("utf-8", "replace")
    msgs = []
    for line in err.splitlines():
        if line.startswith("{"):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == "start_failed":
                msgs.append(rec.get("message", ""))
        elif not line.startswith("webhook-bridge:") and line.strip():
            msgs.append(line)
    return p.returncode, msgs, err


def refusal_cases():
    """Every kind of start-up refusal serve has, one config each: what the
    loader refuses, then what serve refuses only when it starts (addresses,
    TLS, trust stores, the queue store, the files it appends to)."""
    crt_a, key_a = make_cert("a")
    crt_b, key_b = make_cert("b")
    notpem = tmp.file("not-a-cert.pem", "not a certificate\n")
    broken_rules = tmp.file("broken-rules.conf", "rules = ( { target = ; } );\n")
    garbage_db = tmp.file("garbage.db", "this is not an SQLite database\n" * 200)
    os.makedirs(tmp.join("garbage-state"), exist_ok=True)
    garbage_state = tmp.file("garbage-state/cutover.db", "not SQLite either\n" * 200)
    os.chmod(garbage_db, 0o600)
    adir = tmp.join("a-folder")
    os.makedirs(adir, exist_ok=True)
    fwd = dict(bt.route("f", mode="forward"), endpoint="http://127.0.0.1:9/", secret="s3")
    https = dict(fwd, endpoint="https://127.0.0.1:9/")
    base = {"address": "127.0.0.1", "port": 0, "path": HOOK}
    missing = "/nonexistent-folder/x"
    C = []

    def case(name, change, pattern, env=None):
        C.append((name, change, pattern, env))
    # the loader: the config file and its mappings
    case("unknown setting", {"bogus": 1}, r"unknown setting 'bogus'")
    case("port out of range", {"listen": dict(base, port=70000)}, r"port")
    case("path without /", {"listen": dict(base, path="hook")}, r"'path' must start with '/'")
    case("mapping file missing", {"routes": [dict(bt.route("r"), mapping="/nonexistent.conf")]},
         r"nonexistent\.conf")
    case("mapping that does not load", {"routes": [dict(bt.route("r"), mapping=broken_rules)]},
         r"did not load")
    case("forward without endpoint", {"routes": [dict(fwd, endpoint=None)]},
         r"has no 'endpoint'")
    case("forward without secret", {"routes": [dict(fwd, secret=None)]}, r"no 'secret'")
    case("${ in a secret", {"routes": [dict(fwd, secret="${X}")]}, r"nothing is expanded")
    case("secret_file missing", {"routes": [dict(fwd, secret=None, secret_file=missing)]},
         r"secret_file")
    case("secret and secrets", {"routes": [dict(fwd, secrets=["a", "b"])]}, r"not both")
    case("endpoint not http", {"routes": [dict(fwd, endpoint="ftp://127.0.0.1/")]},
         r"endpoint")
    case("auth_header name", {"routes": [dict(fwd, auth_header={"name": "Bad Name",
                                                                   "value": "v"})]},
         r"not a valid HTTP header name")
    case("route name twice", {"routes": [fwd, fwd]}, r"already used")
    case("unrouted value", {"unrouted": "maybe"}, r"unrouted")
    case("log_level value", {"log_level": "loud"}, r"log_level")
    case("admin and listen share a port", {"listen": dict(base, port=18556),
                                           "admin": {"address": "127.0.0.1", "port": 18556}},
         r"cannot share")
    case("record.headers with a credential", {"record": {"path": tmp.join("c.ndjson"),
                                                         "headers": ["Authorization"]}},
         r"inbound credential")
    case("queued route without a queue", {"routes": [dict(fwd, delivery="queued")]},
         r"no queue")
    case("queued in dry-run", {"routes": [dict(bt.route("r"), delivery="queued")],
                               "queue": {"path": tmp.join("q1.db")}}, r"needs mode")
    case("allow-list with host bits", {"listen": dict(base, allow=["10.0.0.1/8"])}, r"allow")
    case("listen.tls file missing", {"listen": dict(base, tls={"cert_file": missing,
                                                               "key_file": key_a})},
         r"cert_file")
    case("listen.auth without a method", {"listen": dict(base, auth={})}, r"names no method")
    case("v2_path equal to listen.path", {"dry_run": {"v2_path": HOOK}}, r"must differ")
    case("dry_run.keep = 0", {"dry_run": {"keep": 0}}, r"keep")
    case("route header set by the bridge", {"routes": [dict(fwd, headers=[
        {"name": "Host", "value": "x"}])]}, r"set by the bridge")
    case("empty match list", {"routes": [dict(bt.route("r"), match={"campaign_id": []})]},
         r"empty")
    # serve at start, beyond the loader
    case("listen address not an IP", {"listen": dict(base, address="nothost")}, r"not an IP")
    case("admin address not an IP", {"admin": {"address": "localhost", "port": 0}},
         r"not an IP")
    case("listen address not on this host", {"listen": dict(base, address="192.0.2.1")},
         r"cannot listen on 192\.0\.2\.1 port 0")
    case("admin address not on this host", {"admin": {"address": "192.0.2.1", "port": 0}},
         r"cannot listen on admin 192\.0\.2\.1 port 0")
    case("listen TLS key of another certificate",
         {"listen": dict(base, tls={"cert_file": crt_a, "key_file": key_b})},
         r"listen\.tls: cannot use")
    case("listen TLS key that is not a key",
         {"listen": dict(base, tls={"cert_file": crt_a, "key_file": crt_a})},
         r"listen\.tls: cannot use")
    case("admin TLS key of another certificate",
         {"admin": {"address": "127.0.0.1", "port": 0,
                    "tls": {"cert_file": crt_b, "key_file": key_a}}}, r"admin\.tls: cannot use")
    case("tls.ca_file not a certificate", {"tls": {"ca_file": notpem}, "routes": [https]},
         r"not-a-cert\.pem")
    case("route ca_file not a certificate", {"routes": [dict(https, ca_file=notpem)]},
         r"not-a-cert\.pem")
    case("queue store in a missing folder", {"queue": {"path": missing + "/q.db"},
                                             "routes": [dict(fwd, delivery="queued")]},
         r"queue store lock")
    case("queue store that is not SQLite", {"queue": {"path": garbage_db},
                                            "routes": [dict(fwd, delivery="queued")]},
         r"garbage\.db")
    case("queue store that is a folder", {"queue": {"path": adir},
                                          "routes": [dict(fwd, delivery="queued")]},
         r"not a regular file")
    case("report in a missing folder", {"dry_run": {"report": missing + "/r.jsonl"}},
         r"cannot open /nonexistent-folder/x/r\.jsonl: No such file")
    case("report that is a folder", {"dry_run": {"report": adir}}, r"Is a directory")
    case("v2_record in a missing folder", {"dry_run": {"v2_path": "/v2",
                                                       "v2_record": missing + "/v.ndjson"}},
         r"cannot open /nonexistent-folder/x/v\.ndjson")
    case("capture in a missing folder", {"record": {"path": missing + "/c.ndjson"}},
         r"cannot open /nonexistent-folder/x/c\.ndjson")
    dual = dict(bt.route("d", mode="dual"), endpoint="http://127.0.0.1:9/v2",
                legacy_endpoint="http://127.0.0.1:9/v1", secret="s3")
    case("cutover state in a missing folder", {"routes": [dual]},
         r"cannot create cutover state /nonexistent-folder/x/cutover\.db",
         env={"STATE_DIRECTORY": missing})
    case("cutover state that is not SQLite", {"routes": [dual]}, r"garbage-state",
         env={"STATE_DIRECTORY": os.path.dirname(garbage_state)})
    case("cutover ramp out of range", {"routes": [dict(dual, cutover={"ramp": 101})]},
         r"ramp")
    case("capture redact pattern", {"record": {"path": tmp.join("c2.ndjson"),
                                               "redact": ["a*b"]}}, r"redact pattern 'a\*b'")
    return C


def t_check_is_serve(t):
    """check is serve's start without the start: every kind of start-up
    refusal serve has (a table, one config each) makes serve exit 1 and
    check exit 1 with the same message; nothing is created on the way."""
    cases = refusal_cases()
    t.diag("%d start-up refusals" % len(cases))
    for name, change, pattern, env in cases:
        cfg = {"listen": {"address": "127.0.0.1", "port": 0, "path": HOOK},
               "admin": {"address": "127.0.0.1", "port": 0}, "routes": [bt.route("r")]}
        cfg.update(change)
        for r in cfg["routes"]:
            for k in [k for k, v in r.items() if v is None]:
                del r[k]
        text = "".join("%s = %s;\n" % (k, bt.cfg_value(v)) for k, v in cfg.items())
        path = tmp.file("refuse.conf", text)
        before = sorted(os.listdir(tmp.join(".")))
        rc, msgs, err = serve_refusal(path, env)
        t.is_(rc, 1, "%s: serve refuses to start (exit 1)" % name, err[-800:])
        t.ok(any(re.search(pattern, m) for m in msgs), "%s: serve says why" % name, msgs)
        for leftover in set(os.listdir(tmp.join("."))) - set(before):
            p = tmp.join(leftover)
            os.remove(p) if os.path.isfile(p) else None
        before = sorted(os.listdir(tmp.join(".")))
        p = subprocess.run([bt.BRIDGE_BIN, "check", "--config", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=dict(os.environ, **(env or {})),
                           timeout=20)
        r = bt.Result(p.returncode, p.stdout, p.stderr)
        t.is_(r.rc, 1, "%s: check refuses it too (exit 1)" % name, r)
        t.ok(msgs and all(m in r.stderr for m in msgs),
             "%s: with the same message" % name, "serve: %r\ncheck: %r" % (msgs, r.stderr))
        t.is_(sorted(os.listdir(tmp.join("."))), before, "%s: check created nothing" % name)
    ok = {"listen": {"address": "127.0.0.1", "port": 0, "path": HOOK,
                     "tls": {"cert_file": tmp.join("a.crt"), "key_file": tmp.join("a.key")}},
          "routes": [bt.route("r")]}
    text = "".join("%s = %s;\n" % (k, bt.cfg_value(v)) for k, v in ok.items())
    r = bt.run_cli(["check", "--config", tmp.file("tls-ok.conf", text)])
    t.is_(r.rc, 0, "a matching certificate and key pass check", r)
    # a port taken by another process is the host's state, not the config's
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        busy = bt.config_text([bt.route("r")], port=s.getsockname()[1], admin=None)
        r = bt.run_cli(["check", "--config", tmp.file("busy.conf", busy)])
        t.ok(r.rc == 0 and "is in use now" in r.stderr,
             "a port in use now: check passes with a note (serve may be running)", r)
    finally:
        s.close()


def t_print_config(t):
    """check --print-config: the effective configuration, every default
    filled in (the README's defaults), every secret masked, in a form check
    accepts again (and that prints the same)."""
    creds = tmp.join("pc-creds")
    os.makedirs(creds, exist_ok=True)
    with open(os.path.join(creds, "sig"), "w") as f:
        f.write("FILE-SECRET-4711\n")
    secrets = ["INLINE-SECRET-1", "OLD-SECRET-2", "BEARER-SECRET-3", "LEGACY-SECRET-4",
               "BASIC-PASSWORD-5", "QUERY-TOKEN-6", "ADMIN-PASSWORD-7", "URL-PASSWORD-8",
               "URL-TOKEN-9", "FILE-SECRET-4711", "HEADER-TOKEN-10"]
    full = bt.config_text(
        [dict(bt.route("one", mode="forward"),
              endpoint="https://127.0.0.1:9/in?key=URL-TOKEN-9&k2=URL-PASSWORD-8",
              secrets=["INLINE-SECRET-1", "OLD-SECRET-2"],
              auth_header={"name": "Authorization", "value": "BEARER-SECRET-3"},
              headers=[{"name": "X-Tenant", "value": "acme"}],
              match={"campaign_id": [123456]}, timeout_ms=5000,
              auth={"header": {"name": "X-Hook-Token", "value": "HEADER-TOKEN-10"}}),
         dict(bt.route("two", mode="dual"), endpoint="http://127.0.0.1:9/two",
              legacy_endpoint="http://127.0.0.1:9/legacy", secret_file="sig",
              legacy_auth_header={"name": "X-Legacy", "value": "LEGACY-SECRET-4"},
              signature_encoding="base64")],
        path=HOOK,
        admin={"address": "127.0.0.1", "port": 0,
               "auth": {"basic": {"user": "ops", "password": "ADMIN-PASSWORD-7"}}},
        dry_run={"report": tmp.join("pc-report.jsonl"), "v2_path": "/v2"},
        record={"path": tmp.join("pc-capture.ndjson"), "redact": ["secret_*"]},
        queue={"path": tmp.join("pc-queue.db")})
    full = full.replace('path = "%s";' % HOOK, 'path = "%s";\n  auth = { basic = { user = '
                        '"q"; password = "BASIC-PASSWORD-5"; }; query = { name = "t"; value '
                        '= "QUERY-TOKEN-6"; }; };\n  allow = [ "127.0.0.0/8", "::1" ];' % HOOK, 1)
    env = dict(os.environ, CREDENTIALS_DIRECTORY=creds)
    p = subprocess.run([bt.BRIDGE_BIN, "check", "--config", tmp.file("pc-full.conf", full),
                        "--print-config"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, timeout=20)
    out = p.stdout.decode()
    t.is_(p.returncode, 0, "check --print-config exits 0", p.stderr.decode())
    leaked = [x for x in secrets if x in out]
    t.is_(leaked, [], "no secret value in the printed config")
    t.ok(out.count('"********"') >= 9, "each secret shows as \"********\"", out)
    t.like(out, r'endpoint = "https://127\.0\.0\.1:9/in\?key=\*\*\*&k2=\*\*\*";',
           "the endpoint's query values masked")
    for want in (r'allow = \[ "127\.0\.0\.0/8", "::1/128" \];', r'website_id = "website_id";',
                 r'campaign_id = \[ "123456" \];', r'signature_encoding = "base64";',
                 r'X-Tenant', r'user = "ops";', r'name = "X-Hook-Token";'):
        t.like(out, want, "printed: %s" % want)
    again = tmp.file("pc-again.conf", out)
    os.chmod(again, 0o600)
    r = bt.run_cli(["check", "--config", again])
    t.is_(r.rc, 0, "check accepts the printed config", r)
    r2 = bt.run_cli(["check", "--config", again, "--print-config"])
    strip = lambda s: "\n".join(s.splitlines()[1:])
    t.is_(strip(r2.stdout), strip(out), "printed again, it prints the same (a fixed point)")
    # every documented default, from the README's settings tables
    minimal = tmp.file("pc-min.conf", bt.config_text(
        [dict(bt.route("m", mode="forward"), endpoint="http://127.0.0.1:9/", secret="x")],
        port=8080, admin={"address": "127.0.0.1", "port": 9180},
        record={"path": tmp.join("m.ndjson")}))
    r = bt.run_cli(["check", "--config", minimal, "--print-config"])
    printed = {}
    stack = []
    for line in r.stdout.splitlines():
        s = line.strip()
        m = re.match(r"^(\w+) = (.*);$", s)
        if m and m.group(2) not in ("{", "("):
            printed[".".join([x for x in stack if x] + [m.group(1)])] = m.group(2)
        elif re.match(r"^\w+ = [{(]$", s):
            stack.append(s.split()[0] if s.endswith("{") else "")
        elif s == "{":
            stack.append("")
        elif s in ("};", "}", "},", ");"):
            stack.pop()
    with open(os.path.join(bt.SOURCE_ROOT, "README.md")) as f:
        readme = f.read()
    # the settings tables: from a "| setting | default |" head to the blank line
    tables = re.findall(r"^\| setting \| default \|.*?\n\n", readme, re.M | re.S)
    t.ok(len(tables) >= 2, "the README's two settings tables found")
    rows = re.findall(r"^\| (`[^|]+`) \| (`[^|]+`) \|", "".join(tables), re.M)
    checked = 0
    for names, defaults in rows:
        names = re.findall(r"`([\w.]+)`", names)
        values = re.findall(r"`([^`]+)`", defaults)
        if len(names) != len(values):
            continue
        for n, v in zip(names, values):
            if not re.match(r'^(-?\d+|true|false|"[^"]*")$', v):
                continue
            key = n if "." in n or n in printed else "routes." + n
            t.is_(printed.get(key), v, "default of %s printed as documented" % n)
            checked += 1
    t.ok(checked >= 30, "%d documented defaults compared" % checked)
    r = bt.run_cli(["check", "--mapping", bt.MAPPING, "--print-config"])
    t.ok(r.rc == 2 and "--print-config needs --config" in r.stderr, "--print-config needs "
         "--config", r)


def t_did_you_mean(t):
    """Every command refuses a near-miss or abbreviated option in the one
    error style, and names the option meant."""
    cases = [(["serve", "--confg", "x"], "serve", r"unknown option '--confg'; did you mean --config\?"),
             (["check", "--mapng", "x"], "check", r"unknown option '--mapng'; did you mean --mapping\?"),
             (["serve", "--config"], "serve", r"option '--config' needs an argument"),
             (["serve", "-c"], "serve", r"option '-c' needs an argument"),
             (["serve", "--help=x"], "serve", r"option '--help' takes no argument"),
             (["serve", "-x"], "serve", r"unknown option '-x'"),
             (["serve", "--zzzzzz"], "serve", r"unknown option '--zzzzzz'\n")]
    # every command: a typo (two edits) and an abbreviation getopt_long alone would take
    for cmd, typo, abbrev, meant in [
            ("serve", "--cofnig", "--conf", "config"),
            ("check", "--confi", "--con", "config"),
            ("map", "--mappin", "--map", "mapping"),
            ("diff", "--agianst", "--again", "against"),
            ("report", "--jsn", "--js", "json"),
            ("replay", "--dryrun", "--dry", "dry-run"),
            ("queue", "--stroe", "--sto", "store"),
            ("learn", "--bse", "--ba", "base"),
            ("version", "--verbos", "--verb", "verbose"),
            ("cutover", "--rmap", "--ra", "ramp")]:
        for opt in (typo, abbrev):
            cases.append(([cmd, opt, "x"], cmd,
                          r"unknown option '%s'; did you mean --%s\?\n" % (opt, meant)))
    for args, cmd, pattern in cases:
        r = bt.run_cli(args)
        t.is_(r.rc, 2, "%s: exit 2" % " ".join(args), r)
        t.like(r.stderr, r"^webhook-bridge %s: %s" % (cmd, pattern), "%s: says so" % " ".join(args))
        t.like(r.stderr, r"Try 'webhook-bridge %s --help'\.\n$" % cmd, "and where to look")
        t.is_(r.stdout, "", "%s: nothing on stdout" % " ".join(args))
    for cmd in ("serve", "check", "map", "diff", "report", "replay", "queue", "learn", "version",
                "cutover"):
        r = bt.run_cli([cmd, "--help"])
        t.ok(r.rc == 0 and r.stdout.startswith("usage: webhook-bridge %s" % cmd)
             and re.search(r"^exit: ", r.stdout, re.M),
             "%s --help: usage and exit codes on stdout, exit 0" % cmd, r)
    r = bt.run_cli(["serv"])
    t.ok(r.rc == 2 and r.stderr == "webhook-bridge: unknown command 'serv'\n"
         "Try 'webhook-bridge --help'.\n", "an unknown command: the same style", r)


def t_version(t):
    r = bt.run_cli(["serve", "--help"])
    t.like(r.stdout, r"exit: 0 clean stop, 1 invalid config or the port cannot be bound, 2 usage",
           "serve --help lists its exit codes")
    r = bt.run_cli(["--version"])
    t.is_((r.rc, r.stdout), (0, "webhook-bridge %s\n" % bt.VERSION), "--version: one line")
    for args in (["version", "--verbose"], ["-V"]):
        r = bt.run_cli(args)
        lines = r.stdout.splitlines()
        t.is_(r.rc, 0, "%s exits 0" % " ".join(args), r)
        for lib in ("libevent", "OpenSSL", "yajl", "libconfig", "SQLite", "libpq", "build"):
            t.ok(any(re.match(r"%s \S+" % lib, l) for l in lines),
                 "%s names %s and its version" % (" ".join(args), lib), r.stdout)


def t_readme_examples(t):
    """The README walkthrough as written: the URL-encoded form post, JSON sent
    as a form, the answer's key order, the 422 without a delivery id."""
    b = bt.Bridge(tmp, bt.config_text([bt.route("default")]), name="walk.conf").start()
    p = subprocess.run(["curl", "-sS", "--data-urlencode",
                        "participation_id=4b1e9345-1c0c-463f-82a0-e6857dbdfe80",
                        "--data-urlencode", "campaign_id=123456", "--data-urlencode",
                        "status=complete", "--data-urlencode", "date_start=2020-10-30 15:05:00",
                        "--data-urlencode", "lastname=Doe", b.url("/")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    doc = json.loads(p.stdout or b"{}")
    t.is_(doc.get("status"), "dry-run", "README form example (--data-urlencode) is accepted",
          p.stdout)
    _, raw, _ = bt.v1_fixture()
    r = bt.curl(b.url("/"), raw)
    t.is_(list(r.json().keys()),
          ["status", "participation_id", "unmapped", "v2", "route", "delivery_id"],
          "dry-run answer keys in the documented order")
    t.ok(bt.wait_for(lambda: b.dry_run_lines()), "stdout line")
    line = json.loads(b.dry_run_lines()[-1])
    t.is_(list(line.keys()), ["event", "time", "route", "delivery_id", "participation_id",
                              "unmapped", "v2"], "stdout envelope keys as documented")
    r = bt.curl(b.url("/"), b'{"participation_id":"x"}',
                content_type="application/x-www-form-urlencoded")
    t.is_(r.status, 415, "JSON posted as a form: 415", r)
    t.like(r.body.decode(), r"looks like JSON but Content-Type says "
           r"application/x-www-form-urlencoded", "and it says so")
    r = bt.curl(b.url("/"), b'{"campaign_id":"1"}')
    t.is_(r.status, 422, "a required key absent: 422", r)
    t.ok("delivery_id" not in r.json() and r.json().get("route") == "default",
         "422 mapping_failed carries route and no delivery_id", r)
    bt.stop_and_check(t, b)


def t_reopen(t):
    """logrotate without copytruncate: SIGUSR1 and SIGHUP reopen the report
    and the capture."""
    rep, cap = tmp.join("rot-report.jsonl"), tmp.join("rot-capture.ndjson")
    b = bt.Bridge(tmp, bt.config_text([bt.route("r")], dry_run={"report": rep},
                                      record={"path": cap}), name="rot.conf").start()
    _, raw, _ = bt.v1_fixture()
    for sig in (signal.SIGUSR1, signal.SIGHUP):
        name = signal.Signals(sig).name
        t.is_(bt.curl(b.url("/"), raw).status, 200, "%s: a post before the rotation" % name)
        t.ok(bt.wait_for(lambda: os.path.exists(rep) and os.path.exists(cap)
                         and os.path.getsize(rep) and os.path.getsize(cap)), "files written")
        os.rename(rep, rep + ".1")
        os.rename(cap, cap + ".1")
        n = len(b.err_lines)
        b.proc.send_signal(sig)
        t.ok(bt.wait_for(lambda: any('"reopened"' in l for l in b.err_lines[n:]), 10),
             "%s: a reopened log line" % name)
        t.is_(bt.curl(b.url("/"), raw).status, 200, "%s: a post after it" % name)
        t.ok(bt.wait_for(lambda: os.path.exists(rep) and os.path.getsize(rep) > 0
                         and os.path.exists(cap) and os.path.getsize(cap) > 0),
             "%s: the report and the capture are new files at their paths" % name)
        t.is_((oct(os.stat(rep).st_mode & 0o777), oct(os.stat(cap).st_mode & 0o777)),
              ("0o600", "0o600"), "%s: both created 0600" % name)
        os.remove(rep + ".1")
        os.remove(cap + ".1")
    bt.stop_and_check(t, b)


def t_report_rotation(t):
    """dry_run.rotate_bytes and dry_run.keep: the report rotates by size like
    the capture (report.1 .. report.keep, the oldest dropped), every file
    made of whole lines, new files 0600."""
    rep = tmp.join("cap-report.jsonl")
    b = bt.Bridge(tmp, bt.config_text([bt.route("r")], dry_run={
        "report": rep, "rotate_bytes": 6000, "keep": 2, "stdout": False}),
        name="cap.conf").start()
    _, raw, _ = bt.v1_fixture()
    posts = 12
    for i in range(posts):
        t.is_(bt.curl(b.url("/"), raw).status, 200, "post %d answered" % i)
    names = [rep, rep + ".1", rep + ".2"]
    t.ok(bt.wait_for(lambda: all(os.path.exists(n) for n in names)),
         "report, report.1 and report.2 exist", os.listdir(tmp.join(".")))
    t.ok(not os.path.exists(rep + ".3"), "keep = 2: no report.3 (the oldest is dropped)")
    lines_total = 0
    for n in names:
        with open(n, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        t.is_(lines[-1], b"", "%s ends with a whole line" % os.path.basename(n))
        lines = lines[:-1]
        lines_total += len(lines)
        t.ok(all(isinstance(json.loads(x), dict) for x in lines),
             "%s: every line is a JSON object" % os.path.basename(n))
        t.ok(len(data) <= 6000 or len(lines) == 1,
             "%s: at most rotate_bytes, or one line larger than it" % os.path.basename(n),
             len(data))
        t.is_(oct(os.stat(n).st_mode & 0o777), "0o600", "%s is 0600" % os.path.basename(n))
    t.ok(0 < lines_total < posts, "the oldest lines went with the dropped file (%d of %d kept)"
         % (lines_total, posts))
    bt.stop_and_check(t, b)
    r = bt.run_cli(["check", "--config", tmp.file("cap-bad.conf", bt.config_text(
        [bt.route("r")], dry_run={"report": rep, "keep": 0}))])
    t.ok(r.rc == 1 and re.search(r"cap-bad\.conf:\d+: .*keep", r.stderr),
         "dry_run.keep = 0 is refused with file:line", r)


def on_pty(args, columns, term="xterm"):
    """Run with stdout and stderr on a terminal of `columns` columns."""
    env = dict(os.environ, TERM=term)
    env.pop("NO_COLOR", None)
    return bt.run_on_pty(args, env, columns, stderr_too=True)[1].decode("utf-8", "replace")


def t_terminal(t):
    """The replay bar fits the terminal and shows rate and ETA; TERM=dumb and
    --no-color turn escapes off."""
    args = ["replay", "--config", bt.SHIPPED_CONFIG, "--dry-run", "--rate", "20/s",
            bt.V1_FIXTURES]
    out = on_pty(args, 50)
    bars = [x.replace("\x1b[K", "") for x in out.split("\r")]
    bars = [x.split("\n")[0] for x in bars if re.match(r"(\[[#.]+\])? \d+/\d+ ", x)]
    t.ok(bars, "replay draws a progress line on a terminal", out[-500:])
    t.ok(all(len(b) <= 49 for b in bars), "every bar fits 50 columns",
         max(bars, key=len) if bars else None)
    t.ok(any(re.search(r"\d+\.\d/s", b) for b in bars), "the bar shows the rate", bars[-3:])
    t.ok(any(re.search(r"ETA \d+s", b) for b in bars), "the bar shows the ETA", bars[-3:])
    wide = [x for x in on_pty(args, 120).split("\r") if re.match(r"(\x1b\[K)?\[[#.]+\]", x)]
    t.ok(wide and max(len(b.split("\n")[0]) for b in wide) > 60,
         "a wider terminal gets a wider bar")
    dumb = on_pty(args, 80, term="dumb")
    t.ok("\x1b[" not in dumb, "TERM=dumb: no escape sequences from replay")
    fixture = bt.v1_fixture()[0]
    diff = ["diff", "--mapping", bt.MAPPING, fixture]
    t.ok("\x1b[" in on_pty(diff, 80), "diff on a terminal is coloured")
    t.ok("\x1b[" not in on_pty(diff + ["--no-color"], 80), "diff --no-color: no colour")
    t.ok("\x1b[" not in on_pty(diff, 80, term="dumb"), "diff with TERM=dumb: no colour")
    # the diff table fits the terminal (TIOCGWINSZ), at two widths
    piped = bt.run_cli(diff + ["--no-color"]).stdout.splitlines()
    t.ok(max(len(x) for x in piped) > 120, "piped, the table is wider than 120 columns")
    tables = {}
    for cols in (60, 100):
        out = re.sub(r"\x1b\[[0-9;]*m", "", on_pty(diff, cols)).replace("\r", "")
        lines = out.split("\n")
        tables[cols] = lines
        t.ok(all(len(x) <= cols for x in lines), "%d columns: every diff line fits" % cols,
             max(lines, key=len))
        rows = [x for x in lines if re.search(r"\.conf:\d+  ", x)]
        t.ok(len(rows) >= 20, "%d columns: the rows keep the rule's line number" % cols,
             "\n".join(lines[:8]))
        t.ok(any(x.startswith("PATH ") for x in lines), "%d columns: the header row" % cols)
    t.ok(max(len(x) for x in tables[100]) > 60, "a wider terminal gets a wider table")
    values = lambda lines: [x for x in lines if x.startswith("campaign.name ")]
    t.ok(values(tables[100]) and '"Campaign title"' in values(tables[100])[0],
         "100 columns: short values whole", values(tables[100]))
    t.ok(values(tables[60]) and len(values(tables[60])[0]) <= 60, "60 columns: the row is cut")
    long_a = tmp.file("wide-a.json", json.dumps({"k": "x" * 300}))
    long_b = tmp.file("wide-b.json", json.dumps({"k": "y" * 300}))
    out = on_pty(["diff", long_a, long_b], 60).replace("\r", "")
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out).split("\n")
    t.ok(all(len(x) <= 60 for x in plain) and any(x.endswith("...") for x in plain),
         "diff A B on 60 columns: long values cut with ...", plain)
    t.ok(any(x.endswith("...\x1b[0m") for x in out.split("\n")),
         "a line cut on a coloured terminal ends with a colour reset", out[-300:])


t.run("unread pipes", t_unread_pipes)
t.run("lines lost", t_lines_lost)
t.run("dry_run.stdout off", t_stdout_off)
t.run("port owned", t_port_owned)
t.run("listen.reuseport", t_reuseport)
t.run("serve --listen", t_listen_flag)
t.run("sd_notify", t_notify)
t.run("strict numeric flags", t_strict_numbers)
t.run("secret files", t_secret_files)
t.run("version", t_version)
t.run("did you mean", t_did_you_mean)
t.run("README examples", t_readme_examples)
t.run("reopen on SIGUSR1 and SIGHUP", t_reopen)
t.run("report size cap", t_report_rotation)
t.run("terminal", t_terminal)
t.run("check is as strict as serve", t_check_is_serve)
t.run("check --print-config", t_print_config)
t.run("state directories", t_state_dirs)
t.run("sd_notify watchdog pid", t_notify_pid)
tmp.cleanup()
t.done()
