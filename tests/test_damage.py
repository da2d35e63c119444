#!/usr/bin/python3
"""A damaged queue store never delivers garbage: a store written by the
bridge with a page overwritten in the middle is refused at start (serve and
check) with the exact command that saves what is readable; that command
saves every readable row and the bridge delivers them from the new store; a
row changed under the bridge (body, endpoint) is dead-lettered `corrupt`
and never sent; a store of the first schema (no checksums) is migrated and
its rows checked as JSON; a store that stops taking writes makes the bridge
unready without sending anything again, and it comes back by itself."""

import json
import os
import re
import resource
import shlex
import sqlite3
import subprocess
import sys
import threading
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
SECRET = "k"
PAGE = 4096


def start(cfg, name):
    return bt.start_bridge(t, tmp, cfg, name)


def config(store, endpoint, **queue):
    q = {"path": store, "backoff_base_ms": 60000, "backoff_max_ms": 60000}
    q.update(queue)
    route = bt.route("q", "forward", endpoint=endpoint, secret=SECRET, delivery="queued")
    return bt.config_text([route], path="/hook", queue=q)


def post(b, **changes):
    _, _, doc = bt.v1_fixture()
    changes.setdefault("participation_id", str(uuid.uuid4()))
    return bt.curl(b.url("/hook"), bt.v1_variant(doc, **changes))


metric = bt.metric


def rows(path):
    db = sqlite3.connect(path)
    try:
        cur = db.execute("SELECT * FROM deliveries ORDER BY id")
        names = [d[0] for d in cur.description]
        return {r[0]: dict(zip(names, r)) for r in cur.fetchall()}
    finally:
        db.close()


def cli(*args):
    return bt.run_cli(list(args), t=t)


def delivered_ids(sink):
    return [r.header("X-Bridge-Delivery-Id") for r in list(sink.requests)]


