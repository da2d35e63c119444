/*
 * cutover: the bucket's spread and stickiness, the ramp's share, kill of
 * every route as one event, the rollback rule (min posts, the v1
 * comparison, once), the SQLite store shared by two instances (initial row
 * kept, a change followed, rows out of range read alike by both engines),
 * and decisions racing changes on 4 threads.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge/config.h"
#include "bridge/cutover.h"
#include "bridge/shared.h"
#include "tap.h"

/* The store under test: SQLite in a file, or, with BRIDGE_TEST_PG_URL set
 * (tests/with_pg.py), the shared PostgreSQL store of that database. */
static int state_open(const char *path, int create, struct cutover_backend *b,
		      struct bridge_error *err)
{
	const char *url = getenv("BRIDGE_TEST_PG_URL");
	struct shared_config sc;
	int rc;

	if (!url || !*url)
		return cutover_sqlite_open(path, create, b, err);
	shared_config_default(&sc);
	free(sc.url);
	sc.url = strdup(url);
	rc = cutover_shared_open(&sc, create, b, err);
	shared_config_clear(&sc);
	return rc;
}

struct events {
	pthread_mutex_t lock;
	int n[5];
	int last_routes;
	long long v2_posts, v2_failed;
	char last_by[CUTOVER_BY_MAX];
};

static void on_event(const struct cutover_event *ev, void *arg)
{
	struct events *e = arg;

	pthread_mutex_lock(&e->lock);
	e->n[ev->kind]++;
	e->last_routes = ev->n_routes;
	if (ev->kind == CUTOVER_EVENT_ROLLBACK) {
		e->v2_posts = ev->v2_posts;
		e->v2_failed = ev->v2_failed;
	}
	snprintf(e->last_by, sizeof(e->last_by), "%s", ev->by ? ev->by : "");
	pthread_mutex_unlock(&e->lock);
}

static struct bridge_config *config(int n, int ramp)
{
	struct bridge_config *c = calloc(1, sizeof(*c));
	static const char *const names[] = { "crm", "shop", "fwd" };

	c->routes = calloc((size_t)n, sizeof(*c->routes));
	c->n_routes = (size_t)n;
	for (int i = 0; i < n; i++) {
		c->routes[i].name = (char *)names[i];
		c->routes[i].mode = i == 2 ? ROUTE_FORWARD : ROUTE_DUAL;
		cutover_route_config_default(&c->routes[i].cutover);
		c->routes[i].cutover.ramp = ramp;
		c->routes[i].cutover.min_posts = 5;
		c->routes[i].cutover.max_failure_rate = 0.5;
		c->routes[i].cutover.window_s = 60;
	}
	return c;
}

static void config_free(struct bridge_config *c)
{
	free(c->routes);
	free(c);
}

static void pid_of(int i, char *out, size_t cap)
{
	snprintf(out, cap, "%08X-1C0C-463F-82A0-%012d", i * 2654435761u, i);
}

static void t_bucket(void)
{
	int deciles[10] = { 0 }, bad = 0;
	char id[64];

	for (int i = 0; i < 10000; i++) {
		int b;

		pid_of(i, id, sizeof(id));
		b = cutover_bucket("crm", id);
		if (b < 0 || b > 99)
			bad++;
		else
			deciles[b / 10]++;
	}
	is_int(bad, 0, "every bucket is 0..99");
	for (int d = 0; d < 10; d++)
		if (deciles[d] < 900 || deciles[d] > 1100)
			bad++;
	is_int(bad, 0, "10,000 ids spread evenly over the deciles (each 1000 +- 100)");
	is_int(cutover_bucket("crm", "abc-DEF"), cutover_bucket("crm", "ABC-def"),
	       "the id is case-folded");
	bad = 0;
	for (int i = 0; i < 200; i++) {
		pid_of(i, id, sizeof(id));
		bad += cutover_bucket("crm", id) == cutover_bucket("shop", id);
	}
	ok(bad < 20, "the route is part of the key (other buckets on another route)");
}

