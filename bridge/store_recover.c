/*
 * store_recover: queue recover.  A damaged SQLite store read row by row
 * (a scan first, then each id that the scan could not pass on its own) and
 * what is readable written into a new store; the rest named in the report.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bridge/diag.h"
#include "bridge/store.h"
#include "store_types.h"

#define RECOVER_TX_ROWS 256 /* rows per transaction in the new store */

static const char recover_insert_sql[] =
	"INSERT INTO deliveries (id, status, route, endpoint, ca_file, timeout_ms, delivery_id,"
	" participation_id, state, headers, body, attempts, created_ms, since_ms,"
	" next_attempt_ms, last_attempt_ms, last_status, last_error, checksum)"
	" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,"
	" ?18, ?19)";

struct recover {
	sqlite3 *src;
	struct store *dst;
	sqlite3_stmt *scan, *point, *ins;
	struct store_recover_report *rep;
	int64_t run_from, run_to; /* the run of unreadable ids not yet in rep->unreadable_ids */
	int in_tx;
	size_t tx_rows;
};

static void recover_flush_run(struct recover *r)
{
	char part[48];
	size_t used = strlen(r->rep->unreadable_ids), cap = sizeof(r->rep->unreadable_ids);

	if (!r->run_from)
		return;
	if (r->run_from == r->run_to)
		snprintf(part, sizeof(part), "%s%lld", used ? ", " : "", (long long)r->run_from);
	else
		snprintf(part, sizeof(part), "%s%lld-%lld", used ? ", " : "",
			 (long long)r->run_from, (long long)r->run_to);
	if (used + strlen(part) + 5 < cap)
		memcpy(r->rep->unreadable_ids + used, part, strlen(part) + 1);
	else if (!strstr(r->rep->unreadable_ids, "..."))
		snprintf(r->rep->unreadable_ids + used, cap - used, ", ...");
	r->run_from = r->run_to = 0;
}

static void recover_unreadable(struct recover *r, int64_t id)
{
	if (!r->rep->first_error[0])
		diag_quote(r->rep->first_error, sizeof(r->rep->first_error), sqlite3_errmsg(r->src),
			   strlen(sqlite3_errmsg(r->src)), 200, '"');
	r->rep->unreadable++;
	if (r->run_from && id == r->run_to + 1) {
		r->run_to = id;
		return;
	}
	recover_flush_run(r);
	r->run_from = r->run_to = id;
}

/* Write the row under src (a statement on the damaged store) into the new
 * store. */
static int recover_save(struct recover *r, sqlite3_stmt *src, struct bridge_error *err)
{
	static const char corrupt[] = "corrupt: recovered from a damaged store; what it would "
				      "send does not match the checksum written with it";
	static const char dup[] = "recovered from a damaged store as a dead letter: a pending "
				  "delivery of the same participation and state was recovered too";
	struct store_row row;
	int status, rc, bad;

	if (store_row_read(src, &row) < 0)
		return bridge_error_set(err, "out of memory");
	status = row.status == STORE_DEAD ? STORE_DEAD : STORE_PENDING;
	bad = row.integrity == STORE_ROW_CORRUPT;
	if (bad)
		status = STORE_DEAD;
	store_row_clear(&row);
	if (!r->in_tx) {
		if (store_tx_begin(r->dst, err) < 0)
			return -1;
		r->in_tx = 1;
	}
	sqlite3_reset(r->ins);
	for (int i = 0; i < ROW_N_COLUMNS; i++)
		sqlite3_bind_value(r->ins, i + 1, sqlite3_column_value(src, i));
	sqlite3_bind_int(r->ins, 2, status);
	if (bad)
		sqlite3_bind_text(r->ins, 18, corrupt, -1, SQLITE_STATIC);
	rc = sqlite3_step(r->ins);
	if (rc == SQLITE_CONSTRAINT && status == STORE_PENDING) {
		/* the line index of the damaged store no longer held the pair apart */
		sqlite3_reset(r->ins);
		status = STORE_DEAD;
		sqlite3_bind_int(r->ins, 2, status);
		sqlite3_bind_text(r->ins, 18, dup, -1, SQLITE_STATIC);
		rc = sqlite3_step(r->ins);
	}
	sqlite3_reset(r->ins);
	if (rc != SQLITE_DONE)
		return store_sql_fail(r->dst, err, "cannot write a recovered delivery");
	r->rep->saved++;
	r->rep->corrupt += bad;
	if (status == STORE_DEAD)
		r->rep->dead++;
	else
		r->rep->pending++;
	if (++r->tx_rows >= RECOVER_TX_ROWS) {
		r->tx_rows = 0;
		r->in_tx = 0;
		if (store_tx_commit(r->dst, err) < 0)
			return -1;
	}
	return 0;
}

/* One integer from the damaged store, or 0 when SQLite cannot read it. */
static int64_t recover_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v = 0;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return 0;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Rows in id order; where SQLite stops with an error, each id after it is
 * looked up on its own (a lookup reaches a row through other pages than
 * the walk) until one reads again, and the walk goes on from there. */
