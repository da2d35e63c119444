#!/usr/bin/python3
"""`diff` and `report` through the real binary (TAP).

Expectations are computed at test time, never written down: rule lines are
read from the rule files, v2 values come from `webhook-bridge map`, and the
structural differences are checked against a small reference implementation
of the documented path semantics (below).
"""

import json
import os
import random
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()

V2_FIXTURES = os.path.join(bt.SOURCE_ROOT, "fixtures", "v2")
DIFF_FIXTURES = os.path.join(bt.SOURCE_ROOT, "fixtures", "diff")
REPORT = os.path.join(DIFF_FIXTURES, "dry-run-report.ndjson")
KEYED = ("form", "optins", "questionnaire")


# --------------------------------------------------------------------------
# Reference semantics (see include/bridge/jsondiff.h)
# --------------------------------------------------------------------------

def kind_of(v):
    if isinstance(v, bt.NumText):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bool):
        return "bool"
    if v is None:
        return "null"
    return "object" if isinstance(v, dict) else "array"


def labels(arr):
    out, seen, unkeyed = [], {}, 0
    for e in arr:
        v = e.get("variable") if isinstance(e, dict) else None
        if kind_of(v) == "string":
            seen[v] = seen.get(v, 0) + 1
            out.append(v if seen[v] == 1 else "%s#%d" % (v, seen[v]))
        else:
            out.append("#%d" % unkeyed)
            unkeyed += 1
    return out


def join(path, key):
    return key if path == "" else path + "." + key


def children(v, path):
    """(segment path, child) pairs of an object or array, in document order."""
    if isinstance(v, dict):
        return [(join(path, k), x) for k, x in v.items()]
    names = labels(v) if path in KEYED else [str(i) for i in range(len(v))]
    return [("%s[%s]" % (path, n), x) for n, x in zip(names, v)]


def leaves(v, path="", out=None):
    """{path: value} for every scalar and empty object/array, document order."""
    out = {} if out is None else out
    if isinstance(v, (dict, list)) and v:
        for p, x in children(v, path):
            leaves(x, p, out)
    else:
        out[path] = v
    return out


def ref_diff(a, b, path="", out=None):
    """Set of (kind, path, a, b) as compact JSON texts, subtrees whole."""
    out = set() if out is None else out
    ka, kb = kind_of(a), kind_of(b)
    if ka != kb:
        out.add(("changed", path, bt.dumps_exact(a), bt.dumps_exact(b)))
    elif ka in ("object", "array"):
        ca, cb = dict(children(a, path)), dict(children(b, path))
        if ka == "array" and path not in KEYED:
            pass  # children() already names elements by index
        for p, x in cb.items():
            if p in ca:
                ref_diff(ca[p], x, p, out)
            else:
                out.add(("added", p, None, bt.dumps_exact(x)))
        for p, x in ca.items():
            if p not in cb:
                out.add(("removed", p, bt.dumps_exact(x), None))
    elif a != b:
        out.add(("changed", path, bt.dumps_exact(a), bt.dumps_exact(b)))
    return out


def got_diff(doc):
    """The binary's --json differences as the same kind of set."""
    return {(d["kind"], d["path"],
             bt.dumps_exact(d["a"]) if "a" in d else None,
             bt.dumps_exact(d["b"]) if "b" in d else None) for d in doc["differences"]}


def load(path):
    with open(path, "rb") as f:
        return bt.load_json_exact(f.read())


def write_json(name, doc):
    return tmp.file(name, bt.dumps_exact(doc) + "\n")


def rule_lines(path):
    """{target path: (line, from key)} and {variable: line} of a rule file."""
    fields, variables = {}, {}
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if line.lstrip().startswith("#"):
                continue
            m = re.search(r'\bto\s*=\s*"([^"]+)"', line)
            if m:
                fm = re.search(r'\bfrom\s*=\s*"([^"]+)"', line)
                fields[m.group(1)] = (no, fm.group(1) if fm else None)
            m = re.search(r'\bvariable\s*=\s*"([^"]+)"', line)
            if m:
                variables[m.group(1)] = no
    return fields, variables


