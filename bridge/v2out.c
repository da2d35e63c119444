/*
 * v2out: webhook 2.0 document writer.  Key order follows schema 2.3.0 as the
 * bridge documents it (mappings/README.md, "Output"); strings are validated
 * as UTF-8 and escaped as yajl_gen escapes them.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/json.h"
#include "bridge/v2out.h"

struct target {
	const char *path;
	int slot;
	enum v2_type type;
};

static const struct target targets[] = {
	{ "id", V2_F_ID, V2_T_STRING },
	{ "ip", V2_F_IP, V2_T_STRING },
	{ "url", V2_F_URL, V2_T_STRING },
	{ "startedAt", V2_F_STARTED_AT, V2_T_STRING },
	{ "completedAt", V2_F_COMPLETED_AT, V2_T_STRING },
	{ "state", V2_F_STATE, V2_T_STRING },
	{ "browser.device", V2_F_BROWSER_DEVICE, V2_T_STRING },
	{ "browser.userAgent", V2_F_BROWSER_USER_AGENT, V2_T_STRING },
	{ "campaign.id", V2_F_CAMPAIGN_ID, V2_T_INTEGER },
	{ "campaign.name", V2_F_CAMPAIGN_NAME, V2_T_STRING },
	{ "campaign.type", V2_F_CAMPAIGN_TYPE, V2_T_STRING },
	{ "campaign.channel.uuid", V2_F_CHANNEL_UUID, V2_T_STRING },
	{ "campaign.channel.publishType", V2_F_CHANNEL_PUBLISH_TYPE, V2_T_STRING },
	{ "campaign.channel.dateStart", V2_F_CHANNEL_DATE_START, V2_T_STRING },
	{ "campaign.channel.dateEnd", V2_F_CHANNEL_DATE_END, V2_T_STRING },
	{ "campaign.channel.website.id", V2_F_WEBSITE_ID, V2_T_INTEGER },
	{ "campaign.channel.website.name", V2_F_WEBSITE_NAME, V2_T_STRING },
	{ "campaign.channel.website.domain", V2_F_WEBSITE_DOMAIN, V2_T_STRING },
	{ "campaign.channel.website.country", V2_F_WEBSITE_COUNTRY, V2_T_STRING },
};

#define THEMES_PREFIX "campaign.themes["

int v2_target_lookup(const char *path, int *ret_slot, enum v2_type *ret_type)
{
	size_t i;

	for (i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
		if (strcmp(path, targets[i].path) == 0) {
			*ret_slot = targets[i].slot;
			*ret_type = targets[i].type;
			return 0;
		}
	}
	if (strncmp(path, THEMES_PREFIX, strlen(THEMES_PREFIX)) == 0) {
		const char *p = path + strlen(THEMES_PREFIX);
		int idx = 0, digits = 0;

		/* Plain decimal index, no sign, no leading zero. */
		while (*p >= '0' && *p <= '9' && digits < 3) {
			if (digits == 1 && idx == 0)
				return -1;
			idx = idx * 10 + (*p - '0');
			p++;
			digits++;
		}
		if (digits == 0 || idx >= V2_MAX_THEMES)
			return -1;
		if (strcmp(p, "].code") == 0) {
			*ret_slot = V2_F_THEMES + 2 * idx;
		} else if (strcmp(p, "].description") == 0) {
			*ret_slot = V2_F_THEMES + 2 * idx + 1;
		} else {
			return -1;
		}
		*ret_type = V2_T_STRING;
		return 0;
	}
	return -1;
}

const char *v2_target_list(void)
{
	return "id, ip, url, startedAt, completedAt, state, browser.device, browser.userAgent, "
	       "campaign.id, campaign.name, campaign.type, campaign.themes[N].code, "
	       "campaign.themes[N].description (N 0-15), campaign.channel.uuid, "
	       "campaign.channel.publishType, campaign.channel.dateStart, "
	       "campaign.channel.dateEnd, campaign.channel.website.id, "
	       "campaign.channel.website.name, campaign.channel.website.domain, "
	       "campaign.channel.website.country";
}

