/*
 * store: the durable table behind queued delivery.  One SQLite database in
 * WAL mode with synchronous=FULL: a function that writes returns only after
 * the change is on disk (fsync of the WAL), so a row store_insert() reported
 * survives a crash or a power cut.
 *
 * Rows:
 *  - A row is one v2 delivery exactly as it will be sent: endpoint URL, trust
 *    store, per-attempt timeout, headers (signature and delivery id included)
 *    and body, frozen at arrival, so every attempt is byte-identical.
 *  - `id` grows with arrival order and is never reused; it is the ID the
 *    `queue` command shows and takes.
 *  - status PENDING: waiting or in flight; DEAD: a dead letter, kept until
 *    retried or purged.  A delivered row is deleted.
 *  - A participation's line is its pending rows with the same route and
 *    participation id; only the oldest of a line (its head) is ever due, so
 *    they are delivered in arrival order.
 *  - At most one pending row per (route, participation id, state): a second
 *    insert of the same is reported as a duplicate and not stored.
 *  - A checksum (SHA-256) of what an attempt sends and where (endpoint,
 *    trust store, timeout, delivery id, headers, body) is written with the
 *    row and checked whenever the row is read (store_row.integrity): a row
 *    changed by a damaged disk or page reads back CORRUPT.  Rows written by
 *    schema 1 (before checksums; the column is added when such a store is
 *    opened) read back UNCHECKED: the caller checks them otherwise.
 *
 * Thread-safety: every function locks the store, so one struct store may be
 * used from several threads.  Other processes (the `queue` command) may use
 * the same file at the same time; SQLite locks it and waiting writers retry
 * for up to busy_timeout.  Times are Unix epoch milliseconds.
 */
#ifndef BRIDGE_STORE_H
#define BRIDGE_STORE_H

#include <stddef.h>
#include <stdint.h>
#include "bridge/diag.h"
#include "bridge/shared.h"
#include "bridge/upstream.h"

#define STORE_BODY_MAX     (16u * 1024 * 1024) /* one row's body */
#define STORE_HEADERS_MAX  32                  /* headers of one row */
#define STORE_TEXT_MAX     4096                /* route, endpoint, ids, one header value */
#define STORE_CHECKSUM_LEN 32                  /* SHA-256 */

enum store_status {
	STORE_PENDING = 0,
	STORE_DEAD = 1,
};

struct store;

enum store_open_flags {
	STORE_CREATE = 1u, /* create the file (mode 0600) and the schema if absent */
	STORE_VERIFY = 2u, /* run SQLite's quick_check first: a damaged store is refused
			    * with the command that saves what is readable */
	/* checkpoint the WAL on a thread of the store's own, beside the commits,
	 * not inside the commit that crosses SQLite's threshold (serve); without
	 * it SQLite checkpoints by itself, as one-shot commands need */
	STORE_CHECKPOINTER = 4u,
	/* zero the pages a deletion frees too (SQLite's secure_delete ON, about
	 * one more page written per delivered row); without it FAST: a deleted
	 * row's bytes are zeroed on the pages written anyway, and a freed page
	 * keeps its old bytes until it is reused */
	STORE_SECURE_DELETE = 8u,
};

/* busy_timeout_ms: how long a write waits for another process's lock. */
int store_open(const char *path, unsigned flags, int busy_timeout_ms, struct store **ret,
	       struct bridge_error *err);
void store_close(struct store *s); /* accepts NULL */

/* The checkpointer (STORE_CHECKPOINTER).  A checkpoint that fails is never
 * an error of a call: it is noted, once per kind of trouble over the
 * store's life, and store_checkpoint_warning hands each note out once (1
 * and its text in buf; 0 when there is none new).  Any thread. */
