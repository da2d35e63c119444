/*
 * store: the SQLite table behind queued delivery, on real files in a
 * temporary folder: schema and file checks, duplicates, participation lines,
 * attempt bookkeeping, operator commands, changes made by another
 * connection, and a write that fails because the file may not grow (the
 * closest a test gets to a full disk without root): the batch is refused
 * whole and the store stays usable and consistent.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bridge/buf.h"
#include "bridge/store.h"
#include "store_items.h"
#include "proc_threads.h"
#include "tap.h"

static char tmpdir[64];
static int64_t now = 1700000000000LL;


#define insert1(s, it, r) store_insert1((s), (it), now, (r))

static size_t due(struct store *s, const char *endpoint, int64_t at, struct store_row *rows,
		  size_t max)
{
	struct bridge_error err;
	size_t n = 0;

	if (store_due(s, endpoint, "", at, rows, max, &n, &err) < 0)
		printf("# store_due: %s\n", err.message);
	return n;
}

static void rows_clear(struct store_row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++)
		store_row_clear(&rows[i]);
}

static void path_in(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "%s/%s", tmpdir, name);
}

static void test_open(void)
{
	char path[128], other[128];
	struct store *s = NULL;
	struct bridge_error err;
	struct stat sb;
	sqlite3 *db;
	sqlite3_stmt *st;

	path_in(path, sizeof(path), "absent.db");
	bridge_error_clear(&err);
	ok(store_open(path, 0, 100, &s, &err) < 0 && !s, "no store without STORE_CREATE");
	ok(strstr(err.message, "no queue store at") != NULL, "message says there is no store");

	path_in(path, sizeof(path), "new/q.db");
	ok(store_open(path, STORE_CREATE, 100, &s, &err) < 0, "missing folder is an error");
	ok(strstr(err.message, "folder") != NULL, "message names the folder");

	path_in(path, sizeof(path), "q.db");
	ok(store_open(path, STORE_CREATE, 100, &s, &err) == 0 && s, "created");
	ok(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600, "store file is mode 0600");
	ok(sqlite3_open(path, &db) == SQLITE_OK, "second connection opens it");
	ok(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
		   sqlite3_step(st) == SQLITE_ROW &&
		   strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0,
	   "journal_mode is WAL (a property of the file)");
	sqlite3_finalize(st);
	sqlite3_close(db);
	store_close(s);
	ok(store_open(path, 0, 100, &s, &err) == 0, "reopened without STORE_CREATE");
	store_close(s);

	path_in(other, sizeof(other), "other.db");
	sqlite3_open(other, &db);
	sqlite3_exec(db, "CREATE TABLE t (x)", NULL, NULL, NULL);
	sqlite3_close(db);
	ok(store_open(other, STORE_CREATE, 100, &s, &err) < 0, "refuses someone else's database");
	ok(strstr(err.message, "not a webhook-bridge queue store") != NULL, "and says why");

	path_in(other, sizeof(other), "newer.db");
	ok(store_open(other, STORE_CREATE, 100, &s, &err) == 0, "fresh store");
	store_close(s);
	sqlite3_open(other, &db);
	sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL);
	sqlite3_close(db);
	ok(store_open(other, 0, 100, &s, &err) < 0 && strstr(err.message, "newer"),
	   "refuses a schema from a newer version");

	path_in(other, sizeof(other), "dir.db");
	mkdir(other, 0700);
	ok(store_open(other, STORE_CREATE, 100, &s, &err) < 0 &&
		   strstr(err.message, "not a regular file"),
	   "refuses a folder");
}

static void test_item_check(void)
{
	struct store_item it;
	struct bridge_error err;
	struct upstream_header bad[] = { { "X-A", "line\r\nInjected: 1" } };
	struct upstream_header badname[] = { { "X A", "v" } };
	char *big;

	item_init(&it, "r", "P", "COMPLETED", "d", "{}");
	ok(store_item_check(&it, &err) == 0, "valid item");
	it.headers = bad;
	it.n_headers = 1;
	ok(store_item_check(&it, &err) < 0, "CR/LF in a header value refused");
	it.headers = badname;
	ok(store_item_check(&it, &err) < 0, "space in a header name refused");
	item_init(&it, "", "P", "C", "d", "{}");
	ok(store_item_check(&it, &err) < 0, "empty route refused");
	item_init(&it, "r", "P", "C", "d", "{}");
	it.timeout_ms = 0;
	ok(store_item_check(&it, &err) < 0, "zero timeout refused");
	item_init(&it, "r", "P", "C", "d", "{}");
	big = malloc(STORE_BODY_MAX + 1);
	memset(big, 'x', STORE_BODY_MAX + 1);
	it.body = big;
	it.len = STORE_BODY_MAX + 1;
	ok(store_item_check(&it, &err) < 0 && strstr(err.message, "over the limit"),
	   "body over STORE_BODY_MAX refused");
	free(big);
}

static void test_rows(void)
{
	char path[128];
	struct store *s = NULL;
	struct store_item it;
	struct store_receipt r1, r2;
	struct store_row rows[8], row;
	struct bridge_error err;
	static const char binary[] = { '{', 0, '\xff', '}' };
	size_t n;
	int64_t wake = 0;

	path_in(path, sizeof(path), "rows.db");
	if (!ok(store_open(path, STORE_CREATE, 100, &s, &err) == 0, "open rows.db"))
		return;

	/* duplicates */
	item_init(&it, "r1", "P1", "INCOMPLETE", "did-1", "{\"n\":1}");
	is_int(insert1(s, &it, &r1), STORE_INSERTED, "first insert stored");
	is_int(r1.id, 1, "first id is 1");
	item_init(&it, "r1", "P1", "INCOMPLETE", "did-other", "{\"n\":1,\"again\":true}");
	is_int(insert1(s, &it, &r2), STORE_DUPLICATE, "same route+participation+state: duplicate");
	is_int(r2.id, 1, "duplicate names the pending row");
	is_str(r2.delivery_id, "did-1", "duplicate gives the pending row's delivery id");
	item_init(&it, "r2", "P1", "INCOMPLETE", "did-r2", "{}");
	is_int(insert1(s, &it, &r2), STORE_INSERTED, "another route is not a duplicate");
	item_init(&it, "r1", "P1", "COMPLETED", "did-2", "{\"n\":2}");
	is_int(insert1(s, &it, &r2), STORE_INSERTED, "another state is not a duplicate");
	is_int(r2.id, 3, "ids follow arrival");
	item_init(&it, "r1", "", "COMPLETED", "did-nopid", "{}");
	is_int(insert1(s, &it, NULL), STORE_INSERTED, "no participation id: stored");
	is_int(insert1(s, &it, NULL), STORE_INSERTED, "no participation id: never a duplicate");

	/* a row reads back byte for byte, headers included */
	item_init(&it, "r3", "P9", "", "did-bin", "");
	it.body = binary;
	it.len = sizeof(binary);
	it.ca_file = "/etc/ca.pem";
	insert1(s, &it, &r2);
	if (ok(store_get(s, r2.id, &row, &err) == 0, "get by id")) {
		ok(row.len == sizeof(binary) && memcmp(row.body, binary, sizeof(binary)) == 0,
		   "binary body intact (NUL and 0xff)");
		is_int(row.n_headers, 3, "three headers");
		is_str(row.headers[1].name, "Authorization", "header name");
		is_str(row.headers[1].value, "Bearer tok", "header value");
		is_str(row.ca_file, "/etc/ca.pem", "trust store kept");
		is_int(row.status, STORE_PENDING, "pending");
		is_int(row.next_attempt_ms, now, "due at arrival");
		store_row_clear(&row);
	}
	is_int(store_get(s, 999, &row, &err), 1, "unknown id: 1");

	/* lines: only the head of a participation is due */
	n = due(s, "http://127.0.0.1:9/hook", now, rows, 8);
	is_int(n, 4, "heads due: P1/INCOMPLETE, r2/P1, two without id (P9 is on another lane)");
	ok(n >= 1 && rows[0].id == 1, "oldest first");
	for (size_t i = 0; i < n; i++)
		ok(rows[i].id != 3, "P1/COMPLETED waits behind P1/INCOMPLETE");
	rows_clear(rows, n);
	is_int(due(s, "http://other/", now, rows, 8), 0, "another lane has nothing");
	{
		/* the attempts under way are passed over, and do not count towards max */
		static const int64_t skip[] = { 1, 99 };

		n = 0;
		ok(store_due_except(s, "http://127.0.0.1:9/hook", "", now, skip, 2, rows, 2, &n,
				    &err) == 0,
		   "due, passing over ids 1 and 99");
		is_int(n, 2, "max rows still filled with skipped ones in front");
		ok(n == 2 && rows[0].id == 2 && rows[1].id != 1 && rows[1].id != 3,
		   "skipped row 1 not returned, 3 still waits behind it");
		ok(n == 2 && rows[0].integrity == STORE_ROW_INTACT &&
			   rows[1].integrity == STORE_ROW_INTACT,
		   "rows read after the skip are checked");
		rows_clear(rows, n);
		n = 9;
		ok(store_due_except(s, "http://127.0.0.1:9/hook", "", now, skip, 2, rows, 0, &n,
				    &err) == 0 &&
			   n == 0,
		   "max 0: nothing read");
	}

	/* a failed attempt pushes the head back; the line waits with it */
	ok(store_failed(s, 1, 0, now, now + 5000, 500, "HTTP 500", &err) == 0, "failed recorded");
	n = due(s, "http://127.0.0.1:9/hook", now + 1000, rows, 8);
	for (size_t i = 0; i < n; i++)
		ok(rows[i].id != 1 && rows[i].id != 3, "neither P1 row due while its head waits");
	rows_clear(rows, n);
	ok(store_next_wake(s, "http://127.0.0.1:9/hook", "", now + 1000, &wake, &err) == 0 &&
		   wake == now + 5000,
	   "next wake is the head's next attempt");
	ok(store_failed(s, 1, 0, now, now + 9999, 500, "stale", &err) == 0, "stale update runs");
	store_get(s, 1, &row, &err);
	is_int(row.attempts, 1, "stale update (attempts moved on) changed nothing");
	is_int(row.next_attempt_ms, now + 5000, "next attempt unchanged by the stale update");
	is_str(row.last_error, "HTTP 500", "last error kept");
	store_row_clear(&row);

	/* delivering the head frees the line */
	ok(store_delivered(s, 1, &err) == 0, "delivered");
	is_int(store_get(s, 1, &row, &err), 1, "delivered row is gone");
	n = due(s, "http://127.0.0.1:9/hook", now, rows, 8);
	{
		int seen3 = 0;

		for (size_t i = 0; i < n; i++)
			seen3 |= rows[i].id == 3;
		ok(seen3, "P1/COMPLETED due once P1/INCOMPLETE is delivered");
	}
	rows_clear(rows, n);
	item_init(&it, "r1", "P1", "INCOMPLETE", "did-1b", "{}");
	is_int(insert1(s, &it, &r1), STORE_INSERTED, "after delivery the same state queues again");
	n = due(s, "http://127.0.0.1:9/hook", now, rows, 8);
	for (size_t i = 0; i < n; i++)
		ok(rows[i].id != r1.id, "and waits behind the older COMPLETED (arrival order)");
	rows_clear(rows, n);

	/* a dead letter leaves the line */
	ok(store_dead(s, 3, 0, 1, now, 500, "gave up", &err) == 0, "dead letter");
	store_get(s, 3, &row, &err);
	is_int(row.status, STORE_DEAD, "status dead");
	is_int(row.attempts, 1, "attempt counted");
	store_row_clear(&row);
	n = due(s, "http://127.0.0.1:9/hook", now, rows, 8);
	{
		int seen = 0;

		for (size_t i = 0; i < n; i++)
			seen |= rows[i].id == r1.id;
		ok(seen, "next row of the line due after the dead letter");
	}
	rows_clear(rows, n);

	store_close(s);
}

