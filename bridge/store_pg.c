/*
 * store_pg: the queue's store on PostgreSQL, shared by several bridges.
 *
 * Why blocking libpq calls on the store's threads: the store is called from
 * the queue's writer thread (inserts, one transaction per batch: group
 * commit) and its scheduler thread (claims, outcomes), as the SQLite engine
 * is; each call takes one connection of a pool for its duration, so a slow
 * query on one thread never holds up the other.  Only the wake-up
 * connection lives on the scheduler's event loop (its socket is watched,
 * PQconsumeInput reads the notifications).  No transaction stays open
 * across an HTTP attempt: a claim is a short transaction that writes a
 * lease, the attempt runs outside any transaction, its outcome is another.
 *
 * Leases are in the database's clock (webhook_bridge_now_ms()), so the
 * bridges' clocks never decide whose lease expired.
 *
 * Peer-given text (participation id, state, headers, body, the last error)
 * is stored as bytea: a form post may carry bytes that are not UTF-8, and
 * a database in UTF-8 would refuse them as text.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "bridge/clock.h"
#include "bridge/store_pg.h"

#define PG_SCHEMA_VERSION 4
#define PG_SHADOW_LOCK    0x5748       /* advisory locks of the shadow keys: (this, key hash) */
#define PG_LOCK_KEY       "5712368401" /* advisory lock of schema changes ("WHBQ") */
#define PG_CHANNEL        "webhook_bridge_queue"
#define PG_BACKOFF_MIN_MS 200
#define PG_BACKOFF_MAX_MS 5000
#define PG_INSERT_TRIES   3 /* a deadlock between two batches: the loser tries again */

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

#define ROW_COLUMNS                                                                              \
	"d.id, d.status, d.route, d.endpoint, d.ca_file, d.timeout_ms, d.delivery_id,"           \
	" d.participation_id, d.state, d.headers, d.body, d.attempts, d.created_ms, d.since_ms," \
	" d.next_attempt_ms, d.last_attempt_ms, d.last_status, d.last_error, d.checksum"

struct pg_conn {
	PGconn *c;
	int busy;
	int up; /* under store_pg.mu: c is connected (for the pool's backoff) */
};

struct store_pg {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct pg_conn *conns;
	int n;
	char *conninfo, *password, *name, *holder, *instance;
	int lease_ms;
	int create;
	int schema_ready; /* under mu */
	/* under mu: reconnection backoff of the pool (and the wake-up connection) */
	int64_t retry_at; /* monotonic ms: no new connection before */
	int backoff_ms;
	char last_error[400];
	/* the wake-up connection: scheduler thread only */
	struct pg_conn listen;
	int listen_broken; /* closed at the next store_pg_watch_fd, after the caller's event went */
};

