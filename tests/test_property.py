#!/usr/bin/python3
"""Seeded property test of `map`: generated v1 payloads over the shipped
mapping and the fixture rule files, checked against invariants that need no
reference implementation:
  - every success validates against the v2 schema;
  - integers keep their exact text (campaign.id, website.id, scores);
  - every date-time is YYYY-MM-DDTHH:MM:SS.mmmZ;
  - a payload that cannot be mapped prints nothing on stdout;
  - every message is one line starting with "error: ";
  - the same payload as JSON and as a form post maps to the same v2.
Rule files that do not load (the refused-at-load goldens) are left out.
BRIDGE_PROPERTY_COUNT sets the number of payloads per rule file (default
300), BRIDGE_PROPERTY_SEED the seed (default 10); tests/fuzz.sh runs a larger
count.  The figures are printed as a TAP comment."""

import json
import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
COUNT = int(os.environ.get("BRIDGE_PROPERTY_COUNT", "300"))
SEED = int(os.environ.get("BRIDGE_PROPERTY_SEED", "10"))
DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DATETIME_PATHS = (("startedAt",), ("completedAt",), ("campaign", "channel", "dateStart"),
                  ("campaign", "channel", "dateEnd"))
RULES = [bt.MAPPING] + sorted(
    os.path.join(bt.SOURCE_ROOT, "fixtures", "rules", n)
    for n in os.listdir(os.path.join(bt.SOURCE_ROOT, "fixtures", "rules"))
    if n.endswith(".conf"))
RULES = [r for r in RULES if r == bt.MAPPING or bt.run_cli(["check", "--mapping", r]).rc == 0]

INT_EDGES = ["0", "1", "-1", "42", "9223372036854775807", "-9223372036854775808",
             "18446744073709551615", "18446744073709551616", "-9223372036854775809",
             "007", "12a", "1.5", "1e3", "", " 42", "+5"]
TEXT_BITS = ["a", "é", "€", "😀", " ", "\\", '"', "\n", "\t", "\x00", "\x7f", "\x0b",
             "complete", "x\nerror: forged", "<b>", "&", "=", "+", "%", ",", ";"]


def rand_text(rng, n=None):
    n = rng.randint(0, 12) if n is None else n
    return "".join(rng.choice(TEXT_BITS) for _ in range(n))


def rand_datetime(rng):
    y = rng.choice([1, 1900, 1970, 2020, 2021, 2038, 2110, 9999, rng.randint(1900, 2110)])
    mo, d = rng.randint(1, 12), rng.randint(1, 31 if rng.random() < 0.1 else 28)
    h, mi, s = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    base = "%04d-%02d-%02d %02d:%02d:%02d" % (y, mo, d, h, mi, s)
    r = rng.random()
    if r < 0.1:
        return base.replace(" ", "T") + rng.choice(["Z", "+01:00", "-05:30", "+0100", "+01"])
    if r < 0.15:
        return base + ".%03d" % rng.randint(0, 999)
    if r < 0.2:
        return rand_text(rng, 3) + base
    return base


def rand_int(rng):
    if rng.random() < 0.5:
        return rng.choice(INT_EDGES)
    return str(rng.randint(-(1 << 64), 1 << 64))


def rand_value(rng, key):
    if key in ("date_start", "date_participation", "channel_date_start", "channel_date_end"):
        return rand_datetime(rng)
    if key in ("campaign_id", "website_id", "q1_score"):
        return rand_int(rng)
    if key == "status":
        return rng.choice(["complete", "incomplete", "COMPLETE", "started", rand_text(rng)])
    if key.startswith("optin_") or key == "q1_correct":
        return rng.choice(["1", "0", "", "true", "false", "yes"])
    if key == "gender":
        return rng.choice(["M", "F", "X", ""])
    if key == "upload":
        return rng.choice(["https://f.example.com/u/a.png", "https://f.example.com/u/b.PDF?x=1",
                           "//cdn.example.com/c.jpg", "https://f.example.com",
                           "https://f.example.com/u/" + rand_text(rng, 3) + ".gif"])
    return rand_text(rng)


KEYS = ["participation_id", "ip", "url", "date_start", "date_participation", "status",
        "device", "campaign_id", "campaign_title", "channel_date_start", "channel_date_end",
        "website_id", "website_country", "lastname", "email", "gender", "upload",
        "optin_my_newsletter", "optin_partners", "q1", "q1_score", "q1_correct", "extra_key",
        "separator_list", "tags"]


def gen_payload(rng):
    doc = {"participation_id": rng.choice(["p-%d" % rng.randint(0, 1 << 30), rand_text(rng)])}
    for k in rng.sample(KEYS[1:], rng.randint(0, len(KEYS) - 1)):
        doc[k] = rand_value(rng, k)
    return doc


