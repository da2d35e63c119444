#!/usr/bin/env python3
"""The house drawn from its includes: which module includes which.

A module is NAME: include/bridge/NAME.h and bridge/NAME.c when they are
there, bridge/NAME_*.c (but NAME_cmd.c, a command of its own) and the
private bridge/NAME_types.h; the same within bridge/cmd/.  Three floors:
  base      buf, arena, json, utf8, siphash, clock, diag, strscan, wordload:
            include no other module of a higher floor;
  library   everything else of include/bridge/ and bridge/ (the core);
  commands  everything of bridge/cmd/: the files that define a cmd_* entry
            point, main.c (the command table), cli (their shared option
            parsing), cmd_out (their output), their private headers.
Checked: no module includes one on a higher floor (no upward arrow), so
every command sits above every library module and no library module
includes a command; every entry point lives in bridge/cmd/; no unit test
includes a command's header or calls a command; the graph has no cycle.

  python3 tests/test_layers.py           TAP, for the test run
  python3 tests/test_layers.py --graph   the graph, one line per module
"""
import os
import re
import sys

ROOT = os.environ.get("BRIDGE_SOURCE_ROOT") or os.path.join(os.path.dirname(__file__), "..")
BASE = {"buf", "arena", "json", "utf8", "siphash", "clock", "diag", "strscan", "wordload"}
CMD_DIR = os.path.join("bridge", "cmd")
# A command module's name: "cmd/" and its stem, apart from the library's.
CMD = "cmd/"
# Known cycles, each with why it is there; a new one fails the run.
KNOWN_CYCLES = {
    # config.h embeds the queue's settings (queue.h) and each route's cutover
    # settings (cutover.h), while queue.c, cutover.c and metrics.c read the
    # routes of a struct bridge_config (queue_metrics_render, cutover_configure,
    # metrics_new) and queue.c and cutover.c count into metrics: to be broken
    # by giving the settings structs headers of their own below config.h.
    frozenset({"config", "cutover", "metrics", "queue"}),
    # admin.c serves the console; console.c renders from admin's view
    # (admin_view, admin_readiness): the view belongs in a header of its own.
    frozenset({"admin", "console"}),
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)\.h"', re.M)
ENTRY = re.compile(r"^int cmd_\w+\(int argc", re.M)


def listdir(d, ends):
    return sorted(f for f in os.listdir(os.path.join(ROOT, d)) if f.endswith(ends))


def owner(stem, names):
    """The module a file stem (without extension) belongs to, among the
    stems of its own floor (names): NAME_types.h and NAME_*.c belong to NAME
    when NAME has a header or a .c of its own; NAME_cmd.c is a command of its
    own (queue_cmd.c is not the queue)."""
    if stem.endswith("_types") and stem[:-6] in names:
        return owner(stem[:-6], names)
    if stem.endswith("_cmd"):
        return stem
    best = None
    for h in names:
        if stem.startswith(h + "_") and (best is None or len(h) > len(best)):
            best = h
    return best or stem


