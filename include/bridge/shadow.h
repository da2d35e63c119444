/*
 * shadow: correlation of translated and real webhook 2.0 payloads in dry-run
 * mode, and their structural comparison.
 *
 * Two sides offer v2 documents: SHADOW_TRANSLATED (what the bridge made of a
 * v1 post) and SHADOW_REAL (what Qualifio's webhook 2.0 sent for the same
 * participation).  A side that arrives first waits in the store; when the
 * other side of the same key arrives, the entry leaves the store and the two
 * documents are compared with jsondiff (a = translated, b = real: "added"
 * means only the real payload has it, "removed" only the bridge's).
 *
 * Key: route, participation id and state.  The id and the state compare
 * ASCII-case-insensitively, so a case difference still correlates (and then
 * shows as a difference).  A participation sent first incomplete, then
 * complete, is two keys.  Both sides must name the same route.  Route, id
 * and state must be free of control bytes; id 1..128 bytes, state 0..64,
 * route 0..256.
 *
 * Window: an entry waits at most ttl_ms from its arrival (a repeated arrival
 * of the same side and key replaces it and restarts its wait; counted as a
 * duplicate).  An entry never matches once its age is >= ttl_ms, even if no
 * shadow_expire() has run since: shadow_offer() then reports it expired
 * ("ttl") and stores the newcomer as waiting.
 *
 * Memory: at most max_entries entries wait, both sides together; storing one
 * more first evicts the oldest, reported with reason "capacity".  Each entry
 * keeps one copy of its v2 body (and, on the translated side, of its trace)
 * when it is at most max_body bytes; a larger one waits without its bytes
 * and its comparison is SHADOW_NOT_COMPARED.  The table of differing paths
 * holds SHADOW_MAX_PATHS distinct paths; differences at further paths are
 * counted under "_other".
 *
 * Reporting: nothing leaves the store unreported.  Entries leaving it
 * unmatched are passed to a callback:
 *   - from shadow_expire(): the callback given to that call (ttl);
 *   - from shadow_offer(): the on_expired callback given to shadow_new()
 *     (capacity evictions, and stale entries met as described above).
 * Both are called after the store's lock is released, on the calling
 * thread, so they may run on several threads at once and may call back into
 * the store; the record they get is valid only during the call.
 *
 * Thread-safety: every function may be called from any thread at once,
 * except shadow_free().  One mutex guards the table; comparisons run
 * outside it.  No libevent event loop is involved (evbuffers only); the
 * caller supplies the time (a monotonic clock in milliseconds).
 * Nothing is printed or logged.
 */
#ifndef BRIDGE_SHADOW_H
#define BRIDGE_SHADOW_H

#include <stddef.h>
#include "bridge/diag.h"
#include "bridge/jsondiff.h"

#define SHADOW_DEFAULT_MAX_ENTRIES 100000
#define SHADOW_DEFAULT_TTL_MS      3600000L
#define SHADOW_DEFAULT_MAX_BODY    (256u * 1024)
#define SHADOW_MAX_PATHS           1024 /* distinct differing paths counted */
#define SHADOW_MAX_ID              128
#define SHADOW_MAX_STATE           64
#define SHADOW_MAX_ROUTE           256

struct shadow_limits {
	size_t max_entries; /* entries waiting, both sides; 0: 100000 */
	long ttl_ms;        /* wait from arrival; 0: 3600000 (one hour); < 0 is an error */
	size_t max_body;    /* bytes kept per v2 body and per trace; 0: 256 KiB */
};

enum shadow_side { SHADOW_TRANSLATED, SHADOW_REAL };

enum shadow_status {
	SHADOW_IDENTICAL,
	SHADOW_DIFFERENT,
	SHADOW_NOT_COMPARED, /* a body over max_body, or not valid JSON: see reason */
};

/* One entry that left the store unmatched. */
struct shadow_expired {
	const char *route;
	enum shadow_side side;
	const char *participation_id; /* as offered */
	const char *state;            /* as offered, "" when none */
	long long age_ms;             /* now - arrival, >= 0 */
	const char *reason;           /* "ttl" or "capacity" */
};

/* The comparison of one matched participation.  Owned by the caller;
 * shadow_result_clear() it. */
struct shadow_result {
	enum shadow_status status;
	enum shadow_side first; /* the side that was waiting */
	long long waited_ms;    /* how long it waited */
	/* Differences, a = translated, b = real (include/bridge/jsondiff.h).
	 * With a translated trace, each entry's rule is the "file:line" of the
	 * trace record behind its path (jsondiff_trace_find: the exact path,
	 * else the nearest ancestor, else a record of the same form/optins/
	 * questionnaire entry), or "unmapped" when no record covers it; without
	 * a trace, rule is NULL. */
	struct jsondiff diff;
	char *reason; /* SHADOW_NOT_COMPARED: why; else NULL */
};

