#!/usr/bin/python3
"""`replay`: the real binary sends fixtures and captures to loopback sinks."""

import json
import os
import pty
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
SECRET = "replay-secret"
AUTH = {"name": "Authorization", "value": "Bearer rp-token"}
V2_FIXTURES = os.path.join(bt.SOURCE_ROOT, "fixtures", "v2")
RULES = os.path.join(bt.SOURCE_ROOT, "fixtures", "rules")
FORWARD_HEADERS = ["host", "content-length", "content-type", "authorization",
                   "x-qualifio-signature", "x-bridge-delivery-id", "user-agent"]


def shipped_fixtures():
    """fixtures/v1 names mapped by the shipped rules: (mapped, refused) lists.
    Fixtures with their own rule file belong to other mappings."""
    mapped, refused = [], []
    for n in sorted(os.listdir(bt.V1_FIXTURES)):
        if not n.endswith(".json"):
            continue
        name = n[:-5]
        if os.path.exists(os.path.join(RULES, name + ".conf")):
            continue
        if os.path.exists(os.path.join(V2_FIXTURES, name + ".json")):
            mapped.append(name)
        elif os.path.exists(os.path.join(V2_FIXTURES, name + ".error")):
            refused.append(name)
    return mapped, refused



MAPPED, REFUSED = shipped_fixtures()


def fixture_dir(names, label):
    d = tmp.join(label)
    os.makedirs(d)
    for n in names:
        shutil.copy(os.path.join(bt.V1_FIXTURES, n + ".json"), d)
    return d


def golden(name):
    with open(os.path.join(V2_FIXTURES, name + ".json"), "rb") as f:
        return f.read().rstrip(b"\n")


def write_config(name, routes, **kw):
    return tmp.file(name, bt.config_text(routes, **kw))


def replay(t, args, timeout=60, stderr_fd=None):
    """Run replay --json; returns (Result, summary dict or None)."""
    if stderr_fd is not None:
        p = subprocess.run([bt.BRIDGE_BIN, "replay"] + args, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=stderr_fd, timeout=timeout)
        r = bt.Result(p.returncode, p.stdout, b"")
    else:
        r = bt.run_cli(["replay"] + args, timeout=timeout, t=t)
    summary = None
    if "--json" in args:
        try:
            summary = json.loads(r.stdout)
        except ValueError:
            pass
    return r, summary


def by_input(sink):
    with sink.lock:
        return list(sink.requests)


# --------------------------------------------------------------------------

def t_deliver(t, sink, cfg, fx_all):
    sink.reset()
    r, s = replay(t, ["--config", cfg, "--expect", V2_FIXTURES, "--json", fx_all])
    t.require(s is not None, "--json prints one JSON summary", r)
    t.is_(r.rc, 0, "all delivered and matched: exit 0", r)
    t.is_(s["payloads"], len(MAPPED) + len(REFUSED), "every fixture counted")
    t.is_(s["mapped"], len(MAPPED), "mapped count")
    t.is_(s["sent"], len(MAPPED), "one post per mapped fixture")
    t.is_(s["delivered"], len(MAPPED), "every post answered 2xx")
    t.is_(s["failed"], 0, "nothing failed", r)
    t.is_(s["refused_as_expected"], len(REFUSED), "refusals that .error files expect")
    t.is_(s["expect"], {"dir": V2_FIXTURES, "checked": len(MAPPED) + len(REFUSED),
                        "matched": len(MAPPED) + len(REFUSED), "mismatched": 0, "missing": 0},
          "every expectation matched")
    reqs = by_input(sink)
    t.is_(len(reqs), len(MAPPED), "sink saw exactly the posts")
    want = sorted(golden(n) for n in MAPPED)
    t.is_(sorted(q.body for q in reqs), want, "bodies are the golden v2 bytes")
    bad_sig = [q for q in reqs
               if q.header("X-Qualifio-Signature") != "sha256=" + bt.hmac_hex(SECRET, q.body)]
    t.ok(not bad_sig, "every post carries the HMAC of its exact body",
         repr(bad_sig[0]) if bad_sig else None)
    t.ok(all(q.header("Authorization") == AUTH["value"] for q in reqs), "auth header on every post")
    t.ok(all(sorted(k.lower() for k, _ in q.headers) == sorted(FORWARD_HEADERS) for q in reqs),
         "exactly the forward-mode headers", repr(reqs[0]) if reqs else None)
    t.ok(all(bt.UUID_RE.match(q.header("X-Bridge-Delivery-Id") or "") for q in reqs),
         "delivery id on every post")
    t.is_([q.path for q in reqs[:1]], ["/hook"], "endpoint path from the route")
    t.ok(sink.max_inflight <= 1, "default concurrency 1: one post at a time")