static int count_cb(const struct store_row *r, void *arg)
{
	int64_t *ids = arg;

	ids[++ids[0]] = r->id;
	return ids[0] >= 10;
}

static void test_operator(void)
{
	char path[128];
	struct store *s = NULL, *cli = NULL;
	struct store_item it;
	struct store_receipt r;
	struct store_filter f;
	struct store_counts c;
	struct bridge_error err;
	int64_t ids[16], n, skipped, oldest;
	char pid[16];

	path_in(path, sizeof(path), "ops.db");
	if (!ok(store_open(path, STORE_CREATE, 100, &s, &err) == 0, "open ops.db"))
		return;
	for (int i = 0; i < 6; i++) {
		snprintf(pid, sizeof(pid), "P%d", i);
		item_init(&it, i < 4 ? "a" : "b", pid, "COMPLETED", pid, "{}");
		now += 1000;
		insert1(s, &it, &r);
	}
	/* rows 1..6; 1, 2, 5 dead */
	store_dead(s, 1, 0, 1, now, 500, "x", &err);
	store_dead(s, 2, 0, 1, now, 500, "x", &err);
	store_dead(s, 5, 0, 1, now, 500, "x", &err);
	ok(store_count(s, &c, &err) == 0, "count");
	is_int(c.pending, 3, "3 pending");
	is_int(c.dead, 3, "3 dead");
	is_int(c.oldest_created_ms, now - 3000, "oldest pending is row 3");
	ok(store_oldest(s, &oldest, &err) == 0 && oldest == now - 3000, "store_oldest agrees");

	store_filter_init(&f);
	ids[0] = 0;
	ok(store_list(s, &f, count_cb, ids, &err) == 0 && ids[0] == 6, "list all: 6");
	f.status = STORE_DEAD;
	ids[0] = 0;
	store_list(s, &f, count_cb, ids, &err);
	ok(ids[0] == 3 && ids[1] == 1 && ids[2] == 2 && ids[3] == 5, "list dead: 1 2 5");
	f.route = "b";
	ids[0] = 0;
	store_list(s, &f, count_cb, ids, &err);
	ok(ids[0] == 1 && ids[1] == 5, "list dead of route b: 5");
	store_filter_init(&f);
	f.newest_first = 1;
	f.limit = 2;
	ids[0] = 0;
	store_list(s, &f, count_cb, ids, &err);
	ok(ids[0] == 2 && ids[1] == 6 && ids[2] == 5, "newest first, limit 2: 6 5");

	/* another process (the queue command) changes the store */
	ok(store_changed_elsewhere(s, &err) == 0, "no change seen yet");
	ok(store_open(path, 0, 100, &cli, &err) == 0, "second connection (the CLI)");
	is_int(store_retry(cli, 1, now, &err), STORE_RETRY_DONE, "retry a dead letter");
	is_int(store_changed_elsewhere(s, &err), 1, "first connection sees the change");
	is_int(store_changed_elsewhere(s, &err), 0, "and only once");
	store_delivered(s, 6, &err);
	is_int(store_changed_elsewhere(s, &err), 0, "its own writes do not count");
	is_int(store_retry(cli, 999, now, &err), STORE_RETRY_NOT_FOUND, "retry unknown id");
	is_int(store_retry(cli, 3, now + 5, &err), STORE_RETRY_DONE, "retry a pending row");
	{
		struct store_row row;

		store_get(s, 1, &row, &err);
		ok(row.status == STORE_PENDING && row.attempts == 0 && row.since_ms == now,
		   "retried dead letter: pending, 0 attempts, new cycle");
		store_row_clear(&row);
		store_get(s, 3, &row, &err);
		ok(row.next_attempt_ms == now + 5 && row.attempts == 0,
		   "retried pending row: due now");
		store_row_clear(&row);
	}

	/* a dead letter whose participation+state is pending again stays dead */
	item_init(&it, "a", "P1", "COMPLETED", "again", "{}");
	is_int(insert1(s, &it, &r), STORE_INSERTED, "P1 posted again while its old row 2 is dead");
	is_int(store_retry(cli, 2, now, &err), STORE_RETRY_DUPLICATE,
	       "retry of the dead P1: duplicate");
	store_filter_init(&f);
	ok(store_retry_dead(cli, &f, now, &n, &skipped, &err) == 0, "retry all dead");
	is_int(n, 1, "one retried (row 5)");
	is_int(skipped, 1, "one skipped (row 2, duplicate)");

	/* purge */
	is_int(store_purge_id(cli, 2, &err), 0, "purge one id");
	is_int(store_purge_id(cli, 2, &err), 1, "purge it again: not found");
	store_dead(s, 4, 0, 1, now, 500, "x", &err);
	store_filter_init(&f);
	f.status = STORE_DEAD;
	f.route = "b";
	ok(store_purge(cli, &f, &n, &err) == 0 && n == 0, "no dead letter on route b");
	f.route = NULL;
	f.created_before = now - 2500; /* row 4 was queued at now-2000 */
	ok(store_purge(cli, &f, &n, &err) == 0 && n == 0,
	   "--older-than spares a newer dead letter");
	f.created_before = 0;
	ok(store_purge(cli, &f, &n, &err) == 0 && n == 1, "purge dead: one");
	store_filter_init(&f);
	ok(store_purge(cli, &f, &n, &err) == 0 && n == 4, "purge everything: four (1 3 5 7)");
	store_count(s, &c, &err);
	ok(c.pending == 0 && c.dead == 0 && c.oldest_created_ms == 0, "empty");
	store_close(cli);
	store_close(s);
}

