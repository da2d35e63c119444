#!/usr/bin/python3
"""The cutover of dual routes: a sticky ramp by participation (both states
and every retry go the same way, raising the ramp keeps v2's participations
on v2), the admin API and the cutover command, the kill switch under load,
the automatic rollback, the state surviving SIGHUP and a restart, two
instances on one state store, and the cross-site refusals."""

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
_, _, DOC = bt.v1_fixture()
V1_BODY = b'{"legacy":"ok"}'


def v1(pid, status="complete"):
    return bt.v1_variant(DOC, participation_id=pid, status=status)


class Poster:
    """Keep-alive posts to the webhook path (curl per post is too slow for
    thousands)."""

    def __init__(self, port, path="/hook"):
        self.port, self.path, self.conn = port, path, None

    def post(self, body):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
                self.conn.request("POST", self.path, body, {"Content-Type": "application/json"})
                r = self.conn.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                self.conn = None
                if attempt:
                    raise
        return None, b""

    def close(self):
        if self.conn:
            self.conn.close()


def answered_by_v2(body):
    try:
        return json.loads(body).get("status") == "delivered"
    except ValueError:
        return False


def admin_json(b, path):
    r = bt.curl(b.admin_url(path))
    return r.json() or {}


def token(b):
    return admin_json(b, "/cutover").get("csrf_token", "")


def change(b, route, payload, extra=()):
    path = "/cutover/kill" if route is None else "/cutover/" + route
    return bt.curl(b.admin_url(path), json.dumps(payload).encode(), method="POST",
                   headers=["X-Bridge-Token: " + token(b)] + list(extra))


def state_of(b, route):
    for r in admin_json(b, "/cutover").get("routes", []):
        if r.get("route") == route:
            return r
    return {}


def metric(b, line_start):
    text = bt.curl(b.admin_url("/metrics")).body.decode()
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return None


def sinks():
    """The legacy importer (answers V1_BODY) and the new one."""
    legacy, v2 = bt.Sink(), bt.Sink()
    legacy.default = bt.Reply(200, body=V1_BODY)
    return legacy, v2


def finish(bridges, name, *peers):
    for b in bridges:
        bt.stop_and_check(t, b, "%s bridge on %s" % (name, b.port))
    for p in peers:
        p.stop()


def state_env(name):
    """A state directory of the test's own (the cutover state is per folder)."""
    d = tmp.join("state-" + name)
    os.makedirs(d, exist_ok=True)
    return dict(os.environ, STATE_DIRECTORY=d)


def bridge(cfg, name, env=None):
    b = bt.Bridge(tmp, cfg, name + ".conf")
    b.env = env or state_env(name)
    return b.start()


def dual_route(name, legacy, v2, cutover, **kw):
    return bt.route(name, "dual", endpoint=v2.url("/v2"), legacy_endpoint=legacy.url("/v1"),
                    secret="s", timeout_ms=5000, cutover=cutover, **kw)