def t_damaged_page(_t):
    """A page holding row bodies overwritten in a copy of a real store."""
    port = bt.refused_port()
    endpoint = "http://127.0.0.1:%d/in" % port
    store = tmp.join("real.db")
    # one attempt each (the endpoint is down): dead letters, the state the
    # recovery must keep
    b = start(config(store, endpoint, max_attempts=1), "real.conf")
    try:
        st = [post(b).status for _ in range(60)]
        t.is_(set(st), {202}, "60 posts stored")
        t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_dead_letters") == 60, 20),
             "all 60 attempted once and dead-lettered (endpoint down)")
    finally:
        bt.stop_and_check(t, b)
    original = rows(store)
    t.is_(len(original), 60, "the real store holds 60 rows")
    data = bytearray(open(store, "rb").read())
    n_pages = len(data) // PAGE
    t.require(n_pages >= 16, "the store spans pages (%d)" % n_pages)
    # a table leaf page (type 0x0d) in the middle third whose cells hold bodies
    victim = None
    some_body = next(iter(original.values()))["body"]
    for page in range(n_pages // 3, 2 * n_pages // 3):
        chunk = bytes(data[page * PAGE:(page + 1) * PAGE])
        if chunk[0] == 0x0D and some_body[-200:-100] in chunk:
            victim = page
            break
    t.require(victim is not None, "a leaf page holding row bodies found")
    chunk = bytes(data[victim * PAGE:(victim + 1) * PAGE])
    lost = {i for i, r in original.items() if r["delivery_id"].encode() in chunk}
    t.require(lost and len(lost) < 60, "the page holds rows (%s)" % sorted(lost))
    data[victim * PAGE:(victim + 1) * PAGE] = bytes((i * 37) & 0xFF for i in range(PAGE))
    damaged = tmp.join("damaged.db")
    with open(damaged, "wb") as f:
        f.write(data)
    os.chmod(damaged, 0o600)

    # serve refuses it, exit 1, with the file, SQLite's words and the command
    conf = tmp.file("damaged.conf", config(damaged, endpoint))
    p = subprocess.run([bt.BRIDGE_BIN, "serve", "--config", conf], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    err = p.stderr.decode("utf-8", "replace")
    t.is_(p.returncode, 1, "serve refuses a damaged store (exit 1)", err[-2000:])
    msg = ""
    for line in err.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "start_failed":
            msg = rec.get("message", "")
    t.like(msg, r"^queue store %s is damaged \(SQLite's quick_check: \"[^\n]*\\n"
           % re.escape(damaged), "the refusal names the file and quotes SQLite, escaped (its "
           "line break as \\n)", err[-2000:])
    m = re.search(r"run: (webhook-bridge queue --store \S+ recover --output \S+)", msg)
    t.require(m, "the refusal gives the command to run", err[-2000:])
    t.is_(m.group(1), "webhook-bridge queue --store %s recover --output %s.recovered"
          % (damaged, damaged), "the command names the damaged store and a new file")
    t.ok(not bt.sanitizer_report(err), "no sanitizer report", bt.sanitizer_report(err))
    r = cli("check", "--config", conf)
    t.ok(r.rc == 1 and "is damaged" in r.stderr and "recover --output" in r.stderr,
         "check refuses it the same way", repr(r))

    # the command, exactly as given
    damaged_bytes = open(damaged, "rb").read()
    argv = shlex.split(m.group(1))
    r = cli(*argv[1:])
    t.is_(r.rc, 0, "queue recover runs", repr(r))
    recovered = damaged + ".recovered"
    t.like(r.stdout, r"saved: %d deliveries \(0 pending, %d dead letters\)"
           % (60 - len(lost), 60 - len(lost)), "it says how many rows it saved", r.stdout)
    got = re.search(r"unreadable: (\d+) ids? \(([^)]*)\)", r.stdout)
    t.ok(got and int(got.group(1)) >= len(lost), "and how many ids were unreadable", r.stdout)
    t.is_(oct(os.stat(recovered).st_mode & 0o777), "0o600", "the new store is 0600")
    saved = rows(recovered)
    t.is_(sorted(saved), sorted(set(original) - lost),
          "every row not on the damaged page saved, with its id")
    same = [i for i in saved if saved[i] == original[i]]
    t.is_(len(same), len(saved), "each saved row identical: headers, body, route, attempts, "
          "status, times, last error, checksum")
    r = cli("queue", "--store", damaged, "recover", "--output", recovered)
    t.ok(r.rc == 2 and "already exists" in r.stderr, "an existing output is never overwritten",
         repr(r))
    t.ok(open(damaged, "rb").read() == damaged_bytes, "the damaged file is only read")

    # the bridge starts on the new store and delivers every saved row
    sink = bt.Sink(port=port)
    try:
        b = start(config(recovered, endpoint), "recovered.conf")
        try:
            r = cli("queue", "--store", recovered, "retry", "--all")
            t.like(r.stdout, r"retried %d dead letters" % len(saved), "retry --all", repr(r))
            t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_depth") == 0
                             and len(sink.requests) >= len(saved), 30),
                 "the bridge on the recovered store delivers them")
            by_id = {r.header("X-Bridge-Delivery-Id"): r.body for r in list(sink.requests)}
            want = {original[i]["delivery_id"]: original[i]["body"] for i in saved}
            t.is_(sorted(by_id), sorted(want), "exactly the saved deliveries reached the sink")
            t.ok(all(by_id[k] == want[k] for k in want), "bodies byte-identical to the originals")
            r = post(b)
            t.is_(r.status, 202, "a new post is taken", repr(r))
            t.ok((r.json() or {}).get("queue_id", 0) > max(original),
                 "new rows get new ids, not the damaged store's", repr(r))
        finally:
            bt.stop_and_check(t, b)
    finally:
        sink.stop()


