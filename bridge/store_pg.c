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
#include <unistd.h>

#include <libpq-fe.h>

#include "bridge/clock.h"
#include "store_pg_types.h"

#define PG_BACKOFF_MIN_MS 200
#define PG_BACKOFF_MAX_MS 5000

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

int pg_fail(struct store_pg *p, struct bridge_error *err, const char *what, const char *msg)
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

/* Make pc usable: 0, or -1 with err (no retry before the backoff). */
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
struct pg_conn *pg_conn_take_raw(struct store_pg *p, int migrate, struct bridge_error *err)
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
		if (pg_schema_migrate(p, pc->c, err) < 0)
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

struct pg_conn *pg_conn_take(struct store_pg *p, struct bridge_error *err)
{
	return pg_conn_take_raw(p, 1, err);
}

void pg_conn_give(struct store_pg *p, struct pg_conn *pc)
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
void pg_par_text(struct pg_params *q, const char *s)
{
	q->v[q->n] = s;
	q->len[q->n] = 0;
	q->fmt[q->n] = 0;
	q->n++;
}

void pg_par_bytes(struct pg_params *q, const void *b, size_t n)
{
	q->v[q->n] = n ? (const char *)b : "";
	q->len[q->n] = (int)n;
	q->fmt[q->n] = 1;
	q->n++;
}

void pg_par_int(struct pg_params *q, int64_t v)
{
	snprintf(q->num[q->n], sizeof(q->num[0]), "%" PRId64, v);
	pg_par_text(q, q->num[q->n]);
}

const char *pg_nz(const char *s)
{
	return s ? s : "";
}

/* Run sql; the result when its status is `want`, else NULL with err set
 * (and *ret_state the SQLSTATE when there is one). */
PGresult *pg_run(struct store_pg *p, struct pg_conn *pc, const char *sql, const struct pg_params *q,
		 ExecStatusType want, struct bridge_error *err, const char *what, char *ret_state)
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

int pg_run_cmd(struct store_pg *p, struct pg_conn *pc, const char *sql, const struct pg_params *q,
	       struct bridge_error *err, const char *what, int64_t *ret_changes, char *ret_state)
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

/* pg_run() on a connection of the pool, taken for this statement alone. */
PGresult *pg_query(struct store_pg *p, const char *sql, const struct pg_params *q,
		   struct bridge_error *err, const char *what)
{
	struct pg_conn *pc = pg_conn_take(p, err);
	PGresult *r;

	if (!pc)
		return NULL;
	r = pg_run(p, pc, sql, q, PGRES_TUPLES_OK, err, what, NULL);
	pg_conn_give(p, pc);
	return r;
}

int pg_write(struct store_pg *p, const char *sql, const struct pg_params *q,
	     struct bridge_error *err, const char *what, int64_t *ret_changes)
{
	struct pg_conn *pc = pg_conn_take(p, err);
	int rc;

	if (!pc)
		return -1;
	rc = pg_run_cmd(p, pc, sql, q, err, what, ret_changes, NULL);
	pg_conn_give(p, pc);
	return rc;
}

int64_t pg_get_i64(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

char *pg_get_text(const PGresult *r, int row, int col)
{
	return strdup(PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col));
}

/* A bytea column (text format, hex) as a NUL-terminated malloc'd copy. */
char *pg_get_bytes(const PGresult *r, int row, int col, size_t *ret_len)
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

int pg_row_read(const PGresult *r, int i, struct store_row *row)
{
	size_t sum_len = 0;
	char *sum;

	memset(row, 0, sizeof(*row));
	row->id = pg_get_i64(r, i, 0);
	row->status = (int)pg_get_i64(r, i, 1);
	row->route = pg_get_text(r, i, 2);
	row->endpoint = pg_get_text(r, i, 3);
	row->ca_file = pg_get_text(r, i, 4);
	row->timeout_ms = (int)pg_get_i64(r, i, 5);
	row->delivery_id = pg_get_text(r, i, 6);
	row->participation_id = pg_get_bytes(r, i, 7, NULL);
	row->state = pg_get_bytes(r, i, 8, NULL);
	row->headers_text = pg_get_bytes(r, i, 9, NULL);
	row->body = pg_get_bytes(r, i, 10, &row->len);
	row->attempts = (int)pg_get_i64(r, i, 11);
	row->created_ms = pg_get_i64(r, i, 12);
	row->since_ms = pg_get_i64(r, i, 13);
	row->next_attempt_ms = pg_get_i64(r, i, 14);
	row->last_attempt_ms = pg_get_i64(r, i, 15);
	row->last_status = (int)pg_get_i64(r, i, 16);
	row->last_error = pg_get_bytes(r, i, 17, NULL);
	sum = pg_get_bytes(r, i, 18, &sum_len);
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

int pg_tx(struct store_pg *p, struct pg_conn *pc, const char *sql, struct bridge_error *err)
{
	return pg_run_cmd(p, pc, sql, NULL, err, sql, NULL, NULL);
}

/* Commit the open transaction with a wake-up for every bridge (NOTIFY is
 * delivered at commit, and only then). */
int pg_notify_commit(struct store_pg *p, struct pg_conn *pc, struct bridge_error *err)
{
	if (pg_tx(p, pc, "SELECT pg_notify('" PG_CHANNEL "', '')", err) < 0)
		return -1;
	return pg_tx(p, pc, "COMMIT", err);
}

int pg_one_int(struct store_pg *p, const char *sql, const struct pg_params *q, int64_t *ret,
	       struct bridge_error *err, const char *what)
{
	PGresult *r = pg_query(p, sql, q, err, what);

	*ret = 0;
	if (!r)
		return -1;
	if (PQntuples(r) > 0)
		*ret = pg_get_i64(r, 0, 0);
	PQclear(r);
	return 0;
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
	hn = strlen(pg_nz(c->instance)) + 64;
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
	struct pg_params q = { 0 };

	pg_par_int(&q, now_ms);
	return pg_write(p,
			"INSERT INTO store_probe (k, at_ms) VALUES (1, $1)"
			" ON CONFLICT (k) DO UPDATE SET at_ms = EXCLUDED.at_ms",
			&q, err, "cannot write", NULL);
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
