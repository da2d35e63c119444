/* The SQLite engine of the cutover state (cutover.h): one table,
 * cutover_state, in the queue's store or in a file of its own. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bridge/confread.h"
#include "bridge/config.h"
#include "bridge/cutover.h"
#include "bridge/store.h"

#define QUEUE_APPLICATION_ID   0x57484251 /* the queue store's ("WHBQ") */
#define CUTOVER_APPLICATION_ID 0x57484243 /* a state file of its own ("WHBC") */
#define CUTOVER_BUSY_MS        5000

static const char schema_sql[] = "CREATE TABLE IF NOT EXISTS cutover_state ("
				 " route TEXT PRIMARY KEY,"
				 " ramp INTEGER NOT NULL,"
				 " status INTEGER NOT NULL,"
				 " changed_ms INTEGER NOT NULL,"
				 " changed_by TEXT NOT NULL)";

struct sq {
	sqlite3 *db;
	char *path;
	long long data_version;
};

static int sq_error(struct sq *q, struct bridge_error *err, const char *what)
{
	return bridge_error_set(err, "cutover state %s: %s: %s", q->path, what,
				sqlite3_errmsg(q->db));
}

static int sq_int(struct sq *q, const char *sql, long long *ret, struct bridge_error *err)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
		return sq_error(q, err, sql);
	rc = sqlite3_step(st);
	*ret = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sq_error(q, err, sql);
	return 0;
}

/* What both engines' changed() answer once they read the store's counter
 * now: 1 when it moved since *seen (now remembered), else 0. */
static int counter_moved(long long *seen, long long now)
{
	if (now == *seen)
		return 0;
	*seen = now;
	return 1;
}

/* One stored row handed to cb as either engine reads it: a ramp outside
 * 0..100 clamped, a status the bridge does not know read as killed.  0, or
 * -1 with err set when cb fails (out of memory). */
static int row_load(int (*cb)(const struct cutover_row *r, void *arg), void *arg, const char *route,
		    long long ramp, long long status, long long changed_ms, const char *by,
		    struct bridge_error *err)
{
	struct cutover_row r;

	memset(&r, 0, sizeof(r));
	snprintf(r.route, sizeof(r.route), "%s", route ? route : "");
	snprintf(r.by, sizeof(r.by), "%s", by ? by : "");
	r.ramp = ramp < 0 ? 0 : ramp > 100 ? 100 : (int)ramp;
	r.status = status >= 0 && status <= 2 ? (enum cutover_status)status : CUTOVER_KILLED;
	r.changed_ms = changed_ms;
	if (cb(&r, arg) < 0)
		return bridge_error_set(err, "out of memory");
	return 0;
}

static int sq_load(void *impl, int (*cb)(const struct cutover_row *r, void *arg), void *arg,
		   struct bridge_error *err)
{
	struct sq *q = impl;
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(q->db,
			       "SELECT route, ramp, status, changed_ms, changed_by FROM "
			       "cutover_state",
			       -1, &st, NULL) != SQLITE_OK)
		return sq_error(q, err, "cannot read");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if (row_load(cb, arg, (const char *)sqlite3_column_text(st, 0),
			     sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2),
			     sqlite3_column_int64(st, 3), (const char *)sqlite3_column_text(st, 4),
			     err) < 0) {
			sqlite3_finalize(st);
			return -1;
		}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return sq_error(q, err, "cannot read");
	return 0;
}

static int sq_write(struct sq *q, const char *sql, const struct cutover_row *r,
		    struct bridge_error *err)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
		return sq_error(q, err, "cannot write");
	sqlite3_bind_text(st, 1, r->route, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 2, r->ramp);
	sqlite3_bind_int(st, 3, (int)r->status);
	sqlite3_bind_int64(st, 4, r->changed_ms);
	sqlite3_bind_text(st, 5, r->by, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return sq_error(q, err, "cannot write");
	return 0;
}

static int sq_init(void *impl, const struct cutover_row *r, int *ret_inserted,
		   struct bridge_error *err)
{
	struct sq *q = impl;

	if (sq_write(q,
		     "INSERT OR IGNORE INTO cutover_state (route, ramp, status, changed_ms, "
		     "changed_by) VALUES (?1, ?2, ?3, ?4, ?5)",
		     r, err) < 0)
		return -1;
	*ret_inserted = sqlite3_changes(q->db) > 0;
	return 0;
}

static int sq_set(void *impl, const struct cutover_row *r, struct bridge_error *err)
{
	return sq_write(impl,
			"INSERT OR REPLACE INTO cutover_state (route, ramp, status, changed_ms, "
			"changed_by) VALUES (?1, ?2, ?3, ?4, ?5)",
			r, err);
}

/* PRAGMA data_version moves when another connection committed. */
static int sq_changed(void *impl, struct bridge_error *err)
{
	struct sq *q = impl;
	long long v;

	if (sq_int(q, "PRAGMA data_version", &v, err) < 0)
		return -1;
	return counter_moved(&q->data_version, v);
}

static void sq_close(void *impl)
{
	struct sq *q = impl;

	if (!q)
		return;
	sqlite3_close(q->db);
	free(q->path);
	free(q);
}

static const struct cutover_store_ops sqlite_ops = {
	.load = sq_load,
	.init = sq_init,
	.set = sq_set,
	.changed = sq_changed,
	.close = sq_close,
};

int cutover_sqlite_open(const char *path, int create, struct cutover_backend *ret,
			struct bridge_error *err)
{
	struct sq *q = calloc(1, sizeof(*q));
	long long app = 0, tables = 0;
	char *msg = NULL;