static void t_ramp(void)
{
	struct bridge_config *cfg = config(3, 30);
	struct events ev = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct cutover *c = cutover_new(NULL, on_event, &ev);
	struct bridge_error err;
	int at30 = 0, lost = 0, at60 = 0, copy = 0;
	char id[64];

	bridge_error_clear(&err);
	is_int(cutover_configure(c, cfg, &err), 0, "configure (memory only)");
	is_int(ev.n[CUTOVER_EVENT_INITIAL], 2, "two dual routes get their initial state");
	for (int i = 0; i < 2000; i++) {
		pid_of(i, id, sizeof(id));
		at30 += cutover_primary_v2(c, "crm", id, &copy);
	}
	ok(at30 >= 540 && at30 <= 660, "ramp 30: 30 % +- 3 of 2,000 on v2");
	is_int(copy, 1, "copy by default");
	is_int(cutover_primary_v2(c, "fwd", "x", NULL), 0, "a forward route has no cutover");
	is_int(cutover_primary_v2(c, "crm", "", NULL), 0, "no participation id: v1");
	{
		struct cutover_change ch = { .route = "crm", .ramp = 60, .by = "test" };

		is_int(cutover_apply(c, &ch, &err), 1, "ramp 60");
	}
	for (int i = 0; i < 2000; i++) {
		int before, after;

		pid_of(i, id, sizeof(id));
		before = cutover_bucket("crm", id) < 30;
		after = cutover_primary_v2(c, "crm", id, NULL);
		at60 += after;
		lost += before && !after;
	}
	is_int(lost, 0, "raising the ramp keeps every v2 participation on v2");
	ok(at60 >= 1140 && at60 <= 1260, "ramp 60: 60 % +- 3 on v2");
	{
		struct cutover_change ch = { .route = NULL, .ramp = -1, .kill = 1, .by = "ops" };

		ev.n[CUTOVER_EVENT_CHANGED] = 0;
		is_int(cutover_apply(c, &ch, &err), 2, "kill: both dual routes change");
		is_int(ev.n[CUTOVER_EVENT_CHANGED], 1, "... as one event");
		is_int(ev.last_routes, 2, "... naming how many");
		is_int(cutover_primary_v2(c, "crm", id, NULL) +
			       cutover_primary_v2(c, "shop", id, NULL),
		       0, "killed: v1 everywhere");
		ch.route = "nope";
		is_int(cutover_apply(c, &ch, &err), -1, "an unknown route is refused");
		is_str(err.key, "route", "... named as the route");
	}
	cutover_free(c);
	config_free(cfg);
}

static void t_rollback(void)
{
	struct bridge_config *cfg = config(2, 100);
	struct events ev = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct cutover *c = cutover_new(NULL, on_event, &ev);
	struct bridge_error err;
	long long t0 = 1700000000000LL;
	char *json;

	cutover_configure(c, cfg, &err);
	for (int i = 0; i < 4; i++)
		cutover_observe(c, "crm", CUTOVER_V2, 1, 0, t0 + i);
	is_int(ev.n[CUTOVER_EVENT_ROLLBACK], 0, "4 failures: under min_posts, no rollback");
	/* v1 fails as much: not v2's fault */
	for (int i = 0; i < 10; i++)
		cutover_observe(c, "shop", CUTOVER_V1, 0, 0, t0 + i);
	for (int i = 0; i < 10; i++)
		cutover_observe(c, "shop", CUTOVER_V2, 1, 0, t0 + i);
	is_int(ev.n[CUTOVER_EVENT_ROLLBACK], 0, "v2 fails no more than v1: no rollback");
	cutover_observe(c, "crm", CUTOVER_V2, 1, 0, t0 + 5);
	is_int(ev.n[CUTOVER_EVENT_ROLLBACK], 1, "the 5th failure rolls back");
	is_int(ev.v2_posts, 5, "... with its figures: 5 posts");
	is_int(ev.v2_failed, 5, "... 5 failed");
	is_int(cutover_primary_v2(c, "crm", "any", NULL), 0, "rolled back: v1");
	for (int i = 0; i < 5; i++)
		cutover_observe(c, "crm", CUTOVER_V2, 1, 0, t0 + 6 + i);
	is_int(ev.n[CUTOVER_EVENT_ROLLBACK], 1, "once");
	/* an old window does not count */
	{
		struct cutover_change ch = { .route = "shop", .ramp = 100, .by = "ops" };

		cutover_apply(c, &ch, &err);
	}
	for (int i = 0; i < 10; i++)
		cutover_observe(c, "shop", CUTOVER_V2, 1, i % 2 == 0, t0 + 120000 + i);
	is_int(ev.n[CUTOVER_EVENT_ROLLBACK], 1, "50 % failures is not over 0.5");
	json = cutover_state_json(c, cfg);
	ok(json && strstr(json, "\"status\":\"rolled_back\"") && strstr(json, "\"v2_posts\":5"),
	   "the state shows the rollback and its figures");
	free(json);
	json = cutover_history_json(c, cfg, t0 + 120000);
	ok(json && strstr(json, "\"v2_failed\":5"), "the per-minute history counts them");
	free(json);
	cutover_free(c);
	config_free(cfg);
}

