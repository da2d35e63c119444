/*
 * store_pg_queue: the queue's rows on PostgreSQL: inserts (one transaction
 * per batch), claims under leases, renewals, outcomes only the holder may
 * write, and the counts behind stats, readiness and metrics.
 */

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "store_pg_types.h"

#define PG_INSERT_TRIES 3 /* a deadlock between two batches: the loser tries again */

/* ------------------------------------------------------------------ */
/* insert */

static const char insert_sql[] =
	"INSERT INTO deliveries (route, endpoint, ca_file, timeout_ms, delivery_id,"
	" participation_id, state, headers, body, created_ms, since_ms, next_attempt_ms,"
	" checksum) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $10, $11)"
	" ON CONFLICT (route, participation_id, state) WHERE status = 0 AND participation_id <> ''"
	" DO NOTHING RETURNING id";
static const char dup_sql[] = "SELECT id, delivery_id FROM deliveries WHERE status = 0"
			      " AND participation_id <> '' AND route = $1"
			      " AND participation_id = $2 AND state = $3";

/* The row's id (column 0) and delivery id into rcpt; clears r; returns
 * result. */
static int receipt_take(PGresult *r, const char *delivery_id, struct store_receipt *rcpt,
			int result)
{
	if (rcpt) {
		rcpt->id = pg_get_i64(r, 0, 0);
		snprintf(rcpt->delivery_id, sizeof(rcpt->delivery_id), "%s", delivery_id);
	}
	PQclear(r);
	return result;
}

/* 0 inserted, 1 duplicate (receipt of the pending row), -1 error. */
static int insert_one(struct store_pg *p, struct pg_conn *pc, const struct store_item *it,
		      int64_t now_ms, const struct store_seal *seal, struct store_receipt *rcpt,
		      char *state, struct bridge_error *err)
{
	const char *ht = seal->headers_text;
	const unsigned char *sum = seal->checksum;

	for (int tries = 0; tries < 3; tries++) {
		struct pg_params q = { 0 };
		PGresult *r;

		pg_par_text(&q, it->route);
		pg_par_text(&q, it->endpoint);
		pg_par_text(&q, pg_nz(it->ca_file));
		pg_par_int(&q, it->timeout_ms);
		pg_par_text(&q, it->delivery_id);
		pg_par_bytes(&q, pg_nz(it->participation_id), strlen(pg_nz(it->participation_id)));
		pg_par_bytes(&q, pg_nz(it->state), strlen(pg_nz(it->state)));
		pg_par_bytes(&q, ht, strlen(ht));
		pg_par_bytes(&q, it->body, it->len);
		pg_par_int(&q, now_ms);
		pg_par_bytes(&q, sum, STORE_CHECKSUM_LEN);
		r = pg_run(p, pc, insert_sql, &q, PGRES_TUPLES_OK, err, "cannot store the delivery",
			   state);
		if (!r)
			return -1;
		if (PQntuples(r) == 1)
			return receipt_take(r, it->delivery_id, rcpt, 0);
		PQclear(r);
		/* a pending row of the same participation and state holds the key */
		memset(&q, 0, sizeof(q));
		pg_par_text(&q, it->route);
		pg_par_bytes(&q, pg_nz(it->participation_id), strlen(pg_nz(it->participation_id)));
		pg_par_bytes(&q, pg_nz(it->state), strlen(pg_nz(it->state)));
		r = pg_run(p, pc, dup_sql, &q, PGRES_TUPLES_OK, err, "cannot look for a duplicate",
			   state);
		if (!r)
			return -1;
		if (PQntuples(r) == 1)
			return receipt_take(r, PQgetvalue(r, 0, 1), rcpt, 1);
		PQclear(r);
		/* it was delivered in between: insert again */
	}
	return bridge_error_set(err, "shared store %s: the duplicate check kept changing", p->name);
}

int store_pg_insert(struct store_pg *p, const struct store_item *const *items, size_t n,
		    int64_t now_ms, int *ret_results, struct store_receipt *receipts,
		    struct bridge_error *err)
{
	struct pg_conn *pc;
	char state[6] = "";
	int rc = -1;

