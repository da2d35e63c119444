#!/usr/bin/python3
"""Queued delivery end to end: `serve` with a route in delivery = "queued"
against real loopback endpoints, the `queue` command on the live store, the
503 answers when nothing can be stored, and a crash test: posts keep coming
while the endpoint alternates between up, 500 and down and the bridge is
killed with SIGKILL and restarted; at the end every participation that got
a 202 must have reached the endpoint (lost = 0).

    tests/test_queue.py                       the suite (short crash test: 10 s, 3 kills)
    tests/test_queue.py --soak SECONDS KILLS  only the crash test, longer (tests/crash.sh)

tests/test_queue_pg.py runs the same suite on the PostgreSQL engine (a
`shared` group instead of queue.path, one database per store name).
"""

import http.client
import http.server
import json
import os
import random
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

SECRET = "s3cret"
FAST_QUEUE = {"backoff_base_ms": 50, "backoff_max_ms": 400}


def queued_route(name, endpoint, **kw):
    r = bt.route(name, "forward", endpoint=endpoint, secret=SECRET, delivery="queued",
                 auth_header={"name": "Authorization", "value": "Bearer tok-queued"})
    r.update(kw)
    return r


# The PostgreSQL cluster when the suite runs on the shared engine
# (tests/test_queue_pg.py), else None: SQLite.
PG = None
_pg_urls = {}


def queue_config(tmp, routes, port=0, store="queue.db", **queue):
    q = {"path": store}
    q.update(FAST_QUEUE)
    q.update(queue)
    if PG is None:
        return bt.config_text(routes, port=port, queue=q, workers=2)
    del q["path"]
    name = store.rsplit(".", 1)[0]
    if name not in _pg_urls:
        _pg_urls[name] = PG.database("q_" + name)
    return bt.config_text(routes, port=port, queue=q, workers=2,
                          shared={"url": _pg_urls[name], "lease_ms": 3000})


def v1_post(doc, pid, state="complete"):
    changes = {"participation_id": pid, "status": state}
    if state == "incomplete":
        changes["date_participation"] = None
    return bt.v1_variant(doc, **changes)


def queue_cli(config_path, *args, t=None):
    return bt.run_cli(["queue", "--config", config_path] + list(args), t=t)


metric = bt.metric


# --------------------------------------------------------------------------
# is delivery = "queued" wired into config and server?
# --------------------------------------------------------------------------

def wait_store_empty(t, config_path, timeout=30):
    """Rows the acknowledged set does not cover drain after it: a post committed whose 202
    was lost with its bridge, or a row leased by the bridge killed last (its lease expires
    after lease_ms). Wait for the store to empty, within a bound; the last `queue stats`."""
    last = {}

    def store_empty():
        last["stats"] = queue_cli(config_path, "stats").stdout
        return "webhook_bridge_queue_depth 0" in last["stats"]
    waited = time.monotonic()
    bt.wait_for(store_empty, timeout, step=0.5)
    t.diag("store empty %.1f s after the acknowledged set was delivered"
           % (time.monotonic() - waited))
    return last["stats"]


def t_wired(t, tmp):
    path = tmp.file("wired.conf", queue_config(tmp, [queued_route("q", "http://127.0.0.1:9/x")]))
    r = bt.run_cli(["check", "--config", path], t=t)
    t.require(r.rc == 0, "the config accepts delivery = \"queued\" and a queue group", repr(r))
    bad = tmp.file("unwired.conf", bt.config_text([queued_route("q", "http://127.0.0.1:9/x")]))
    r = bt.run_cli(["check", "--config", bad], t=t)
    t.ok(r.rc == 1 and "queue" in r.stderr, "a queued route without a queue group is an error",
         repr(r))


def t_basic(t, tmp, doc):
    sink = bt.Sink()
    try:
        cfg = queue_config(tmp, [queued_route("q", sink.url("/hook")),
                                 bt.route("f", "forward", endpoint=sink.url("/fwd"), secret=SECRET,
                                          match={"campaign_id": [777]})], store="basic.db")
        b = bt.Bridge(tmp, cfg, "basic.conf").start()
        try:
            pid = str(uuid.uuid4())
            body = v1_post(doc, pid)
            r = bt.curl(b.url("/"), body)
            got = bt.check_json_response(t, r, 202, "queued post")
            t.ok(got and got.get("status") == "queued" and isinstance(got.get("queue_id"), int),
                 "status queued with its queue id", repr(r))
            t.require(sink.wait_requests(1, 10), "delivered to the endpoint")
            rec = sink.requests[0]
            t.is_(rec.path, "/hook", "endpoint path")
            t.is_(rec.header("X-Bridge-Delivery-Id"), got and got.get("delivery_id"),
                  "the delivery id of the 202")
            t.is_(rec.header("X-Qualifio-Signature"), "sha256=" + bt.hmac_hex(SECRET, rec.body),
                  "signed over the exact body")
            t.is_(rec.header("Authorization"), "Bearer tok-queued", "auth header")
            mapped = subprocess.run([bt.BRIDGE_BIN, "map", "--mapping", bt.MAPPING],
                                    input=body, stdout=subprocess.PIPE).stdout
            t.is_(rec.body, mapped.rstrip(b"\n"), "body = what `map` prints")
            t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_delivered_total") == 1, 5),
                 "/metrics: delivered_total 1")
            t.is_(metric(b, "webhook_bridge_queue_depth"), 0.0, "/metrics: depth 0")
            r = bt.curl(b.url("/"), bt.v1_variant(doc, participation_id=str(uuid.uuid4()),
                                                  campaign_id=777))
            t.ok(r.status == 200 and r.json().get("status") == "delivered",
                 "a forward route in the same config still answers with the endpoint's outcome",
                 repr(r))
        finally:
            bt.stop_and_check(t, b)
    finally:
        sink.stop()