def t_same_as_serve(t, sink, cfg_text):
    """The exact request `serve` sends in forward mode, byte for byte."""
    sink.reset()
    b = bt.Bridge(tmp, cfg_text, name="serve-forward.conf").start()
    try:
        path, raw, _ = bt.v1_fixture()
        resp = bt.curl(b.url("/"), raw)
        t.is_(resp.status, 200, "serve delivered the fixture", resp)
        t.require(sink.wait_requests(1), "sink got the serve post")
        live = by_input(sink)[0]
    finally:
        bt.stop_and_check(t, b)
    sink.reset()
    r, _ = replay(t, ["--config", b.config_path, path])
    t.is_(r.rc, 0, "replay of the same fixture exits 0", r)
    t.require(sink.wait_requests(1), "sink got the replay post")
    rep = by_input(sink)[0]
    t.is_(rep.body, live.body, "same body as serve")
    for h in ("Content-Type", "Authorization", "X-Qualifio-Signature", "X-Bridge-Delivery-Id",
              "User-Agent", "Host"):
        t.is_(rep.header(h), live.header(h), "same %s as serve" % h)
    t.is_(sorted(k.lower() for k, _ in rep.headers), sorted(k.lower() for k, _ in live.headers),
          "same header set as serve")


def t_status_500(t, sink, cfg, fx_mapped):
    sink.reset()
    sink.default = bt.Reply(500, b'{"error":"boom"}')
    r, s = replay(t, ["--config", cfg, "--json", fx_mapped])
    t.is_(r.rc, 1, "endpoint answering 500: exit 1", r)
    t.require(s is not None, "summary parsed", r)
    t.is_(s["sent"], len(MAPPED), "every payload still sent")
    t.is_(s["delivered"], 0, "none delivered")
    t.is_(s["failures"], {"status 500": len(MAPPED)}, "failures counted by status")
    t.like(r.stderr, r"representative\.json: status 500: endpoint answered 500",
           "each failure named on stderr")
    sink.reset()
    sink.reply(bt.Reply(503))
    r, s = replay(t, ["--config", cfg, "--expect", V2_FIXTURES, fx_mapped])
    t.is_(r.rc, 1, "one 503 among 2xx: exit 1", r)
    t.like(r.stdout, r"failed\s+1\n\s+status 503\s+1\n", "text summary lists the status")
    t.like(r.stdout, r"2xx\s+%d\n" % (len(MAPPED) - 1), "text summary counts 2xx")