/* ---- writer ------------------------------------------------------------ */

/*
 * The output is written straight into one growing buffer: the document's
 * shape is fixed here, so a general generator buys nothing but cost (the
 * yajl_gen version spent a quarter of the mapping time in its callbacks).
 * Escaping is byte-identical to yajl_gen's (\" \\ \b \f \n \r \t, other
 * control characters as \u00XX with upper-case hex, '/' and non-ASCII as
 * they are), and every string is checked to be valid UTF-8, as
 * yajl_gen_validate_utf8 did.
 */
#define W_MAX_DEPTH 16

enum w_status { W_OK, W_INVALID_UTF8, W_TOO_DEEP };

#define W_ESC (JSON_ESC_YAJL | JSON_ESC_UPPER | JSON_ESC_STRICT)

#define PARTS_MAX ((size_t)64 << 20) /* an entry's parts: as long as a document */

struct writer {
	enum w_status st;  /* first failure, sticky */
	const char *where; /* key being written when it failed */
	struct buf out;    /* the output; failed: over max or out of memory */
	int depth;
	bool need_comma[W_MAX_DEPTH + 1];
	bool after_key;
};

static void w_raw(struct writer *w, const char *s, size_t len)
{
	buf_add(&w->out, s, len);
}

static void w_fail(struct writer *w, enum w_status st, const char *where)
{
	if (w->st == W_OK) {
		w->st = st;
		w->where = where;
	}
}

static void w_string(struct writer *w, const char *s, size_t len, const char *where)
{
	if (!buf_json_quoted(&w->out, s, len, W_ESC) && !w->out.failed)
		w_fail(w, W_INVALID_UTF8, where);
}

/* The comma before a member or an element, if it is not the first. */
static void w_sep(struct writer *w)
{
	if (w->after_key) {
		w->after_key = false;
		return;
	}
	if (w->need_comma[w->depth])
		w_raw(w, ",", 1);
	w->need_comma[w->depth] = true;
}

/*
 * The hot path: room for a whole piece reserved with one check, then
 * written with no check per byte.  NULL when the piece may not fit under the
 * ceiling (or the buffer failed, or a key waits for its value): the exact
 * path, one append at a time, then writes it and fails as the ceiling says.
 */
static char *w_room(struct writer *w, size_t n)
{
	struct buf *b = &w->out;

	if (b->failed || w->after_key || n > b->max - b->len)
		return NULL;
	if (n >= b->cap - b->len && !buf_reserve(b, n))
		return NULL;
	return b->s + b->len;
}

/* The content now ends at p (inside the reserved room). */
static void w_end(struct writer *w, char *p)
{
	w->out.len = (size_t)(p - w->out.s);
	*p = '\0';
}

/* w_sep at p, in reserved room, when no key waits (w_room made sure). */
static char *w_comma(struct writer *w, char *p)
{
	if (w->need_comma[w->depth])
		*p++ = ',';
	w->need_comma[w->depth] = true;
	return p;
}

/* n bytes from s at p (in reserved room); the end.  Keys and numbers are
 * short: two overlapping word moves instead of a call. */
static inline char *w_copy(char *p, const char *s, size_t n)
{
	uint64_t a, b;
	uint32_t c, d;

	if (n > 16) {
		memcpy(p, s, n);
	} else if (n >= 8) {
		memcpy(&a, s, 8);
		memcpy(&b, s + n - 8, 8);
		memcpy(p, &a, 8);
		memcpy(p + n - 8, &b, 8);
	} else if (n >= 4) {
		memcpy(&c, s, 4);
		memcpy(&d, s + n - 4, 4);
		memcpy(p, &c, 4);
		memcpy(p + n - 4, &d, 4);
	} else {
		for (size_t i = 0; i < n; i++)
			p[i] = s[i];
	}
	return p + n;
}