int store_checkpoint_warning(struct store *s, char *buf, size_t cap);
struct store_checkpoint_stats {
	long long runs;     /* checkpoints that went through */
	long long restarts; /* times the WAL started over from its beginning */
	int wal_pages;      /* frames in the WAL after the last commit */
	int backfilled;     /* of them, copied into the database */
};
/* -1 when the store has no checkpointer thread. */
int store_checkpoint_stats(struct store *s, struct store_checkpoint_stats *ret);
/* The frames that wake the checkpointer (1000, SQLite's default) and the
 * size past which it starts the WAL over (16384 frames): tests make them
 * small.  -1 without a checkpointer. */
int store_checkpoint_tune(struct store *s, int wake_pages, int bound_pages);

/* How the store is named in messages: the SQLite file, or the shared
 * store's URL (any password masked). */
const char *store_path(const struct store *s);

/* The same store on PostgreSQL, shared by several bridges (store_pg.h says
 * how; every function below works on both).  The connections open on first
 * use, and a first connection with STORE_CREATE creates or migrates the
 * schema; an unreachable database is an error of each call, not of this
 * one, so a bridge started while PostgreSQL is down recovers when it
 * returns.  Differences from the SQLite engine:
 *  - store_due claims: each row it returns is leased to this store (its
 *    holder, store_holder()) for shared_config.lease_ms, and no other
 *    store's store_due returns it before the lease expires; store_renew
 *    extends it while the attempt runs.
 *  - store_apply applies an outcome only while this store holds the row's
 *    lease, or no store does (a stale holder's outcome, once another store
 *    claimed the row, changes nothing).
 *  - store_changed_elsewhere always says 1; store_watch_fd is a socket that
 *    becomes readable when another bridge changed the store (after
 *    store_watch_drain returned > 0).
 */
int store_open_shared(const struct shared_config *c, unsigned flags, struct store **ret,
		      struct bridge_error *err);
int store_is_shared(const struct store *s);
/* The lease holder of a shared store ("instance/pid/random"); "" for SQLite. */
const char *store_holder(const struct store *s);
/* The schema version in the store (0: none yet; never creates it); -1 on
 * error.  store_schema_known: the version this build writes (shared). */
int store_schema_version(struct store *s, struct bridge_error *err);
int store_schema_known(void);
/* Extend the leases of these rows (SQLite: nothing to do, *ret_renewed = n). */
int store_renew(struct store *s, const int64_t *ids, size_t n, size_t *ret_renewed,
		struct bridge_error *err);
/* Give up every lease this store holds (a clean stop: other bridges take
 * the rows at once instead of after the lease).  SQLite: nothing to do. */
int store_release(struct store *s, struct bridge_error *err);
/* The wake-up socket (scheduler thread only), -1 when there is none (SQLite,
 * or the shared store is unreachable: poll).  drain: the number of wake-ups
 * read, -1 when the socket broke (ask store_watch_fd again later). */
int store_watch_fd(struct store *s);
int store_watch_drain(struct store *s);

/* What one delivery is made of; every string is copied. */
struct store_item {
	const char *route;
	const char *endpoint; /* http(s) URL posted to */
	const char *ca_file;  /* trust store for https; NULL or "" = system default */
	int timeout_ms;       /* per attempt */
	const char *delivery_id;
	const char *participation_id; /* NULL or "": no line, no duplicate check */
	const char *state;            /* NULL or "" allowed */
	const void *body;
	size_t len;
	const struct upstream_header *headers;
	size_t n_headers;
	const struct store_seal *seal; /* NULL: store_insert works it out under its lock */
};

/* What store_insert works out of an item before it writes the row: the
 * headers as stored and the row's checksum.  A caller that makes it on its
 * own thread (queue_enqueue_async, on the worker that took the post) spares
 * the store's writer that work while it holds the store. */
struct store_seal {
	char *headers_text; /* owned */
	unsigned char checksum[STORE_CHECKSUM_LEN];
};
int store_seal_make(const struct store_item *it, struct store_seal *ret);   /* -1: out of memory */
int store_seal_copy(const struct store_seal *from, struct store_seal *ret); /* -1: out of memory */
void store_seal_clear(struct store_seal *seal); /* accepts a zeroed one */

/* Checks an item against the limits above and header syntax (no CR, LF, NUL;
 * ':' not in names). */
