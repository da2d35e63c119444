/*
 * store_pg_schema: the PostgreSQL store's tables, their versions and the
 * migration that brings a database to this build's version.
 */

#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "store_pg_types.h"

#define PG_LOCK_KEY "5712368401" /* advisory lock of schema changes ("WHBQ") */

static const char *const schema_v1[] = {
	"CREATE TABLE deliveries ("
	" id bigserial PRIMARY KEY,"
	" status smallint NOT NULL DEFAULT 0,"
	" route text NOT NULL,"
	" endpoint text NOT NULL,"
	" ca_file text NOT NULL DEFAULT '',"
	" timeout_ms integer NOT NULL,"
	" delivery_id text NOT NULL,"
	" participation_id bytea NOT NULL DEFAULT '',"
	" state bytea NOT NULL DEFAULT '',"
	" headers bytea NOT NULL,"
	" body bytea NOT NULL,"
	" attempts integer NOT NULL DEFAULT 0,"
	" created_ms bigint NOT NULL,"
	" since_ms bigint NOT NULL,"
	" next_attempt_ms bigint NOT NULL,"
	" last_attempt_ms bigint NOT NULL DEFAULT 0,"
	" last_status integer NOT NULL DEFAULT 0,"
	" last_error bytea NOT NULL DEFAULT '',"
	" lease_holder text NOT NULL DEFAULT '',"
	" lease_until bigint NOT NULL DEFAULT 0)",
	"CREATE INDEX deliveries_due ON deliveries (endpoint, ca_file, next_attempt_ms)"
	" WHERE status = 0",
	"CREATE UNIQUE INDEX deliveries_line ON deliveries (route, participation_id, state)"
	" WHERE status = 0 AND participation_id <> ''",
	"CREATE INDEX deliveries_age ON deliveries (status, created_ms)",
	"CREATE FUNCTION webhook_bridge_now_ms() RETURNS bigint LANGUAGE sql VOLATILE"
	" AS 'SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint'",
	NULL,
};

/* Version 2: the dry-run shadow store shared by the bridges.  Keys as the
 * in-memory store makes them (route, id and state upper-cased, as bytes);
 * arrival in the database's clock. */
static const char *const schema_v2[] = {
	"CREATE TABLE shadow_waiting ("
	" route text NOT NULL,"
	" participation_key bytea NOT NULL,"
	" state_key bytea NOT NULL,"
	" side smallint NOT NULL,"
	" participation_id bytea NOT NULL,"
	" state bytea NOT NULL,"
	" body bytea NOT NULL,"
	" body_len bigint NOT NULL,"
	" too_large boolean NOT NULL,"
	" trace bytea,"
	" trace_dropped boolean NOT NULL,"
	" arrived_ms bigint NOT NULL,"
	" instance text NOT NULL,"
	" PRIMARY KEY (route, participation_key, state_key, side))",
	"CREATE INDEX shadow_waiting_age ON shadow_waiting (arrived_ms)",
	"CREATE TABLE shadow_counts (name text PRIMARY KEY, n bigint NOT NULL)",
	"CREATE TABLE shadow_paths (path text PRIMARY KEY, count bigint NOT NULL,"
	" added bigint NOT NULL, removed bigint NOT NULL, changed bigint NOT NULL,"
	" unmapped bigint NOT NULL)",
	"CREATE TABLE shadow_path_rules (path text NOT NULL, rule text NOT NULL,"
	" n bigint NOT NULL, PRIMARY KEY (path, rule))",
	NULL,
};

/* Version 3: a SHA-256 of what each row sends (store.h), checked whenever
 * it is read (rows of version 1 and 2 keep an empty one: unchecked), and the
 * table of store_probe's write. */
static const char *const schema_v3[] = {
	"ALTER TABLE deliveries ADD COLUMN checksum bytea NOT NULL DEFAULT ''",
	"CREATE TABLE store_probe (k integer PRIMARY KEY CHECK (k = 1), at_ms bigint NOT NULL)",
	NULL,
};

/* Version 4: the cutover state of dual routes, shared by the bridges. */
static const char *const schema_v4[] = {
	"CREATE SEQUENCE cutover_seq",
	"CREATE TABLE cutover_state (route text PRIMARY KEY, ramp integer NOT NULL,"
	" status integer NOT NULL, changed_ms bigint NOT NULL, changed_by text NOT NULL,"
	" seq bigint NOT NULL)",
	NULL,
};

