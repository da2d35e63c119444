/*
 * record: NDJSON capture of inbound v1 posts with redaction and rotation.
 * The contract is in include/bridge/record.h.  The raw body never reaches
 * the file: it is parsed and re-emitted field by field, so redaction cannot
 * miss a value hidden in form encoding, escapes or odd spacing.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <yajl/yajl_gen.h>

#include "bridge/buf.h"
#include "bridge/jsonl.h"
#include "bridge/utf8.h"
#include "bridge/record.h"
#include "bridge/translate.h"


/* The personal data of the representative v1 shape (webhook 1.0 form
 * answers and the address pseudonym).  "email*" and not "*email*": an
 * opt-in such as optin_email carries 1/0/"" and replay needs it intact. */
const char *const record_default_redact[] = {
	"ip",       "email*",    "lastname", "firstname", "phone*", "mobile*",
	"address*", "birthdate", "zipcode",  "city",      NULL,
};

const char *const record_default_headers[] = {
	"Content-Type",
	"User-Agent",
	"X-Forwarded-For",
	NULL,
};

struct recorder {
	struct jsonl *out; /* the capture file: locking, rotation, reopening */
	char **redact;     /* defaults (when asked) then extras */
	size_t n_redact, cap_redact;
	char **headers;
	size_t n_headers, cap_headers;
	size_t max_line;
	struct v1_limits limits;
};

void record_options_default(struct record_options *o)
{
	memset(o, 0, sizeof(*o));
	o->rotate_bytes = 100u * 1024 * 1024;
	o->keep = 5;
	o->redact_defaults = 1;
	o->max_line = 4u * 1024 * 1024;
	v1_limits_default(&o->limits);
}

int record_pattern_match(const char *pattern, const char *key, size_t key_len)
{
	size_t pl = strlen(pattern);
	int lead = pl > 0 && pattern[0] == '*';
	int trail = pl > (size_t)lead && pattern[pl - 1] == '*';
	const char *core = pattern + lead;
	size_t cl = pl - (size_t)lead - (size_t)trail;

	if (!lead && !trail)
		return cl == key_len && strncasecmp(core, key, cl) == 0;
	if (cl > key_len)
		return 0;
	if (!lead) /* prefix */
		return strncasecmp(core, key, cl) == 0;
	if (!trail) /* suffix */
		return strncasecmp(core, key + key_len - cl, cl) == 0;
	for (size_t i = 0; i + cl <= key_len; i++) /* substring */
		if (strncasecmp(core, key + i, cl) == 0)
			return 1;
	return 0;
}

static int redacted(const struct recorder *r, const char *key, size_t key_len)
{
	for (size_t i = 0; i < r->n_redact; i++)
		if (record_pattern_match(r->redact[i], key, key_len))
			return 1;
	return 0;
}

/* ---- open / close -------------------------------------------------------- */

static void free_list(char **l, size_t n)
{
	for (size_t i = 0; l && i < n; i++)
		free(l[i]);
	free(l);
}

static int list_add(char ***l, size_t *n, size_t *cap, const char *s)
{
	char **t = grow_array(*l, cap, *n + 1, sizeof(**l), 8);

	if (!t)
		return -1;
	*l = t;
	if (!(t[*n] = strdup(s)))
		return -1;
	(*n)++;
	return 0;
}

int recorder_reopen(struct recorder *r, struct bridge_error *err)
{
	return jsonl_reopen(r->out, err);
}

int record_options_check(const struct record_options *opt, struct bridge_error *err)
{
	if (!opt->path || !*opt->path)
		return bridge_error_set(err, "record: a capture file path is required");
	for (size_t i = 0; i < opt->n_redact; i++) {
		const char *p = opt->redact[i];
		size_t pl = p ? strlen(p) : 0;

		if (pl == 0 || (pl == 1 && p[0] == '*') ||
		    (pl == 2 && p[0] == '*' && p[1] == '*') ||
		    (pl > 2 && memchr(p + 1, '*', pl - 2)))
			return bridge_error_set(err,
						"record: redact pattern '%s' must be a key, "
						"'prefix*', '*suffix' or '*part*'",
						p ? p : "");
	}
	return 0;
}

struct recorder *recorder_open(const struct record_options *opt, struct bridge_error *err)
{
	struct recorder *r;
	int fail = 0;

