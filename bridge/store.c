/*
 * store: SQLite behind the queue.
 *
 * Why SQLite: its WAL mode with synchronous=FULL makes every committed
 * transaction durable (the WAL is fsync'ed before COMMIT returns), its
 * recovery after a crash or power loss is among the most tested code there
 * is, and it lets another process (the `queue` command) read and change the
 * same file while serve runs, with locking it handles itself.
 *
 * One connection, opened without SQLite's own mutex (SQLITE_OPEN_NOMUTEX):
 * store.mu serialises every use of it and of its prepared statements, so the
 * error message read after a failure is the one of that failure.  With
 * STORE_CHECKPOINTER a second one, the checkpointer thread's own, copies the
 * WAL into the database (store_checkpoint.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bridge/clock.h"
#include "bridge/diag.h"
#include "bridge/sign.h"
#include "bridge/store.h"
#include "bridge/store_pg.h"
#include "store_types.h"


/* The schema of version 3.  Partial indexes serve the three questions asked
 * all the time: what is due on a lane (due), is a row the head of its
 * participation's line and is an item a duplicate (line, unique), and how
 * old is each route's oldest pending row (age: one seek per route, so a
 * /metrics scrape does not read every row under the store's lock).  The
 * statements name their index (INDEXED BY): without statistics the planner
 * once chose the age index for the line check, a scan of every pending row
 * per candidate; with the name, a plan that cannot use the index fails to
 * prepare instead of going slow. */
static const char schema_sql[] =
	"CREATE TABLE deliveries ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" status INTEGER NOT NULL DEFAULT 0,"
	" route TEXT NOT NULL,"
	" endpoint TEXT NOT NULL,"
	" ca_file TEXT NOT NULL DEFAULT '',"
	" timeout_ms INTEGER NOT NULL,"
	" delivery_id TEXT NOT NULL,"
	" participation_id TEXT NOT NULL DEFAULT '',"
	" state TEXT NOT NULL DEFAULT '',"
	" headers TEXT NOT NULL,"
	" body BLOB NOT NULL,"
	" attempts INTEGER NOT NULL DEFAULT 0,"
	" created_ms INTEGER NOT NULL,"
	" since_ms INTEGER NOT NULL,"
	" next_attempt_ms INTEGER NOT NULL,"
	" last_attempt_ms INTEGER NOT NULL DEFAULT 0,"
	" last_status INTEGER NOT NULL DEFAULT 0,"
	" last_error TEXT NOT NULL DEFAULT '',"
	" checksum BLOB NOT NULL DEFAULT x'');"
	"CREATE TABLE store_probe (k INTEGER PRIMARY KEY CHECK (k = 1), at_ms INTEGER NOT NULL);"
	"CREATE INDEX deliveries_due ON deliveries (endpoint, ca_file, next_attempt_ms)"
	" WHERE status = 0;"
	"CREATE UNIQUE INDEX deliveries_line ON deliveries (route, participation_id, state)"
	" WHERE status = 0 AND participation_id <> '';"
	"CREATE INDEX deliveries_age ON deliveries (status, route, created_ms);";

/* Version 1 had no checksum: its rows keep an empty one (store.h says how
 * they are checked instead), and no probe table. */
static const char migrate_v1_sql[] =
	"ALTER TABLE deliveries ADD COLUMN checksum BLOB NOT NULL DEFAULT x'';"
	"CREATE TABLE store_probe (k INTEGER PRIMARY KEY CHECK (k = 1), at_ms INTEGER NOT NULL);";

/* Versions 1 and 2 had the age index without the route. */
static const char migrate_v2_sql[] =
	"DROP INDEX IF EXISTS deliveries_age;"
	"CREATE INDEX deliveries_age ON deliveries (status, route, created_ms);";


static const char *const stmt_sql[ST_N] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_FIND_DUP] = "SELECT id, delivery_id FROM deliveries INDEXED BY deliveries_line"
			" WHERE status = 0 AND participation_id <> '' AND route = ?1"
			" AND participation_id = ?2 AND state = ?3",
	[ST_INSERT] = "INSERT INTO deliveries (route, endpoint, ca_file, timeout_ms, delivery_id,"
		      " participation_id, state, headers, body, created_ms, since_ms,"
		      " next_attempt_ms, checksum)"
		      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?10, ?11)",
	/* the lanes with pending rows, one seek each: a DISTINCT reads every row's
	 * entry (a tenth of a second at a million rows, under the store's lock),
	 * and so does a row-value range, (endpoint, ca_file) > (?, ?), which
	 * seeks on the endpoint alone */
	[ST_LANE_FIRST] = "SELECT MIN(endpoint) FROM deliveries INDEXED BY deliveries_due"
			  " WHERE status = 0",
	[ST_LANE_NEXT] = "SELECT MIN(endpoint) FROM deliveries INDEXED BY deliveries_due"
			 " WHERE status = 0 AND endpoint > ?1",
	[ST_LANE_CA_FIRST] = "SELECT MIN(ca_file) FROM deliveries INDEXED BY deliveries_due"
			     " WHERE status = 0 AND endpoint = ?1",
	[ST_LANE_CA_NEXT] = "SELECT MIN(ca_file) FROM deliveries INDEXED BY deliveries_due"
			    " WHERE status = 0 AND endpoint = ?1 AND ca_file > ?2",
	/* the head of a line: no older pending row of the same participation */
	[ST_DUE] = "SELECT " ROW_COLUMNS " FROM deliveries AS d INDEXED BY deliveries_due"
		   " WHERE d.status = 0 AND d.endpoint = ?1 AND d.ca_file = ?2"
		   " AND d.next_attempt_ms <= ?3"
		   " AND NOT EXISTS (SELECT 1 FROM deliveries AS p INDEXED BY deliveries_line"
		   " WHERE p.status = 0 AND p.participation_id <> '' AND p.route = d.route"
		   " AND p.participation_id = d.participation_id AND p.id < d.id)"
		   " ORDER BY d.next_attempt_ms, d.id LIMIT ?4",
	[ST_NEXT_WAKE] = "SELECT MIN(next_attempt_ms) FROM deliveries INDEXED BY deliveries_due"
			 " WHERE status = 0 AND endpoint = ?1 AND ca_file = ?2"
			 " AND next_attempt_ms > ?3",
	[ST_DELIVERED] = "DELETE FROM deliveries WHERE id = ?1 AND status = 0",
	[ST_FAILED] = "UPDATE deliveries SET attempts = ?2 + 1, last_attempt_ms = ?3,"
		      " next_attempt_ms = ?4, last_status = ?5, last_error = ?6"
		      " WHERE id = ?1 AND status = 0 AND attempts = ?2",
	[ST_DEAD] = "UPDATE deliveries SET status = 1, attempts = ?2 + ?3,"
		    " last_attempt_ms = CASE WHEN ?3 THEN ?4 ELSE last_attempt_ms END,"
		    " last_status = ?5, last_error = ?6"
		    " WHERE id = ?1 AND status = 0 AND attempts = ?2",
	[ST_COUNT] = "SELECT status, COUNT(*), MIN(created_ms) FROM deliveries GROUP BY status",
	[ST_COUNT_ROUTES] = "SELECT route, status, COUNT(*), MIN(created_ms)"
			    " FROM deliveries INDEXED BY deliveries_age"
			    " GROUP BY route, status ORDER BY route, status",
	/* the routes with pending rows, one seek each (SQLite has no skip-scan
	 * without statistics), then the oldest of each route's oldest */
	[ST_OLDEST] =
		"WITH RECURSIVE r(route) AS (SELECT (SELECT MIN(route) FROM deliveries"
		" INDEXED BY deliveries_age WHERE status = 0)"
		" UNION ALL SELECT (SELECT MIN(route) FROM deliveries INDEXED BY deliveries_age"
		" WHERE status = 0 AND route > r.route) FROM r WHERE r.route IS NOT NULL)"
		" SELECT MIN((SELECT MIN(created_ms) FROM deliveries INDEXED BY deliveries_age"
		" WHERE status = 0 AND route = r.route)) FROM r WHERE r.route IS NOT NULL",
	[ST_ROUTE_OLDEST] = "SELECT MIN(created_ms) FROM deliveries INDEXED BY deliveries_age"
			    " WHERE status = 0 AND route = ?1",
	[ST_GET] = "SELECT " ROW_COLUMNS " FROM deliveries AS d WHERE d.id = ?1",
	[ST_RETRY_DEAD] = "UPDATE deliveries SET status = 0, attempts = 0, since_ms = ?2,"
			  " next_attempt_ms = ?2 WHERE id = ?1 AND status = 1",
	[ST_RETRY_PENDING] = "UPDATE deliveries SET next_attempt_ms = ?2"
			     " WHERE id = ?1 AND status = 0",
	[ST_PURGE_ID] = "DELETE FROM deliveries WHERE id = ?1",
	[ST_SYNC_NORMAL] = "PRAGMA synchronous = NORMAL",
	[ST_SYNC_FULL] = "PRAGMA synchronous = FULL",
	[ST_DATA_VERSION] = "PRAGMA data_version",
	[ST_PROBE] = "INSERT OR REPLACE INTO store_probe (k, at_ms) VALUES (1, ?1)",
	/* the probe of a post's size: the pad takes at_ms's place (nobody reads
	 * the row, and a table that is not STRICT holds a value of any type in
	 * any column), so the schema stays as it is; the next small probe writes
	 * the time again and leaves the pad's pages free for the posts */
	[ST_PROBE_PAD] = "INSERT OR REPLACE INTO store_probe (k, at_ms) VALUES (1, zeroblob(?1))",
};


