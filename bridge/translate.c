#include <stdio.h>
#include <string.h>

#include "bridge/convert.h"
#include "bridge/translate.h"

void translate_limits(const struct bridge_config *c, struct v1_limits *ret)
{
	v1_limits_default(ret);
	if (!c)
		return;
	ret->max_depth = c->max_json_depth;
	ret->max_keys = c->max_keys;
	ret->max_string = c->max_string;
}

int translate_parse(enum v1_encoding kind, const char *body, size_t len,
		    const struct v1_limits *lim, struct v1_doc **ret, struct bridge_error *err)
{
	bridge_error_clear(err);
	*ret = NULL;
	switch (kind) {
	case V1_ENC_JSON: return v1_parse_json(body ? body : "", len, lim, ret, err);
	case V1_ENC_FORM: return v1_parse_form(body ? body : "", len, lim, ret, err);
	case V1_ENC_OTHER: break;
	}
	return bridge_error_set(err, "unsupported content type");
}

const char *translate_v1_id(const struct v1_doc *doc, const char *key, char *buf, size_t cap)
{
	const struct v1_field *f = v1_doc_get(doc, key);
	struct bridge_error err;

	if (!f || (f->value.type != V1_NUMBER && f->value.type != V1_STRING))
		return NULL;
	if (convert_integer(f->value.text, f->value.len, buf, cap, &err) < 0)
		return NULL;
	return buf;
}

static int id_in(char *const *ids, size_t n, const char *id)
{
	if (!id)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (strcmp(ids[i], id) == 0)
			return 1;
	return 0;
}

const struct bridge_route *translate_route_for(const struct bridge_config *c,
					       const char *website_id, const char *campaign_id)
{
	const struct bridge_route *best = NULL;
	int best_rank = 0;

	for (size_t i = 0; i < c->n_routes; i++) {
		const struct bridge_route *r = &c->routes[i];
		int rank;

		/* a route matches only if every list it has matches */
		if (r->n_campaign_ids && !id_in(r->campaign_ids, r->n_campaign_ids, campaign_id))
			continue;
		if (r->n_website_ids && !id_in(r->website_ids, r->n_website_ids, website_id))
			continue;
		rank = r->n_campaign_ids ? 3 : r->n_website_ids ? 2 : 1;
		if (rank > best_rank) {
			best = r;
			best_rank = rank;
		}
	}
	return best;
}

const struct bridge_route *translate_route(const struct bridge_config *c, const struct v1_doc *doc,
					   struct translate_ids *ids)
{
	ids->website = translate_v1_id(doc, c->website_key, ids->website_buf,
				       sizeof(ids->website_buf));
	ids->campaign = translate_v1_id(doc, c->campaign_key, ids->campaign_buf,
					sizeof(ids->campaign_buf));
	return translate_route_for(c, ids->website, ids->campaign);
}

void translate_no_route(const struct translate_ids *ids, char *buf, size_t cap)
{
	snprintf(buf, cap, "no route matches website_id %s and campaign_id %s",
		 ids->website ? ids->website : "(absent)",
		 ids->campaign ? ids->campaign : "(absent)");
}

int translate_map(const struct mapping *m, const struct bridge_route *route,
		  const struct v1_doc *doc, unsigned flags, struct mapping_result *ret,
		  char *delivery_id, char *sig, struct bridge_error *err)
{
	memset(ret, 0, sizeof(*ret));
	if (mapping_apply(m, doc, flags, ret, err) < 0)
		return -1;
	if (route && delivery_id)
		delivery_digests(route, ret->body, ret->len, delivery_id, sig);
	return 0;
}