def t_sticky(_t):
    legacy, v2 = sinks()
    cfg = bt.config_text([dual_route("crm", legacy, v2, {"ramp": 30, "copy": False})],
                         path="/hook", workers=2)
    b = bridge(cfg, "sticky")
    posters = []
    try:
        st = state_of(b, "crm")
        t.is_((st.get("ramp"), st.get("status"), st.get("by")), (30, "ramping", "config"),
              "the config's ramp is the initial state", st)
        # fixed ids, so the share is the same at every run (random ones would
        # leave the 30 % +- 3 band about once in 300 runs)
        rng = random.Random(15)
        pids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(2000)]
        ways = {}
        lock = threading.Lock()

        def run(chunk, status, key):
            p = Poster(b.port)
            posters.append(p)
            for pid in chunk:
                code, body = p.post(v1(pid, status))
                with lock:
                    ways.setdefault(pid, {})[key] = (code, answered_by_v2(body))

        def wave(status, key):
            ths = [threading.Thread(target=run, args=(pids[i::4], status, key))
                   for i in range(4)]
            for th in ths:
                th.start()
            for th in ths:
                th.join()

        wave("incomplete", "incomplete")
        wave("complete", "complete")
        codes = [w[k][0] for w in ways.values() for k in w]
        t.ok(all(c == 200 for c in codes), "every post of both waves is answered 200",
             [c for c in codes if c != 200][:5])
        on_v2 = {p for p, w in ways.items() if w.get("incomplete", (0, False))[1]}
        share = len(on_v2) / len(pids)
        t.ok(0.27 <= share <= 0.33, "ramp 30: %.1f%% of 2,000 participations answered by v2"
             % (share * 100))
        same = [p for p, w in ways.items()
                if w.get("incomplete", (0, None))[1] != w.get("complete", (0, None))[1]]
        t.is_(same, [], "each participation's INCOMPLETE and COMPLETE go the same way")
        got = {}
        for rq in v2.requests:
            d = json.loads(rq.body)
            got.setdefault(d["id"].lower(), set()).add(d["state"])
        t.is_(set(got), on_v2, "copy = false: the v2 endpoint got exactly the v2-primary "
              "participations")
        t.ok(all(s == {"INCOMPLETE", "COMPLETED"} for s in got.values()),
             "... each with both of its states")
        t.is_(len(legacy.requests), 2 * (len(pids) - len(on_v2)),
              "... and v1 exactly the others, both states each")
        m = metric(b, 'webhook_bridge_cutover_posts_total{route="crm",primary="v2",outcome="ok"}')
        t.is_(m, 2.0 * len(on_v2), "posts by primary v2 counted", m)
        t.is_(metric(b, 'webhook_bridge_cutover_ramp{route="crm"}'), 30.0, "ramp gauge 30")

        r = change(b, "crm", {"ramp": 60})
        d = bt.check_json_response(t, r, 200, "POST /cutover/crm {ramp: 60}")
        t.is_((d or {}).get("changed"), 1, "one route changed", r)
        before = dict(ways)
        ways.clear()
        wave("complete", "retry")
        now_v2 = {p for p, w in ways.items() if w["retry"][1]}
        t.is_(sorted(on_v2 - now_v2), [], "raising to 60 keeps every earlier v2 "
              "participation on v2 (retries)")
        share = len(now_v2) / len(pids)
        t.ok(0.57 <= share <= 0.63, "ramp 60: %.1f%% on v2" % (share * 100))
        t.ok(len(before) == len(pids), "first waves covered every participation")
        recs = bt.wait_for(lambda: [x for x in b.log_records()
                                    if x.get("event") == "cutover_changed" and x.get("ramp") == 60],
                           5) or []
        t.ok(recs and recs[-1].get("old_ramp") == 30 and recs[-1].get("ramp") == 60 and
             "admin API from 127.0.0.1" in (recs[-1].get("by") or ""),
             "the change is logged: who, from where, old -> new", recs[-1:])
        t.is_(metric(b, 'webhook_bridge_cutover_changes_total{route="crm"}'), 1.0,
              "the change is counted")
    finally:
        for p in posters:
            p.close()
        finish([b], "sticky", legacy, v2)


class GatedReply(bt.Reply):
    """A v2 answer held until the gate opens (the sink's delay reads it)."""

    def __init__(self, gate, **kw):
        super().__init__(**kw)
        self.gate = gate

    @property
    def delay(self):
        self.gate.wait(20)
        return 0

    @delay.setter
    def delay(self, v):
        pass


