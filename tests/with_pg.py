"""Run a test program beside a private PostgreSQL server.

    with_pg.py PROGRAM [ARGS...]

Starts a cluster (bridgetest.PgCluster), runs PROGRAM with
BRIDGE_TEST_PG_URL naming its database and BRIDGE_TEST_PG_CTL the pg_ctl
command line of the cluster (to stop and start it: append "stop -m
immediate" or "start"), passes its TAP output through, stops the cluster
and exits with the program's status.  No server: one failing TAP line."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest  # noqa: E402


def main():
    if len(sys.argv) < 2:
        print("usage: with_pg.py PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    try:
        pg = bridgetest.PgCluster().start()
    except bridgetest.TestFailure as e:
        print("1..1")
        print("not ok 1 - a PostgreSQL server for the test")
        for line in str(e).splitlines():
            print("# " + line)
        return 1
    ctl = " ".join(pg.as_user + [os.path.join(pg.bindir, "pg_ctl"), "-D", pg.data, "-l",
                                 pg.logfile, "-w", "-t", "60"])
    env = dict(os.environ, BRIDGE_TEST_PG_URL=pg.url, BRIDGE_TEST_PG_CTL=ctl)
    try:
        rc = subprocess.call(sys.argv[1:], env=env)
    finally:
        pg.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())
