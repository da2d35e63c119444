/*
 * store_operator: what the queue command does to a store while serve may be
 * running: list and show rows, retry, purge (SQLite; the PostgreSQL engine's
 * are in store_pg.c).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bridge/clock.h"
#include "bridge/store.h"
#include "bridge/store_pg.h"
#include "store_types.h"

void store_filter_init(struct store_filter *f)
{
	memset(f, 0, sizeof(*f));
	f->status = -1;
}

#define FILTER_WHERE                                                        \
	" WHERE (?1 < 0 OR d.status = ?1) AND (?2 IS NULL OR d.route = ?2)" \
	" AND (?3 = 0 OR d.created_ms < ?3)"

static void filter_bind(sqlite3_stmt *st, const struct store_filter *f)
{
	sqlite3_bind_int(st, 1, f->status);
	if (f->route)
		sqlite3_bind_text(st, 2, f->route, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 2);
	sqlite3_bind_int64(st, 3, f->created_before);
}

int store_list(struct store *s, const struct store_filter *f,
	       int (*cb)(const struct store_row *row, void *arg), void *arg,
	       struct bridge_error *err)
{
	if (s->pg)
		return store_pg_list(s->pg, f, cb, arg, err);
	static const char asc[] = "SELECT " ROW_COLUMNS " FROM deliveries AS d" FILTER_WHERE
				  " ORDER BY d.id LIMIT ?4";
	static const char desc[] = "SELECT " ROW_COLUMNS " FROM deliveries AS d" FILTER_WHERE
				   " ORDER BY d.id DESC LIMIT ?4";
	sqlite3_stmt *st;
	struct store_row row;
	int rc, ret = 0;

	pthread_mutex_lock(&s->mu);
	if (sqlite3_prepare_v2(s->db, f->newest_first ? desc : asc, -1, &st, NULL) != SQLITE_OK) {
		store_sql_fail(s, err, "cannot list deliveries");
		pthread_mutex_unlock(&s->mu);
		return -1;
	}
	filter_bind(st, f);
	sqlite3_bind_int64(st, 4, f->limit > 0 ? f->limit : -1);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (store_row_read(st, &row) < 0) {
			ret = bridge_error_set(err, "out of memory");
			break;
		}
		rc = cb(&row, arg);
		store_row_clear(&row);
		if (rc) {
			rc = SQLITE_DONE;
			break;
		}
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = store_sql_fail(s, err, "cannot list deliveries");
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->mu);
	return ret;
}

int store_get(struct store *s, int64_t id, struct store_row *ret, struct bridge_error *err)
{
	if (s->pg)
		return store_pg_get(s->pg, id, ret, err);
	sqlite3_stmt *st;
	int rc, out;

	memset(ret, 0, sizeof(*ret));
	pthread_mutex_lock(&s->mu);
	st = store_stmt(s, ST_GET, err);
	if (!st) {
		pthread_mutex_unlock(&s->mu);
		return -1;
	}
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		out = store_row_read(st, ret) < 0 ? bridge_error_set(err, "out of memory") : 0;
	else if (rc == SQLITE_DONE)
		out = 1;
	else
		out = store_sql_fail(s, err, "cannot read a delivery");
	sqlite3_reset(st);
	pthread_mutex_unlock(&s->mu);
	return out;
}

int store_retry(struct store *s, int64_t id, int64_t now_ms, struct bridge_error *err)
{
	if (s->pg)
		return store_pg_retry(s->pg, id, now_ms, err);
	sqlite3_stmt *st;
	int64_t changes = 0;
	int rc;

	pthread_mutex_lock(&s->mu);
	if (store_tx_begin(s, err) < 0)
		goto fail;
	st = store_stmt(s, ST_RETRY_DEAD, err);
	if (!st)
		goto fail;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, now_ms);
	rc = sqlite3_step(st);
	if (rc == SQLITE_CONSTRAINT) {
		sqlite3_reset(st);
		store_tx_abort(s);
		pthread_mutex_unlock(&s->mu);
		return STORE_RETRY_DUPLICATE;
	}
	if (rc != SQLITE_DONE) {
		store_sql_fail(s, err, "cannot retry a dead letter");
		sqlite3_reset(st);
		goto fail;
	}
	sqlite3_reset(st);
	changes = sqlite3_changes(s->db);
	if (changes == 0) {
		st = store_stmt(s, ST_RETRY_PENDING, err);
		if (!st)
			goto fail;
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_int64(st, 2, now_ms);
		if (store_write_one(s, st, err, "cannot reschedule a delivery", &changes) < 0)
			goto fail;
	}
	if (store_tx_commit(s, err) < 0)
		goto fail;
	pthread_mutex_unlock(&s->mu);
	return changes ? STORE_RETRY_DONE : STORE_RETRY_NOT_FOUND;
fail:
	store_tx_abort(s);
	pthread_mutex_unlock(&s->mu);
	return -1;
}

/* A change to many rows is made STORE_BULK_ROWS rows at a time, each batch
 * a transaction of its own, with a pause as long as the batch took (at most
 * STORE_BULK_PAUSE_MS) before the next: `serve`'s writer waits for one batch
 * at most, not for the whole change (a retry of 200,000 dead letters held the
 * posts back 4.4 s, near the 5 s after which they are refused). */