def expected_rule(path, fields, variables, mapping):
    if path in fields:
        return "%s:%d" % (mapping, fields[path][0])
    m = re.match(r"^(form|optins|questionnaire)\[([^\]]+)\]", path)
    if m and m.group(2) in variables:
        return "%s:%d" % (mapping, variables[m.group(2)])
    return None


def counts(doc, *keys):
    """Integer members of a --json document (numbers are kept as text by load_json_exact)."""
    return tuple(int(doc[k]) for k in keys)


def diff_json(args, t, name):
    r = bt.run_cli(["diff"] + args + ["--json"], t=t)
    try:
        doc = bt.load_json_exact(r.out)
    except ValueError:
        t.ok(False, "%s: --json prints one JSON object" % name, r)
        raise bt.TestFailure(name)
    return r, doc


# --------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------

def t_provenance(t):
    fixture = bt.representative_fixture()
    fields, variables = rule_lines(bt.MAPPING)
    t.require("state" in fields and "gender" in variables, "rule lines read from the shipped mapping")
    m = bt.map_output(fixture, t=t)
    t.require(m.rc == 0, "map of the representative fixture", m)
    want = leaves(bt.load_json_exact(m.out))

    r, doc = diff_json(["--mapping", bt.MAPPING, fixture], t, "provenance")
    t.is_(r.rc, 0, "provenance: exit 0", r)
    got = {f["path"]: f for f in doc["fields"]}
    t.is_([f["path"] for f in doc["fields"]], list(want), "one field per v2 leaf, in document order")
    bad_value = [p for p, v in want.items() if p in got and bt.dumps_exact(got[p]["value"]) != bt.dumps_exact(v)]
    t.is_(bad_value, [], "every value is the one `map` writes")
    bad_rule = []
    for p in want:
        exp = expected_rule(p, fields, variables, bt.MAPPING)
        if p in got and got[p]["rule"] != exp:
            bad_rule.append((p, got[p]["rule"], exp))
    t.is_(bad_rule, [], "every value names the rule line it came from (read from the rule file)")
    bad_from = [(p, got[p]["from"], fields[p][1]) for p in want
                if p in fields and p in got and got[p]["from"] != fields[p][1]]
    t.is_(bad_from, [], "field rules name their v1 key")
    t.is_(got.get("state", {}).get("what"), "lower, map complete->COMPLETED", "state: what the rule did")
    t.is_(got.get("form[gender].responses[0].label", {}).get("match"), "entry",
          "a choice label is an attribute of the variable rule")
    t.is_(doc["unmapped"], [], "representative fixture: no unmapped key")
    t.is_(doc["dropped"], [], "representative fixture: no dropped key")
    t.is_(bt.dumps_exact(doc["v2"]), m.stdout.strip(), "--json carries the v2 document")

    # text view
    r = bt.run_cli(["diff", "--mapping", bt.MAPPING, fixture], t=t)
    t.is_(r.rc, 0, "provenance text: exit 0", r)
    line = [l for l in r.stdout.splitlines() if l.startswith("state ")]
    t.ok(len(line) == 1 and ("%s:%d" % (bt.MAPPING, fields["state"][0])) in line[0] and "status" in line[0],
         "text: the state line names its rule and v1 key", r)
    line = [l for l in r.stdout.splitlines() if l.startswith("campaign.channel.website.id ")]
    t.ok(len(line) == 1 and ("%s:%d" % (bt.MAPPING, fields["campaign.channel.website.id"][0])) in line[0],
         "text: campaign.channel.website.id names its rule", r)
    t.ok("\033[" not in r.stdout, "text: no colour when stdout is not a terminal")
    r = bt.run_cli(["diff", "--color", "always", "--mapping", bt.MAPPING, fixture], t=t)
    t.ok("\033[" in r.stdout, "--color always: colour", r)


def t_color_tty(t):
    fixture = bt.representative_fixture()
    args = ["diff", "--mapping", bt.MAPPING, fixture]
    env = dict(os.environ)
    env.pop("NO_COLOR", None)
    rc, out = bt.run_on_pty(args, env)
    t.ok(rc == 0 and b"\033[" in out, "terminal: colour")
    env["NO_COLOR"] = "1"
    rc, out = bt.run_on_pty(args, env)
    t.ok(rc == 0 and b"\033[" not in out and b"state" in out, "terminal with NO_COLOR: no colour")