/* libpq's message on one line, without its final newline. */
static void pg_message(const char *m, char *buf, size_t cap)
{
	size_t n;

	snprintf(buf, cap, "%s", m && *m ? m : "unknown error");
	for (char *p = buf; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
	n = strlen(buf);
	while (n && buf[n - 1] == ' ')
		buf[--n] = '\0';
}

static int pg_fail(struct store_pg *p, struct bridge_error *err, const char *what, const char *msg)
{
	char m[400];

	pg_message(msg, m, sizeof(m));
	return bridge_error_set(err, "shared store %s: %s: %s", p->name, what, m);
}

/* ------------------------------------------------------------------ */
/* connections */

/* libpq prints notices (and the server's goodbye when it shuts down) on
 * stderr by default: the store never logs, and stderr carries JSON lines. */
static void notice_drop(void *arg, const char *message)
{
}

static PGconn *pg_connect(struct store_pg *p)
{
	const char *keys[] = { "dbname",           "password",   "application_name",
			       "connect_timeout",  "keepalives", "keepalives_idle",
			       "tcp_user_timeout", NULL };
	const char *vals[] = { p->conninfo, p->password, "webhook-bridge", "5",
			       "1",         "10",        "10000",          NULL };
	PGconn *c;

	/* a NULL value (no password_file) is ignored: ~/.pgpass or PGPASSWORD apply */
	c = PQconnectdbParams(keys, vals, 1);
	if (c)
		PQsetNoticeProcessor(c, notice_drop, NULL);
	return c;
}

static int schema_migrate(struct store_pg *p, PGconn *c, struct bridge_error *err);

int store_pg_schema_known(void)
{
	return PG_SCHEMA_VERSION;
}

/* Make pc usable: 0, or -1 with err (no retry before the backoff). */
/* Whether a connection of p is up; p->mu held. */
static int pool_up(const struct store_pg *p)
{
	for (int i = 0; i < p->n; i++)
		if (p->conns[i].up)
			return 1;
	return p->listen.up;
}

static void conn_drop(struct store_pg *p, struct pg_conn *pc)
{
	if (!pc->c)
		return;
	PQfinish(pc->c);
	pc->c = NULL;
	pthread_mutex_lock(&p->mu);
	pc->up = 0;
	pthread_mutex_unlock(&p->mu);
}

static int conn_ensure(struct store_pg *p, struct pg_conn *pc, struct bridge_error *err)
{
	int64_t now = clock_mono_ms(), retry_at;
	char last[sizeof(p->last_error)];

	/* an idle connection the server closed (a restart, a shutdown) reads
	 * EOF: reopened now rather than failing the next statement */
	if (pc->c && PQstatus(pc->c) == CONNECTION_OK &&
	    (PQtransactionStatus(pc->c) != PQTRANS_IDLE ||
	     (PQconsumeInput(pc->c) && PQstatus(pc->c) == CONNECTION_OK)))
		return 0;
	conn_drop(p, pc);
	/* one backoff for the whole pool, and none while another connection
	 * works (the server is back: this one failed before it was) */
	pthread_mutex_lock(&p->mu);
	retry_at = pool_up(p) ? 0 : p->retry_at;
	memcpy(last, p->last_error, sizeof(last));
	pthread_mutex_unlock(&p->mu);
	if (now < retry_at)
		return bridge_error_set(err,
					"shared store %s is unreachable: %s (next try in %lld ms)",
					p->name, last, (long long)(retry_at - now));
	pc->c = pg_connect(p);
	pthread_mutex_lock(&p->mu);
	if (!pc->c || PQstatus(pc->c) != CONNECTION_OK) {
		pg_message(pc->c ? PQerrorMessage(pc->c) : "out of memory", p->last_error,
			   sizeof(p->last_error));
		memcpy(last, p->last_error, sizeof(last));
		p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : PG_BACKOFF_MIN_MS;
		if (p->backoff_ms > PG_BACKOFF_MAX_MS)
			p->backoff_ms = PG_BACKOFF_MAX_MS;
		p->retry_at = clock_mono_ms() + p->backoff_ms;
		pthread_mutex_unlock(&p->mu);
		PQfinish(pc->c);
		pc->c = NULL;
		return bridge_error_set(err, "shared store %s is unreachable: %s", p->name, last);
	}
	p->backoff_ms = 0;
	p->retry_at = 0;
	pc->up = 1;
	pthread_mutex_unlock(&p->mu);
	return 0;
}

/* A connection of the pool for this thread, connected, with the schema in
 * place; NULL with err. */
static struct pg_conn *conn_take_raw(struct store_pg *p, int migrate, struct bridge_error *err)
{
	struct pg_conn *pc = NULL;
	int ready;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		for (int i = 0; i < p->n && !pc; i++)
			if (!p->conns[i].busy)
				pc = &p->conns[i];
		if (pc)
			break;
		pthread_cond_wait(&p->cv, &p->mu);
	}
	pc->busy = 1;
	ready = p->schema_ready;
	pthread_mutex_unlock(&p->mu);
	if (conn_ensure(p, pc, err) < 0)
		goto fail;
	if (!ready && migrate) {
		if (schema_migrate(p, pc->c, err) < 0)
			goto fail;
		pthread_mutex_lock(&p->mu);
		p->schema_ready = 1;
		pthread_mutex_unlock(&p->mu);
	}
	return pc;
fail:
	pthread_mutex_lock(&p->mu);
	pc->busy = 0;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static struct pg_conn *conn_take(struct store_pg *p, struct bridge_error *err)
{
	return conn_take_raw(p, 1, err);
}

static void conn_give(struct store_pg *p, struct pg_conn *pc)
{
	if (pc->c && PQstatus(pc->c) == CONNECTION_OK &&
	    PQtransactionStatus(pc->c) != PQTRANS_IDLE) {
		PGresult *r = PQexec(pc->c, "ROLLBACK");

		PQclear(r);
	}
	if (pc->c && PQstatus(pc->c) != CONNECTION_OK)
		conn_drop(p, pc);
	pthread_mutex_lock(&p->mu);
	pc->busy = 0;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

/* ------------------------------------------------------------------ */
/* statements */

/* Parameters of one statement: text, or bytes sent as they are (bytea). */
struct params {
	int n;
	const char *v[12];
	int len[12];
	int fmt[12];
	char num[12][24];
};

static void par_text(struct params *q, const char *s)
{
	q->v[q->n] = s;
	q->len[q->n] = 0;
	q->fmt[q->n] = 0;
	q->n++;
}

static void par_bytes(struct params *q, const void *b, size_t n)
{
	q->v[q->n] = n ? (const char *)b : "";
	q->len[q->n] = (int)n;
	q->fmt[q->n] = 1;
	q->n++;
}

static void par_int(struct params *q, int64_t v)
{
	snprintf(q->num[q->n], sizeof(q->num[0]), "%" PRId64, v);
	par_text(q, q->num[q->n]);
}

static const char *nz(const char *s)
{
	return s ? s : "";
}

/* Run sql; the result when its status is `want`, else NULL with err set
 * (and *ret_state the SQLSTATE when there is one). */
static PGresult *run(struct store_pg *p, struct pg_conn *pc, const char *sql,
		     const struct params *q, ExecStatusType want, struct bridge_error *err,
		     const char *what, char *ret_state)
{
	PGresult *r = PQexecParams(pc->c, sql, q ? q->n : 0, NULL, q ? q->v : NULL,
				   q ? q->len : NULL, q ? q->fmt : NULL, 0);

	if (ret_state)
		ret_state[0] = '\0';
	if (r && PQresultStatus(r) == want)
		return r;
	if (ret_state && r && PQresultErrorField(r, PG_DIAG_SQLSTATE))
		snprintf(ret_state, 6, "%s", PQresultErrorField(r, PG_DIAG_SQLSTATE));
	pg_fail(p, err, what, r ? PQresultErrorMessage(r) : PQerrorMessage(pc->c));
	PQclear(r);
	return NULL;
}

static int run_cmd(struct store_pg *p, struct pg_conn *pc, const char *sql, const struct params *q,
		   struct bridge_error *err, const char *what, int64_t *ret_changes,
		   char *ret_state)
{
	PGresult *r = PQexecParams(pc->c, sql, q ? q->n : 0, NULL, q ? q->v : NULL,
				   q ? q->len : NULL, q ? q->fmt : NULL, 0);
	ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;

	if (ret_state)
		ret_state[0] = '\0';
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
		if (ret_changes)
			*ret_changes = strtoll(PQcmdTuples(r), NULL, 10);
		PQclear(r);
		return 0;
	}
	if (ret_state && r && PQresultErrorField(r, PG_DIAG_SQLSTATE))
		snprintf(ret_state, 6, "%s", PQresultErrorField(r, PG_DIAG_SQLSTATE));
	pg_fail(p, err, what, r ? PQresultErrorMessage(r) : PQerrorMessage(pc->c));
	PQclear(r);
	return -1;
}

/* run() on a connection of the pool, taken for this statement alone. */
static PGresult *query(struct store_pg *p, const char *sql, const struct params *q,
		       struct bridge_error *err, const char *what)
{
	struct pg_conn *pc = conn_take(p, err);
	PGresult *r;

	if (!pc)
		return NULL;
	r = run(p, pc, sql, q, PGRES_TUPLES_OK, err, what, NULL);
	conn_give(p, pc);
	return r;
}

static int64_t get_i64(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static char *get_text(const PGresult *r, int row, int col)
{
	return strdup(PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col));
}

/* A bytea column (text format, hex) as a NUL-terminated malloc'd copy. */
static char *get_bytes(const PGresult *r, int row, int col, size_t *ret_len)
{
	size_t n = 0;
	unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &n);
	char *out;

	if (ret_len)
		*ret_len = 0;
	if (!raw)
		return NULL;
	out = malloc(n + 1);
	if (out) {
		memcpy(out, raw, n);
		out[n] = '\0';
		if (ret_len)
			*ret_len = n;
	}
	PQfreemem(raw);
	return out;
}

