/*
 * store on PostgreSQL (run by tests/with_pg.py beside a private cluster,
 * BRIDGE_TEST_PG_URL): the schema and its version, rows read back byte for
 * byte, duplicates across two stores (two bridges), participation lines
 * across stores, and the claims: no row claimed twice under 8 concurrent
 * deliverers, a SIGKILLed holder's rows reclaimed once its lease expired
 * and not before, a renewed lease never reclaimed, a stale holder's outcome
 * refused, the operator commands, and an acknowledged insert still there
 * after PostgreSQL's immediate shutdown and restart.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "bridge/clock.h"
#include "bridge/store.h"
#include "store_items.h"
#include "tap.h"

#define ENDPOINT "http://127.0.0.1:9/hook"
#define LEASE_MS 1500

static const char *pg_url;
static int64_t now = 1700000000000LL;

static struct store *open_as(const char *instance, int lease_ms)
{
	struct shared_config c;
	struct store *s = NULL;
	struct bridge_error err;

	shared_config_default(&c);
	c.url = (char *)pg_url;
	c.instance = (char *)instance;
	c.lease_ms = lease_ms;
	c.connections = 2;
	bridge_error_clear(&err);
	if (store_open_shared(&c, STORE_CREATE, &s, &err) < 0)
		printf("# store_open_shared: %s\n", err.message);
	return s;
}


#define insert1(s, it, r) store_insert1((s), (it), now, (r))

static size_t due(struct store *s, struct store_row *rows, size_t max)
{
	struct bridge_error err;
	size_t n = 0;

	bridge_error_clear(&err);
	if (store_due(s, ENDPOINT, "", now, rows, max, &n, &err) < 0)
		printf("# store_due: %s\n", err.message);
	return n;
}

static void rows_clear(struct store_row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++)
		store_row_clear(&rows[i]);
}

static int purge_all(struct store *s)
{
	struct store_filter f;
	struct bridge_error err;
	int64_t n = 0;

	store_filter_init(&f);
	return store_purge(s, &f, &n, &err);
}

static int outcome(struct store *s, enum store_outcome_kind kind, int64_t id, int attempts)
{
	struct store_outcome o = { .kind = kind,
				   .id = id,
				   .attempts_before = attempts,
				   .attempted = 1,
				   .now_ms = now,
				   .next_attempt_ms = now,
				   .last_status = 500,
				   .last_error = "HTTP 500" };
	struct bridge_error err;

	bridge_error_clear(&err);
	if (store_apply(s, &o, 1, &err) < 0) {
		printf("# store_apply: %s\n", err.message);
		return -1;
	}
	return 0;
}

static void test_schema_rows(void)
{
	struct store *a = open_as("a", LEASE_MS), *b = open_as("b", LEASE_MS);
	struct store_item it;
	struct store_receipt r1, r2;
	struct store_row row;
	struct bridge_error err;
	static const char binary[] = { '{', 0, '\xff', '}' };
	char pid_latin1[] = "P\xe9-1"; /* not UTF-8: a form post may send it */

	if (!ok(a && b, "two stores on one database (two bridges)"))
		return;
	is_int(store_schema_version(a, &err), 0, "no schema before first use");
	item_init(&it, "r1", "P1", "INCOMPLETE", "did-1", "{\"n\":1}");
	is_int(insert1(a, &it, &r1), STORE_INSERTED, "first insert creates the schema and stores");
	is_int(store_schema_version(b, &err), store_schema_known(), "schema version recorded");
	ok(store_is_shared(a) && strncmp(store_holder(a), "a/", 2) == 0,
	   "holder named after the instance");
	ok(strcmp(store_holder(a), store_holder(b)) != 0, "each store its own holder");

	item_init(&it, "r1", "P1", "INCOMPLETE", "did-other", "{}");
	is_int(insert1(b, &it, &r2), STORE_DUPLICATE,
	       "the same route+participation+state through the other bridge: duplicate");
	is_int(r2.id, r1.id, "naming the first row");
	is_str(r2.delivery_id, "did-1", "with its delivery id");

	item_init(&it, "r3", pid_latin1, "", "did-bin", "");
	it.body = binary;
	it.len = sizeof(binary);
	it.ca_file = "/etc/ca.pem";
	is_int(insert1(b, &it, &r2), STORE_INSERTED, "a participation id that is not UTF-8");
	if (ok(store_get(a, r2.id, &row, &err) == 0, "read back by the other store")) {
		ok(row.len == sizeof(binary) && memcmp(row.body, binary, sizeof(binary)) == 0,
		   "binary body intact (NUL and 0xff)");
		is_str(row.participation_id, pid_latin1, "participation id byte for byte");
		is_int(row.n_headers, 3, "three headers");
		is_str(row.headers[1].value, "Bearer tok", "header value");
		is_str(row.ca_file, "/etc/ca.pem", "trust store kept");
		store_row_clear(&row);
	}
	is_int(store_get(a, 999999, &row, &err), 1, "unknown id: 1");
	purge_all(a);
	store_close(a);
	store_close(b);
}

