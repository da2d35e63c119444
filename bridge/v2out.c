/*
 * v2out: webhook 2.0 document writer.  Key order follows schema 2.3.0 as the
 * bridge documents it (mappings/README.md, "Output"); every yajl_gen call is
 * checked, and strings are validated as UTF-8 by the generator.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_gen.h>

#include "bridge/v2out.h"

struct target {
	const char *path;
	int slot;
	enum v2_type type;
};

static const struct target targets[] = {
	{"id", V2_F_ID, V2_T_STRING},
	{"ip", V2_F_IP, V2_T_STRING},
	{"url", V2_F_URL, V2_T_STRING},
	{"startedAt", V2_F_STARTED_AT, V2_T_STRING},
	{"completedAt", V2_F_COMPLETED_AT, V2_T_STRING},
	{"state", V2_F_STATE, V2_T_STRING},
	{"browser.device", V2_F_BROWSER_DEVICE, V2_T_STRING},
	{"browser.userAgent", V2_F_BROWSER_USER_AGENT, V2_T_STRING},
	{"campaign.id", V2_F_CAMPAIGN_ID, V2_T_INTEGER},
	{"campaign.name", V2_F_CAMPAIGN_NAME, V2_T_STRING},
	{"campaign.type", V2_F_CAMPAIGN_TYPE, V2_T_STRING},
	{"campaign.channel.uuid", V2_F_CHANNEL_UUID, V2_T_STRING},
	{"campaign.channel.publishType", V2_F_CHANNEL_PUBLISH_TYPE, V2_T_STRING},
	{"campaign.channel.dateStart", V2_F_CHANNEL_DATE_START, V2_T_STRING},
	{"campaign.channel.dateEnd", V2_F_CHANNEL_DATE_END, V2_T_STRING},
	{"campaign.channel.website.id", V2_F_WEBSITE_ID, V2_T_INTEGER},
	{"campaign.channel.website.name", V2_F_WEBSITE_NAME, V2_T_STRING},
	{"campaign.channel.website.domain", V2_F_WEBSITE_DOMAIN, V2_T_STRING},
	{"campaign.channel.website.country", V2_F_WEBSITE_COUNTRY, V2_T_STRING},
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

struct writer {
	yajl_gen g;
	yajl_gen_status st; /* first failure, sticky */
	const char *where;  /* key being written when it failed */
	char *buf;          /* output, written by the print callback */
	size_t len, cap, max;
	bool overflow;      /* over max or out of memory: the callback cannot fail */
};

/* yajl's own buffer doubles from 2 KiB and would need a copy at the end;
 * printing into ours avoids both. */
static void w_print(void *ctx, const char *str, size_t len)
{
	struct writer *w = ctx;

	if (w->overflow)
		return;
	if (len > w->max - w->len) {
		w->overflow = true;
		return;
	}
	if (w->len + len + 1 > w->cap) {
		size_t cap = w->cap;
		char *nb;

		while (w->len + len + 1 > cap)
			cap *= 2;
		if (cap > w->max + 1)
			cap = w->max + 1;
		nb = realloc(w->buf, cap);
		if (!nb) {
			w->overflow = true;
			return;
		}
		w->buf = nb;
		w->cap = cap;
	}
	memcpy(w->buf + w->len, str, len);
	w->len += len;
}

static int w_check(struct writer *w, yajl_gen_status st, const char *where)
{
	if (st != yajl_gen_status_ok && w->st == yajl_gen_status_ok) {
		w->st = st;
		w->where = where;
	}
	return w->st == yajl_gen_status_ok ? 0 : -1;
}

static int w_key(struct writer *w, const char *k)
{
	return w_check(w, yajl_gen_string(w->g, (const unsigned char *)k, strlen(k)), k);
}

static int w_val(struct writer *w, const struct v2_val *v, const char *where)
{
	switch (v->kind) {
	case V2_STRING:
		return w_check(w, yajl_gen_string(w->g, (const unsigned char *)v->s, v->len), where);
	case V2_NUMBER:
		return w_check(w, yajl_gen_number(w->g, v->s, v->len), where);
	case V2_BOOL:
		return w_check(w, yajl_gen_bool(w->g, v->s && v->s[0] == 't'), where);
	case V2_ABSENT:
		break;
	}
	return 0;
}

