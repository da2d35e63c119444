/*
 * store_pg_shadow: the dry-run shadow store shared by the bridges: offers
 * under a per-key advisory lock (each pair compared once), the totals, and
 * the expiry sweep one bridge at a time.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "store_pg_types.h"

#define PG_SHADOW_LOCK 0x5748 /* advisory locks of the shadow keys: (this, key hash) */

/* ------------------------------------------------------------------ */
/* the shared shadow store */

#define SHADOW_COLUMNS                                                                      \
	"route, side, participation_id, state, instance, body, body_len, too_large, trace," \
	" trace_dropped, webhook_bridge_now_ms() - arrived_ms"

static int shadow_entry_read(const PGresult *r, int i, struct store_shadow_entry *e)
{
	memset(e, 0, sizeof(*e));
	e->present = 1;
	e->route = pg_get_text(r, i, 0);
	e->side = (int)pg_get_i64(r, i, 1);
	e->participation_id = pg_get_bytes(r, i, 2, NULL);
	e->state = pg_get_bytes(r, i, 3, NULL);
	e->instance = pg_get_text(r, i, 4);
	e->body = pg_get_bytes(r, i, 5, &e->len);
	e->body_len = pg_get_i64(r, i, 6);
	e->too_large = strcmp(PQgetvalue(r, i, 7), "t") == 0;
	if (!PQgetisnull(r, i, 8))
		e->trace = pg_get_bytes(r, i, 8, &e->trace_len);
	e->trace_dropped = strcmp(PQgetvalue(r, i, 9), "t") == 0;
	e->age_ms = pg_get_i64(r, i, 10);
	if (e->age_ms < 0)
		e->age_ms = 0;
	if (!e->route || !e->participation_id || !e->state || !e->instance || !e->body ||
	    (!PQgetisnull(r, i, 8) && !e->trace)) {
		store_shadow_entry_clear(e);
		return -1;
	}
	return 0;
}

/* Counters in the open transaction: name += n for each. */
static int shadow_bump(struct store_pg *p, struct pg_conn *pc, const char *const *names,
		       const long long *n, size_t k, struct bridge_error *err)
{
	for (size_t i = 0; i < k; i++) {
		struct pg_params q = { 0 };

		if (!n[i])
			continue;
		pg_par_text(&q, names[i]);
		pg_par_int(&q, n[i]);
		if (pg_run_cmd(
			    p, pc,
			    "INSERT INTO shadow_counts (name, n) VALUES ($1, $2) ON CONFLICT (name)"
			    " DO UPDATE SET n = shadow_counts.n + EXCLUDED.n",
			    &q, err, "cannot count", NULL, NULL) < 0)
			return -1;
	}
	return 0;
}

/* Take (delete and read) the waiting entry of the key and side; 1 found,
 * 0 none, -1 error. */
static int shadow_take(struct store_pg *p, struct pg_conn *pc, const struct store_shadow_offer *o,
		       int side, struct store_shadow_entry *e, struct bridge_error *err)
{
	struct pg_params q = { 0 };
	PGresult *r;
	int found;

	pg_par_text(&q, o->route);
	pg_par_bytes(&q, o->id_key, strlen(o->id_key));
	pg_par_bytes(&q, o->state_key, strlen(o->state_key));
	pg_par_int(&q, side);
	r = pg_run(p, pc,
		   "DELETE FROM shadow_waiting WHERE route = $1 AND participation_key = $2"
		   " AND state_key = $3 AND side = $4 RETURNING " SHADOW_COLUMNS,
		   &q, PGRES_TUPLES_OK, err, "cannot read the shadow store", NULL);
	if (!r)
		return -1;
	found = PQntuples(r) > 0;
	if (found && shadow_entry_read(r, 0, e) < 0) {
		PQclear(r);
		return bridge_error_set(err, "out of memory");
	}
	PQclear(r);
	return found;
}