def t_mismatch(t, sink, cfg, fx_mapped):
    exp = tmp.join("expect-wrong")
    shutil.copytree(V2_FIXTURES, exp)
    doc = bt.load_json_exact(golden("representative"))
    doc["state"] = "INCOMPLETE"
    with open(os.path.join(exp, "representative.json"), "w") as f:
        f.write(bt.dumps_exact(doc))
    # key order is not a difference: write another one with keys reversed
    doc = bt.load_json_exact(golden("minimal"))
    with open(os.path.join(exp, "minimal.json"), "w") as f:
        f.write(json.dumps(dict(reversed(list(json.loads(bt.dumps_exact(doc)).items()))),
                           indent=2))
    sink.reset()
    r, s = replay(t, ["--config", cfg, "--expect", exp, "--json", fx_mapped])
    t.is_(r.rc, 1, "one wrong expected file: exit 1", r)
    t.require(s is not None, "summary parsed", r)
    t.is_(s["expect"]["mismatched"], 1, "exactly one mismatch (key order ignored)", r)
    t.is_(s["delivered"], len(MAPPED), "mismatches are still delivered")
    probs = [p for p in s["problems"] if p["outcome"] == "mismatch"]
    t.ok(len(probs) == 1 and probs[0]["input"].endswith("representative.json")
         and "state" in probs[0]["message"] and "INCOMPLETE" in probs[0]["message"],
         "mismatch names the fixture, the path and the values", probs)
    t.like(r.stderr, r"representative\.json: mismatch: .*state", "mismatch on stderr")

    os.remove(os.path.join(exp, "incomplete.json"))
    r, s = replay(t, ["--config", cfg, "--expect", exp, "--dry-run", "--json", fx_mapped])
    t.is_(s and s["expect"]["missing"], 1, "a missing expected file is counted", r)
    t.is_(r.rc, 1, "and fails the run")


def t_dry_run(t, sink, cfg, fx_all):
    sink.reset()
    accepted = len(sink.accepted)
    r, s = replay(t, ["--config", cfg, "--expect", V2_FIXTURES, "--dry-run", "--json", fx_all])
    t.is_(r.rc, 0, "dry run with matching expectations: exit 0", r)
    t.is_(s and (s["sent"], s["mapped"], s["dry_run"]), (0, len(MAPPED), True),
          "dry run maps and counts, sends nothing")
    t.is_(sink.connections_since(accepted), 0, "the dry run opened no connection to the sink")
    t.is_(len(by_input(sink)), 0, "sink saw 0 requests")
    r, _ = replay(t, ["--config", bt.SHIPPED_CONFIG, "--dry-run", fx_all])
    t.is_(r.rc, 1, "without --expect the refused fixtures are failures", r)
    t.like(r.stdout, r"mapping_failed\s+\d+", "refusals tallied as mapping_failed")
    t.like(r.stdout, r"invalid_v1\s+\d+", "invalid JSON tallied as invalid_v1")
    # the shipped config, named relative to the source root (the working
    # directory) as the golden test does
    r, s = replay(t, ["--config", "mappings/bridge.conf", "--expect", "fixtures/v2",
                      "--dry-run", "--json", fx_all])
    t.is_(r.rc, 0, "the shipped config matches fixtures/v2 in a dry run", r)
    t.is_(s and (s["expect"]["matched"], s["refused_as_expected"]),
          (len(MAPPED) + len(REFUSED), len(REFUSED)), "matched and refused counts")
    t.ok(any("(rule " in open(os.path.join(V2_FIXTURES, n + ".error")).read() for n in REFUSED),
         "a refusal naming its rule file is among them")