/* Write "k": v when v is present. */
static int w_member(struct writer *w, const char *k, const struct v2_val *v)
{
	if (v->kind == V2_ABSENT)
		return 0;
	if (w_key(w, k) < 0)
		return -1;
	return w_val(w, v, k);
}

static int w_open(struct writer *w, const char *k)
{
	if (k && w_key(w, k) < 0)
		return -1;
	return w_check(w, yajl_gen_map_open(w->g), k ? k : "{");
}

static int w_close(struct writer *w)
{
	return w_check(w, yajl_gen_map_close(w->g), "}");
}

static int w_aopen(struct writer *w, const char *k)
{
	if (w_key(w, k) < 0)
		return -1;
	return w_check(w, yajl_gen_array_open(w->g), k);
}

static int w_aclose(struct writer *w)
{
	return w_check(w, yajl_gen_array_close(w->g), "]");
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

	w_aopen(w, "themes");
	for (i = 0; i < V2_MAX_THEMES; i++) {
		const struct v2_val *code = &s[V2_F_THEMES + 2 * i];
		const struct v2_val *desc = &s[V2_F_THEMES + 2 * i + 1];

		if (code->kind == V2_ABSENT && desc->kind == V2_ABSENT)
			continue;
		w_open(w, NULL);
		w_member(w, "code", code);
		w_member(w, "description", desc);
		w_close(w);
	}
	w_aclose(w);
}