int store_pg_shadow_offer(struct store_pg *p, const struct store_shadow_offer *o, long ttl_ms,
			  struct store_shadow_entry *ret_other,
			  struct store_shadow_entry *ret_expired, int *ret_duplicate,
			  struct bridge_error *err)
{
	static const char *const seen[2] = { "seen_translated", "seen_real" };
	static const char *const expired[2] = { "expired_ttl_translated", "expired_ttl_real" };
	const char *names[3];
	long long n[3] = { 1, 0, 0 };
	struct pg_params q = { 0 };
	struct store_shadow_entry mine_old;
	struct pg_conn *pc;
	PGresult *r;
	char lock[80];
	int other = !o->side, rc = -1, got;

	memset(ret_other, 0, sizeof(*ret_other));
	memset(ret_expired, 0, sizeof(*ret_expired));
	memset(&mine_old, 0, sizeof(mine_old));
	*ret_duplicate = 0;
	names[0] = seen[o->side ? 1 : 0];
	names[1] = "duplicates";
	if (!(pc = pg_conn_take(p, err)))
		return -1;
	snprintf(lock, sizeof(lock), "SELECT pg_advisory_xact_lock(%d, %d)", PG_SHADOW_LOCK,
		 (int)o->key_hash);
	if (pg_tx(p, pc, "BEGIN", err) < 0 || pg_tx(p, pc, lock, err) < 0)
		goto out;
	got = shadow_take(p, pc, o, other, ret_other, err);
	if (got < 0)
		goto out;
	if (got && ret_other->age_ms >= ttl_ms) {
		/* too old to match: reported expired, and this side waits */
		*ret_expired = *ret_other;
		memset(ret_other, 0, sizeof(*ret_other));
		names[2] = expired[other ? 1 : 0];
		n[2] = 1;
		got = 0;
	}
	if (!got) {
		/* a stale entry of this side is expired too; a fresh one is a duplicate */
		got = shadow_take(p, pc, o, o->side, &mine_old, err);
		if (got < 0)
			goto out;
		if (got && mine_old.age_ms >= ttl_ms && !ret_expired->present) {
			*ret_expired = mine_old;
			memset(&mine_old, 0, sizeof(mine_old));
			names[2] = expired[o->side ? 1 : 0];
			n[2] = 1;
		} else if (got) {
			*ret_duplicate = 1;
			n[1] = 1;
		}
		store_shadow_entry_clear(&mine_old);
		pg_par_text(&q, o->route);
		pg_par_bytes(&q, o->id_key, strlen(o->id_key));
		pg_par_bytes(&q, o->state_key, strlen(o->state_key));
		pg_par_int(&q, o->side);
		pg_par_bytes(&q, o->participation_id, strlen(o->participation_id));
		pg_par_bytes(&q, o->state, strlen(o->state));
		pg_par_bytes(&q, o->body, o->len);
		pg_par_int(&q, o->body_len);
		pg_par_text(&q, o->too_large ? "t" : "f");
		if (o->trace)
			pg_par_bytes(&q, o->trace, strlen(o->trace));
		else
			pg_par_text(&q, NULL);
		pg_par_text(&q, o->trace_dropped ? "t" : "f");
		pg_par_text(&q, p->instance);
		r = pg_run(
			p, pc,
			"INSERT INTO shadow_waiting (route, participation_key, state_key, side,"
			" participation_id, state, body, body_len, too_large, trace, trace_dropped,"
			" arrived_ms, instance) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
			" $11, webhook_bridge_now_ms(), $12)",
			&q, PGRES_COMMAND_OK, err, "cannot store a shadow entry", NULL);
		if (!r)
			goto out;
		PQclear(r);
	}
	if (shadow_bump(p, pc, names, n, 3, err) < 0 || pg_tx(p, pc, "COMMIT", err) < 0)
		goto out;
	rc = got;
out:
	pg_conn_give(p, pc);
	if (rc < 0) {
		store_shadow_entry_clear(ret_other);
		store_shadow_entry_clear(ret_expired);
		*ret_duplicate = 0;
	}
	return rc;
}