static int keep_odd(const struct cutover_row *r, void *arg)
{
	if (strcmp(r->route, "odd") == 0)
		*(struct cutover_row *)arg = *r;
	return 0;
}

/* Rows the bridge did not write (edited by hand) read the same from either
 * engine: the ramp clamped to 0..100, an unknown status as killed. */
static void t_rows_out_of_range(const char *path)
{
	static const struct {
		int ramp, status, want_ramp, want_status;
	} rows[] = {
		{ 150, 7, 100, CUTOVER_KILLED },
		{ -5, -1, 0, CUTOVER_KILLED },
		{ 30, CUTOVER_RAMPING, 30, CUTOVER_RAMPING },
	};
	struct cutover_backend b;
	struct bridge_error err;

	bridge_error_clear(&err);
	if (state_open(path, 0, &b, &err) < 0) {
		ok(0, "the store opens for rows written by hand");
		return;
	}
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct cutover_row w = { .route = "odd", .changed_ms = 1, .by = "hand" };
		struct cutover_row got = { .ramp = -99 };
		char name[128];

		w.ramp = rows[i].ramp;
		w.status = (enum cutover_status)rows[i].status;
		is_int(b.ops->set(b.impl, &w, &err), 0, "the row is stored as written");
		is_int(b.ops->load(b.impl, keep_odd, &got, &err), 0, "the rows load");
		snprintf(name, sizeof(name), "ramp %d, status %d: read as ramp %d, status %d",
			 rows[i].ramp, rows[i].status, rows[i].want_ramp, rows[i].want_status);
		ok(got.ramp == rows[i].want_ramp && (int)got.status == rows[i].want_status, name);
	}
	cutover_backend_close(&b);
}

