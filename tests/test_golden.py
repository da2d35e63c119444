#!/usr/bin/python3
"""Golden mapping fixtures, run through the real binary (TAP).

For every fixtures/v1/NAME.json the rules are fixtures/rules/NAME.conf when it
exists, else mappings/qualifio-v1-to-v2.conf.  The expectation is either
fixtures/v2/NAME.json (the exact bytes `webhook-bridge map` prints: compact
JSON plus a newline, exit 0) or fixtures/v2/NAME.error (line 1: exit code,
line 2: a substring of stderr).  Every v2 output is validated against
fixtures/schema/v2.schema.json (JSON Schema draft 7), and the schema itself is
checked first.
"""
import json
import os
import subprocess
import sys

from jsonschema import Draft7Validator

BIN = os.environ["BRIDGE_BIN"]
ROOT = os.environ["BRIDGE_SOURCE_ROOT"]
SHIPPED = "mappings/qualifio-v1-to-v2.conf"
# "no sanitizer report" is a check only where the binary is instrumented
INSTRUMENTED = os.environ.get("BRIDGE_SANITIZE", "none") not in ("", "none")

n = 0
failed = 0


def ok(cond, name, diag=None):
    global n, failed
    n += 1
    print(("ok %d - %s" if cond else "not ok %d - %s") % (n, name))
    if not cond:
        failed += 1
        if diag:
            for line in str(diag).splitlines():
                print("#   " + line)
    sys.stdout.flush()
    return cond