def t_corrupt_rows(_t):
    """A body byte flipped and an endpoint changed under the bridge: dead
    letters `corrupt`, never sent; the intact row goes out."""
    port = bt.refused_port()
    endpoint = "http://127.0.0.1:%d/in" % port
    store = tmp.join("flip.db")
    b = start(config(store, endpoint, max_attempts=1), "flip.conf")
    sink = None
    try:
        ids = []
        for _ in range(3):
            r = post(b)
            t.is_(r.status, 202, "stored", repr(r))
            ids.append(r.json()["queue_id"])
        t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_dead_letters") == 3, 20),
             "attempted once (endpoint down)")
        before = rows(store)
        db = sqlite3.connect(store, timeout=10)
        body = bytearray(before[ids[0]]["body"])
        pos = body.index(b'"')
        body[pos + 1] ^= 0x01
        db.execute("UPDATE deliveries SET body = ? WHERE id = ?", (bytes(body), ids[0]))
        db.execute("UPDATE deliveries SET endpoint = ? WHERE id = ?",
                   ("http://127.0.0.1:%d/elsewhere" % port, ids[1]))
        db.commit()
        db.close()
        sink = bt.Sink(port=port)
        r = cli("queue", "--config", b.config_path, "retry", *[str(i) for i in ids])
        t.is_(r.rc, 0, "the three retried", repr(r))
        t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_corrupt_total") == 2
                         and len(sink.requests) >= 1
                         and metric(b, "webhook_bridge_queue_depth") == 0, 20),
             "two dead-lettered corrupt (metric), one delivered")
        t.is_(delivered_ids(sink), [before[ids[2]]["delivery_id"]],
              "only the intact row reached the sink")
        t.ok(all(r.body != bytes(body) for r in sink.requests), "the flipped body never sent")
        r = cli("queue", "--config", b.config_path, "list", "--dead", "--json")
        listed = {d["id"]: d for d in (json.loads(x) for x in r.stdout.splitlines())}
        for i in ids[:2]:
            d = listed.get(i, {})
            t.ok(d.get("last_error", "").startswith("corrupt:") and
                 d.get("integrity") == "corrupt", "queue list: %d dead, corrupt" % i, repr(d))
        r = cli("queue", "--config", b.config_path, "list")
        t.like(r.stdout, r"(?m)^%d +dead .*corrupt:" % ids[0], "text list says corrupt", r.stdout)
        r = cli("queue", "--config", b.config_path, "show", str(ids[0]))
        t.like(r.stdout, r"integrity: +CORRUPT", "queue show says corrupt", r.stdout)
        recs = [x for x in b.log_records() if x.get("event") == "queue_dead_letter"
                and str(x.get("error", "")).startswith("corrupt:")]
        t.is_(len(recs), 2, "logged as dead letters with the reason", recs)
        # a retry does not make it sendable
        r = cli("queue", "--config", b.config_path, "retry", str(ids[0]))
        t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_corrupt_total") == 3, 20),
             "retried: corrupt again")
        t.is_(len(sink.requests), 1, "still never sent")
    finally:
        bt.stop_and_check(t, b)
        if sink:
            sink.stop()


def t_schema1(_t):
    """A store of the first schema (no checksum column): opened, migrated;
    its rows go out if their body is a JSON object, else dead letters."""
    port = bt.refused_port()
    endpoint = "http://127.0.0.1:%d/in" % port
    store = tmp.join("v1.db")
    b = start(config(store, endpoint, max_attempts=1), "v1.conf")
    try:
        ids = [post(b).json()["queue_id"] for _ in range(2)]
        t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_dead_letters") == 2, 20),
             "two rows attempted once")
    finally:
        bt.stop_and_check(t, b)
    before = rows(store)
    db = sqlite3.connect(store)
    db.executescript("ALTER TABLE deliveries DROP COLUMN checksum; DROP TABLE store_probe;"
                     "PRAGMA user_version = 1;")
    db.execute("UPDATE deliveries SET body = ? WHERE id = ?",
               (before[ids[1]]["body"][:-1], ids[1]))  # cut: not JSON any more
    db.execute("UPDATE deliveries SET status = 0, attempts = 0, next_attempt_ms = 0")
    db.commit()
    db.close()
    sink = bt.Sink(port=port)
    try:
        b = start(config(store, endpoint), "v1-again.conf")
        try:
            t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_depth") == 0
                             and len(sink.requests) >= 1, 20), "the migrated store is served")
            t.is_(delivered_ids(sink), [before[ids[0]]["delivery_id"]],
                  "the row with a JSON body sent, the cut one not")
            t.is_(metric(b, "webhook_bridge_queue_corrupt_total"), 1.0, "the cut one corrupt")
            r = cli("queue", "--config", b.config_path, "show", "--json", str(ids[1]))
            d = json.loads(r.stdout or "{}")
            t.ok(d.get("integrity") == "unchecked" and d.get("last_error", "").startswith(
                "corrupt:"), "shown unchecked, dead letter corrupt", repr(d))
            db = sqlite3.connect(store)
            cols = [c[1] for c in db.execute("PRAGMA table_info(deliveries)")]
            age = [c[2] for c in db.execute("PRAGMA index_info(deliveries_age)")]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            db.close()
            t.ok("checksum" in cols and version == 3, "migrated to schema 3",
                 repr((cols, version)))
            t.is_(age, ["status", "route", "created_ms"], "the age index has the route")
            r = post(b)
            t.is_(r.status, 202, "new posts stored", repr(r))
            t.ok(bt.wait_for(lambda: len(sink.requests) == 2, 20), "and delivered")
        finally:
            bt.stop_and_check(t, b)
    finally:
        sink.stop()


