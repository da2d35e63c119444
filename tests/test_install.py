#!/usr/bin/python3
"""`meson install` into a DESTDIR: every file in its place, the man pages
clean under mandoc, the unit verified by systemd-analyze, every shipped
example config valid for `check`."""

import json
import os
import shutil
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()
dest = tmp.join("destdir")

r = subprocess.run(["meson", "install", "-C", bt.BUILD_ROOT, "--no-rebuild", "--destdir", dest],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
t.require(r.returncode == 0, "meson install --destdir exits 0", r.stdout.decode()[-2000:])
installed = json.loads(subprocess.run(["meson", "introspect", bt.BUILD_ROOT, "--installed"],
                                      stdout=subprocess.PIPE, check=True).stdout)
where = {os.path.relpath(src, bt.SOURCE_ROOT) if src.startswith(bt.SOURCE_ROOT + "/mappings")
         or src.startswith(bt.SOURCE_ROOT + "/dist") else os.path.basename(src): dst
         for src, dst in installed.items()}


def inside(path):
    return dest + path


def expect(name, suffix):
    dst = where.get(name)
    t.ok(dst and dst.endswith(suffix) and os.path.exists(inside(dst)),
         "installed: %s as .../%s" % (name, suffix), dst)
    return inside(dst) if dst else None


binary = expect("webhook-bridge", "bin/webhook-bridge")
t.ok(binary and os.access(binary, os.X_OK), "the binary is executable")
conf = expect("bridge.conf", "etc/webhook-bridge/bridge.conf")
rules = expect("mappings/qualifio-v1-to-v2.conf",
               "share/webhook-bridge/mappings/qualifio-v1-to-v2.conf")
examples = expect("mappings/examples", "share/webhook-bridge/mappings/examples")
unit = expect("webhook-bridge.service", "lib/systemd/system/webhook-bridge.service")
expect("webhook-bridge.logrotate", "etc/logrotate.d/webhook-bridge")
completion = expect("dist/webhook-bridge.bash-completion",
                    "share/bash-completion/completions/webhook-bridge")
mans = [expect("dist/webhook-bridge.1", "share/man/man1/webhook-bridge.1"),
        expect("dist/webhook-bridge.conf.5", "share/man/man5/webhook-bridge.conf.5"),
        expect("dist/webhook-bridge-mapping.5", "share/man/man5/webhook-bridge-mapping.5")]

# the installed config names the installed rules; checked where they were put
text = open(conf).read()
rules_path = where["mappings/qualifio-v1-to-v2.conf"]
t.ok('mapping = "%s";' % rules_path in text, "installed bridge.conf names the installed rules")
moved = tmp.file("installed-bridge.conf", text.replace(rules_path, inside(rules_path)))
r = bt.run_cli(["check", "--config", moved])
t.is_(r.rc, 0, "installed bridge.conf passes check", r)

for page in mans:
    r = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", page],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t.ok(r.returncode == 0 and not r.stdout.strip(),
         "mandoc -T lint: %s clean" % os.path.basename(page), r.stdout.decode())
man1 = open(mans[0]).read()
for cmd in ("serve", "map", "check", "queue", "diff", "report", "replay", "learn"):
    t.ok(".B %s\n" % cmd in man1, "webhook-bridge(1) documents %s" % cmd)

r = subprocess.run(["bash", "-c", "source %s && complete -p webhook-bridge" % completion],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
t.ok(r.returncode == 0 and b"_webhook_bridge" in r.stdout, "bash completion loads", r.stdout)

# systemd-analyze verify wants the commands to exist: point them into DESTDIR
u = open(unit).read()
for key in ("Type=notify", "DynamicUser=yes", "StateDirectory=", "LogsDirectory=",
            "ConfigurationDirectory=", "ProtectSystem=strict", "SystemCallFilter=@system-service",
            "CapabilityBoundingSet=\n", "CAP_NET_BIND_SERVICE", "ExecReload=", "WatchdogSec="):
    t.ok(key in u, "unit has %s" % key.strip())
t.like(u, r"ExecStartPre=\S+/webhook-bridge check --config \S+/webhook-bridge/bridge\.conf",
       "unit checks the config before it starts")
bindir = os.path.dirname(where["webhook-bridge"])
copy = tmp.file("webhook-bridge.service", u.replace(bindir + "/", inside(bindir) + "/"))
r = subprocess.run(["systemd-analyze", "verify", "--man=no", copy],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
t.ok(r.returncode == 0 and not r.stdout.strip(), "systemd-analyze verify: unit clean",
     r.stdout.decode())

# every example passes check (the HTTPS one with a certificate made here)
ex = inside(where["mappings/examples"])
tls = os.path.join(ex, "tls")
os.makedirs(tls, exist_ok=True)
r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-keyout", os.path.join(tls, "bridge.key"),
                    "-out", os.path.join(tls, "bridge.crt")],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
t.require(r.returncode == 0, "test certificate made", r.stdout)
modes = {"forward", "queued", "dry-run", "dual", "https", "recording"}
found = {f[:-5] for f in os.listdir(ex) if f.endswith(".conf")}
t.is_(found, modes, "one example per mode")
for name in sorted(found):
    r = bt.run_cli(["check", "--config", os.path.join(ex, name + ".conf")])
    t.is_(r.rc, 0, "example %s.conf passes check" % name, r)
    # dry_run.stdout: off in the production examples that have a dry-run route
    r = bt.run_cli(["check", "--config", os.path.join(ex, name + ".conf"), "--print-config"])
    if 'mode = "dry-run";' in r.stdout:
        t.like(r.stdout, r"\n  stdout = false;\n", "example %s.conf: dry_run.stdout = false" % name)
r = bt.run_cli(["check", "--config", moved, "--print-config"])
t.like(r.stdout, r"\n  stdout = true;\n", "the quick-start bridge.conf echoes v2 to stdout")
tmp.cleanup()
t.done()