/* The file may not grow past a limit (RLIMIT_FSIZE, the signal ignored): a
 * write fails like on a full disk. */
static void test_full(void)
{
	char path[128];
	struct store *s = NULL;
	struct store_item it[4];
	const struct store_item *items[4];
	struct store_counts c;
	struct bridge_error err;
	struct rlimit old, lim;
	char *body = malloc(200000);
	int failed = 0, res[4], stored_before;
	sqlite3 *db;
	sqlite3_stmt *st;

	path_in(path, sizeof(path), "full.db");
	if (!ok(store_open(path, STORE_CREATE, 100, &s, &err) == 0, "open full.db"))
		return;
	memset(body, 'a', 199999);
	body[199999] = '\0';
	for (int i = 0; i < 4; i++) {
		static char pids[4][8];

		snprintf(pids[i], sizeof(pids[i]), "F%d", i);
		item_init(&it[i], "r", pids[i], "C", pids[i], body);
		items[i] = &it[i];
	}
	ok(store_insert(s, items, 1, now, res, NULL, &err) == 0, "one row fits");
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = 600000;
	signal(SIGXFSZ, SIG_IGN);
	setrlimit(RLIMIT_FSIZE, &lim);
	for (int round = 0; round < 10 && !failed; round++) {
		store_count(s, &c, &err);
		stored_before = (int)c.pending;
		bridge_error_clear(&err);
		if (store_insert(s, items + 1, 3, now, res, NULL, &err) < 0)
			failed = 1;
		else
			store_purge_id(s, 2 + 3 * round, &err); /* keep the pending set small */
	}
	setrlimit(RLIMIT_FSIZE, &old);
	ok(failed, "a write past the file size limit fails");
	printf("# error: %s\n", err.message);
	ok(strstr(err.message, "queue store") != NULL, "the message names the store");
	store_count(s, &c, &err);
	is_int(c.pending, stored_before, "the failed batch stored nothing");
	ok(store_insert(s, items + 1, 3, now, res, NULL, &err) == 0,
	   "the store works again once the file may grow");
	store_count(s, &c, &err);
	is_int(c.pending, stored_before + 3, "all three of the batch stored, none twice");
	store_close(s);
	ok(sqlite3_open(path, &db) == SQLITE_OK &&
		   sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
		   sqlite3_step(st) == SQLITE_ROW &&
		   strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0,
	   "integrity_check ok after the failed writes");
	sqlite3_finalize(st);
	sqlite3_close(db);
	free(body);
}

