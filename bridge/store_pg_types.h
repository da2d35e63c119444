/*
 * The PostgreSQL engine of the store, shared by its files: store_pg.c
 * (connections, statements, open and close, the wake-up connection),
 * store_pg_schema.c (tables and migration), store_pg_queue.c (inserts,
 * claims, leases, outcomes, counts), store_pg_operator.c (the queue
 * command), store_pg_shadow.c (the shadow store) and store_pg_cutover.c
 * (the cutover state).  Private to them; store.c sees
 * include/bridge/store_pg.h.
 */
#ifndef BRIDGE_STORE_PG_TYPES_H
#define BRIDGE_STORE_PG_TYPES_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "bridge/diag.h"
#include "bridge/store_pg.h"

#define PG_SCHEMA_VERSION 4
#define PG_CHANNEL        "webhook_bridge_queue" /* LISTEN/NOTIFY of queue changes */

/* The columns pg_row_read reads, in its order. */
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

/* Parameters of one statement: text, or bytes sent as they are (bytea). */
struct pg_params {
	int n;
	const char *v[12];
	int len[12];
	int fmt[12];
	char num[12][24];
};

/* "shared store NAME: what: libpq's message on one line" into err; -1. */
int pg_fail(struct store_pg *p, struct bridge_error *err, const char *what, const char *msg);

/* A connection of the pool for this thread, connected, with the schema in
 * place when `migrate` (pg_conn_take: always); NULL with err.  Given back
 * with pg_conn_give, which rolls back a transaction left open. */
struct pg_conn *pg_conn_take_raw(struct store_pg *p, int migrate, struct bridge_error *err);
struct pg_conn *pg_conn_take(struct store_pg *p, struct bridge_error *err);
void pg_conn_give(struct store_pg *p, struct pg_conn *pc);

void pg_par_text(struct pg_params *q, const char *s);
void pg_par_bytes(struct pg_params *q, const void *b, size_t n);
void pg_par_int(struct pg_params *q, int64_t v);
const char *pg_nz(const char *s); /* s, or "" for NULL */

/* Run sql; the result when its status is `want`, else NULL with err set
 * (and *ret_state the SQLSTATE when there is one). */
PGresult *pg_run(struct store_pg *p, struct pg_conn *pc, const char *sql, const struct pg_params *q,
		 ExecStatusType want, struct bridge_error *err, const char *what, char *ret_state);
/* A statement whose rows are not read: 0, or -1 with err (and the SQLSTATE);
 * the rows it changed into *ret_changes (may be NULL). */
int pg_run_cmd(struct store_pg *p, struct pg_conn *pc, const char *sql, const struct pg_params *q,
	       struct bridge_error *err, const char *what, int64_t *ret_changes, char *ret_state);
/* pg_run (rows wanted) on a connection of the pool, taken for this statement alone. */
PGresult *pg_query(struct store_pg *p, const char *sql, const struct pg_params *q,
		   struct bridge_error *err, const char *what);
/* One statement on a connection of the pool taken for it alone (autocommit:
 * its own transaction); pg_run_cmd's result. */
int pg_write(struct store_pg *p, const char *sql, const struct pg_params *q,
	     struct bridge_error *err, const char *what, int64_t *ret_changes);
/* SQL without parameters (BEGIN, COMMIT ...), its text its error's `what`. */
int pg_tx(struct store_pg *p, struct pg_conn *pc, const char *sql, struct bridge_error *err);
/* Commit the open transaction with a wake-up for every bridge. */
int pg_notify_commit(struct store_pg *p, struct pg_conn *pc, struct bridge_error *err);

/* The first column of the first row (0 without a row) of a query. */
int pg_one_int(struct store_pg *p, const char *sql, const struct pg_params *q, int64_t *ret,
	       struct bridge_error *err, const char *what);

int64_t pg_get_i64(const PGresult *r, int row, int col); /* 0 for NULL */
char *pg_get_text(const PGresult *r, int row, int col);  /* malloc'd; "" for NULL */
/* A bytea column (text format, hex) as a NUL-terminated malloc'd copy. */
char *pg_get_bytes(const PGresult *r, int row, int col, size_t *ret_len);
/* Row i of a result selecting ROW_COLUMNS into row (owned by row:
 * store_row_clear), row->integrity set from its checksum; 0, or -1 with row
 * cleared. */
int pg_row_read(const PGresult *r, int i, struct store_row *row);

/* Creates or migrates the schema on c (store_pg_schema.c). */
int pg_schema_migrate(struct store_pg *p, PGconn *c, struct bridge_error *err);

#endif