/* INCOMPLETE then COMPLETE of one participation: whichever store claims,
 * the COMPLETE is not claimable while the INCOMPLETE is pending. */
static void test_order(void)
{
	struct store *a = open_as("a", LEASE_MS), *b = open_as("b", LEASE_MS);
	struct store_item it;
	struct store_receipt inc, comp;
	struct store_row rows[4];
	size_t n;

	if (!a || !b)
		return;
	item_init(&it, "r", "P-ord", "INCOMPLETE", "did-inc", "{}");
	insert1(a, &it, &inc);
	item_init(&it, "r", "P-ord", "COMPLETE", "did-comp", "{}");
	insert1(b, &it, &comp);
	n = due(a, rows, 4);
	ok(n == 1 && rows[0].id == inc.id, "a claims the INCOMPLETE, not the COMPLETE");
	rows_clear(rows, n);
	is_int(due(b, rows, 4), 0, "b: the COMPLETE waits while the INCOMPLETE is under a's lease");
	outcome(a, STORE_OUT_FAILED, inc.id, 0);
	n = due(b, rows, 4);
	ok(n == 1 && rows[0].id == inc.id,
	   "after a's failed attempt b takes the INCOMPLETE (still the head)");
	rows_clear(rows, n);
	is_int(due(a, rows, 4), 0, "the COMPLETE still waits");
	outcome(b, STORE_OUT_DELIVERED, inc.id, 1);
	n = due(a, rows, 4);
	ok(n == 1 && rows[0].id == comp.id, "INCOMPLETE delivered: the COMPLETE is claimable");
	rows_clear(rows, n);
	outcome(a, STORE_OUT_DELIVERED, comp.id, 0);

	/* a dead letter releases the line too */
	item_init(&it, "r", "P-dead", "INCOMPLETE", "did-inc2", "{}");
	insert1(a, &it, &inc);
	item_init(&it, "r", "P-dead", "COMPLETE", "did-comp2", "{}");
	insert1(a, &it, &comp);
	n = due(b, rows, 4);
	rows_clear(rows, n);
	outcome(b, STORE_OUT_DEAD, inc.id, 0);
	n = due(a, rows, 4);
	ok(n == 1 && rows[0].id == comp.id, "INCOMPLETE dead-lettered: the COMPLETE is claimable");
	rows_clear(rows, n);
	purge_all(a);
	store_close(a);
	store_close(b);
}

/* ---- 8 concurrent deliverers ---- */

#define CLAIM_ROWS 400
#define DELIVERERS 8

struct deliverer {
	int index;
	struct store *s;
	int64_t ids[CLAIM_ROWS];
	size_t n;
	int errors;
};

static void *deliverer_run(void *arg)
{
	struct deliverer *d = arg;
	int64_t give_up = clock_mono_ms() + 60000;
	int idle = 0;

	while (clock_mono_ms() < give_up && idle < 3) {
		struct store_row rows[5];
		struct store_outcome o[5];
		struct bridge_error err;
		size_t n = 0;

		bridge_error_clear(&err);
		if (store_due(d->s, ENDPOINT, "", now, rows, 5, &n, &err) < 0) {
			d->errors++;
			continue;
		}
		idle = n == 0 ? idle + 1 : 0;
		for (size_t i = 0; i < n; i++) {
			if (d->n < CLAIM_ROWS)
				d->ids[d->n++] = rows[i].id;
			memset(&o[i], 0, sizeof(o[i]));
			o[i].kind = STORE_OUT_DELIVERED;
			o[i].id = rows[i].id;
		}
		if (n && store_apply(d->s, o, n, &err) < 0)
			d->errors++;
		rows_clear(rows, n);
	}
	return NULL;
}

