#!/usr/bin/python3
"""`learn` against hidden rule files: pairs made by `map` under rules the
learner never sees, learned from 200 pairs, checked on 1,000 others; the
learned file compared with the hidden one; 2 % noisy pairs; captures as
input; --base; temporary files under $TMPDIR."""

import ctypes
import json
import os
import re
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402
import learn_cases as lc  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()


# ---- a reader for the rule language's data (libconfig subset) -------------

TOKEN = re.compile(r'\s+|#[^\n]*|//[^\n]*|/\*.*?\*/|"(?:[^"\\]|\\.)*"|[-+]?\d+L?|true|false|'
                   r'[A-Za-z_*][-A-Za-z0-9_*]*|[{}()\[\];,=:]', re.S)


def tokens(text):
    out = []
    pos = 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m:
            raise ValueError("bad rule text at %d: %r" % (pos, text[pos:pos + 20]))
        s = m.group(0)
        pos = m.end()
        if s[0].isspace() or s[0] == "#" or s.startswith("//") or s.startswith("/*"):
            continue
        out.append(s)
    return out


def parse_value(tk, i):
    s = tk[i]
    if s == "{":
        return parse_settings(tk, i + 1, "}")
    if s in "([":
        close = ")" if s == "(" else "]"
        items, i = [], i + 1
        while tk[i] != close:
            v, i = parse_value(tk, i)
            items.append(v)
            if tk[i] == ",":
                i += 1
        return tuple(items), i + 1
    if s.startswith('"'):
        return json.loads(s), i + 1
    if s in ("true", "false"):
        return s == "true", i + 1
    return int(s.rstrip("L")), i + 1


def parse_settings(tk, i, close):
    d = {}
    while i < len(tk) and tk[i] != close:
        name = tk[i]
        v, i = parse_value(tk, i + 2)
        d[name] = v
        while i < len(tk) and tk[i] in ";,":
            i += 1
    return d, i + 1


def rules(text):
    d, _ = parse_settings(tokens(text), 0, None)
    return d


def canon(v):
    """Rules as comparable data: integers and digit strings alike, groups
    as sorted items; lists of rules as sets (order is not evidence)."""
    if isinstance(v, dict):
        # Value tables are sets of pairs: their order is not evidence.
        return tuple(sorted((k, tuple(sorted(canon(x))) if k in ("map", "choices") else canon(x))
                            for k, x in v.items()))
    if isinstance(v, tuple):
        return tuple(canon(x) for x in v)
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return v


def rule_sets(text):
    d = rules(text)
    out = {k: canon(v) for k, v in d.items() if k not in ("fields", "variables", "ignore")}
    out.setdefault("prefixes", canon({"form": "", "optins": "optin_", "questionnaire": ""}))
    out["fields"] = {dict(f)["to"]: canon(f) for f in d.get("fields", ())}
    out["variables"] = {dict(v)["variable"]: canon(v) for v in d.get("variables", ())}
    out["ignore"] = tuple(sorted(d.get("ignore", ())))
    out["stages"] = {}
    for st in d.get("stages", ()):
        st = dict(st)
        st["fields"] = {dict(f)["to"]: canon(f) for f in st.get("fields", ())}
        st["variables"] = {dict(v)["variable"]: canon(v) for v in st.get("variables", ())}
        out["stages"][st.pop("name")] = {k: v if k in ("fields", "variables") else canon(v)
                                         for k, v in st.items()}
    for k in ("version", "ambiguous", "gap"):
        out.pop(k, None)
    return out


# ---- structural comparison of v2 documents ----------------------------------

def structural(doc):
    """Entries of form/optins/questionnaire matched by variable, not position."""
    d = dict(doc)
    for s in ("form", "optins", "questionnaire"):
        d[s] = sorted(d.get(s, []), key=lambda e: json.dumps(e.get("variable")))
    return d


def map_docs(rules_path, docs, name):
    src = tmp.file(name + ".v1.ndjson", "".join(json.dumps(d) + "\n" for d in docs))
    r = bt.run_cli(["map", "--mapping", rules_path, "--ndjson", src], timeout=120)
    return r, src


def learn(v1, v2, out, extra=()):
    return bt.run_cli(["learn", "--v1", v1, "--v2", v2, "-o", out] + list(extra), timeout=120)