def graph():
    """The include edges between modules; fills commands (the modules that
    define an entry point) and entries_outside (entry points in the core)."""
    lib_names = ({f[:-2] for f in listdir("include/bridge", ".h")} |
                 {f[:-2] for f in listdir("bridge", ".c")})
    cmd_names = {f[:-2] for f in listdir(CMD_DIR, (".c", ".h"))}
    edges = {}
    files = [("include/bridge", f) for f in listdir("include/bridge", ".h")]
    files += [("bridge", f) for f in listdir("bridge", (".c", ".h"))]
    files += [(CMD_DIR, f) for f in listdir(CMD_DIR, (".c", ".h"))]
    for d, f in files:
        in_cmd = d == CMD_DIR
        me = CMD + owner(f[:-2], cmd_names) if in_cmd else owner(f[:-2], lib_names)
        with open(os.path.join(ROOT, d, f), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        deps = edges.setdefault(me, set())
        for inc in INCLUDE.findall(text):
            # as the compiler finds it: beside the file, then under include/
            path = os.path.normpath(os.path.join(d, inc))
            if not os.path.exists(os.path.join(ROOT, path + ".h")):
                path = os.path.normpath(os.path.join("include", inc))
            where, stem = os.path.split(path)
            if where == CMD_DIR:
                other = CMD + owner(stem, cmd_names)
            elif where in ("bridge", os.path.join("include", "bridge")):
                other = owner(stem, lib_names)
            else:
                other = path  # outside the tree's modules: check 8 names it
            if other != me:
                deps.add(other)
        entry = f.endswith(".c") and (f == "main.c" or ENTRY.search(text))
        if entry and in_cmd:
            commands.add(me)
        elif entry:
            entries_outside.append("%s/%s" % (d, f))
    return edges


commands = set()
entries_outside = []


def floor(m):
    if m in BASE:
        return 0
    if m.startswith(CMD):
        return 2
    return 1


def cycles(edges):
    """Every strongly connected set of more than one module (Tarjan)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(m):
        index[m] = low[m] = counter[0]
        counter[0] += 1
        stack.append(m)
        on.add(m)
        for n in sorted(edges.get(m, ())):
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            comp = set()
            while True:
                n = stack.pop()
                on.discard(n)
                comp.add(n)
                if n == m:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))
    for m in sorted(edges):
        if m not in index:
            visit(m)
    return out


def main():
    edges = graph()
    names = ["base", "library", "commands"]
    if "--graph" in sys.argv:
        for m in sorted(edges, key=lambda m: (floor(m), m)):
            print("%-9s %-16s -> %s" % (names[floor(m)], m, " ".join(sorted(edges[m])) or "-"))
        return 0
    n = 0
    failed = 0

    def ok(cond, name, diag=""):
        nonlocal n, failed
        n += 1
        print("%s %d - %s" % ("ok" if cond else "not ok", n, name))
        if not cond:
            failed += 1
            for line in str(diag).splitlines():
                print("#   " + line)
    up = ["%s (%s) -> %s (%s)" % (m, names[floor(m)], d, names[floor(d)])
          for m in sorted(edges) for d in sorted(edges[m]) if floor(d) > floor(m)]
    ok(not up, "no module includes one on a higher floor (every command sits above every "
       "library module)", "\n".join(up))
    ok(len(commands) >= 5, "the commands are found (%d: %s)" % (len(commands),
                                                                ", ".join(sorted(commands))))
    ok(all(m in edges for m in BASE), "every base module is there")
    ok(not entries_outside, "every command's entry point is in bridge/cmd/",
       "\n".join(entries_outside))
    # and the build agrees: the core library is bridge/*.c, the command
    # library and the binary bridge/cmd/*.c
    with open(os.path.join(ROOT, "meson.build"), encoding="utf-8") as fh:
        build = fh.read()
    listed = {}
    for var in ("core_sources", "cmd_sources"):
        m = re.search(r"^%s = files\((.*?)^\)" % var, build, re.M | re.S)
        listed[var] = set(re.findall(r"'([^']+\.c)'", m.group(1))) if m else set()
    exe = re.search(r"^bridge_exe = executable\('webhook-bridge', '([^']+)'", build, re.M)
    want = {"core_sources": {"bridge/" + f for f in listdir("bridge", ".c")},
            "cmd_sources": {CMD_DIR + "/" + f for f in listdir(CMD_DIR, ".c")} -
            {CMD_DIR + "/main.c"}}
    wrong = ["%s: %s" % (v, " ".join(sorted(listed[v] ^ want[v]))) for v in want
             if listed[v] != want[v]]
    if not exe or exe.group(1) != CMD_DIR + "/main.c":
        wrong.append("the binary is not built from %s/main.c" % CMD_DIR)
    ok(not wrong, "meson.build: the core library is bridge/*.c, the commands' bridge/cmd/*.c",
       "\n".join(wrong))
    in_tests = []
    cmd_headers = {f for f in listdir(CMD_DIR, ".h")}
    for f in listdir("tests", ".c"):
        with open(os.path.join(ROOT, "tests", f), encoding="utf-8", errors="replace") as fh:
            for i, line in enumerate(fh):
                m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
                if (m and (m.group(1).startswith("bridge/cmd/") or "/cmd/" in m.group(1)
                           or os.path.basename(m.group(1)) in cmd_headers)) or \
                        re.search(r"\bcmd_[a-z]+\s*\(", line):
                    in_tests.append("tests/%s:%d: %s" % (f, i + 1, line.strip()))
    ok(not in_tests, "no unit test or fuzz harness uses a command (they link the core only)",
       "\n".join(in_tests))
    found = cycles(edges)
    new = [c for c in found if c not in KNOWN_CYCLES]
    ok(not new, "the include graph has no cycle but the known ones (%d known: %s)"
       % (len(KNOWN_CYCLES), "; ".join(" <-> ".join(sorted(c)) for c in KNOWN_CYCLES)),
       "\n".join(" <-> ".join(sorted(c)) for c in new))
    for c in KNOWN_CYCLES:
        if c not in found:
            print("# known cycle %s is gone: drop it from KNOWN_CYCLES" % " <-> ".join(sorted(c)))
    unknown = sorted(d for m in edges for d in edges[m] if d not in edges)
    ok(not unknown, "every included header belongs to a module of the tree", unknown)
    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
