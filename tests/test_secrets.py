#!/usr/bin/python3
"""Credentials and personal data stay where they belong: a capture never
stores an inbound credential, the dry-run report is readable by its owner
only."""

import os
import stat
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402

t = bt.Tap()
tmp = bt.TempDir()


def body():
    _, _, doc = bt.v1_fixture()
    return bt.v1_variant(doc, participation_id=str(uuid.uuid4()))


def listen_config(listen_extra="", routes=None, extra=""):
    routes = routes or [bt.route("dry")]
    return ('listen = { address = "127.0.0.1"; port = 0; path = "/hook"; %s };\n'
            '%s\nroutes = %s;\n' % (listen_extra, extra, bt.cfg_value(routes)))


def start(cfg, name, preexec=None):
    """A started bridge; a bridge that does not start is a failed test."""
    b = bt.Bridge(tmp, cfg, name)
    b.preexec = preexec
    try:
        return b.start()
    except bt.TestFailure as e:
        t.ok(False, "bridge %s starts" % name, str(e))
        raise


def t_record_headers(_t):
    """4: record.headers naming a credential header is refused at load,
    with file:line; the same capture without it starts."""
    cases = [
        ("Authorization", ""),
        ("proxy-authorization", ""),
        ("X-Hook-Key", 'auth = { header = { name = "X-Hook-Key"; value = "k1"; }; };'),
    ]
    for name, listen in cases:
        cfg = listen_config(listen, extra='record = { path = "%s";\n headers = [ "User-Agent",'
                            ' "%s" ]; };' % (tmp.join("cap.ndjson"), name))
        path = tmp.file("rec.conf", cfg)
        r = bt.run_cli(["check", "--config", path], t=t)
        t.ok(r.rc != 0, "check refuses record.headers = %s" % name, repr(r))
        t.like(r.stderr, r"rec\.conf:\d+: .*record\.headers names '%s'" % name,
               "the refusal names file:line and the header (%s)" % name, r.stderr)
    # a route's own inbound auth header counts too
    route = bt.route("dry", auth={"header": {"name": "X-Route-Key", "value": "r1"}})
    cfg = listen_config("", [route], extra='record = { path = "%s"; headers = [ "X-Route-Key" ];'
                        ' };' % tmp.join("cap.ndjson"))
    r = bt.run_cli(["check", "--config", tmp.file("rec2.conf", cfg)], t=t)
    t.ok(r.rc != 0, "check refuses a route's auth header in record.headers", repr(r))
    cfg = listen_config("", extra='record = { path = "%s"; headers = [ "User-Agent" ]; };'
                        % tmp.join("cap.ndjson"))
    r = bt.run_cli(["check", "--config", tmp.file("rec3.conf", cfg)], t=t)
    t.is_(r.rc, 0, "a capture keeping only User-Agent is accepted", repr(r))


def t_report_mode(_t):
    """5: the dry-run report is created 0600 whatever the umask, and a report
    left 0640 by an older version is tightened to 0600."""
    for name, pre in (("new", None), ("old", 0o640)):
        report = tmp.join("report-%s.jsonl" % name)
        if pre is not None:
            with open(report, "w", encoding="utf-8"):
                pass
            os.chmod(report, pre)
        cfg = listen_config(extra='dry_run = { report = "%s"; };' % report)
        b = start(cfg, "report-%s.conf" % name, preexec=lambda: os.umask(0))
        try:
            r = bt.curl(b.url("/hook"), body())
            t.is_(r.status, 200, "%s report: dry-run post answered" % name, r)
            t.ok(bt.wait_for(lambda: os.path.getsize(report) > 0, 5),
                 "%s report: the post is written" % name)
            mode = stat.S_IMODE(os.stat(report).st_mode)
            t.is_(oct(mode), oct(0o600), "%s report: mode 0600" % name)
        finally:
            bt.stop_and_check(t, b)


def main():
    t.run("record.headers refuses credential headers (item 4)", t_record_headers)
    t.run("dry-run report is 0600 (item 5)", t_report_mode)
    tmp.cleanup()
    t.done()


if __name__ == "__main__":
    main()