def t_provenance_unmapped(t):
    path = os.path.join(bt.V1_FIXTURES, "unmapped-form.json")
    v1 = load(path)
    m = bt.map_output(path, t=t)
    t.require(m.rc == 0, "map unmapped-form.json", m)
    v2 = bt.load_json_exact(m.out)
    generic = [e["variable"] for e in v2["form"] if "id" not in e]
    r, doc = diff_json(["--mapping", bt.MAPPING, path], t, "unmapped form")
    t.is_(r.rc, 0, "unmapped=form: exit 0", r)
    t.is_([u["key"] for u in doc["unmapped"]], [k for k in v1 if k in generic],
          "unmapped keys = the generic form entries of `map`")
    t.ok(all(u["policy"] == "form" for u in doc["unmapped"]), "policy form")
    got = {f["path"]: f for f in doc["fields"]}
    for k in generic:
        p = [x for x in got if x.startswith("form[%s]" % k)]
        t.ok(p and all(got[x]["what"] in ("unmapped:form", "attribute of the entry for an unmapped key") for x in p),
             "form[%s] is traced to the unmapped policy" % k, [got[x] for x in p])

    rules = os.path.join(bt.SOURCE_ROOT, "fixtures", "rules", "unmapped-drop.conf")
    path = os.path.join(bt.V1_FIXTURES, "unmapped-drop.json")
    with open(rules, encoding="utf-8") as f:
        text = f.read()
    named = set(re.findall(r'\bfrom\s*=\s*"([^"]+)"', text)) | set(re.findall(r'\bvariable\s*=\s*"([^"]+)"', text))
    r, doc = diff_json(["--mapping", rules, path], t, "unmapped drop")
    t.is_(r.rc, 0, "unmapped=drop: exit 0", r)
    t.is_([u["key"] for u in doc["unmapped"]], [k for k in load(path) if k not in named],
          "unmapped=drop: every key the rules do not name")
    t.ok(all(u["policy"] == "drop" for u in doc["unmapped"]), "policy drop")
    r = bt.run_cli(["diff", "--mapping", rules, path], t=t)
    t.like(r.stdout, r"(?m)^  shoe_size\s+unmapped: dropped \(unmapped = \"drop\"\)", "text lists dropped unmapped keys", r)

    # keys named by the rules that end up nowhere
    with open(bt.MAPPING, encoding="utf-8") as f:
        shipped = f.read()
    own = tmp.file("ignore.conf", shipped + '\nignore = [ "signature" ];\n')
    _, _, v1 = bt.v1_fixture()
    payload = tmp.file("dropped.json", bt.v1_variant(v1, signature="abc").decode()
                       .replace('"phone":"+3281000000"', '"phone":null'))
    r, doc = diff_json(["--mapping", own, payload], t, "dropped")
    t.is_(r.rc, 0, "dropped: exit 0", r)
    t.is_(sorted(d["key"] for d in doc["dropped"]), ["phone", "signature"],
          "dropped: an ignored key and a null value")
    t.is_(doc["unmapped"], [], "dropped: nothing unmapped")


def t_provenance_errors(t):
    fields, _ = rule_lines(bt.MAPPING)
    path = os.path.join(bt.V1_FIXTURES, "required-missing.json")
    r = bt.run_cli(["diff", "--mapping", bt.MAPPING, path], t=t)
    t.is_(r.rc, 1, "payload that cannot be mapped: exit 1", r)
    t.ok(("rule %s:%d" % (bt.MAPPING, fields["id"][0])) in r.stderr, "the error names the rule line", r)
    r, doc = diff_json(["--mapping", bt.MAPPING, path], t, "error json")
    t.is_(doc.get("error", {}).get("rule"), "%s:%d" % (bt.MAPPING, fields["id"][0]), "--json: error with its rule")
    r = bt.run_cli(["diff", "--mapping", tmp.join("missing.conf"), path], t=t)
    t.is_(r.rc, 2, "missing rule file: exit 2", r)
    r = bt.run_cli(["diff", "--mapping", bt.MAPPING, tmp.join("missing.json")], t=t)
    t.is_(r.rc, 2, "missing input: exit 2", r)
    r = bt.run_cli(["diff", "--mapping", bt.MAPPING, "--form", "-"], stdin=bt.form_encode(bt.v1_fixture()[2]), t=t)
    t.is_(r.rc, 0, "--form payload on stdin: exit 0", r)
    t.like(r.stdout, r"(?m)^state\s", "--form: the state value is listed", r)