/* A key as written, "k": with its quotes and colon, and its length, from the
 * literal k: keys are this file's own ASCII literals, nothing to escape. */
#define QK(k) "\"" k "\":", sizeof(k) + 2

static int w_key(struct writer *w, const char *qk, size_t qklen)
{
	char *p = w_room(w, qklen + 1);

	if (p) {
		p = w_comma(w, p);
		w_end(w, w_copy(p, qk, qklen));
	} else {
		w_sep(w);
		w_raw(w, qk, qklen);
	}
	w->after_key = true;
	return w->st == W_OK ? 0 : -1;
}

static int w_val(struct writer *w, const struct v2_val *v, const char *where)
{
	switch (v->kind) {
	case V2_STRING:
		w_sep(w);
		w_string(w, v->s, v->len, where);
		break;
	case V2_NUMBER:
		w_sep(w);
		w_raw(w, v->s, v->len); /* exact text, never a double */
		break;
	case V2_BOOL:
		w_sep(w);
		if (v->s && v->s[0] == 't')
			w_raw(w, "true", 4);
		else
			w_raw(w, "false", 5);
		break;
	case V2_ABSENT: break;
	}
	return w->st == W_OK ? 0 : -1;
}

/* Open { or [ (open), as the member k (qk, qklen: QK(k)) unless k is NULL. */
static int w_push(struct writer *w, const char *k, const char *qk, size_t qklen, const char *open)
{
	char *p;

	if (w->st == W_OK && w->depth < W_MAX_DEPTH && (p = w_room(w, qklen + 2))) {
		p = w_comma(w, p);
		if (k)
			p = w_copy(p, qk, qklen);
		*p++ = *open;
		w_end(w, p);
		w->need_comma[++w->depth] = false;
		return 0;
	}
	if (k && w_key(w, qk, qklen) < 0)
		return -1;
	w_sep(w);
	if (w->depth >= W_MAX_DEPTH) {
		w_fail(w, W_TOO_DEEP, k ? k : open);
		return -1;
	}
	w_raw(w, open, 1);
	w->need_comma[++w->depth] = false;
	return 0;
}

static int w_pop(struct writer *w, const char *close)
{
	if (w->depth > 0)
		w->depth--;
	w_raw(w, close, 1);
	return w->st == W_OK ? 0 : -1;
}

/* A member: a comma, "k": and the value, escaped into room reserved once
 * (6 bytes a byte at most, the quotes, "false"). */
static int w_member_q(struct writer *w, const char *k, const char *qk, size_t qklen,
		      const struct v2_val *v)
{
	char *p;

	if (v->kind == V2_ABSENT)
		return 0;
	if (w->st != W_OK)
		return -1; /* the document is an error already */
	if (v->len > SIZE_MAX / 8 || !(p = w_room(w, 1 + qklen + JSON_QUOTED_MAX(v->len) + 5))) {
		if (w_key(w, qk, qklen) < 0)
			return -1;
		return w_val(w, v, k);
	}
	p = w_comma(w, p);
	p = w_copy(p, qk, qklen);
	switch (v->kind) {
	case V2_STRING:
		if (!(p = json_put_quoted(p, v->s, v->len, W_ESC))) {
			w->out.s[w->out.len] = '\0';
			w_fail(w, W_INVALID_UTF8, k);
			return -1;
		}
		break;
	case V2_NUMBER: p = w_copy(p, v->s, v->len); break; /* exact text, never a double */
	case V2_BOOL:
		if (v->s && v->s[0] == 't')
			p = (char *)memcpy(p, "true", 4) + 4;
		else
			p = (char *)memcpy(p, "false", 5) + 5;
		break;
	case V2_ABSENT: break;
	}
	w_end(w, p);
	return 0;
}

#define w_member(w, k, v) w_member_q(w, k, QK(k), v)

static int w_open(struct writer *w, const char *k, const char *qk, size_t qklen)
{
	return w_push(w, k, qk, qklen, "{");
}