	if (record_options_check(opt, err) < 0)
		return NULL;
	r = calloc(1, sizeof(*r));
	if (!r) {
		bridge_error_set(err, "out of memory");
		return NULL;
	}
	r->max_line = opt->max_line ? opt->max_line : 4u * 1024 * 1024;
	r->limits = opt->limits;
	if (!r->limits.max_depth)
		v1_limits_default(&r->limits);
	for (size_t i = 0; opt->redact_defaults && record_default_redact[i]; i++)
		fail |= list_add(&r->redact, &r->n_redact, &r->cap_redact,
				 record_default_redact[i]);
	for (size_t i = 0; i < opt->n_redact; i++)
		fail |= list_add(&r->redact, &r->n_redact, &r->cap_redact, opt->redact[i]);
	if (opt->headers) {
		for (size_t i = 0; i < opt->n_headers; i++)
			fail |= list_add(&r->headers, &r->n_headers, &r->cap_headers,
					 opt->headers[i]);
	} else {
		for (size_t i = 0; record_default_headers[i]; i++)
			fail |= list_add(&r->headers, &r->n_headers, &r->cap_headers,
					 record_default_headers[i]);
	}
	if (fail) {
		bridge_error_set(err, "out of memory");
		recorder_close(r);
		return NULL;
	}
	r->out = jsonl_open(opt->path, opt->rotate_bytes, opt->keep, err);
	if (!r->out) {
		recorder_close(r);
		return NULL;
	}
	return r;
}

void recorder_close(struct recorder *r)
{
	if (!r)
		return;
	jsonl_close(r->out);
	free_list(r->redact, r->n_redact);
	free_list(r->headers, r->n_headers);
	free(r);
}

uint64_t recorder_lines(struct recorder *r)
{
	return jsonl_lines(r->out);
}

/* ---- building one line --------------------------------------------------- */

/* yajl_gen with a sticky first error, so a long run of calls is checked once. */
struct gen {
	yajl_gen g;
	yajl_gen_status st;
};

static void g_check(struct gen *w, yajl_gen_status st)
{
	if (st != yajl_gen_status_ok && w->st == yajl_gen_status_ok)
		w->st = st;
}

static void g_str(struct gen *w, const char *s, size_t n)
{
	if (w->st == yajl_gen_status_ok)
		g_check(w, yajl_gen_string(w->g, (const unsigned char *)s, n));
}

static void g_key(struct gen *w, const char *k)
{
	g_str(w, k, strlen(k));
}

static void g_scalar(struct gen *w, const struct v1_value *v)
{
	if (w->st != yajl_gen_status_ok)
		return;
	switch (v->type) {
	case V1_STRING: g_str(w, v->text, v->len); break;
	case V1_NUMBER: g_check(w, yajl_gen_number(w->g, v->text, v->len)); break;
	case V1_BOOL: g_check(w, yajl_gen_bool(w->g, v->text[0] == 't')); break;
	case V1_NULL: g_check(w, yajl_gen_null(w->g)); break;
	case V1_ARRAY:
		g_check(w, yajl_gen_array_open(w->g));
		for (size_t i = 0; i < v->n_items; i++)
			g_scalar(w, &v->items[i]);
		g_check(w, yajl_gen_array_close(w->g));
		break;
	}
}

/* Header values and reasons are not validated upstream: emit them as UTF-8,
 * each invalid byte replaced by U+FFFD. */
static void g_text(struct gen *w, const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	char *clean;
	size_t i = 0, o = 0;

	while (i < n) {
		size_t k = utf8_decode(u + i, n - i, NULL);

		if (!k)
			break;
		i += k;
	}
	if (i == n) {
		g_str(w, s, n);
		return;
	}
	clean = malloc(n * 3 + 1);
	if (!clean) {
		g_check(w, yajl_gen_in_error_state);
		return;
	}
	for (i = 0; i < n;) {
		size_t k = utf8_decode(u + i, n - i, NULL);

		if (k) {
			memcpy(clean + o, s + i, k);
			o += k;
			i += k;
		} else {
			memcpy(clean + o, "\xEF\xBF\xBD", 3);
			o += 3;
			i++;
		}
	}
	g_str(w, clean, o);
	free(clean);
}


static void format_time(const struct timeval *tv, char out[64])
{
	struct tm tm;
	time_t sec = tv->tv_sec;

	gmtime_r(&sec, &tm);
	snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv->tv_usec / 1000));
}

static void gen_headers(struct gen *w, const struct recorder *r, const struct record_header *h,
			size_t n)
{
	g_check(w, yajl_gen_map_open(w->g));
	for (size_t k = 0; k < r->n_headers; k++) {
		char *joined = NULL;
		size_t len = 0;

		for (size_t i = 0; i < n; i++) {
			size_t vl;
			char *t;

			if (!h[i].name || !h[i].value || strcasecmp(h[i].name, r->headers[k]) != 0)
				continue;
			vl = strlen(h[i].value);
			t = realloc(joined, len + vl + 3);
			if (!t) {
				g_check(w, yajl_gen_in_error_state);
				break;
			}
			joined = t;
			if (len) {
				memcpy(joined + len, ", ", 2);
				len += 2;
			}
			memcpy(joined + len, h[i].value, vl);
			len += vl;
		}
		if (joined) {
			g_key(w, r->headers[k]);
			g_text(w, joined, len);
			free(joined);
		}
	}
	g_check(w, yajl_gen_map_close(w->g));
}