	for (size_t i = 0; i < n; i++)
		if (store_item_check(items[i], err) < 0)
			return -1;
	if (n == 0)
		return 0;
	if (!(pc = pg_conn_take(p, err)))
		return -1;
	for (int attempt = 0; attempt < PG_INSERT_TRIES; attempt++) {
		size_t i;

		if (pg_tx(p, pc, "BEGIN", err) < 0)
			break;
		for (i = 0; i < n; i++) {
			struct store_seal tmp = { 0 };
			const struct store_seal *seal;
			int dup;

			if (store_seal_of(items[i], &tmp, &seal) < 0) {
				bridge_error_set(err, "out of memory");
				break;
			}
			dup = insert_one(p, pc, items[i], now_ms, seal,
					 receipts ? &receipts[i] : NULL, state, err);
			store_seal_clear(&tmp);
			if (dup < 0)
				break;
			if (ret_results)
				ret_results[i] = dup ? STORE_DUPLICATE : STORE_INSERTED;
		}
		if (i == n &&
		    pg_run_cmd(p, pc, "SELECT pg_notify('" PG_CHANNEL "', '')", NULL, err,
			       "cannot notify", NULL, state) == 0 &&
		    pg_run_cmd(p, pc, "COMMIT", NULL, err, "cannot commit", NULL, state) == 0) {
			rc = 0;
			break;
		}
		if (PQstatus(pc->c) == CONNECTION_OK)
			PQclear(PQexec(pc->c, "ROLLBACK"));
		/* deadlock (two batches waiting on each other's keys) or
		 * serialization failure: nothing was stored, try again */
		if (strcmp(state, "40P01") != 0 && strcmp(state, "40001") != 0)
			break;
	}
	pg_conn_give(p, pc);
	return rc;
}

/* ------------------------------------------------------------------ */
/* scheduler */

int store_pg_lanes(struct store_pg *p, size_t max, struct store_lane **ret, size_t *ret_n,
		   struct bridge_error *err)
{
	struct pg_params q = { 0 };
	struct store_lane *l;
	PGresult *r;
	size_t n;