static int w_close(struct writer *w)
{
	return w_pop(w, "}");
}

static int w_aopen(struct writer *w, const char *k, const char *qk, size_t qklen)
{
	return w_push(w, k, qk, qklen, "[");
}

/* Opening a member k (a literal), or an anonymous element. */
#define W_OPEN(w, k)  w_open(w, k, QK(k))
#define W_OPEN0(w)    w_open(w, NULL, NULL, 0)
#define W_AOPEN(w, k) w_aopen(w, k, QK(k))

static int w_aclose(struct writer *w)
{
	return w_pop(w, "]");
}

static int any_present(const struct v2_val *v, int from, int to)
{
	int i;

	for (i = from; i < to; i++)
		if (v[i].kind != V2_ABSENT)
			return 1;
	return 0;
}

static void w_themes(struct writer *w, const struct v2_val *s)
{
	int i;

	W_AOPEN(w, "themes");
	for (i = 0; i < V2_MAX_THEMES; i++) {
		const struct v2_val *code = &s[V2_F_THEMES + 2 * i];
		const struct v2_val *desc = &s[V2_F_THEMES + 2 * i + 1];

		if (code->kind == V2_ABSENT && desc->kind == V2_ABSENT)
			continue;
		W_OPEN0(w);
		w_member(w, "code", code);
		w_member(w, "description", desc);
		w_close(w);
	}
	w_aclose(w);
}

static void w_campaign(struct writer *w, const struct v2_val *s)
{
	/* themes is always written, so campaign is never empty. */
	W_OPEN(w, "campaign");
	w_member(w, "id", &s[V2_F_CAMPAIGN_ID]);
	w_member(w, "name", &s[V2_F_CAMPAIGN_NAME]);
	w_member(w, "type", &s[V2_F_CAMPAIGN_TYPE]);
	w_themes(w, s);
	if (any_present(s, V2_F_CHANNEL_UUID, V2_F_THEMES)) {
		W_OPEN(w, "channel");
		w_member(w, "uuid", &s[V2_F_CHANNEL_UUID]);
		w_member(w, "publishType", &s[V2_F_CHANNEL_PUBLISH_TYPE]);
		w_member(w, "dateStart", &s[V2_F_CHANNEL_DATE_START]);
		w_member(w, "dateEnd", &s[V2_F_CHANNEL_DATE_END]);
		if (any_present(s, V2_F_WEBSITE_ID, V2_F_THEMES)) {
			W_OPEN(w, "website");
			w_member(w, "id", &s[V2_F_WEBSITE_ID]);
			w_member(w, "name", &s[V2_F_WEBSITE_NAME]);
			w_member(w, "domain", &s[V2_F_WEBSITE_DOMAIN]);
			w_member(w, "country", &s[V2_F_WEBSITE_COUNTRY]);
			w_close(w);
		}
		w_close(w);
	}
	w_close(w);
}

/* A response that is a string value alone, {"value":"..."}, written into
 * room reserved once; false (nothing written) when it is more than that or
 * the room is not there: then member by member, which fails the same way. */
static bool w_value_only(struct writer *w, const struct v2_response *r)
{
	static const char open[] = "{\"value\":";
	char *p;

	if (r->value.kind != V2_STRING || r->label.kind != V2_ABSENT ||
	    r->file_path.kind != V2_ABSENT || r->file_name.kind != V2_ABSENT ||
	    r->file_type.kind != V2_ABSENT || r->score.kind != V2_ABSENT ||
	    r->is_correct.kind != V2_ABSENT || w->st != W_OK || w->depth >= W_MAX_DEPTH ||
	    r->value.len > SIZE_MAX / 8 ||
	    !(p = w_room(w, 1 + sizeof(open) + JSON_QUOTED_MAX(r->value.len) + 1)))
		return false;
	p = w_comma(w, p);
	p = w_copy(p, open, sizeof(open) - 1);
	if (!(p = json_put_quoted(p, r->value.s, r->value.len, W_ESC))) {
		w->out.s[w->out.len] = '\0';
		w_fail(w, W_INVALID_UTF8, "value");
		return true;
	}
	*p++ = '}';
	w_end(w, p);
	return true;
}