def t_capture(t, sink, cfg):
    """NDJSON input: capture lines (the record format), plain v1 lines."""
    _, raw, doc = bt.v1_fixture()
    v1_min = open(os.path.join(bt.V1_FIXTURES, "minimal.json"), "rb").read()
    form_doc = dict(doc)
    form_doc["participation_id"] = "0f3c7a52-2f6e-4f1c-9a51-000000000002"
    # a form post as the recorder writes it: every value a string
    form_body = {k: ("" if v is None else v if isinstance(v, (str, list)) else
                     ("true" if v is True else "false" if v is False else str(v)))
                 for k, v in form_doc.items()}
    form_body["email"] = "[redacted]"
    lines = [
        {"time": "2024-05-01T09:30:00.123Z", "content_type": "application/json",
         "headers": {"User-Agent": "Qualifio"}, "body": "RAW"},
        {"time": "2024-05-01T09:30:01.000Z", "content_type": "application/x-www-form-urlencoded",
         "headers": {}, "body": form_body},
        {"time": "2024-05-01T09:30:02.000Z", "content_type": "application/json",
         "headers": {}, "invalid": True, "reason": "invalid JSON at byte 3", "body_bytes": 12},
    ]
    text = ""
    for l in lines:
        if l.get("body") == "RAW":
            text += json.dumps(l).replace('"RAW"', bt.dumps_exact(doc)) + "\n"
        else:
            text += json.dumps(l) + "\n"
    text += "\n" + json.dumps(json.loads(v1_min)) + "\n"   # blank line, then a bare v1 body
    cap = tmp.file("capture.ndjson", text)
    # expectations per line: capture.1.json, capture.2.json, capture.5.json
    exp = tmp.join("expect-capture")
    os.makedirs(exp)
    for n, body in ((1, bt.dumps_exact(doc)), (2, json.dumps(form_body)),
                    (5, json.dumps(json.loads(v1_min)))):
        m = bt.run_cli(["map", "--mapping", bt.MAPPING], stdin=body.encode())
        t.require(m.rc == 0, "map line %d for the expectation" % n, m)
        with open(os.path.join(exp, "capture.%d.json" % n), "wb") as f:
            f.write(m.out)
    sink.reset()
    r, s = replay(t, ["--config", cfg, "--expect", exp, "--json", cap])
    t.is_(r.rc, 0, "capture replay exits 0", r)
    t.require(s is not None, "summary parsed", r)
    t.is_((s["payloads"], s["sent"], s["delivered"], s["skipped"]), (4, 3, 3, 1),
          "3 sent, the invalid record skipped, the blank line ignored")
    t.is_(s["skips"], {"recorded_invalid": 1}, "skip reason")
    t.is_(s["expect"]["matched"], 3, "capture lines compared with NAME.LINE.json")
    reqs = by_input(sink)
    t.is_(len(reqs), 3, "sink got 3 posts")
    ids = [json.loads(q.body)["id"] for q in reqs]
    t.is_(ids[:2], ["4B1E9345-1C0C-463F-82A0-E6857DBDFE80",
                    "0F3C7A52-2F6E-4F1C-9A51-000000000002"],
          "posts in capture order (concurrency 1)")
    t.like(r.stderr, r"capture\.ndjson:3: skipped: recorded as invalid", "skip named by line")
    campaign = json.loads(reqs[0].body)["campaign"]["id"]
    t.is_(campaign, doc["campaign_id"] and int(doc["campaign_id"]), "numbers survive the capture")


def t_rate(t, sink, cfg):
    path, raw, doc = bt.v1_fixture()
    d = tmp.join("rate")
    os.makedirs(d)
    with open(os.path.join(d, "burst.ndjson"), "w") as f:
        for i in range(10):
            f.write(bt.v1_variant(doc, participation_id="00000000-0000-4000-8000-%012d" % i)
                    .decode() + "\n")
    sink.reset()
    start = time.monotonic()
    r, s = replay(t, ["--config", cfg, "--rate", "20/s", "--json", d])
    elapsed = time.monotonic() - start
    t.is_(r.rc, 0, "rate-limited replay exits 0", r)
    reqs = by_input(sink)
    t.is_(len(reqs), 10, "10 posts")
    span = reqs[-1].time - reqs[0].time if len(reqs) == 10 else 0
    # 10 posts at 20/s: 9 intervals of 50 ms between the first and the last
    t.ok(span >= 0.40, "posts spread over >= 0.40 s at 20/s (got %.3f s)" % span)
    t.ok(elapsed < 10, "and the run is not absurdly slow (%.2f s)" % elapsed)
    four = tmp.file("four.ndjson", "".join(
        bt.v1_variant(doc, participation_id="00000000-0000-4000-8000-1%011d" % i).decode() + "\n"
        for i in range(4)))
    sink.reset()
    r, s = replay(t, ["--config", cfg, "--rate", "240/m", four])
    t.is_(r.rc, 0, "per-minute rate accepted", r)
    reqs = by_input(sink)
    span = reqs[-1].time - reqs[0].time if len(reqs) == 4 else 0
    t.ok(span >= 0.65, "240/m = 4/s: 4 posts over >= 0.65 s (got %.2f s)" % span)


