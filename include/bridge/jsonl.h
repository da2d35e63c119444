/*
 * jsonl: an append-only JSON-lines file shared by threads.  Each line goes
 * out in one write(2) under a mutex (O_APPEND), so lines never interleave
 * and a crash leaves at most the last line cut.  The caller passes a
 * complete line (one JSON object, with its trailing newline).
 */
#ifndef BRIDGE_JSONL_H
#define BRIDGE_JSONL_H

#include <stddef.h>
#include "bridge/diag.h"

struct jsonl;

struct jsonl *jsonl_open(const char *path, struct bridge_error *err);
int jsonl_write(struct jsonl *j, const char *line, size_t len);
/* Open the path again (after logrotate moved the file away); lines written
 * meanwhile go to the old file.  On failure the old file stays in use. */
int jsonl_reopen(struct jsonl *j, struct bridge_error *err);
void jsonl_close(struct jsonl *j); /* accepts NULL */

#endif