/* ------------------------------------------------------------------ */
/* helpers */

int store_sql_fail(struct store *s, struct bridge_error *err, const char *what)
{
	return store_sql_fail_on(s, s->db, err, what);
}

int store_sql_fail_on(struct store *s, sqlite3 *db, struct bridge_error *err, const char *what)
{
	int code = sqlite3_errcode(db);
	const char *hint = "";

	if (code == SQLITE_FULL)
		hint = " (the disk or the store's file system is full)";
	else if (code == SQLITE_BUSY)
		hint = " (another process held the store's write lock too long)";
	else if (code == SQLITE_IOERR)
		hint = " (a write failed: full or failing disk, or a file size limit)";
	else if (code == SQLITE_READONLY)
		hint = " (no write permission on the store or its folder)";
	else if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB)
		hint = " (the store is damaged: `webhook-bridge queue recover` saves what is "
		       "readable into a new store)";
	return bridge_error_set(err, "queue store %s: %s: %s%s", s->path, what, sqlite3_errmsg(db),
				hint);
}

/* A prepared statement, reset and unbound, or NULL with err set. */
sqlite3_stmt *store_stmt(struct store *s, enum stmt_id id, struct bridge_error *err)
{
	sqlite3_stmt *st = s->st[id];

	if (!st) {
		if (sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st,
				       NULL) != SQLITE_OK) {
			store_sql_fail(s, err, "cannot prepare a statement");
			return NULL;
		}
		s->st[id] = st;
		return st;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return st;
}

/* Run a statement that returns no rows.  0 or -1. */
int store_step_done(struct store *s, sqlite3_stmt *st, struct bridge_error *err, const char *what)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		store_sql_fail(s, err, what);
		sqlite3_reset(st);
		return -1;
	}
	sqlite3_reset(st);
	return 0;
}

static int exec_id(struct store *s, enum stmt_id id, struct bridge_error *err, const char *what)
{
	sqlite3_stmt *st = store_stmt(s, id, err);

	return st ? store_step_done(s, st, err, what) : -1;
}

/* Back to synchronous=FULL, which every write but an outcome's relies on. */
static int sync_full(struct store *s, struct bridge_error *err)
{
	if (exec_id(s, ST_SYNC_FULL, err, "cannot set synchronous = FULL") < 0) {
		s->sync_relaxed = 1;
		return -1;
	}
	s->sync_relaxed = 0;
	return 0;
}

int store_tx_begin(struct store *s, struct bridge_error *err)
{
	if (s->sync_relaxed && sync_full(s, err) < 0)
		return -1;
	return exec_id(s, ST_BEGIN, err, "cannot start a transaction");
}

int store_tx_commit(struct store *s, struct bridge_error *err)
{
	return exec_id(s, ST_COMMIT, err, "cannot commit");
}

/* After a failure: a failed COMMIT may already have rolled back. */
void store_tx_abort(struct store *s)
{
	if (!sqlite3_get_autocommit(s->db))
		exec_id(s, ST_ROLLBACK, NULL, "rollback");
}

static const char *nz(const char *s)
{
	return s ? s : "";
}

static char *col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return strdup(t ? (const char *)t : "");
}

/* A field of the row checksum: its length (8 bytes, little-endian) in
 * front of it. */
static void digest_field(struct sign_part *parts, size_t *n, unsigned char len[8], const void *p,
			 size_t size)
{
	for (int i = 0; i < 8; i++)
		len[i] = (unsigned char)((uint64_t)size >> (8 * i));
	parts[(*n)++] = (struct sign_part){ len, 8 };
	if (size)
		parts[(*n)++] = (struct sign_part){ p, size };
}

/* SHA-256 over what an attempt sends and where: each field with its length
 * in front, so that no two different rows share an encoding.  0 or -1. */
int store_row_checksum(const char *endpoint, const char *ca_file, int timeout_ms,
		       const char *delivery_id, const char *headers, const void *body, size_t len,
		       unsigned char out[STORE_CHECKSUM_LEN])
{
	static const char tag[] = "webhook-bridge row 2";
	struct sign_part parts[14];
	unsigned char lens[7][8];
	char timeout[16];
	size_t n = 0;

	snprintf(timeout, sizeof(timeout), "%d", timeout_ms);
	digest_field(parts, &n, lens[0], tag, sizeof(tag) - 1);
	digest_field(parts, &n, lens[1], endpoint, strlen(endpoint));
	digest_field(parts, &n, lens[2], ca_file, strlen(ca_file));
	digest_field(parts, &n, lens[3], timeout, strlen(timeout));
	digest_field(parts, &n, lens[4], delivery_id, strlen(delivery_id));
	digest_field(parts, &n, lens[5], headers, strlen(headers));
	digest_field(parts, &n, lens[6], body, len);
	return sign_sha256(parts, n, out);
}

/* "Name: value\n" lines, in place: names and values point into text. */
int store_headers_parse(char *text, struct upstream_header **ret, size_t *ret_n)
{
	struct upstream_header *h;
	size_t n = 0, cap = 0;
	char *p;

	for (p = text; *p; p++)
		if (*p == '\n')
			cap++;
	*ret = NULL;
	*ret_n = 0;
	if (cap == 0)
		return 0;
	h = calloc(cap, sizeof(*h));
	if (!h)
		return -1;
	p = text;
	while (*p && n < cap) {
		char *nl = strchr(p, '\n'), *colon;

		if (!nl)
			break;
		*nl = '\0';
		colon = strstr(p, ": ");
		if (colon) {
			*colon = '\0';
			h[n].name = p;
			h[n].value = colon + 2;
			n++;
		}
		p = nl + 1;
	}
	*ret = h;
	*ret_n = n;
	return 0;
}