static int recover_walk(struct recover *r, struct bridge_error *err)
{
	int64_t last = 0, hi = r->rep->highest_id;
	int rc;

	for (;;) {
		sqlite3_reset(r->scan);
		sqlite3_bind_int64(r->scan, 1, last);
		while ((rc = sqlite3_step(r->scan)) == SQLITE_ROW) {
			if (recover_save(r, r->scan, err) < 0)
				return -1;
			last = sqlite3_column_int64(r->scan, 0);
			if (last > hi)
				hi = last;
		}
		if (rc == SQLITE_DONE)
			break;
		/* SQLITE_CORRUPT and kin: find the next id that reads */
		sqlite3_reset(r->scan);
		for (;;) {
			if (last >= hi)
				goto done;
			last++;
			sqlite3_reset(r->point);
			sqlite3_bind_int64(r->point, 1, last);
			rc = sqlite3_step(r->point);
			if (rc == SQLITE_ROW) {
				rc = recover_save(r, r->point, err);
				sqlite3_reset(r->point);
				if (rc < 0)
					return -1;
				break;
			}
			if (rc == SQLITE_DONE)
				break; /* no such row (delivered before the damage) */
			recover_unreadable(r, last);
		}
	}
done:
	recover_flush_run(r);
	if (hi > r->rep->highest_id)
		r->rep->highest_id = hi;
	return 0;
}

/* "name" with its double quotes doubled, for SQL text. */
static void sql_ident(char *dst, size_t cap, const char *name)
{
	size_t n = 0;

	dst[n++] = '"';
	for (; *name && n + 3 < cap; name++) {
		if (*name == '"')
			dst[n++] = '"';
		dst[n++] = *name;
	}
	dst[n++] = '"';
	dst[n] = '\0';
}

/* Copy one table that is not the bridge's own (the cutover state may live
 * in the queue's store): created in the new store as it was created, then
 * its readable rows.  A read error ends the table; it is named in
 * rep->other_damaged. */
static int recover_table(struct recover *r, const char *name, const char *create,
			 struct bridge_error *err)
{
	struct store_recover_report *rep = r->rep;
	sqlite3_stmt *src = NULL, *dst = NULL;
	char ident[300], sql[1200];
	int rc, n, cols;
	size_t used;

	sql_ident(ident, sizeof(ident), name);
	if (store_exec_sql(r->dst, create, err) < 0)
		return -1;
	snprintf(sql, sizeof(sql), "SELECT * FROM %s", ident);
	if (sqlite3_prepare_v2(r->src, sql, -1, &src, NULL) != SQLITE_OK) {
		rc = SQLITE_CORRUPT;
		goto done;
	}
	cols = sqlite3_column_count(src);
	n = snprintf(sql, sizeof(sql), "INSERT INTO %s VALUES (", ident);
	for (int i = 0; i < cols && n < (int)sizeof(sql) - 8; i++)
		n += snprintf(sql + n, sizeof(sql) - (size_t)n, "%s?", i ? ", " : "");
	snprintf(sql + n, sizeof(sql) - (size_t)n, ")");
	if (sqlite3_prepare_v2(r->dst->db, sql, -1, &dst, NULL) != SQLITE_OK) {
		sqlite3_finalize(src);
		return store_sql_fail(r->dst, err, "cannot copy a table");
	}
	while ((rc = sqlite3_step(src)) == SQLITE_ROW) {
		sqlite3_reset(dst);
		for (int i = 0; i < cols; i++)
			sqlite3_bind_value(dst, i + 1, sqlite3_column_value(src, i));
		if (sqlite3_step(dst) != SQLITE_DONE) {
			sqlite3_finalize(src);
			sqlite3_finalize(dst);
			return store_sql_fail(r->dst, err, "cannot copy a table's row");
		}
		rep->other_rows++;
	}
done:
	sqlite3_finalize(src);
	sqlite3_finalize(dst);
	used = strlen(rep->other_tables);
	snprintf(rep->other_tables + used, sizeof(rep->other_tables) - used, "%s%s",
		 used ? ", " : "", name);
	if (rc != SQLITE_DONE) {
		used = strlen(rep->other_damaged);
		snprintf(rep->other_damaged + used, sizeof(rep->other_damaged) - used, "%s%s",
			 used ? ", " : "", name);
	}
	return 0;
}

/* Every table of the damaged store that is not the bridge's own. */
static int recover_tables(struct recover *r, struct bridge_error *err)
{
	sqlite3_stmt *list;
	int rc = 0;

	if (sqlite3_prepare_v2(r->src,
			       "SELECT name, sql FROM sqlite_master WHERE type = 'table'"
			       " AND name NOT IN ('deliveries', 'store_probe')"
			       " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND sql IS NOT NULL",
			       -1, &list, NULL) != SQLITE_OK)
		return 0; /* the schema was read once already: nothing else to copy */
	while (rc == 0 && sqlite3_step(list) == SQLITE_ROW)
		rc = recover_table(r, (const char *)sqlite3_column_text(list, 0),
				   (const char *)sqlite3_column_text(list, 1), err);
	sqlite3_finalize(list);
	/* and their indexes, built anew from the copied rows */
	if (rc == 0 && sqlite3_prepare_v2(r->src,
					  "SELECT sql FROM sqlite_master WHERE type = 'index'"
					  " AND tbl_name NOT IN ('deliveries', 'store_probe')"
					  " AND sql IS NOT NULL",
					  -1, &list, NULL) == SQLITE_OK) {
		while (rc == 0 && sqlite3_step(list) == SQLITE_ROW)
			rc = store_exec_sql(r->dst, (const char *)sqlite3_column_text(list, 0),
					    err);
		sqlite3_finalize(list);
	}
	return rc;
}

