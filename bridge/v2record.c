/*
 * v2record: redacted capture of verified real v2 posts (see
 * include/bridge/v2record.h).
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "bridge/jsonl.h"
#include "bridge/jsontree.h"
#include "bridge/log.h"
#include "bridge/record.h"
#include "bridge/v1.h"
#include "bridge/v2record.h"

#define V2RECORD_MAX_DEPTH 32 /* yajl_tree recurses: bound nesting first */

struct v2record {
	struct jsonl *out;
	char **patterns;
	size_t n_patterns;
};

struct v2record *v2record_open(const char *path, const char *const *patterns, size_t n_patterns,
			       int redact_defaults, struct bridge_error *err)
{
	struct v2record *r = calloc(1, sizeof(*r));
	size_t n_def = 0;

	if (!r) {
		bridge_error_set(err, "out of memory");
		return NULL;
	}
	if (redact_defaults)
		while (record_default_redact[n_def])
			n_def++;
	r->patterns = calloc(n_def + n_patterns + 1, sizeof(char *));
	for (size_t i = 0; r->patterns && i < n_def + n_patterns; i++) {
		r->patterns[i] = strdup(i < n_def ? record_default_redact[i] : patterns[i - n_def]);
		if (!r->patterns[i])
			break;
		r->n_patterns++;
	}
	if (!r->patterns || r->n_patterns != n_def + n_patterns) {
		bridge_error_set(err, "out of memory");
		v2record_close(r);
		return NULL;
	}
	r->out = jsonl_open(path, 0, 1, err);
	if (!r->out) {
		v2record_close(r);
		return NULL;
	}
	return r;
}

void v2record_close(struct v2record *r)
{
	if (!r)
		return;
	jsonl_close(r->out);
	for (size_t i = 0; i < r->n_patterns; i++)
		free(r->patterns[i]);
	free(r->patterns);
	free(r);
}

static int redacted(const struct v2record *r, const char *name)
{
	for (size_t i = 0; i < r->n_patterns; i++)
		if (record_pattern_match(r->patterns[i], name, strlen(name)))
			return 1;
	return 0;
}

static int gen_str(yajl_gen g, const char *s)
{
	return yajl_gen_string(g, (const unsigned char *)s, strlen(s)) == yajl_gen_status_ok ? 0
											     : -1;
}

/* The capture's filter: state 1 turns every scalar below into "[redacted]",
 * state 2 only response values and file paths/names (inside an entry whose
 * variable is redacted). */
static int capture_member(void *arg, yajl_val obj, const char *k, int depth, int hide)
{
	const struct v2record *r = arg;
	yajl_val var = NULL;

	if (depth == 0 && redacted(r, k))
		hide = 1;
	if (depth == 2 && strcmp(k, "responses") == 0) {
		for (size_t i = 0; i < obj->u.object.len; i++)
			if (strcmp(obj->u.object.keys[i], "variable") == 0)
				var = obj->u.object.values[i];
		if (var && YAJL_IS_STRING(var) && redacted(r, var->u.string))
			hide = 2;
	}
	if (hide == 2 &&
	    (strcmp(k, "value") == 0 || strcmp(k, "path") == 0 || strcmp(k, "name") == 0))
		hide = 1;
	return hide;
}

static const char *capture_scalar(void *arg, int hide)
{
	return hide == 1 ? RECORD_REDACTED : NULL;
}

int v2record_line(const struct v2record *r, const char *body, size_t len, char **ret,
		  size_t *ret_len, struct bridge_error *err)
{
	struct jsontree_filter filter = { capture_member, capture_scalar, (void *)r };
	char *text, ebuf[256], ts[32];
	yajl_val root = NULL;
	yajl_gen g;
	const unsigned char *buf;
	size_t blen;
	int rc = -1;

	*ret = NULL;
	text = malloc(len + 1);
	if (!text)
		return bridge_error_set(err, "out of memory");
	memcpy(text, body, len);
	text[len] = '\0';
	if (memchr(text, '\0', len) || v1_json_depth(text, len) > V2RECORD_MAX_DEPTH ||
	    !(root = yajl_tree_parse(text, ebuf, sizeof(ebuf))) || !YAJL_IS_OBJECT(root)) {
		yajl_tree_free(root);
		free(text);
		return bridge_error_set(err, "the v2 body is not one JSON object");
	}
	free(text);
	g = yajl_gen_alloc(NULL);
	if (g && yajl_gen_config(g, yajl_gen_validate_utf8, 1)) {
		log_time_now(ts, sizeof(ts));
		if (yajl_gen_map_open(g) == yajl_gen_status_ok && gen_str(g, "time") == 0 &&
		    gen_str(g, ts) == 0 && gen_str(g, "body") == 0 &&
		    jsontree_gen(g, root, &filter) == 0 &&
		    yajl_gen_map_close(g) == yajl_gen_status_ok &&
		    yajl_gen_get_buf(g, &buf, &blen) == yajl_gen_status_ok &&
		    (*ret = malloc(blen + 2)) != NULL) {
			memcpy(*ret, buf, blen);
			(*ret)[blen] = '\n';
			(*ret)[blen + 1] = '\0';
			*ret_len = blen + 1;
			rc = 0;
		}
	}
	if (rc < 0)
		bridge_error_set(err, "cannot write the v2 capture line");
	if (g)
		yajl_gen_free(g);
	yajl_tree_free(root);
	return rc;
}

int v2record_write(struct v2record *r, const char *body, size_t len, struct bridge_error *err)
{
	char *line;
	size_t n;
	int rc;

	if (v2record_line(r, body, len, &line, &n, err) < 0)
		return -1;
	rc = jsonl_write(r->out, line, n);
	free(line);
	if (rc < 0)
		return bridge_error_set(err, "cannot append to the v2 capture file");
	return 0;
}