int store_item_check(const struct store_item *it, struct bridge_error *err);

enum store_insert_result {
	STORE_INSERTED = 0,
	STORE_DUPLICATE = 1, /* same route, participation and state already pending */
};

struct store_receipt {
	int64_t id;            /* the new row, or the pending one it duplicates */
	char delivery_id[128]; /* of that row */
};

/* Insert n items in one transaction (one fsync): all or none.  ret_results[i]
 * and receipts[i] (both may be NULL) say what happened to items[i].  -1 on a
 * store error (disk full, I/O error, locked for longer than busy_timeout):
 * nothing was stored. */
int store_insert(struct store *s, const struct store_item *const *items, size_t n, int64_t now_ms,
		 int *ret_results, struct store_receipt *receipts, struct bridge_error *err);

/* One row as read back.  Owns its strings; release with store_row_clear. */
struct store_row {
	int64_t id;
	int status;
	char *route;
	char *endpoint;
	char *ca_file; /* "" = system default */
	int timeout_ms;
	char *delivery_id;
	char *participation_id;          /* "" when none */
	char *state;                     /* "" when none */
	struct upstream_header *headers; /* point into the row */
	size_t n_headers;
	char *body; /* NUL-terminated for convenience; len excludes the NUL */
	size_t len;
	int attempts;
	int64_t created_ms; /* arrival */
	int64_t since_ms;   /* start of the current delivery cycle (arrival or last retry) */
	int64_t next_attempt_ms;
	int64_t last_attempt_ms; /* 0 = never attempted */
	int last_status;         /* HTTP status of the last attempt, 0 if none */
	char *last_error;        /* "" when none */
	char *headers_text;      /* storage behind headers */
	int integrity;           /* enum store_row_integrity, checked when read */
	unsigned char checksum[STORE_CHECKSUM_LEN]; /* as stored (checksum_len bytes) */
	size_t checksum_len;
};

enum store_row_integrity {
	STORE_ROW_INTACT = 0,    /* matches the checksum written with it */
	STORE_ROW_CORRUPT = 1,   /* does not: never send it */
	STORE_ROW_UNCHECKED = 2, /* written before checksums (schema 1) */
};
const char *store_row_integrity_name(int integrity); /* "intact", "corrupt", "unchecked" */
void store_row_clear(struct store_row *r);           /* accepts a zeroed or cleared row */

/* A lane is the (endpoint, trust store) pair deliveries go out through. */
struct store_lane {
	char *endpoint;
	char *ca_file;
};
/* Distinct lanes of the pending rows (at most max); *ret is a malloc'd array
 * the caller frees with store_lanes_free. */
int store_lanes(struct store *s, size_t max, struct store_lane **ret, size_t *ret_n,
		struct bridge_error *err);
void store_lanes_free(struct store_lane *l, size_t n);

/* Rows of one lane that may be attempted now: pending, next_attempt_ms <=
 * now_ms, and the head of their participation's line; earliest first, at
 * most max.  rows must have room for max; *ret_n rows are filled. */
int store_due(struct store *s, const char *endpoint, const char *ca_file, int64_t now_ms,
	      struct store_row *rows, size_t max, size_t *ret_n, struct bridge_error *err);
/* The same, passing over the rows whose id is in skip (n_skip of them: the
 * attempts under way, which stay pending on SQLite until their outcome is
 * stored) before reading them, so they neither count towards max nor cost a
 * read and a checksum.  A shared store's claims never return a row leased to
 * anyone, so skip changes nothing there. */
int store_due_except(struct store *s, const char *endpoint, const char *ca_file, int64_t now_ms,
		     const int64_t *skip, size_t n_skip, struct store_row *rows, size_t max,
		     size_t *ret_n, struct bridge_error *err);

/* Earliest next_attempt_ms > after_ms among the lane's pending rows; 0 when
 * none. */
int store_next_wake(struct store *s, const char *endpoint, const char *ca_file, int64_t after_ms,
		    int64_t *ret, struct bridge_error *err);