# --------------------------------------------------------------------------
# A/B
# --------------------------------------------------------------------------

def shuffled(doc, seed):
    """The same document: members and form/optins/questionnaire entries reordered."""
    rnd = random.Random(seed)

    def walk(v, path):
        if isinstance(v, dict):
            items = list(v.items())
            rnd.shuffle(items)
            return {k: walk(x, join(path, k)) for k, x in items}
        if isinstance(v, list):
            items = [walk(x, path + "[]") for x in v]
            if path in KEYED:
                rnd.shuffle(items)
            return items
        return v
    return walk(doc, "")


def t_ab_equal(t):
    a = os.path.join(V2_FIXTURES, "representative.json")
    doc = load(a)
    b = write_json("reordered.json", shuffled(doc, 7))
    t.ok([e["variable"] for e in load(b)["form"]] != [e["variable"] for e in doc["form"]],
         "the copy really reorders the form entries")
    r = bt.run_cli(["diff", a, b], t=t)
    t.is_(r.rc, 0, "reordered arrays and members: exit 0", r)
    t.like(r.stdout, r"no differences", "text says so", r)
    r, out = diff_json([a, b], t, "equal")
    t.is_((r.rc, out["equal"], out["differences"]) + counts(out, "added", "removed", "changed"),
          (0, True, [], 0, 0, 0), "--json: equal, no entries")
    r = bt.run_cli(["diff", a, "-"], stdin=open(b, "rb").read(), t=t)
    t.is_(r.rc, 0, "B from stdin", r)


def t_ab_changes(t):
    a = os.path.join(V2_FIXTURES, "representative.json")
    doc = load(a)
    b = shuffled(doc, 3)
    b["state"] = "INCOMPLETE"
    del b["campaign"]["channel"]["website"]["country"]
    for e in b["form"]:
        e["id"] = bt.NumText(str(int(e["id"]) + 1000))
        if e["variable"] == "email":
            e["responses"][0]["value"] = "Dev@Example.com"
    b["form"].append({"id": bt.NumText("2007"), "label": "Mobile phone", "type": "MOBILE", "variable": "mobile",
                      "responses": [{"value": "+32470000000"}]})
    bp = write_json("changed.json", b)
    want = ref_diff(doc, load(bp))
    t.ok(("changed", "state", '"COMPLETED"', '"INCOMPLETE"') in want and
         any(k == "added" and p == "form[mobile]" for k, p, _, _ in want), "reference sees the planted changes")

    r, out = diff_json([a, bp], t, "changes")
    t.is_(r.rc, 1, "differences: exit 1", r)
    t.is_(got_diff(out), want, "entries = the reference diff")
    count = {k: sum(1 for w in want if w[0] == k) for k in ("added", "removed", "changed")}
    t.is_(counts(out, "added", "removed", "changed") + (out["equal"],),
          (count["added"], count["removed"], count["changed"], False), "summary counts")
    r = bt.run_cli(["diff", a, bp], t=t)
    t.like(r.stdout, r"(?m)^~ state: \"COMPLETED\" -> \"INCOMPLETE\"$", "text: changed line", r)
    t.like(r.stdout, r"(?m)^- campaign\.channel\.website\.country: \"BE\"$", "text: removed line", r)
    t.like(r.stdout, r"(?m)^\+ form\[mobile\]: \{", "text: added line", r)
    t.like(r.stdout, r"%d differences \(%d added, %d removed, %d changed\)" %
           (len(want), count["added"], count["removed"], count["changed"]), "text: summary", r)

    ignored = ["form[*].id", "campaign.channel.**"]
    keep = {w for w in want if not re.match(r"^form\[[^\]]+\]\.id$", w[1])
            and not w[1].startswith("campaign.channel")}
    args = [a, bp]
    for i in ignored:
        args += ["--ignore", i]
    r, out = diff_json(args, t, "ignore")
    t.is_(r.rc, 1, "with --ignore: still different", r)
    t.is_(got_diff(out), keep, "--ignore form[*].id and campaign.channel.** leave exactly those out")
    r = bt.run_cli(["diff", a, bp, "--ignore", "**"], t=t)
    t.is_(r.rc, 0, "--ignore '**': exit 0", r)

    # the shipped fixture pair
    r, out = diff_json([a, os.path.join(DIFF_FIXTURES, "representative-changed.json")], t, "fixture pair")
    t.is_(got_diff(out), ref_diff(doc, load(os.path.join(DIFF_FIXTURES, "representative-changed.json"))),
          "fixtures/diff/representative-changed.json: entries = the reference diff")