def t_concurrency(t, sink, cfg):
    d = tmp.join("conc")
    os.makedirs(d)
    _, _, doc = bt.v1_fixture()
    with open(os.path.join(d, "c.ndjson"), "w") as f:
        for i in range(8):
            f.write(bt.v1_variant(doc, participation_id="00000000-0000-4000-9000-%012d" % i)
                    .decode() + "\n")
    sink.reset()
    sink.default = bt.Reply(200, delay=0.3)
    start = time.monotonic()
    r, s = replay(t, ["--config", cfg, "--concurrency", "4", "--json", d])
    elapsed = time.monotonic() - start
    t.is_(r.rc, 0, "concurrent replay exits 0", r)
    t.is_(s and s["delivered"], 8, "8 delivered")
    t.ok(2 <= sink.max_inflight <= 4, "at most 4 in flight, more than 1 (saw %d)"
         % sink.max_inflight)
    t.ok(elapsed < 8 * 0.3, "faster than one at a time (%.2f s)" % elapsed)


def t_routing(t, sink):
    _, raw, doc = bt.v1_fixture()
    cfg = write_config("routes.conf", [
        bt.route("camp", "forward", endpoint=sink.url("/camp"), secret="s-camp",
                 auth_header=AUTH, match={"campaign_id": [int(doc["campaign_id"])]}),
        bt.route("site", "forward", endpoint=sink.url("/site"), secret="s-site",
                 auth_header=AUTH, match={"website_id": [777]}),
    ])
    d = tmp.join("routing")
    os.makedirs(d)
    with open(os.path.join(d, "a.json"), "wb") as f:
        f.write(raw)
    with open(os.path.join(d, "b.json"), "wb") as f:
        f.write(bt.v1_variant(doc, campaign_id=1, website_id="777"))
    with open(os.path.join(d, "c.json"), "wb") as f:
        f.write(bt.v1_variant(doc, campaign_id=2, website_id="2"))
    sink.reset()
    r, s = replay(t, ["--config", cfg, "--json", d])
    t.is_(r.rc, 1, "an unrouted payload fails the run", r)
    t.is_(s and s["failures"], {"no_route": 1}, "counted as no_route")
    reqs = sorted(by_input(sink), key=lambda q: q.path)
    t.is_([q.path for q in reqs], ["/camp", "/site"], "each payload to its route's endpoint")
    t.ok(len(reqs) == 2 and reqs[0].header("X-Qualifio-Signature") ==
         "sha256=" + bt.hmac_hex("s-camp", reqs[0].body) and
         reqs[1].header("X-Qualifio-Signature") == "sha256=" + bt.hmac_hex("s-site", reqs[1].body),
         "each signed with its route's secret")
    sink.reset()
    r, s = replay(t, ["--config", cfg, "--route", "site", "--json", d])
    t.is_(r.rc, 0, "--route sends everything through one route", r)
    t.is_(sorted(q.path for q in by_input(sink)), ["/site"] * 3, "all to that route")