/* Outcome of an attempt.  They affect 0 rows (and succeed) when the row was
 * purged or retried meanwhile: store_failed/store_dead only touch a row
 * whose attempts still equal attempts_before. */
int store_delivered(struct store *s, int64_t id, struct bridge_error *err);
int store_failed(struct store *s, int64_t id, int attempts_before, int64_t now_ms,
		 int64_t next_attempt_ms, int last_status, const char *last_error,
		 struct bridge_error *err);
/* attempted: 1 when it follows an attempt (counted, last_attempt = now), 0
 * when the row expired without one. */
int store_dead(struct store *s, int64_t id, int attempts_before, int attempted, int64_t now_ms,
	       int last_status, const char *last_error, struct bridge_error *err);

/* The same three outcomes, several in one transaction (one fsync). */
enum store_outcome_kind {
	STORE_OUT_DELIVERED,
	STORE_OUT_FAILED,
	STORE_OUT_DEAD,
};

struct store_outcome {
	enum store_outcome_kind kind;
	int64_t id;
	int attempts_before;
	int attempted; /* DEAD only */
	int64_t now_ms;
	int64_t next_attempt_ms; /* FAILED only */
	int last_status;
	const char *last_error;
};
int store_apply(struct store *s, const struct store_outcome *o, size_t n, struct bridge_error *err);

struct store_counts {
	int64_t pending;
	int64_t dead;
	int64_t oldest_created_ms; /* of the pending rows, 0 when none */
};
int store_count(struct store *s, struct store_counts *ret, struct bridge_error *err);
/* One route's rows, as store_count_routes reports them. */
struct store_route_counts {
	const char *route; /* valid during the callback */
	int64_t pending;
	int64_t dead;
	int64_t oldest_created_ms; /* of the pending rows, 0 when none */
};
/* cb once per route that has rows, in route order; a non-zero return from cb
 * stops the walk and is returned.  One pass over the age index (no row is
 * read), on SQLite on a connection of its own without the store's lock, so
 * the writers do not wait for it; one thread at a time.  A shared store's
 * gauges at each scrape. */
int store_count_routes(struct store *s, int (*cb)(const struct store_route_counts *c, void *arg),
		       void *arg, struct bridge_error *err);
/* The same in two steps, for the queue's own counts at start and after
 * another process changed the store: store_snapshot_begin fixes what the
 * count will see (the rows of every transaction committed so far; the
 * caller makes sure that none of its own is half done; nothing on
 * PostgreSQL), store_count_routes_snapshot counts on it, then lets it go. */
int store_snapshot_begin(struct store *s, struct bridge_error *err);
int store_count_routes_snapshot(struct store *s,
				int (*cb)(const struct store_route_counts *c, void *arg), void *arg,
				struct bridge_error *err);
/* Only oldest_created_ms: cheap (one index seek per route), for every /metrics
 * scrape. */
int store_oldest(struct store *s, int64_t *ret, struct bridge_error *err);
/* The oldest pending row of one route (0 when none): one index seek.  SQLite
 * stores only (a shared store counts per route in PostgreSQL). */
int store_route_oldest(struct store *s, const char *route, int64_t *ret, struct bridge_error *err);

/* 1 when another process committed a change since the previous call (or
 * since opening), else 0; -1 on error. */
int store_changed_elsewhere(struct store *s, struct bridge_error *err);

/* About what the row of an item takes in the store: its body, header lines
 * and texts. */
size_t store_item_bytes(const struct store_item *it);

/* One durable write that changes no delivery: whether the store can be
 * written again after a failure.  bytes > 0: the write is at least as large
 * as the insert of an item of that many bytes (store_item_bytes) with its
 * index entries would be, so that it goes through only where such a post
 * would (SQLite; PostgreSQL writes its one small row, its refusals being of
 * the server, not of a row's size).  0 or -1. */
int store_probe(struct store *s, int64_t now_ms, size_t bytes, struct bridge_error *err);

/* ---- recovery of a damaged store (the `queue recover` command) ---- */

