#!/usr/bin/python3
"""Several bridges on one PostgreSQL (the `shared` group), against a private
cluster this program starts and stops: `check` names the database and its
schema version, bridges starting together migrate it once, a repeated post
through another bridge is a duplicate, a participation's INCOMPLETE reaches
the endpoint before its COMPLETE whichever bridges took them, a killed
bridge's deliveries are made by another once their lease expired, the
`queue` command works on the shared store while the bridges run, and the
multi-instance crash test: three bridges, clients spreading participations
over them, the endpoint alternating up / 500 / down, a random bridge
SIGKILLed and restarted every few seconds and PostgreSQL itself restarted
once; then everything drains and lost = 0, out of order = 0.

    tests/test_shared.py                                the suite (crash test: 20 s)
    tests/test_shared.py --soak SECONDS KILLS [BURST]   only the crash test, longer
                                                        (tests/crash.sh --shared); BURST 1:
                                                        then 10 s at 100x the steady rate
"""

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402
import test_queue as tq  # noqa: E402

PG = None
LEASE_MS = 2000
SCHEMA = 4  # the shared store's schema version this build writes


def shared_config(url, routes, instance, port=0, **queue):
    q = dict(tq.FAST_QUEUE)
    q.update(queue)
    return bt.config_text(routes, port=port, queue=q, workers=2,
                          shared={"url": url, "lease_ms": LEASE_MS, "instance": instance})


def delivery_ids(sink):
    return [x.header("X-Bridge-Delivery-Id") for x in list(sink.requests)]


# --------------------------------------------------------------------------
# configuration and check
# --------------------------------------------------------------------------

def t_check(t, tmp):
    url = PG.database("chk")
    route = tq.queued_route("q", "http://127.0.0.1:9/x")
    path = tmp.file("chk.conf", shared_config(url, [route], "a"))
    r = bt.run_cli(["check", "--config", path], t=t)
    t.is_(r.rc, 0, "check: a shared group and a queued route without queue.path", repr(r))
    t.like(r.stdout, r"shared postgresql://bridge@/chk\?host=\S+: reachable, no schema yet",
           "check: reachable, no schema yet")
    b = bt.Bridge(tmp, shared_config(url, [route], "a"), "chk-serve.conf").start()
    bt.stop_and_check(t, b)
    r = bt.run_cli(["check", "--config", path], t=t)
    t.like(r.stdout, r"reachable, schema version %d, instance a" % SCHEMA,
           "check after serve: version %d" % SCHEMA)
    t.is_(PG.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version",
                  db="chk"), ",".join(str(v) for v in range(1, SCHEMA + 1)),
          "schema_version: every version applied in turn")
    gone = tmp.file("gone.conf", shared_config(
        "postgresql://bridge@/chk?host=" + tmp.join("nothing-here"), [route], "a"))
    r = bt.run_cli(["check", "--config", gone], t=t)
    t.ok(r.rc == 1 and "unreachable" in r.stderr, "check: unreachable database is an error",
         repr(r))
    bad = tmp.file("pw.conf", shared_config("postgresql://bridge:hunter2@/chk?host=/tmp",
                                            [route], "a"))
    r = bt.run_cli(["check", "--config", bad], t=t)
    t.ok(r.rc == 1 and "password_file" in r.stderr and "hunter2" not in r.stderr,
         "a password inside the URL is refused (without printing it)", repr(r))
    bad = tmp.file("nourl.conf", bt.config_text([route], shared={"connections": 4}))
    r = bt.run_cli(["check", "--config", bad], t=t)
    t.ok(r.rc == 1 and "'shared' needs a 'url'" in r.stderr, "shared without url", repr(r))
    bad = tmp.file("badconn.conf", bt.config_text([route], shared={"url": url,
                                                                   "connections": 1000}))
    r = bt.run_cli(["check", "--config", bad], t=t)
    t.ok(r.rc == 1 and "connections" in r.stderr, "connections out of range", repr(r))
    pw = tmp.file("pg.password", "not-needed\n")
    ok_pw = tmp.file("pwfile.conf", bt.config_text([route], shared={
        "url": url, "password_file": pw, "instance": "a"}))
    r = bt.run_cli(["check", "--config", ok_pw], t=t)
    t.is_(r.rc, 0, "password_file accepted", repr(r))