static void test_concurrent_claims(void)
{
	static struct deliverer d[DELIVERERS];
	struct store *w = open_as("writer", LEASE_MS);
	const struct store_item *items[CLAIM_ROWS];
	static struct store_item its[CLAIM_ROWS];
	static char pids[CLAIM_ROWS][32], dids[CLAIM_ROWS][32];
	pthread_t th[DELIVERERS];
	struct bridge_error err;
	struct store_counts c;
	static char *seen;
	size_t total = 0, twice = 0, missing = 0, busy = 0;
	int64_t min_id = INT64_MAX;
	int errors = 0;

	if (!w)
		return;
	for (int i = 0; i < CLAIM_ROWS; i++) {
		snprintf(pids[i], sizeof(pids[i]), "C-%d", i);
		snprintf(dids[i], sizeof(dids[i]), "did-c-%d", i);
		item_init(&its[i], "r", pids[i], "COMPLETE", dids[i], "{}");
		items[i] = &its[i];
	}
	if (!ok(store_insert(w, items, CLAIM_ROWS, now, NULL, NULL, &err) == 0,
		"400 rows in one transaction"))
		printf("# %s\n", err.message);
	for (int i = 0; i < DELIVERERS; i++) {
		char name[16];

		snprintf(name, sizeof(name), "d%d", i);
		memset(&d[i], 0, sizeof(d[i]));
		d[i].index = i;
		d[i].s = open_as(name, 60000);
		if (!d[i].s)
			return;
	}
	for (int i = 0; i < DELIVERERS; i++)
		pthread_create(&th[i], NULL, deliverer_run, &d[i]);
	for (int i = 0; i < DELIVERERS; i++)
		pthread_join(th[i], NULL);
	seen = calloc(1u << 20, 1);
	for (int i = 0; i < DELIVERERS; i++)
		for (size_t k = 0; k < d[i].n; k++)
			if (d[i].ids[k] < min_id)
				min_id = d[i].ids[k];
	for (int i = 0; i < DELIVERERS; i++) {
		errors += d[i].errors;
		busy += d[i].n > 0;
		for (size_t k = 0; k < d[i].n; k++) {
			int64_t at = d[i].ids[k] - min_id;

			total++;
			if (at >= 0 && at < (1 << 20) && seen[at]++)
				twice++;
		}
	}
	for (int k = 0; k < CLAIM_ROWS; k++)
		missing += !seen[k];
	printf("# %zu claims by %zu of %d deliverers\n", total, busy, DELIVERERS);
	is_int(errors, 0, "no store error under 8 concurrent deliverers");
	is_int(twice, 0, "no row claimed twice");
	is_int(total, CLAIM_ROWS, "every row claimed once");
	is_int(missing, 0, "none left out");
	ok(busy >= 2, "the work was shared between deliverers");
	store_count(w, &c, &err);
	is_int(c.pending, 0, "all delivered");
	free(seen);
	for (int i = 0; i < DELIVERERS; i++)
		store_close(d[i].s);
	store_close(w);
}

/* ---- leases ---- */

static void test_killed_holder(void)
{
	struct store *w = open_as("w", LEASE_MS);
	struct store_item it;
	struct store_receipt r;
	struct store_row rows[4];
	int pipefd[2], status = 0;
	int64_t claimed_at, got_at = 0;
	size_t n = 0;
	char c = 0;
	pid_t pid;

	if (!w || pipe(pipefd) < 0)
		return;
	item_init(&it, "r", "P-kill", "COMPLETE", "did-kill", "{}");
	insert1(w, &it, &r);
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		struct store *h = open_as("victim", LEASE_MS);
		struct store_row mine[4];
		size_t k = h ? due(h, mine, 4) : 0;

		c = k == 1 ? 'y' : 'n';
		if (write(pipefd[1], &c, 1) < 0)
			_exit(3);
		for (;;)
			pause(); /* killed holding the lease */
	}
	close(pipefd[1]);
	ok(read(pipefd[0], &c, 1) == 1 && c == 'y', "the holder claimed the row");
	claimed_at = clock_mono_ms();
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	close(pipefd[0]);
	ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "holder killed with SIGKILL");
	is_int(due(w, rows, 4), 0, "its lease still runs: not claimable");
	while (clock_mono_ms() < claimed_at + LEASE_MS + 10000) {
		n = due(w, rows, 4);
		if (n) {
			got_at = clock_mono_ms();
			break;
		}
		usleep(50000); /* polling a deadline: the lease is the event */
	}
	ok(n == 1 && rows[0].id == r.id, "reclaimed by another store after the lease");
	ok(got_at - claimed_at >= LEASE_MS - 200, "not before the lease expired");
	printf("# reclaimed %lld ms after the claim (lease %d ms)\n",
	       (long long)(got_at - claimed_at), LEASE_MS);
	if (n)
		outcome(w, STORE_OUT_DELIVERED, rows[0].id, 0);
	rows_clear(rows, n);
	store_close(w);
}