static void w_responses(struct writer *w, const struct v2_entry *e)
{
	size_t i;

	W_AOPEN(w, "responses");
	for (i = 0; i < e->n_responses; i++) {
		const struct v2_response *r = &e->responses[i];

		if (w_value_only(w, r))
			continue;
		W_OPEN0(w);
		w_member(w, "label", &r->label);
		w_member(w, "value", &r->value);
		if (r->file_path.kind != V2_ABSENT || r->file_name.kind != V2_ABSENT ||
		    r->file_type.kind != V2_ABSENT) {
			W_OPEN(w, "file");
			w_member(w, "path", &r->file_path);
			w_member(w, "name", &r->file_name);
			w_member(w, "type", &r->file_type);
			w_close(w);
		}
		w_member(w, "score", &r->score);
		w_member(w, "isCorrect", &r->is_correct);
		w_close(w);
	}
	w_aclose(w);
}

static void w_categories(struct writer *w, const struct v2_entry *e)
{
	size_t i;

	W_AOPEN(w, "categories");
	for (i = 0; i < e->n_categories; i++) {
		const struct v2_category *c = &e->categories[i];

		W_OPEN0(w);
		w_member(w, "id", &c->id);
		w_member(w, "label", &c->label);
		w_member(w, "technicalName", &c->technical_name);
		if (c->parent.id.kind != V2_ABSENT || c->parent.label.kind != V2_ABSENT ||
		    c->parent.technical_name.kind != V2_ABSENT) {
			W_OPEN(w, "parent");
			w_member(w, "id", &c->parent.id);
			w_member(w, "label", &c->parent.label);
			w_member(w, "technicalName", &c->parent.technical_name);
			w_close(w);
		}
		w_close(w);
	}
	w_aclose(w);
}

/* The members of an entry before the first one a payload fills (see
 * struct v2_entry's head). */
static void w_entry_head(struct writer *w, enum v2_section sec, const struct v2_entry *e)
{
	w_member(w, "id", &e->id);
	w_member(w, "label", &e->label);
	if (sec == V2_OPTINS) {
		w_member(w, "description", &e->description);
		return;
	}
	w_member(w, "type", &e->type);
	if (sec == V2_FORM)
		w_member(w, "variable", &e->variable);
}

/* An opt-in's members after its response (see struct v2_entry's tail). */
static void w_entry_tail(struct writer *w, const struct v2_entry *e)
{
	w_member(w, "variable", &e->variable);
	w_categories(w, e);
}

/*
 * Text rendered by v2_entry_parts copied whole: the head opens the entry's
 * object ("{" and its members), a tail holds members of the open one.
 * false (nothing written) when there is none or the fast path cannot take
 * it (see w_room): the caller then writes the same from the values.
 */
static bool w_parts(struct writer *w, const char *s, size_t len, bool opens)
{
	char *p;

	if (!s || !len || w->st != W_OK || (opens && w->depth >= W_MAX_DEPTH) ||
	    !(p = w_room(w, len + 1)))
		return false;
	p = w_comma(w, p);
	w_end(w, w_copy(p, s, len));
	if (opens)
		w->need_comma[++w->depth] = len > 1;
	return true;
}

