/*
 * jsonl: an append-only JSON-lines file shared by threads, with a size cap.
 * Each line goes out in one write(2) under a mutex (O_APPEND), so lines
 * never interleave and a crash leaves at most the last line cut.  The
 * caller passes a complete line (one JSON object, with its trailing
 * newline).  Files are created mode 0600 (made 0600 when an older version
 * created them more open): they hold participation data.
 *
 * Rotation: with rotate_bytes > 0, before a line would take the file past
 * rotate_bytes it is renamed path.1 (path.1 to path.2 ... up to
 * path.<keep>, the oldest dropped) and a new one started.  A single line
 * larger than rotate_bytes still goes whole into its own file.  The dry-run
 * report and the record capture both write through it.
 */
#ifndef BRIDGE_JSONL_H
#define BRIDGE_JSONL_H

#include <stddef.h>
#include <stdint.h>
#include "bridge/diag.h"

#define JSONL_KEEP_MAX 1000
#define JSONL_PATH_MAX 4096

struct jsonl;

/* rotate_bytes 0: never rotate; keep 1..JSONL_KEEP_MAX (ignored without
 * rotation).  NULL with err set when the path cannot be opened. */
struct jsonl *jsonl_open(const char *path, uint64_t rotate_bytes, unsigned keep,
			 struct bridge_error *err);
/* 0, or -1 when the line could not be written whole (err says why: disk
 * full, rotation failed ...; err may be NULL).  A line cut short is ended
 * with a newline, so the next one starts on its own line. */
int jsonl_append(struct jsonl *j, const char *line, size_t len, struct bridge_error *err);
int jsonl_write(struct jsonl *j, const char *line, size_t len); /* jsonl_append, no err */
/* Open the path again (after logrotate moved the file away); lines written
 * meanwhile go to the old file.  On failure the old file stays in use. */
int jsonl_reopen(struct jsonl *j, struct bridge_error *err);
uint64_t jsonl_lines(struct jsonl *j); /* lines written whole since jsonl_open */
void jsonl_close(struct jsonl *j);     /* accepts NULL */

#endif