def t_ab_cross(t):
    """Every v2 golden fixture against the representative one and the next one."""
    names = sorted(n for n in os.listdir(V2_FIXTURES) if n.endswith(".json"))
    bad = []
    for i, n in enumerate(names):
        for other in ("representative.json", names[(i + 1) % len(names)]):
            pa, pb = os.path.join(V2_FIXTURES, other), os.path.join(V2_FIXTURES, n)
            r = bt.run_cli(["diff", pa, pb, "--json"])
            want = ref_diff(load(pa), load(pb))
            got = got_diff(bt.load_json_exact(r.out)) if r.rc in (0, 1) else None
            if got != want or r.rc != (1 if want else 0):
                bad.append((other, n, r.rc, sorted(want ^ (got or set()))[:5]))
    t.is_(bad, [], "%d golden pairs agree with the reference diff" % (2 * len(names)))


def t_ab_numbers_unicode(t):
    cases = [
        ('{"n":1}', '{"n":1.0}', 1, {("changed", "n", "1", "1.0")}),
        ('{"n":100}', '{"n":1e2}', 1, {("changed", "n", "100", "1e2")}),
        ('{"id":18446744073709551615}', '{"id":18446744073709551615}', 0, set()),
        ('{"s":"\\u00e9t\\u00e9"}', '{"s":"été"}', 0, set()),
        ('{"s":"été"}', '{"s":"ete"}', 1, {("changed", "s", '"été"', '"ete"')}),
        ('{"id":"1"}', '{"id":1}', 1, {("changed", "id", '"1"', "1")}),
    ]
    for i, (a, b, rc, want) in enumerate(cases):
        pa, pb = tmp.file("n%da.json" % i, a), tmp.file("n%db.json" % i, b)
        r, out = diff_json([pa, pb], t, "numbers %d" % i)
        t.is_((r.rc, got_diff(out)), (rc, want), "%s vs %s" % (a, b))


def t_ab_errors(t):
    a = os.path.join(V2_FIXTURES, "representative.json")
    bad = tmp.file("bad.json", '{"id": "x",\n "state": }\n')
    r = bt.run_cli(["diff", a, bad], t=t)
    t.is_(r.rc, 2, "invalid JSON: exit 2", r)
    t.like(r.stderr, re.escape(bad) + r": invalid JSON at byte \d+", "names the file and the byte", r)
    t.is_(r.stdout, "", "invalid JSON: nothing on stdout")
    r = bt.run_cli(["diff", a, tmp.file("dup.json", '{"a":1,"a":2}')], t=t)
    t.is_(r.rc, 2, "duplicate key: exit 2", r)
    t.like(r.stderr, r'duplicate key "a"', "duplicate key named", r)
    r = bt.run_cli(["diff", a, tmp.file("cmt.json", '{} // no')], t=t)
    t.is_(r.rc, 2, "comments are not JSON: exit 2", r)
    r = bt.run_cli(["diff", a, tmp.join("missing.json")], t=t)
    t.is_(r.rc, 2, "missing file: exit 2", r)
    r = bt.run_cli(["diff", a, a, "--ignore", "form[*"], t=t)
    t.is_(r.rc, 2, "bad ignore pattern: exit 2", r)
    t.like(r.stderr, r"ignore pattern", "bad ignore pattern named", r)
    for args, what in ([[a], "one document"], [[a, a, a], "three documents"],
                       [["--against", a, a], "--against without --mapping"],
                       [["--color", "purple", a, a], "bad --color"],
                       [["--form", a, a], "--form in A/B"]):
        r = bt.run_cli(["diff"] + args, t=t)
        t.is_(r.rc, 2, "usage: %s: exit 2" % what, r)
        t.ok(r.stderr.strip() != "" and r.stdout == "", "usage: %s: message on stderr only" % what, r)