/* A statement on the file itself, as a damaged disk or another program
 * would change it. */
static int raw_sql(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	int rc = sqlite3_open(path, &db) == SQLITE_OK &&
		 sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK;

	sqlite3_close(db);
	return rc ? 0 : -1;
}

/* The checksum covers what is sent and where; a row changed behind the
 * store reads back CORRUPT; recover copies rows (a corrupt one as a dead
 * letter) and keeps the ids given out; the probe write. */
static void test_integrity(void)
{
	char path[128], out[128];
	struct store *s = NULL;
	struct store_item it;
	struct store_receipt r[3];
	struct store_row row;
	struct store_recover_report rep;
	struct bridge_error err;
	static const char *const changes[] = {
		"UPDATE deliveries SET body = CAST('{\"a\":2}' AS BLOB) WHERE id = 1",
		"UPDATE deliveries SET endpoint = 'http://127.0.0.1:9/other' WHERE id = 1",
		"UPDATE deliveries SET headers = replace(headers, 'tok', 'tak') WHERE id = 1",
		"UPDATE deliveries SET delivery_id = 'd9' WHERE id = 1",
		"UPDATE deliveries SET timeout_ms = 999 WHERE id = 1",
		"UPDATE deliveries SET checksum = x'00' WHERE id = 1",
	};

	path_in(path, sizeof(path), "sum.db");
	path_in(out, sizeof(out), "sum.db.recovered");
	bridge_error_clear(&err);
	if (!ok(store_open(path, STORE_CREATE | STORE_VERIFY, 100, &s, &err) == 0, "open sum.db"))
		return;
	item_init(&it, "r", "p1", "", "d1", "{\"a\":1}");
	insert1(s, &it, &r[0]);
	item_init(&it, "r", "p2", "", "d2", "{\"a\":1}");
	insert1(s, &it, &r[1]);
	item_init(&it, "r", "p3", "", "d3", "{\"a\":1}");
	insert1(s, &it, &r[2]);
	ok(store_get(s, 1, &row, &err) == 0 && row.integrity == STORE_ROW_INTACT &&
		   row.checksum_len == STORE_CHECKSUM_LEN,
	   "a row reads back intact, with its checksum");
	store_row_clear(&row);
	ok(store_probe(s, now, 0, &err) == 0, "the probe write");
	ok(store_probe(s, now, 200000, &err) == 0 && store_probe(s, now, 0, &err) == 0,
	   "the probe of a post's size, and the small one after it");
	for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
		char name[160];

		snprintf(name, sizeof(name), "corrupt after: %s", changes[i]);
		raw_sql(path, "CREATE TABLE keep AS SELECT * FROM deliveries WHERE id = 1");
		ok(raw_sql(path, changes[i]) == 0 && store_get(s, 1, &row, &err) == 0 &&
			   row.integrity == STORE_ROW_CORRUPT,
		   name);
		store_row_clear(&row);
		raw_sql(path, "DELETE FROM deliveries WHERE id = 1;"
			      "INSERT INTO deliveries SELECT * FROM keep; DROP TABLE keep");
	}
	ok(store_get(s, 1, &row, &err) == 0 && row.integrity == STORE_ROW_INTACT,
	   "intact again when put back");
	store_row_clear(&row);
	raw_sql(path, "UPDATE deliveries SET body = CAST('{\"a\":3}' AS BLOB) WHERE id = 2;"
		      "DELETE FROM deliveries WHERE id = 3;"
		      "CREATE TABLE other (k TEXT PRIMARY KEY, v INTEGER);"
		      "CREATE INDEX other_v ON other (v);"
		      "INSERT INTO other VALUES ('a', 1), ('b', 2)");
	store_close(s);
	s = NULL;
	ok(store_recover(path, out, &rep, &err) == 0 && rep.saved == 2 && rep.pending == 1 &&
		   rep.dead == 1 && rep.corrupt == 1 && rep.unreadable == 0 && rep.highest_id == 3,
	   "recover: 2 saved (1 corrupt, as a dead letter), none unreadable, ids up to 3");
	ok(rep.other_rows == 2 && strcmp(rep.other_tables, "other") == 0 && !rep.other_damaged[0],
	   "recover: another table of the store copied with its rows");
	ok(store_recover(path, out, &rep, &err) < 0 && strstr(err.message, "already exists"),
	   "recover never overwrites");
	if (!ok(store_open(out, STORE_VERIFY, 100, &s, &err) == 0, "the recovered store opens"))
		return;
	ok(store_get(s, 2, &row, &err) == 0 && row.status == STORE_DEAD &&
		   row.integrity == STORE_ROW_CORRUPT &&
		   strncmp(row.last_error, "corrupt:", 8) == 0,
	   "the corrupt row is a dead letter saying so");
	store_row_clear(&row);
	ok(store_get(s, 1, &row, &err) == 0 && row.integrity == STORE_ROW_INTACT &&
		   strcmp(row.delivery_id, "d1") == 0,
	   "the intact row is kept as it was");
	store_row_clear(&row);
	ok(raw_sql(out, "INSERT INTO other VALUES ('c', 3)") == 0 &&
		   raw_sql(out, "INSERT INTO other VALUES ('a', 4)") < 0,
	   "the copied table keeps its key");
	item_init(&it, "r", "p4", "", "d4", "{\"a\":1}");
	ok(insert1(s, &it, &r[0]) == STORE_INSERTED && r[0].id == 4,
	   "a new row gets an id the damaged store never gave out");
	store_close(s);
}