def case(name):
    hidden = tmp.file(name + ".hidden.conf", lc.CASES[name])
    docs = lc.make_v1(name, 1200, seed=len(name))
    train, held = docs[:200], docs[200:]
    r, v1_train = map_docs(hidden, train, name + ".train")
    t.is_(r.rc, 0, "%s: the hidden rules map every training payload" % name, r.stderr[:300])
    v2_train = tmp.file(name + ".train.v2.ndjson", r.out.decode())
    learned = tmp.join(name + ".learned.conf")
    lr = learn(v1_train, v2_train, learned)
    t.is_(lr.rc, 0, "%s: learn exits 0 (every training pair reproduced)" % name, lr.stderr[:500])
    text = open(learned).read() if os.path.exists(learned) else ""
    ck = bt.run_cli(["check", "--mapping", learned])
    t.is_(ck.rc, 0, "%s: check --mapping accepts the learned file" % name, ck.stderr[:500])
    t.ok(re.search(r"# (\d+)/\1 pairs", text), "%s: rules carry their evidence" % name)
    t.ok("# ---- report ----" in text and "reproduced exactly by these rules: 200/200" in text,
         "%s: the file ends with the report" % name, text[-800:])

    # Held-back pairs: the learned rules against the real v2.
    real, _ = map_docs(hidden, held, name + ".held.hidden")
    mine, _ = map_docs(learned, held, name + ".held.learned")
    a = [structural(json.loads(x)) for x in real.out.decode().splitlines()]
    b = [structural(json.loads(x)) for x in mine.out.decode().splitlines()]
    same = sum(1 for x, y in zip(a, b) if x == y) if len(a) == len(b) else 0
    share = 100.0 * same / len(held)
    t.ok(share >= 99.0, "%s: %.1f %% of 1000 held-back pairs reproduced exactly (>= 99 %%)"
         % (name, share))
    t.diag("%s: held-back reproduction %d/%d" % (name, same, len(held)))

    want, got = rule_sets(lc.CASES[name]), rule_sets(text)
    for k in sorted(set(want) | set(got)):
        if k in ("fields", "variables"):
            for rk in sorted(set(want[k]) | set(got[k])):
                t.is_(got[k].get(rk), want[k].get(rk), "%s: learned %s rule %s equals the hidden one"
                      % (name, k, rk))
        else:
            t.is_(got.get(k), want.get(k), "%s: learned setting %s equals the hidden one" % (name, k))
    return hidden, train, r.out.decode().splitlines(), v1_train


def noisy(name, hidden, train, v2_lines, v1_train):
    """2 % of the pairs get an edited v2 value: same rules, listed as conflicts."""
    lines = [json.loads(x) for x in v2_lines]
    edited = []
    for i in range(0, len(lines), 50):
        d = lines[i]
        if d.get("campaign", {}).get("name"):
            d["campaign"]["name"] += " (edited)"
        else:
            d["state"] = "EDITED"
        edited.append(d["id"])
    v2 = tmp.file(name + ".noisy.v2.ndjson", "".join(json.dumps(d) + "\n" for d in lines))
    out = tmp.join(name + ".noisy.conf")
    lr = learn(v1_train, v2, out)
    t.is_(lr.rc, 1, "%s noisy: exit 1 (the edited pairs are not reproduced)" % name, lr.stderr[:300])
    text = open(out).read() if os.path.exists(out) else ""
    clean = open(tmp.join(name + ".learned.conf")).read()
    t.is_(rule_sets(text), rule_sets(clean), "%s noisy: 2 %% edited pairs do not change the rules" % name)
    conflicts = text.split("# conflicting evidence:")[-1].split("# values seen only once")[0]
    # With a stage, the base rules' evidence is the pairs outside it.
    want = r"agrees in 196 pairs, not in 4" if name != "staged" else r"agrees in \d+ pairs, not in [34]\b"
    t.ok(re.search(want, conflicts), "%s noisy: the conflict is counted (%s)" % (name, want), conflicts)
    t.ok(sum(i in conflicts for i in edited) >= 3, "%s noisy: 3 example participation ids" % name,
         conflicts)