int store_row_read(sqlite3_stmt *st, struct store_row *r)
{
	const void *blob, *sum;
	int len, sum_len;

	memset(r, 0, sizeof(*r));
	r->id = sqlite3_column_int64(st, 0);
	r->status = sqlite3_column_int(st, 1);
	r->route = col_text(st, 2);
	r->endpoint = col_text(st, 3);
	r->ca_file = col_text(st, 4);
	r->timeout_ms = sqlite3_column_int(st, 5);
	r->delivery_id = col_text(st, 6);
	r->participation_id = col_text(st, 7);
	r->state = col_text(st, 8);
	r->headers_text = col_text(st, 9);
	blob = sqlite3_column_blob(st, 10);
	len = sqlite3_column_bytes(st, 10);
	r->body = malloc((size_t)len + 1);
	if (r->body) {
		if (len > 0)
			memcpy(r->body, blob, (size_t)len);
		r->body[len] = '\0';
		r->len = (size_t)len;
	}
	r->attempts = sqlite3_column_int(st, 11);
	r->created_ms = sqlite3_column_int64(st, 12);
	r->since_ms = sqlite3_column_int64(st, 13);
	r->next_attempt_ms = sqlite3_column_int64(st, 14);
	r->last_attempt_ms = sqlite3_column_int64(st, 15);
	r->last_status = sqlite3_column_int(st, 16);
	r->last_error = col_text(st, 17);
	sum = sqlite3_column_blob(st, 18);
	sum_len = sqlite3_column_bytes(st, 18);
	r->checksum_len = sum_len < STORE_CHECKSUM_LEN ? (size_t)sum_len : STORE_CHECKSUM_LEN;
	if (sum && r->checksum_len)
		memcpy(r->checksum, sum, r->checksum_len);
	if (!r->route || !r->endpoint || !r->ca_file || !r->delivery_id || !r->participation_id ||
	    !r->state || !r->headers_text || !r->body || !r->last_error)
		goto fail;
	if (sum_len == 0) {
		r->integrity = STORE_ROW_UNCHECKED;
	} else {
		unsigned char want[STORE_CHECKSUM_LEN];

		/* before headers_parse, which cuts headers_text into its lines */
		if (store_row_checksum(r->endpoint, r->ca_file, r->timeout_ms, r->delivery_id,
				       r->headers_text, r->body, r->len, want) < 0)
			goto fail;
		r->integrity = sum_len == STORE_CHECKSUM_LEN &&
					       memcmp(want, r->checksum, STORE_CHECKSUM_LEN) == 0
				       ? STORE_ROW_INTACT
				       : STORE_ROW_CORRUPT;
	}
	if (store_headers_parse(r->headers_text, &r->headers, &r->n_headers) < 0)
		goto fail;
	return 0;
fail:
	store_row_clear(r);
	return -1;
}

void store_row_clear(struct store_row *r)
{
	if (!r)
		return;
	free(r->route);
	free(r->endpoint);
	free(r->ca_file);
	free(r->delivery_id);
	free(r->participation_id);
	free(r->state);
	free(r->headers);
	free(r->headers_text);
	free(r->body);
	free(r->last_error);
	memset(r, 0, sizeof(*r));
}

/* ------------------------------------------------------------------ */
/* open / close */

static int pragma_int(struct store *s, const char *sql, int64_t *ret, struct bridge_error *err)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return store_sql_fail(s, err, sql);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*ret = sqlite3_column_int64(st, 0);
	} else if (rc != SQLITE_DONE) {
		store_sql_fail(s, err, sql);
		sqlite3_finalize(st);
		return -1;
	}
	sqlite3_finalize(st);
	return 0;
}

int store_exec_sql(struct store *s, const char *sql, struct bridge_error *err)
{
	char *msg = NULL;

	if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		bridge_error_set(err, "queue store %s: %s", s->path, msg ? msg : "error");
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

/* Bring an older schema up to this version, in one transaction (another
 * process may be doing the same: the version is read again under the
 * write lock). */
static int schema_migrate(struct store *s, struct bridge_error *err)
{
	int64_t version = 0;
	char sql[64];

	if (store_tx_begin(s, err) < 0)
		return -1;
	if (pragma_int(s, "PRAGMA user_version", &version, err) < 0)
		goto fail;
	if (version < STORE_SCHEMA_VERSION) {
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d;", STORE_SCHEMA_VERSION);
		if ((version == 1 && store_exec_sql(s, migrate_v1_sql, err) < 0) ||
		    store_exec_sql(s, migrate_v2_sql, err) < 0 || store_exec_sql(s, sql, err) < 0)
			goto fail;
	}
	if (store_tx_commit(s, err) < 0)
		goto fail;
	return 0;
fail:
	store_tx_abort(s);
	return -1;
}

static int schema_prepare(struct store *s, unsigned flags, struct bridge_error *err)
{
	int64_t app = 0, version = 0, tables = 0;
	char sql[128];

	if (pragma_int(s, "PRAGMA application_id", &app, err) < 0 ||
	    pragma_int(s, "PRAGMA user_version", &version, err) < 0 ||
	    pragma_int(s, "SELECT COUNT(*) FROM sqlite_master", &tables, err) < 0)
		return -1;
	if (app == STORE_APPLICATION_ID) {
		if (version > STORE_SCHEMA_VERSION)
			return bridge_error_set(err,
						"queue store %s was written by a newer "
						"webhook-bridge (schema %lld, this one knows %d)",
						s->path, (long long)version, STORE_SCHEMA_VERSION);
		if (version < 1)
			return bridge_error_set(err, "queue store %s has no schema version",
						s->path);
		return version < STORE_SCHEMA_VERSION ? schema_migrate(s, err) : 0;
	}
	if (app != 0 || tables > 0)
		return bridge_error_set(err,
					"%s is not a webhook-bridge queue store (an SQLite "
					"database of something else); choose another queue.path",
					s->path);
	if (!(flags & STORE_CREATE))
		return bridge_error_set(err,
					"queue store %s is empty: serve creates it when it "
					"starts with a queued route",
					s->path);
	if (store_tx_begin(s, err) < 0)
		return -1;
	snprintf(sql, sizeof(sql), "PRAGMA application_id = %d; PRAGMA user_version = %d;",
		 STORE_APPLICATION_ID, STORE_SCHEMA_VERSION);
	if (store_exec_sql(s, schema_sql, err) < 0 || store_exec_sql(s, sql, err) < 0 ||
	    store_tx_commit(s, err) < 0) {
		store_tx_abort(s);
		return -1;
	}
	return 0;
}

/* path as one shell word: as it is when it holds only characters no shell
 * treats specially, else in single quotes. */
static void shell_word(char *dst, size_t cap, const char *path)
{
	size_t n = 0;

	if (cap == 0)
		return;
	if (*path && strspn(path, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				  "0123456789_./+-,:@%") == strlen(path)) {
		snprintf(dst, cap, "%s", path);
		return;
	}
	dst[n++] = '\'';
	for (const char *p = path; *p && n + 5 < cap; p++) {
		if (*p == '\'') {
			memcpy(dst + n, "'\\''", 4);
			n += 4;
		} else {
			dst[n++] = *p;
		}
	}
	if (n < cap - 1)
		dst[n++] = '\'';
	dst[n] = '\0';
}

/* A damaged page would make the bridge take posts it cannot keep, resend
 * rows it cannot mark and send bodies that are not what was stored: the
 * store is checked before serve (or check) relies on it, and a damaged one
 * refused with the way out. */
static int integrity_check(struct store *s, struct bridge_error *err)
{
	sqlite3_stmt *st;
	char first[300] = "", said[400], word[1024];
	int rc;

	if (sqlite3_prepare_v2(s->db, "PRAGMA quick_check(1)", -1, &st, NULL) != SQLITE_OK)
		rc = SQLITE_ERROR;
	else if ((rc = sqlite3_step(st)) == SQLITE_ROW)
		snprintf(first, sizeof(first), "%s", (const char *)sqlite3_column_text(st, 0));
	if (rc == SQLITE_ROW && strcmp(first, "ok") == 0) {
		sqlite3_finalize(st);
		return 0;
	}
	if (!first[0])
		snprintf(first, sizeof(first), "%s", sqlite3_errmsg(s->db));
	sqlite3_finalize(st);
	diag_quote(said, sizeof(said), first, strlen(first), 300, '"');
	shell_word(word, sizeof(word), s->path);
	return bridge_error_set(
		err,
		"queue store %s is damaged (SQLite's quick_check: \"%s\"): serve does not "
		"start on it. "
		"To save what is readable into a new store, run: webhook-bridge queue --store "
		"%s recover --output %s.recovered (then point queue.path at the new store, or "
		"move the damaged store and its -wal and -shm files away and the new one in "
		"its place)",
		s->path, said, word, word);
}

/* The file at path is a regular file, or (STORE_CREATE) is made, owner only:
 * the rows hold auth headers, and SQLite gives its -wal and -shm files the
 * same mode.  0 or -1. */
static int store_file_ready(const char *path, unsigned flags, struct bridge_error *err)
{
	struct stat sb;
	char *copy;
	const char *dir;
	int fd;

	if (stat(path, &sb) == 0) {
		if (!S_ISREG(sb.st_mode))
			return bridge_error_set(err, "queue store %s is not a regular file", path);
		return 0;
	}
	if (errno != ENOENT)
		return bridge_error_set(err, "queue store %s: %s", path, strerror(errno));
	if (!(flags & STORE_CREATE))
		return bridge_error_set(err,
					"no queue store at %s (serve creates it when it starts "
					"with a queued route)",
					path);
	copy = strdup(path);
	dir = copy ? dirname(copy) : ".";
	if (copy && stat(dir, &sb) != 0) {
		bridge_error_set(err, "queue store %s: folder %s: %s", path, dir, strerror(errno));
		free(copy);
		return -1;
	}
	free(copy);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 && errno != EEXIST)
		return bridge_error_set(err, "cannot create queue store %s: %s", path,
					strerror(errno));
	if (fd >= 0)
		close(fd);
	return 0;
}

