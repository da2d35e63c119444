/*
 * store_pg_cutover: the cutover state of dual routes, shared by the bridges.
 */

#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "store_pg_types.h"

/* ------------------------------------------------------------------ */
/* the shared cutover state */

int store_pg_cutover_load(struct store_pg *p,
			  int (*cb)(const char *route, int ramp, int status, long long changed_ms,
				    const char *by, void *arg),
			  void *arg, struct bridge_error *err)
{
	PGresult *r = pg_query(
		p, "SELECT route, ramp, status, changed_ms, changed_by FROM cutover_state", NULL,
		err, "cannot read the cutover state");
	int rc = 0;

	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r) && rc == 0; i++)
		rc = cb(PQgetvalue(r, i, 0), (int)pg_get_i64(r, i, 1), (int)pg_get_i64(r, i, 2),
			pg_get_i64(r, i, 3), PQgetvalue(r, i, 4), arg);
	PQclear(r);
	return rc;
}

int store_pg_cutover_put(struct store_pg *p, const char *route, int ramp, int status,
			 long long changed_ms, const char *by, int only_if_absent,
			 int *ret_inserted, struct bridge_error *err)
{
	static const char put_sql[] =
		"INSERT INTO cutover_state (route, ramp, status, changed_ms, changed_by, seq)"
		" VALUES ($1, $2, $3, $4, $5, nextval('cutover_seq'))";
	char sql[512];
	struct pg_params q = { 0 };
	PGresult *r;

	if (ret_inserted)
		*ret_inserted = 0;
	snprintf(sql, sizeof(sql), "%s %s RETURNING 1", put_sql,
		 only_if_absent ? "ON CONFLICT (route) DO NOTHING"
				: "ON CONFLICT (route) DO UPDATE SET ramp = EXCLUDED.ramp,"
				  " status = EXCLUDED.status, changed_ms = EXCLUDED.changed_ms,"
				  " changed_by = EXCLUDED.changed_by, seq = EXCLUDED.seq");
	pg_par_text(&q, route);
	pg_par_int(&q, ramp);
	pg_par_int(&q, status);
	pg_par_int(&q, changed_ms);
	pg_par_text(&q, by);
	r = pg_query(p, sql, &q, err, "cannot store the cutover state");
	if (!r)
		return -1;
	if (ret_inserted)
		*ret_inserted = PQntuples(r) > 0;
	PQclear(r);
	return 0;
}

int store_pg_cutover_version(struct store_pg *p, long long *ret, struct bridge_error *err)
{
	int64_t v = 0;
	int rc = pg_one_int(p, "SELECT COALESCE(MAX(seq), 0) FROM cutover_state", NULL, &v, err,
			    "cannot read the cutover state's version");

	*ret = v;
	return rc;
}