/* migrations[v]: the statements that bring version v - 1 to v */
static const char *const *const migrations[PG_SCHEMA_VERSION + 1] = {
	[1] = schema_v1,
	[2] = schema_v2,
	[3] = schema_v3,
	[4] = schema_v4,
};

int store_pg_schema_known(void)
{
	return PG_SCHEMA_VERSION;
}

/* Creates or migrates the schema, under an advisory lock held for the
 * transaction, so that bridges starting together do it once.  Without
 * `create` (the queue command, check) a missing schema is an error. */
int pg_schema_migrate(struct store_pg *p, PGconn *c, struct bridge_error *err)
{
	struct pg_conn tmp = { .c = c };
	PGresult *r;
	int64_t version = 0;

	if (pg_tx(p, &tmp, "BEGIN", err) < 0)
		return -1;
	if (pg_tx(p, &tmp, "SELECT pg_advisory_xact_lock(" PG_LOCK_KEY ")", err) < 0)
		goto fail;
	r = pg_run(p, &tmp, "SELECT to_regclass('schema_version') IS NOT NULL", NULL,
		   PGRES_TUPLES_OK, err, "cannot read the schema version", NULL);
	if (!r)
		goto fail;
	if (strcmp(PQgetvalue(r, 0, 0), "t") == 0) {
		PQclear(r);
		r = pg_run(p, &tmp, "SELECT COALESCE(MAX(version), 0) FROM schema_version", NULL,
			   PGRES_TUPLES_OK, err, "cannot read the schema version", NULL);
		if (!r)
			goto fail;
		version = pg_get_i64(r, 0, 0);
	} else if (!p->create) {
		PQclear(r);
		bridge_error_set(err,
				 "shared store %s has no webhook-bridge schema yet: serve "
				 "creates it when it starts",
				 p->name);
		goto fail;
	} else if (pg_tx(p, &tmp,
			 "CREATE TABLE schema_version (version integer PRIMARY KEY,"
			 " applied_at timestamptz NOT NULL DEFAULT now())",
			 err) < 0) {
		PQclear(r);
		goto fail;
	}
	PQclear(r);
	if (version > PG_SCHEMA_VERSION) {
		bridge_error_set(err,
				 "shared store %s was migrated by a newer webhook-bridge "
				 "(schema %lld, this one knows %d)",
				 p->name, (long long)version, PG_SCHEMA_VERSION);
		goto fail;
	}
	if (version < 1 && !p->create) {
		bridge_error_set(err, "shared store %s has no schema version", p->name);
		goto fail;
	}
	/* the queue command reads an older schema as it is; serve migrates */
	for (int64_t v = version + 1; p->create && v <= PG_SCHEMA_VERSION; v++) {
		char sql[80];

		for (int i = 0; migrations[v][i]; i++)
			if (pg_tx(p, &tmp, migrations[v][i], err) < 0)
				goto fail;
		snprintf(sql, sizeof(sql), "INSERT INTO schema_version (version) VALUES (%lld)",
			 (long long)v);
		if (pg_tx(p, &tmp, sql, err) < 0)
			goto fail;
	}
	if (pg_tx(p, &tmp, "COMMIT", err) < 0)
		goto fail;
	return 0;
fail:
	if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE)
		PQclear(PQexec(c, "ROLLBACK"));
	return -1;
}

int store_pg_schema_version(struct store_pg *p, struct bridge_error *err)
{
	struct pg_conn *pc = pg_conn_take_raw(p, 0, err);
	PGresult *r;
	int v = -1;

	if (!pc)
		return -1;
	r = pg_run(p, pc, "SELECT to_regclass('schema_version') IS NOT NULL", NULL, PGRES_TUPLES_OK,
		   err, "cannot read the schema version", NULL);
	if (r && strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
		v = 0;
	} else if (r) {
		PQclear(r);
		r = pg_run(p, pc, "SELECT COALESCE(MAX(version), 0) FROM schema_version", NULL,
			   PGRES_TUPLES_OK, err, "cannot read the schema version", NULL);
		v = r ? (int)pg_get_i64(r, 0, 0) : -1;
	}
	PQclear(r);
	pg_conn_give(p, pc);
	return v;
}