def t_start_together(t, tmp, doc):
    """Three bridges on an empty database at once: one migrates, all serve."""
    url = PG.database("together")
    sink = bt.Sink()
    bridges = []
    try:
        for name in "abc":
            b = bt.Bridge(tmp, shared_config(url, [tq.queued_route("q", sink.url("/t"))], name),
                          "together-%s.conf" % name)
            bridges.append(b)
        errors = []

        def start(b):
            try:
                b.start(timeout=30)
            except bt.TestFailure as e:
                errors.append(str(e))
        ths = [threading.Thread(target=start, args=(b,)) for b in bridges]
        for th in ths:
            th.start()
        for th in ths:
            th.join(60)
        t.is_(errors, [], "three bridges started together on an empty database")
        t.is_(PG.psql("SELECT count(*) FROM schema_version", db="together"), str(SCHEMA),
              "the schema was created once (one row per version)")
        r = bt.curl(bridges[2].url("/"), tq.v1_post(doc, str(uuid.uuid4())))
        t.is_(r.status, 202, "and takes posts", repr(r))
        t.ok(sink.wait_requests(1, 10), "delivered")
    finally:
        for b in bridges:
            if b.proc:
                bt.stop_and_check(t, b)
        sink.stop()


def t_dedup_and_order(t, tmp, doc):
    url = PG.database("dedup")
    sink = bt.Sink()
    sink.default = bt.Reply(500)
    a = b = None
    try:
        a = bt.Bridge(tmp, shared_config(url, [tq.queued_route("q", sink.url("/d"))], "a",
                                         backoff_base_ms=300, backoff_max_ms=300),
                      "dedup-a.conf").start()
        b = bt.Bridge(tmp, shared_config(url, [tq.queued_route("q", sink.url("/d"))], "b",
                                         backoff_base_ms=300, backoff_max_ms=300),
                      "dedup-b.conf").start()
        pid = str(uuid.uuid4())
        inc = tq.v1_post(doc, pid, "incomplete")
        comp = tq.v1_post(doc, pid, "complete")
        r1 = bt.curl(a.url("/"), inc)
        t.require(r1.status == 202, "INCOMPLETE queued through a", repr(r1))
        r2 = bt.curl(b.url("/"), inc)
        j1, j2 = r1.json(), r2.json()
        t.is_(j2.get("status"), "duplicate", "the same post through b: duplicate", repr(r2))
        t.is_(j2.get("delivery_id"), j1.get("delivery_id"), "with the first delivery id")
        t.is_(j2.get("queue_id"), j1.get("queue_id"), "naming the first row")
        r3 = bt.curl(b.url("/"), comp)
        t.is_(r3.status, 202, "COMPLETE queued through b", repr(r3))
        t.require(sink.wait_requests(2, 10), "the INCOMPLETE is being attempted (500s)")
        ids = delivery_ids(sink)
        t.ok(j1["delivery_id"] in ids and r3.json()["delivery_id"] not in ids,
             "while the INCOMPLETE fails, the COMPLETE is not sent by either bridge")
        sink.default = bt.Reply(200)
        t.ok(bt.wait_for(lambda: r3.json()["delivery_id"] in delivery_ids(sink), 15),
             "both delivered once the endpoint is up")
        ids = delivery_ids(sink)
        last_inc = max(i for i, d in enumerate(ids) if d == j1["delivery_id"])
        first_comp = ids.index(r3.json()["delivery_id"])
        t.ok(last_inc < first_comp, "the COMPLETE went out after the INCOMPLETE was accepted",
             repr(ids))
        t.is_(ids.count(j1["delivery_id"]) >= 1 and ids.count(r3.json()["delivery_id"]), 1,
              "the COMPLETE was sent once")
        # queue command on the shared store, bridges running
        st = tq.queue_cli(a.config_path, "stats", t=t)
        t.ok(st.rc == 0 and "webhook_bridge_queue_depth" in st.stdout,
             "queue stats on the shared store while the bridges run", repr(st))
        t.ok(bt.wait_for(lambda: "webhook_bridge_queue_depth 0\n" in tq.queue_cli(
            a.config_path, "stats").stdout, 10), "stats: depth 0 once both outcomes are stored")
    finally:
        for x in (a, b):
            if x:
                bt.stop_and_check(t, x)
        sink.stop()