/* WAL is a property of the file: whoever opens first sets it. */
static int store_wal_mode(struct store *s, struct bridge_error *err)
{
	char mode[16] = "";
	sqlite3_stmt *st;

	if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL) != SQLITE_OK)
		return store_sql_fail(s, err, "cannot set WAL mode");
	if (sqlite3_step(st) == SQLITE_ROW)
		snprintf(mode, sizeof(mode), "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	if (strcmp(mode, "wal") == 0)
		return 0;
	if (!mode[0])
		return store_sql_fail(s, err, "cannot set WAL mode");
	return bridge_error_set(err,
				"queue store %s: the file system does not support "
				"SQLite's WAL mode (journal_mode stays '%s')",
				s->path, mode);
}

/* This connection's settings.  secure_delete is per connection, and its
 * default is the build's (ON in some distributions). */
static int store_settings(struct store *s, unsigned flags, struct bridge_error *err)
{
	if (store_exec_sql(s, "PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 67108864;",
			   err) < 0)
		return -1;
	return store_exec_sql(s,
			      flags & STORE_SECURE_DELETE ? "PRAGMA secure_delete = ON;"
							  : "PRAGMA secure_delete = FAST;",
			      err);
}

/* SQLite's own wait for another process's write lock sleeps longer and
 * longer (100 ms at a time after a while), so a writer waiting behind a
 * `queue` command misses the gaps that the command leaves between its
 * batches; this one looks again every millisecond, up to busy_ms. */
static int busy_cb(void *arg, int count)
{
	struct store *s = arg;
	int64_t now = clock_mono_ms();

	if (count == 0)
		s->busy_since = now;
	if (now - s->busy_since >= s->busy_ms)
		return 0;
	usleep(1000);
	return 1;
}

int store_open(const char *path, unsigned flags, int busy_timeout_ms, struct store **ret,
	       struct bridge_error *err)
{
	struct store *s;
	int64_t dv = 0;

	*ret = NULL;
	if (!path || !*path)
		return bridge_error_set(err, "queue store: no path");
	if (!sqlite3_threadsafe())
		return bridge_error_set(err,
					"this SQLite library was built without thread support");
	if (store_file_ready(path, flags, err) < 0)
		return -1;
	s = calloc(1, sizeof(*s));
	if (!s)
		return bridge_error_set(err, "out of memory");
	s->path = strdup(path);
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->warning_mu, NULL);
	if (!s->path) {
		store_close(s);
		return bridge_error_set(err, "out of memory");
	}
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		if (s->db)
			store_sql_fail(s, err, "cannot open");
		else
			bridge_error_set(err, "queue store %s: cannot open (out of memory)", path);
		store_close(s);
		return -1;
	}
	sqlite3_extended_result_codes(s->db, 0);
	s->busy_ms = busy_timeout_ms > 0 ? busy_timeout_ms : 0;
	if (s->busy_ms)
		sqlite3_busy_handler(s->db, busy_cb, s);
	if (store_wal_mode(s, err) < 0 || store_settings(s, flags, err) < 0 ||
	    ((flags & STORE_VERIFY) && integrity_check(s, err) < 0) ||
	    schema_prepare(s, flags, err) < 0 ||
	    pragma_int(s, "PRAGMA data_version", &dv, err) < 0) {
		store_close(s);
		return -1;
	}
	s->data_version = dv;
	if (flags & STORE_CHECKPOINTER)
		store_checkpointer_start(s);
	*ret = s;
	return 0;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	store_pg_close(s->pg);
	store_checkpointer_stop(s);
	for (int i = 0; i < ST_N; i++)
		sqlite3_finalize(s->st[i]);
	sqlite3_finalize(s->rdb_count);
	if (s->rdb)
		sqlite3_close(s->rdb);
	if (s->db)
		sqlite3_close(s->db);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->warning_mu);
	free(s->path);
	free(s);
}

const char *store_path(const struct store *s)
{
	return !s ? NULL : s->pg ? store_pg_name(s->pg) : s->path;
}

int store_open_shared(const struct shared_config *c, unsigned flags, struct store **ret,
		      struct bridge_error *err)
{
	struct store *s;

	*ret = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return bridge_error_set(err, "out of memory");
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->warning_mu, NULL);
	if (store_pg_open(c, flags, &s->pg, err) < 0) {
		store_close(s);
		return -1;
	}
	*ret = s;
	return 0;
}

int store_is_shared(const struct store *s)
{
	return s && s->pg;
}

const char *store_holder(const struct store *s)
{
	return s && s->pg ? store_pg_holder(s->pg) : "";
}

int store_schema_version(struct store *s, struct bridge_error *err)
{
	int64_t v = 0;

	if (s->pg)
		return store_pg_schema_version(s->pg, err);
	pthread_mutex_lock(&s->mu);
	if (pragma_int(s, "PRAGMA user_version", &v, err) < 0)
		v = -1;
	pthread_mutex_unlock(&s->mu);
	return (int)v;
}

int store_schema_known(void)
{
	return store_pg_schema_known();
}