	*ret = NULL;
	*ret_n = 0;
	pg_par_int(&q, (int64_t)max);
	r = pg_query(p,
		     "SELECT DISTINCT endpoint, ca_file FROM deliveries WHERE status = 0 LIMIT $1",
		     &q, err, "cannot list lanes");
	if (!r)
		return -1;
	n = (size_t)PQntuples(r);
	l = calloc(n ? n : 1, sizeof(*l));
	if (!l) {
		PQclear(r);
		return bridge_error_set(err, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		l[i].endpoint = pg_get_text(r, (int)i, 0);
		l[i].ca_file = pg_get_text(r, (int)i, 1);
		if (!l[i].endpoint || !l[i].ca_file) {
			PQclear(r);
			store_lanes_free(l, i + 1);
			return bridge_error_set(err, "out of memory");
		}
	}
	PQclear(r);
	*ret = l;
	*ret_n = n;
	return 0;
}

/* The due heads of participation lines that no live lease holds, claimed
 * in one statement: locked rows are skipped, not waited for.  Its commit
 * does not wait for the WAL flush (synchronous_commit off for this
 * transaction alone, s): a claim PostgreSQL loses in a crash only makes the
 * row claimable again, which at least once allows, and the attempt's
 * outcome, committed durably, flushes the claim before it anyway. */
static const char claim_sql[] =
	"WITH s AS (SELECT set_config('synchronous_commit', 'off', true)),"
	" c AS (SELECT d.id FROM deliveries AS d"
	" WHERE d.status = 0 AND d.endpoint = $1 AND d.ca_file = $2 AND d.next_attempt_ms <= $3"
	" AND d.lease_until < webhook_bridge_now_ms()"
	" AND NOT EXISTS (SELECT 1 FROM deliveries AS p WHERE p.status = 0"
	" AND p.participation_id <> '' AND p.route = d.route"
	" AND p.participation_id = d.participation_id AND p.id < d.id)"
	" ORDER BY d.next_attempt_ms, d.id LIMIT $4 FOR UPDATE OF d SKIP LOCKED)"
	" UPDATE deliveries AS d SET lease_holder = $5,"
	" lease_until = webhook_bridge_now_ms() + $6"
	" FROM c, s WHERE d.id = c.id RETURNING " ROW_COLUMNS;

static int row_order(const void *a, const void *b)
{
	const struct store_row *x = a, *y = b;

	if (x->next_attempt_ms != y->next_attempt_ms)
		return x->next_attempt_ms < y->next_attempt_ms ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

int store_pg_due(struct store_pg *p, const char *endpoint, const char *ca_file, int64_t now_ms,
		 struct store_row *rows, size_t max, size_t *ret_n, struct bridge_error *err)
{
	struct pg_params q = { 0 };
	PGresult *r;
	size_t n;

	*ret_n = 0;
	if (max == 0)
		return 0;
	pg_par_text(&q, endpoint);
	pg_par_text(&q, pg_nz(ca_file));
	pg_par_int(&q, now_ms);
	pg_par_int(&q, (int64_t)max);
	pg_par_text(&q, p->holder);
	pg_par_int(&q, p->lease_ms);
	r = pg_query(p, claim_sql, &q, err, "cannot claim due deliveries");
	if (!r)
		return -1;
	n = (size_t)PQntuples(r);
	if (n > max)
		n = max;
	for (size_t i = 0; i < n; i++) {
		if (pg_row_read(r, (int)i, &rows[i]) < 0) {
			/* the claimed rows come back when their lease expires */
			for (size_t j = 0; j < i; j++)
				store_row_clear(&rows[j]);
			PQclear(r);
			return bridge_error_set(err, "out of memory");
		}
	}
	PQclear(r);
	qsort(rows, n, sizeof(*rows), row_order);
	*ret_n = n;
	return 0;
}

int store_pg_next_wake(struct store_pg *p, const char *endpoint, const char *ca_file,
		       int64_t after_ms, int64_t *ret, struct bridge_error *err)
{
	struct pg_params q = { 0 };

	pg_par_text(&q, endpoint);
	pg_par_text(&q, pg_nz(ca_file));
	pg_par_int(&q, after_ms);
	return pg_one_int(
		p,
		"SELECT COALESCE(MIN(next_attempt_ms), 0) FROM deliveries WHERE status = 0"
		" AND endpoint = $1 AND ca_file = $2 AND next_attempt_ms > $3",
		&q, ret, err, "cannot read the next attempt time");
}

static const char delivered_sql[] =
	"DELETE FROM deliveries WHERE id = $1 AND status = 0 AND lease_holder IN ($2, '')";
static const char failed_sql[] =
	"UPDATE deliveries SET attempts = $2 + 1, last_attempt_ms = $3, next_attempt_ms = $4,"
	" last_status = $5, last_error = $6, lease_holder = '', lease_until = 0"
	" WHERE id = $1 AND status = 0 AND attempts = $2 AND lease_holder IN ($7, '')";
static const char dead_sql[] =
	"UPDATE deliveries SET status = 1, attempts = $2 + $3,"
	" last_attempt_ms = CASE WHEN $3 <> 0 THEN $4 ELSE last_attempt_ms END,"
	" last_status = $5, last_error = $6, lease_holder = '', lease_until = 0"
	" WHERE id = $1 AND status = 0 AND attempts = $2 AND lease_holder IN ($7, '')";

static int outcome_run(struct store_pg *p, struct pg_conn *pc, const struct store_outcome *o,
		       struct bridge_error *err)
{
	struct pg_params q = { 0 };
	const char *e = pg_nz(o->last_error);

	pg_par_int(&q, o->id);
	if (o->kind == STORE_OUT_DELIVERED) {
		pg_par_text(&q, p->holder);
		return pg_run_cmd(p, pc, delivered_sql, &q, err, "cannot record a delivery", NULL,
				  NULL);
	}
	pg_par_int(&q, o->attempts_before);
	if (o->kind == STORE_OUT_FAILED) {
		pg_par_int(&q, o->now_ms);
		pg_par_int(&q, o->next_attempt_ms);
	} else {
		pg_par_int(&q, o->attempted ? 1 : 0);
		pg_par_int(&q, o->now_ms);
	}
	pg_par_int(&q, o->last_status);
	pg_par_bytes(&q, e, strlen(e));
	pg_par_text(&q, p->holder);
	return pg_run_cmd(p, pc, o->kind == STORE_OUT_FAILED ? failed_sql : dead_sql, &q, err,
			  o->kind == STORE_OUT_FAILED ? "cannot record a failed attempt"
						      : "cannot record a dead letter",
			  NULL, NULL);
}

int store_pg_apply(struct store_pg *p, const struct store_outcome *o, size_t n,
		   struct bridge_error *err)
{
	struct pg_conn *pc;
	size_t i;
	int rc = -1;

	if (n == 0)
		return 0;
	if (!(pc = pg_conn_take(p, err)))
		return -1;
	if (pg_tx(p, pc, "BEGIN", err) < 0)
		goto out;
	for (i = 0; i < n; i++)
		if (outcome_run(p, pc, &o[i], err) < 0)
			goto out;
	/* a line may have moved on: whoever can take its next row hears it */
	if (pg_notify_commit(p, pc, err) < 0)
		goto out;
	rc = 0;
out:
	pg_conn_give(p, pc);
	return rc;
}

int store_pg_renew(struct store_pg *p, const int64_t *ids, size_t n, size_t *ret_renewed,
		   struct bridge_error *err)
{
	struct pg_conn *pc;
	struct pg_params q = { 0 };
	char *list, *w;
	int64_t changes = 0;
	int rc;

	if (ret_renewed)
		*ret_renewed = 0;
	if (n == 0)
		return 0;
	list = malloc(n * 22 + 3);
	if (!list)
		return bridge_error_set(err, "out of memory");
	w = list;
	*w++ = '{';
	for (size_t i = 0; i < n; i++)
		w += sprintf(w, "%s%" PRId64, i ? "," : "", ids[i]);
	*w++ = '}';
	*w = '\0';
	if (!(pc = pg_conn_take(p, err))) {
		free(list);
		return -1;
	}
	pg_par_text(&q, p->holder);
	pg_par_int(&q, p->lease_ms);
	pg_par_text(&q, list);
	rc = pg_run_cmd(p, pc,
			"UPDATE deliveries SET lease_until = webhook_bridge_now_ms() + $2"
			" WHERE lease_holder = $1 AND status = 0 AND id = ANY($3::bigint[])",
			&q, err, "cannot renew leases", &changes, NULL);
	pg_conn_give(p, pc);
	free(list);
	if (rc == 0 && ret_renewed)
		*ret_renewed = (size_t)changes;
	return rc;
}

int store_pg_release(struct store_pg *p, struct bridge_error *err)
{
	struct pg_params q = { 0 };

	pg_par_text(&q, p->holder);
	return pg_write(p,
			"UPDATE deliveries SET lease_holder = '', lease_until = 0"
			" WHERE lease_holder = $1 AND status = 0",
			&q, err, "cannot release leases", NULL);
}

int store_pg_count(struct store_pg *p, struct store_counts *ret, struct bridge_error *err)
{
	PGresult *r;

	memset(ret, 0, sizeof(*ret));
	r = pg_query(p,
		     "SELECT status, COUNT(*), COALESCE(MIN(created_ms), 0) FROM deliveries"
		     " GROUP BY status",
		     NULL, err, "cannot count deliveries");
	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r); i++) {
		if (pg_get_i64(r, i, 0) == STORE_PENDING) {
			ret->pending = pg_get_i64(r, i, 1);
			ret->oldest_created_ms = pg_get_i64(r, i, 2);
		} else if (pg_get_i64(r, i, 0) == STORE_DEAD) {
			ret->dead = pg_get_i64(r, i, 1);
		}
	}
	PQclear(r);
	return 0;
}