def t_kill(_t):
    legacy, v2 = sinks()
    gate = threading.Event()
    v2.default = GatedReply(gate)
    routes = [dual_route("crm", legacy, v2, {"ramp": 100}),
              dual_route("other", legacy, v2, {"ramp": 100}, match={"website_id": [999]})]
    cfg = bt.config_text(routes, path="/hook", workers=2)
    b = bridge(cfg, "kill")
    results, lock = [], threading.Lock()
    stop_load = threading.Event()
    kill_done = threading.Event()

    def held(pid):
        code, body = Poster(b.port).post(v1(pid))
        with lock:
            results.append(("held", code, answered_by_v2(body)))

    def load():
        p = Poster(b.port)
        while not stop_load.is_set():
            after = kill_done.is_set()
            code, body = p.post(v1(str(uuid.uuid4())))
            with lock:
                results.append(("after" if after else "load", code, answered_by_v2(body)))
        p.close()

    try:
        ths = [threading.Thread(target=held, args=(str(uuid.uuid4()),)) for _ in range(8)]
        for th in ths:
            th.start()
        t.require(v2.wait_requests(8, 10), "8 posts are with v2 (held) before the kill")
        loader = threading.Thread(target=load)
        loader.start()
        r = change(b, None, {})
        kill_done.set()
        d = bt.check_json_response(t, r, 200, "POST /cutover/kill")
        t.is_((d or {}).get("changed"), 2, "the kill switch changed both routes", r)
        gate.set()
        for th in ths:
            th.join(20)
        while True:
            with lock:
                n_after = sum(1 for x in results if x[0] == "after")
            if n_after >= 40 or not loader.is_alive():
                break
            time.sleep(0.01)
        stop_load.set()
        loader.join(20)
        held_r = [x for x in results if x[0] == "held"]
        after = [x for x in results if x[0] == "after"]
        t.is_(len(held_r), 8, "the held posts were answered", results[:10])
        t.ok(all(c == 200 and not by2 for _, c, by2 in held_r),
             "posts v2 held during the kill are answered by v1", held_r)
        t.ok(len(after) >= 40 and all(c == 200 and not by2 for _, c, by2 in after),
             "under load, no post started after the kill returned is answered by v2 (%d)"
             % len(after), [x for x in after if x[2]][:5])
        st = state_of(b, "other")
        t.is_((st.get("ramp"), st.get("status")), (0, "killed"), "every route is killed", st)
        lines = bt.wait_for(lambda: [x for x in b.log_records()
                                     if x.get("event") == "cutover_changed"], 5) or []
        t.is_(len(lines), 1, "one call, one log line", lines)
        t.ok(lines and lines[0].get("routes") == 2 and lines[0].get("level") == "warn",
             "... naming how many routes were killed", lines)
        t.is_(metric(b, 'webhook_bridge_cutover_killed{route="crm"}'), 1.0, "killed gauge")
        t.is_(metric(b, 'webhook_bridge_cutover_primary{route="crm",primary="v1"}'), 1.0,
              "primary v1 gauge")
    finally:
        gate.set()
        stop_load.set()
        finish([b], "kill", legacy, v2)


def t_rollback(_t):
    legacy, v2 = sinks()
    cut = {"ramp": 100, "rollback": {"max_failure_rate": 0.2, "window_s": 60, "min_posts": 10}}
    cfg = bt.config_text([dual_route("crm", legacy, v2, cut)], path="/hook", workers=1)
    b = bridge(cfg, "rollback")
    p = Poster(b.port)
    try:
        code, body = p.post(v1(str(uuid.uuid4())))
        t.ok(code == 200 and answered_by_v2(body), "ramp 100: v2 answers", body)
        v2.default = bt.Reply(500, body=b"down")
        answers, t0 = [], time.monotonic()
        for _ in range(30):
            answers.append(p.post(v1(str(uuid.uuid4()))))
        elapsed = time.monotonic() - t0
        failed = [a for a in answers if a[0] == 502]
        # min_posts 10: the first post (ok) and 9 failures make the window; the
        # 9th failure's post is answered by v1 already
        t.is_(len(failed), 8, "v2 failures answered 502 until the rollback", answers[:3])
        t.ok(all(a == (200, V1_BODY) for a in answers[len(failed):]),
             "after the rollback v1 answers", answers[len(failed):][:3])
        t.ok(elapsed < 60, "rolled back within the window (%.1f s of 60)" % elapsed)
        st = state_of(b, "crm")
        t.is_((st.get("ramp"), st.get("status")), (0, "rolled_back"), "ramp 0, rolled_back", st)
        t.is_(((st.get("rollback") or {}).get("last") or {}).get("v2_posts"), 10,
              "the console's state carries the figures", st)
        recs = bt.wait_for(lambda: [x for x in b.log_records()
                                    if x.get("event") == "cutover_rollback"], 5) or []
        t.ok(len(recs) == 1 and recs[0].get("level") == "error" and
             recs[0].get("v2_failed") == 9 and recs[0].get("v2_posts") == 10 and
             recs[0].get("old_ramp") == 100 and "v1_failure_rate" in recs[0],
             "logged once at error level with the figures", recs)
        t.is_(metric(b, 'webhook_bridge_cutover_rollbacks_total{route="crm"}'), 1.0,
              "the rollback is counted")
        for _ in range(5):
            p.post(v1(str(uuid.uuid4())))
        t.is_(state_of(b, "crm").get("status"), "rolled_back", "it stays rolled back")
        v2.default = bt.Reply(200)
        r = change(b, "crm", {"primary": "v2"})
        t.is_(r.status, 200, "an operator raises the ramp again", r)
        code, body = p.post(v1(str(uuid.uuid4())))
        t.ok(code == 200 and answered_by_v2(body), "... and v2 answers again", body)
        t.is_(state_of(b, "crm").get("status"), "ramping", "status back to ramping")
    finally:
        p.close()
        finish([b], "rollback", legacy, v2)