def captures_and_base(name, hidden, train, v2_lines):
    """record-style capture lines and fixture folders as input; --base."""
    v1cap = tmp.file(name + ".cap.v1.ndjson", "".join(
        json.dumps({"time": "2024-05-01T09:30:00.000Z", "content_type": "application/json",
                    "headers": {}, "body": d}) + "\n" for d in train)
        + '{"time":"2024-05-01T09:30:01.000Z","invalid":true,"reason":"x","body_bytes":3}\n')
    os.makedirs(tmp.join(name + ".v2dir"), exist_ok=True)
    for i, line in enumerate(v2_lines[:150]):
        with open(tmp.join("%s.v2dir/p%03d.json" % (name, i)), "w") as f:
            f.write(json.dumps(json.loads(line), indent=2))
    out = tmp.join(name + ".cap.conf")
    lr = learn(v1cap, tmp.join(name + ".v2dir"), out)
    text = open(out).read() if os.path.exists(out) else ""
    t.ok("# pairs: 150 (v1 without a v2: 50, v2 without a v1: 0" in text,
         "%s: capture lines and a fixture folder pair up; unpaired ones counted" % name,
         lr.stderr[:300] + text[-600:])
    base = tmp.file(name + ".base.conf", lc.CASES[name].replace('label = "Surname"',
                                                                   'label = "Family name"'))
    br = learn(v1cap, tmp.join(name + ".v2dir"), tmp.join(name + ".base-out.conf"),
               ["--base", base])
    t.ok(re.search(r'^-.*label = "Family name"', br.stderr, re.M)
         and re.search(r'^\+.*label = "Surname"', br.stderr, re.M),
         "%s: --base lists the contradicted rule as a diff" % name, br.stderr[-1500:])
    t.ok(re.search(r"confirmed by the evidence", br.stderr), "%s: --base counts what it keeps" % name)


IN_CREATE = 0x100


class Created:
    """The names created in one folder while it is watched (inotify)."""

    def __init__(self, path):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or self.libc.inotify_add_watch(self.fd, path.encode(), IN_CREATE) < 0:
            raise OSError(ctypes.get_errno(), "inotify on %s" % path)

    def names(self):
        out = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            i = 0
            while i + 16 <= len(data):
                _, mask, _, n = struct.unpack_from("iIII", data, i)
                if mask & IN_CREATE:
                    out.append(data[i + 16:i + 16 + n].rstrip(b"\0").decode())
                i += 16 + n
        os.close(self.fd)
        return out