static void w_campaign(struct writer *w, const struct v2_val *s)
{
	/* themes is always written, so campaign is never empty. */
	w_open(w, "campaign");
	w_member(w, "id", &s[V2_F_CAMPAIGN_ID]);
	w_member(w, "name", &s[V2_F_CAMPAIGN_NAME]);
	w_member(w, "type", &s[V2_F_CAMPAIGN_TYPE]);
	w_themes(w, s);
	if (any_present(s, V2_F_CHANNEL_UUID, V2_F_THEMES)) {
		w_open(w, "channel");
		w_member(w, "uuid", &s[V2_F_CHANNEL_UUID]);
		w_member(w, "publishType", &s[V2_F_CHANNEL_PUBLISH_TYPE]);
		w_member(w, "dateStart", &s[V2_F_CHANNEL_DATE_START]);
		w_member(w, "dateEnd", &s[V2_F_CHANNEL_DATE_END]);
		if (any_present(s, V2_F_WEBSITE_ID, V2_F_THEMES)) {
			w_open(w, "website");
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

static void w_responses(struct writer *w, const struct v2_entry *e)
{
	size_t i;

	w_aopen(w, "responses");
	for (i = 0; i < e->n_responses; i++) {
		const struct v2_response *r = &e->responses[i];

		w_open(w, NULL);
		w_member(w, "label", &r->label);
		w_member(w, "value", &r->value);
		if (r->file_path.kind != V2_ABSENT || r->file_name.kind != V2_ABSENT ||
		    r->file_type.kind != V2_ABSENT) {
			w_open(w, "file");
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

	w_aopen(w, "categories");
	for (i = 0; i < e->n_categories; i++) {
		const struct v2_category *c = &e->categories[i];

		w_open(w, NULL);
		w_member(w, "id", &c->id);
		w_member(w, "label", &c->label);
		w_member(w, "technicalName", &c->technical_name);
		if (c->parent.id.kind != V2_ABSENT || c->parent.label.kind != V2_ABSENT ||
		    c->parent.technical_name.kind != V2_ABSENT) {
			w_open(w, "parent");
			w_member(w, "id", &c->parent.id);
			w_member(w, "label", &c->parent.label);
			w_member(w, "technicalName", &c->parent.technical_name);
			w_close(w);
		}
		w_close(w);
	}
	w_aclose(w);
}

static void w_section(struct writer *w, const struct v2_doc *d, enum v2_section sec)
{
	static const char *const names[V2_N_SECTIONS] = {"form", "optins", "questionnaire"};
	size_t i;

	w_aopen(w, names[sec]);
	for (i = 0; i < d->n_entries[sec]; i++) {
		const struct v2_entry *e = &d->entries[sec][i];

		w_open(w, NULL);
		w_member(w, "id", &e->id);
		w_member(w, "label", &e->label);
		switch (sec) {
		case V2_FORM:
			w_member(w, "type", &e->type);
			w_member(w, "variable", &e->variable);
			w_responses(w, e);
			break;
		case V2_OPTINS:
			w_member(w, "description", &e->description);
			w_member(w, "response", &e->response);
			w_member(w, "variable", &e->variable);
			w_categories(w, e);
			break;
		case V2_QUESTIONNAIRE:
			w_member(w, "type", &e->type);
			w_member(w, "score", &e->score);
			w_member(w, "maxScore", &e->max_score);
			w_member(w, "variable", &e->variable);
			w_responses(w, e);
			break;
		case V2_N_SECTIONS:
			break;
		}
		w_close(w);
	}
	w_aclose(w);
}

static const char *gen_status_text(yajl_gen_status st)
{
	switch (st) {
	case yajl_gen_invalid_string:
		return "invalid UTF-8 in a string";
	case yajl_max_depth_exceeded:
		return "nesting too deep";
	case yajl_gen_invalid_number:
		return "invalid number";
	case yajl_gen_in_error_state:
		return "generator in error state";
	case yajl_gen_keys_must_be_strings:
	case yajl_gen_generation_complete:
		return "internal structure error";
	default:
		return "generator failure";
	}
}

int v2_doc_write(const struct v2_doc *d, size_t max_len, char **ret, size_t *ret_len,
		 struct bridge_error *err)
{
	struct writer w = {0};
	const struct v2_val *s = d->slot;
	int rc = -1;

	*ret = NULL;
	*ret_len = 0;
	w.max = max_len;
	w.cap = 4096;
	w.buf = malloc(w.cap);
	w.g = yajl_gen_alloc(NULL);
	if (!w.buf || !w.g) {
		bridge_error_set(err, "v2 output: out of memory");
		goto out;
	}
	if (!yajl_gen_config(w.g, yajl_gen_validate_utf8, 1) ||
	    !yajl_gen_config(w.g, yajl_gen_print_callback, w_print, &w)) {
		bridge_error_set(err, "v2 output: cannot configure the JSON generator");
		goto out;
	}

	w_open(&w, NULL);
	w_member(&w, "id", &s[V2_F_ID]);
	w_member(&w, "ip", &s[V2_F_IP]);
	w_member(&w, "url", &s[V2_F_URL]);
	w_member(&w, "startedAt", &s[V2_F_STARTED_AT]);
	w_member(&w, "completedAt", &s[V2_F_COMPLETED_AT]);
	w_member(&w, "state", &s[V2_F_STATE]);
	if (any_present(s, V2_F_BROWSER_DEVICE, V2_F_CAMPAIGN_ID)) {
		w_open(&w, "browser");
		w_member(&w, "device", &s[V2_F_BROWSER_DEVICE]);
		w_member(&w, "userAgent", &s[V2_F_BROWSER_USER_AGENT]);
		w_close(&w);
	}
	w_campaign(&w, s);
	w_section(&w, d, V2_FORM);
	w_section(&w, d, V2_OPTINS);
	w_section(&w, d, V2_QUESTIONNAIRE);
	w_close(&w);

	if (w.st != yajl_gen_status_ok) {
		bridge_error_set(err, "v2 output: %s (at \"%s\")", gen_status_text(w.st),
				 w.where ? w.where : "?");
		goto out;
	}
	if (w.overflow) {
		bridge_error_set(err, "v2 output: more than %zu bytes, or out of memory", max_len);
		goto out;
	}
	w.buf[w.len] = '\0';
	*ret = w.buf;
	*ret_len = w.len;
	w.buf = NULL;
	rc = 0;
out:
	if (w.g)
		yajl_gen_free(w.g);
	free(w.buf);
	return rc;
}