static long long file_size(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Up to ms for the checkpointer to have let the WAL start over more than
 * `after` times. */
static int wait_restarts(struct store *s, long long after, int ms)
{
	struct store_checkpoint_stats cs;

	for (int waited = 0; waited <= ms; waited += 10) {
		if (store_checkpoint_stats(s, &cs) == 0 && cs.restarts > after)
			return 1;
		sleep_ms(10);
	}
	return 0;
}

/* n rows of 6 KB, one commit each (8 WAL frames per commit); the
 * largest size the -wal file reached into *wal_max. */
static int insert_rows(struct store *s, const char *tag, int n, const char *wal, long long *wal_max)
{
	static char body[6001];
	int stored = 0;

	memset(body, 'c', sizeof(body) - 1);
	for (int i = 0; i < n; i++) {
		struct store_item it;
		char pid[32], did[32];
		long long w;

		snprintf(pid, sizeof(pid), "%s%d", tag, i);
		snprintf(did, sizeof(did), "d%s%d", tag, i);
		item_init(&it, "r", pid, "", did, body);
		stored += insert1(s, &it, NULL) == STORE_INSERTED;
		w = file_size(wal);
		if (wal_max && w > *wal_max)
			*wal_max = w;
	}
	return stored;
}

/* STORE_CHECKPOINTER: the WAL is checkpointed by the store's own thread
 * while commits go on, it starts over past the bound (so the -wal file
 * stays small), nothing committed is lost, the thread stops at close, and a
 * reader of another connection that keeps the WAL from starting over is a
 * warning, noted once, not an error. */
static void test_checkpointer(void)
{
	char path[128], wal[140], text[400];
	struct store *s = NULL;
	struct store_checkpoint_stats cs;
	struct store_counts c;
	struct store_row row;
	struct bridge_error err;
	long long db0, wal_max = 0, restarts;
	sqlite3 *reader = NULL;
	int got = 0;

	path_in(path, sizeof(path), "ckpt.db");
	snprintf(wal, sizeof(wal), "%s-wal", path);
	ok(store_open(path, STORE_CREATE, 100, &s, &err) == 0 &&
		   store_checkpoint_stats(s, &cs) < 0 && threads_named("store-ckpt") == 0,
	   "without STORE_CHECKPOINTER: no checkpointer thread");
	store_close(s);
	s = NULL;
	if (!ok(store_open(path, STORE_CHECKPOINTER, 100, &s, &err) == 0,
		"open with STORE_CHECKPOINTER"))
		return;
	is_int(threads_named("store-ckpt"), 1, "its thread runs, named store-ckpt");
	ok(store_checkpoint_tune(s, 32, 256) == 0, "thresholds made small: 32 and 256 frames");
	db0 = file_size(path);
	is_int(insert_rows(s, "K", 400, wal, &wal_max), 400, "400 rows of 6 KB, a commit each");
	ok(wait_restarts(s, 0, 10000), "the WAL started over (the thread copied it all)");
	store_checkpoint_stats(s, &cs);
	printf("# %lld checkpoints, %lld restarts; WAL at most %lld bytes; database %lld -> "
	       "%lld bytes\n",
	       cs.runs, cs.restarts, wal_max, db0, file_size(path));
	ok(cs.runs >= 2, "more than one checkpoint");
	ok(file_size(path) > db0 + 1000000, "the rows reached the database file");
	ok(wal_max > 0 && wal_max < 1024 * 4120LL,
	   "the -wal file stayed under 1024 frames (the commits wrote some 3,200)");
	is_int(store_changed_elsewhere(s, &err), 0,
	       "the checkpoints are not taken for another process's change");
	ok(store_checkpoint_warning(s, text, sizeof(text)) == 0, "no warning");

	/* another connection's read transaction holds the WAL */
	ok(sqlite3_open(path, &reader) == SQLITE_OK &&
		   sqlite3_exec(reader, "BEGIN; SELECT COUNT(*) FROM deliveries;", NULL, NULL,
				NULL) == SQLITE_OK,
	   "a reader of another connection holds a snapshot");
	/* a reader of the database file alone (the WAL all copied when it began)
	 * lets the first commit start the WAL over; none after that */
	is_int(insert_rows(s, "R", 5, wal, NULL), 5, "5 rows while it reads");
	store_checkpoint_stats(s, &cs);
	restarts = cs.restarts;
	is_int(insert_rows(s, "S", 95, wal, NULL), 95,
	       "95 more rows while it reads: every commit goes through");
	for (int waited = 0; waited < 10000; waited += 10) {
		if ((got = store_checkpoint_warning(s, text, sizeof(text))) != 0)
			break;
		sleep_ms(10);
	}
	ok(got == 1 && strstr(text, "cannot start over") && strstr(text, path),
	   "the WAL that cannot start over is a warning naming the store");
	printf("# %s\n", text);
	ok(store_checkpoint_warning(s, text, sizeof(text)) == 0, "noted once, not at every commit");
	store_checkpoint_stats(s, &cs);
	is_int(cs.restarts, restarts, "no restart while the reader holds it");
	sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL);
	sqlite3_close(reader);
	for (int i = 0; i < 300 && !wait_restarts(s, restarts, 10); i++) {
		char tag[16];

		snprintf(tag, sizeof(tag), "A%d-", i);
		insert_rows(s, tag, 1, wal, NULL); /* the next commits wake it */
	}
	ok(wait_restarts(s, restarts, 0), "once the reader is gone, the WAL starts over again");
	store_close(s);
	s = NULL;
	is_int(threads_named("store-ckpt"), 0, "the thread stopped at close");

	if (!ok(store_open(path, STORE_VERIFY, 100, &s, &err) == 0, "reopened (quick_check ok)"))
		return;
	store_count(s, &c, &err);
	ok(c.pending >= 500, "every committed row is there after close and reopen");
	ok(store_get(s, 400, &row, &err) == 0 && row.integrity == STORE_ROW_INTACT &&
		   row.len == 6000,
	   "and reads back intact");
	store_row_clear(&row);
	store_close(s);
}