static void t_sqlite(void)
{
	char dir[] = "/tmp/cutover-test-XXXXXX", path[600];
	struct bridge_config *cfg = config(2, 10), *cfg2 = config(2, 70);
	struct events ev1 = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct events ev2 = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct cutover_backend b1, b2;
	struct cutover *c1, *c2;
	struct bridge_error err;
	char *json;

	ok(mkdtemp(dir) != NULL, "temp dir");
	snprintf(path, sizeof(path), "%s/cutover.db", dir);
	bridge_error_clear(&err);
	if (!getenv("BRIDGE_TEST_PG_URL")) {
		is_int(cutover_sqlite_open(path, 0, &b1, &err), -1,
		       "without create a missing file fails");
		is_int(cutover_sqlite_open(path, 1, &b1, &err), 0, "created");
		is_int(access(path, R_OK | W_OK), 0, "the file exists");
	} else {
		is_int(state_open(path, 1, &b1, &err), 0, "PostgreSQL: the schema set up");
	}
	c1 = cutover_new(&b1, on_event, &ev1);
	is_int(cutover_configure(c1, cfg, &err), 0, "instance 1 configured");
	is_int(state_open(path, 0, &b2, &err), 0, "instance 2 opens the same store");
	c2 = cutover_new(&b2, on_event, &ev2);
	is_int(cutover_configure(c2, cfg2, &err), 0, "instance 2 configured (its config says 70)");
	is_int(ev2.n[CUTOVER_EVENT_INITIAL], 0, "the stored row wins over the config");
	json = cutover_state_json(c2, cfg2);
	ok(json && strstr(json, "\"ramp\":10"), "instance 2 has ramp 10");
	free(json);
	is_int(cutover_refresh(c2, &err), 0, "nothing changed elsewhere");
	{
		struct cutover_change ch = { .route = "shop", .ramp = 45, .by = "ops at console" };

		is_int(cutover_apply(c1, &ch, &err), 1, "instance 1: shop to 45");
	}
	is_int(cutover_refresh(c2, &err), 1, "instance 2 sees the change");
	is_int(ev2.n[CUTOVER_EVENT_FOLLOWED], 1, "... as one followed change");
	is_str(ev2.last_by, "ops at console", "... with who made it");
	json = cutover_state_json(c2, cfg2);
	ok(json && strstr(json, "\"route\":\"shop\",\"ramp\":45"), "instance 2 routes by 45");
	free(json);
	cutover_free(c1);
	cutover_free(c2);
	/* a restart */
	is_int(state_open(path, 0, &b1, &err), 0, "reopened");
	c1 = cutover_new(&b1, NULL, NULL);
	cutover_configure(c1, cfg, &err);
	json = cutover_state_json(c1, cfg);
	ok(json && strstr(json, "\"route\":\"shop\",\"ramp\":45"), "the ramp survives a restart");
	free(json);
	cutover_free(c1);
	{
		FILE *f;
		char other[640];

		snprintf(other, sizeof(other), "%s/other.db", dir);
		f = fopen(other, "w");
		fputs("not sqlite at all, longer than a header would be ........................"
		      "..........................................................",
		      f);
		fclose(f);
		is_int(cutover_sqlite_open(other, 0, &b2, &err), -1, "a file of something else");
		unlink(other);
	}
	t_rows_out_of_range(path);
	unlink(path);
	snprintf(path, sizeof(path), "%s/cutover.db-wal", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/cutover.db-shm", dir);
	unlink(path);
	rmdir(dir);
	config_free(cfg);
	config_free(cfg2);
}

struct race {
	struct cutover *c;
	int stop;
	long decided;
};

static void *decide(void *arg)
{
	struct race *r = arg;
	char id[64];

	for (int i = 0; !__atomic_load_n(&r->stop, __ATOMIC_RELAXED); i++) {
		int v2;

		pid_of(i % 500, id, sizeof(id));
		v2 = cutover_primary_v2(r->c, "crm", id, NULL);
		cutover_observe(r->c, "crm", v2 ? CUTOVER_V2 : CUTOVER_V1, 1, 1,
				1700000000000LL + i);
		__atomic_fetch_add(&r->decided, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void t_threads(void)
{
	struct bridge_config *cfg = config(2, 0);
	struct race r = { .c = cutover_new(NULL, NULL, NULL) };
	struct bridge_error err;
	pthread_t th[4];

	cutover_configure(r.c, cfg, &err);
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, decide, &r);
	/* change the ramp until the threads made 2,000 decisions (at least 200 changes) */
	for (int k = 0; k < 200 || __atomic_load_n(&r.decided, __ATOMIC_RELAXED) < 2000; k++) {
		struct cutover_change ch = { .route = "crm", .ramp = k % 101, .by = "t" };
		char *json = cutover_state_json(r.c, cfg);

		cutover_apply(r.c, &ch, &err);
		free(json);
	}
	__atomic_store_n(&r.stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	ok(r.decided >= 2000, "4 threads decided while the ramp moved");
	cutover_free(r.c);
	config_free(cfg);
}

int main(void)
{
	t_bucket();
	t_ramp();
	t_rollback();
	t_sqlite();
	t_threads();
	return tap_done();
}