struct store_recover_report {
	int64_t saved;      /* rows written to the new store */
	int64_t pending;    /* of them */
	int64_t dead;       /* of them, the corrupt ones included */
	int64_t corrupt;    /* rows read whose checksum did not match: saved as dead letters */
	int64_t unreadable; /* ids SQLite could not read (some may have been delivered
			     * and deleted before the damage: nothing tells them apart) */
	int64_t highest_id; /* the highest id the damaged store had given out */
	char unreadable_ids[256]; /* "41-58, 77", cut with "..." */
	char first_error[256];    /* what SQLite said at the first unreadable id */
	/* tables of the store that are not the bridge's deliveries (the cutover
	 * state may live there), copied as they are */
	int64_t other_rows;
	char other_tables[256];  /* their names, "" when none */
	char other_damaged[256]; /* those whose copy stopped at a read error */
};

/* Read every row of the store at `damaged` that SQLite can still read (the
 * damaged file is only read) and write them with their ids, headers, body,
 * checksum and attempt state into a new store at `out` (which must not
 * exist; created 0600, the ids given out stay given out), and every other
 * table of the store with its readable rows.  A row whose
 * checksum does not match is saved as a dead letter saying so.  0 and the
 * report, or -1 when nothing could be written (out exists, the damaged
 * file's schema cannot be read...). */
int store_recover(const char *damaged, const char *out, struct store_recover_report *ret,
		  struct bridge_error *err);

/* ---- the shared dry-run shadow store (PostgreSQL engine only) ----
 *
 * What shadow.c keeps in memory on one bridge, kept in the shared store so
 * that the translated v2 and the real v2 of one participation meet
 * whichever bridges took them.  Each key (route, upper-cased id, upper-cased
 * state) is handled under its own advisory lock, so an offer either takes
 * the other side (exactly once: it is deleted in the same transaction) or
 * stores its own.  Ages are in the database's clock.  The SQLite engine has
 * none of this (the shadow store stays in memory): -1. */

struct store_shadow_offer {
	const char *route, *id_key, *state_key; /* the key */
	int side;                               /* enum shadow_side */
	const char *participation_id, *state;   /* as offered */
	const char *body;                       /* bytes kept (none when too_large) */
	size_t len;
	long long body_len; /* bytes offered */
	int too_large;
	const char *trace; /* NUL-terminated, or NULL */
	int trace_dropped;
	unsigned key_hash; /* the key's advisory lock */
};

/* An entry read back; every string malloc'd (store_shadow_entry_clear). */
struct store_shadow_entry {
	int present;
	int side;
	char *route, *participation_id, *state, *instance;
	char *body; /* NUL-terminated; len bytes */
	size_t len;
	long long body_len;
	int too_large;
	char *trace; /* NULL when none */
	size_t trace_len;
	int trace_dropped;
	long long age_ms;
};
void store_shadow_entry_clear(struct store_shadow_entry *e);

/* Offer one side: 1 and *ret_other when the other side waited (younger
 * than ttl_ms; it is gone from the store now), else 0 with the offer stored
 * (*ret_duplicate 1 when it replaced a waiting entry of its side).  An entry
 * of the key older than ttl_ms met on the way is removed and returned in
 * *ret_expired.  Counts the offer ("seen_*", "duplicates", "expired_*"). */
int store_shadow_offer(struct store *s, const struct store_shadow_offer *o, long ttl_ms,
		       struct store_shadow_entry *ret_other, struct store_shadow_entry *ret_expired,
		       int *ret_duplicate, struct bridge_error *err);

/* One difference of a comparison, for the cluster's totals. */
struct store_shadow_path {
	const char *path;
	int kind;         /* enum jsondiff_kind: 0 added, 1 removed, 2 changed */
	const char *rule; /* "file:line", "unmapped" or NULL */
};
/* Add to the cluster's counters (names as shadow_summary_json's, e.g.
 * "identical") and differing paths, in one transaction. */
int store_shadow_count(struct store *s, const char *const *names, const long long *n, size_t k,
		       const struct store_shadow_path *paths, size_t n_paths,
		       struct bridge_error *err);