# --------------------------------------------------------------------------
# --against
# --------------------------------------------------------------------------

def modified_mapping():
    """A copy of the shipped rules with three changes; returns its path."""
    with open(bt.MAPPING, encoding="utf-8") as f:
        text = f.read()
    changes = [
        ('["complete", "COMPLETED"]', '["complete", "DONE"]'),
        ('{ to = "campaign.channel.website.country"; from = "website_country"; convert = "upper"; }',
         '{ to = "campaign.channel.website.country"; from = "website_country"; }'),
        ('{ to = "campaign.type"; from = "campaign_type"; }',
         '{ to = "campaign.type"; from = "campaign_type"; required = true; }'),
    ]
    for old, new in changes:
        if old not in text:
            raise bt.TestFailure("shipped mapping no longer contains %s" % old)
        text = text.replace(old, new)
    return tmp.file("new.conf", text)


def t_against(t):
    new = modified_mapping()
    fields, _ = rule_lines(new)
    names = sorted(n for n in os.listdir(bt.V1_FIXTURES) if n.endswith(".json"))
    # expectation from `map` under both rule sets
    groups, ids, only_old, only_new, identical, changed = {}, {}, set(), set(), 0, 0
    for n in names:
        p = os.path.join(bt.V1_FIXTURES, n)
        ro = bt.run_cli(["map", "--mapping", bt.MAPPING, p])
        rn = bt.run_cli(["map", "--mapping", new, p])
        if ro.rc == 0 and rn.rc != 0:
            only_old.add(p)
        elif rn.rc == 0 and ro.rc != 0:
            only_new.add(p)
        elif ro.rc == 0 and rn.rc == 0:
            lo, ln = leaves(bt.load_json_exact(ro.out)), leaves(bt.load_json_exact(rn.out))
            diffs = {k for k in set(lo) | set(ln)
                     if k not in lo or k not in ln or bt.dumps_exact(lo[k]) != bt.dumps_exact(ln[k])}
            if diffs:
                changed += 1
            else:
                identical += 1
            for k in diffs:
                groups[k] = groups.get(k, 0) + 1
                ids.setdefault(k, set()).add(bt.load_json_exact(rn.out).get("id"))
    t.require(changed > 0 and only_old, "the modified rules change something and make some fixtures fail",
              (changed, only_old))

    r, out = diff_json(["--mapping", bt.MAPPING, "--against", new, bt.V1_FIXTURES], t, "against")
    t.is_(r.rc, 1, "rule change with differences: exit 1", r)
    t.is_(counts(out, "payloads", "identical", "changed", "only_old", "only_new"),
          (len(names), identical, changed, len(only_old), len(only_new)), "payload counts")
    t.is_({p["path"]: int(p["payloads"]) for p in out["paths"]}, groups, "paths and payload counts")
    t.is_([int(p["payloads"]) for p in out["paths"]],
          sorted((int(p["payloads"]) for p in out["paths"]), reverse=True), "paths sorted by count")
    byp = {p["path"]: p for p in out["paths"]}
    t.is_(byp.get("state", {}).get("rule"), "%s:%d" % (new, fields["state"][0]), "state: the NEW rule line")
    t.is_(byp.get("state", {}).get("from"), "status", "state: its v1 key")
    t.is_((bt.dumps_exact(byp["state"].get("a")), bt.dumps_exact(byp["state"].get("b"))),
          ('"COMPLETED"', '"DONE"'), "state: sample values")
    country = "campaign.channel.website.country"
    t.is_(byp.get(country, {}).get("rule"), "%s:%d" % (new, fields[country][0]), "country: the NEW rule line")
    bad = [(p, g["examples"]) for p, g in byp.items()
           if len(g["examples"]) != min(3, groups.get(p, 0)) or not set(g["examples"]) <= ids.get(p, set())]
    t.is_(bad, [], "up to 3 examples per path, each the participation id of a payload it changed")
    fails = {f["input"]: f for f in out["failures"]}
    t.is_(set(f for f in fails if fails[f]["kind"] == "only_old"), only_old, "fixtures mapping only under OLD")
    t.ok(all("campaign_type" in fails[f]["error"] and ("%s:%d" % (new, fields["campaign.type"][0])) in fails[f]["error"]
             for f in only_old), "their error names the key and the NEW rule line")

    r = bt.run_cli(["diff", "--mapping", bt.MAPPING, "--against", new, bt.V1_FIXTURES], t=t)
    t.is_(r.rc, 1, "text: exit 1", r)
    t.like(r.stdout, r"(?m)^\s+%d\s+state\s+\(%d changed\)\s+%s" % (groups["state"], groups["state"],
                                                                     re.escape("%s:%d" % (new, fields["state"][0]))),
           "text: the state group with count and rule", r)
    t.like(r.stdout, r"map under OLD only \(NEW fails\):", "text: the failures section", r)

    r = bt.run_cli(["diff", "--mapping", bt.MAPPING, "--against", bt.MAPPING, bt.V1_FIXTURES], t=t)
    t.is_(r.rc, 0, "same rules: exit 0", r)
    t.like(r.stdout, r"no change", "same rules: no change", r)