static void test_renewed_and_stale(void)
{
	struct store *a = open_as("a", LEASE_MS), *b = open_as("b", LEASE_MS);
	struct store_item it;
	struct store_receipt r;
	struct store_row rows[4], row;
	struct bridge_error err;
	int64_t start, expired_at = 0;
	size_t n, renewed = 0, stolen = 0;

	if (!a || !b)
		return;
	item_init(&it, "r", "P-lease", "COMPLETE", "did-lease", "{}");
	insert1(a, &it, &r);
	n = due(a, rows, 4);
	ok(n == 1, "a claims");
	rows_clear(rows, n);
	/* a renews every LEASE_MS / 3 for three lease periods; b keeps asking */
	start = clock_mono_ms();
	while (clock_mono_ms() < start + 3 * LEASE_MS) {
		size_t k;

		store_renew(a, &r.id, 1, &k, &err);
		renewed += k;
		n = due(b, rows, 4);
		stolen += n;
		rows_clear(rows, n);
		usleep(LEASE_MS / 3 * 1000);
	}
	ok(renewed >= 6, "the lease was renewed");
	is_int(stolen, 0, "a renewed lease is never reclaimed (3 lease periods)");
	/* a stops renewing (as if stuck): b takes the row after the lease */
	start = clock_mono_ms();
	while (clock_mono_ms() < start + LEASE_MS + 10000) {
		n = due(b, rows, 4);
		if (n) {
			expired_at = clock_mono_ms();
			break;
		}
		usleep(50000);
	}
	ok(n == 1 && expired_at, "unrenewed: b reclaims it");
	rows_clear(rows, n);
	/* a's late outcomes are refused: b holds the row now */
	outcome(a, STORE_OUT_DELIVERED, r.id, 0);
	ok(store_get(b, r.id, &row, &err) == 0, "a's late 'delivered' did not delete b's row");
	store_row_clear(&row);
	outcome(a, STORE_OUT_FAILED, r.id, 0);
	store_get(b, r.id, &row, &err);
	is_int(row.attempts, 0, "a's late 'failed' did not count an attempt");
	store_row_clear(&row);
	outcome(a, STORE_OUT_DEAD, r.id, 0);
	store_get(b, r.id, &row, &err);
	is_int(row.status, STORE_PENDING, "a's late 'dead' did not dead-letter it");
	store_row_clear(&row);
	{
		size_t k = 9;

		store_renew(a, &r.id, 1, &k, &err);
		is_int(k, 0, "a can no longer renew it");
	}
	outcome(b, STORE_OUT_FAILED, r.id, 0);
	store_get(b, r.id, &row, &err);
	is_int(row.attempts, 1, "the current holder's outcome is recorded");
	store_row_clear(&row);
	purge_all(a);
	store_close(a);
	store_close(b);
}

/* ---- operator commands ---- */

static int list_cb(const struct store_row *r, void *arg)
{
	(*(int *)arg)++;
	return 0;
}

static void test_operator(void)
{
	struct store *a = open_as("a", LEASE_MS), *cli;
	struct store_item it;
	struct store_receipt r1, r2, r3;
	struct store_row rows[4];
	struct store_filter f;
	struct store_counts c;
	struct bridge_error err;
	int64_t n = 0, skipped = 0;
	int listed = 0;
	size_t k;

	cli = open_as("cli", LEASE_MS);
	if (!a || !cli)
		return;
	item_init(&it, "r", "P-op", "COMPLETE", "did-op1", "{}");
	insert1(a, &it, &r1);
	k = due(a, rows, 4);
	rows_clear(rows, k);
	outcome(a, STORE_OUT_DEAD, r1.id, 0);
	item_init(&it, "r", "P-op", "COMPLETE", "did-op2", "{}");
	is_int(insert1(a, &it, &r2), STORE_INSERTED, "a dead letter does not make a duplicate");
	is_int(store_retry(cli, r1.id, now, &err), STORE_RETRY_DUPLICATE,
	       "retry refused while the same participation and state is pending");
	item_init(&it, "other", "", "", "did-op3", "{}");
	insert1(a, &it, &r3);
	store_filter_init(&f);
	store_list(cli, &f, list_cb, &listed, &err);
	is_int(listed, 3, "list from another store (the queue command)");
	store_count(cli, &c, &err);
	ok(c.pending == 2 && c.dead == 1, "stats: 2 pending, 1 dead");
	ok(store_purge_id(cli, r2.id, &err) == 0, "purge one");
	ok(store_retry_dead(cli, &f, now, &n, &skipped, &err) == 0 && n == 1 && skipped == 0,
	   "retry --all brings the dead letter back");
	store_filter_init(&f);
	f.route = "other";
	ok(store_purge(cli, &f, &n, &err) == 0 && n == 1, "purge --route");
	is_int(store_purge_id(cli, 424242, &err), 1, "purge of an unknown id: 1");
	purge_all(a);
	store_close(a);
	store_close(cli);
}