/* The start of every line: time, content_type, headers. */
static void gen_head(struct gen *w, const struct recorder *r, const char *content_type,
		     const struct timeval *arrival, const struct record_header *h, size_t n)
{
	char ts[64];

	format_time(arrival, ts);
	g_check(w, yajl_gen_map_open(w->g));
	g_key(w, "time");
	g_key(w, ts);
	g_key(w, "content_type");
	if (content_type)
		g_text(w, content_type, strlen(content_type));
	else
		g_check(w, yajl_gen_null(w->g));
	g_key(w, "headers");
	gen_headers(w, r, h, n);
}

static const char *gen_status_text(yajl_gen_status st)
{
	switch (st) {
	case yajl_gen_invalid_string: return "invalid UTF-8";
	case yajl_max_depth_exceeded: return "too deep";
	case yajl_gen_invalid_number: return "invalid number";
	default: return "generator error";
	}
}

/* Build the whole line (with its newline) into a malloc'd buffer. */
static int build_line(const struct recorder *r, const char *content_type,
		      const struct timeval *arrival, const struct record_header *h, size_t n,
		      const char *body, size_t len, char **ret, size_t *ret_len,
		      struct bridge_error *err)
{
	enum v1_encoding kind = v1_encoding_of(content_type);
	struct v1_doc *doc = NULL;
	struct bridge_error perr;
	const unsigned char *out;
	size_t out_len;
	char reason[600];
	int attempt;

	bridge_error_clear(&perr);
	reason[0] = '\0';
	if (translate_parse(kind, body, len, &r->limits, &doc, &perr) < 0)
		snprintf(reason, sizeof(reason), "%s", perr.message);

	/* attempt 0: the body; attempt 1: the invalid form, when the body
	 * could not be emitted or the line would be too long */
	for (attempt = reason[0] ? 1 : 0; attempt < 2; attempt++) {
		struct gen w = { .g = yajl_gen_alloc(NULL), .st = yajl_gen_status_ok };

		if (!w.g) {
			v1_doc_free(doc);
			return bridge_error_set(err, "out of memory");
		}
		yajl_gen_config(w.g, yajl_gen_validate_utf8, 1);
		gen_head(&w, r, content_type, arrival, h, n);
		if (attempt == 0) {
			g_key(&w, "body");
			g_check(&w, yajl_gen_map_open(w.g));
			for (size_t i = 0; i < doc->n_fields; i++) {
				const struct v1_field *f = &doc->fields[i];

				g_str(&w, f->key, f->key_len);
				if (redacted(r, f->key, f->key_len))
					g_key(&w, RECORD_REDACTED);
				else
					g_scalar(&w, &f->value);
			}
			g_check(&w, yajl_gen_map_close(w.g));
		} else {
			g_key(&w, "invalid");
			g_check(&w, yajl_gen_bool(w.g, 1));
			g_key(&w, "reason");
			g_text(&w, reason, strlen(reason));
			g_key(&w, "body_bytes");
			g_check(&w, yajl_gen_integer(w.g, (long long)len));
		}
		g_check(&w, yajl_gen_map_close(w.g));
		if (w.st == yajl_gen_status_ok)
			g_check(&w, yajl_gen_get_buf(w.g, &out, &out_len));
		if (w.st == yajl_gen_status_ok && out_len + 1 <= r->max_line) {
			char *line = malloc(out_len + 1);

			if (line) {
				memcpy(line, out, out_len);
				line[out_len] = '\n';
			}
			yajl_gen_free(w.g);
			v1_doc_free(doc);
			if (!line)
				return bridge_error_set(err, "out of memory");
			*ret = line;
			*ret_len = out_len + 1;
			return 0;
		}
		if (w.st != yajl_gen_status_ok)
			snprintf(reason, sizeof(reason), "cannot re-emit the body: %s",
				 gen_status_text(w.st));
		else
			snprintf(reason, sizeof(reason),
				 "recorded line would be %zu bytes, over the limit of %zu",
				 out_len + 1, r->max_line);
		yajl_gen_free(w.g);
	}
	v1_doc_free(doc);
	return bridge_error_set(err, "record: cannot build the capture line: %s", reason);
}

/* ---- writing ------------------------------------------------------------- */

int recorder_write(struct recorder *r, const char *content_type, const struct timeval *arrival,
		   const struct record_header *headers, size_t n_headers, const char *body,
		   size_t len, struct bridge_error *err)
{
	struct timeval now;
	char *line;
	size_t line_len;
	int rc;

	if (!arrival) {
		gettimeofday(&now, NULL);
		arrival = &now;
	}
	if (build_line(r, content_type, arrival, headers, n_headers, body, len, &line, &line_len,
		       err) < 0)
		return -1;
	rc = jsonl_append(r->out, line, line_len, err);
	free(line);
	return rc;
}