def t_killed_bridge(t, tmp, doc):
    """a takes posts while the endpoint is down and is SIGKILLed; b delivers
    them once their lease expired."""
    url = PG.database("killed")
    ep = tq.FlakyEndpoint()
    ep.set_mode("down")
    a = b = None
    try:
        route = [tq.queued_route("q", ep.url(), timeout_ms=1000)]
        a = bt.Bridge(tmp, shared_config(url, route, "a", max_attempts=1000,
                                         backoff_base_ms=200, backoff_max_ms=200),
                      "killed-a.conf").start()
        acked = []
        for _ in range(10):
            r = bt.curl(a.url("/"), tq.v1_post(doc, str(uuid.uuid4())))
            if r.status == 202:
                acked.append(r.json()["delivery_id"])
        t.is_(len(acked), 10, "10 posts acknowledged by a")
        a.kill()
        b = bt.Bridge(tmp, shared_config(url, route, "b", max_attempts=1000,
                                         backoff_base_ms=200, backoff_max_ms=200),
                      "killed-b.conf").start()
        ep.set_mode("up")

        def delivered():
            with ep.lock:
                return set(acked) <= set(r[0] for r in ep.records if r[3] == 200)
        t.ok(bt.wait_for(delivered, LEASE_MS / 1000.0 + 20), "b delivered every post a took")
        t.ok(bt.wait_for(lambda: "webhook_bridge_queue_depth 0" in tq.queue_cli(
            b.config_path, "stats").stdout, 10), "queue stats: nothing left")
    finally:
        if b:
            bt.stop_and_check(t, b)
        if a:
            a.kill()
        ep.stop()


# --------------------------------------------------------------------------
# shadow comparison across bridges
# --------------------------------------------------------------------------

SHADOW_SECRET = "shadow-secret"


def t_shadow(t, tmp, doc):
    """v1 through a, its real v2 through b, and the other way round: one
    comparison each; the expiry swept once; /dry-run/summary the cluster's
    on either bridge; report lines name their bridge; `report` reads both."""
    url = PG.database("shadow")
    bridges = {}
    reports = {}
    try:
        for name in "ab":
            reports[name] = tmp.join("shadow-%s.jsonl" % name)
            cfg = bt.config_text(
                [bt.route("shadow", "dry-run", secret=SHADOW_SECRET)], path="/hook", workers=2,
                dry_run={"report": reports[name], "v2_path": "/v2", "window_s": 3},
                shared={"url": url, "instance": name})
            bridges[name] = bt.Bridge(tmp, cfg, "shadow-%s.conf" % name).start()
        a, b = bridges["a"], bridges["b"]

        def real(pid, **change):
            v1 = bt.v1_variant(doc, participation_id=pid)
            v2 = json.loads(bt.map_output(tmp.file("sh-%s.json" % pid, v1.decode())).stdout)
            v2.update(change)
            return json.dumps(v2, separators=(",", ":")).encode()

        def post_real(bridge, body):
            return bt.curl(bridge.url("/v2"), body, headers=[
                "X-Qualifio-Signature: sha256=" + bt.hmac_hex(SHADOW_SECRET, body)])

        # v1 to a, real v2 to b
        p1 = str(uuid.uuid4())
        r = bt.curl(a.url("/hook"), bt.v1_variant(doc, participation_id=p1))
        t.is_(r.status, 200, "v1 through a (dry-run)", r)
        r = post_real(b, real(p1))
        d = r.json() or {}
        t.is_(d.get("status"), "compared", "its real v2 through b: compared there", d)
        t.is_((d.get("comparison") or {}).get("status"), "identical", "identical", d)
        # real v2 to a first, v1 to b, differing in campaign.name
        p2 = str(uuid.uuid4())
        body = json.loads(real(p2))
        body["campaign"]["name"] = "Renamed in Qualifio"
        r = post_real(a, json.dumps(body, separators=(",", ":")).encode())
        t.is_((r.json() or {}).get("status"), "waiting", "real v2 through a: waits", r)
        r = bt.curl(b.url("/hook"), bt.v1_variant(doc, participation_id=p2))
        t.is_(r.status, 200, "its v1 through b", r)
        # a real v2 that no translation meets: swept once, by one bridge
        p3 = str(uuid.uuid4())
        post_real(b, real(p3))

        def expired_lines():
            return [line for x in (a, b) for line in x.err_lines
                    if '"shadow_expired"' in line and p3.upper() in line]
        t.ok(bt.wait_for(lambda: expired_lines(), 10), "the unmatched real v2 expires")
        sums = [bt.curl(x.admin_url("/dry-run/summary")).json() or {} for x in (a, b)]
        for name, sm in zip("ab", sums):
            t.is_((sm.get("matched"), sm.get("identical"), sm.get("different")), (2, 1, 1),
                  "/dry-run/summary on %s: the cluster's 2 matched, 1 identical, 1 different"
                  % name, sm)
            t.is_((sm.get("expired") or {}).get("real"), 1, "%s: 1 real v2 expired" % name, sm)
            t.is_(sm.get("seen"), {"translated": 2, "real": 3}, "%s: seen on both" % name, sm)
        t.ok("campaign.name" in [x.get("path") for x in sums[0].get("top_paths", [])],
             "the differing path, counted once for the cluster", sums[0])
    finally:
        for x in bridges.values():
            bt.stop_and_check(t, x)
    t.is_(len(expired_lines()), 1, "swept by one bridge only: one shadow_expired line in all "
          "(both swept every second until they stopped)", expired_lines())
    lines = {n: [json.loads(line) for line in open(reports[n], encoding="utf-8")]
             for n in reports}
    t.ok(all(x.get("instance") == n for n in lines for x in lines[n]),
         "every report line names the bridge that wrote it")
    cmp = [x for n in lines for x in lines[n] if x.get("comparison")]
    t.is_(len(cmp), 2, "two comparisons in the reports, one per participation", cmp)
    r = bt.run_cli(["report", "--json", reports["a"], reports["b"]])
    rep = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
    t.is_((rep.get("matched"), rep.get("identical"), rep.get("different")), (2, 1, 1),
          "report reads both files as one", rep)
    t.is_(r.rc, 1, "report: exit 1 (one participation differs)", r)


