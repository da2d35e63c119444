/*
 * store_checkpoint: the WAL's checkpoints on a thread of their own (serve).
 *
 * SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL
 * past wal_autocheckpoint pages, on the committing thread and under
 * store.mu: the posts of that group, the next group and the scheduler all
 * wait while it copies the WAL into the database and syncs both.  Here the
 * serving connection checkpoints nothing itself: its WAL hook wakes the
 * checkpointer thread, which checkpoints on a connection of its own, beside
 * the commits (PASSIVE: writers go on appending to the WAL meanwhile).
 *
 * The WAL starts over from its beginning only at a commit that finds every
 * frame copied, which a passive checkpoint under constant load seldom
 * leaves (commits arrive while it copies).  Past bound_pages the
 * checkpointer copies the rest with store.mu held, briefly: the frames of
 * the commits made during the first pass.  Not SQLite's RESTART mode: it
 * holds the WAL's write lock while it waits, with the busy handler, for
 * every reader, so a `queue` command reading the store would stall the
 * posts for the whole wait; and not TRUNCATE, whose rewrite of the WAL
 * header the serving connection takes for another process's change (its
 * page cache dropped, data_version changed).
 *
 * Durability is unchanged: commits still sync the WAL (synchronous=FULL),
 * and the checkpointer's connection (synchronous=FULL too) syncs the WAL
 * before it copies and the database after, before the WAL may be reused.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "bridge/clock.h"
#include "bridge/store.h"
#include "store_types.h"

#define CKPT_WAKE_PAGES  1000  /* new WAL frames that wake it: SQLite's wal_autocheckpoint */
#define CKPT_BOUND_PAGES 16384 /* WAL frames beyond which it starts the WAL over (64 MiB) */
#define CKPT_BUSY_MS     1000  /* its connection's busy timeout (opening) */
#define CKPT_RETRY_MS    1000  /* after a failed checkpoint, none for this long */

struct store_checkpointer {
	sqlite3 *db; /* the checkpointer's own connection: its thread alone uses it */
	pthread_t thread;
	pthread_mutex_t mu; /* everything below; taken inside store.mu by the hook */
	pthread_cond_t cv;  /* the thread waits for a wake or the stop */
	int wake, stop;
	/* set while the thread waits for store.mu: writers let it go first
	 * (store_checkpointer_yield), or a writer that locks again at once would
	 * keep it waiting */
	atomic_int wants_mu;
	pthread_cond_t turn_cv; /* wants_mu cleared */
	int pages;              /* frames in the WAL after the last commit */
	int backfilled; /* frames the last checkpoint found copied (0: none since the WAL started over) */
	int restart_log; /* frames copied with the store locked, 0 once the WAL started over */
	int wake_pages, bound_pages;
	int64_t retry_at_ms;
	long long runs, restarts;
};