def temp_files(name, v1_train, v2_train):
    """learn without -o self-checks a temporary rule file and tries each
    stage from one: both under $TMPDIR, under /tmp only when it is unset or
    empty, removed at the end; a TMPDIR that does not exist is an error, not
    a silent /tmp."""
    learned = open(tmp.join(name + ".learned.conf")).read()

    def run(tmpdir):
        env = dict(os.environ, TMPDIR=tmpdir)
        p = subprocess.run([bt.BRIDGE_BIN, "learn", "--v1", v1_train, "--v2", v2_train],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        bt.check_no_sanitizer_report(t, p.stderr, "TMPDIR=%s: no sanitizer report" % tmpdir)
        return p

    folder = tmp.join("tmpdir")
    os.makedirs(folder, exist_ok=True)
    for tmpdir, watched in ((folder, folder), ("", "/tmp")):
        w = Created(watched)
        p = run(tmpdir)
        made = [n for n in w.names() if n.startswith("webhook-bridge-learn-")]
        t.is_(p.returncode, 0, "TMPDIR=%s: learn exits 0" % tmpdir, p.stderr[-500:])
        t.is_(p.stdout.decode(), learned, "TMPDIR=%s: the rules on stdout are those of -o" % tmpdir)
        t.ok(any(n.startswith("webhook-bridge-learn-stage-") for n in made),
             "TMPDIR=%s: stage files are made in %s" % (tmpdir, watched), made)
        t.ok(any(not n.startswith("webhook-bridge-learn-stage-") for n in made),
             "TMPDIR=%s: the rule file checked is made in %s" % (tmpdir, watched), made)
    t.is_(os.listdir(folder), [], "no temporary file is left in TMPDIR")
    p = run(tmp.join("no-such-folder"))
    t.is_(p.returncode, 2, "a TMPDIR that does not exist: exit 2", p.stderr[-500:])
    t.like(p.stderr.decode(), r"learn: temporary file: No such file or directory",
           "with the reason", p.stderr)


def errors():
    r = bt.run_cli(["learn", "--v1", tmp.join("missing.ndjson"), "--v2", tmp.join("x")])
    t.is_(r.rc, 2, "a missing input file: exit 2", r.stderr)
    t.ok("missing.ndjson" in r.stderr, "the message names the file", r.stderr)
    bad = tmp.file("bad.ndjson", '{"a": 1}\n{"broken": \n')
    r = bt.run_cli(["learn", "--v1", bad, "--v2", bad])
    t.ok(re.search(r"bad\.ndjson:2: ", r.stderr), "a malformed line is named file:line", r.stderr)
    t.is_(r.rc, 2, "no pairs at all: exit 2", r.stderr)
    r = bt.run_cli(["learn", "--v1", bad])
    t.is_(r.rc, 2, "--v2 missing: usage error", r.stderr)


def shadow_capture():
    """Both sides captured by serve (record + dry_run.v2_record), redacted the
    same way, then learned from."""
    secret = "learn-secret"
    hidden = tmp.file("shadow.hidden.conf", lc.CASES["lord_howe"])
    capture, v2cap = tmp.join("v1.capture.ndjson"), tmp.join("v2.capture.ndjson")
    cfg = bt.config_text([bt.route("shadow", "dry-run", secret=secret, mapping=hidden)],
                         path="/hook", dry_run={"v2_path": "/v2", "v2_record": v2cap},
                         record={"path": capture, "redact": ["given", "town"]})
    b = bt.Bridge(tmp, cfg, "shadow.conf").start()
    docs = lc.make_v1("lord_howe", 60, seed=99)
    real, _ = map_docs(hidden, docs, "shadow")
    bodies = [x.encode() for x in real.out.decode().splitlines()]
    try:
        for d, body in zip(docs, bodies):
            bt.curl(b.url("/hook"), json.dumps(d).encode())
            bt.curl(b.url("/v2"), body,
                    headers=["X-Qualifio-Signature: sha256=" + bt.hmac_hex(secret, body)])
        forged = bodies[0].replace(b'"url":"', b'"url":"x')
        r = bt.curl(b.url("/v2"), forged, headers=["X-Qualifio-Signature: sha256=00"])
        t.is_(r.status, 401, "a v2 post that does not verify is refused", r)
    finally:
        bt.stop_and_check(t, b)
    lines = open(v2cap).read().splitlines() if os.path.exists(v2cap) else []
    t.is_(len(lines), 60, "dry_run.v2_record: one line per verified real v2 post")
    t.is_(oct(os.stat(v2cap).st_mode & 0o777) if lines else None, "0o600",
          "the v2 capture is created mode 0600")
    first = json.loads(lines[0]) if lines else {}
    t.ok(re.match(r"\d{4}-\d\d-\d\dT.*Z$", first.get("time", "")), "capture lines carry the time",
         first)
    form = {e["variable"]: e for e in first.get("body", {}).get("form", [])}
    t.is_(form.get("firstname", {}).get("responses"), [{"value": "[redacted]"}],
          "a v2 variable matched by a redaction pattern is redacted", form.get("firstname"))
    t.is_(form.get("colors", {}).get("responses", [{}])[0].get("value"), None if not form else
          json.loads(bodies[0])["form"][2]["responses"][0]["value"],
          "other variables are kept as posted")
    leaked = [d["given"] for d in docs if d["given"].encode() in open(v2cap, "rb").read()]
    t.is_(leaked, [], "no redacted value anywhere in the v2 capture")
    out = tmp.join("shadow.learned.conf")
    lr = learn(capture, v2cap, out)
    text = open(out).read() if os.path.exists(out) else ""
    t.is_(lr.rc, 0, "learn on both captures reproduces every pair", lr.stderr + text[-800:])
    t.ok("# pairs: 60 (v1 without a v2: 0, v2 without a v1: 0" in text,
         "both captures pair up by participation id", text[-800:])
    got = rule_sets(text)
    t.is_(got["fields"].get("startedAt"), rule_sets(lc.CASES["lord_howe"])["fields"]["startedAt"],
          "the zone is learned from the captures (Australia/Lord_Howe)")


def repeated_ids():
    """A participation posted twice (INCOMPLETE, then COMPLETED): paired by state."""
    hidden = tmp.file("rep.hidden.conf", lc.CASES["new_york"])
    docs = lc.make_v1("new_york", 200, seed=5)
    again = []
    for d in docs[:20]:
        d["outcome"] = "done"
        e = dict(d, outcome="partial")
        again.append(e)
    v1docs = docs + again
    r, v1 = map_docs(hidden, v1docs, "rep")
    lines = r.out.decode().splitlines()
    v2 = tmp.file("rep.v2.ndjson", "".join(x + "\n" for x in reversed(lines)))
    out = tmp.join("rep.learned.conf")
    lr = learn(v1, v2, out)
    text = open(out).read() if os.path.exists(out) else ""
    t.is_(lr.rc, 0, "ids seen twice: every pair reproduced", lr.stderr + text[-600:])
    t.ok("# pairs: 220 (v1 without a v2: 0, v2 without a v1: 0, ids seen more than once and not "
         "told apart: 0" in text, "ids seen twice are paired by their state", text[-600:])


try:
    repeated_ids()
    shadow_capture()
    for name in lc.CASES:
        hidden, train, v2_lines, v1_train = case(name)
        noisy(name, hidden, train, v2_lines, v1_train)
        if name == "new_york":
            captures_and_base(name, hidden, train, v2_lines)
        if name == "staged":
            temp_files(name, v1_train, tmp.join(name + ".train.v2.ndjson"))
    errors()
finally:
    tmp.cleanup()
t.done()