static int row_read(const PGresult *r, int i, struct store_row *row)
{
	size_t sum_len = 0;
	char *sum;

	memset(row, 0, sizeof(*row));
	row->id = get_i64(r, i, 0);
	row->status = (int)get_i64(r, i, 1);
	row->route = get_text(r, i, 2);
	row->endpoint = get_text(r, i, 3);
	row->ca_file = get_text(r, i, 4);
	row->timeout_ms = (int)get_i64(r, i, 5);
	row->delivery_id = get_text(r, i, 6);
	row->participation_id = get_bytes(r, i, 7, NULL);
	row->state = get_bytes(r, i, 8, NULL);
	row->headers_text = get_bytes(r, i, 9, NULL);
	row->body = get_bytes(r, i, 10, &row->len);
	row->attempts = (int)get_i64(r, i, 11);
	row->created_ms = get_i64(r, i, 12);
	row->since_ms = get_i64(r, i, 13);
	row->next_attempt_ms = get_i64(r, i, 14);
	row->last_attempt_ms = get_i64(r, i, 15);
	row->last_status = (int)get_i64(r, i, 16);
	row->last_error = get_bytes(r, i, 17, NULL);
	sum = get_bytes(r, i, 18, &sum_len);
	if (!row->route || !row->endpoint || !row->ca_file || !row->delivery_id ||
	    !row->participation_id || !row->state || !row->headers_text || !row->body ||
	    !row->last_error || !sum)
		goto fail;
	row->checksum_len = sum_len < STORE_CHECKSUM_LEN ? sum_len : STORE_CHECKSUM_LEN;
	memcpy(row->checksum, sum, row->checksum_len);
	if (sum_len == 0) {
		row->integrity = STORE_ROW_UNCHECKED;
	} else {
		unsigned char want[STORE_CHECKSUM_LEN];

		/* before store_headers_parse, which cuts headers_text into its lines */
		if (store_row_checksum(row->endpoint, row->ca_file, row->timeout_ms,
				       row->delivery_id, row->headers_text, row->body, row->len,
				       want) < 0)
			goto fail;
		row->integrity = sum_len == STORE_CHECKSUM_LEN &&
						 memcmp(want, sum, STORE_CHECKSUM_LEN) == 0
					 ? STORE_ROW_INTACT
					 : STORE_ROW_CORRUPT;
	}
	if (store_headers_parse(row->headers_text, &row->headers, &row->n_headers) < 0)
		goto fail;
	free(sum);
	return 0;
fail:
	free(sum);
	store_row_clear(row);
	return -1;
}

static int tx(struct store_pg *p, struct pg_conn *pc, const char *sql, struct bridge_error *err)
{
	return run_cmd(p, pc, sql, NULL, err, sql, NULL, NULL);
}

/* Commit the open transaction with a wake-up for every bridge (NOTIFY is
 * delivered at commit, and only then). */
static int notify_commit(struct store_pg *p, struct pg_conn *pc, struct bridge_error *err)
{
	if (tx(p, pc, "SELECT pg_notify('" PG_CHANNEL "', '')", err) < 0)
		return -1;
	return tx(p, pc, "COMMIT", err);
}

/* ------------------------------------------------------------------ */
/* schema */

/* Creates or migrates the schema, under an advisory lock held for the
 * transaction, so that bridges starting together do it once.  Without
 * `create` (the queue command, check) a missing schema is an error. */
static int schema_migrate(struct store_pg *p, PGconn *c, struct bridge_error *err)
{
	struct pg_conn tmp = { .c = c };
	PGresult *r;
	int64_t version = 0;

	if (tx(p, &tmp, "BEGIN", err) < 0)
		return -1;
	if (tx(p, &tmp, "SELECT pg_advisory_xact_lock(" PG_LOCK_KEY ")", err) < 0)
		goto fail;
	r = run(p, &tmp, "SELECT to_regclass('schema_version') IS NOT NULL", NULL, PGRES_TUPLES_OK,
		err, "cannot read the schema version", NULL);
	if (!r)
		goto fail;
	if (strcmp(PQgetvalue(r, 0, 0), "t") == 0) {
		PQclear(r);
		r = run(p, &tmp, "SELECT COALESCE(MAX(version), 0) FROM schema_version", NULL,
			PGRES_TUPLES_OK, err, "cannot read the schema version", NULL);
		if (!r)
			goto fail;
		version = get_i64(r, 0, 0);
	} else if (!p->create) {
		PQclear(r);
		bridge_error_set(err,
				 "shared store %s has no webhook-bridge schema yet: serve "
				 "creates it when it starts",
				 p->name);
		goto fail;
	} else if (tx(p, &tmp,
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
			if (tx(p, &tmp, migrations[v][i], err) < 0)
				goto fail;
		snprintf(sql, sizeof(sql), "INSERT INTO schema_version (version) VALUES (%lld)",
			 (long long)v);
		if (tx(p, &tmp, sql, err) < 0)
			goto fail;
	}
	if (tx(p, &tmp, "COMMIT", err) < 0)
		goto fail;
	return 0;
fail:
	if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE)
		PQclear(PQexec(c, "ROLLBACK"));
	return -1;
}

int store_pg_schema_version(struct store_pg *p, struct bridge_error *err)
{
	struct pg_conn *pc = conn_take_raw(p, 0, err);
	PGresult *r;
	int v = -1;

	if (!pc)
		return -1;
	r = run(p, pc, "SELECT to_regclass('schema_version') IS NOT NULL", NULL, PGRES_TUPLES_OK,
		err, "cannot read the schema version", NULL);
	if (r && strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
		v = 0;
	} else if (r) {
		PQclear(r);
		r = run(p, pc, "SELECT COALESCE(MAX(version), 0) FROM schema_version", NULL,
			PGRES_TUPLES_OK, err, "cannot read the schema version", NULL);
		v = r ? (int)get_i64(r, 0, 0) : -1;
	}
	PQclear(r);
	conn_give(p, pc);
	return v;
}

