/*
 * store_pg_operator: the queue command on the PostgreSQL store: list, show,
 * retry and purge, also while bridges run (each a short transaction).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "store_pg_types.h"

/* ------------------------------------------------------------------ */
/* operator commands */

#define FILTER_WHERE                                                                        \
	" WHERE ($1::int < 0 OR d.status = $1::int) AND ($2::text IS NULL OR d.route = $2)" \
	" AND ($3::bigint = 0 OR d.created_ms < $3::bigint)"

static void filter_bind(struct pg_params *q, const struct store_filter *f)
{
	pg_par_int(q, f->status);
	pg_par_text(q, f->route);
	pg_par_int(q, f->created_before);
}

int store_pg_list(struct store_pg *p, const struct store_filter *f,
		  int (*cb)(const struct store_row *row, void *arg), void *arg,
		  struct bridge_error *err)
{
	static const char asc[] = "SELECT " ROW_COLUMNS " FROM deliveries AS d" FILTER_WHERE
				  " ORDER BY d.id LIMIT $4";
	static const char desc[] = "SELECT " ROW_COLUMNS " FROM deliveries AS d" FILTER_WHERE
				   " ORDER BY d.id DESC LIMIT $4";
	struct pg_params q = { 0 };
	struct store_row row;
	PGresult *r;
	int ret = 0;

	filter_bind(&q, f);
	if (f->limit > 0)
		pg_par_int(&q, f->limit);
	else
		pg_par_text(&q, NULL);
	r = pg_query(p, f->newest_first ? desc : asc, &q, err, "cannot list deliveries");
	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r); i++) {
		int stop;

		if (pg_row_read(r, i, &row) < 0) {
			ret = bridge_error_set(err, "out of memory");
			break;
		}
		stop = cb(&row, arg);
		store_row_clear(&row);
		if (stop)
			break;
	}
	PQclear(r);
	return ret;
}

int store_pg_get(struct store_pg *p, int64_t id, struct store_row *ret, struct bridge_error *err)
{
	struct pg_params q = { 0 };
	PGresult *r;
	int out;

	memset(ret, 0, sizeof(*ret));
	pg_par_int(&q, id);
	r = pg_query(p, "SELECT " ROW_COLUMNS " FROM deliveries AS d WHERE d.id = $1", &q, err,
		     "cannot read a delivery");
	if (!r)
		return -1;
	if (PQntuples(r) == 0)
		out = 1;
	else
		out = pg_row_read(r, 0, ret) < 0 ? bridge_error_set(err, "out of memory") : 0;
	PQclear(r);
	return out;
}

int store_pg_retry(struct store_pg *p, int64_t id, int64_t now_ms, struct bridge_error *err)
{
	struct pg_params q = { 0 };
	struct pg_conn *pc;
	int64_t changes = 0;
	char state[6] = "";
	int rc = -1;

	pg_par_int(&q, id);
	pg_par_int(&q, now_ms);
	if (!(pc = pg_conn_take(p, err)))
		return -1;
	if (pg_tx(p, pc, "BEGIN", err) < 0)
		goto out;
	if (pg_run_cmd(p, pc,
		       "UPDATE deliveries SET status = 0, attempts = 0, since_ms = $2,"
		       " next_attempt_ms = $2, lease_holder = '', lease_until = 0"
		       " WHERE id = $1 AND status = 1",
		       &q, err, "cannot retry a dead letter", &changes, state) < 0) {
		if (strcmp(state, "23505") == 0)
			rc = STORE_RETRY_DUPLICATE;
		goto out;
	}
	if (changes == 0 &&
	    pg_run_cmd(p, pc,
		       "UPDATE deliveries SET next_attempt_ms = $2 WHERE id = $1 AND status = 0",
		       &q, err, "cannot reschedule a delivery", &changes, NULL) < 0)
		goto out;
	if (pg_notify_commit(p, pc, err) < 0)
		goto out;
	rc = changes ? STORE_RETRY_DONE : STORE_RETRY_NOT_FOUND;
out:
	pg_conn_give(p, pc);
	return rc;
}

int store_pg_retry_dead(struct store_pg *p, const struct store_filter *f, int64_t now_ms,
			int64_t *ret_n, int64_t *ret_skipped, struct bridge_error *err)
{
	/* one dead letter per (route, participation, state) whose key no
	 * pending row holds; the others stay dead */
	static const char retry_sql[] =
		"UPDATE deliveries SET status = 0, attempts = 0, since_ms = $4,"
		" next_attempt_ms = $4, lease_holder = '', lease_until = 0"
		" WHERE id IN (SELECT DISTINCT ON (d.route, d.participation_id, d.state,"
		" CASE WHEN d.participation_id = '' THEN d.id ELSE 0 END) d.id"
		" FROM deliveries AS d" FILTER_WHERE " AND (d.participation_id = ''"
		" OR NOT EXISTS (SELECT 1 FROM deliveries AS p WHERE p.status = 0"
		" AND p.route = d.route AND p.participation_id = d.participation_id"
		" AND p.state = d.state))"
		" ORDER BY d.route, d.participation_id, d.state,"
		" CASE WHEN d.participation_id = '' THEN d.id ELSE 0 END, d.id)";
	struct store_filter dead = *f;
	struct pg_params q = { 0 };
	struct pg_conn *pc;
	PGresult *r;
	int64_t before = 0, changes = 0;
	int rc = -1;

	*ret_n = 0;
	*ret_skipped = 0;
	dead.status = STORE_DEAD;
	filter_bind(&q, &dead);
	if (!(pc = pg_conn_take(p, err)))
		return -1;
	if (pg_tx(p, pc, "BEGIN", err) < 0)
		goto out;
	r = pg_run(p, pc, "SELECT COUNT(*) FROM deliveries AS d" FILTER_WHERE, &q, PGRES_TUPLES_OK,
		   err, "cannot count dead letters", NULL);
	if (!r)
		goto out;
	before = pg_get_i64(r, 0, 0);
	PQclear(r);
	pg_par_int(&q, now_ms);
	if (pg_run_cmd(p, pc, retry_sql, &q, err, "cannot retry dead letters", &changes, NULL) <
		    0 ||
	    pg_notify_commit(p, pc, err) < 0)
		goto out;
	*ret_n = changes;
	*ret_skipped = before - changes;
	rc = 0;
out:
	pg_conn_give(p, pc);
	return rc;
}

int store_pg_purge_id(struct store_pg *p, int64_t id, struct bridge_error *err)
{
	struct pg_params q = { 0 };
	int64_t changes = 0;
	int rc;

	pg_par_int(&q, id);
	rc = pg_write(p, "DELETE FROM deliveries WHERE id = $1", &q, err, "cannot purge a delivery",
		      &changes);
	return rc < 0 ? -1 : changes ? 0 : 1;
}

int store_pg_purge(struct store_pg *p, const struct store_filter *f, int64_t *ret_n,
		   struct bridge_error *err)
{
	struct pg_params q = { 0 };

	*ret_n = 0;
	filter_bind(&q, f);
	return pg_write(p, "DELETE FROM deliveries AS d" FILTER_WHERE, &q, err,
			"cannot purge deliveries", ret_n);
}
