#!/usr/bin/python3
"""One translate path: `serve` and `replay` take the same payload the same
way (parse limits from the config, the same route choice, the same words
when no route matches)."""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
HOOK = "/webhook/v1"


def post(bridge, body):
    return bt.curl(bridge.url(HOOK), body, content_type="application/json")


def payload_dir(label, body):
    d = tmp.join(label)
    os.makedirs(d)
    with open(os.path.join(d, "post.json"), "wb") as f:
        f.write(body)
    return d


def replay_json(cfg, d):
    r = bt.run_cli(["replay", "--config", cfg, "--dry-run", "--json", d], timeout=60, t=t)
    try:
        return r, json.loads(r.stdout)
    except ValueError:
        return r, None


def t_max_string(t):
    """A value over the default 65,536 bytes, under a raised max_string."""
    _, _, doc = bt.v1_fixture()
    body = bt.v1_variant(doc, lastname="L" * 70000)
    cfg = bt.config_text([bt.route("dry")], path=HOOK,
                         limits={"max_string": 131072, "max_body": 1048576})
    b = t.start(bt.Bridge(tmp, cfg, "max-string.conf"), "bridge with max_string 131072")
    if not b:
        return
    try:
        r = post(b, body)
        bt.check_json_response(t, r, 200, "serve takes a 70,000-byte value under max_string")
    finally:
        bt.stop_and_check(t, b, "max_string bridge")
    r, s = replay_json(b.config_path, payload_dir("long-value", body))
    t.is_(r.rc, 0, "replay takes the same payload under the same config", r)
    t.is_(s and s.get("mapped"), 1, "replay maps it", s)

    # and both refuse it under the default limit, with the same reason
    cfg = bt.config_text([bt.route("dry")], path=HOOK)
    b = t.start(bt.Bridge(tmp, cfg, "default-string.conf"), "bridge with the default limits")
    if not b:
        return
    try:
        r = post(b, body)
        d = bt.check_json_response(t, r, 400, "serve refuses it under the default max_string",
                                   error="invalid_json")
    finally:
        bt.stop_and_check(t, b, "default-limits bridge")
    r, s = replay_json(b.config_path, payload_dir("long-value-default", body))
    t.is_(r.rc, 1, "replay refuses it under the default max_string", r)
    msgs = [p.get("message") for p in (s or {}).get("problems", [])]
    t.is_(msgs, [d and d.get("message")], "replay gives serve's reason", s)


def t_no_route(t):
    W, C = 31337, 424242
    want = "no route matches website_id %d and campaign_id %d" % (W, C)
    _, _, doc = bt.v1_fixture()
    body = bt.v1_variant(doc, website_id=W, campaign_id=C)
    cfg = bt.config_text([bt.route("only-site-1", match={"website_id": [1]})], path=HOOK)
    b = t.start(bt.Bridge(tmp, cfg, "no-route.conf"), "bridge with one website route")
    if not b:
        return
    try:
        r = post(b, body)
        d = bt.check_json_response(t, r, 422, "serve: unrouted post", error="no_route")
        t.is_(d and d.get("message"), want, "serve: the no-route message", r)
    finally:
        bt.stop_and_check(t, b, "no-route bridge")
    r, s = replay_json(b.config_path, payload_dir("unrouted", body))
    t.is_(r.rc, 1, "replay: the unrouted payload fails the run", r)
    t.is_([(p.get("outcome"), p.get("message")) for p in (s or {}).get("problems", [])],
          [("no_route", want)], "replay: the same no-route message", s)

    # one source: the words are written once in the program
    src = os.path.join(bt.SOURCE_ROOT, "bridge")
    hits = []
    for name in sorted(os.listdir(src)):
        if name.endswith((".c", ".h")):
            with open(os.path.join(src, name), encoding="utf-8") as f:
                hits += ["%s:%d" % (name, i + 1) for i, line in enumerate(f)
                         if re.search(r"no route matches", line)]
    t.is_(len(hits), 1, "the no-route message is written once (%s)" % ", ".join(hits), hits)


t.run("max_string", t_max_string)
t.run("no_route", t_no_route)
tmp.cleanup()
t.done()