/* ---- integrity ---- */

/* A statement straight on the database, as a damaged disk or a hand edit
 * would change a row. */
static int pg_exec(const char *sql)
{
	PGconn *c = PQconnectdb(pg_url);
	PGresult *r = PQexec(c, sql);
	int ok = PQresultStatus(r) == PGRES_COMMAND_OK;

	if (!ok)
		printf("# %s: %s", sql, PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
	return ok ? 0 : -1;
}

static void test_checksum(void)
{
	struct store *s = open_as("sum", LEASE_MS);
	struct store_item it;
	struct store_receipt r;
	struct store_row row;
	struct bridge_error err;
	char sql[160];

	if (!s)
		return;
	item_init(&it, "r", "P-sum", "COMPLETE", "did-sum", "{\"sum\":1}");
	insert1(s, &it, &r);
	if (ok(store_get(s, r.id, &row, &err) == 0, "read back")) {
		is_int(row.integrity, STORE_ROW_INTACT,
		       "a row reads back intact (its checksum matches)");
		is_int(row.checksum_len, STORE_CHECKSUM_LEN, "a SHA-256 stored with it");
		store_row_clear(&row);
	}
	snprintf(sql, sizeof(sql), "UPDATE deliveries SET body = '{\"sum\":2}' WHERE id = %lld",
		 (long long)r.id);
	ok(pg_exec(sql) == 0, "the body changed behind the store's back");
	if (ok(store_get(s, r.id, &row, &err) == 0, "read back again")) {
		is_int(row.integrity, STORE_ROW_CORRUPT, "now it reads back corrupt");
		store_row_clear(&row);
	}
	snprintf(sql, sizeof(sql), "UPDATE deliveries SET checksum = '' WHERE id = %lld",
		 (long long)r.id);
	pg_exec(sql);
	if (store_get(s, r.id, &row, &err) == 0) {
		is_int(row.integrity, STORE_ROW_UNCHECKED,
		       "no checksum (an older schema's row): unchecked");
		store_row_clear(&row);
	}
	ok(store_probe(s, now, 0, &err) == 0, "store_probe: a small write goes through");
	purge_all(s);
	store_close(s);
}

/* ---- durability ---- */

static int pg_ctl(const char *what)
{
	const char *ctl = getenv("BRIDGE_TEST_PG_CTL");
	char cmd[2048];

	if (!ctl)
		return -1;
	snprintf(cmd, sizeof(cmd), "%s %s >/dev/null 2>&1", ctl, what);
	return system(cmd);
}

static void test_durable(void)
{
	struct store *s = open_as("dur", LEASE_MS);
	struct store_item it;
	struct store_receipt r;
	struct store_counts c;
	struct bridge_error err;
	int64_t deadline;
	int acked = 0, rc = -1;
	char pid[32];

	if (!s)
		return;
	for (int i = 0; i < 50; i++) {
		snprintf(pid, sizeof(pid), "D-%d", i);
		item_init(&it, "r", pid, "COMPLETE", pid, "{\"durable\":true}");
		acked += insert1(s, &it, &r) == STORE_INSERTED;
	}
	is_int(acked, 50, "50 inserts acknowledged");
	ok(pg_ctl("-m immediate stop") == 0,
	   "PostgreSQL stopped with -m immediate (no checkpoint)");
	ok(store_count(s, &c, &err) < 0, "the store reports the database gone");
	ok(pg_ctl("start") == 0, "PostgreSQL started again (crash recovery)");
	deadline = clock_mono_ms() + 20000;
	while (clock_mono_ms() < deadline && (rc = store_count(s, &c, &err)) < 0)
		usleep(100000); /* reconnect backoff: the next try is the event */
	ok(rc == 0, "the same store reconnects by itself");
	is_int(c.pending, 50, "every acknowledged insert survived");
	purge_all(s);
	store_close(s);
}

int main(void)
{
	pg_url = getenv("BRIDGE_TEST_PG_URL");
	if (!ok(pg_url != NULL, "BRIDGE_TEST_PG_URL (run me through tests/with_pg.py)"))
		return tap_done();
	test_schema_rows();
	test_order();
	test_concurrent_claims();
	test_killed_holder();
	test_renewed_and_stale();
	test_operator();
	test_checksum();
	test_durable();
	return tap_done();
}
