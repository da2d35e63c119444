#!/usr/bin/env python3
"""The house drawn from its includes: which module includes which.

A module is NAME: include/bridge/NAME.h and bridge/NAME.c when they are
there, bridge/NAME_*.c (but NAME_cmd.c, a command of its own) and the
private bridge/NAME_types.h.  Three floors:
  base      buf, json, utf8, siphash, clock, diag: include no other module
            of a higher floor;
  library   everything else but the commands;
  commands  the files that define a cmd_* entry point (and main.c), with
            cli (their shared option parsing) and cmd_out (their output).
Checked: no module includes one on a higher floor (no upward arrow), no
library module includes a command, and the graph has no cycle.

  python3 tests/test_layers.py           TAP, for the test run
  python3 tests/test_layers.py --graph   the graph, one line per module
"""
import os
import re
import sys

ROOT = os.environ.get("BRIDGE_SOURCE_ROOT") or os.path.join(os.path.dirname(__file__), "..")
BASE = {"buf", "json", "utf8", "siphash", "clock", "diag"}
COMMAND_HELPERS = {"cli", "cmd_out"}
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
INCLUDE = re.compile(r'^\s*#\s*include\s+"(?:bridge/)?([A-Za-z0-9_]+)\.h"', re.M)


def module_names():
    hdrs = {f[:-2] for f in os.listdir(os.path.join(ROOT, "include", "bridge")) if f.endswith(".h")}
    priv = {f[:-2] for f in os.listdir(os.path.join(ROOT, "bridge")) if f.endswith(".h")}
    return hdrs, priv


def owner(stem, hdrs, priv):
    """The module a file stem (without extension) belongs to: NAME_types.h
    and NAME_*.c belong to NAME when NAME has a header or a .c of its own;
    NAME_cmd.c is a command of its own (queue_cmd.c is not the queue)."""
    cs = {f[:-2] for f in os.listdir(os.path.join(ROOT, "bridge")) if f.endswith(".c")}
    names = hdrs | cs
    if stem.endswith("_types") and stem[:-6] in names:
        return owner(stem[:-6], hdrs, priv)
    if stem.endswith("_cmd"):
        return stem
    best = None
    for h in names:
        if stem.startswith(h + "_") and (best is None or len(h) > len(best)):
            best = h
    return best or stem


def graph():
    hdrs, priv = module_names()
    edges = {}
    files = [("include/bridge", f) for f in os.listdir(os.path.join(ROOT, "include", "bridge"))
             if f.endswith(".h")]
    files += [("bridge", f) for f in os.listdir(os.path.join(ROOT, "bridge"))
              if f.endswith((".c", ".h"))]
    for d, f in files:
        me = owner(f[:-2], hdrs, priv)
        with open(os.path.join(ROOT, d, f), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        deps = edges.setdefault(me, set())
        for inc in INCLUDE.findall(text):
            other = owner(inc, hdrs, priv)
            if other != me:
                deps.add(other)
        if f.endswith(".c") and (f == "main.c" or re.search(r"^int cmd_\w+\(int argc", text, re.M)):
            commands.add(me)
    return edges


commands = set()


def floor(m):
    if m in BASE:
        return 0
    if m in commands or m in COMMAND_HELPERS:
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
            print("%-9s %-14s -> %s" % (names[floor(m)], m, " ".join(sorted(edges[m])) or "-"))
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
    ok(not up, "no module includes one on a higher floor", "\n".join(up))
    ok(len(commands) >= 5, "the commands are found (%d: %s)" % (len(commands),
                                                                ", ".join(sorted(commands))))
    ok(all(m in edges for m in BASE), "every base module is there")
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