def thread_nices(pid):
    """{thread name: set of nice values} of a running process, from /proc."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                name = f.read().strip()
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended
        # after "(comm) " come the fields from the state (3rd) on; nice is the 19th
        out.setdefault(name, set()).add(int(stat[stat.rindex(")") + 2:].split()[16]))
    return out


def t_priority(t, tmp, doc):
    sink = bt.Sink()
    try:
        for setting, delta in ((None, 5), (0, 0), (12, 12)):
            extra = {} if setting is None else {"delivery_nice": setting}
            name = "prio-%s" % ("default" if setting is None else setting)
            cfg = queue_config(tmp, [queued_route("q", sink.url("/hook"))],
                               store=name.replace("-", "_") + ".db", **extra)
            b = bt.Bridge(tmp, cfg, name + ".conf").start()
            try:
                seen = {}

                def settled():
                    seen.clear()
                    seen.update(thread_nices(b.proc.pid))
                    if "queue-deliver" not in seen or "worker-0" not in seen:
                        return False
                    return delta == 0 or seen["queue-deliver"] != seen["worker-0"]
                bt.wait_for(settled, 5)
                label = "unset" if setting is None else setting
                t.require("queue-deliver" in seen and "worker-0" in seen,
                          "delivery_nice %s: the delivery thread and a worker are seen" % label,
                          repr(seen))
                base = seen["worker-0"]
                t.is_(seen["queue-deliver"], {next(iter(base)) + delta},
                      "delivery_nice %s: the delivery thread runs %d nice values below the "
                      "workers" % (label, delta), repr(seen))
                t.is_(seen.get("queue-writer"), base,
                      "delivery_nice %s: the store writer, which answers the posts, at the "
                      "workers' priority" % label, repr(seen))
                r = bt.curl(b.url("/"), v1_post(doc, str(uuid.uuid4())))
                t.is_(r.status, 202, "a post is taken", repr(r))
                t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_delivered_total") == 1,
                                 10), "and delivered from the lowered thread")
                t.ok(not any("queue_priority_unchanged" in line for line in b.err_lines),
                     "no warning that the priority stayed")
            finally:
                bt.stop_and_check(t, b)
    finally:
        sink.stop()


def t_duplicate(t, tmp, doc):
    sink = bt.Sink()
    # the first attempt's answer waits until the retry is in: a backoff with
    # full jitter can be a few milliseconds, so without the hold all three
    # attempts could be over before the sender's retry arrives
    first = threading.Event()
    sink.reply(bt.Reply(500, hold=first), bt.Reply(500))
    try:
        cfg = queue_config(tmp, [queued_route("q", sink.url("/dup"))], store="dup.db",
                           backoff_base_ms=700, backoff_max_ms=700)
        b = bt.Bridge(tmp, cfg, "dup.conf").start()
        try:
            body = v1_post(doc, str(uuid.uuid4()))
            r1 = bt.curl(b.url("/"), body)
            t.require(sink.wait_requests(1, 10), "first attempt under way (then answered 500)")
            r2 = bt.curl(b.url("/"), body)
            first.set()
            t.is_(r2.status, 202, "the sender's retry while it is still queued: 202", repr(r2))
            j1, j2 = r1.json(), r2.json()
            t.is_(j2.get("status"), "duplicate", "reported as a duplicate", repr(r2))
            t.is_(j2.get("queue_id"), j1.get("queue_id"), "naming the queued row")
            t.is_(j2.get("delivery_id"), j1.get("delivery_id"), "same delivery id")
            t.ok(sink.wait_requests(3, 10), "delivered after the 500s")
            t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_depth") == 0, 10),
                 "the queue is empty once it was delivered (nothing left to send)")
            ids = [x.header("X-Bridge-Delivery-Id") for x in sink.requests]
            t.is_(len(ids), 3, "two failed attempts and one success; the duplicate not sent",
                  "\n".join(ids))
            t.ok(len(set(ids)) == 1, "one delivery id on every attempt")
            t.ok(len(set(x.header("X-Qualifio-Signature") for x in sink.requests)) == 1,
                 "one signature on every attempt")
            t.is_(metric(b, "webhook_bridge_queue_duplicates_total"), 1.0,
                  "/metrics: duplicates_total 1")
        finally:
            first.set()
            bt.stop_and_check(t, b)
    finally:
        sink.stop()


def t_cli_live(t, tmp, doc):
    sink = bt.Sink()
    sink.default = bt.Reply(503, body=b'{"error":"later"}')
    try:
        cfg = queue_config(tmp, [queued_route("q", sink.url("/cli"))], store="cli.db",
                           max_attempts=2)
        b = bt.Bridge(tmp, cfg, "cli.conf").start()
        try:
            pid = str(uuid.uuid4())
            r = bt.curl(b.url("/"), v1_post(doc, pid))
            t.require(r.status == 202, "queued", repr(r))
            qid = str(r.json()["queue_id"])
            t.require(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_dead_letters") == 1, 10),
                      "dead letter after max_attempts = 2")
            lst = queue_cli(b.config_path, "list", t=t)
            t.is_(lst.rc, 0, "queue list while serve runs", repr(lst))
            t.ok(qid in lst.stdout and "dead" in lst.stdout and "503" in lst.stdout,
                 "list shows the dead letter and its last error", lst.stdout)
            js = queue_cli(b.config_path, "list", "--dead", "--json").stdout.splitlines()
            t.ok(len(js) == 1 and json.loads(js[0])["attempts"] == 2,
                 "list --dead --json: one row, 2 attempts", "\n".join(js))
            show = queue_cli(b.config_path, "show", qid)
            t.ok(show.rc == 0 and "Bearer tok-queued" not in show.stdout and
                 "Authorization: ***" in show.stdout and pid.upper() in show.stdout,
                 "show: the row, credential masked", repr(show))
            stats = queue_cli(b.config_path, "stats")
            t.ok("webhook_bridge_queue_dead_letters 1" in stats.stdout, "stats from the store",
                 stats.stdout)
            sink.default = bt.Reply(200)
            n = len(sink.requests)
            rt = queue_cli(b.config_path, "retry", qid, t=t)
            t.is_(rt.rc, 0, "queue retry ID", repr(rt))
            t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_delivered_total") == 1,
                             8), "the running bridge delivers the retried row")
            t.is_(len(sink.requests), n + 1, "one more attempt, accepted")
            t.is_(queue_cli(b.config_path, "show", qid).rc, 1, "delivered: no longer in the store")
            # purge while running
            sink.default = bt.Reply(500)
            r = bt.curl(b.url("/"), v1_post(doc, str(uuid.uuid4())))
            qid2 = str(r.json()["queue_id"])
            pg = queue_cli(b.config_path, "purge", qid2, t=t)
            t.is_(pg.rc, 0, "queue purge ID", repr(pg))
            t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_depth") == 0, 5),
                 "depth 0 after the purge")
        finally:
            bt.stop_and_check(t, b)
    finally:
        sink.stop()


def t_cli_offline(t, tmp, doc):
    """The `queue` command on a store no bridge serves: three dead letters
    made by a live run against an endpoint answering 500, then every
    command, its output formats, exit statuses and refusals."""
    sink = bt.Sink()
    sink.default = bt.Reply(500, body=b'{"error":"no"}')
    pids = [str(uuid.uuid4()) for _ in range(2)]
    try:
        cfg = queue_config(tmp, [queued_route("rb", sink.url("/b"), match={"campaign_id": [9202]}),
                                 queued_route("ra", sink.url("/a"))],
                           store="clioff.db", max_attempts=1)
        b = bt.Bridge(tmp, cfg, "clioff.conf").start()
        ids = []
        try:
            for body in (v1_post(doc, pids[0], "incomplete"), v1_post(doc, pids[0]),
                         bt.v1_variant(doc, participation_id=pids[1], status="complete",
                                       campaign_id=9202)):
                r = bt.curl(b.url("/"), body)
                t.require(r.status == 202, "queued", repr(r))
                ids.append(str(r.json()["queue_id"]))
            t.require(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_dead_letters") == 3,
                                  10), "three dead letters after max_attempts = 1")
        finally:
            bt.stop_and_check(t, b)
    finally:
        sink.stop()
    store = (_pg_urls["clioff"] if PG is not None
             else os.path.join(os.path.dirname(b.config_path), "clioff.db"))

    def q(*args):
        return queue_cli(b.config_path, *args, t=t)

    def lines(r):
        return r.stdout.splitlines()

    def rows(r):
        return [json.loads(x) for x in lines(r)]

    t.is_(q("retry", ids[0]).rc, 0, "retry a dead letter while no bridge runs")
    lst = q("list")
    t.is_(lst.rc, 0, "list: exit 0", repr(lst))
    t.is_(len(lines(lst)), 4, "list: header + 3 rows", lst.stdout)
    t.ok(lst.stdout.startswith("ID") and "dead" in lst.stdout and "HTTP 500" in lst.stdout,
         "list shows status and last error", lst.stdout)
    r = q("list", "--dead", "--json")
    t.is_([(x["id"], x["status"]) for x in rows(r)], [(int(ids[1]), "dead"), (int(ids[2]), "dead")],
          "list --dead --json: one JSON line per dead letter", r.stdout)
    r = q("list", "--route", "rb", "--json")
    t.is_([x["route"] for x in rows(r)], ["rb"], "list --route: only route rb", r.stdout)
    r = q("list", "--limit", "1", "--newest", "--json")
    t.is_([x["id"] for x in rows(r)], [int(ids[2])], "list --limit 1 --newest: newest only",
          r.stdout)

    show = q("show", ids[0])
    t.is_(show.rc, 0, "show: exit 0", repr(show))
    t.ok("participation id: " + pids[0].upper() in show.stdout and
         "state:            INCOMPLETE" in show.stdout, "show: fields", show.stdout)
    t.ok("Authorization: *** (--reveal shows it)" in show.stdout and
         "Bearer tok-queued" not in show.stdout, "show masks the credential", show.stdout)
    t.ok("X-Qualifio-Signature: sha256=" in show.stdout, "signature shown", show.stdout)
    sent = [x.body.decode() for x in sink.requests if x.path == "/a"]
    t.ok(any(x in show.stdout for x in sent), "body shown: the one delivered", show.stdout)
    r = q("show", ids[0], "--reveal")
    t.ok(r.rc == 0 and "Authorization: Bearer tok-queued" in r.stdout, "--reveal shows it",
         repr(r))
    r = q("show", ids[0], "--json")
    t.ok(r.rc == 0 and '["Authorization","***"]' in r.stdout and '"body":' in r.stdout,
         "show --json: masked header, body", repr(r))
    r = q("show", "4242")
    t.ok(r.rc == 1 and "no delivery 4242" in r.stderr, "show unknown id: exit 1, says so",
         repr(r))

    t.is_(q("retry", ids[1]).rc, 0, "retry the second dead letter")
    got = [x for x in rows(q("list", "--json")) if x["id"] == int(ids[1])]
    t.ok(len(got) == 1 and got[0]["status"] == "pending" and got[0]["attempts"] == 0,
         "it is pending again, 0 attempts", got)
    t.is_(q("retry", "4242").rc, 1, "retry unknown id: exit 1")
    r = q("retry", "--all", "--route", "ra")
    t.ok(r.rc == 0 and "retried 0 dead letters" in r.stdout, "retry --all --route ra: none",
         repr(r))
    r = q("retry", "--all")
    t.ok(r.rc == 0 and "retried 1 dead letter\n" in r.stdout, "retry --all: one retried",
         repr(r))

    t.is_(q("purge", ids[2]).rc, 0, "purge one")
    t.is_(q("show", ids[2]).rc, 1, "gone from the store")
    t.is_(q("purge", ids[2]).rc, 1, "purge it again: exit 1")
    r = q("purge", "--all")
    t.ok(r.rc == 2 and "--yes" in r.stderr, "purge --all needs --yes, and says so", repr(r))
    r = bt.run_cli(["queue", "--store", store, "stats"], t=t)
    t.ok(r.rc == 0 and "\nwebhook_bridge_queue_depth 2\n" in r.stdout and
         "\nwebhook_bridge_queue_dead_letters 0\n" in r.stdout,
         "stats through --store: depth 2, no dead letters", repr(r))
    r = q("purge", "--dead")
    t.ok(r.rc == 0 and "purged 0 deliveries" in r.stdout, "purge --dead: nothing dead", repr(r))
    r = q("purge", "--all", "--yes")
    t.ok(r.rc == 0 and "purged 2 deliveries" in r.stdout, "purge --all --yes: both pending",
         repr(r))

    t.is_(bt.run_cli(["queue", "list"], t=t).rc, 2, "no store given: exit 2")
    t.is_(q("frobnicate").rc, 2, "unknown command: exit 2")
    t.is_(q("list", "--reveal").rc, 2, "option of another command: exit 2")
    t.is_(q("show", "x1").rc, 2, "bad id: exit 2")
    r = bt.run_cli(["queue", "--store", "/nonexistent/q.db", "list"], t=t)
    t.ok(r.rc == 2 and "no queue store at" in r.stderr, "missing store: exit 2, says so",
         repr(r))
    r = bt.run_cli(["queue", "--help"], t=t)
    t.ok(r.rc == 0 and "usage: webhook-bridge queue" in r.stdout, "--help prints the usage",
         repr(r))


def route_values(bridge):
    """The per-route queue samples of /metrics, and the whole text."""
    text = bt.curl(bridge.admin_url("/metrics"), method="GET").body.decode("utf-8", "replace")
    out = {}
    for line in text.splitlines():
        if line.startswith("webhook_bridge_queue_route_"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out, text


def t_route_series(t, tmp, doc):
    """Depth, oldest age and dead letters per route, counted in the store."""
    sa, sb = bt.Sink(), bt.Sink()
    sa.default = bt.Reply(503)
    sb.default = bt.Reply(503)
    try:
        routes = [queued_route("qa", sa.url("/a"), match={"campaign_id": [9101]}),
                  queued_route("qb", sb.url("/b"), match={"campaign_id": [9102]},
                               timeout_ms=3000),
                  queued_route("qc", sa.url("/c"), match={"campaign_id": [9103]})]
        cfg = queue_config(tmp, routes, store="routes.db", max_attempts=2,
                           backoff_base_ms=50, backoff_max_ms=50)
        b = bt.Bridge(tmp, cfg, "routes.conf").start()

        def post(campaign):
            body = bt.v1_variant(doc, participation_id=str(uuid.uuid4()), status="complete",
                                 campaign_id=campaign)
            r = bt.curl(b.url("/"), body)
            t.require(r.status == 202, "queued on campaign %d" % campaign, repr(r))

        def dead(name):
            return 'webhook_bridge_queue_route_dead_letters{route="%s"}' % name

        try:
            m0, _ = route_values(b)
            for n in ("qa", "qb", "qc"):
                for f in ("depth", "oldest_age_seconds", "dead_letters"):
                    k = 'webhook_bridge_queue_route_%s{route="%s"}' % (f, n)
                    t.is_(m0.get(k), 0.0, "%s at zero from the start" % k)
            post(9101)
            post(9101)
            post(9102)
            t.require(bt.wait_for(lambda: route_values(b)[0].get(dead("qa")) == 2 and
                                  route_values(b)[0].get(dead("qb")) == 1, 10),
                      "dead letters after max_attempts = 2", route_values(b)[0])
            sb.default = bt.Reply(bt.NEVER)  # the next attempt on qb stays in flight
            post(9102)
            t.require(sb.wait_requests(3, 10), "qb's new post is being attempted")
            time.sleep(0.05)  # so that its age is above the 1 ms resolution
            m1, text = route_values(b)
            want = {
                'webhook_bridge_queue_route_depth{route="qa"}': 0,
                'webhook_bridge_queue_route_depth{route="qb"}': 1,
                'webhook_bridge_queue_route_depth{route="qc"}': 0,
                dead("qa"): 2, dead("qb"): 1, dead("qc"): 0,
                'webhook_bridge_queue_route_oldest_age_seconds{route="qa"}': 0,
                'webhook_bridge_queue_route_oldest_age_seconds{route="qc"}': 0,
            }
            for k, v in want.items():
                t.is_(m1.get(k), float(v), k)
            age = m1.get('webhook_bridge_queue_route_oldest_age_seconds{route="qb"}', 0)
            t.ok(0 < age < 10, "qb's oldest waiting delivery has an age (%g s)" % age)
            t.is_(metric(b, "webhook_bridge_queue_dead_letters"), 3.0,
                  "the process-wide gauge is the sum")
            p = subprocess.run(["promtool", "check", "metrics"], input=text,
                               capture_output=True, text=True)
            t.is_(p.returncode, 0, "promtool check metrics with per-route queue series",
                  (p.stdout + p.stderr)[:3000])
            sb.default = bt.Reply(200)
            t.ok(bt.wait_for(lambda: route_values(b)[0].get(
                'webhook_bridge_queue_route_depth{route="qb"}') == 0, 15),
                 "delivered after the timeout: qb depth back to 0")
        finally:
            bt.stop_and_check(t, b)
    finally:
        sa.stop()
        sb.stop()


def bridge_rchar(bridge):
    """Bytes the bridge process has read with read(2) and pread(2)."""
    with open("/proc/%d/io" % bridge.proc.pid) as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return -1


def clone_rows(store, route, tag, n, body):
    """n more rows in the SQLite store, copies of route's oldest with body (SQL),
    due in an hour: the original's next attempt has a full jitter (it may be due in
    a second), and the copies' checksums do not match their bodies, so a copy
    attempted would become a dead letter and move the counts under test."""
    db = sqlite3.connect(store)
    db.execute("""
        WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < %d)
        INSERT INTO deliveries (route, endpoint, ca_file, timeout_ms, delivery_id,
            participation_id, state, headers, body, attempts, created_ms, since_ms,
            next_attempt_ms, checksum)
        SELECT route, endpoint, ca_file, timeout_ms, delivery_id || '-%s-' || k,
            participation_id || '-%s-' || k, state, headers, %s, attempts,
            created_ms, since_ms, created_ms + 3600000, checksum
        FROM deliveries, n
        WHERE id = (SELECT MIN(id) FROM deliveries WHERE route = ?)
    """ % (n, tag, tag, body), (route,))
    db.commit()
    db.close()


def t_recount(t, tmp, doc):
    """After another process's change the queue counts its rows again, without
    the store's lock, while posts go on: what they move during the count is not
    lost from the gauges, nor counted twice."""
    port = bt.refused_port()
    cfg = queue_config(tmp, [queued_route("rc", "http://127.0.0.1:%d/x" % port)],
                       store="recount.db", backoff_base_ms=600000, backoff_max_ms=600000,
                       max_attempts=100)
    b = bt.Bridge(tmp, cfg, "recount.conf").start()
    try:
        r = bt.curl(b.url("/"), v1_post(doc, str(uuid.uuid4())))
        t.require(r.status == 202, "the first row", repr(r))
    finally:
        bt.stop_and_check(t, b)
    # enough rows that a count takes tens of ms
    clone_rows(os.path.join(os.path.dirname(b.config_path), "recount.db"), "rc", "c", 200000,
               "x'7b7d'")
    b = bt.Bridge(tmp, cfg, "recount.conf").start()
    try:
        ids, refused, done = [], [], threading.Event()

        def post():
            # until the last purge's recount is over: every count runs beside posts,
            # on a kept-alive connection (a few hundred a second)
            c = http.client.HTTPConnection("127.0.0.1", b.port, timeout=10)
            try:
                while not done.is_set():
                    c.request("POST", "/", v1_post(doc, str(uuid.uuid4())),
                              {"Content-Type": "application/json"})
                    r = c.getresponse()
                    body = r.read()
                    if r.status == 202:
                        ids.append(json.loads(body))
                    else:
                        refused.append((r.status, body))
            finally:
                c.close()

        posters = [threading.Thread(target=post) for _ in range(2)]
        for th in posters:
            th.start()
        purged, tries = 0, 0
        while purged < 8 and tries < 100:
            tries += 1
            if len(ids) > purged:
                rc = queue_cli(b.config_path, "purge", str(ids[purged]["queue_id"]))
                purged += rc.rc == 0
            time.sleep(0.05)
        time.sleep(0.3)
        done.set()
        for th in posters:
            th.join()
        t.is_(len(refused), 0, "every post taken", refused[:1])
        t.is_(purged, 8, "8 rows purged by another process while posts came")
        want = 1 + 200000 + len(ids) - purged
        # the last purge's recount
        t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_depth") == want, 10),
             "depth %d: every row counted once" % want, metric(b, "webhook_bridge_queue_depth"))
        m, _ = route_values(b)
        t.is_(m.get('webhook_bridge_queue_route_depth{route="rc"}'), float(want),
              "the route's depth too")
        stats = queue_cli(b.config_path, "stats")
        t.ok("webhook_bridge_queue_depth %d" % want in stats.stdout,
             "as `queue stats` counts it in the store", stats.stdout)
    finally:
        bt.stop_and_check(t, b)


def t_route_counts(t, tmp, doc):
    """The per-route gauges follow posts, a `queue purge` by another process and a
    restart. On SQLite the queue keeps them itself: a scrape reads neither the rows
    (it used to read them all, under the lock the posts wait for) nor the age index."""
    port = bt.refused_port()
    endpoint = "http://127.0.0.1:%d/x" % port
    routes = [queued_route("ka", endpoint, match={"campaign_id": [9201]}),
              queued_route("kb", endpoint, match={"campaign_id": [9202]})]
    # the one attempt fails at once; the next is ten minutes away
    cfg = queue_config(tmp, routes, store="kept.db", backoff_base_ms=600000,
                       backoff_max_ms=600000, max_attempts=100)
    depth = 'webhook_bridge_queue_route_depth{route="%s"}'

    def depths(bridge):
        m, _ = route_values(bridge)
        return (m.get(depth % "ka"), m.get(depth % "kb"))

    b = bt.Bridge(tmp, cfg, "kept.conf").start()
    ids = []
    try:
        for campaign, n in ((9201, 3), (9202, 2)):
            for _ in range(n):
                body = bt.v1_variant(doc, participation_id=str(uuid.uuid4()),
                                     status="complete", campaign_id=campaign)
                r = bt.curl(b.url("/"), body)
                t.require(r.status == 202, "queued on campaign %d" % campaign, repr(r))
                ids.append(str(r.json()["queue_id"]))
        t.ok(bt.wait_for(lambda: depths(b) == (3.0, 2.0), 10), "ka 3, kb 2", depths(b))
        r = queue_cli(b.config_path, "purge", ids[0], t=t)
        t.is_(r.rc, 0, "queue purge of one of ka's rows, from another process", repr(r))
        t.ok(bt.wait_for(lambda: depths(b) == (2.0, 2.0), 10),
             "the gauges follow the other process's change: ka 2", depths(b))
    finally:
        bt.stop_and_check(t, b)
    more = 0
    if PG is None:
        # more of kb's rows, due in ten minutes like the others: 3,000 of 3 KB (12 MB),
        # and 100,000 small ones, so that the age index alone (over 2 MB) is more than
        # SQLite's page cache holds
        store = os.path.join(os.path.dirname(b.config_path), "kept.db")
        for tag, n, body in (("big", 3000, "zeroblob(3000)"), ("small", 100000, "x'7b7d'")):
            clone_rows(store, "kb", tag, n, body)
            more += n
    b = bt.Bridge(tmp, cfg, "kept.conf").start()
    try:
        t.ok(bt.wait_for(lambda: depths(b) == (2.0, 2.0 + more), 10),
             "after a restart, counted from the store: ka 2, kb %d" % (2 + more), depths(b))
        if PG is None:
            time.sleep(0.3)
            before = bridge_rchar(b)
            for _ in range(3):
                m, _ = route_values(b)
            read = bridge_rchar(b) - before
            t.diag("three scrapes: the bridge read %d bytes" % read)
            t.ok(0 <= read < 1024 * 1024,
                 "three scrapes read under 1 MB: neither the rows nor a pass over the index",
                 read)
            t.is_(m.get(depth % "kb"), 2.0 + more, "and the last one's depth of kb")
            age = m.get('webhook_bridge_queue_route_oldest_age_seconds{route="kb"}', 0)
            t.ok(age > 0, "kb's oldest age still read from the store (%g s)" % age)
    finally:
        bt.stop_and_check(t, b)


def t_read_ahead(t, tmp, doc):
    """Rows read ahead of their start (the queue reads the next due rows for
    several slots at once) are dropped when another process changes the store:
    rows purged while they wait are never sent."""
    sink = bt.Sink()
    first, second = threading.Event(), threading.Event()
    sink.reply(bt.Reply(200, hold=first), bt.Reply(200, hold=second))
    try:
        cfg = queue_config(tmp, [queued_route("q", sink.url("/ahead"))], store="ahead.db",
                           per_endpoint_concurrency=1)
        b = bt.Bridge(tmp, cfg, "ahead.conf").start()
        try:
            got = []
            for i in range(6):
                r = bt.curl(b.url("/"), v1_post(doc, str(uuid.uuid4())))
                t.require(r.status == 202, "post %d queued" % i, repr(r))
                got.append(r.json())
                if i == 0:
                    t.require(sink.wait_requests(1, 10), "the first one is under way")
            first.set()
            t.require(sink.wait_requests(2, 10), "the second one is under way, four wait")
            for g in got[2:]:
                pg = queue_cli(b.config_path, "purge", str(g["queue_id"]), t=t)
                t.require(pg.rc == 0, "queue purge of a waiting row", repr(pg))
            second.set()
            t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_depth") == 0, 10),
                 "depth 0: two delivered, four purged")
            r = bt.curl(b.url("/"), v1_post(doc, str(uuid.uuid4())))
            t.require(r.status == 202, "one more post queued", repr(r))
            got.append(r.json())
            t.require(sink.wait_requests(3, 10), "and delivered")
            time.sleep(0.3)
            sent = [rec.header("X-Bridge-Delivery-Id") for rec in sink.requests]
            want = [got[0]["delivery_id"], got[1]["delivery_id"], got[6]["delivery_id"]]
            t.is_(sent, want, "the endpoint got the two first rows and the last, none purged")
        finally:
            first.set()
            second.set()
            bt.stop_and_check(t, b)
    finally:
        sink.stop()


def t_503(t, tmp, doc):
    # a full queue (max_depth)
    port = bt.refused_port()
    cfg = queue_config(tmp, [queued_route("q", "http://127.0.0.1:%d/x" % port)],
                       store="full.db", max_depth=2)
    b = bt.Bridge(tmp, cfg, "full.conf").start()
    try:
        st = [bt.curl(b.url("/"), v1_post(doc, str(uuid.uuid4()))).status for _ in range(2)]
        t.is_(st, [202, 202], "two stored (endpoint down)")
        r = bt.curl(b.url("/"), v1_post(doc, str(uuid.uuid4())))
        bt.check_json_response(t, r, 503, "queue full", error="queue_unavailable")
        t.like(r.json().get("message", ""), "queue is full", "message says why")
        r = bt.curl(b.admin_url("/readyz"))
        d = bt.check_json_response(t, r, 503, "/readyz while the queue is full", error="not_ready")
        t.like((d or {}).get("message", ""), "queue is full", "/readyz says the queue is full", r)
    finally:
        bt.stop_and_check(t, b)

    if PG is None:
        t_503_disk(t, tmp, doc)
        t_ready_after_refused_post(t, tmp, doc)
    else:
        t_503_pg_down(t, tmp, doc)


def t_503_pg_down(t, tmp, doc):
    """PostgreSQL stopped: 503 queue_unavailable with Retry-After, never 202,
    /readyz 503; started again: the bridge recovers by itself."""
    sink = bt.Sink()
    try:
        cfg = queue_config(tmp, [queued_route("q", sink.url("/pgdown"))], store="pgdown.db")
        b = bt.Bridge(tmp, cfg, "pgdown.conf").start()
        try:
            r = bt.curl(b.url("/"), v1_post(doc, str(uuid.uuid4())))
            t.is_(r.status, 202, "stored while PostgreSQL runs", repr(r))
            acked = [r.json()["delivery_id"]] if r.status == 202 else []
            PG.stop("fast")
            statuses = []
            for _ in range(5):
                r = bt.curl(b.url("/"), v1_post(doc, str(uuid.uuid4())))
                statuses.append(r.status)
            t.is_(sorted(set(statuses)), [503], "PostgreSQL down: every post 503, never 202")
            d = bt.check_json_response(t, r, 503, "PostgreSQL down", error="queue_unavailable")
            t.ok(r.header("Retry-After") is not None, "503 with Retry-After", repr(r))
            t.ok(bt.wait_for(lambda: bt.curl(b.admin_url("/readyz")).status == 503, 10),
                 "/readyz 503 while PostgreSQL is down")
            PG.start()
            t.ok(bt.wait_for(lambda: bt.curl(b.admin_url("/readyz")).status == 200, 20,
                             step=0.2), "/readyz 200 again once PostgreSQL is back (no restart)")
            r = bt.curl(b.url("/"), v1_post(doc, str(uuid.uuid4())))
            t.is_(r.status, 202, "stores again", "%r\nthe bridge's last store errors:\n%s" % (
                r, "".join([x for x in b.err_lines if "queue_store_error" in x][-3:])))
            if r.status == 202:
                acked.append(r.json()["delivery_id"])
            t.ok(bt.wait_for(lambda: set(acked) <= set(
                x.header("X-Bridge-Delivery-Id") for x in sink.requests), 20),
                "every 202 delivered (%d)" % len(acked))
        finally:
            if not PG.running:
                PG.start()
            bt.stop_and_check(t, b)
    finally:
        sink.stop()


def t_503_disk(t, tmp, doc):
    # the store's file may not grow (RLIMIT_FSIZE, SIGXFSZ ignored): like a full disk
    sink = bt.Sink()
    try:
        cfg = queue_config(tmp, [queued_route("q", sink.url("/disk"))], store="disk.db")
        sink.default = bt.Reply(500)
        limit = 300 * 1024

        def restrict():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

        b = bt.Bridge(tmp, cfg, "disk.conf")
        # Bridge.start() has no hook for the child's limits: wrap Popen for
        # this one start (Popen resets SIGXFSZ to default before preexec_fn).
        real_popen = subprocess.Popen

        def popen(*a, **kw):
            kw["preexec_fn"] = restrict
            return real_popen(*a, **kw)

        subprocess.Popen = popen
        try:
            b.start()
        finally:
            subprocess.Popen = real_popen
        try:
            acked, statuses = [], []
            for _ in range(400):
                r = bt.curl(b.url("/"), v1_post(doc, str(uuid.uuid4())))
                statuses.append(r.status)
                if r.status == 202:
                    acked.append(r.json()["delivery_id"])
                if r.status == 503:
                    break
            t.ok(503 in statuses, "a post the store cannot hold gets 503",
                 "statuses: %s" % sorted(set(statuses)))
            t.ok(set(statuses) <= {202, 503}, "never anything but 202 or 503")
            # a refused post keeps the queue unready until a write of its size
            # goes through (t_ready_after_refused_post), so the probe's small
            # row cannot make it ready for a moment
            r = bt.curl(b.url("/"), v1_post(doc, str(uuid.uuid4())))
            if r.status == 503:
                t.like(r.json().get("message", ""), "queue store", "the 503 names the store")
                r = bt.curl(b.admin_url("/readyz"))
                d = bt.check_json_response(t, r, 503, "/readyz while the store cannot write",
                                           error="not_ready")
                t.like((d or {}).get("message", ""), "queue store failed",
                       "/readyz says the store failed", r)
            resource.prlimit(b.proc.pid, resource.RLIMIT_FSIZE,
                             (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            sink.default = bt.Reply(200)
            # the outcomes the store could not take are written again within a
            # second, and the queue is ready again by itself
            t.ok(bt.wait_for(lambda: bt.curl(b.admin_url("/readyz")).status == 200, 10),
                 "/readyz 200 again")
            r = bt.curl(b.url("/"), v1_post(doc, str(uuid.uuid4())))
            t.is_(r.status, 202, "stores again once the file may grow", repr(r))
            if r.status == 202:
                acked.append(r.json()["delivery_id"])

            def all_delivered():
                got = set(x.header("X-Bridge-Delivery-Id") for x in list(sink.requests)
                          if x.header("X-Bridge-Delivery-Id"))
                return set(acked) <= got and metric(b, "webhook_bridge_queue_depth") == 0
            t.ok(bt.wait_for(all_delivered, 30), "every 202 of the run delivered (%d)" % len(acked))
        finally:
            bt.stop_and_check(t, b)
    finally:
        sink.stop()


def t_ready_after_refused_post(t, tmp, doc):
    """Readiness comes back only when a post as large as the refused one
    would be taken: the store's files may grow by 40 KiB, a post of 60 KiB
    is refused, and the once-a-second probe, whose small row fits, must not
    make /readyz say 200 while the same post is still refused."""
    sink = bt.Sink()
    try:
        cfg = queue_config(tmp, [queued_route("q", sink.url("/big"))], store="ready.db")
        b = bt.Bridge(tmp, cfg, "ready.conf").start()
        try:
            big = dict(doc)
            big["address"] = "x" * 60000
            acked = []
            r = bt.curl(b.url("/"), v1_post(doc, str(uuid.uuid4())))
            t.is_(r.status, 202, "a small post is stored", repr(r))
            if r.status == 202:
                acked.append(r.json()["delivery_id"])
            t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_depth") == 0, 20),
                 "and delivered")
            files = [tmp.join("ready.db" + x) for x in ("", "-wal", "-shm")]
            grown = max(os.path.getsize(f) for f in files if os.path.exists(f))
            resource.prlimit(b.proc.pid, resource.RLIMIT_FSIZE,
                             (grown + 40 * 1024, resource.RLIM_INFINITY))
            r = bt.curl(b.url("/"), v1_post(big, str(uuid.uuid4())))
            t.is_(r.status, 503, "a 60 KiB post that the store's 40 KiB of room cannot hold: 503",
                  repr(r))
            # the probe runs once a second: three of its turns
            seen = []
            deadline = time.time() + 3.5
            while time.time() < deadline:
                seen.append(bt.curl(b.admin_url("/readyz")).status)
                time.sleep(0.25)
            t.ok(seen and set(seen) == {503},
                 "/readyz stays 503 while a post that large is refused (the probe's "
                 "small row fits)", "statuses: %s" % seen)
            r = bt.curl(b.admin_url("/readyz"))
            t.like(r.body.decode("utf-8", "replace"), "failed to take a post of",
                   "/readyz names the refused post")
            r = bt.curl(b.url("/"), v1_post(big, str(uuid.uuid4())))
            t.is_(r.status, 503, "the same post is still refused", repr(r))
            resource.prlimit(b.proc.pid, resource.RLIMIT_FSIZE,
                             (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            t.ok(bt.wait_for(lambda: bt.curl(b.admin_url("/readyz")).status == 200, 10,
                             step=0.2),
                 "/readyz 200 again once the files may grow (the probe of its size went "
                 "through)")
            r = bt.curl(b.url("/"), v1_post(big, str(uuid.uuid4())))
            t.is_(r.status, 202, "and the large post is stored", repr(r))
            if r.status == 202:
                acked.append(r.json()["delivery_id"])
            t.ok(bt.wait_for(lambda: set(acked) <= set(
                x.header("X-Bridge-Delivery-Id") for x in list(sink.requests)), 20),
                "every 202 delivered (%d)" % len(acked))
        finally:
            bt.stop_and_check(t, b)
    finally:
        sink.stop()


# --------------------------------------------------------------------------
# crash test
# --------------------------------------------------------------------------

class _ReusableServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # the bridge was killed mid-exchange: expected here


class FlakyEndpoint:
    """One fixed port that is up (200), failing (500) or down (refused), and
    a record of every request: (delivery id, participation id, state, status)."""

    def __init__(self):
        self.port = bt.refused_port()
        self.lock = threading.Lock()
        self.records = []
        self.mode = None
        self.server = None
        self.conns = []
        self.modes_seen = set()

    def _handler(self):
        ep = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                # headers and body go out in two writes: without NODELAY,
                # Nagle and delayed ACKs add ~40 ms to every delivery
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                super().setup()
                with ep.lock:
                    ep.conns.append(self.request)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                try:
                    doc = json.loads(body)
                    pid, state = doc.get("id"), doc.get("state")
                except ValueError:
                    pid = state = None
                with ep.lock:
                    status = 500 if ep.mode == "500" else 200
                    ep.records.append((self.headers.get("X-Bridge-Delivery-Id"), pid, state,
                                       status, time.monotonic()))
                out = b'{"ok":true}' if status == 200 else b'{"error":"flaky"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        return H

    def set_mode(self, mode):
        with self.lock:
            self.mode = mode
            self.modes_seen.add(mode)
        if mode == "down" and self.server:
            srv, self.server = self.server, None
            srv.shutdown()
            srv.server_close()
            with self.lock:
                conns, self.conns = self.conns, []
            for c in conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        elif mode != "down" and not self.server:
            srv = _ReusableServer(("127.0.0.1", self.port), self._handler())
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True).start()
            self.server = srv

    def stop(self):
        self.set_mode("down")

    def url(self):
        return "http://127.0.0.1:%d/crash" % self.port


class CrashRun:
    def __init__(self, tmp, doc, duration, kills, posters=3):
        self.tmp = tmp
        self.doc = doc
        self.duration = duration
        self.kills_wanted = kills
        self.posters = posters
        self.endpoint = FlakyEndpoint()
        self.port = bt.refused_port()
        self.lock = threading.Lock()
        self.acked = {}       # delivery id -> (participation id, state)
        self.pairs = []       # (incomplete delivery id, complete delivery id)
        self.posted = 0
        self.not_acked = 0
        self.other_status = []
        self.stop_posting = threading.Event()
        self.bridge = None
        self.stderr = []
        self.kills = 0
        self.config = None

    def start_bridge(self):
        b = bt.Bridge(self.tmp, self.config, "crash.conf")
        b.start(timeout=30)
        self.bridge = b

    def kill_bridge(self, b=None):
        """SIGKILL (this run's bridge, or b), keeping what it wrote."""
        if b is None:
            b, self.bridge = self.bridge, None
        b.kill()
        for th in b._threads:
            th.join(5)
        self.stderr.append(b.stderr)
        self.kills += 1

    def target_port(self):
        return self.port

    def post(self, body):
        """202 -> the JSON answer; anything else -> None."""
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.target_port(), timeout=5)
            c.request("POST", "/", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            c.close()
        except (OSError, http.client.HTTPException):
            return None
        if r.status == 202:
            return json.loads(data)
        if r.status != 503:
            with self.lock:
                self.other_status.append(r.status)
        return None

    def post_until_acked(self, body, tries):
        """Like a sender: post again until acknowledged (or told to stop)."""
        got = None
        for _ in range(tries):
            with self.lock:
                self.posted += 1
            got = self.post(body)
            if got or self.stop_posting.is_set():
                break
            with self.lock:
                self.not_acked += 1
            time.sleep(0.05)
        return got

    def poster(self, seed):
        rnd = random.Random(seed)
        while not self.stop_posting.is_set():
            pid = str(uuid.uuid4())
            pair = rnd.random() < 0.3
            states = ["incomplete", "complete"] if pair else ["complete"]
            ids = []
            for st in states:
                body = v1_post(self.doc, pid, st)
                got = self.post_until_acked(body, 40)
                if not got:
                    break
                with self.lock:
                    self.acked[got["delivery_id"]] = (pid.upper(), st)
                ids.append(got["delivery_id"])
                if rnd.random() < 0.1:  # the sender sends it again
                    with self.lock:
                        self.posted += 1
                    again = self.post(body)
                    if again:
                        with self.lock:
                            self.acked[again["delivery_id"]] = (pid.upper(), st)
            if len(ids) == 2:
                with self.lock:
                    self.pairs.append((ids[0], ids[1]))
            time.sleep(rnd.uniform(0.0, 0.01))

    def switcher(self):
        rnd = random.Random(7)
        modes = ["up", "500", "down"]
        i = 0
        while not self.stop_posting.is_set():
            self.endpoint.set_mode(modes[i % 3])
            i += 1
            self.stop_posting.wait(rnd.uniform(0.3, 1.0))

    def run(self, t):
        self.config = queue_config(
            self.tmp, [queued_route("crash", self.endpoint.url(), timeout_ms=2000)],
            port=self.port, store="crash.db", max_attempts=1000, max_age_s=3600,
            backoff_base_ms=50, backoff_max_ms=500)
        self.endpoint.set_mode("up")
        self.start_bridge()
        threads = [threading.Thread(target=self.poster, args=(i,), daemon=True)
                   for i in range(self.posters)]
        threads.append(threading.Thread(target=self.switcher, daemon=True))
        for th in threads:
            th.start()
        t0 = time.monotonic()
        rnd = random.Random(11)
        slot = self.duration / (self.kills_wanted + 1)
        for k in range(self.kills_wanted):
            target = t0 + slot * (k + 1) + rnd.uniform(-0.4, 0.4) * slot
            time.sleep(max(0.0, target - time.monotonic()))
            self.kill_bridge()
            time.sleep(rnd.uniform(0.0, 0.3))
            self.start_bridge()
        time.sleep(max(0.0, t0 + self.duration - time.monotonic()))
        elapsed, finished = self.drain(threads, t0)
        stats = wait_store_empty(t, self.bridge.config_path)
        rc = self.bridge.stop()
        self.stderr.append(self.bridge.stderr)
        return self.report(t, elapsed, finished, stats, rc)

    def drain(self, threads, t0, timeout=None):
        """Stop the posters, bring the endpoint up and wait until every
        acknowledged delivery was accepted: (elapsed, drained in time)."""
        self.stop_posting.set()
        for th in threads:
            th.join(30)
        elapsed = time.monotonic() - t0
        self.endpoint.set_mode("up")

        def drained():
            with self.endpoint.lock:
                ok = set(r[0] for r in self.endpoint.records if r[3] == 200)
            return set(self.acked) <= ok
        if timeout is None:
            timeout = 120 if self.duration > 30 else 60
        return elapsed, bt.wait_for(drained, timeout, step=0.2)

    def report(self, t, elapsed, finished, stats, rc):
        with self.endpoint.lock:
            recs = list(self.endpoint.records)
        ok_count, first_ok, first_any = {}, {}, {}
        for did, pid, state, status, at in recs:
            first_any.setdefault(did, at)
            if status == 200:
                ok_count[did] = ok_count.get(did, 0) + 1
                first_ok.setdefault(did, at)
        acked = set(self.acked)
        delivered = sum(1 for d in acked if d in ok_count)
        duplicates = sum(n - 1 for d, n in ok_count.items() if d in acked)
        lost = len(acked) - delivered
        unacked_delivered = sum(1 for d in ok_count if d not in acked)
        order_bad = 0
        for inc, comp in self.pairs:
            if comp in first_any and (inc not in first_ok or first_any[comp] < first_ok[inc]):
                order_bad += 1
        summary = ("crash test: %.1f s, %d SIGKILLs, endpoint modes %s; posts %d, acknowledged "
                   "%d, delivered %d, duplicates %d, lost %d; delivered without a 202 %d; "
                   "incomplete/complete pairs %d, out of order %d; attempts seen %d"
                   % (elapsed, self.kills, "/".join(sorted(self.endpoint.modes_seen)),
                      self.posted, len(acked), delivered, duplicates, lost, unacked_delivered,
                      len(self.pairs), order_bad, len(recs)))
        t.diag(summary)
        t.ok(self.kills >= self.kills_wanted, "bridge killed with SIGKILL %d times (>= %d)"
             % (self.kills, self.kills_wanted))
        t.ok(self.endpoint.modes_seen >= {"up", "500", "down"},
             "endpoint was up, 500 and down")
        t.ok(len(acked) >= 20, "participations acknowledged: %d" % len(acked))
        t.ok(finished, "every acknowledged participation reached the endpoint in time")
        t.is_(lost, 0, "lost = 0 (every 202 delivered at least once, by delivery id)",
              "missing: %s" % sorted(acked - set(ok_count))[:10])
        t.is_(order_bad, 0, "no complete participation sent before its incomplete one was "
              "accepted")
        t.is_(self.other_status, [], "answers were 202 or 503 only")
        t.ok("webhook_bridge_queue_depth 0" in stats and
             "webhook_bridge_queue_dead_letters 0" in stats,
             "store drained: depth 0, no dead letters", stats)
        t.is_(rc, 0, "last bridge exits 0 on SIGTERM")
        bt.check_no_sanitizer_report(t, "".join(self.stderr), "no sanitizer report in any run")
        self.endpoint.stop()
        return summary


def t_crash(t, tmp, doc, duration, kills):
    CrashRun(tmp, doc, duration, kills).run(t)


def main(engine_note=None):
    t = bt.Tap()
    if engine_note:
        t.diag(engine_note)
    tmp = bt.TempDir()
    _, _, doc = bt.v1_fixture()
    try:
        soak = bt.soak_args(75.0, 6)
        if soak:
            t.run("soak", t_crash, tmp, doc, soak[0], soak[1])
        else:
            t.run("wired", t_wired, tmp)
            if t.failed == 0:
                t.run("basic", t_basic, tmp, doc)
                t.run("duplicate", t_duplicate, tmp, doc)
                t.run("delivery below the posts' priority", t_priority, tmp, doc)
                t.run("cli while serving", t_cli_live, tmp, doc)
                t.run("cli on a store no bridge serves", t_cli_offline, tmp, doc)
                t.run("per-route series", t_route_series, tmp, doc)
                t.run("per-route counts kept", t_route_counts, tmp, doc)
                if PG is None:
                    t.run("counted again while posts come", t_recount, tmp, doc)
                t.run("rows read ahead, then purged", t_read_ahead, tmp, doc)
                t.run("503 when nothing can be stored", t_503, tmp, doc)
                t.run("crash", t_crash, tmp, doc, 10.0, 3)
    finally:
        tmp.cleanup()
    t.done()


if __name__ == "__main__":
    main()