int store_renew(struct store *s, const int64_t *ids, size_t n, size_t *ret_renewed,
		struct bridge_error *err)
{
	if (s->pg)
		return store_pg_renew(s->pg, ids, n, ret_renewed, err);
	if (ret_renewed) /* one process owns an SQLite store: nothing to renew */
		*ret_renewed = n;
	return 0;
}

int store_release(struct store *s, struct bridge_error *err)
{
	return s->pg ? store_pg_release(s->pg, err) : 0;
}

static int no_shadow(struct bridge_error *err)
{
	return bridge_error_set(err, "the shadow store is shared only on PostgreSQL");
}

int store_shadow_offer(struct store *s, const struct store_shadow_offer *o, long ttl_ms,
		       struct store_shadow_entry *ret_other, struct store_shadow_entry *ret_expired,
		       int *ret_duplicate, struct bridge_error *err)
{
	return s->pg ? store_pg_shadow_offer(s->pg, o, ttl_ms, ret_other, ret_expired,
					     ret_duplicate, err)
		     : no_shadow(err);
}

int store_shadow_count(struct store *s, const char *const *names, const long long *n, size_t k,
		       const struct store_shadow_path *paths, size_t n_paths,
		       struct bridge_error *err)
{
	return s->pg ? store_pg_shadow_count(s->pg, names, n, k, paths, n_paths, err)
		     : no_shadow(err);
}

int store_shadow_totals(struct store *s, size_t max_paths,
			void (*count_cb)(const char *name, long long n, void *arg),
			void (*path_cb)(const struct store_shadow_path_total *t, void *arg),
			void *arg, long long waiting[2], struct bridge_error *err)
{
	return s->pg ? store_pg_shadow_totals(s->pg, max_paths, count_cb, path_cb, arg, waiting,
					      err)
		     : no_shadow(err);
}

int store_shadow_sweep(struct store *s, long ttl_ms, size_t max_entries,
		       void (*cb)(const struct store_shadow_entry *e, const char *reason,
				  void *arg),
		       void *arg, int *ret_swept, struct bridge_error *err)
{
	return s->pg ? store_pg_shadow_sweep(s->pg, ttl_ms, max_entries, cb, arg, ret_swept, err)
		     : no_shadow(err);
}

int store_cutover_load(struct store *s,
		       int (*cb)(const char *route, int ramp, int status, long long changed_ms,
				 const char *by, void *arg),
		       void *arg, struct bridge_error *err)
{
	return s->pg ? store_pg_cutover_load(s->pg, cb, arg, err)
		     : bridge_error_set(err,
					"the cutover state is in the SQLite store's own table");
}

int store_cutover_put(struct store *s, const char *route, int ramp, int status,
		      long long changed_ms, const char *by, int only_if_absent, int *ret_inserted,
		      struct bridge_error *err)
{
	return s->pg ? store_pg_cutover_put(s->pg, route, ramp, status, changed_ms, by,
					    only_if_absent, ret_inserted, err)
		     : bridge_error_set(err,
					"the cutover state is in the SQLite store's own table");
}

int store_cutover_version(struct store *s, long long *ret, struct bridge_error *err)
{
	return s->pg ? store_pg_cutover_version(s->pg, ret, err)
		     : bridge_error_set(err,
					"the cutover state is in the SQLite store's own table");
}

void store_shadow_entry_clear(struct store_shadow_entry *e)
{
	if (!e)
		return;
	free(e->route);
	free(e->participation_id);
	free(e->state);
	free(e->instance);
	free(e->body);
	free(e->trace);
	memset(e, 0, sizeof(*e));
}

int store_watch_fd(struct store *s)
{
	return s->pg ? store_pg_watch_fd(s->pg) : -1;
}

int store_watch_drain(struct store *s)
{
	return s->pg ? store_pg_watch_drain(s->pg) : -1;
}


/* ------------------------------------------------------------------ */
/* insert */

static int text_ok(const char *s, int allow_empty, const char *what, struct bridge_error *err)
{
	size_t n;

	if (!s)
		s = "";
	n = strlen(s);
	if (!allow_empty && n == 0)
		return bridge_error_set(err, "queue item: %s is empty", what);
	if (n > STORE_TEXT_MAX)
		return bridge_error_set(err, "queue item: %s is longer than %d bytes", what,
					STORE_TEXT_MAX);
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 && *s != '\t')
			return bridge_error_set(err, "queue item: %s holds a control character",
						what);
	return 0;
}

int store_item_check(const struct store_item *it, struct bridge_error *err)
{
	if (!it)
		return bridge_error_set(err, "queue item: NULL");
	if (text_ok(it->route, 0, "route", err) < 0 ||
	    text_ok(it->endpoint, 0, "endpoint", err) < 0 ||
	    text_ok(it->ca_file, 1, "ca_file", err) < 0 ||
	    text_ok(it->delivery_id, 0, "delivery id", err) < 0 ||
	    text_ok(it->participation_id, 1, "participation id", err) < 0 ||
	    text_ok(it->state, 1, "state", err) < 0)
		return -1;
	if (it->timeout_ms <= 0)
		return bridge_error_set(err, "queue item: timeout must be positive");
	if (it->len > STORE_BODY_MAX)
		return bridge_error_set(err,
					"queue item: body of %zu bytes is over the limit of %u",
					it->len, STORE_BODY_MAX);
	if (it->len && !it->body)
		return bridge_error_set(err, "queue item: NULL body");
	if (it->n_headers > STORE_HEADERS_MAX)
		return bridge_error_set(err, "queue item: %zu headers, at most %d", it->n_headers,
					STORE_HEADERS_MAX);
	for (size_t i = 0; i < it->n_headers; i++) {
		const char *name = it->headers[i].name;

		if (!name || !*name || strpbrk(name, ": \t") ||
		    text_ok(name, 0, "header name", err) < 0)
			return bridge_error_set(err, "queue item: invalid header name '%.64s'",
						name ? name : "(null)");
		if (text_ok(it->headers[i].value, 1, "header value", err) < 0)
			return -1;
	}
	return 0;
}

/* "name: value\n" per header, without the NUL. */
static size_t headers_text_len(const struct store_item *it)
{
	size_t n = 0;

	for (size_t i = 0; i < it->n_headers; i++)
		n += strlen(it->headers[i].name) + 2 + strlen(nz(it->headers[i].value)) + 1;
	return n;
}

char *store_headers_text(const struct store_item *it)
{
	size_t n = headers_text_len(it) + 1;
	char *out, *p;

	out = malloc(n);
	if (!out)
		return NULL;
	p = out;
	for (size_t i = 0; i < it->n_headers; i++) {
		const char *v = nz(it->headers[i].value);
		size_t nl = strlen(it->headers[i].name), vl = strlen(v);

		memcpy(p, it->headers[i].name, nl);
		memcpy(p + nl, ": ", 2);
		memcpy(p + nl + 2, v, vl);
		p[nl + 2 + vl] = '\n';
		p += nl + 2 + vl + 1;
	}
	*p = '\0';
	return out;
}

int store_seal_make(const struct store_item *it, struct store_seal *ret)
{
	ret->headers_text = store_headers_text(it);
	if (!ret->headers_text ||
	    store_row_checksum(it->endpoint, nz(it->ca_file), it->timeout_ms, it->delivery_id,
			       ret->headers_text, it->len ? it->body : "", it->len,
			       ret->checksum) < 0) {
		store_seal_clear(ret);
		return -1;
	}
	return 0;
}

int store_seal_copy(const struct store_seal *from, struct store_seal *ret)
{
	ret->headers_text = strdup(from->headers_text);
	if (!ret->headers_text)
		return -1;
	memcpy(ret->checksum, from->checksum, STORE_CHECKSUM_LEN);
	return 0;
}