	memset(ret, 0, sizeof(*ret));
	if (!q || !(q->path = strdup(path))) {
		free(q);
		return bridge_error_set(err, "out of memory");
	}
	if (access(path, F_OK) != 0) {
		int fd;

		if (!create) {
			sq_close(q);
			return bridge_error_set(err,
						"cutover state %s does not exist yet: serve "
						"creates it when it starts",
						path);
		}
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0) {
			int e = errno;

			sq_close(q);
			return bridge_error_set(err, "cannot create cutover state %s: %s", path,
						strerror(e));
		}
		close(fd);
	}
	if (sqlite3_open_v2(path, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL) !=
	    SQLITE_OK) {
		bridge_error_set(err, "cannot open cutover state %s: %s", path,
				 q->db ? sqlite3_errmsg(q->db) : "out of memory");
		sq_close(q);
		return -1;
	}
	sqlite3_busy_timeout(q->db, CUTOVER_BUSY_MS);
	if (sq_int(q, "PRAGMA application_id", &app, err) < 0 ||
	    sq_int(q, "SELECT COUNT(*) FROM sqlite_master", &tables, err) < 0) {
		sq_close(q);
		return -1;
	}
	if (app != QUEUE_APPLICATION_ID && app != CUTOVER_APPLICATION_ID &&
	    (app != 0 || tables > 0)) {
		bridge_error_set(err,
				 "%s is not a webhook-bridge store (an SQLite database of "
				 "something else)",
				 path);
		sq_close(q);
		return -1;
	}
	if (app == 0 &&
	    sqlite3_exec(q->db, "PRAGMA journal_mode = WAL; PRAGMA application_id = 1464353347;",
			 NULL, NULL, &msg) != SQLITE_OK) {
		bridge_error_set(err, "cutover state %s: %s", path, msg ? msg : "cannot set up");
		sqlite3_free(msg);
		sq_close(q);
		return -1;
	}
	if (sqlite3_exec(q->db, "PRAGMA synchronous = FULL", NULL, NULL, &msg) != SQLITE_OK ||
	    sqlite3_exec(q->db, schema_sql, NULL, NULL, &msg) != SQLITE_OK) {
		bridge_error_set(err, "cutover state %s: %s", path, msg ? msg : "cannot set up");
		sqlite3_free(msg);
		sq_close(q);
		return -1;
	}
	if (sq_changed(q, err) < 0) {
		sq_close(q);
		return -1;
	}
	ret->ops = &sqlite_ops;
	ret->impl = q;
	if (asprintf(&ret->where, "sqlite:%s", path) < 0)
		ret->where = NULL;
	return 0;
}

/* ------------------------------------------------------------------ */
/* the shared engine: table cutover_state of the shared store (store.h) */

struct pgc {
	struct store *st;
	long long version;
};

struct pgc_load {
	int (*cb)(const struct cutover_row *r, void *arg);
	void *arg;
	struct bridge_error *err;
};

static int pgc_row(const char *route, int ramp, int status, long long changed_ms, const char *by,
		   void *arg)
{
	struct pgc_load *l = arg;

	return row_load(l->cb, l->arg, route, ramp, status, changed_ms, by, l->err);
}

static int pgc_load_rows(void *impl, int (*cb)(const struct cutover_row *r, void *arg), void *arg,
			 struct bridge_error *err)
{
	struct pgc *q = impl;
	struct pgc_load l = { cb, arg, err };

	return store_cutover_load(q->st, pgc_row, &l, err);
}

static int pgc_init(void *impl, const struct cutover_row *r, int *ret_inserted,
		    struct bridge_error *err)
{
	struct pgc *q = impl;

	return store_cutover_put(q->st, r->route, r->ramp, (int)r->status, r->changed_ms, r->by, 1,
				 ret_inserted, err);
}

static int pgc_set(void *impl, const struct cutover_row *r, struct bridge_error *err)
{
	struct pgc *q = impl;

	return store_cutover_put(q->st, r->route, r->ramp, (int)r->status, r->changed_ms, r->by, 0,
				 NULL, err);
}

/* Every write takes the next number of a sequence: a higher highest one is
 * another writer's change (or this one's: applying it again is harmless). */
static int pgc_changed(void *impl, struct bridge_error *err)
{
	struct pgc *q = impl;
	long long v;

	if (store_cutover_version(q->st, &v, err) < 0)
		return -1;
	return counter_moved(&q->version, v);
}

static void pgc_close(void *impl)
{
	struct pgc *q = impl;

	if (!q)
		return;
	store_close(q->st);
	free(q);
}

static const struct cutover_store_ops shared_ops = {
	.load = pgc_load_rows,
	.init = pgc_init,
	.set = pgc_set,
	.changed = pgc_changed,
	.close = pgc_close,
};

int cutover_shared_open(const struct shared_config *c, int create, struct cutover_backend *ret,
			struct bridge_error *err)
{
	struct pgc *q = calloc(1, sizeof(*q));

	memset(ret, 0, sizeof(*ret));
	if (!q)
		return bridge_error_set(err, "out of memory");
	if (store_open_shared(c, create ? STORE_CREATE : 0, &q->st, err) < 0 ||
	    pgc_changed(q, err) < 0) {
		pgc_close(q);
		return -1;
	}
	ret->ops = &shared_ops;
	ret->impl = q;
	if (asprintf(&ret->where, "%s", store_path(q->st)) < 0)
		ret->where = NULL;
	return 0;
}

char *cutover_store_path(const struct bridge_config *cfg, int *ret_shared)
{
	*ret_shared = cfg->queue.path != NULL;
	if (cfg->queue.path)
		return strdup(cfg->queue.path);
	return cfg_resolve_state_path(cfg->path, "STATE_DIRECTORY", "cutover.db");
}