def t_persist(_t):
    legacy, v2 = sinks()
    state_dir = tmp.join("state")
    os.makedirs(state_dir, exist_ok=True)
    cfg = bt.config_text([dual_route("crm", legacy, v2, {"ramp": 30})], path="/hook",
                         workers=1)
    b = bt.Bridge(tmp, cfg, "persist.conf")
    b.env = dict(os.environ, STATE_DIRECTORY=state_dir)
    b.start()
    store = os.path.join(state_dir, "cutover.db")
    try:
        t.ok(os.path.exists(store), "without a queue the state lives in STATE_DIRECTORY/cutover.db")
        t.is_(oct(os.stat(store).st_mode & 0o777), "0o600", "state file is 0600")
        t.is_(change(b, "crm", {"ramp": 42}).status, 200, "ramp 42 through the API")
        b.proc.send_signal(signal.SIGHUP)
        t.ok(bt.wait_for(lambda: any(x.get("event") == "reloaded" for x in b.log_records()), 10),
             "reloaded")
        t.is_(state_of(b, "crm").get("ramp"), 42, "SIGHUP keeps the ramp (the config says 30)")
        env = dict(os.environ, STATE_DIRECTORY=state_dir)
        r = subprocess.run([bt.BRIDGE_BIN, "cutover", "--config", b.config_path, "crm",
                            "--ramp", "55"], env=env, capture_output=True, timeout=20)
        t.is_(r.returncode, 0, "cutover command: --ramp 55", r.stderr)
        t.like(r.stdout.decode(), r"crm: ramp 42 -> 55", "it says old -> new", r.stdout)
        t.ok(bt.wait_for(lambda: state_of(b, "crm").get("ramp") == 55, 5),
             "the running bridge follows the command within a second or so")
        recs = bt.wait_for(lambda: [x for x in b.log_records()
                                    if x.get("event") == "cutover_followed" and x.get("ramp") == 55],
                           5) or []
        t.ok(recs and recs[-1].get("ramp") == 55 and "cutover command" in recs[-1].get("by", ""),
             "... and logs who changed it", recs[-1:])
        r = subprocess.run([bt.BRIDGE_BIN, "cutover", "--config", b.config_path, "nope",
                            "--kill"], env=env, capture_output=True, timeout=20)
        t.is_(r.returncode, 1, "cutover command: an unknown route exits 1", r.stderr)
        r = subprocess.run([bt.BRIDGE_BIN, "cutover", "--config", b.config_path, "crm",
                            "--ramp", "101"], env=env, capture_output=True, timeout=20)
        t.is_(r.returncode, 2, "--ramp 101 is a usage error", r.stderr)
        rc = b.stop()
        t.is_(rc, 0, "stopped")
        b2 = bt.Bridge(tmp, cfg, "persist.conf")
        b2.env = env
        b2.start()
        try:
            t.is_(state_of(b2, "crm").get("ramp"), 55, "a restart keeps the ramp")
            r = subprocess.run([bt.BRIDGE_BIN, "cutover", "--config", b.config_path],
                               env=env, capture_output=True, timeout=20)
            t.like(r.stdout.decode(), r"crm: ramp 55% \(primary split\), ramping",
                   "cutover command shows the state", r.stdout)
        finally:
            bt.stop_and_check(t, b2, "restarted bridge")
    finally:
        finish([], "", legacy, v2)
        b.kill()