int store_pg_count_routes(struct store_pg *p,
			  int (*cb)(const struct store_route_counts *c, void *arg), void *arg,
			  struct bridge_error *err)
{
	struct store_route_counts c;
	PGresult *r;
	int stop = 0, rows;

	r = pg_query(p,
		     "SELECT route, status, COUNT(*), COALESCE(MIN(created_ms), 0) FROM deliveries"
		     " GROUP BY route, status ORDER BY route, status",
		     NULL, err, "cannot count deliveries per route");
	if (!r)
		return -1;
	rows = PQntuples(r);
	memset(&c, 0, sizeof(c));
	for (int i = 0; i < rows && !stop; i++) {
		const char *route = PQgetvalue(r, i, 0);

		if (c.route && strcmp(c.route, route) != 0) {
			stop = cb(&c, arg);
			memset(&c, 0, sizeof(c));
		}
		c.route = route;
		if (pg_get_i64(r, i, 1) == STORE_PENDING) {
			c.pending = pg_get_i64(r, i, 2);
			c.oldest_created_ms = pg_get_i64(r, i, 3);
		} else {
			c.dead = pg_get_i64(r, i, 2);
		}
	}
	if (!stop && c.route)
		stop = cb(&c, arg);
	PQclear(r);
	return stop;
}

int store_pg_oldest(struct store_pg *p, int64_t *ret, struct bridge_error *err)
{
	return pg_one_int(p, "SELECT COALESCE(MIN(created_ms), 0) FROM deliveries WHERE status = 0",
			  NULL, ret, err, "cannot read the oldest delivery");
}