#define STORE_BULK_ROWS     500
#define STORE_BULK_PAUSE_MS 50

/* change_sql: FILTER_WHERE and "AND d.id > ?5 AND d.id <= ?6", ?4 = now_ms.
 * The rows matching f in *ret_matched, those changed in *ret_changed (both
 * counting the batches done when it fails). */
static int bulk_change(struct store *s, const struct store_filter *f, const char *change_sql,
		       int64_t now_ms, int64_t *ret_matched, int64_t *ret_changed,
		       struct bridge_error *err, const char *what)
{
	static const char range_sql[] = "SELECT MAX(id), COUNT(*) FROM (SELECT d.id FROM"
					" deliveries AS d" FILTER_WHERE
					" AND d.id > ?5 ORDER BY d.id LIMIT ?6)";
	sqlite3_stmt *range = NULL, *change = NULL;
	int64_t after = 0;
	int rc = -1;

	*ret_matched = *ret_changed = 0;
	pthread_mutex_lock(&s->mu);
	if (sqlite3_prepare_v2(s->db, range_sql, -1, &range, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(s->db, change_sql, -1, &change, NULL) != SQLITE_OK) {
		store_sql_fail(s, err, what);
		goto out;
	}
	for (;;) {
		int64_t t0 = clock_mono_ms(), hi, n, changes = 0, pause;

		if (store_tx_begin(s, err) < 0)
			goto out;
		sqlite3_reset(range);
		filter_bind(range, f);
		sqlite3_bind_int64(range, 5, after);
		sqlite3_bind_int64(range, 6, STORE_BULK_ROWS);
		if (sqlite3_step(range) != SQLITE_ROW) {
			store_sql_fail(s, err, what);
			store_tx_abort(s);
			goto out;
		}
		hi = sqlite3_column_int64(range, 0);
		n = sqlite3_column_int64(range, 1);
		sqlite3_reset(range);
		if (n > 0) {
			sqlite3_reset(change);
			filter_bind(change, f);
			sqlite3_bind_int64(change, 4, now_ms);
			sqlite3_bind_int64(change, 5, after);
			sqlite3_bind_int64(change, 6, hi);
			if (store_write_one(s, change, err, what, &changes) < 0) {
				store_tx_abort(s);
				goto out;
			}
		}
		if (store_tx_commit(s, err) < 0) {
			store_tx_abort(s);
			goto out;
		}
		*ret_matched += n;
		*ret_changed += changes;
		after = hi;
		if (n < STORE_BULK_ROWS)
			break;
		pthread_mutex_unlock(&s->mu);
		pause = clock_mono_ms() - t0;
		usleep((useconds_t)(pause < 1                     ? 1
				    : pause > STORE_BULK_PAUSE_MS ? STORE_BULK_PAUSE_MS
								  : pause) *
		       1000);
		pthread_mutex_lock(&s->mu);
	}
	rc = 0;
out:
	sqlite3_finalize(range);
	sqlite3_finalize(change);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

int store_retry_dead(struct store *s, const struct store_filter *f, int64_t now_ms, int64_t *ret_n,
		     int64_t *ret_skipped, struct bridge_error *err)
{
	if (s->pg)
		return store_pg_retry_dead(s->pg, f, now_ms, ret_n, ret_skipped, err);
	static const char retry_sql[] =
		"UPDATE OR IGNORE deliveries AS d SET status = 0,"
		" attempts = 0, since_ms = ?4, next_attempt_ms = ?4" FILTER_WHERE
		" AND d.id > ?5 AND d.id <= ?6";
	struct store_filter dead = *f;
	int64_t matched = 0;
	int rc;

	dead.status = STORE_DEAD;
	rc = bulk_change(s, &dead, retry_sql, now_ms, &matched, ret_n, err,
			 "cannot retry dead letters");
	*ret_skipped = matched - *ret_n;
	return rc;
}

int store_purge_id(struct store *s, int64_t id, struct bridge_error *err)
{
	if (s->pg)
		return store_pg_purge_id(s->pg, id, err);
	sqlite3_stmt *st;
	int64_t changes = 0;
	int rc;

	pthread_mutex_lock(&s->mu);
	st = store_stmt(s, ST_PURGE_ID, err);
	if (!st) {
		pthread_mutex_unlock(&s->mu);
		return -1;
	}
	sqlite3_bind_int64(st, 1, id);
	rc = store_write_one(s, st, err, "cannot purge a delivery", &changes);
	pthread_mutex_unlock(&s->mu);
	return rc < 0 ? -1 : changes ? 0 : 1;
}

int store_purge(struct store *s, const struct store_filter *f, int64_t *ret_n,
		struct bridge_error *err)
{
	if (s->pg)
		return store_pg_purge(s->pg, f, ret_n, err);
	static const char sql[] = "DELETE FROM deliveries AS d" FILTER_WHERE
				  " AND d.id > ?5 AND d.id <= ?6";
	int64_t matched = 0;

	return bulk_change(s, f, sql, 0, &matched, ret_n, err, "cannot purge deliveries");
}

const char *store_row_integrity_name(int integrity)
{
	return integrity == STORE_ROW_INTACT    ? "intact"
	       : integrity == STORE_ROW_CORRUPT ? "corrupt"
						: "unchecked";
}