def follow_each_other(a, b, store):
    """A ramp change on bridge A is in force on B, B's kill on A."""
    t.is_(change(a, "crm", {"ramp": 100}).status, 200, "bridge A (%s): ramp 100" % store)
    t.ok(bt.wait_for(lambda: state_of(b, "crm").get("ramp") == 100, 5),
         "bridge B on the same store follows the same ramp")
    code, body = Poster(b.port).post(v1(str(uuid.uuid4())))
    t.ok(answered_by_v2(body), "... and routes by it: v2 answers on B", body)
    t.is_(change(b, None, {}).status, 200, "bridge B: kill")
    t.ok(bt.wait_for(lambda: state_of(a, "crm").get("status") == "killed", 5),
         "bridge A follows the kill")
    code, body = Poster(a.port).post(v1(str(uuid.uuid4())))
    t.is_(body, V1_BODY, "... and routes by it: v1 answers on A")


def t_two_instances(_t):
    legacy, v2 = sinks()
    cfg = bt.config_text([dual_route("crm", legacy, v2, {"ramp": 0})], path="/hook",
                         workers=1)
    env = state_env("two")
    a = bridge(cfg, "two-a", env)
    b = bridge(cfg, "two-b", env)
    try:
        t.is_(admin_json(a, "/cutover").get("store"), admin_json(b, "/cutover").get("store"),
              "both instances use one state store")
        follow_each_other(a, b, "SQLite")
    finally:
        finish([a, b], "instance", legacy, v2)


def t_shared_pg(_t):
    pg = bt.PgCluster().start()
    legacy, v2 = sinks()
    a = b = None
    try:
        cfg = bt.config_text([dual_route("crm", legacy, v2, {"ramp": 0})], path="/hook",
                             workers=1, shared={"url": pg.url})
        a = bridge(cfg, "pg-a")
        b = bridge(cfg, "pg-b")
        follow_each_other(a, b, "PostgreSQL")
    finally:
        finish([x for x in (a, b) if x], "pg", legacy, v2)
        pg.cleanup()


def t_reload_adds(_t):
    legacy, v2 = sinks()
    env = state_env("reload-adds")
    store = os.path.join(env["STATE_DIRECTORY"], "cutover.db")
    fwd = bt.config_text([bt.route("crm", "forward", endpoint=v2.url("/v2"), secret="s")],
                         path="/hook", workers=1)
    b = bridge(fwd, "reload-adds", env)
    try:
        t.ok(not os.path.exists(store), "a config without dual routes writes no state file")
        with open(b.config_path, "w") as f:
            f.write(bt.config_text([dual_route("crm", legacy, v2, {"ramp": 5})], path="/hook",
                                   workers=1))
        b.proc.send_signal(signal.SIGHUP)
        t.ok(bt.wait_for(lambda: any(x.get("event") == "reloaded" for x in b.log_records()), 10),
             "reloaded with a dual route")
        t.ok(os.path.exists(store), "the reload opened the state store")
        t.is_(state_of(b, "crm").get("ramp"), 5, "the dual route starts at its config's ramp")
        t.is_(change(b, "crm", {"ramp": 15}).status, 200, "ramp 15")
        r = subprocess.run([bt.BRIDGE_BIN, "cutover", "--config", b.config_path], env=env,
                           capture_output=True, timeout=20)
        t.like(r.stdout.decode(), r"crm: ramp 15%", "the change is in the store", r.stdout)
    finally:
        finish([b], "reload-adds", legacy, v2)