def t_write_failure(_t):
    """The store stops taking writes (RLIMIT_FSIZE 0 on the running bridge:
    every write to its files fails, for root too) while an attempt is out:
    the delivery is not sent again, /readyz and posts answer 503, and when
    writes work again it is recorded and the bridge is ready by itself."""
    hold = threading.Event()
    sink = bt.Sink()
    store = tmp.join("fail.db")
    b = start(config(store, sink.url("/in"), backoff_base_ms=100, backoff_max_ms=100),
              "fail.conf")
    try:
        r = post(b)
        t.is_(r.status, 202, "first post stored", repr(r))
        t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_delivered_total") == 1, 10),
             "and delivered")
        sink.default = bt.Reply(200, hold=hold)
        r = post(b)
        t.is_(r.status, 202, "second post stored", repr(r))
        second = r.json()["delivery_id"]
        t.require(sink.wait_requests(2, 10), "its attempt reached the sink (answer held)")
        resource.prlimit(b.proc.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        errors = metric(b, "webhook_bridge_queue_store_errors_total")
        hold.set()  # 200: the bridge cannot record it
        t.ok(bt.wait_for(lambda: bt.curl(b.admin_url("/readyz")).status == 503, 10),
             "/readyz 503 once the outcome cannot be stored")
        r = bt.curl(b.admin_url("/readyz"))
        t.like((r.json() or {}).get("message", ""), "outcomes of delivery attempts",
               "/readyz says why", repr(r))
        r = post(b)
        bt.check_json_response(t, r, 503, "a new post while the store fails",
                               error="queue_unavailable")
        t.like(r.header("Retry-After") or "", r"^[0-9]+$", "with Retry-After", repr(r))
        t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_store_errors_total")
                         >= errors + 4, 15), "the outcome is written again, failing, 4 times")
        t.is_(delivered_ids(sink).count(second), 1, "the delivery was not sent again")
        t.is_(len(sink.requests), 2, "nothing else was sent")
        errs = [x for x in b.log_records() if x.get("event") == "queue_store_error"]
        t.ok(errs and all(x.get("level") == "error" for x in errs) and len(errs) <= 2,
             "logged at error level, once (not at every retry)", errs)
        resource.prlimit(b.proc.pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        t.ok(bt.wait_for(lambda: bt.curl(b.admin_url("/readyz")).status == 200, 10),
             "/readyz 200 again by itself")
        t.ok(bt.wait_for(lambda: any(x.get("event") == "queue_store_recovered"
                                     for x in b.log_records()), 5),
             "the recovery is logged")
        t.ok(bt.wait_for(lambda: metric(b, "webhook_bridge_queue_depth") == 0, 5),
             "the delivery is recorded (depth 0)")
        t.is_(delivered_ids(sink).count(second), 1, "and was sent once")
        r = post(b)
        t.is_(r.status, 202, "posts stored again", repr(r))
        t.ok(bt.wait_for(lambda: len(sink.requests) == 3, 10), "and delivered")
    finally:
        hold.set()
        bt.stop_and_check(t, b)
        sink.stop()


def main():
    t.run("a damaged page: refused at start, recovered, delivered", t_damaged_page)
    t.run("rows changed under the bridge are dead letters 'corrupt'", t_corrupt_rows)
    t.run("a store of schema 1 is migrated, its rows checked as JSON", t_schema1)
    t.run("a store that fails its writes: unready, no resend, recovers", t_write_failure)
    tmp.cleanup()
    t.done()


if __name__ == "__main__":
    main()