void store_seal_clear(struct store_seal *seal)
{
	free(seal->headers_text);
	seal->headers_text = NULL;
}

int store_seal_of(const struct store_item *it, struct store_seal *tmp,
		  const struct store_seal **ret)
{
	*ret = it->seal;
	if (it->seal)
		return 0;
	if (store_seal_make(it, tmp) < 0)
		return -1;
	*ret = tmp;
	return 0;
}

/* Within the open transaction: 1 and the receipt when a pending row of the
 * same route, participation and state exists. */
static int find_dup(struct store *s, const struct store_item *it, struct store_receipt *rcpt,
		    struct bridge_error *err)
{
	sqlite3_stmt *st;
	int rc;

	if (!it->participation_id || !*it->participation_id)
		return 0;
	st = store_stmt(s, ST_FIND_DUP, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, it->route, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, it->participation_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, nz(it->state), -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		if (rcpt) {
			rcpt->id = sqlite3_column_int64(st, 0);
			snprintf(rcpt->delivery_id, sizeof(rcpt->delivery_id), "%s",
				 (const char *)sqlite3_column_text(st, 1));
		}
		sqlite3_reset(st);
		return 1;
	}
	if (rc != SQLITE_DONE) {
		store_sql_fail(s, err, "cannot look for a duplicate");
		sqlite3_reset(st);
		return -1;
	}
	sqlite3_reset(st);
	return 0;
}

static int insert_one(struct store *s, const struct store_item *it, int64_t now_ms,
		      struct store_receipt *rcpt, struct bridge_error *err)
{
	sqlite3_stmt *st = store_stmt(s, ST_INSERT, err);
	struct store_seal tmp = { 0 };
	const struct store_seal *seal;
	int rc;

	if (!st)
		return -1;
	if (store_seal_of(it, &tmp, &seal) < 0)
		return bridge_error_set(err, "out of memory");
	sqlite3_bind_text(st, 1, it->route, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, it->endpoint, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, nz(it->ca_file), -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 4, it->timeout_ms);
	sqlite3_bind_text(st, 5, it->delivery_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, nz(it->participation_id), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, nz(it->state), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, seal->headers_text, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 9, it->len ? it->body : "", (int)it->len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 10, now_ms);
	sqlite3_bind_blob(st, 11, seal->checksum, STORE_CHECKSUM_LEN, SQLITE_STATIC);
	rc = store_step_done(s, st, err, "cannot store the delivery");
	store_seal_clear(&tmp);
	if (rc < 0)
		return -1;
	if (rcpt) {
		rcpt->id = sqlite3_last_insert_rowid(s->db);
		snprintf(rcpt->delivery_id, sizeof(rcpt->delivery_id), "%s", it->delivery_id);
	}
	return 0;
}

int store_insert(struct store *s, const struct store_item *const *items, size_t n, int64_t now_ms,
		 int *ret_results, struct store_receipt *receipts, struct bridge_error *err)
{
	if (s->pg)
		return store_pg_insert(s->pg, items, n, now_ms, ret_results, receipts, err);
	size_t i;

	for (i = 0; i < n; i++)
		if (store_item_check(items[i], err) < 0)
			return -1;
	store_checkpointer_yield(s);
	pthread_mutex_lock(&s->mu);
	if (store_tx_begin(s, err) < 0)
		goto fail;
	for (i = 0; i < n; i++) {
		struct store_receipt *rcpt = receipts ? &receipts[i] : NULL;
		int dup = find_dup(s, items[i], rcpt, err);

		if (dup < 0)
			goto fail;
		if (!dup && insert_one(s, items[i], now_ms, rcpt, err) < 0)
			goto fail;
		if (ret_results)
			ret_results[i] = dup ? STORE_DUPLICATE : STORE_INSERTED;
	}
	if (store_tx_commit(s, err) < 0)
		goto fail;
	pthread_mutex_unlock(&s->mu);
	return 0;
fail:
	store_tx_abort(s);
	pthread_mutex_unlock(&s->mu);
	return -1;
}

/* ------------------------------------------------------------------ */
/* scheduler queries */

/* One MIN() of the lane statements id (a and b bound when not NULL): a copy
 * in *ret, NULL when there is none.  0 or -1. */
static int lane_min(struct store *s, enum stmt_id id, const char *a, const char *b, char **ret,
		    struct bridge_error *err)
{
	sqlite3_stmt *st = store_stmt(s, id, err);
	const unsigned char *t;
	int rc;

	*ret = NULL;
	if (!st)
		return -1;
	if (a)
		sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
	if (b)
		sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		store_sql_fail(s, err, "cannot list lanes");
		sqlite3_reset(st);
		return -1;
	}
	t = sqlite3_column_text(st, 0);
	if (t && !(*ret = strdup((const char *)t)))
		rc = bridge_error_set(err, "out of memory");
	else
		rc = 0;
	sqlite3_reset(st);
	return rc;
}

int store_lanes(struct store *s, size_t max, struct store_lane **ret, size_t *ret_n,
		struct bridge_error *err)
{
	if (s->pg)
		return store_pg_lanes(s->pg, max, ret, ret_n, err);
	struct store_lane *l;
	char *endpoint = NULL, *ca = NULL;
	size_t n = 0;
	int rc;

	*ret = NULL;
	*ret_n = 0;
	l = calloc(max ? max : 1, sizeof(*l));
	if (!l)
		return bridge_error_set(err, "out of memory");
	pthread_mutex_lock(&s->mu);
	rc = max ? lane_min(s, ST_LANE_FIRST, NULL, NULL, &endpoint, err) : 0;
	while (rc == 0 && endpoint && n < max) {
		char *next;

		rc = lane_min(s, ST_LANE_CA_FIRST, endpoint, NULL, &ca, err);
		while (rc == 0 && ca) {
			l[n].ca_file = ca;
			if (!(l[n++].endpoint = strdup(endpoint)))
				rc = bridge_error_set(err, "out of memory");
			else if (n < max)
				rc = lane_min(s, ST_LANE_CA_NEXT, endpoint, l[n - 1].ca_file, &ca,
					      err);
			else
				break; /* ca is l[n - 1]'s */
		}
		if (rc == 0 && n < max)
			rc = lane_min(s, ST_LANE_NEXT, endpoint, NULL, &next, err);
		else
			next = NULL;
		free(endpoint);
		endpoint = next;
	}
	free(endpoint);
	pthread_mutex_unlock(&s->mu);
	if (rc < 0) {
		store_lanes_free(l, n);
		return -1;
	}
	*ret = l;
	*ret_n = n;
	return 0;
}

void store_lanes_free(struct store_lane *l, size_t n)
{
	if (!l)
		return;
	for (size_t i = 0; i < n; i++) {
		free(l[i].endpoint);
		free(l[i].ca_file);
	}
	free(l);
}

int store_due(struct store *s, const char *endpoint, const char *ca_file, int64_t now_ms,
	      struct store_row *rows, size_t max, size_t *ret_n, struct bridge_error *err)
{
	return store_due_except(s, endpoint, ca_file, now_ms, NULL, 0, rows, max, ret_n, err);
}

static int id_in(const int64_t *ids, size_t n, int64_t id)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] == id)
			return 1;
	return 0;
}