def t_to_and_shipped(t, sink, fx_mapped):
    """The shipped dry-run config has no endpoint: --to gives one."""
    sink.reset()
    r, s = replay(t, ["--config", bt.SHIPPED_CONFIG, "--to", sink.url("/other"), "--json",
                      fx_mapped])
    t.is_(r.rc, 0, "--to with the shipped config exits 0", r)
    reqs = by_input(sink)
    t.is_(len(reqs), len(MAPPED), "all posted to --to")
    t.ok(all(q.path == "/other" for q in reqs), "at the --to path")
    t.like(r.stderr, r"route 'default' has no secret: posts are sent unsigned",
           "unsigned posts are announced")
    t.ok(all(q.header("X-Qualifio-Signature") is None for q in reqs), "and are unsigned")
    r, _ = replay(t, ["--config", bt.SHIPPED_CONFIG, fx_mapped])
    t.is_(r.rc, 2, "no endpoint and no --to: usage error", r)
    t.like(r.stderr, r"--to URL or --dry-run", "which says what to give")
    r, s = replay(t, ["--config", bt.SHIPPED_CONFIG, "--to",
                      "http://127.0.0.1:%d/x" % bt.refused_port(), "--json", fx_mapped])
    t.is_(r.rc, 1, "refused connections: exit 1", r)
    t.is_(s and list(s["failures"].keys()), ["connect_failed"], "counted as connect_failed")


def t_usage(t, cfg, fx_mapped):
    cases = [
        ([fx_mapped], "--config FILE is required"),
        (["--config", cfg], "at least one PATH"),
        (["--config", cfg, "--route", "nope", fx_mapped], "no route named 'nope'"),
        (["--config", cfg, "--rate", "fast", fx_mapped], "--rate"),
        (["--config", cfg, "--rate", "0", fx_mapped], "--rate"),
        (["--config", cfg, "--concurrency", "0", fx_mapped], "--concurrency"),
        (["--config", cfg, "--to", "ftp://x/", fx_mapped], "--to"),
        (["--config", cfg, "--expect", "/nonexistent-dir", fx_mapped], "not a folder"),
        (["--config", cfg, "/nonexistent-fixture.json"], "nonexistent-fixture"),
        (["--config", tmp.file("bad.conf", "routes = (;\n"), fx_mapped], "bad.conf"),
    ]
    for args, msg in cases:
        r, _ = replay(t, args)
        t.is_(r.rc, 2, "usage error exits 2: %s" % msg, r)
        t.ok(msg in r.stderr, "message says %r" % msg, r.stderr)
    r = bt.run_cli(["replay", "--help"])
    t.ok(r.rc == 0 and "--expect DIR" in r.stdout, "--help on stdout, exit 0")


def t_limits(t, sink):
    """Inputs past the limits are refused one by one, never crash the run."""
    cfg = write_config("limits.conf", [
        bt.route("main", "forward", endpoint=sink.url("/hook"), secret=SECRET)],
        limits={"max_body": 4096})
    _, raw, doc = bt.v1_fixture()
    d = tmp.join("limits")
    os.makedirs(d)
    with open(os.path.join(d, "big.json"), "wb") as f:
        f.write(bt.v1_variant(doc, url="x" * 5000))
    with open(os.path.join(d, "lines.ndjson"), "wb") as f:
        f.write(b"[" * 30000 + b"]" * 30000 + b"\n")               # deep nesting
        f.write(b'{"a":"' + b"y" * 100000 + b'"}\n')               # over max_line
        f.write(b'{"participation_id":"x\x00"}\n')                # NUL byte
        f.write(b'{"time":"t","body":{"nested":{"no":1}}}\n')     # capture, bad v1 body
        f.write(raw.replace(b"\n", b"") + b"\n")                  # one good line
    sink.reset()
    r, s = replay(t, ["--config", cfg, "--json", d])
    t.is_(r.rc, 1, "refusals fail the run", r)
    t.require(s is not None, "summary parsed", r)
    t.is_((s["payloads"], s["delivered"]), (6, 1), "the good line still delivered")
    t.is_(s["failures"].get("too_large"), 2, "over max_body and over the line limit: too_large",
          s["failures"])
    t.is_(s["failures"].get("invalid_line", 0) + s["failures"].get("invalid_v1", 0), 3,
          "deep nesting, NUL byte and a nested body refused", s["failures"])
    t.like(r.stderr, r"lines\.ndjson:1: invalid_line: the line nests deeper", "nesting named")
    t.like(r.stderr, r"lines\.ndjson:2: too_large: line longer than", "long line named")


