#!/usr/bin/python3
"""Turn one bench/run.sh result folder into a Markdown section of RESULTS.md.

    report.py DIR

DIR holds `facts` (key TAB value lines) and the wrk outputs (NAME.rROUND.wrk
and mem.wrk), whose
"BENCH {json}" line comes from bench/post.lua. A figure is marked INVALID
when wrk saw a non-2xx answer or a socket error, or when the sink received
fewer posts than the proxy answered as delivered.
"""

import json
import os
import sys

TARGETS = [
    ("ceiling", "ceiling: wrk → sink"),
    ("nginx", "nginx proxy_pass (keep-alive) → sink"),
    ("bridge", "webhook-bridge forward → sink"),
]


def bench_line(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("BENCH "):
                return json.loads(line[6:])
    return None


def load(folder):
    """facts, and for each wrk target the list of its rounds' figures."""
    facts = {}
    with open(os.path.join(folder, "facts"), encoding="utf-8") as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("\t")
            facts[key] = value
    runs = {}
    for name in [t[0] for t in TARGETS]:
        rounds = []
        for i in range(1, int(facts.get("rounds", "1")) + 1):
            path = os.path.join(folder, "%s.r%d.wrk" % (name, i))
            r = bench_line(path) if os.path.exists(path) else None
            if r is not None:
                r["sink_posts"] = int(facts.get("%s.r%d.sink_posts" % (name, i), "0"))
                r["proxy_cpu"] = facts.get("%s.r%d.proxy_cpu" % (name, i))
                r["sink_cpu"] = facts.get("%s.r%d.sink_cpu" % (name, i))
                r["proxy_us"] = cpu_us(facts, "%s.r%d.proxy_ticks" % (name, i), r["requests"])
                r["sink_us"] = cpu_us(facts, "%s.r%d.sink_ticks" % (name, i), r["requests"])
                rounds.append(r)
        if rounds:
            runs[name] = rounds
    path = os.path.join(folder, "mem.wrk")
    if os.path.exists(path) and bench_line(path):
        runs["mem"] = bench_line(path)
    return facts, runs


def cpu_us(facts, key, requests):
    """CPU microseconds per request from a tick count, or None when unknown."""
    ticks, tck = facts.get(key), facts.get("clk_tck")
    if ticks is None or tck is None or not requests:
        return None
    return int(ticks) / int(tck) * 1e6 / requests


def us(value):
    return "—" if value is None else "%.1f" % value


def median_round(rounds):
    return sorted(rounds, key=lambda r: r["rps"])[(len(rounds) - 1) // 2]


def ms(us):
    return "%.2f ms" % (us / 1000.0)


def mib(kb):
    return "%.1f MiB" % (int(kb) / 1024.0)


def problems(run, sink_posts=None):
    """Why a wrk run cannot be trusted; empty when it can."""
    out = []
    if run["non2xx"]:
        out.append("%d non-2xx answers" % run["non2xx"])
    sock = run["connect_errors"] + run["read_errors"] + run["write_errors"] + run["timeouts"]
    if sock:
        out.append("%d socket errors/timeouts" % sock)
    if sink_posts is not None and sink_posts < run["requests"]:
        out.append("sink got %d posts for %d answers" % (sink_posts, run["requests"]))
    return out


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    facts, runs = load(sys.argv[1])
    f = facts.get
    w = []
    w.append("## %s, %s run" % (f("date"), f("mode")))
    w.append("")
    w.append("| machine | |")
    w.append("|---|---|")
    w.append("| CPU | %s, nproc %s |" % (f("cpu"), f("nproc")))
    w.append("| kernel | %s |" % f("kernel"))
    w.append("| memory | %s |" % f("memory"))
    w.append("| software | %s |" % f("versions"))
    w.append("| source | commit %s, meson buildtype=release |" % f("commit"))
    w.append("")
    w.append("wrk, the proxy under test and the sink all share these %s cores, so every figure is "
             "lower than on a machine where the load generator runs elsewhere. Load average "
             "(1/5/15 min) at the start: %s; at the end: %s. CPU is the share of one core used "
             "during the measured run (100%% = one core busy)."
             % (f("nproc"), f("load_start"), f("load_end")))
    w.append("")
    # runs recorded before the setting existed had no nginx access log
    nginx_log = ("`combined buffer=64k` (a line per request)"
                 if facts.get("nginx_access_log", "off") == "on" else "off")
    w.append("Load: `wrk -t%s -c%s -d%ss --latency -s bench/post.lua` (after %s s of unrecorded "
             "warm-up per target) posting %s as `application/json`; %s round(s) over the three "
             "targets in turn, each row shows the median round (its p50/p99 too); sink: %s event "
             "loop(s); nginx: %s worker process(es), `keepalive 64` (per worker), access log %s; "
             "bridge: %s worker(s), "
             "one forward route, upstream.max_connections 64 (per worker), log_level %s (one access "
             "line per post). \"Posts the sink got\" counts what reached the sink "
             "during the measured run (in-flight posts at the end included)."
             % (f("wrk_threads"), f("connections"), f("duration"), f("warmup"), f("payload"),
                f("rounds"), f("sink_threads"), f("workers"), nginx_log, f("workers"),
                f("log_level")))
    w.append("")
    w.append("| target | requests/s | p50 | p99 | non-2xx | posts the sink got | CPU proxy / sink "
             "| CPU µs/request proxy / sink | peak RSS (VmHWM) | valid |")
    w.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    invalid = False
    med = {}
    for name, label in TARGETS:
        rounds = runs.get(name)
        if not rounds:
            w.append("| %s | missing | | | | | | | | INVALID: no wrk result |" % label)
            invalid = True
            continue
        bad = []
        for r in rounds:
            bad += problems(r, r["sink_posts"] if name != "ceiling" else None)
        invalid = invalid or bool(bad)
        r = med[name] = median_round(rounds)
        rps = "%.0f" % r["rps"]
        if len(rounds) > 1:
            rps += " (rounds: %s)" % " / ".join("%.0f" % x["rps"] for x in rounds)
        rss = {"nginx": f("nginx.hwm_kb"), "bridge": f("bridge.hwm_kb")}.get(name)
        w.append("| %s | %s | %s | %s | %d | %s | %s | %s | %s | %s |" % (
            label, rps, ms(r["p50_us"]), ms(r["p99_us"]), sum(x["non2xx"] for x in rounds),
            "—" if name == "ceiling" else "%d" % r["sink_posts"],
            "%s%% / %s%%" % (r["proxy_cpu"] or "—", r["sink_cpu"] or "?"),
            "%s / %s" % (us(r.get("proxy_us")), us(r.get("sink_us"))),
            (mib(rss) + (" (master + workers)" if name == "nginx" else "")) if rss else "",
            "INVALID: " + "; ".join(bad) if bad else "yes"))
    if len(med) == 3:
        b, n, c = med["bridge"]["rps"], med["nginx"]["rps"], med["ceiling"]["rps"]
        w.append("")
        w.append("Ratios (requests/s): bridge/nginx **%.2f**, bridge/ceiling **%.2f**, "
                 "nginx/ceiling %.2f. Bridge RSS: %s idle after start, %s after the run; its log "
                 "has %s warn/error lines."
                 % (b / n, b / c, n / c, mib(f("bridge_idle_rss_kb", "0")), mib(f("bridge.rss_after_kb", "0")),
                    f("bridge.log_problems", "?")))
        bu, nu = med["bridge"].get("proxy_us"), med["nginx"].get("proxy_us")
        if bu and nu:
            w.append("")
            w.append("Bridge/nginx, median rounds: CPU per request **%.2f×** (%.1f µs / %.1f µs; "
                     "target ≤ 1.5×), requests/s **%.2f×** (target ≥ 0.8×), p99 **%.2f×** "
                     "(target ≤ 1.5×)."
                     % (bu / nu, bu, nu, b / n, med["bridge"]["p99_us"] / med["nginx"]["p99_us"]))
        pairs = [(x, y) for x, y in zip(runs["bridge"], runs["nginx"])
                 if x.get("proxy_us") and y.get("proxy_us")]
        if len(pairs) > 1:
            # round i of each target ran minutes apart at most: the spread of
            # these is what the machine's other load did to one ratio
            cpu = [x["proxy_us"] / y["proxy_us"] for x, y in pairs]
            rps = [x["rps"] / y["rps"] for x, y in pairs]
            w.append("")
            w.append("Round by round (bridge/nginx of the same round): CPU per request %s "
                     "(median %.2f×), requests/s %s (median %.2f×)."
                     % (" / ".join("%.2f×" % v for v in cpu), sorted(cpu)[(len(cpu) - 1) // 2],
                        " / ".join("%.2f×" % v for v in rps), sorted(rps)[(len(rps) - 1) // 2]))
    m = runs.get("mem")
    w.append("")
    if m:
        bad = problems(m, int(f("mem.sink_posts", "0")))
        invalid = invalid or bool(bad)
        w.append("Memory, %s keep-alive connections for %s s against a freshly started bridge "
                 "(`wrk -c%s`): RSS %s idle → peak %s (VmHWM; sampled VmRSS peak %s), %s after; "
                 "%.0f requests/s, p50 %s, p99 %s, %d non-2xx; %s."
                 % (f("mem.connections"), f("mem.duration"), f("mem.connections"),
                    mib(f("mem.idle_rss_kb", "0")), mib(f("mem.hwm_kb", "0")),
                    mib(f("mem.rss_sampled_peak_kb", "0")), mib(f("mem.rss_after_kb", "0")),
                    m["rps"], ms(m["p50_us"]), ms(m["p99_us"]), m["non2xx"],
                    "INVALID: " + "; ".join(bad) if bad else "valid"))
    else:
        w.append("Memory run: missing (INVALID).")
        invalid = True
    if f("map_bridge.median_s") and f("map_jq.median_s"):
        count, size = int(f("map.count")), int(f("map.bytes"))
        w.append("")
        w.append("Mapping throughput: %d generated v1 payloads (`bench/gen_ndjson.py`, %.1f MB "
                 "NDJSON), output to /dev/null, median of the runs timed by %s. Outputs identical: %s."
                 % (count, size / 1e6, f("map_bridge.timer"), f("map.same_output")))
        w.append("")
        w.append("| mapper | runs | median | payloads/s | MB/s |")
        w.append("|---|---:|---:|---:|---:|")
        rates = {}
        for key, label in (("map_bridge", "`webhook-bridge map --ndjson --jobs 1`"),
                           ("map_jq", "`jq -c -f bench/v1-to-v2.jq`")):
            t = float(f(key + ".median_s"))
            rates[key] = count / t
            w.append("| %s | %s | %.2f s | %.0f | %.1f |" % (label, f(key + ".runs"), t, count / t,
                                                             size / t / 1e6))
        w.append("")
        w.append("Ratio bridge/jq (one core each: `--jobs 1`): **%.1f×** (target ≥ 50×). Peak RSS "
                 "of `map --ndjson` on this file: %s."
                 % (rates["map_bridge"] / rates["map_jq"], mib(f("map_bridge.peak_rss_kb", "0"))))
    if f("ir_bridge.instructions") and f("ir_jq.instructions"):
        n = int(f("callgrind.count"))
        ib, ij = int(f("ir_bridge.instructions")), int(f("ir_jq.instructions"))
        w.append("")
        w.append("Instructions (Ir) under `valgrind --tool=callgrind` (%s) mapping the first %d of "
                 "those payloads, start-up and exit included:" % (f("callgrind.version"), n))
        w.append("")
        w.append("| mapper | instructions | per payload |")
        w.append("|---|---:|---:|")
        w.append("| `webhook-bridge map --ndjson --jobs 1` | %d | %.0f |" % (ib, ib / n))
        w.append("| `jq -c -f bench/v1-to-v2.jq` | %d | %.0f |" % (ij, ij / n))
        w.append("")
        w.append("Ratio jq/bridge in instructions per payload: **%.1f×** (target ≥ 50×)." % (ij / ib))
    if invalid:
        w.append("")
        w.append("**This run has INVALID figures (see the rows marked INVALID).**")
    print("\n".join(w))
    return 0


if __name__ == "__main__":
    sys.exit(main())