int store_pg_shadow_count(struct store_pg *p, const char *const *names, const long long *n,
			  size_t k, const struct store_shadow_path *paths, size_t n_paths,
			  struct bridge_error *err)
{
	struct pg_conn *pc;
	int rc = -1;

	if (!(pc = pg_conn_take(p, err)))
		return -1;
	if (pg_tx(p, pc, "BEGIN", err) < 0 || shadow_bump(p, pc, names, n, k, err) < 0)
		goto out;
	for (size_t i = 0; i < n_paths; i++) {
		const struct store_shadow_path *d = &paths[i];
		int unmapped = d->rule && strcmp(d->rule, "unmapped") == 0;
		struct pg_params q = { 0 };

		pg_par_text(&q, d->path);
		pg_par_int(&q, d->kind == 0);
		pg_par_int(&q, d->kind == 1);
		pg_par_int(&q, d->kind == 2);
		pg_par_int(&q, unmapped);
		if (pg_run_cmd(p, pc,
			       "INSERT INTO shadow_paths (path, count, added, removed, changed, "
			       "unmapped)"
			       " VALUES ($1, 1, $2, $3, $4, $5) ON CONFLICT (path) DO UPDATE SET"
			       " count = shadow_paths.count + 1,"
			       " added = shadow_paths.added + EXCLUDED.added,"
			       " removed = shadow_paths.removed + EXCLUDED.removed,"
			       " changed = shadow_paths.changed + EXCLUDED.changed,"
			       " unmapped = shadow_paths.unmapped + EXCLUDED.unmapped",
			       &q, err, "cannot count a differing path", NULL, NULL) < 0)
			goto out;
		if (!d->rule || unmapped)
			continue;
		memset(&q, 0, sizeof(q));
		pg_par_text(&q, d->path);
		pg_par_text(&q, d->rule);
		if (pg_run_cmd(
			    p, pc,
			    "INSERT INTO shadow_path_rules (path, rule, n) VALUES ($1, $2, 1)"
			    " ON CONFLICT (path, rule) DO UPDATE SET n = shadow_path_rules.n + 1",
			    &q, err, "cannot count a rule", NULL, NULL) < 0)
			goto out;
	}
	if (pg_tx(p, pc, "COMMIT", err) < 0)
		goto out;
	rc = 0;
out:
	pg_conn_give(p, pc);
	return rc;
}

int store_pg_shadow_totals(struct store_pg *p, size_t max_paths,
			   void (*count_cb)(const char *name, long long n, void *arg),
			   void (*path_cb)(const struct store_shadow_path_total *t, void *arg),
			   void *arg, long long waiting[2], struct bridge_error *err)
{
	struct pg_params q = { 0 };
	PGresult *r;

	waiting[0] = waiting[1] = 0;
	r = pg_query(p, "SELECT name, n FROM shadow_counts", NULL, err, "cannot read the totals");
	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r); i++)
		count_cb(PQgetvalue(r, i, 0), pg_get_i64(r, i, 1), arg);
	PQclear(r);
	r = pg_query(p, "SELECT side, COUNT(*) FROM shadow_waiting GROUP BY side", NULL, err,
		     "cannot count waiting entries");
	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r); i++)
		waiting[pg_get_i64(r, i, 0) ? 1 : 0] = pg_get_i64(r, i, 1);
	PQclear(r);
	pg_par_int(&q, (int64_t)max_paths);
	r = pg_query(
		p,
		"SELECT t.path, t.count, t.added, t.removed, t.changed, t.unmapped, b.rule, b.n"
		" FROM shadow_paths AS t LEFT JOIN LATERAL (SELECT rule, n FROM"
		" shadow_path_rules AS x WHERE x.path = t.path ORDER BY n DESC, rule LIMIT 1)"
		" AS b ON true ORDER BY t.count DESC, t.path LIMIT $1",
		&q, err, "cannot read the differing paths");
	if (!r)
		return -1;
	for (int i = 0; path_cb && i < PQntuples(r); i++) {
		struct store_shadow_path_total t = {
			.path = PQgetvalue(r, i, 0),
			.count = pg_get_i64(r, i, 1),
			.added = pg_get_i64(r, i, 2),
			.removed = pg_get_i64(r, i, 3),
			.changed = pg_get_i64(r, i, 4),
			.unmapped = pg_get_i64(r, i, 5),
			.rule = PQgetisnull(r, i, 6) ? NULL : PQgetvalue(r, i, 6),
			.rule_n = pg_get_i64(r, i, 7),
		};

		path_cb(&t, arg);
	}
	PQclear(r);
	return 0;
}

