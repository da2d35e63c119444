/*
 * v2record: capture of the real webhook 2.0 posts the shadow path verifies
 * (dry_run.v2_record), so that `webhook-bridge learn` can pair them with
 * the v1 captures of `record`.  One NDJSON line per post:
 *
 *   {"time":"2024-05-01T09:30:00.123Z","body":{...the v2 document...}}
 *
 * Redacted the way `record` redacts v1 bodies, with the same patterns
 * (record_pattern_match): a top-level member whose name matches (`ip`)
 * becomes "[redacted]", and so does every response value, file path and
 * file name of a form[] / questionnaire[] entry whose `variable` matches
 * (`email`, `lastname` ...).  The raw body is never written.  Numbers keep
 * their text.  The file is created mode 0600 and appended to; lines never
 * interleave (include/bridge/jsonl.h).  Thread-safe.
 */
#ifndef BRIDGE_V2RECORD_H
#define BRIDGE_V2RECORD_H

#include <stddef.h>
#include "bridge/diag.h"

struct v2record;

/* patterns: extra redaction patterns; redact_defaults: also the built-in
 * list (record_default_redact).  Both are copied.  NULL with err set when
 * the file cannot be opened. */
struct v2record *v2record_open(const char *path, const char *const *patterns, size_t n_patterns,
			       int redact_defaults, struct bridge_error *err);

/* The capture line for one v2 body (malloc'd, with its newline), or -1
 * with err set when the body is not one JSON object. */
int v2record_line(const struct v2record *r, const char *body, size_t len, char **ret,
		  size_t *ret_len, struct bridge_error *err);

/* Build and append the line.  Returns 0, or -1 with err set. */
int v2record_write(struct v2record *r, const char *body, size_t len, struct bridge_error *err);

void v2record_close(struct v2record *r); /* accepts NULL */

#endif
