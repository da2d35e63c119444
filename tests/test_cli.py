#!/usr/bin/python3
"""Command line: --version, --help, usage errors, `check` and `map`."""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()


def t_version(t):
    r = bt.run_cli(["--version"], t=t)
    t.is_(r.rc, 0, "--version exits 0", r)
    t.is_(r.stdout, "webhook-bridge %s\n" % bt.VERSION, "--version prints name and version")


def t_help(t):
    r = bt.run_cli(["--help"], t=t)
    t.is_(r.rc, 0, "--help exits 0", r)
    t.like(r.stdout.lower(), r"usage", "--help prints usage on stdout", r)
    for cmd in ("serve", "map", "check"):
        t.ok(cmd in r.stdout, "--help names the %s command" % cmd, r)
    want = {
        "serve": ["--config"],
        "map": ["--mapping", "--ndjson", "--form"],
        "check": ["--config", "--mapping"],
    }
    for cmd, opts in want.items():
        r = bt.run_cli([cmd, "--help"], t=t)
        t.is_(r.rc, 0, "%s --help exits 0" % cmd, r)
        t.like(r.stdout.lower(), r"usage", "%s --help prints usage on stdout" % cmd, r)
        t.ok(cmd in r.stdout, "%s --help names its command" % cmd, r)
        for o in opts:
            t.ok(o in r.stdout, "%s --help documents %s" % (cmd, o), r)


def t_usage_errors(t):
    cases = [
        (["frobnicate"], "unknown command"),
        (["--frobnicate"], "unknown global option"),
        (["map", "--frobnicate", "--mapping", bt.MAPPING], "unknown map option"),
        (["check", "--frobnicate"], "unknown check option"),
        (["serve", "--frobnicate"], "unknown serve option"),
        (["serve", "--config"], "serve --config without its argument"),
        (["map", "--mapping"], "map --mapping without its argument"),
    ]
    for args, what in cases:
        r = bt.run_cli(args, t=t, timeout=10)
        t.is_(r.rc, 2, "%s: exit 2" % what, r)
        t.ok(r.stderr.strip() != "", "%s: message on stderr" % what, r)
        t.is_(r.stdout, "", "%s: nothing on stdout" % what)


def t_check_shipped(t):
    r = bt.run_cli(["check", "--config", bt.SHIPPED_CONFIG], t=t)
    t.is_(r.rc, 0, "check --config mappings/bridge.conf exits 0", r)
    t.like(r.stdout, r"(?m)^.*\bok\b.*$", "check --config prints an ok line", r)
    r = bt.run_cli(["check", "--mapping", bt.MAPPING], t=t)
    t.is_(r.rc, 0, "check --mapping mappings/qualifio-v1-to-v2.conf exits 0", r)
    t.like(r.stdout, r"(?m)^.*\bok\b.*$", "check --mapping prints an ok line", r)


# Broken configs: each "@N" comment marks a line where an error is planted.
# Routes start with "{ name" on one line so a group's line is unambiguous.
GOOD_ROUTE = ('  { name = "good"; mapping = "%s"; mode = "dry-run"; }' % bt.MAPPING)

BROKEN = {
    "syntax": (
        'listen = { address = "127.0.0.1";\n'
        '  port = = 8080; path = "/"; };\n'                        # 2: syntax error
        'routes = (\n' + GOOD_ROUTE + '\n);\n',
        [(2, None)]),
    "unknown-mode": (
        'listen = { address = "127.0.0.1"; port = 0; path = "/"; };\n'
        'routes = (\n'
        '  { name = "r1";\n'
        '    mapping = "%s";\n'
        '    mode = "fast";\n'                                    # 5: unknown mode
        '  }\n'
        ');\n' % bt.MAPPING,
        [(5, r"mode|fast")]),
    "no-endpoint": (
        'listen = { address = "127.0.0.1"; port = 0; path = "/"; };\n'
        'routes = (\n'
        + GOOD_ROUTE + ',\n'
        '  { name = "fw"; mode = "forward";\n'                    # 4: forward, no endpoint
        '    mapping = "%s";\n'
        '    secret = "s3cret";\n'
        '    auth_header = { name = "Authorization"; value = "Bearer x"; };\n'
        '  }\n'
        ');\n' % bt.MAPPING,
        [(4, r"endpoint")]),
    "bad-mapping": (
        'listen = { address = "127.0.0.1"; port = 0; path = "/"; };\n'
        '\n'
        'routes = (\n'
        '  { name = "m1"; mode = "dry-run";\n'
        '    mapping = "/nonexistent-dir/nope.conf";\n'            # 5: bad mapping path
        '  }\n'
        ');\n',
        [(5, r"nope\.conf")]),
    "several": (
        'listen = { address = "127.0.0.1"; port = 0; path = "/"; };\n'
        'routes = (\n'
        '  { name = "a"; mapping = "%s";\n'
        '    mode = "sideways";\n'                                # 4: unknown mode
        '  },\n'
        '  { name = "b"; mode = "forward"; mapping = "%s"; secret = "k"; },\n'  # 6: no endpoint
        '  { name = "c"; mode = "dry-run";\n'
        '    mapping = "/nonexistent-dir/other.conf";\n'           # 8: bad mapping path
        '  }\n'
        ');\n' % (bt.MAPPING, bt.MAPPING),
        [(4, r"mode|sideways"), (6, r"endpoint"), (8, r"other\.conf")]),
}