int store_due_except(struct store *s, const char *endpoint, const char *ca_file, int64_t now_ms,
		     const int64_t *skip, size_t n_skip, struct store_row *rows, size_t max,
		     size_t *ret_n, struct bridge_error *err)
{
	if (s->pg)
		return store_pg_due(s->pg, endpoint, ca_file, now_ms, rows, max, ret_n, err);
	sqlite3_stmt *st;
	size_t n = 0;
	int rc;

	*ret_n = 0;
	if (max == 0)
		return 0;
	pthread_mutex_lock(&s->mu);
	st = store_stmt(s, ST_DUE, err);
	if (!st) {
		pthread_mutex_unlock(&s->mu);
		return -1;
	}
	sqlite3_bind_text(st, 1, endpoint, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, nz(ca_file), -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now_ms);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)(max + n_skip));
	while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n_skip && id_in(skip, n_skip, sqlite3_column_int64(st, 0)))
			continue;
		if (store_row_read(st, &rows[n]) < 0) {
			rc = SQLITE_NOMEM;
			break;
		}
		n++;
	}
	if (n < max && rc != SQLITE_DONE) {
		if (rc == SQLITE_NOMEM)
			bridge_error_set(err, "out of memory");
		else
			store_sql_fail(s, err, "cannot read due deliveries");
		sqlite3_reset(st);
		pthread_mutex_unlock(&s->mu);
		for (size_t i = 0; i < n; i++)
			store_row_clear(&rows[i]);
		return -1;
	}
	sqlite3_reset(st);
	pthread_mutex_unlock(&s->mu);
	*ret_n = n;
	return 0;
}

/* One integer (or 0 for NULL) from a statement with bound parameters. */
int store_step_int(struct store *s, sqlite3_stmt *st, int64_t *ret, struct bridge_error *err,
		   const char *what)
{
	int rc = sqlite3_step(st);

	*ret = 0;
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int64(st, 0);
	else if (rc != SQLITE_DONE) {
		store_sql_fail(s, err, what);
		sqlite3_reset(st);
		return -1;
	}
	sqlite3_reset(st);
	return 0;
}

int store_next_wake(struct store *s, const char *endpoint, const char *ca_file, int64_t after_ms,
		    int64_t *ret, struct bridge_error *err)
{
	if (s->pg)
		return store_pg_next_wake(s->pg, endpoint, ca_file, after_ms, ret, err);
	sqlite3_stmt *st;
	int rc;

	pthread_mutex_lock(&s->mu);
	st = store_stmt(s, ST_NEXT_WAKE, err);
	if (!st) {
		pthread_mutex_unlock(&s->mu);
		return -1;
	}
	sqlite3_bind_text(st, 1, endpoint, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, nz(ca_file), -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, after_ms);
	rc = store_step_int(s, st, ret, err, "cannot read the next attempt time");
	pthread_mutex_unlock(&s->mu);
	return rc;
}

/* A one-statement write: autocommit makes it its own durable transaction. */
int store_write_one(struct store *s, sqlite3_stmt *st, struct bridge_error *err, const char *what,
		    int64_t *ret_changes)
{
	int rc = store_step_done(s, st, err, what);

	if (rc == 0 && ret_changes)
		*ret_changes = sqlite3_changes(s->db);
	return rc;
}

int store_delivered(struct store *s, int64_t id, struct bridge_error *err)
{
	struct store_outcome o = { .kind = STORE_OUT_DELIVERED, .id = id };

	return store_apply(s, &o, 1, err);
}

int store_failed(struct store *s, int64_t id, int attempts_before, int64_t now_ms,
		 int64_t next_attempt_ms, int last_status, const char *last_error,
		 struct bridge_error *err)
{
	struct store_outcome o = { .kind = STORE_OUT_FAILED,
				   .id = id,
				   .attempts_before = attempts_before,
				   .now_ms = now_ms,
				   .next_attempt_ms = next_attempt_ms,
				   .last_status = last_status,
				   .last_error = last_error };

	return store_apply(s, &o, 1, err);
}

int store_dead(struct store *s, int64_t id, int attempts_before, int attempted, int64_t now_ms,
	       int last_status, const char *last_error, struct bridge_error *err)
{
	struct store_outcome o = { .kind = STORE_OUT_DEAD,
				   .id = id,
				   .attempts_before = attempts_before,
				   .attempted = attempted,
				   .now_ms = now_ms,
				   .last_status = last_status,
				   .last_error = last_error };

	return store_apply(s, &o, 1, err);
}

/* Bind and run one outcome; the store is locked. */
static int outcome_run(struct store *s, const struct store_outcome *o, struct bridge_error *err)
{
	sqlite3_stmt *st;

	switch (o->kind) {
	case STORE_OUT_DELIVERED:
		if (!(st = store_stmt(s, ST_DELIVERED, err)))
			return -1;
		sqlite3_bind_int64(st, 1, o->id);
		return store_step_done(s, st, err, "cannot record a delivery");
	case STORE_OUT_FAILED:
		if (!(st = store_stmt(s, ST_FAILED, err)))
			return -1;
		sqlite3_bind_int64(st, 1, o->id);
		sqlite3_bind_int(st, 2, o->attempts_before);
		sqlite3_bind_int64(st, 3, o->now_ms);
		sqlite3_bind_int64(st, 4, o->next_attempt_ms);
		sqlite3_bind_int(st, 5, o->last_status);
		sqlite3_bind_text(st, 6, nz(o->last_error), -1, SQLITE_STATIC);
		return store_step_done(s, st, err, "cannot record a failed attempt");
	case STORE_OUT_DEAD:
		if (!(st = store_stmt(s, ST_DEAD, err)))
			return -1;
		sqlite3_bind_int64(st, 1, o->id);
		sqlite3_bind_int(st, 2, o->attempts_before);
		sqlite3_bind_int(st, 3, o->attempted ? 1 : 0);
		sqlite3_bind_int64(st, 4, o->now_ms);
		sqlite3_bind_int(st, 5, o->last_status);
		sqlite3_bind_text(st, 6, nz(o->last_error), -1, SQLITE_STATIC);
		return store_step_done(s, st, err, "cannot record a dead letter");
	}
	return bridge_error_set(err, "unknown outcome");
}

int store_apply(struct store *s, const struct store_outcome *o, size_t n, struct bridge_error *err)
{
	if (s->pg)
		return store_pg_apply(s->pg, o, n, err);
	size_t i;

	if (n == 0)
		return 0;
	store_checkpointer_yield(s);
	pthread_mutex_lock(&s->mu);
	/* Outcomes commit without their own WAL sync: the next insert's commit
	 * (synchronous=FULL) syncs the WAL and every frame before it.  A power
	 * loss in between can only make a row pending again, so it is sent once
	 * more (the receiver already dedups by delivery id); the WAL keeps the
	 * commits in order, so a participation's line is never reordered. */
	s->sync_relaxed = 1;
	if (exec_id(s, ST_SYNC_NORMAL, err, "cannot set synchronous = NORMAL") < 0)
		goto fail;
	if (n > 1 && exec_id(s, ST_BEGIN, err, "cannot start a transaction") < 0)
		goto fail;
	for (i = 0; i < n; i++)
		if (outcome_run(s, &o[i], err) < 0)
			goto fail;
	if (n > 1 && store_tx_commit(s, err) < 0)
		goto fail;
	sync_full(s, NULL);
	pthread_mutex_unlock(&s->mu);
	return 0;
fail:
	store_tx_abort(s);
	sync_full(s, NULL);
	pthread_mutex_unlock(&s->mu);
	return -1;
}

