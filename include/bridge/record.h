/*
 * record: traffic recording.  Each inbound v1 post becomes one NDJSON line
 * in a capture file that `webhook-bridge replay` reads back:
 *
 *   {"time":"2024-05-01T09:30:00.123Z","content_type":"application/json",
 *    "headers":{"User-Agent":"..."},"body":{...the v1 fields...}}
 *
 * `time` is the arrival time in UTC with milliseconds.  `body` is the v1
 * payload re-emitted as one JSON object (form-urlencoded posts too: their
 * fields become strings, repeated keys arrays), numbers with the exact text
 * the sender wrote, and the value of every key matched by a redaction
 * pattern replaced by the string "[redacted]".  The raw body is never
 * written, so a redacted value appears nowhere in the file.  A body that
 * cannot be parsed is recorded without any of its bytes:
 *
 *   {"time":...,"content_type":...,"headers":{...},"invalid":true,
 *    "reason":"invalid JSON at byte 17: ...","body_bytes":123}
 *
 * Redaction patterns match v1 keys ASCII-case-insensitively: "email" is an
 * exact key, "phone*" a prefix, "*_email" a suffix, "*mail*" a substring.
 * The built-in list (record_default_redact) applies unless
 * record_options.redact_defaults is 0; record_options.redact adds to it.
 *
 * Only the headers named in record_options.headers are kept (case-
 * insensitive; repeated ones joined with ", "; bytes that are not UTF-8
 * become U+FFFD).
 *
 * Rotation: before a line would take the file past rotate_bytes, the file
 * is renamed path.1 (path.1 to path.2 ... up to path.<keep>, the oldest
 * dropped) and a new one started.  A single line larger than rotate_bytes
 * still goes whole into its own file.  Files are created mode 0600: they
 * hold participation data.
 *
 * Thread-safety: recorder_write() may be called from any thread at once.
 * The line is built outside the lock; one mutex guards rotation and the
 * write(2) of the whole line, so lines never interleave.  No libevent
 * call is made: the caller's event loop is blocked only by that write.
 */
#ifndef BRIDGE_RECORD_H
#define BRIDGE_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>
#include "bridge/diag.h"
#include "bridge/v1.h"

#define RECORD_REDACTED "[redacted]"

struct record_header {
	const char *name;
	const char *value;
};

struct record_options {
	const char *path;      /* capture file; required */
	uint64_t rotate_bytes; /* 0: never rotate; default 104857600 (100 MiB) */
	unsigned keep;         /* rotated files kept (path.1 .. path.keep), 1..1000; default 5 */
	int redact_defaults;   /* 1: apply record_default_redact too; default 1 */
	const char *const *redact; /* extra patterns (see above) */
	size_t n_redact;
	const char *const *headers; /* header names to keep; NULL: record_default_headers */
	size_t n_headers;
	size_t max_line;         /* a longer line is recorded as invalid; default 4 MiB */
	struct v1_limits limits; /* parse limits; default v1_limits_default() */
};

/* NULL-terminated built-in lists (static storage). */
extern const char *const record_default_redact[];
extern const char *const record_default_headers[];

/* Fill *o with the defaults above (path NULL). */
void record_options_default(struct record_options *o);

/* 1 when key (key_len bytes) is matched by pattern, else 0. */
int record_pattern_match(const char *pattern, const char *key, size_t key_len);

struct recorder;

/* Open (append to) the capture file.  The options are copied.  NULL with
 * err set when the path cannot be opened or an option is out of range. */
struct recorder *recorder_open(const struct record_options *opt, struct bridge_error *err);

/* Record one post.  content_type selects the parser (application/json or
 * application/x-www-form-urlencoded, parameters ignored; anything else is
 * recorded as invalid).  arrival NULL: now.  Returns 0, or -1 with err set
 * when the line could not be written (disk full, rotation failed ...); an
 * unparseable body is not an error, it is recorded as invalid. */
int recorder_write(struct recorder *r, const char *content_type, const struct timeval *arrival,
		   const struct record_header *headers, size_t n_headers, const char *body,
		   size_t len, struct bridge_error *err);

/* Lines written since recorder_open, for metrics (thread-safe). */
uint64_t recorder_lines(struct recorder *r);

/* The options recorder_open would refuse (path missing, a bad redact
 * pattern), with its message; the file is not touched. */
int record_options_check(const struct record_options *opt, struct bridge_error *err);

/* Open the capture path again (logrotate moved the file away). */
int recorder_reopen(struct recorder *r, struct bridge_error *err);
void recorder_close(struct recorder *r); /* accepts NULL */

#endif