def as_json(rng, doc):
    """JSON text of doc: integers sometimes bare numbers (when valid JSON)."""
    parts = []
    for k, v in doc.items():
        if re.fullmatch(r"-?(0|[1-9][0-9]*)", v) and rng.random() < 0.5:
            parts.append(json.dumps(k) + ":" + v)
        else:
            parts.append(json.dumps(k) + ":" + json.dumps(v))
    return "{" + ",".join(parts) + "}"


def walk_get(doc, path):
    for p in path:
        if not isinstance(doc, dict) or p not in doc:
            return None
        doc = doc[p]
    return doc


def check_success(v1, v2, problems):
    errs = bt.v2_errors(json.loads(bt.dumps_exact(v2)))
    if errs:
        problems.append("schema: %s for %r" % (errs[:2], v1))
    for path in DATETIME_PATHS:
        v = walk_get(v2, path)
        if v is not None and not DATETIME_RE.match(v):
            problems.append("datetime %s = %r for %r" % (".".join(path), v, v1))
    for key, path in (("campaign_id", ("campaign", "id")),
                      ("website_id", ("campaign", "channel", "website", "id"))):
        v = walk_get(v2, path)
        if v is None or key not in v1:
            continue
        want = v1[key].strip(" \t\r\n")
        want = want[1:] if want.startswith("+") else want
        want = re.sub(r"^(-?)0+(?=\d)", r"\1", want)
        want = "0" if want == "-0" else want
        if str(v) != want:
            problems.append("integer %s = %s, v1 %r" % (".".join(path), v, v1[key]))


def run_batch(rules, lines, form):
    src = tmp.file("in-%d.ndjson" % form, "\n".join(lines) + "\n")
    args = ["map", "--mapping", rules, "--ndjson", "--jobs", "1"] + (["--form"] if form else [])
    r = bt.run_cli(args + [src], timeout=300)
    return r


def outcome(r, n):
    """Per input line: the v2 dict or None; and the stderr problems."""
    bad, problems = set(), []
    for line in r.stderr.split("\n"):
        if not line:
            continue
        m = re.match(r"^error: [^:]*:(\d+): ", line)
        if not m:
            problems.append("message not one 'error:' line: %r" % line[:200])
            continue
        bad.add(int(m.group(1)))
    outs = r.out.decode("utf-8").splitlines()
    res, k = [], 0
    if len(outs) != n - len(bad):
        problems.append("%d outputs for %d lines and %d errors" % (len(outs), n, len(bad)))
        return [None] * n, problems
    for i in range(1, n + 1):
        if i in bad:
            res.append(None)
        else:
            res.append(bt.load_json_exact(outs[k]))
            k += 1
    return res, problems


def main():
    rng = random.Random(SEED)
    total = mapped = failed = compared = 0
    problems = []
    for rules in RULES:
        docs = [gen_payload(rng) for _ in range(COUNT)]
        json_lines = [as_json(rng, d) for d in docs]
        form_lines = [bt.form_encode(d).decode() for d in docs]
        rj = run_batch(rules, json_lines, 0)
        rf = run_batch(rules, form_lines, 1)
        jres, p1 = outcome(rj, len(docs))
        fres, p2 = outcome(rf, len(docs))
        problems += p1 + p2
        for d, j, f in zip(docs, jres, fres):
            total += 1
            if j is None:
                failed += 1
            else:
                mapped += 1
                check_success(d, j, problems)
            if (j is None) != (f is None):
                problems.append("JSON %s, form %s: %r" % ("failed" if j is None else "mapped",
                                                          "failed" if f is None else "mapped", d))
            elif j is not None:
                compared += 1
                if bt.stringify_scalars(j) != bt.stringify_scalars(f):
                    problems.append("JSON and form differ for %r:\n%s\n%s"
                                    % (d, bt.dumps_exact(j), bt.dumps_exact(f)))
        t.ok(rj.rc in (0, 1) and rf.rc in (0, 1), "%s: map exits 0 or 1 (%d, %d)"
             % (os.path.basename(rules), rj.rc, rf.rc), rj.stderr[-300:] + rf.stderr[-300:])
    t.diag("seed %d: %d payloads over %d rule files, %d mapped, %d refused, %d JSON/form pairs "
           "compared" % (SEED, total, len(RULES), mapped, failed, compared))
    t.ok(mapped > total // 10 and failed > 0, "the generator reaches both outcomes (%d mapped, "
         "%d refused)" % (mapped, failed))
    t.ok(not problems, "every invariant holds over %d payloads (%d violations)"
         % (total, len(problems)), "\n".join(problems[:15]))


try:
    main()
finally:
    tmp.cleanup()
t.done()