/* A seal made on the caller's thread (the queue's enqueue) stores the same
 * row as one the store makes: same headers, a checksum that matches. */
static void test_sealed(void)
{
	char path[128];
	struct store *s = NULL;
	struct store_item it;
	struct store_seal seal = { 0 };
	const struct store_item *items[1] = { &it };
	struct store_receipt r;
	struct store_row row;
	struct bridge_error err;
	int res = -7;

	path_in(path, sizeof(path), "sealed.db");
	if (!ok(store_open(path, STORE_CREATE, 100, &s, &err) == 0, "open sealed.db"))
		return;
	item_init(&it, "r1", "P2", "COMPLETED", "did-s1", "{\"n\":3}");
	ok(store_seal_make(&it, &seal) == 0, "seal made");
	ok(seal.headers_text && strcmp(seal.headers_text,
				       "Content-Type: application/json\nAuthorization: Bearer tok\n"
				       "X-Qualifio-Signature: sha256=00ff\n") == 0,
	   "the seal holds the headers as stored");
	it.seal = &seal;
	ok(store_insert(s, items, 1, now, &res, &r, &err) == 0 && res == STORE_INSERTED,
	   "sealed item stored");
	store_seal_clear(&seal);
	ok(seal.headers_text == NULL, "store_seal_clear frees the headers");
	store_close(s);
	if (ok(store_open(path, STORE_VERIFY, 100, &s, &err) == 0, "reopened (quick_check)")) {
		ok(store_get(s, r.id, &row, &err) == 0 && row.n_headers == 3 &&
			   strcmp(row.headers[2].value, "sha256=00ff") == 0 &&
			   row.integrity == STORE_ROW_INTACT,
		   "the sealed row reads back with its headers and a matching checksum");
		store_row_clear(&row);
		store_close(s);
	}
}

/* How many times needle is in the file at path (at most 8 MB); -1 when it
 * cannot be read whole. */
static int file_count(const char *path, const char *needle)
{
	struct buf b = BUF_INIT(8u << 20);
	FILE *f = fopen(path, "rb");
	size_t nl = strlen(needle);
	const char *p, *end;
	int n = 0;

	if (!f)
		return -1;
	if (buf_read_file(&b, f) < 0) {
		fclose(f);
		buf_free(&b);
		return -1;
	}
	fclose(f);
	end = b.s + b.len;
	for (p = b.s; (p = memmem(p, (size_t)(end - p), needle, nl)) != NULL; p++)
		n++;
	buf_free(&b);
	return n;
}

/* STORE_SECURE_DELETE: delivered rows leave no byte of theirs in the file;
 * without it (FAST, whatever the library's default) a freed page keeps its
 * old bytes until reused, which is what saves a page write per delivery. */
static void test_secure_delete(void)
{
	static const unsigned modes[] = { 0, STORE_SECURE_DELETE };
	static char body[3001];

	for (size_t m = 0; m < 2; m++) {
		char path[128], wal[140], what[160];
		const char *name = modes[m] ? "on" : "fast";
		struct store *s = NULL;
		struct bridge_error err;
		int stored = 0, gone = 0, left;

		snprintf(body, sizeof(body), "{\"secret\":\"left-behind-%s\",\"pad\":\"", name);
		memset(body + strlen(body), 'p', sizeof(body) - 1 - strlen(body) - 2);
		memcpy(body + sizeof(body) - 3, "\"}", 2);
		snprintf(path, sizeof(path), "%s/wipe-%s.db", tmpdir, name);
		snprintf(wal, sizeof(wal), "%s-wal", path);
		snprintf(what, sizeof(what), "open a store, secure_delete %s", name);
		if (!ok(store_open(path, STORE_CREATE | modes[m], 100, &s, &err) == 0, what))
			continue;
		for (int i = 0; i < 4; i++) {
			struct store_item it;
			char pid[16], did[16];

			snprintf(pid, sizeof(pid), "P%d", i);
			snprintf(did, sizeof(did), "did-w%d", i);
			item_init(&it, "r", pid, "", did, body);
			stored += insert1(s, &it, NULL) == STORE_INSERTED;
		}
		for (int64_t id = 1; id <= 4; id++)
			gone += store_delivered(s, id, &err) == 0;
		store_close(s); /* the last connection checkpoints and removes the WAL */
		snprintf(what, sizeof(what),
			 "secure_delete %s: 4 rows of 3 KB stored, then delivered", name);
		ok(stored == 4 && gone == 4, what);
		snprintf(what, sizeof(what), "secure_delete %s: the WAL is folded into the file",
			 name);
		ok(access(wal, F_OK) != 0, what);
		snprintf(what, sizeof(what), "left-behind-%s", name);
		left = file_count(path, what);
		if (modes[m])
			is_int(left, 0, "secure_delete on: no delivered body is left in the file");
		else
			ok(left > 0, "secure_delete fast: freed pages keep their old bytes");
	}
}