int store_count(struct store *s, struct store_counts *ret, struct bridge_error *err)
{
	if (s->pg)
		return store_pg_count(s->pg, ret, err);
	sqlite3_stmt *st;
	int rc;

	memset(ret, 0, sizeof(*ret));
	pthread_mutex_lock(&s->mu);
	st = store_stmt(s, ST_COUNT, err);
	if (!st) {
		pthread_mutex_unlock(&s->mu);
		return -1;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int status = sqlite3_column_int(st, 0);

		if (status == STORE_PENDING) {
			ret->pending = sqlite3_column_int64(st, 1);
			ret->oldest_created_ms = sqlite3_column_int64(st, 2);
		} else if (status == STORE_DEAD) {
			ret->dead = sqlite3_column_int64(st, 1);
		}
	}
	if (rc != SQLITE_DONE) {
		store_sql_fail(s, err, "cannot count deliveries");
		sqlite3_reset(st);
		pthread_mutex_unlock(&s->mu);
		return -1;
	}
	sqlite3_reset(st);
	pthread_mutex_unlock(&s->mu);
	return 0;
}

/* The rows of ST_COUNT_ROUTES on the reading connection, one cb per route. */
static int count_routes_run(struct store *s,
			    int (*cb)(const struct store_route_counts *c, void *arg), void *arg,
			    struct bridge_error *err)
{
	sqlite3_stmt *st = s->rdb_count;
	struct store_route_counts c;
	char *route = NULL;
	int rc, stop = 0;

	memset(&c, 0, sizeof(c));
	while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *r = (const char *)sqlite3_column_text(st, 0);
		int status = sqlite3_column_int(st, 1);

		if (!r)
			r = "";
		/* rows come sorted by route: a new name closes the previous one */
		if (route && strcmp(route, r) != 0) {
			stop = cb(&c, arg);
			free(route);
			route = NULL;
			memset(&c, 0, sizeof(c));
		}
		if (stop)
			break;
		if (!route && !(route = strdup(r))) {
			stop = bridge_error_set(err, "out of memory");
			break;
		}
		c.route = route;
		if (status == STORE_PENDING) {
			c.pending = sqlite3_column_int64(st, 2);
			c.oldest_created_ms = sqlite3_column_int64(st, 3);
		} else if (status == STORE_DEAD) {
			c.dead = sqlite3_column_int64(st, 2);
		}
	}
	if (!stop && rc != SQLITE_DONE)
		stop = store_sql_fail_on(s, s->rdb, err, "cannot count deliveries per route");
	else if (!stop && route)
		stop = cb(&c, arg);
	free(route);
	sqlite3_reset(st);
	return stop;
}

int store_count_routes(struct store *s, int (*cb)(const struct store_route_counts *c, void *arg),
		       void *arg, struct bridge_error *err)
{
	if (s->pg)
		return store_pg_count_routes(s->pg, cb, arg, err);
	return store_snapshot_begin(s, err) < 0 ? -1 : store_count_routes_snapshot(s, cb, arg, err);
}

int store_snapshot_begin(struct store *s, struct bridge_error *err)
{
	if (s->pg)
		return 0;
	if (!s->rdb) {
		if (sqlite3_open_v2(s->path, &s->rdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
				    NULL) != SQLITE_OK) {
			if (s->rdb)
				store_sql_fail_on(s, s->rdb, err,
						  "cannot open a reading connection");
			else
				bridge_error_set(err, "out of memory");
			sqlite3_close(s->rdb);
			s->rdb = NULL;
			return -1;
		}
		sqlite3_extended_result_codes(s->rdb, 0);
		sqlite3_busy_timeout(s->rdb, s->busy_ms);
		if (sqlite3_exec(s->rdb, "PRAGMA query_only = 1", NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_prepare_v3(s->rdb, stmt_sql[ST_COUNT_ROUTES], -1,
				       SQLITE_PREPARE_PERSISTENT, &s->rdb_count,
				       NULL) != SQLITE_OK) {
			store_sql_fail_on(s, s->rdb, err, "cannot prepare the count per route");
			sqlite3_finalize(s->rdb_count);
			sqlite3_close(s->rdb);
			s->rdb_count = NULL;
			s->rdb = NULL;
			return -1;
		}
	}
	/* the read transaction, and so the snapshot, begins at the first read */
	if (sqlite3_exec(s->rdb, "BEGIN; SELECT COUNT(*) FROM sqlite_master;", NULL, NULL, NULL) !=
	    SQLITE_OK) {
		store_sql_fail_on(s, s->rdb, err, "cannot begin a read");
		sqlite3_exec(s->rdb, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return 0;
}

int store_count_routes_snapshot(struct store *s,
				int (*cb)(const struct store_route_counts *c, void *arg), void *arg,
				struct bridge_error *err)
{
	if (s->pg)
		return store_pg_count_routes(s->pg, cb, arg, err);
	int rc = count_routes_run(s, cb, arg, err);

	/* a read only: its end cannot lose anything */
	sqlite3_exec(s->rdb, "COMMIT", NULL, NULL, NULL);
	return rc;
}

int store_oldest(struct store *s, int64_t *ret, struct bridge_error *err)
{
	if (s->pg)
		return store_pg_oldest(s->pg, ret, err);
	sqlite3_stmt *st;
	int rc;

	pthread_mutex_lock(&s->mu);
	st = store_stmt(s, ST_OLDEST, err);
	rc = st ? store_step_int(s, st, ret, err, "cannot read the oldest delivery") : -1;
	pthread_mutex_unlock(&s->mu);
	return rc;
}

int store_route_oldest(struct store *s, const char *route, int64_t *ret, struct bridge_error *err)
{
	sqlite3_stmt *st;
	int rc;

	if (s->pg)
		return bridge_error_set(err, "store_route_oldest: SQLite stores only");
	pthread_mutex_lock(&s->mu);
	st = store_stmt(s, ST_ROUTE_OLDEST, err);
	if (st)
		sqlite3_bind_text(st, 1, route, -1, SQLITE_STATIC);
	rc = st ? store_step_int(s, st, ret, err, "cannot read the route's oldest delivery") : -1;
	pthread_mutex_unlock(&s->mu);
	return rc;
}

int store_changed_elsewhere(struct store *s, struct bridge_error *err)
{
	if (s->pg)
		return 1; /* the queue reads the wake-ups and polls */
	sqlite3_stmt *st;
	int64_t v = 0;
	int rc;

	pthread_mutex_lock(&s->mu);
	st = store_stmt(s, ST_DATA_VERSION, err);
	rc = st ? store_step_int(s, st, &v, err, "cannot read the data version") : -1;
	if (rc == 0) {
		rc = v != s->data_version;
		s->data_version = v;
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

/* The pages an insert touches besides its row's (three index entries,
 * sqlite_sequence, a split), at SQLite's default 4 KiB page size: the sized
 * probe writes this much more than the row, or it could fit where the post
 * does not. */
#define STORE_PROBE_SLACK (8 * 4096)

size_t store_item_bytes(const struct store_item *it)
{
	return it->len + headers_text_len(it) + strlen(nz(it->route)) + strlen(nz(it->endpoint)) +
	       strlen(nz(it->ca_file)) + strlen(nz(it->delivery_id)) +
	       strlen(nz(it->participation_id)) + strlen(nz(it->state));
}

int store_probe(struct store *s, int64_t now_ms, size_t bytes, struct bridge_error *err)
{
	sqlite3_stmt *st;
	int rc;

	if (s->pg)
		return store_pg_probe(s->pg, now_ms, err);
	pthread_mutex_lock(&s->mu);
	st = store_stmt(s, bytes ? ST_PROBE_PAD : ST_PROBE, err);
	if (st)
		sqlite3_bind_int64(st, 1, bytes ? (int64_t)(bytes + STORE_PROBE_SLACK) : now_ms);
	rc = st ? store_step_done(s, st, err, "cannot write") : -1;
	pthread_mutex_unlock(&s->mu);
	return rc;
}