int store_pg_shadow_sweep(struct store_pg *p, long ttl_ms, size_t max_entries,
			  void (*cb)(const struct store_shadow_entry *e, const char *reason,
				     void *arg),
			  void *arg, int *ret_swept, struct bridge_error *err)
{
	static const char *const names[4] = { "expired_ttl_translated", "expired_ttl_real",
					      "expired_capacity_translated",
					      "expired_capacity_real" };
	long long n[4] = { 0 };
	struct pg_params q = { 0 };
	struct pg_conn *pc;
	PGresult *gone[2] = { NULL, NULL };
	char lock[80];
	int rc = -1;

	*ret_swept = 0;
	if (!(pc = pg_conn_take(p, err)))
		return -1;
	snprintf(lock, sizeof(lock), "SELECT pg_try_advisory_xact_lock(%d, 0)", PG_SHADOW_LOCK);
	if (pg_tx(p, pc, "BEGIN", err) < 0)
		goto out;
	gone[0] = pg_run(p, pc, lock, NULL, PGRES_TUPLES_OK, err, "cannot take the sweep lock",
			 NULL);
	if (!gone[0])
		goto out;
	if (strcmp(PQgetvalue(gone[0], 0, 0), "t") != 0) {
		rc = 0; /* another bridge sweeps now */
		goto out;
	}
	PQclear(gone[0]);
	pg_par_int(&q, ttl_ms);
	gone[0] = pg_run(
		p, pc,
		"DELETE FROM shadow_waiting WHERE arrived_ms <= webhook_bridge_now_ms() - $1"
		" RETURNING " SHADOW_COLUMNS,
		&q, PGRES_TUPLES_OK, err, "cannot expire shadow entries", NULL);
	if (!gone[0])
		goto out;
	memset(&q, 0, sizeof(q));
	pg_par_int(&q, (int64_t)max_entries);
	gone[1] = pg_run(
		p, pc,
		"DELETE FROM shadow_waiting WHERE (route, participation_key, state_key, side)"
		" IN (SELECT route, participation_key, state_key, side FROM shadow_waiting"
		" ORDER BY arrived_ms LIMIT GREATEST(0, (SELECT COUNT(*) FROM shadow_waiting)"
		" - $1)) RETURNING " SHADOW_COLUMNS,
		&q, PGRES_TUPLES_OK, err, "cannot evict shadow entries", NULL);
	if (!gone[1])
		goto out;
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < PQntuples(gone[k]); i++)
			n[2 * k + (pg_get_i64(gone[k], i, 1) ? 1 : 0)]++;
	if (shadow_bump(p, pc, names, n, 4, err) < 0 || pg_tx(p, pc, "COMMIT", err) < 0)
		goto out;
	*ret_swept = 1;
	rc = 0;
	for (int k = 0; k < 2; k++)
		for (int i = 0; cb && i < PQntuples(gone[k]); i++) {
			struct store_shadow_entry e;

			if (shadow_entry_read(gone[k], i, &e) == 0) {
				cb(&e, k ? "capacity" : "ttl", arg);
				store_shadow_entry_clear(&e);
			}
		}
out:
	PQclear(gone[0]);
	PQclear(gone[1]);
	pg_conn_give(p, pc);
	return rc;
}