def t_refusals(_t):
    legacy, v2 = sinks()
    cfg = bt.config_text([dual_route("crm", legacy, v2, {}),
                          bt.route("fwd", "forward", endpoint=v2.url("/v2"), secret="s",
                                   match={"website_id": [5]}, delivery="queued")],
                         path="/hook", workers=1, queue={"path": tmp.join("refuse-queue.db")})
    b = bridge(cfg, "refuse")
    try:
        t.ok(admin_json(b, "/cutover").get("store", "").endswith("refuse-queue.db"),
             "with a queue the state lives in the queue's store")
        url = b.admin_url("/cutover/crm")
        tok = token(b)
        t.ok(len(tok) == 32, "GET /cutover gives a token", tok)
        body = b'{"ramp":10}'
        r = bt.curl(url, body, method="POST")
        bt.check_json_response(t, r, 403, "POST without the token", error="cross_site")
        r = bt.curl(url, body, method="POST", headers=["X-Bridge-Token: " + tok,
                                                       "Sec-Fetch-Site: cross-site"])
        bt.check_json_response(t, r, 403, "Sec-Fetch-Site: cross-site", error="cross_site")
        r = bt.curl(url, body, method="POST", headers=["X-Bridge-Token: " + tok,
                                                       "Origin: http://evil.example"])
        bt.check_json_response(t, r, 403, "another Origin", error="cross_site")
        r = bt.curl(url, body, method="POST", content_type="text/plain",
                    headers=["X-Bridge-Token: " + tok])
        bt.check_json_response(t, r, 403, "a text/plain body", error="cross_site")
        t.is_(state_of(b, "crm").get("ramp"), 0, "nothing refused changed the ramp")
        r = bt.curl(url, b'{"ramp":101}', method="POST", headers=["X-Bridge-Token: " + tok])
        bt.check_json_response(t, r, 400, "ramp 101", error="bad_request")
        r = bt.curl(url, b'{"ramp":1,"kill":true}', method="POST",
                    headers=["X-Bridge-Token: " + tok])
        bt.check_json_response(t, r, 400, "two changes at once", error="bad_request")
        r = bt.curl(url, b'{"ramp":', method="POST", headers=["X-Bridge-Token: " + tok])
        bt.check_json_response(t, r, 400, "broken JSON", error="invalid_json")
        r = bt.curl(b.admin_url("/cutover/fwd"), body, method="POST",
                    headers=["X-Bridge-Token: " + tok])
        bt.check_json_response(t, r, 404, "a forward route has no cutover", error="no_such_route")
        r = bt.curl(url, method="GET")
        bt.check_json_response(t, r, 405, "GET /cutover/crm", error="method_not_allowed")
        r = bt.curl(url, body, method="POST", headers=["X-Bridge-Token: " + tok,
                                                       "Origin: http://127.0.0.1:%d"
                                                       % b.admin_port,
                                                       "Sec-Fetch-Site: same-origin"])
        t.is_(r.status, 200, "same origin with the token: accepted", r)
        r = bt.run_cli(["check", "--config", b.config_path])
        t.like(r.stdout, r"route crm: dual, .*cutover: initial ramp 0%, copy on, rolls back over "
               r"0\.05 in 300 s \(at least 20 posts\)", "check shows the cutover's settings",
               r.stdout)
        bad = bt.config_text([bt.route("f", "forward", endpoint=v2.url("/v2"), secret="s",
                                       cutover={"ramp": 10})])
        r = bt.run_cli(["check", "--config", tmp.file("bad-cutover.conf", bad)])
        t.ok(r.rc == 1 and "cutover needs mode = \"dual\"" in r.stderr,
             "check: cutover on a forward route is refused with file:line", r.stderr)
        bad = bt.config_text([dual_route("d", legacy, v2, {"ramp": 120,
                                                           "rollback": {"max_failure_rate": 2}})])
        r = bt.run_cli(["check", "--config", tmp.file("bad-ramp.conf", bad)])
        t.ok(r.rc == 1 and "'ramp' = 120 is out of range" in r.stderr and
             "'max_failure_rate' = 2 is out of range" in r.stderr,
             "check: ramp and rate out of range", r.stderr)
    finally:
        finish([b], "refusals", legacy, v2)


try:
    for name, fn in [("sticky split", t_sticky), ("kill switch under load", t_kill),
                     ("automatic rollback", t_rollback), ("restart and SIGHUP", t_persist),
                     ("two instances", t_two_instances),
                     ("two bridges on the shared PostgreSQL store", t_shared_pg), ("reload adds a dual route", t_reload_adds),
                     ("refusals", t_refusals)]:
        t.run(name, fn)
finally:
    tmp.cleanup()
t.done()