/* Bytes this process has read with read(2) and pread(2) so far. */
static long long rchar(void)
{
	char line[128];
	long long v = -1;
	FILE *f = fopen("/proc/self/io", "r");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "rchar: %lld", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

static int route_count_cb(const struct store_route_counts *c, void *arg)
{
	char *out = arg;
	size_t n = strlen(out);

	snprintf(out + n, 256 - n, "%s:%lld/%lld/%lld ", c->route, (long long)c->pending,
		 (long long)c->dead,
		 (long long)(c->oldest_created_ms ? c->oldest_created_ms - now : -1));
	return 0;
}

/* The oldest pending row per route and overall, by seeks on the age index;
 * the count per route from that index alone.  3,001 rows of 3 KB (12 MB, far
 * past SQLite's 2 MB page cache): a pass over the rows would read them all. */
static void test_route_oldest(void)
{
	static char body[3001];
	const struct store_item *items[100];
	struct store_item its[100];
	char path[128], pids[100][16], counts[256] = "";
	struct store *s = NULL;
	struct bridge_error err;
	int64_t a = -1, b = -1, c = -1, none = -1, all = -1;
	long long before, read_seek, read_count;
	int inserted = 0, delivered = 0;

	memset(body, 'p', sizeof(body) - 1);
	memcpy(body, "{\"p\":\"", 6);
	memcpy(body + sizeof(body) - 3, "\"}", 2);
	path_in(path, sizeof(path), "ages.db");
	if (!ok(store_open(path, STORE_CREATE, 100, &s, &err) == 0, "open ages.db"))
		return;
	/* route a created at now+100.., b at now+50.. (interleaved in id order) */
	for (int round = 0; round < 30; round++) {
		int results[100];

		for (int i = 0; i < 100; i++) {
			int k = round * 100 + i;

			snprintf(pids[i], sizeof(pids[i]), "P%d", k);
			item_init(&its[i], i < 50 ? "a" : "b", pids[i], "", pids[i], body);
			items[i] = &its[i];
		}
		/* one created_ms per transaction: a's rows at now+100+round, b's
		 * at now+50+round */
		if (store_insert(s, items, 50, now + 100 + round, results, NULL, &err) == 0)
			inserted += 50;
		if (store_insert(s, items + 50, 50, now + 50 + round, results, NULL, &err) == 0)
			inserted += 50;
	}
	{
		struct store_item it;
		struct store_receipt r;

		item_init(&it, "c", "PC", "", "did-c", "{}");
		if (store_insert1(s, &it, now + 1, &r) == STORE_INSERTED &&
		    store_dead(s, r.id, 0, 0, now, 0, "test", &err) == 0)
			inserted++;
	}
	is_int(inserted, 3001, "3,001 rows stored, route c's one a dead letter");
	store_close(s);
	s = NULL;
	if (!ok(store_open(path, 0, 100, &s, &err) == 0,
		"open ages.db again (an empty page cache)"))
		return;
	before = rchar();
	ok(store_route_oldest(s, "a", &a, &err) == 0 && store_route_oldest(s, "b", &b, &err) == 0 &&
		   store_route_oldest(s, "c", &c, &err) == 0 &&
		   store_route_oldest(s, "zz", &none, &err) == 0 &&
		   store_oldest(s, &all, &err) == 0,
	   "oldest per route and overall read");
	read_seek = rchar() - before;
	is_int(a - now, 100, "route a's oldest pending row");
	is_int(b - now, 50, "route b's oldest pending row (a's rows interleave with it)");
	is_int(c, 0, "route c has no pending row: 0 (its dead letter is not waiting)");
	is_int(none, 0, "a route without rows: 0");
	is_int(all - now, 50, "overall: the oldest of the routes' oldest");
	printf("# five oldest-row questions read %lld bytes\n", read_seek);
	ok(read_seek >= 0 && read_seek < 256 * 1024,
	   "five oldest-row questions read under 256 KB of a 12 MB store: seeks, not a pass");
	before = rchar();
	ok(store_count_routes(s, route_count_cb, counts, &err) == 0, "counted per route");
	read_count = rchar() - before;
	is_str(counts, "a:1500/0/100 b:1500/0/50 c:0/1/-1 ", "per route: pending, dead, oldest");
	printf("# the count per route read %lld bytes\n", read_count);
	ok(read_count >= 0 && read_count < 2 * 1024 * 1024,
	   "the count per route read under 2 MB: the age index alone, no row");
	/* b's 50 oldest rows (the first due) delivered: its next ones are its oldest */
	{
		static struct store_row rows[50];
		size_t n = 0;

		if (store_due(s, "http://127.0.0.1:9/hook", "", now + 1000, rows, 50, &n, &err) ==
		    0)
			for (size_t i = 0; i < n; i++) {
				delivered += strcmp(rows[i].route, "b") == 0 &&
					     store_delivered(s, rows[i].id, &err) == 0;
				store_row_clear(&rows[i]);
			}
	}
	is_int(delivered, 50, "route b's 50 oldest rows were the first due, and are delivered");
	ok(store_route_oldest(s, "b", &b, &err) == 0 && store_oldest(s, &all, &err) == 0 &&
		   store_route_oldest(s, "a", &a, &err) == 0,
	   "read again");
	is_int(b - now, 51, "b's oldest is now its next rows'");
	is_int(a - now, 100, "a's is as it was");
	is_int(all - now, 51, "and the oldest overall is b's");
	/* the count on a connection of its own sees the store as it was when its
	 * snapshot began, and holds no writer back meanwhile */
	{
		struct store_item it;
		struct store_receipt r;

		counts[0] = '\0';
		ok(store_snapshot_begin(s, &err) == 0, "a snapshot begun");
		item_init(&it, "a", "PS", "", "did-s", "{}");
		is_int(store_insert1(s, &it, now + 2, &r), STORE_INSERTED,
		       "a row stored while the snapshot is open");
		ok(store_count_routes_snapshot(s, route_count_cb, counts, &err) == 0,
		   "counted on the snapshot");
		is_str(counts, "a:1500/0/100 b:1450/0/51 c:0/1/-1 ",
		       "the snapshot's count: without the row stored after it began");
		counts[0] = '\0';
		ok(store_snapshot_begin(s, &err) == 0 &&
			   store_count_routes_snapshot(s, route_count_cb, counts, &err) == 0,
		   "counted again");
		is_str(counts, "a:1501/0/2 b:1450/0/51 c:0/1/-1 ", "the next count sees it");
	}
	store_close(s);
}

/* The lanes with pending rows, in order, one seek each: same endpoint with
 * two trust stores, a lane with only a dead letter left out, max obeyed. */
static void test_lanes(void)
{
	static const char *const lanes[][2] = {
		{ "http://127.0.0.1:9/b", "" }, { "http://127.0.0.1:9/a", "/ca/two.pem" },
		{ "http://127.0.0.1:9/a", "" }, { "http://127.0.0.1:9/a", "/ca/one.pem" },
		{ "http://127.0.0.1:9/c", "" }, /* its one row made a dead letter */
	};
	char path[128], got[512] = "", pid[16];
	struct store_lane *l = NULL;
	struct store *s = NULL;
	struct bridge_error err;
	size_t n = 0;
	int stored = 0;

	path_in(path, sizeof(path), "lanes.db");
	if (!ok(store_open(path, STORE_CREATE, 100, &s, &err) == 0, "open lanes.db"))
		return;
	for (int i = 0; i < 5; i++)
		for (int k = 0; k < (i == 4 ? 1 : 3); k++) {
			struct store_item it;
			struct store_receipt r;

			snprintf(pid, sizeof(pid), "L%d-%d", i, k);
			item_init(&it, "r", pid, "", pid, "{}");
			it.endpoint = lanes[i][0];
			it.ca_file = lanes[i][1];
			if (insert1(s, &it, &r) == STORE_INSERTED &&
			    (i < 4 || store_dead(s, r.id, 0, 0, now, 0, "test", &err) == 0))
				stored++;
		}
	is_int(stored, 13, "13 rows on five lanes, the last one's a dead letter");
	ok(store_lanes(s, 16, &l, &n, &err) == 0, "lanes listed");
	for (size_t i = 0; i < n; i++)
		snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s|%s ", l[i].endpoint,
			 l[i].ca_file);
	is_str(got,
	       "http://127.0.0.1:9/a| http://127.0.0.1:9/a|/ca/one.pem "
	       "http://127.0.0.1:9/a|/ca/two.pem http://127.0.0.1:9/b| ",
	       "the four lanes with pending rows, each once, in order");
	store_lanes_free(l, n);
	ok(store_lanes(s, 2, &l, &n, &err) == 0 && n == 2, "at most max of them");
	store_lanes_free(l, n);
	store_close(s);
}