int store_recover(const char *damaged, const char *out, struct store_recover_report *ret,
		  struct bridge_error *err)
{
	static const char scan_sql[] =
		"SELECT %s FROM deliveries AS d WHERE d.id > ?1 ORDER BY d.id";
	static const char point_sql[] = "SELECT %s FROM deliveries AS d WHERE d.id = ?1";
	struct recover r = { 0 };
	struct stat sb;
	char sql[1024];
	const char *cols;
	int64_t app, version;
	int rc = -1;

	memset(ret, 0, sizeof(*ret));
	r.rep = ret;
	if (stat(damaged, &sb) != 0)
		return bridge_error_set(err, "queue store %s: %s", damaged, strerror(errno));
	if (!S_ISREG(sb.st_mode))
		return bridge_error_set(err, "queue store %s is not a regular file", damaged);
	if (lstat(out, &sb) == 0 || errno != ENOENT)
		return bridge_error_set(err,
					"%s already exists: give --output a path that does not, "
					"the recovered store is written there new",
					out);
	/* read only: what SQLite reads of the damaged file is all it does there */
	if (sqlite3_open_v2(damaged, &r.src, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		bridge_error_set(err, "queue store %s: cannot open: %s", damaged,
				 r.src ? sqlite3_errmsg(r.src) : "out of memory");
		goto out;
	}
	app = recover_int(r.src, "PRAGMA application_id");
	version = recover_int(r.src, "PRAGMA user_version");
	if (app != STORE_APPLICATION_ID) {
		bridge_error_set(err,
				 "%s is not a webhook-bridge queue store, or its first page is "
				 "damaged too (SQLite: %s): nothing can be read by row",
				 damaged, sqlite3_errmsg(r.src));
		goto out;
	}
	if (version > STORE_SCHEMA_VERSION) {
		bridge_error_set(err,
				 "queue store %s was written by a newer webhook-bridge "
				 "(schema %lld, this one knows %d)",
				 damaged, (long long)version, STORE_SCHEMA_VERSION);
		goto out;
	}
	cols = version >= 2 ? ROW_COLUMNS : ROW_COLUMNS_BASE ", x''";
	snprintf(sql, sizeof(sql), scan_sql, cols);
	if (sqlite3_prepare_v2(r.src, sql, -1, &r.scan, NULL) != SQLITE_OK) {
		bridge_error_set(err,
				 "queue store %s: cannot read its table of deliveries (SQLite: "
				 "%s): nothing can be read by row",
				 damaged, sqlite3_errmsg(r.src));
		goto out;
	}
	snprintf(sql, sizeof(sql), point_sql, cols);
	if (sqlite3_prepare_v2(r.src, sql, -1, &r.point, NULL) != SQLITE_OK) {
		bridge_error_set(err, "queue store %s: %s", damaged, sqlite3_errmsg(r.src));
		goto out;
	}
	ret->highest_id = recover_int(r.src, "SELECT MAX(id) FROM deliveries");
	app = recover_int(r.src, "SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'");
	if (app > ret->highest_id)
		ret->highest_id = app;

	if (store_open(out, STORE_CREATE, 0, &r.dst, err) < 0)
		goto out;
	if (sqlite3_prepare_v2(r.dst->db, recover_insert_sql, -1, &r.ins, NULL) != SQLITE_OK) {
		store_sql_fail(r.dst, err, "cannot prepare a statement");
		goto out;
	}
	if (recover_walk(&r, err) < 0)
		goto out;
	if (!r.in_tx && store_tx_begin(r.dst, err) < 0)
		goto out;
	r.in_tx = 1;
	if (recover_tables(&r, err) < 0)
		goto out;
	/* ids the damaged store gave out are not given again */
	snprintf(sql, sizeof(sql),
		 "DELETE FROM sqlite_sequence WHERE name = 'deliveries';"
		 "INSERT INTO sqlite_sequence (name, seq) VALUES ('deliveries', %lld);",
		 (long long)ret->highest_id);
	if (store_exec_sql(r.dst, sql, err) < 0 || store_tx_commit(r.dst, err) < 0)
		goto out;
	r.in_tx = 0;
	rc = 0;
out:
	if (r.in_tx)
		store_tx_abort(r.dst);
	sqlite3_finalize(r.scan);
	sqlite3_finalize(r.point);
	sqlite3_finalize(r.ins);
	if (r.src)
		sqlite3_close(r.src);
	store_close(r.dst);
	if (rc < 0 && r.dst)
		unlink(out); /* half a store is worse than none: the command can run again */
	return rc;
}