def run(args, stdin=None):
    p = subprocess.run([BIN] + args, cwd=ROOT, input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    return p.returncode, p.stdout, p.stderr


def no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key in %r" % keys)
    return dict(pairs)


def rules_for(name):
    own = os.path.join("fixtures", "rules", name + ".conf")
    return own if os.path.exists(os.path.join(ROOT, own)) else SHIPPED


def main():
    with open(os.path.join(ROOT, "fixtures/schema/v2.schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    problem = None
    try:
        Draft7Validator.check_schema(schema)
    except Exception as e:  # jsonschema.SchemaError
        problem = e
    ok(problem is None, "v2 schema is a valid draft 7 schema", problem)
    validator = Draft7Validator(schema)

    # The schema must have teeth: documents the bridge must never produce fail it.
    base = {"campaign": {"themes": []}, "form": [], "optins": [], "questionnaire": []}
    bad_docs = {
        "extra root property": dict(base, extra="x"),
        "null value": dict(base, ip=None),
        "string campaign id": dict(base, campaign={"id": "1", "themes": []}),
        "missing form": {k: v for k, v in base.items() if k != "form"},
        "empty browser object": dict(base, browser={}),
        "opt-in response outside 1/0/empty": dict(base, optins=[{"response": "yes", "variable": "a", "categories": []}]),
        "local time in startedAt": dict(base, startedAt="2020-10-30 14:05:00"),
        "unknown response member": dict(base, form=[{"variable": "a", "responses": [{"value": "x", "score": 1}]}]),
    }
    for what, doc in bad_docs.items():
        ok(not validator.is_valid(doc), "schema rejects: " + what)

    v1_dir = os.path.join(ROOT, "fixtures", "v1")
    v2_dir = os.path.join(ROOT, "fixtures", "v2")
    names = sorted(f[:-5] for f in os.listdir(v1_dir) if f.endswith(".json"))
    ok(len(names) >= 20, "at least 20 golden fixtures (%d)" % len(names))

    for f in sorted(os.listdir(v2_dir)):
        stem, ext = os.path.splitext(f)
        ok(ext in (".json", ".error") and stem in names, "expectation %s has a v1 input" % f)
    used_rules = {rules_for(name) for name in names}
    for f in sorted(os.listdir(os.path.join(ROOT, "fixtures", "rules"))):
        if f.endswith(".conf"):
            ok(os.path.join("fixtures", "rules", f) in used_rules, "rule file %s belongs to a fixture" % f)

    successes = []
    for name in names:
        v1 = os.path.join("fixtures", "v1", name + ".json")
        rules = rules_for(name)
        want_json = os.path.join(v2_dir, name + ".json")
        want_err = os.path.join(v2_dir, name + ".error")
        has_json, has_err = os.path.exists(want_json), os.path.exists(want_err)
        if not ok(has_json != has_err, "%s: exactly one expectation (.json or .error)" % name):
            continue
        rc, out, err = run(["map", "--mapping", rules, v1])
        if has_json:
            with open(want_json, "rb") as f:
                want = f.read()
            ok(rc == 0, "%s: exit 0" % name, err.decode("utf-8", "replace"))
            ok(out == want, "%s: output bytes match fixtures/v2/%s.json" % (name, name),
               "got:  %r\nwant: %r" % (out, want))
            ok(err == b"", "%s: nothing on stderr" % name, err.decode("utf-8", "replace"))
            ok(out.endswith(b"}\n") and out.count(b"\n") == 1, "%s: one compact line" % name)
            doc = problem = None
            try:
                doc = json.loads(out.decode("utf-8"), object_pairs_hook=no_duplicate_keys)
            except Exception as e:
                problem = e
            if not ok(problem is None, "%s: output is UTF-8 JSON without duplicate keys" % name,
                      problem):
                continue
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
            ok(not errors, "%s: output validates against the v2 schema" % name,
               "\n".join("%s: %s" % ("/".join(map(str, e.path)), e.message) for e in errors[:5]))
            successes.append((name, v1, rules, want))
        else:
            with open(want_err, encoding="utf-8") as f:
                lines = f.read().split("\n")
            code, needle = int(lines[0]), lines[1]
            text = err.decode("utf-8", "replace")
            ok(rc == code, "%s: exit %d" % (name, code), "got exit %d, stderr: %s" % (rc, text))
            ok(needle in text, "%s: stderr names the problem" % name,
               "want substring: %s\nstderr: %s" % (needle, text))
            ok(out == b"", "%s: nothing on stdout" % name, out)
            if INSTRUMENTED or "Sanitizer" in text:
                ok("Sanitizer" not in text, "%s: no sanitizer report" % name, text)
            if code == 1:
                ok(text.startswith("error: "), "%s: stderr starts with 'error: '" % name, text)

    # The same document read from stdin gives the same bytes.
    rep = [s for s in successes if s[0] == "representative"]
    if ok(len(rep) == 1, "representative fixture present"):
        name, v1, rules, want = rep[0]
        with open(os.path.join(ROOT, v1), "rb") as f:
            rc, out, err = run(["map", "--mapping", rules], stdin=f.read())
        ok(rc == 0 and out == want, "representative via stdin gives the same bytes", err)

    # --ndjson: the single-line inputs of the shipped mapping, one per line.
    lines, wants = [], []
    for name, v1, rules, want in successes:
        with open(os.path.join(ROOT, v1), "rb") as f:
            data = f.read()
        if rules == SHIPPED and data.count(b"\n") == 1 and data.endswith(b"\n"):
            lines.append(data)
            wants.append(want)
    if ok(len(lines) >= 3, "at least 3 single-line fixtures for --ndjson (%d)" % len(lines)):
        rc, out, err = run(["map", "--mapping", SHIPPED, "--ndjson"], stdin=b"".join(lines))
        ok(rc == 0 and out == b"".join(wants), "--ndjson maps each line to its golden output",
           "rc %d\n%s" % (rc, err.decode("utf-8", "replace")))

    # `check` accepts every rule file used by a successful fixture.
    for rules in sorted({s[2] for s in successes}):
        rc, out, err = run(["check", "--mapping", rules])
        ok(rc == 0, "check accepts %s" % rules, err.decode("utf-8", "replace"))
    rc, out, err = run(["check", "--mapping", "fixtures/rules/bad-rules.conf"])
    text = err.decode("utf-8", "replace") + out.decode("utf-8", "replace")
    ok(rc != 0 and out == b"", "check rejects bad-rules.conf (exit %d)" % rc, text)
    ok("bad-rules.conf:3: unknown v2 path 'campaign.title'" in text and
       "bad-rules.conf:4: 'convert' must be one of" in text,
       "check reports every error of bad-rules.conf with file:line", text)

    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