def t_against_ndjson(t):
    _, _, v1 = bt.v1_fixture()
    new = modified_mapping()
    lines = [bt.v1_variant(v1, participation_id="%08d-0000-4000-8000-000000000000" % i).decode() for i in range(3)]
    lines.insert(1, "")
    nd = tmp.file("payloads.ndjson", "\n".join(lines) + "\n")
    folder = os.path.join(tmp.path, "set")
    os.mkdir(folder)
    with open(os.path.join(folder, "more.txt"), "w") as f:
        f.write("ignored: not *.json")
    with open(os.path.join(folder, "two.jsonl"), "w") as f:
        f.write(lines[0] + "\n" + lines[2] + "\n")
    r, out = diff_json(["--mapping", bt.MAPPING, "--against", new, nd, folder], t, "ndjson")
    t.is_((r.rc,) + counts(out, "inputs", "payloads", "changed"), (1, 2, 5, 5), "NDJSON files and folders")
    ex = {p["path"]: p["examples"] for p in out["paths"]}.get("state", [])
    t.is_(len(ex), 3, "at most 3 examples per path")
    t.ok(all(x.endswith("-0000-4000-8000-000000000000") for x in ex), "examples are participation ids (upper-cased by the rules)", ex)
    bad = tmp.file("bad.ndjson", lines[0] + "\n{not json\n")
    r, out = diff_json(["--mapping", bt.MAPPING, "--against", new, bad], t, "bad line")
    t.is_(counts(out, "payloads", "invalid", "changed"), (2, 1, 1), "an invalid line fails under both")
    empty = os.path.join(tmp.path, "empty")
    os.mkdir(empty)
    for args, what in ([[tmp.join("none")], "missing fixture"], [[], "no fixtures"],
                       [[empty], "a folder without payloads"]):
        r = bt.run_cli(["diff", "--mapping", bt.MAPPING, "--against", new] + args, t=t)
        t.is_(r.rc, 2, "%s: exit 2" % what, r)
    broken = tmp.file("broken.conf", "version = 1;\nfields = ( { to = \"nowhere\"; from = \"x\"; } );\n")
    r = bt.run_cli(["diff", "--mapping", bt.MAPPING, "--against", broken, nd], t=t)
    t.is_(r.rc, 2, "broken NEW rules: exit 2", r)
    t.like(r.stderr, re.escape(broken) + r":2:", "broken NEW rules: file:line", r)


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def expected_report(path):
    e = {"participations": 0, "matched": 0, "identical": 0, "different": 0, "unmatched_translated": 0,
         "unmatched_real": 0}
    paths, rules, unmapped = {}, {}, {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            o = json.loads(line)
            if o.get("event") == "expired":
                e["unmatched_" + o["side"]] += 1
                continue
            e["participations"] += 1
            for k in o.get("unmapped", []):
                unmapped[k] = unmapped.get(k, 0) + 1
            c = o.get("comparison")
            if c is None:
                continue
            e["matched"] += 1
            e[c["status"]] += 1
            for d in c["differences"]:
                paths[d["path"]] = paths.get(d["path"], 0) + 1
                if d.get("rule"):
                    rules.setdefault(d["path"], d["rule"])
    return e, paths, rules, unmapped


def t_report(t):
    e, paths, rules, unmapped = expected_report(REPORT)
    t.require(e["different"] and e["identical"] and e["unmatched_real"] and e["unmatched_translated"],
              "the sample report has every kind of line", e)
    r = bt.run_cli(["report", REPORT, "--json"], t=t)
    out = json.loads(r.out)
    t.is_(r.rc, 1 if e["different"] else 0, "report with different participations: exit 1", r)
    t.is_({k: out[k] for k in e}, e, "counts")
    t.is_(out["unmatched"], e["unmatched_real"] + e["unmatched_translated"], "unmatched total")
    t.is_({p["path"]: p["count"] for p in out["paths"]}, paths, "paths and counts")
    t.is_({p["path"]: p["rule"] for p in out["paths"] if p["rule"]}, rules, "the rule behind each path")
    t.is_({u["key"]: u["count"] for u in out["unmapped"]}, unmapped, "unmapped keys")
    r = bt.run_cli(["report", REPORT, "--json", "--top", "1"], t=t)
    top = max(paths.values())
    t.is_([p["count"] for p in json.loads(r.out)["paths"]], [top], "--top 1: the most frequent path")

    r = bt.run_cli(["report", REPORT], t=t)
    t.like(r.stdout, r"(?m)^  participations\s+%d$" % e["participations"], "text: participations", r)
    t.like(r.stdout, r"(?m)^  matched\s+%d$" % e["matched"], "text: matched", r)
    t.like(r.stdout, r"(?m)^    different\s+%d$" % e["different"], "text: different", r)
    first = max(paths, key=lambda p: (paths[p], [-ord(c) for c in p]))
    t.like(r.stdout, r"(?m)^\s+%d\s+%s\s.*%s$" % (paths[first], re.escape(first), re.escape(rules.get(first, ""))),
           "text: top path with its count and rule", r)

    ok_only = tmp.file("ok.ndjson", "".join(l for l in open(REPORT, encoding="utf-8")
                                            if '"status":"different"' not in l))
    r = bt.run_cli(["report", ok_only], t=t)
    t.is_(r.rc, 0, "no different participation: exit 0", r)
    broken = tmp.file("broken.ndjson", open(REPORT, encoding="utf-8").readline() + '{"participation_id":\n' +
                      "[" * 100 + "]" * 100 + "\n")
    r = bt.run_cli(["report", broken, "--json"], t=t)
    t.is_(r.rc, 2, "malformed lines: exit 2", r)
    t.like(r.stderr, re.escape(broken) + r":2: ", "the malformed line is named", r)
    t.like(r.stderr, re.escape(broken) + r":3: nested deeper than 64", "deep nesting refused before parsing", r)
    t.is_(json.loads(r.out)["participations"], 1, "the summary still counts the good lines")
    r = bt.run_cli(["report", tmp.join("missing.ndjson")], t=t)
    t.is_(r.rc, 2, "missing report: exit 2", r)
    r = bt.run_cli(["report"], t=t)
    t.is_(r.rc, 2, "report without FILE: exit 2", r)


def t_help(t):
    for cmd, opts in (("diff", ["--mapping", "--against", "--ignore", "--json", "NO_COLOR"]),
                      ("report", ["--json", "--top"])):
        r = bt.run_cli([cmd, "--help"], t=t)
        t.is_(r.rc, 0, "%s --help: exit 0" % cmd, r)
        for o in opts:
            t.ok(o in r.stdout, "%s --help documents %s" % (cmd, o))
    r = bt.run_cli(["--help"], t=t)
    t.ok("diff" in r.stdout and "report" in r.stdout, "main usage lists diff and report", r)


tests = [
    ("help", t_help),
    ("provenance", t_provenance),
    ("colour on a terminal", t_color_tty),
    ("provenance: unmapped and dropped keys", t_provenance_unmapped),
    ("provenance: errors", t_provenance_errors),
    ("A/B: equal", t_ab_equal),
    ("A/B: changes and ignore", t_ab_changes),
    ("A/B: golden pairs", t_ab_cross),
    ("A/B: numbers and unicode", t_ab_numbers_unicode),
    ("A/B: errors", t_ab_errors),
    ("--against", t_against),
    ("--against: NDJSON and folders", t_against_ndjson),
    ("report", t_report),
]

try:
    for name, fn in tests:
        t.run(name, fn)
finally:
    tmp.cleanup()
t.done()
