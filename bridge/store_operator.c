/*
 * store_operator: what the queue command does to a store while serve may be
 * running: list and show rows, retry, purge (SQLite; the PostgreSQL engine's
 * are in store_pg.c).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <sqlite3.h>

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

int store_retry_dead(struct store *s, const struct store_filter *f, int64_t now_ms, int64_t *ret_n,
		     int64_t *ret_skipped, struct bridge_error *err)
{
	if (s->pg)
		return store_pg_retry_dead(s->pg, f, now_ms, ret_n, ret_skipped, err);
	static const char count_sql[] = "SELECT COUNT(*) FROM deliveries AS d" FILTER_WHERE;
	static const char retry_sql[] =
		"UPDATE OR IGNORE deliveries AS d SET status = 0,"
		" attempts = 0, since_ms = ?4, next_attempt_ms = ?4" FILTER_WHERE;
	struct store_filter dead = *f;
	sqlite3_stmt *st = NULL;
	int64_t before = 0, changes = 0;

	*ret_n = 0;
	*ret_skipped = 0;
	dead.status = STORE_DEAD;
	pthread_mutex_lock(&s->mu);
	if (store_tx_begin(s, err) < 0)
		goto fail;
	if (sqlite3_prepare_v2(s->db, count_sql, -1, &st, NULL) != SQLITE_OK) {
		store_sql_fail(s, err, "cannot count dead letters");
		goto fail;
	}
	filter_bind(st, &dead);
	if (store_step_int(s, st, &before, err, "cannot count dead letters") < 0)
		goto fail;
	sqlite3_finalize(st);
	st = NULL;
	if (sqlite3_prepare_v2(s->db, retry_sql, -1, &st, NULL) != SQLITE_OK) {
		store_sql_fail(s, err, "cannot retry dead letters");
		goto fail;
	}
	filter_bind(st, &dead);
	sqlite3_bind_int64(st, 4, now_ms);
	if (store_write_one(s, st, err, "cannot retry dead letters", &changes) < 0)
		goto fail;
	sqlite3_finalize(st);
	st = NULL;
	if (store_tx_commit(s, err) < 0)
		goto fail;
	pthread_mutex_unlock(&s->mu);
	*ret_n = changes;
	*ret_skipped = before - changes;
	return 0;
fail:
	sqlite3_finalize(st);
	store_tx_abort(s);
	pthread_mutex_unlock(&s->mu);
	return -1;
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
	static const char sql[] = "DELETE FROM deliveries AS d" FILTER_WHERE;
	sqlite3_stmt *st;
	int rc;

	*ret_n = 0;
	pthread_mutex_lock(&s->mu);
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
		store_sql_fail(s, err, "cannot purge deliveries");
		pthread_mutex_unlock(&s->mu);
		return -1;
	}
	filter_bind(st, f);
	rc = store_write_one(s, st, err, "cannot purge deliveries", ret_n);
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

const char *store_row_integrity_name(int integrity)
{
	return integrity == STORE_ROW_INTACT    ? "intact"
	       : integrity == STORE_ROW_CORRUPT ? "corrupt"
						: "unchecked";
}