/* The cluster's totals: count_cb per counter, path_cb per differing path
 * (most counted first, at most max_paths; rule: the one most often named,
 * or NULL), waiting[side] the entries waiting now. */
struct store_shadow_path_total {
	const char *path;
	long long count, added, removed, changed, unmapped;
	const char *rule;
	long long rule_n;
};
int store_shadow_totals(struct store *s, size_t max_paths,
			void (*count_cb)(const char *name, long long n, void *arg),
			void (*path_cb)(const struct store_shadow_path_total *t, void *arg),
			void *arg, long long waiting[2], struct bridge_error *err);

/* Remove what waited ttl_ms or longer, then the oldest beyond max_entries,
 * and pass each to cb with reason "ttl" or "capacity" (after the commit).
 * One bridge at a time: when another holds the sweep's lock, nothing is
 * done and *ret_swept is 0. */
int store_shadow_sweep(struct store *s, long ttl_ms, size_t max_entries,
		       void (*cb)(const struct store_shadow_entry *e, const char *reason,
				  void *arg),
		       void *arg, int *ret_swept, struct bridge_error *err);

/* ---- the shared cutover state (PostgreSQL engine only) ----
 * The rows of cutover.h's store, one per dual route, in table
 * cutover_state; every write takes the next number of a sequence, so a
 * bridge tells another's change by the highest number (store_cutover_version).
 * The SQLite engine keeps them itself (cutover_store.c): -1 here. */
int store_cutover_load(struct store *s,
		       int (*cb)(const char *route, int ramp, int status, long long changed_ms,
				 const char *by, void *arg),
		       void *arg, struct bridge_error *err);
/* Store one route's row; only_if_absent: keep a row already there
 * (*ret_inserted 0). */
int store_cutover_put(struct store *s, const char *route, int ramp, int status,
		      long long changed_ms, const char *by, int only_if_absent, int *ret_inserted,
		      struct bridge_error *err);
int store_cutover_version(struct store *s, long long *ret, struct bridge_error *err);

/* ---- operator commands (the `queue` command) ---- */

struct store_filter {
	int status;             /* STORE_PENDING, STORE_DEAD, or -1 for both */
	const char *route;      /* NULL = any */
	int64_t created_before; /* 0 = any */
	int64_t limit;          /* 0 = no limit (list only) */
	int newest_first;       /* list only */
};
void store_filter_init(struct store_filter *f); /* both statuses, no limit */

/* Calls cb for each matching row in id order (body and headers included);
 * a callback returning non-zero stops the walk. */
int store_list(struct store *s, const struct store_filter *f,
	       int (*cb)(const struct store_row *row, void *arg), void *arg,
	       struct bridge_error *err);

/* 0 and the row, 1 when no row has this id, -1 on error. */
int store_get(struct store *s, int64_t id, struct store_row *ret, struct bridge_error *err);

enum store_retry_result {
	STORE_RETRY_DONE = 0,
	STORE_RETRY_NOT_FOUND = 1,
	STORE_RETRY_DUPLICATE = 2, /* a pending row of the same participation and state exists */
};
/* A dead letter becomes pending again with a fresh cycle (attempts 0,
 * since = now); a pending row becomes due now.  Returns the result or -1. */
int store_retry(struct store *s, int64_t id, int64_t now_ms, struct bridge_error *err);
/* Every dead letter matching f (status ignored) back to pending; those that
 * would duplicate a pending row stay dead and are counted in *ret_skipped. */
int store_retry_dead(struct store *s, const struct store_filter *f, int64_t now_ms, int64_t *ret_n,
		     int64_t *ret_skipped, struct bridge_error *err);

/* Delete one row: 0 deleted, 1 no such row, -1 error. */
int store_purge_id(struct store *s, int64_t id, struct bridge_error *err);
/* Delete every row matching f (limit ignored). */
int store_purge(struct store *s, const struct store_filter *f, int64_t *ret_n,
		struct bridge_error *err);

#endif
