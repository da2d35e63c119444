#!/usr/bin/python3
"""tests/test_queue.py again, on the PostgreSQL engine: the same checks with
a `shared` group in place of queue.path, against a private cluster this
program starts and stops (bridgetest.PgCluster).

    tests/test_queue_pg.py                       the suite
    tests/test_queue_pg.py --soak SECONDS KILLS  only the crash test, longer
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bridgetest as bt  # noqa: E402
import test_queue  # noqa: E402


def run():
    try:
        pg = bt.PgCluster().start()
    except bt.TestFailure as e:
        t = bt.Tap()
        t.ok(False, "a PostgreSQL server for the test", str(e))
        t.done()
        return
    test_queue.PG = pg
    try:
        test_queue.main("engine: PostgreSQL (%s)" % pg.url)
    finally:
        pg.cleanup()


if __name__ == "__main__":
    run()