def t_interrupt(t, sink, cfg):
    d = tmp.join("interrupt")
    os.makedirs(d)
    _, _, doc = bt.v1_fixture()
    with open(os.path.join(d, "slow.ndjson"), "w") as f:
        for i in range(10):
            f.write(bt.v1_variant(doc, participation_id="00000000-0000-4000-a000-%012d" % i)
                    .decode() + "\n")
    sink.reset()
    sink.default = bt.Reply(200, delay=0.6)
    p = subprocess.Popen([bt.BRIDGE_BIN, "replay", "--config", cfg, "--json", d],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t.require(sink.wait_requests(1, 10), "first post arrived")
    p.send_signal(2)
    out, err = p.communicate(timeout=20)
    t.is_(p.returncode, 1, "interrupted run exits 1", err)
    s = json.loads(out.decode())
    t.is_((s["interrupted"], s["sent"], s["delivered"]), (True, 1, 1),
          "the post in flight finishes, nothing more is sent")
    bt.check_no_sanitizer_report(t, err, "no sanitizer report after SIGINT")
    t.like(err.decode(), r"interrupted; waiting for 1 post", "says what it waits for")


def t_progress(t, sink, cfg, fx_mapped):
    sink.reset()
    r, _ = replay(t, ["--config", cfg, fx_mapped])
    t.ok("\r" not in r.stderr and "[#" not in r.stderr, "no progress bar when stderr is not a tty")
    master, slave = pty.openpty()
    try:
        r, _ = replay(t, ["--config", cfg, fx_mapped], stderr_fd=slave)
        os.close(slave)
        slave = None
        out = bt.pty_read_all(master)
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    text = out.decode("utf-8", "replace")
    t.is_(r.rc, 0, "replay with a tty on stderr exits 0", r)
    t.like(text, r"\r\x1b\[K\[#+\.*\] \d+/%d" % len(MAPPED), "progress bar drawn on the tty",
           text[-500:])
    t.ok(text.endswith("\r\x1b[K"), "and cleared at the end", repr(text[-80:]))


def main():
    sink = bt.Sink()
    try:
        routes = [bt.route("main", "forward", endpoint=sink.url("/hook"), auth_header=AUTH,
                           secret=SECRET)]
        cfg_text = bt.config_text(routes, workers=1)
        cfg = tmp.file("replay.conf", cfg_text)
        fx_all = fixture_dir(MAPPED + REFUSED, "fixtures-all")
        fx_mapped = fixture_dir(MAPPED, "fixtures-mapped")
        t.ok(len(MAPPED) >= 5 and len(REFUSED) >= 3,
             "shipped fixtures found (%d mapped, %d refused)" % (len(MAPPED), len(REFUSED)))
        t.run("deliver", t_deliver, sink, cfg, fx_all)
        t.run("same as serve", t_same_as_serve, sink, cfg_text)
        t.run("status 500", t_status_500, sink, cfg, fx_mapped)
        t.run("mismatch", t_mismatch, sink, cfg, fx_mapped)
        t.run("dry run", t_dry_run, sink, cfg, fx_all)
        t.run("capture", t_capture, sink, cfg)
        t.run("rate", t_rate, sink, cfg)
        t.run("concurrency", t_concurrency, sink, cfg)
        t.run("routing", t_routing, sink)
        t.run("--to", t_to_and_shipped, sink, fx_mapped)
        t.run("usage", t_usage, cfg, fx_mapped)
        t.run("progress", t_progress, sink, cfg, fx_mapped)
        t.run("limits", t_limits, sink)
        t.run("interrupt", t_interrupt, sink, cfg)
    finally:
        sink.stop()
        tmp.cleanup()
    t.done()


main()