struct bulk_run {
	struct store *s;
	int64_t n;
	int rc;
};

static void *bulk_purge(void *arg)
{
	struct bulk_run *b = arg;
	struct store_filter f;
	struct bridge_error err;

	store_filter_init(&f);
	f.route = "bulk";
	b->rc = store_purge(b->s, &f, &b->n, &err);
	return NULL;
}

static int64_t pending_of(struct store *s)
{
	struct store_counts c = { 0 };
	struct bridge_error err;

	return store_count(s, &c, &err) == 0 ? c.pending : -1;
}

/* A purge of 20,000 rows goes batch by batch: a writer on another connection
 * (serve, beside the `queue` command) gets in while most of it is still to
 * do, instead of waiting for the whole of it. */
static void test_bulk_batches(void)
{
	char path[128], pid[24];
	const struct store_item *items[100];
	struct store_item its[100];
	static char pids[100][24];
	struct store *cli = NULL, *serve = NULL;
	struct bulk_run b = { 0 };
	struct bridge_error err;
	struct store_item it;
	struct store_receipt r;
	pthread_t th;
	int64_t left = -1;
	int stored = 0, results[100], polls = 0;

	path_in(path, sizeof(path), "bulk.db");
	if (!ok(store_open(path, STORE_CREATE, 5000, &cli, &err) == 0 &&
			store_open(path, 0, 5000, &serve, &err) == 0,
		"bulk.db open twice"))
		return;
	for (int round = 0; round < 200; round++) {
		for (int i = 0; i < 100; i++) {
			snprintf(pids[i], sizeof(pids[i]), "B%d", round * 100 + i);
			item_init(&its[i], "bulk", pids[i], "", pids[i], "{}");
			items[i] = &its[i];
		}
		if (store_insert(cli, items, 100, now, results, NULL, &err) == 0)
			stored += 100;
	}
	is_int(stored, 20000, "20,000 pending rows of route bulk");
	b.s = cli;
	if (!ok(pthread_create(&th, NULL, bulk_purge, &b) == 0, "purge them on a thread"))
		return;
	/* the first batch committed */
	while (pending_of(serve) == 20000 && polls++ < 100000)
		usleep(200);
	snprintf(pid, sizeof(pid), "other");
	item_init(&it, "other", pid, "", pid, "{}");
	is_int(store_insert1(serve, &it, now, &r), STORE_INSERTED,
	       "another connection stores a row meanwhile");
	left = pending_of(serve);
	printf("# rows still to purge when the other row was in: %lld\n", (long long)(left - 1));
	ok(left > 1000, "... with most of the purge still to do (it waited for a batch, not all)");
	pthread_join(th, NULL);
	ok(b.rc == 0 && b.n == 20000, "the purge deleted the 20,000 rows");
	is_int(pending_of(serve), 1, "the other route's row stays");
	store_close(serve);
	store_close(cli);
}

int main(void)
{
	char cmd[128];

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_store.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	test_open();
	test_item_check();
	test_rows();
	test_operator();
	test_full();
	test_integrity();
	test_checkpointer();
	test_sealed();
	test_secure_delete();
	test_route_oldest();
	test_lanes();
	test_bulk_batches();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", tmpdir);
	return tap_done();
}