def t_check_broken(t, name):
    text, planted = BROKEN[name]
    path = tmp.file("broken-%s.conf" % name, text)
    r = bt.run_cli(["check", "--config", path], t=t)
    t.is_(r.rc, 1, "check %s: exit 1" % name, r)
    t.ok(not re.search(r"(?m)^ok\b", r.stdout), "check %s: no ok line" % name, r)
    lines = r.stderr.splitlines()
    loc = re.compile(r"^(.+):(\d+): (.+)$")
    errors = [l for l in lines if loc.match(l)]
    # Besides the error lines, at most a closing count ("N error(s)") is allowed,
    # and it must agree with them.
    rest = [l for l in lines if l.strip() and not loc.match(l)]
    summary = [l for l in rest if re.match(r"^(\d+) errors?(\(s\))?$", l.strip())]
    t.ok(errors and rest == summary[-1:] and (not rest or lines[-1] == rest[0]),
         "check %s: every stderr line is file:line: message (plus a final count)" % name,
         "%s\n%s" % ("\n".join(rest), r))
    if summary:
        reported = [l for l in lines if l.strip() and l not in summary]
        t.is_(int(re.match(r"\d+", summary[-1].strip()).group(0)), len(reported),
              "check %s: the final count matches the error lines" % name, r)
    for line_no, pattern in planted:
        hits = [l for l in lines if l.startswith("%s:%d: " % (path, line_no))]
        t.ok(hits, "check %s: error reported at %s:%d" % (name, os.path.basename(path), line_no),
             r)
        if pattern and hits:
            t.ok(any(re.search(pattern, h) for h in hits),
                 "check %s: message at line %d mentions /%s/" % (name, line_no, pattern), r)


def t_map_fixture(t):
    path, raw, doc = bt.v1_fixture()
    t.diag("representative fixture: %s" % os.path.relpath(path, bt.SOURCE_ROOT))
    r = bt.map_output(path, t=t)
    t.require(r.rc == 0, "map %s exits 0" % os.path.basename(path), r)
    t.ok(r.out.endswith(b"\n") and r.out.count(b"\n") == 1,
         "map prints one line ending in a newline", r)
    v2 = json.loads(r.out)
    t.ok(isinstance(v2, dict), "map output is a JSON object", r)
    bt.check_v2(t, v2, "map output")
    t.is_(v2.get("id"), str(doc.get("participation_id", "")).upper(),
          "v2 id is the upper-cased participation_id")
    r2 = bt.run_cli(["map", "--mapping", bt.MAPPING], stdin=raw, t=t)
    t.is_(r2.rc, 0, "map from stdin exits 0", r2)
    t.is_(r2.out, r.out, "map from stdin prints the same bytes as map FILE")
    r3 = bt.map_output(path)
    t.is_(r3.out, r.out, "map is deterministic")


def _offset_case(t, name, body, at, span=1):
    p = tmp.file("malformed-%s.json" % name, body)
    r = bt.run_cli(["map", "--mapping", bt.MAPPING, p], t=t)
    t.is_(r.rc, 1, "map %s: exit 1" % name, r)
    t.is_(r.out, b"", "map %s: nothing on stdout" % name)
    t.like(r.stderr, r"^error: ", "map %s: stderr starts with 'error: '" % name, r)
    # The offset of the offending byte: its 0-based index, or the count of
    # bytes read when the parser noticed (index + 1); inside a multi-byte
    # token, anywhere up to the token's end.
    nums = [int(x) for x in re.findall(r"\d+", r.stderr.replace(p, "INPUT"))]
    t.ok(any(at <= n <= at + span for n in nums),
         "map %s: message gives the byte offset %d" % (name, at), r)