/* Noted in the store, not the checkpointer: CKPT_WARN_START has none. */
static void warning_note(struct store *s, enum ckpt_warning kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void warning_note(struct store *s, enum ckpt_warning kind, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&s->warning_mu);
	if (!(s->warned & (1u << kind))) {
		s->warned |= 1u << kind;
		va_start(ap, fmt);
		vsnprintf(s->warning[kind], sizeof(s->warning[kind]), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&s->warning_mu);
}

int store_checkpoint_warning(struct store *s, char *buf, size_t cap)
{
	int found = 0;

	if (!s || s->pg)
		return 0;
	pthread_mutex_lock(&s->warning_mu);
	for (int k = 0; k < CKPT_WARN_N && !found; k++) {
		unsigned bit = 1u << k;

		if ((s->warned & bit) && !(s->warnings_taken & bit)) {
			s->warnings_taken |= bit;
			snprintf(buf, cap, "%s", s->warning[k]);
			found = 1;
		}
	}
	pthread_mutex_unlock(&s->warning_mu);
	return found;
}

/* The serving connection's WAL hook, on the committing thread (store.mu
 * held): wake the checkpointer, never checkpoint here. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct store_checkpointer *c = arg;

	pthread_mutex_lock(&c->mu);
	if (pages < c->pages) /* the WAL started over */
		c->restarts++;
	if (pages < c->backfilled)
		c->backfilled = 0;
	if (pages < c->restart_log)
		c->restart_log = 0;
	c->pages = pages;
	if (!c->wake && (pages - c->backfilled >= c->wake_pages || pages >= c->bound_pages)) {
		c->wake = 1;
		pthread_cond_signal(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
	return SQLITE_OK;
}

/* One turn: a passive checkpoint beside the commits; past the bound, a
 * second one with the store locked, which copies what the first left (the
 * commits made meanwhile) while no commit can add to it, so that the next
 * commit finds every frame copied and starts the WAL over.  0, or -1 after
 * a failure (noted). */
static int checkpoint_turn(struct store *s, struct store_checkpointer *c)
{
	int log = -1, done = -1, rc, bound, copied;

	rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
	if (rc == SQLITE_BUSY)
		return 0; /* another process checkpoints: its turn */
	if (rc != SQLITE_OK)
		goto failed;
	pthread_mutex_lock(&c->mu);
	c->runs++;
	c->backfilled = done;
	if (log < c->restart_log)
		c->restart_log = 0;
	bound = c->bound_pages;
	copied = c->restart_log;
	pthread_mutex_unlock(&c->mu);
	if (log < bound || log == copied)
		return 0; /* below the bound, or no commit since every frame was copied */
	if (copied)       /* a commit came after that, and the WAL did not start over */
		goto pinned;
	atomic_store(&c->wants_mu, 1);
	pthread_mutex_lock(&s->mu);
	pthread_mutex_lock(&c->mu);
	atomic_store(&c->wants_mu, 0);
	pthread_cond_broadcast(&c->turn_cv);
	pthread_mutex_unlock(&c->mu);
	rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
	if (rc == SQLITE_OK && done == log) {
		/* before any commit: the next one's hook tells whether it started over */
		pthread_mutex_lock(&c->mu);
		c->runs++;
		c->backfilled = done;
		c->restart_log = log;
		pthread_mutex_unlock(&c->mu);
	}
	pthread_mutex_unlock(&s->mu);
	if (rc != SQLITE_OK && rc != SQLITE_BUSY)
		goto failed;
	if (rc == SQLITE_BUSY || done < log)
		goto pinned;
	return 0;
pinned:
	pthread_mutex_lock(&c->mu);
	c->restart_log = 0; /* after the pause, copied again with the store locked */
	pthread_mutex_unlock(&c->mu);
	warning_note(s, CKPT_WARN_RESTART,
		     "queue store %s: the WAL (%d pages) cannot start over while another process "
		     "reads or checkpoints the store; tried again every %d ms",
		     s->path, log, CKPT_RETRY_MS);
	return -1;
failed:
	warning_note(s, CKPT_WARN_PASSIVE,
		     "queue store %s: a checkpoint of the WAL failed: %s (the WAL grows until one "
		     "goes through; tried again every %d ms)",
		     s->path, sqlite3_errmsg(c->db), CKPT_RETRY_MS);
	return -1;
}

static void *checkpointer_run(void *arg)
{
	struct store *s = arg;
	struct store_checkpointer *c = s->ckpt;

	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (!c->wake && !c->stop)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->stop)
			break;
		c->wake = 0;
		if (clock_mono_ms() < c->retry_at_ms)
			continue; /* the next commit after the pause wakes it again */
		pthread_mutex_unlock(&c->mu);
		if (checkpoint_turn(s, c) < 0) {
			pthread_mutex_lock(&c->mu);
			c->retry_at_ms = clock_mono_ms() + CKPT_RETRY_MS;
			continue;
		}
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

static void no_thread(struct store *s, const char *why)
{
	warning_note(s, CKPT_WARN_START,
		     "queue store %s: no checkpoint thread (%s): commits checkpoint the WAL "
		     "themselves",
		     s->path, why);
}

/* The checkpointer's connection: the same file, synchronous=FULL, and a
 * first read so that it has the WAL open (a checkpoint on a connection
 * that never read does nothing). */
static int checkpointer_db_open(struct store *s, sqlite3 **ret)
{
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(s->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);

	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(db, CKPT_BUSY_MS);
		rc = sqlite3_exec(db,
				  "PRAGMA synchronous = FULL; SELECT COUNT(*) FROM sqlite_master;",
				  NULL, NULL, NULL);
	}
	if (rc != SQLITE_OK) {
		no_thread(s, db ? sqlite3_errmsg(db) : "out of memory");
		sqlite3_close(db);
		return -1;
	}
	*ret = db;
	return 0;
}

void store_checkpointer_start(struct store *s)
{
	struct store_checkpointer *c = calloc(1, sizeof(*c));
	int rc;

	if (!c) {
		no_thread(s, "out of memory");
		return;
	}
	if (checkpointer_db_open(s, &c->db) < 0) {
		free(c);
		return;
	}
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	pthread_cond_init(&c->turn_cv, NULL);
	c->wake_pages = CKPT_WAKE_PAGES;
	c->bound_pages = CKPT_BOUND_PAGES;
	s->ckpt = c;
	rc = pthread_create(&c->thread, NULL, checkpointer_run, s);
	if (rc != 0) {
		no_thread(s, strerror(rc));
		s->ckpt = NULL;
		sqlite3_close(c->db);
		pthread_cond_destroy(&c->turn_cv);
		pthread_cond_destroy(&c->cv);
		pthread_mutex_destroy(&c->mu);
		free(c);
		return;
	}
	pthread_setname_np(c->thread, "store-ckpt"); /* here: set before anyone looks */
	/* in place of SQLite's automatic checkpoint, which is a WAL hook too */
	sqlite3_wal_autocheckpoint(s->db, 0);
	sqlite3_wal_hook(s->db, wal_hook, c);
}

void store_checkpointer_stop(struct store *s)
{
	struct store_checkpointer *c = s->ckpt;

	if (!c)
		return;
	if (s->db)
		sqlite3_wal_hook(s->db, NULL, NULL);
	pthread_mutex_lock(&c->mu);
	c->stop = 1;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	pthread_join(c->thread, NULL);
	sqlite3_close(c->db);
	pthread_cond_destroy(&c->turn_cv);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	free(c);
	s->ckpt = NULL;
}

void store_checkpointer_yield(struct store *s)
{
	struct store_checkpointer *c = s->ckpt;

	if (!c || !atomic_load(&c->wants_mu))
		return;
	pthread_mutex_lock(&c->mu);
	while (atomic_load(&c->wants_mu))
		pthread_cond_wait(&c->turn_cv, &c->mu);
	pthread_mutex_unlock(&c->mu);
}

int store_checkpoint_tune(struct store *s, int wake_pages, int bound_pages)
{
	struct store_checkpointer *c = s ? s->ckpt : NULL;

	if (!c || wake_pages < 1 || bound_pages < 1)
		return -1;
	pthread_mutex_lock(&c->mu);
	c->wake_pages = wake_pages;
	c->bound_pages = bound_pages;
	pthread_mutex_unlock(&c->mu);
	return 0;
}

int store_checkpoint_stats(struct store *s, struct store_checkpoint_stats *ret)
{
	struct store_checkpointer *c = s ? s->ckpt : NULL;

	memset(ret, 0, sizeof(*ret));
	if (!c)
		return -1;
	pthread_mutex_lock(&c->mu);
	ret->runs = c->runs;
	ret->restarts = c->restarts;
	ret->wal_pages = c->pages;
	ret->backfilled = c->backfilled;
	pthread_mutex_unlock(&c->mu);
	return 0;
}