# --------------------------------------------------------------------------
# the cutover state of dual routes, shared
# --------------------------------------------------------------------------

def t_cutover(t, tmp, doc):
    """A ramp changed on one bridge (admin API) is followed by the other; the
    cutover command changes it for both; a bridge started later takes the
    stored ramp, not its config's."""
    url = PG.database("cutover")
    legacy, v2 = bt.Sink(), bt.Sink()
    legacy.default = bt.Reply(200, body=b'{"ok":"v1"}')
    route = bt.route("crm", "dual", endpoint=v2.url("/v2"), legacy_endpoint=legacy.url("/v1"),
                     secret="s", timeout_ms=5000, cutover={"ramp": 10})
    bridges = {}

    def state(b):
        d = bt.curl(b.admin_url("/cutover")).json() or {}
        return next((r for r in d.get("routes", []) if r.get("route") == "crm"), {})

    def change(b, payload):
        tok = (bt.curl(b.admin_url("/cutover")).json() or {}).get("csrf_token", "")
        return bt.curl(b.admin_url("/cutover/crm"), json.dumps(payload).encode(), method="POST",
                       headers=["X-Bridge-Token: " + tok])
    try:
        for name in "ab":
            bridges[name] = bt.Bridge(tmp, bt.config_text(
                [route], path="/hook", workers=1, shared={"url": url, "instance": name}),
                "cut-%s.conf" % name).start()
        a, b = bridges["a"], bridges["b"]
        t.is_((state(a).get("ramp"), state(b).get("ramp")), (10, 10),
              "both start at the config's ramp, stored once")
        t.is_(change(a, {"ramp": 40}).status, 200, "ramp 40 through a's admin API")
        t.ok(bt.wait_for(lambda: state(b).get("ramp") == 40, 5),
             "b follows within a second or so", state(b))
        t.ok(any(x.get("event") == "cutover_followed" and x.get("ramp") == 40
                 for x in b.log_records()), "b logs cutover_followed")
        r = bt.run_cli(["cutover", "--config", b.config_path, "crm", "--ramp", "70"], t=t)
        t.is_(r.rc, 0, "the cutover command on the shared store", r)
        t.ok(bt.wait_for(lambda: state(a).get("ramp") == 70 and state(b).get("ramp") == 70, 5),
             "both bridges follow the command")
        bridges["c"] = bt.Bridge(tmp, bt.config_text(
            [route], path="/hook", workers=1, shared={"url": url, "instance": "c"}),
            "cut-c.conf").start()
        t.is_(state(bridges["c"]).get("ramp"), 70,
              "a bridge started later takes the stored ramp (its config says 10)")
        t.is_(PG.psql("SELECT ramp FROM cutover_state WHERE route = 'crm'", db="cutover"), "70",
              "the state is one row of cutover_state")
    finally:
        for x in bridges.values():
            bt.stop_and_check(t, x)
        legacy.stop()
        v2.stop()