def t_map_malformed(t):
    body = b'{"participation_id": "0d5b8bd6-2d5f-4f3e-9d2a-1f0c9c4f0a11", "ip": @}'
    _offset_case(t, "bad-char", body, body.index(b"@"))
    body = b'{"participation_id": "x", "status": "complete"}}'
    _offset_case(t, "trailing-brace", body, body.rindex(b"}"))
    body = b'{"participation_id": "x", "status": "complete"} trailing'
    _offset_case(t, "trailing-word", body, body.index(b"trailing"), len(b"trailing"))
    body = b'{"participation_id": "x",, "status": "complete"}'
    _offset_case(t, "double-comma", body, body.index(b",,") + 1)
    body = b'{"participation_id": "x", "status": "compl'
    _offset_case(t, "truncated", body, len(body))


def t_map_ndjson(t):
    import uuid
    path, raw, doc = bt.v1_fixture()
    ids = [str(uuid.uuid4()) for _ in range(3)]
    lines = b"".join(bt.v1_variant(doc, participation_id=i) + b"\n" for i in ids)
    p = tmp.file("three.ndjson", lines)
    r = bt.run_cli(["map", "--mapping", bt.MAPPING, "--ndjson", p], t=t)
    t.is_(r.rc, 0, "map --ndjson exits 0", r)
    out = r.out.split(b"\n")
    t.is_(out[-1], b"", "map --ndjson output ends with a newline")
    out = out[:-1]
    t.is_(len(out), 3, "map --ndjson: 3 lines in -> 3 lines out", r)
    got = []
    for i, line in enumerate(out):
        v2 = json.loads(line)
        bt.check_v2(t, v2, "ndjson line %d" % (i + 1))
        got.append(v2.get("id"))
    t.is_(got, [i.upper() for i in ids], "map --ndjson keeps input order")
    single = bt.run_cli(["map", "--mapping", bt.MAPPING], stdin=bt.v1_variant(doc, participation_id=ids[0]))
    t.is_(out[0] + b"\n", single.out, "ndjson line equals single-document map output")


def t_map_form(t):
    path, raw, doc = bt.v1_fixture()
    j = bt.map_output(path)
    p = tmp.file("fixture.form", bt.form_encode(doc))
    r = bt.run_cli(["map", "--mapping", bt.MAPPING, "--form", p], t=t)
    t.is_(r.rc, 0, "map --form exits 0", r)
    if r.rc == 0 and j.rc == 0:
        a, b = json.loads(r.out), json.loads(j.out)
        bt.check_v2(t, a, "map --form output")
        t.is_(bt.stringify_scalars(a), bt.stringify_scalars(b),
              "map --form gives the same v2 as the JSON fixture (numbers compared as text)")


def t_map_errors(t):
    path, raw, doc = bt.v1_fixture()
    r = bt.run_cli(["map", "--mapping", "/nonexistent-dir/nope.conf", path], t=t)
    t.is_(r.rc, 2, "map with a missing mapping file: exit 2", r)
    t.is_(r.out, b"", "map with a missing mapping file: nothing on stdout")
    r = bt.run_cli(["map", "--mapping", bt.MAPPING], stdin=bt.v1_variant(doc, participation_id=None),
                   t=t)
    t.is_(r.rc, 1, "map without participation_id: exit 1", r)
    t.is_(r.out, b"", "map without participation_id: nothing on stdout")
    t.like(r.stderr, r"participation_id", "map without participation_id: the key is named", r)


tests = [
    ("version", t_version),
    ("help", t_help),
    ("usage errors", t_usage_errors),
    ("check shipped files", t_check_shipped),
]
tests += [("check broken %s" % n, lambda t, n=n: t_check_broken(t, n)) for n in BROKEN]
tests += [
    ("map representative fixture", t_map_fixture),
    ("map malformed JSON", t_map_malformed),
    ("map --ndjson", t_map_ndjson),
    ("map --form", t_map_form),
    ("map errors", t_map_errors),
]

try:
    for name, fn in tests:
        t.run(name, fn)
finally:
    tmp.cleanup()
t.done()