/* ------------------------------------------------------------------ */
/* open / close */

static void random_hex(char *buf, size_t n)
{
	unsigned char b[8] = { 0 };

	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
		int64_t t = clock_mono_ms() ^ (int64_t)getpid() << 20;

		memcpy(b, &t, sizeof(b));
	}
	for (size_t i = 0; i < sizeof(b) && 2 * i + 2 < n; i++)
		snprintf(buf + 2 * i, 3, "%02x", b[i]);
}

int store_pg_open(const struct shared_config *c, unsigned flags, struct store_pg **ret,
		  struct bridge_error *err)
{
	struct store_pg *p;
	char shown[600], rnd[17] = "";
	size_t hn;

	*ret = NULL;
	if (!c || !c->url)
		return bridge_error_set(err, "shared store: no url");
	if (!PQisthreadsafe())
		return bridge_error_set(err, "this libpq was built without thread support");
	p = calloc(1, sizeof(*p));
	if (!p)
		return bridge_error_set(err, "out of memory");
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->n = c->connections > 0 ? c->connections : 4;
	p->lease_ms = c->lease_ms > 0 ? c->lease_ms : 30000;
	p->create = (flags & STORE_CREATE) != 0;
	p->conns = calloc((size_t)p->n, sizeof(*p->conns));
	p->conninfo = strdup(c->url);
	p->password = c->password ? strdup(c->password) : NULL;
	p->name = strdup(shared_url_shown(c->url, shown, sizeof(shown)));
	p->instance = strdup(c->instance ? c->instance : "bridge");
	random_hex(rnd, sizeof(rnd));
	hn = strlen(nz(c->instance)) + 64;
	p->holder = malloc(hn);
	if (p->holder)
		snprintf(p->holder, hn, "%s/%ld/%s", c->instance ? c->instance : "bridge",
			 (long)getpid(), rnd);
	if (!p->conns || !p->conninfo || !p->name || !p->holder || !p->instance ||
	    (c->password && !p->password)) {
		store_pg_close(p);
		return bridge_error_set(err, "out of memory");
	}
	*ret = p;
	return 0;
}

void store_pg_close(struct store_pg *p)
{
	if (!p)
		return;
	for (int i = 0; p->conns && i < p->n; i++)
		PQfinish(p->conns[i].c);
	PQfinish(p->listen.c);
	free(p->conns);
	free(p->conninfo);
	if (p->password) {
		explicit_bzero(p->password, strlen(p->password));
		free(p->password);
	}
	free(p->name);
	free(p->holder);
	free(p->instance);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p);
}

const char *store_pg_name(const struct store_pg *p)
{
	return p->name;
}

const char *store_pg_holder(const struct store_pg *p)
{
	return p->holder;
}

int store_pg_probe(struct store_pg *p, int64_t now_ms, struct bridge_error *err)
{
	struct params q = { 0 };
	struct pg_conn *pc = conn_take(p, err);
	int rc;

	if (!pc)
		return -1;
	par_int(&q, now_ms);
	rc = run_cmd(p, pc,
		     "INSERT INTO store_probe (k, at_ms) VALUES (1, $1)"
		     " ON CONFLICT (k) DO UPDATE SET at_ms = EXCLUDED.at_ms",
		     &q, err, "cannot write", NULL, NULL);
	conn_give(p, pc);
	return rc;
}

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
		rcpt->id = get_i64(r, 0, 0);
		snprintf(rcpt->delivery_id, sizeof(rcpt->delivery_id), "%s", delivery_id);
	}
	PQclear(r);
	return result;
}

/* 0 inserted, 1 duplicate (receipt of the pending row), -1 error. */
static int insert_one(struct store_pg *p, struct pg_conn *pc, const struct store_item *it,
		      int64_t now_ms, const char *ht, struct store_receipt *rcpt, char *state,
		      struct bridge_error *err)
{
	unsigned char sum[STORE_CHECKSUM_LEN];

