/*
 * The SQLite engine of the store, shared by its files: store.c (schema,
 * open, insert, the scheduler's queries, the helpers below),
 * store_operator.c (the queue command's list, show, retry and purge),
 * store_recover.c (queue recover) and store_checkpoint.c (serve's WAL
 * checkpoints on a thread of their own).  Private to them; everyone else sees
 * include/bridge/store.h.  The helpers take no lock: a caller that shares s
 * with other threads holds s->mu around them.
 */
#ifndef BRIDGE_STORE_TYPES_H
#define BRIDGE_STORE_TYPES_H

#include <pthread.h>
#include <stdint.h>

#include <sqlite3.h>

#include "bridge/diag.h"
#include "bridge/store.h"

#define STORE_APPLICATION_ID 0x57484251 /* "WHBQ" in the database header */
#define STORE_SCHEMA_VERSION 3

/* The columns store_row_read reads, in its order; store_recover writes them back
 * in the same order. */
#define ROW_COLUMNS_BASE                                                                         \
	"d.id, d.status, d.route, d.endpoint, d.ca_file, d.timeout_ms, d.delivery_id,"           \
	" d.participation_id, d.state, d.headers, d.body, d.attempts, d.created_ms, d.since_ms," \
	" d.next_attempt_ms, d.last_attempt_ms, d.last_status, d.last_error"
#define ROW_COLUMNS   ROW_COLUMNS_BASE ", d.checksum"
#define ROW_N_COLUMNS 19

enum stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_FIND_DUP,
	ST_INSERT,
	ST_LANE_FIRST,
	ST_LANE_NEXT,
	ST_LANE_CA_FIRST,
	ST_LANE_CA_NEXT,
	ST_DUE,
	ST_NEXT_WAKE,
	ST_DELIVERED,
	ST_FAILED,
	ST_DEAD,
	ST_COUNT,
	ST_COUNT_ROUTES,
	ST_OLDEST,
	ST_ROUTE_OLDEST,
	ST_GET,
	ST_RETRY_DEAD,
	ST_RETRY_PENDING,
	ST_PURGE_ID,
	ST_DATA_VERSION,
	ST_PROBE,
	ST_PROBE_PAD,
	ST_SYNC_NORMAL,
	ST_SYNC_FULL,
	ST_N
};

struct store_checkpointer;

/* What the checkpointer notes (store_checkpoint_warning). */
enum ckpt_warning {
	CKPT_WARN_START,   /* no thread: SQLite's automatic checkpoint stays */
	CKPT_WARN_PASSIVE, /* a checkpoint failed */
	CKPT_WARN_RESTART, /* the WAL could not start over */
	CKPT_WARN_N
};

struct store {
	struct store_pg *pg; /* the PostgreSQL engine; NULL: SQLite (the rest) */
	sqlite3 *db;
	pthread_mutex_t mu;
	/* a connection of its own for the long count per route (store_snapshot_begin),
	 * opened at its first use, one thread at a time, never under mu */
	sqlite3 *rdb;
	sqlite3_stmt *rdb_count;
	int busy_ms;
	int64_t busy_since; /* db: when the wait for another process's lock began */
	char *path;
	sqlite3_stmt *st[ST_N];
	int64_t data_version;
	int sync_relaxed; /* synchronous=NORMAL left set: the next transaction restores FULL */
	struct store_checkpointer *ckpt; /* STORE_CHECKPOINTER: the WAL's thread, or NULL */
	/* the checkpointer's warnings, one per kind: bits of enum ckpt_warning */
	pthread_mutex_t warning_mu;
	unsigned warned, warnings_taken;
	char warning[CKPT_WARN_N][300];
};

/* store_checkpoint.c.  start: the checkpointer's connection and thread, or
 * (a warning noted) SQLite's automatic checkpoint kept; s->db must not be
 * used by another thread meanwhile.  stop: joined and closed, before s->db
 * closes; accepts a store without one. */
void store_checkpointer_start(struct store *s);
void store_checkpointer_stop(struct store *s);
/* A writer that locks s->mu again and again calls this first: while the
 * checkpointer waits for s->mu, it waits until the checkpointer has it. */
void store_checkpointer_yield(struct store *s);

/* "queue store PATH: what: SQLite's message (a hint)" into err; -1. */
int store_sql_fail(struct store *s, struct bridge_error *err, const char *what);
/* The same for another of the store's connections. */
int store_sql_fail_on(struct store *s, sqlite3 *db, struct bridge_error *err, const char *what);
/* A prepared statement, reset and unbound, or NULL with err set. */
sqlite3_stmt *store_stmt(struct store *s, enum stmt_id id, struct bridge_error *err);
/* Run a statement that returns no rows.  0 or -1. */
int store_step_done(struct store *s, sqlite3_stmt *st, struct bridge_error *err, const char *what);
/* One integer (or 0 for NULL) from a statement with bound parameters. */
int store_step_int(struct store *s, sqlite3_stmt *st, int64_t *ret, struct bridge_error *err,
		   const char *what);
/* A one-statement write: autocommit makes it its own durable transaction;
 * the rows it changed into *ret_changes (may be NULL). */
int store_write_one(struct store *s, sqlite3_stmt *st, struct bridge_error *err, const char *what,
		    int64_t *ret_changes);
/* SQL text run as it is (schema, pragmas).  0 or -1. */
int store_exec_sql(struct store *s, const char *sql, struct bridge_error *err);
int store_tx_begin(struct store *s, struct bridge_error *err);
int store_tx_commit(struct store *s, struct bridge_error *err);
/* After a failure: a failed COMMIT may already have rolled back. */
void store_tx_abort(struct store *s);
/* The current row of a statement selecting ROW_COLUMNS into r (owned by r:
 * store_row_clear), r->integrity set from its checksum.  0, or -1 (out of
 * memory, or headers that do not parse) with r cleared. */
int store_row_read(sqlite3_stmt *st, struct store_row *r);

#endif
