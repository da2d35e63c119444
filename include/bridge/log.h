/*
 * log: JSON-lines logging to stderr, one object per line:
 *   {"time":"2026-11-26T21:00:00.123Z","level":"info","event":"listening",...}
 * Only main and the request handler log (library modules never do).
 * Thread-safe (a line is written whole, never torn).
 *
 * `serve` calls log_stream_start(): from then on stdout and stderr lines go
 * into bounded in-memory buffers that one writer thread per stream drains,
 * so a reader that stops reading never blocks an event loop.  The writer
 * writes what has gathered in one write(2), at most once per 10 ms under
 * load (a line after a quiet spell goes out at once).  A line that
 * does not fit is dropped and counted; the next line that gets through
 * carries "lines_lost":N.  Without log_stream_start() lines are written
 * directly (the batch commands want back-pressure).
 */
#ifndef BRIDGE_LOG_H
#define BRIDGE_LOG_H

#include <stddef.h>

#include "bridge/json.h" /* json_escape: log fields are JSON strings */

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level l);
int log_level_parse(const char *s, enum log_level *ret);
const char *log_level_name(enum log_level l); /* "debug", "info", "warn", "error" */

/* A line under construction: start, add fields, emit. Fixed-size buffer
 * (16 KiB); fields that would overflow are cut and the line says so. */
struct log_line {
	char buf[16384];
	size_t len;
	int truncated;
	int enabled;
	int level; /* enum log_level */
};

void log_begin(struct log_line *l, enum log_level level, const char *event);

/* A field's key is a string literal: log_str(&l, "route", name).  The
 * macros pass it with 15 more NUL bytes after it, so that a key of up to 16
 * bytes is copied as two words, and with its length, in which LOG_KEY_PLAIN
 * says that it has nothing to escape: the compiler finds that out from the
 * literal.  A key made at run time goes to the _key functions with
 * LOG_KEY_MEASURE (measured, checked, and read no further than its NUL). */
#define LOG_KEY_PAD     "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
#define LOG_KEY_MEASURE ((size_t)-1)
#define LOG_KEY_PLAIN   (((size_t)-1 >> 1) + 1)
/* byte i of literal k is past its end or needs no escape */
#define LOG_KEY_OK_(k, i)                                                           \
	((i) >= sizeof(k) - 1 ||                                                    \
	 ((unsigned char)(k LOG_KEY_PAD)[i] >= 0x20 && (k LOG_KEY_PAD)[i] != '"' && \
	  (k LOG_KEY_PAD)[i] != '\\' && (unsigned char)(k LOG_KEY_PAD)[i] != 0x7f))
#define LOG_KEY_PLAIN_(k)                                                                        \
	(sizeof(k) - 1 <= 16 && LOG_KEY_OK_(k, 0) && LOG_KEY_OK_(k, 1) && LOG_KEY_OK_(k, 2) &&   \
	 LOG_KEY_OK_(k, 3) && LOG_KEY_OK_(k, 4) && LOG_KEY_OK_(k, 5) && LOG_KEY_OK_(k, 6) &&     \
	 LOG_KEY_OK_(k, 7) && LOG_KEY_OK_(k, 8) && LOG_KEY_OK_(k, 9) && LOG_KEY_OK_(k, 10) &&    \
	 LOG_KEY_OK_(k, 11) && LOG_KEY_OK_(k, 12) && LOG_KEY_OK_(k, 13) && LOG_KEY_OK_(k, 14) && \
	 LOG_KEY_OK_(k, 15))
#define LOG_KEY(k)               k LOG_KEY_PAD, (sizeof(k) - 1) | (LOG_KEY_PLAIN_(k) ? LOG_KEY_PLAIN : 0)
#define log_str(l, k, value)     log_str_key((l), LOG_KEY(k), (value)) /* NULL value: skipped */
#define log_strn(l, k, value, n) log_strn_key((l), LOG_KEY(k), (value), (n))
#define log_int(l, k, value)     log_int_key((l), LOG_KEY(k), (value))
#define log_raw(l, k, json, n)   log_raw_key((l), LOG_KEY(k), (json), (n)) /* already-valid JSON */
void log_str_key(struct log_line *l, const char *key, size_t key_len, const char *value);
void log_strn_key(struct log_line *l, const char *key, size_t key_len, const char *value, size_t n);
void log_int_key(struct log_line *l, const char *key, size_t key_len, long long value);
void log_raw_key(struct log_line *l, const char *key, size_t key_len, const char *json, size_t n);
void log_end(struct log_line *l);            /* writes to stderr */
void log_end_to(struct log_line *l, int fd); /* writes to fd (stdout for dry-run lines) */

enum log_stream { LOG_STREAM_STDOUT, LOG_STREAM_STDERR, LOG_STREAM_COUNT };

/* Buffers of cap_bytes each and their writer threads; 0 or -errno. */
int log_stream_start(size_t cap_bytes);
/* Waits up to timeout_ms for both buffers to empty, then stops the writers
 * (a writer stuck on a reader that never reads is cancelled); later lines
 * to a stream that could not be emptied are dropped. */
void log_stream_stop(long timeout_ms);
/* A complete JSON object line ("{...}\n") to stdout or stderr, through the
 * buffer when started. */
void log_stream_write(enum log_stream s, const char *line, size_t n);
/* Lines dropped on a full buffer (or a failed write) since the start. */
unsigned long long log_stream_dropped(enum log_stream s);
const char *log_stream_name(enum log_stream s);

/* Rate limit for lines a peer can trigger (libinput's util-ratelimit idea):
 * at most `burst` lines per `interval_ms`; the first line after a suppressed
 * stretch carries how many were suppressed.  Not thread-safe: one per worker. */
struct log_ratelimit {
	long interval_ms;
	unsigned burst;
	long long window_start_ms;
	unsigned in_window;
	unsigned long suppressed;
};
void log_ratelimit_init(struct log_ratelimit *r, long interval_ms, unsigned burst);
/* 1: log this line (and *ret_suppressed = lines dropped before it), 0: drop it. */
int log_ratelimit_allow(struct log_ratelimit *r, unsigned long *ret_suppressed);

struct evbuffer;

/* The last LOG_RECENT warn and error lines written to stderr (each under
 * LOG_RECENT_LINE bytes), oldest first, as a JSON array of the line
 * objects.  Thread-safe. */
#define LOG_RECENT      20
#define LOG_RECENT_LINE 2048
void log_recent_json(struct evbuffer *out);

/* Current UTC time as "YYYY-MM-DDTHH:MM:SS.mmmZ" (cap >= 25). */
void log_time_now(char *out, size_t cap);

/* "s" quoted as JSON (json.h's log form) appended to out, whatever its
 * length (on out of memory: ""). */
void json_escape_add(struct evbuffer *out, const char *s);

#endif