struct shadow;

/* Create a store.  lim may be NULL for the defaults.  ignore: jsondiff
 * options applied to every comparison (ignore patterns and limits), copied;
 * NULL for the defaults; its names default to "translated" and "real".
 * on_expired (may be NULL: evictions are then only counted) receives what
 * shadow_offer() evicts, with arg.  Returns NULL with err set on a bad
 * limit, a bad ignore pattern or no memory. */
struct shadow *shadow_new(const struct shadow_limits *lim, const struct jsondiff_options *ignore,
			  void (*on_expired)(const struct shadow_expired *e, void *arg), void *arg,
			  struct bridge_error *err);

/* Frees every waiting entry without reporting it.  Accepts NULL. */
void shadow_free(struct shadow *s);

/* One side arrives.  v2 is len bytes (need not be NUL-terminated).
 * trace_json (translated side only, else ignored; may be NULL) is a JSON
 * array of provenance records {"path":"form[email].responses[0].value",
 * "rule":"rules.conf:12","from":"email","what":"copy"} ("file" and "line"
 * members are accepted instead of "rule"; other members are ignored).
 * Returns 1 when it matched the waiting other side, with *ret filled;
 * 0 when it was stored to wait (a same-side entry of the same key is
 * replaced: a duplicate); -1 with err set when the arguments are refused
 * (nothing stored).  *ret is zeroed first in every case. */
int shadow_offer(struct shadow *s, enum shadow_side side, const char *route,
		 const char *participation_id, const char *state, const char *v2, size_t len,
		 const char *trace_json, long long now_ms, struct shadow_result *ret,
		 struct bridge_error *err);

/* Remove every entry whose age is >= ttl_ms and pass each to cb (may be
 * NULL) with reason "ttl", oldest first. */
void shadow_expire(struct shadow *s, long long now_ms,
		   void (*cb)(const struct shadow_expired *e, void *arg), void *arg);

/* The counters as one malloc'd JSON object (NULL when out of memory):
 *   {"seen":{"translated":N,"real":N},"matched":N,"identical":N,
 *    "different":N,"not_compared":N,"unmatched":{"translated":N,"real":N},
 *    "expired":{"translated":N,"real":N,"ttl":N,"capacity":N},
 *    "duplicates":N,"rejected":N,"trace_errors":N,
 *    "paths":{"distinct":N,"other":N},
 *    "top_paths":[{"path":"state","count":N,"added":N,"removed":N,
 *                  "changed":N,"rule":"rules.conf:41"}, ...],
 *    "limits":{"max_entries":N,"ttl_ms":N,"max_body":N}}
 * seen counts every accepted offer (duplicates included); matched =
 * identical + different + not_compared; unmatched counts entries waiting
 * now; rejected, offers refused with -1; trace_errors, differing
 * comparisons whose translated trace could not be read (malformed, or over
 * max_body), their differences then carrying no rule.  top_paths: the top_n
 * paths by count (ties by path), "_other"
 * holding the differences past SHADOW_MAX_PATHS; rule is the rule most
 * often named for the path, "unmapped", or null (no trace). */
char *shadow_summary_json(struct shadow *s, size_t top_n);

/* The comparison as one malloc'd JSON object (NULL when out of memory):
 *   {"status":"different","first":"real","waited_ms":N,"added":N,
 *    "removed":N,"changed":N,"differences":[{"kind":"changed",
 *    "path":"state","a":"COMPLETED","b":"DONE","rule":"rules.conf:41",...}]}
 * plus "truncated":true when differences were cut at jsondiff's
 * max_entries, and "reason" when not compared.  Values a and b are
 * embedded as JSON (see jsondiff_render_json). */
char *shadow_result_json(const struct shadow_result *r);

/* Free what r holds and zero it.  Accepts NULL and a zeroed struct. */
void shadow_result_clear(struct shadow_result *r);

/* Keep the waiting entries and the totals in a shared store (store.h, the
 * PostgreSQL engine; not owned, it must outlive s) instead of this
 * process's memory, so that several bridges correlate with each other:
 * an offer meets the other side whichever bridge took it, each pair is
 * compared once (by the bridge that took the second side), shadow_expire
 * sweeps the whole store (one bridge at a time: the others skip), and
 * shadow_summary_json and shadow_waiting give the cluster's figures
 * ("paths.other" stays 0).  Offers then make database round trips on the
 * calling thread; a store error refuses the offer (-1).  Call before any
 * offer. */
struct store;
void shadow_use_store(struct shadow *s, struct store *st);

/* Entries waiting for their other side now. */
size_t shadow_waiting(struct shadow *s);

const char *shadow_side_name(enum shadow_side side); /* "translated", "real" */
const char *shadow_status_name(
	enum shadow_status status); /* "identical", "different", "not_compared" */

#endif