# --------------------------------------------------------------------------
# the multi-instance crash test
# --------------------------------------------------------------------------

class MultiCrashRun(tq.CrashRun):
    NAMES = ("a", "b", "c")

    def __init__(self, tmp, doc, duration, kills, burst=False):
        super().__init__(tmp, doc, duration, kills, posters=4)
        self.url = None
        self.ports = {n: bt.refused_port() for n in self.NAMES}
        self.bridges = {}
        self.burst = burst
        self.pg_restarts = 0
        self.rate = None  # posts/s per poster while steady; None: as fast as answered
        self.burst_figures = None

    def config_for(self, name):
        route = tq.queued_route("crash", self.endpoint.url(), timeout_ms=2000)
        return shared_config(self.url, [route], name, port=self.ports[name],
                             max_attempts=1000, max_age_s=3600, backoff_base_ms=50,
                             backoff_max_ms=500)

    def start_one(self, name):
        b = bt.Bridge(self.tmp, self.config_for(name), "crash-%s.conf" % name)
        b.start(timeout=30)
        self.bridges[name] = b

    def kill_one(self, name):
        self.kill_bridge(self.bridges.pop(name))

    def target_port(self):
        return self.ports[random.choice(self.NAMES)]

    def poster(self, seed):
        """As CrashRun's, every participation an INCOMPLETE then a COMPLETE,
        paced at self.rate posts/s when it is set."""
        rnd = random.Random(seed)
        while not self.stop_posting.is_set():
            pid = str(uuid.uuid4())
            ids = []
            for st in ("incomplete", "complete"):
                got = self.post_until_acked(tq.v1_post(self.doc, pid, st), 200)
                if not got:
                    break
                with self.lock:
                    self.acked[got["delivery_id"]] = (pid.upper(), st)
                ids.append(got["delivery_id"])
                rate = self.rate
                if rate:
                    time.sleep(rnd.expovariate(rate))
            if len(ids) == 2:
                with self.lock:
                    self.pairs.append((ids[0], ids[1]))

    def run(self, t):
        self.url = PG.database("crash")
        self.endpoint.set_mode("up")
        for n in self.NAMES:
            self.start_one(n)
        threads = [threading.Thread(target=self.poster, args=(i,), daemon=True)
                   for i in range(self.posters)]
        threads.append(threading.Thread(target=self.switcher, daemon=True))
        if self.burst:
            self.rate = 2.0  # steady: 4 posters x 2 posts/s = 8 posts/s
        for th in threads:
            th.start()
        t0 = time.monotonic()
        rnd = random.Random(13)
        slot = self.duration / (self.kills_wanted + 1)
        pg_at = t0 + self.duration / 2
        for k in range(self.kills_wanted):
            target = t0 + slot * (k + 1) + rnd.uniform(-0.3, 0.3) * slot
            while time.monotonic() < target:
                if not self.pg_restarts and time.monotonic() >= pg_at:
                    PG.restart("immediate")  # mid-run, once: crash recovery
                    self.pg_restarts += 1
                time.sleep(min(0.1, max(0.0, target - time.monotonic())))
            name = rnd.choice(self.NAMES)
            self.kill_one(name)
            time.sleep(rnd.uniform(0.0, 0.5))
            self.start_one(name)
        while time.monotonic() < t0 + self.duration:
            if not self.pg_restarts and time.monotonic() >= pg_at:
                PG.restart("immediate")
                self.pg_restarts += 1
            time.sleep(0.1)
        if self.burst:
            self.burst_phase(t)
        elapsed, finished = self.drain(threads, t0, 180 if self.duration > 30 else 90)
        stats = tq.wait_store_empty(t, self.bridges["a"].config_path)
        rcs = []
        for n in self.NAMES:
            b = self.bridges[n]
            rcs.append(b.stop())
            self.stderr.append(b.stderr)
        t.ok(self.pg_restarts == 1, "PostgreSQL restarted once mid-run (immediate shutdown)")
        summary = self.report(t, elapsed, finished, stats, 0 if rcs == [0, 0, 0] else rcs)
        if self.burst_figures:
            t.diag(self.burst_figures)
        return summary

    def burst_phase(self, t):
        """10 s at 100x the steady rate (8 -> 800 posts/s offered) across the
        three bridges, by tests/loadgen.c (open loop: a new connection every
        1.25 ms, whatever the answers); what they acknowledged is checked
        with the rest."""
        self.endpoint.set_mode("up")
        body = self.tmp.file("burst-body.json",
                             tq.v1_post(self.doc, "@PID@", "complete").decode())
        answers = self.tmp.join("burst-answers.txt")
        loadgen = os.environ.get("BRIDGE_LOADGEN", os.path.join(bt.BUILD_ROOT, "tests",
                                                                 "loadgen"))
        ports = ",".join(str(self.ports[n]) for n in self.NAMES)
        t0 = time.monotonic()
        r = subprocess.run([loadgen, "--rate", "800", "--seconds", "10", "--ports", ports,
                            "--body", body, "--out", answers], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        dt = time.monotonic() - t0
        line = r.stdout.decode(errors="replace").strip()
        t.is_(r.returncode, 0, "loadgen ran", r.stderr.decode(errors="replace"))
        offered = acked = late = 0
        statuses = {}
        with open(answers, encoding="utf-8") as f:
            for rec in f:
                status, pid, did = rec.split()
                statuses[status] = statuses.get(status, 0) + 1
                offered += 1
                if status == "202" and did != "-":
                    acked += 1
                    with self.lock:
                        self.acked[did] = (pid, "complete")
                elif status not in ("202", "503", "0"):
                    with self.lock:
                        self.other_status.append(int(status))
        m = re.search(r"late (\d+)", line)
        late = int(m.group(1)) if m else -1
        with self.lock:
            self.posted += offered
        self.burst_figures = ("burst: %.1f s at 100x the steady rate over 3 bridges "
                              "(tests/loadgen.c, open loop): offered %d (%.0f/s, %d late by "
                              "over 50 ms), acknowledged %d (%.0f/s), answers %s"
                              % (dt, offered, offered / 10.0, late, acked, acked / 10.0,
                                 " ".join("%s:%d" % kv for kv in sorted(statuses.items()))))
        t.ok(offered >= 7600 and 0 <= late <= offered // 10,
             "burst: 800 posts/s really offered (%d in 10 s, %d late)" % (offered, late), line)
        t.ok(acked > 0, "burst: posts acknowledged (%d)" % acked)


def t_crash(t, tmp, doc, duration, kills, burst=False):
    MultiCrashRun(tmp, doc, duration, kills, burst).run(t)


def run(t, pg, tmp, doc):
    global PG
    PG = tq.PG = pg
    soak = bt.soak_args(120.0, 12)
    if soak:
        duration, kills, rest = soak
        t.run("multi-instance crash soak", t_crash, tmp, doc, duration, kills,
              rest[:1] == ["1"])
        return
    t.run("check and config", t_check, tmp)
    t.run("bridges starting together", t_start_together, tmp, doc)
    t.run("dedup and order across bridges", t_dedup_and_order, tmp, doc)
    t.run("a killed bridge's deliveries", t_killed_bridge, tmp, doc)
    t.run("shadow comparison across bridges", t_shadow, tmp, doc)
    t.run("cutover state across bridges", t_cutover, tmp, doc)
    t.run("multi-instance crash", t_crash, tmp, doc, 20.0, 4)


if __name__ == "__main__":
    bt.pg_main(run)