static void w_section(struct writer *w, const struct v2_doc *d, enum v2_section sec)
{
	static const struct {
		const char *k, *qk;
		size_t qklen;
	} names[V2_N_SECTIONS] = { { "form", QK("form") },
				   { "optins", QK("optins") },
				   { "questionnaire", QK("questionnaire") } };
	size_t i;

	w_aopen(w, names[sec].k, names[sec].qk, names[sec].qklen);
	for (i = 0; i < d->n_entries[sec]; i++) {
		const struct v2_entry *e = &d->entries[sec][i];

		if (!w_parts(w, e->head, e->head_len, true)) {
			W_OPEN0(w);
			w_entry_head(w, sec, e);
		}
		switch (sec) {
		case V2_FORM: w_responses(w, e); break;
		case V2_OPTINS:
			w_member(w, "response", &e->response);
			if (!w_parts(w, e->tail, e->tail_len, false))
				w_entry_tail(w, e);
			break;
		case V2_QUESTIONNAIRE:
			w_member(w, "score", &e->score);
			w_member(w, "maxScore", &e->max_score);
			w_member(w, "variable", &e->variable);
			w_responses(w, e);
			break;
		case V2_N_SECTIONS: break;
		}
		w_close(w);
	}
	w_aclose(w);
}

/* What a writer wrote, in a new malloc'd string, or NULL when it failed. */
static char *w_take(struct writer *w, size_t *ret_len)
{
	char *s = w->st == W_OK && !w->out.failed ? buf_take(&w->out, ret_len) : NULL;

	buf_free(&w->out);
	return s;
}

int v2_entry_parts(enum v2_section sec, const struct v2_entry *e, char **head, size_t *head_len,
		   char **tail, size_t *tail_len)
{
	struct writer w = { 0 };

	*tail = NULL;
	*tail_len = 0;
	buf_init(&w.out, PARTS_MAX);
	W_OPEN0(&w);
	w_entry_head(&w, sec, e);
	*head = w_take(&w, head_len);
	if (!*head)
		return -1;
	if (sec != V2_OPTINS)
		return 0;
	memset(&w, 0, sizeof(w));
	buf_init(&w.out, PARTS_MAX);
	w_entry_tail(&w, e);
	if ((*tail = w_take(&w, tail_len)))
		return 0;
	free(*head);
	*head = NULL;
	*head_len = 0;
	return -1;
}

int v2_doc_write(const struct v2_doc *d, size_t max_len, char **ret, size_t *ret_len,
		 struct bridge_error *err)
{
	struct writer w = { 0 };
	const struct v2_val *s = d->slot;
	int rc = -1;

	*ret = NULL;
	*ret_len = 0;
	buf_init(&w.out, max_len);
	if (!buf_reserve(&w.out, max_len < 4095 ? max_len : 4095)) {
		bridge_error_set(err, "v2 output: out of memory");
		goto out;
	}

	W_OPEN0(&w);
	w_member(&w, "id", &s[V2_F_ID]);
	w_member(&w, "ip", &s[V2_F_IP]);
	w_member(&w, "url", &s[V2_F_URL]);
	w_member(&w, "startedAt", &s[V2_F_STARTED_AT]);
	w_member(&w, "completedAt", &s[V2_F_COMPLETED_AT]);
	w_member(&w, "state", &s[V2_F_STATE]);
	if (any_present(s, V2_F_BROWSER_DEVICE, V2_F_CAMPAIGN_ID)) {
		W_OPEN(&w, "browser");
		w_member(&w, "device", &s[V2_F_BROWSER_DEVICE]);
		w_member(&w, "userAgent", &s[V2_F_BROWSER_USER_AGENT]);
		w_close(&w);
	}
	w_campaign(&w, s);
	w_section(&w, d, V2_FORM);
	w_section(&w, d, V2_OPTINS);
	w_section(&w, d, V2_QUESTIONNAIRE);
	w_close(&w);

	if (w.st != W_OK) {
		bridge_error_set(err, "v2 output: %s (at \"%s\")",
				 w.st == W_INVALID_UTF8 ? "invalid UTF-8 in a string"
							: "nesting too deep",
				 w.where ? w.where : "?");
		goto out;
	}
	if (w.out.failed) {
		bridge_error_set(err, "v2 output: more than %zu bytes, or out of memory", max_len);
		goto out;
	}
	*ret = buf_take(&w.out, ret_len);
	rc = *ret ? 0 : -1;
out:
	buf_free(&w.out);
	return rc;
}
