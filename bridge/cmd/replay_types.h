/*
 * What the files of the replay command share: the payloads it reads (struct
 * item), the stream of them over every PATH (struct feed) and the check of
 * a v2 against its expected file.  Private to replay.c and replay_input.c.
 */
#ifndef BRIDGE_REPLAY_TYPES_H
#define BRIDGE_REPLAY_TYPES_H

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "bridge/buf.h"
#include "cli.h"
#include "bridge/config.h"
#include "bridge/delivery.h"
#include "bridge/convert.h"
#include "bridge/jsondiff.h"
#include "bridge/jsontree.h"
#include "bridge/mapping.h"
#include "bridge/sign.h"
#include "bridge/translate.h"
#include "bridge/upstream.h"
#include "bridge/v1.h"

#define CAPTURE_DEPTH_MAX 16                  /* capture lines: line > body > array */
#define EXPECT_MAX        (16u * 1024 * 1024) /* ceiling for one expected file */

/* Bounded line reader: a line longer than max is reported once and skipped. */
struct line_reader {
	FILE *f;
	char *buf;
	size_t cap, start, end;
	int eof;
};

enum line_status { LINE_OK, LINE_TOO_LONG, LINE_EOF, LINE_ERROR };

/* One payload to replay.  body is v1 JSON, or NULL when `problem` says why
 * the item cannot be replayed (`skip`: not counted as a failure). */
struct item {
	char *label; /* "path" or "path:line", for messages */
	char *name;  /* expected-file name: NAME or NAME.LINE */
	char *body;
	size_t len;
	char *problem;
	const char *problem_key; /* tally key of the problem */
	int skip;
};

struct feed {
	char **files; /* expanded inputs in order */
	size_t n_files, cap_files, next;
	struct line_reader lr; /* current NDJSON file, when lr.f */
	const char *cur;
	char *cur_base;
	long line_no;
	size_t max_body; /* as the server's limits.max_body */
	size_t max_line;
};

enum expect_result { EXPECT_NONE, EXPECT_MATCH, EXPECT_MISMATCH, EXPECT_MISSING };

void replay_item_clear(struct item *it);
int replay_feed_expand(struct feed *fd, char **paths, int n);
void replay_feed_free(struct feed *fd);
size_t replay_feed_count(const struct feed *fd);
int replay_feed_next(struct feed *fd, struct item *it);
enum expect_result replay_expect_check(const char *dir, const char *name, const char *v2,
				       size_t v2_len, const char *refusal, char *msg, size_t cap);

#endif
