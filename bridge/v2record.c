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

/* Write v; hide = 1 turns every scalar below into "[redacted]", hide = 2
 * only response values and file paths/names (inside a redacted entry). */
static int gen_tree(const struct v2record *r, yajl_gen g, yajl_val v, int hide, int depth)
{
	switch (v ? v->type : yajl_t_null) {
	case yajl_t_object: {
		yajl_val var = NULL;

		if (yajl_gen_map_open(g) != yajl_gen_status_ok)
			return -1;
		if (depth == 2)
			for (size_t i = 0; i < v->u.object.len; i++)
				if (strcmp(v->u.object.keys[i], "variable") == 0)
					var = v->u.object.values[i];
		for (size_t i = 0; i < v->u.object.len; i++) {
			const char *k = v->u.object.keys[i];
			int h = hide;

			if (depth == 0 && redacted(r, k))
				h = 1;
			if (depth == 2 && var && YAJL_IS_STRING(var) &&
			    redacted(r, var->u.string) && strcmp(k, "responses") == 0)
				h = 2;
			if (h == 2 && (strcmp(k, "value") == 0 || strcmp(k, "path") == 0 ||
				       strcmp(k, "name") == 0))
				h = 1;
			if (gen_str(g, k) < 0 ||
			    gen_tree(r, g, v->u.object.values[i], h, depth + 1) < 0)
				return -1;
		}
		return yajl_gen_map_close(g) == yajl_gen_status_ok ? 0 : -1;
	}
	case yajl_t_array:
		if (yajl_gen_array_open(g) != yajl_gen_status_ok)
			return -1;
		for (size_t i = 0; i < v->u.array.len; i++)
			if (gen_tree(r, g, v->u.array.values[i], hide, depth + 1) < 0)
				return -1;
		return yajl_gen_array_close(g) == yajl_gen_status_ok ? 0 : -1;
	default:
		if (hide == 1)
			return gen_str(g, RECORD_REDACTED);
		if (YAJL_IS_STRING(v))
			return gen_str(g, v->u.string);
		if (YAJL_IS_NUMBER(v))
			return yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r)) ==
					       yajl_gen_status_ok
				       ? 0
				       : -1;
		if (YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v))
			return yajl_gen_bool(g, YAJL_IS_TRUE(v)) == yajl_gen_status_ok ? 0 : -1;
		return yajl_gen_null(g) == yajl_gen_status_ok ? 0 : -1;
	}
}

int v2record_line(const struct v2record *r, const char *body, size_t len, char **ret,
		  size_t *ret_len, struct bridge_error *err)
{
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
		    gen_tree(r, g, root, 0, 0) == 0 &&
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