	if (store_row_checksum(it->endpoint, nz(it->ca_file), it->timeout_ms, it->delivery_id, ht,
			       it->len ? it->body : "", it->len, sum) < 0)
		return bridge_error_set(err, "out of memory");
	for (int tries = 0; tries < 3; tries++) {
		struct params q = { 0 };
		PGresult *r;

		par_text(&q, it->route);
		par_text(&q, it->endpoint);
		par_text(&q, nz(it->ca_file));
		par_int(&q, it->timeout_ms);
		par_text(&q, it->delivery_id);
		par_bytes(&q, nz(it->participation_id), strlen(nz(it->participation_id)));
		par_bytes(&q, nz(it->state), strlen(nz(it->state)));
		par_bytes(&q, ht, strlen(ht));
		par_bytes(&q, it->body, it->len);
		par_int(&q, now_ms);
		par_bytes(&q, sum, STORE_CHECKSUM_LEN);
		r = run(p, pc, insert_sql, &q, PGRES_TUPLES_OK, err, "cannot store the delivery",
			state);
		if (!r)
			return -1;
		if (PQntuples(r) == 1)
			return receipt_take(r, it->delivery_id, rcpt, 0);
		PQclear(r);
		/* a pending row of the same participation and state holds the key */
		memset(&q, 0, sizeof(q));
		par_text(&q, it->route);
		par_bytes(&q, nz(it->participation_id), strlen(nz(it->participation_id)));
		par_bytes(&q, nz(it->state), strlen(nz(it->state)));
		r = run(p, pc, dup_sql, &q, PGRES_TUPLES_OK, err, "cannot look for a duplicate",
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
	if (!(pc = conn_take(p, err)))
		return -1;
	for (int attempt = 0; attempt < PG_INSERT_TRIES; attempt++) {
		size_t i;

		if (tx(p, pc, "BEGIN", err) < 0)
			break;
		for (i = 0; i < n; i++) {
			char *ht = store_headers_text(items[i]);
			int dup;

			if (!ht) {
				bridge_error_set(err, "out of memory");
				break;
			}
			dup = insert_one(p, pc, items[i], now_ms, ht,
					 receipts ? &receipts[i] : NULL, state, err);
			free(ht);
			if (dup < 0)
				break;
			if (ret_results)
				ret_results[i] = dup ? STORE_DUPLICATE : STORE_INSERTED;
		}
		if (i == n &&
		    run_cmd(p, pc, "SELECT pg_notify('" PG_CHANNEL "', '')", NULL, err,
			    "cannot notify", NULL, state) == 0 &&
		    run_cmd(p, pc, "COMMIT", NULL, err, "cannot commit", NULL, state) == 0) {
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
	conn_give(p, pc);
	return rc;
}

/* ------------------------------------------------------------------ */
/* scheduler */

int store_pg_lanes(struct store_pg *p, size_t max, struct store_lane **ret, size_t *ret_n,
		   struct bridge_error *err)
{
	struct params q = { 0 };
	struct store_lane *l;
	PGresult *r;
	size_t n;

	*ret = NULL;
	*ret_n = 0;
	par_int(&q, (int64_t)max);
	r = query(p, "SELECT DISTINCT endpoint, ca_file FROM deliveries WHERE status = 0 LIMIT $1",
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
		l[i].endpoint = get_text(r, (int)i, 0);
		l[i].ca_file = get_text(r, (int)i, 1);
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
 * in one statement: locked rows are skipped, not waited for. */
static const char claim_sql[] =
	"WITH c AS (SELECT d.id FROM deliveries AS d"
	" WHERE d.status = 0 AND d.endpoint = $1 AND d.ca_file = $2 AND d.next_attempt_ms <= $3"
	" AND d.lease_until < webhook_bridge_now_ms()"
	" AND NOT EXISTS (SELECT 1 FROM deliveries AS p WHERE p.status = 0"
	" AND p.participation_id <> '' AND p.route = d.route"
	" AND p.participation_id = d.participation_id AND p.id < d.id)"
	" ORDER BY d.next_attempt_ms, d.id LIMIT $4 FOR UPDATE OF d SKIP LOCKED)"
	" UPDATE deliveries AS d SET lease_holder = $5,"
	" lease_until = webhook_bridge_now_ms() + $6"
	" FROM c WHERE d.id = c.id RETURNING " ROW_COLUMNS;

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
	struct params q = { 0 };
	PGresult *r;
	size_t n;

	*ret_n = 0;
	if (max == 0)
		return 0;
	par_text(&q, endpoint);
	par_text(&q, nz(ca_file));
	par_int(&q, now_ms);
	par_int(&q, (int64_t)max);
	par_text(&q, p->holder);
	par_int(&q, p->lease_ms);
	r = query(p, claim_sql, &q, err, "cannot claim due deliveries");
	if (!r)
		return -1;
	n = (size_t)PQntuples(r);
	if (n > max)
		n = max;
	for (size_t i = 0; i < n; i++) {
		if (row_read(r, (int)i, &rows[i]) < 0) {
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

static int one_int(struct store_pg *p, const char *sql, const struct params *q, int64_t *ret,
		   struct bridge_error *err, const char *what)
{
	PGresult *r = query(p, sql, q, err, what);

	*ret = 0;
	if (!r)
		return -1;
	if (PQntuples(r) > 0)
		*ret = get_i64(r, 0, 0);
	PQclear(r);
	return 0;
}

int store_pg_next_wake(struct store_pg *p, const char *endpoint, const char *ca_file,
		       int64_t after_ms, int64_t *ret, struct bridge_error *err)
{
	struct params q = { 0 };

	par_text(&q, endpoint);
	par_text(&q, nz(ca_file));
	par_int(&q, after_ms);
	return one_int(p,
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
	struct params q = { 0 };
	const char *e = nz(o->last_error);

	par_int(&q, o->id);
	if (o->kind == STORE_OUT_DELIVERED) {
		par_text(&q, p->holder);
		return run_cmd(p, pc, delivered_sql, &q, err, "cannot record a delivery", NULL,
			       NULL);
	}
	par_int(&q, o->attempts_before);
	if (o->kind == STORE_OUT_FAILED) {
		par_int(&q, o->now_ms);
		par_int(&q, o->next_attempt_ms);
	} else {
		par_int(&q, o->attempted ? 1 : 0);
		par_int(&q, o->now_ms);
	}
	par_int(&q, o->last_status);
	par_bytes(&q, e, strlen(e));
	par_text(&q, p->holder);
	return run_cmd(p, pc, o->kind == STORE_OUT_FAILED ? failed_sql : dead_sql, &q, err,
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
	if (!(pc = conn_take(p, err)))
		return -1;
	if (tx(p, pc, "BEGIN", err) < 0)
		goto out;
	for (i = 0; i < n; i++)
		if (outcome_run(p, pc, &o[i], err) < 0)
			goto out;
	/* a line may have moved on: whoever can take its next row hears it */
	if (notify_commit(p, pc, err) < 0)
		goto out;
	rc = 0;
out:
	conn_give(p, pc);
	return rc;
}

int store_pg_renew(struct store_pg *p, const int64_t *ids, size_t n, size_t *ret_renewed,
		   struct bridge_error *err)
{
	struct pg_conn *pc;
	struct params q = { 0 };
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
	if (!(pc = conn_take(p, err))) {
		free(list);
		return -1;
	}
	par_text(&q, p->holder);
	par_int(&q, p->lease_ms);
	par_text(&q, list);
	rc = run_cmd(p, pc,
		     "UPDATE deliveries SET lease_until = webhook_bridge_now_ms() + $2"
		     " WHERE lease_holder = $1 AND status = 0 AND id = ANY($3::bigint[])",
		     &q, err, "cannot renew leases", &changes, NULL);
	conn_give(p, pc);
	free(list);
	if (rc == 0 && ret_renewed)
		*ret_renewed = (size_t)changes;
	return rc;
}

int store_pg_release(struct store_pg *p, struct bridge_error *err)
{
	struct params q = { 0 };
	struct pg_conn *pc;
	int rc;

	par_text(&q, p->holder);
	if (!(pc = conn_take(p, err)))
		return -1;
	rc = run_cmd(p, pc,
		     "UPDATE deliveries SET lease_holder = '', lease_until = 0"
		     " WHERE lease_holder = $1 AND status = 0",
		     &q, err, "cannot release leases", NULL, NULL);
	conn_give(p, pc);
	return rc;
}

int store_pg_count(struct store_pg *p, struct store_counts *ret, struct bridge_error *err)
{
	PGresult *r;

	memset(ret, 0, sizeof(*ret));
	r = query(p,
		  "SELECT status, COUNT(*), COALESCE(MIN(created_ms), 0) FROM deliveries"
		  " GROUP BY status",
		  NULL, err, "cannot count deliveries");
	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r); i++) {
		if (get_i64(r, i, 0) == STORE_PENDING) {
			ret->pending = get_i64(r, i, 1);
			ret->oldest_created_ms = get_i64(r, i, 2);
		} else if (get_i64(r, i, 0) == STORE_DEAD) {
			ret->dead = get_i64(r, i, 1);
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

	r = query(p,
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
		if (get_i64(r, i, 1) == STORE_PENDING) {
			c.pending = get_i64(r, i, 2);
			c.oldest_created_ms = get_i64(r, i, 3);
		} else {
			c.dead = get_i64(r, i, 2);
		}
	}
	if (!stop && c.route)
		stop = cb(&c, arg);
	PQclear(r);
	return stop;
}

int store_pg_oldest(struct store_pg *p, int64_t *ret, struct bridge_error *err)
{
	return one_int(p, "SELECT COALESCE(MIN(created_ms), 0) FROM deliveries WHERE status = 0",
		       NULL, ret, err, "cannot read the oldest delivery");
}

/* ------------------------------------------------------------------ */
/* wake-ups */

int store_pg_watch_fd(struct store_pg *p)
{
	struct bridge_error err;
	PGresult *r;

	if (p->listen_broken) {
		conn_drop(p, &p->listen);
		p->listen_broken = 0;
	}
	if (p->listen.c && PQstatus(p->listen.c) == CONNECTION_OK)
		return PQsocket(p->listen.c);
	if (conn_ensure(p, &p->listen, &err) < 0)
		return -1;
	r = PQexec(p->listen.c, "LISTEN " PG_CHANNEL);
	if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
		PQclear(r);
		conn_drop(p, &p->listen);
		return -1;
	}
	PQclear(r);
	if (PQsetnonblocking(p->listen.c, 1) < 0) {
		conn_drop(p, &p->listen);
		return -1;
	}
	return PQsocket(p->listen.c);
}

int store_pg_watch_drain(struct store_pg *p)
{
	PGnotify *nf;
	int n = 0;

	if (!p->listen.c || p->listen_broken)
		return -1;
	if (!PQconsumeInput(p->listen.c) || PQstatus(p->listen.c) != CONNECTION_OK) {
		p->listen_broken = 1;
		return -1;
	}
	while ((nf = PQnotifies(p->listen.c)) != NULL) {
		n++;
		PQfreemem(nf);
	}
	return n;
}

/* ------------------------------------------------------------------ */
/* operator commands */

#define FILTER_WHERE                                                                        \
	" WHERE ($1::int < 0 OR d.status = $1::int) AND ($2::text IS NULL OR d.route = $2)" \
	" AND ($3::bigint = 0 OR d.created_ms < $3::bigint)"

static void filter_bind(struct params *q, const struct store_filter *f)
{
	par_int(q, f->status);
	par_text(q, f->route);
	par_int(q, f->created_before);
}

int store_pg_list(struct store_pg *p, const struct store_filter *f,
		  int (*cb)(const struct store_row *row, void *arg), void *arg,
		  struct bridge_error *err)
{
	static const char asc[] = "SELECT " ROW_COLUMNS " FROM deliveries AS d" FILTER_WHERE
				  " ORDER BY d.id LIMIT $4";
	static const char desc[] = "SELECT " ROW_COLUMNS " FROM deliveries AS d" FILTER_WHERE
				   " ORDER BY d.id DESC LIMIT $4";
	struct params q = { 0 };
	struct store_row row;
	PGresult *r;
	int ret = 0;

	filter_bind(&q, f);
	if (f->limit > 0)
		par_int(&q, f->limit);
	else
		par_text(&q, NULL);
	r = query(p, f->newest_first ? desc : asc, &q, err, "cannot list deliveries");
	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r); i++) {
		int stop;

		if (row_read(r, i, &row) < 0) {
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
	struct params q = { 0 };
	PGresult *r;
	int out;

	memset(ret, 0, sizeof(*ret));
	par_int(&q, id);
	r = query(p, "SELECT " ROW_COLUMNS " FROM deliveries AS d WHERE d.id = $1", &q, err,
		  "cannot read a delivery");
	if (!r)
		return -1;
	if (PQntuples(r) == 0)
		out = 1;
	else
		out = row_read(r, 0, ret) < 0 ? bridge_error_set(err, "out of memory") : 0;
	PQclear(r);
	return out;
}

int store_pg_retry(struct store_pg *p, int64_t id, int64_t now_ms, struct bridge_error *err)
{
	struct params q = { 0 };
	struct pg_conn *pc;
	int64_t changes = 0;
	char state[6] = "";
	int rc = -1;

	par_int(&q, id);
	par_int(&q, now_ms);
	if (!(pc = conn_take(p, err)))
		return -1;
	if (tx(p, pc, "BEGIN", err) < 0)
		goto out;
	if (run_cmd(p, pc,
		    "UPDATE deliveries SET status = 0, attempts = 0, since_ms = $2,"
		    " next_attempt_ms = $2, lease_holder = '', lease_until = 0"
		    " WHERE id = $1 AND status = 1",
		    &q, err, "cannot retry a dead letter", &changes, state) < 0) {
		if (strcmp(state, "23505") == 0)
			rc = STORE_RETRY_DUPLICATE;
		goto out;
	}
	if (changes == 0 &&
	    run_cmd(p, pc,
		    "UPDATE deliveries SET next_attempt_ms = $2 WHERE id = $1 AND status = 0", &q,
		    err, "cannot reschedule a delivery", &changes, NULL) < 0)
		goto out;
	if (notify_commit(p, pc, err) < 0)
		goto out;
	rc = changes ? STORE_RETRY_DONE : STORE_RETRY_NOT_FOUND;
out:
	conn_give(p, pc);
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
	struct params q = { 0 };
	struct pg_conn *pc;
	PGresult *r;
	int64_t before = 0, changes = 0;
	int rc = -1;

	*ret_n = 0;
	*ret_skipped = 0;
	dead.status = STORE_DEAD;
	filter_bind(&q, &dead);
	if (!(pc = conn_take(p, err)))
		return -1;
	if (tx(p, pc, "BEGIN", err) < 0)
		goto out;
	r = run(p, pc, "SELECT COUNT(*) FROM deliveries AS d" FILTER_WHERE, &q, PGRES_TUPLES_OK,
		err, "cannot count dead letters", NULL);
	if (!r)
		goto out;
	before = get_i64(r, 0, 0);
	PQclear(r);
	par_int(&q, now_ms);
	if (run_cmd(p, pc, retry_sql, &q, err, "cannot retry dead letters", &changes, NULL) < 0 ||
	    notify_commit(p, pc, err) < 0)
		goto out;
	*ret_n = changes;
	*ret_skipped = before - changes;
	rc = 0;
out:
	conn_give(p, pc);
	return rc;
}

int store_pg_purge_id(struct store_pg *p, int64_t id, struct bridge_error *err)
{
	struct params q = { 0 };
	struct pg_conn *pc;
	int64_t changes = 0;
	int rc;

	par_int(&q, id);
	if (!(pc = conn_take(p, err)))
		return -1;
	rc = run_cmd(p, pc, "DELETE FROM deliveries WHERE id = $1", &q, err,
		     "cannot purge a delivery", &changes, NULL);
	conn_give(p, pc);
	return rc < 0 ? -1 : changes ? 0 : 1;
}

int store_pg_purge(struct store_pg *p, const struct store_filter *f, int64_t *ret_n,
		   struct bridge_error *err)
{
	struct params q = { 0 };
	struct pg_conn *pc;
	int rc;

	*ret_n = 0;
	filter_bind(&q, f);
	if (!(pc = conn_take(p, err)))
		return -1;
	rc = run_cmd(p, pc, "DELETE FROM deliveries AS d" FILTER_WHERE, &q, err,
		     "cannot purge deliveries", ret_n, NULL);
	conn_give(p, pc);
	return rc;
}

/* ------------------------------------------------------------------ */
/* the shared shadow store */

#define SHADOW_COLUMNS                                                                      \
	"route, side, participation_id, state, instance, body, body_len, too_large, trace," \
	" trace_dropped, webhook_bridge_now_ms() - arrived_ms"

static int shadow_entry_read(const PGresult *r, int i, struct store_shadow_entry *e)
{
	memset(e, 0, sizeof(*e));
	e->present = 1;
	e->route = get_text(r, i, 0);
	e->side = (int)get_i64(r, i, 1);
	e->participation_id = get_bytes(r, i, 2, NULL);
	e->state = get_bytes(r, i, 3, NULL);
	e->instance = get_text(r, i, 4);
	e->body = get_bytes(r, i, 5, &e->len);
	e->body_len = get_i64(r, i, 6);
	e->too_large = strcmp(PQgetvalue(r, i, 7), "t") == 0;
	if (!PQgetisnull(r, i, 8))
		e->trace = get_bytes(r, i, 8, &e->trace_len);
	e->trace_dropped = strcmp(PQgetvalue(r, i, 9), "t") == 0;
	e->age_ms = get_i64(r, i, 10);
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
		struct params q = { 0 };

		if (!n[i])
			continue;
		par_text(&q, names[i]);
		par_int(&q, n[i]);
		if (run_cmd(p, pc,
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
	struct params q = { 0 };
	PGresult *r;
	int found;

	par_text(&q, o->route);
	par_bytes(&q, o->id_key, strlen(o->id_key));
	par_bytes(&q, o->state_key, strlen(o->state_key));
	par_int(&q, side);
	r = run(p, pc,
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
	struct params q = { 0 };
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
	if (!(pc = conn_take(p, err)))
		return -1;
	snprintf(lock, sizeof(lock), "SELECT pg_advisory_xact_lock(%d, %d)", PG_SHADOW_LOCK,
		 (int)o->key_hash);
	if (tx(p, pc, "BEGIN", err) < 0 || tx(p, pc, lock, err) < 0)
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
		par_text(&q, o->route);
		par_bytes(&q, o->id_key, strlen(o->id_key));
		par_bytes(&q, o->state_key, strlen(o->state_key));
		par_int(&q, o->side);
		par_bytes(&q, o->participation_id, strlen(o->participation_id));
		par_bytes(&q, o->state, strlen(o->state));
		par_bytes(&q, o->body, o->len);
		par_int(&q, o->body_len);
		par_text(&q, o->too_large ? "t" : "f");
		if (o->trace)
			par_bytes(&q, o->trace, strlen(o->trace));
		else
			par_text(&q, NULL);
		par_text(&q, o->trace_dropped ? "t" : "f");
		par_text(&q, p->instance);
		r = run(p, pc,
			"INSERT INTO shadow_waiting (route, participation_key, state_key, side,"
			" participation_id, state, body, body_len, too_large, trace, trace_dropped,"
			" arrived_ms, instance) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
			" $11, webhook_bridge_now_ms(), $12)",
			&q, PGRES_COMMAND_OK, err, "cannot store a shadow entry", NULL);
		if (!r)
			goto out;
		PQclear(r);
	}
	if (shadow_bump(p, pc, names, n, 3, err) < 0 || tx(p, pc, "COMMIT", err) < 0)
		goto out;
	rc = got;
out:
	conn_give(p, pc);
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

	if (!(pc = conn_take(p, err)))
		return -1;
	if (tx(p, pc, "BEGIN", err) < 0 || shadow_bump(p, pc, names, n, k, err) < 0)
		goto out;
	for (size_t i = 0; i < n_paths; i++) {
		const struct store_shadow_path *d = &paths[i];
		int unmapped = d->rule && strcmp(d->rule, "unmapped") == 0;
		struct params q = { 0 };

		par_text(&q, d->path);
		par_int(&q, d->kind == 0);
		par_int(&q, d->kind == 1);
		par_int(&q, d->kind == 2);
		par_int(&q, unmapped);
		if (run_cmd(p, pc,
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
		par_text(&q, d->path);
		par_text(&q, d->rule);
		if (run_cmd(p, pc,
			    "INSERT INTO shadow_path_rules (path, rule, n) VALUES ($1, $2, 1)"
			    " ON CONFLICT (path, rule) DO UPDATE SET n = shadow_path_rules.n + 1",
			    &q, err, "cannot count a rule", NULL, NULL) < 0)
			goto out;
	}
	if (tx(p, pc, "COMMIT", err) < 0)
		goto out;
	rc = 0;
out:
	conn_give(p, pc);
	return rc;
}

int store_pg_shadow_totals(struct store_pg *p, size_t max_paths,
			   void (*count_cb)(const char *name, long long n, void *arg),
			   void (*path_cb)(const struct store_shadow_path_total *t, void *arg),
			   void *arg, long long waiting[2], struct bridge_error *err)
{
	struct params q = { 0 };
	PGresult *r;

	waiting[0] = waiting[1] = 0;
	r = query(p, "SELECT name, n FROM shadow_counts", NULL, err, "cannot read the totals");
	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r); i++)
		count_cb(PQgetvalue(r, i, 0), get_i64(r, i, 1), arg);
	PQclear(r);
	r = query(p, "SELECT side, COUNT(*) FROM shadow_waiting GROUP BY side", NULL, err,
		  "cannot count waiting entries");
	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r); i++)
		waiting[get_i64(r, i, 0) ? 1 : 0] = get_i64(r, i, 1);
	PQclear(r);
	par_int(&q, (int64_t)max_paths);
	r = query(p,
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
			.count = get_i64(r, i, 1),
			.added = get_i64(r, i, 2),
			.removed = get_i64(r, i, 3),
			.changed = get_i64(r, i, 4),
			.unmapped = get_i64(r, i, 5),
			.rule = PQgetisnull(r, i, 6) ? NULL : PQgetvalue(r, i, 6),
			.rule_n = get_i64(r, i, 7),
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
	struct params q = { 0 };
	struct pg_conn *pc;
	PGresult *gone[2] = { NULL, NULL };
	char lock[80];
	int rc = -1;

	*ret_swept = 0;
	if (!(pc = conn_take(p, err)))
		return -1;
	snprintf(lock, sizeof(lock), "SELECT pg_try_advisory_xact_lock(%d, 0)", PG_SHADOW_LOCK);
	if (tx(p, pc, "BEGIN", err) < 0)
		goto out;
	gone[0] = run(p, pc, lock, NULL, PGRES_TUPLES_OK, err, "cannot take the sweep lock", NULL);
	if (!gone[0])
		goto out;
	if (strcmp(PQgetvalue(gone[0], 0, 0), "t") != 0) {
		rc = 0; /* another bridge sweeps now */
		goto out;
	}
	PQclear(gone[0]);
	par_int(&q, ttl_ms);
	gone[0] = run(p, pc,
		      "DELETE FROM shadow_waiting WHERE arrived_ms <= webhook_bridge_now_ms() - $1"
		      " RETURNING " SHADOW_COLUMNS,
		      &q, PGRES_TUPLES_OK, err, "cannot expire shadow entries", NULL);
	if (!gone[0])
		goto out;
	memset(&q, 0, sizeof(q));
	par_int(&q, (int64_t)max_entries);
	gone[1] = run(p, pc,
		      "DELETE FROM shadow_waiting WHERE (route, participation_key, state_key, side)"
		      " IN (SELECT route, participation_key, state_key, side FROM shadow_waiting"
		      " ORDER BY arrived_ms LIMIT GREATEST(0, (SELECT COUNT(*) FROM shadow_waiting)"
		      " - $1)) RETURNING " SHADOW_COLUMNS,
		      &q, PGRES_TUPLES_OK, err, "cannot evict shadow entries", NULL);
	if (!gone[1])
		goto out;
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < PQntuples(gone[k]); i++)
			n[2 * k + (get_i64(gone[k], i, 1) ? 1 : 0)]++;
	if (shadow_bump(p, pc, names, n, 4, err) < 0 || tx(p, pc, "COMMIT", err) < 0)
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
	conn_give(p, pc);
	return rc;
}

/* ------------------------------------------------------------------ */
/* the shared cutover state */

int store_pg_cutover_load(struct store_pg *p,
			  int (*cb)(const char *route, int ramp, int status, long long changed_ms,
				    const char *by, void *arg),
			  void *arg, struct bridge_error *err)
{
	PGresult *r = query(p,
			    "SELECT route, ramp, status, changed_ms, changed_by FROM cutover_state",
			    NULL, err, "cannot read the cutover state");
	int rc = 0;

	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r) && rc == 0; i++)
		rc = cb(PQgetvalue(r, i, 0), (int)get_i64(r, i, 1), (int)get_i64(r, i, 2),
			get_i64(r, i, 3), PQgetvalue(r, i, 4), arg);
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
	struct params q = { 0 };
	PGresult *r;

	if (ret_inserted)
		*ret_inserted = 0;
	snprintf(sql, sizeof(sql), "%s %s RETURNING 1", put_sql,
		 only_if_absent ? "ON CONFLICT (route) DO NOTHING"
				: "ON CONFLICT (route) DO UPDATE SET ramp = EXCLUDED.ramp,"
				  " status = EXCLUDED.status, changed_ms = EXCLUDED.changed_ms,"
				  " changed_by = EXCLUDED.changed_by, seq = EXCLUDED.seq");
	par_text(&q, route);
	par_int(&q, ramp);
	par_int(&q, status);
	par_int(&q, changed_ms);
	par_text(&q, by);
	r = query(p, sql, &q, err, "cannot store the cutover state");
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
	int rc = one_int(p, "SELECT COALESCE(MAX(seq), 0) FROM cutover_state", NULL, &v, err,
			 "cannot read the cutover state's version");

	*ret = v;
	return rc;
}
