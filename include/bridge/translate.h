/*
 * translate: the one way from a v1 post to a v2 payload, shared by serve,
 * replay, map, diff and the recorder so that they cannot drift apart.
 *
 * The steps, each written once here:
 *   translate_limits   the parse limits, every one taken from the config
 *   translate_parse    the parser the content type asks for (JSON or form)
 *   translate_route    the route a post goes to (the push-rule choice)
 *   translate_map      the route's rules applied, and the delivery id
 * A caller runs them in order and may act between them (serve checks the
 * route's own authentication before it maps).  Nothing here logs or keeps
 * state; every function is reentrant.
 */
#ifndef BRIDGE_TRANSLATE_H
#define BRIDGE_TRANSLATE_H

#include <stddef.h>
#include "bridge/config.h"
#include "bridge/delivery.h"
#include "bridge/diag.h"
#include "bridge/mapping.h"
#include "bridge/v1.h"

/* The v1 parse limits of c (limits.max_json_depth, max_keys, max_string;
 * the others at their defaults); all defaults when c is NULL. */
void translate_limits(const struct bridge_config *c, struct v1_limits *ret);

/* Parse len bytes of body with the parser kind names (V1_ENC_JSON or
 * V1_ENC_FORM; V1_ENC_OTHER is refused).  v1_parse_json()'s contract: on
 * error -1, *ret NULL, err->message and err->offset say what and where. */
int translate_parse(enum v1_encoding kind, const char *body, size_t len,
		    const struct v1_limits *lim, struct v1_doc **ret, struct bridge_error *err);

/* The ids a post is routed by, as canonical decimal text; NULL when the
 * post lacks the key or it is not an integer. */
struct translate_ids {
	const char *website;  /* NULL or website_buf */
	const char *campaign; /* NULL or campaign_buf */
	char website_buf[32];
	char campaign_buf[32];
};

/* The id a v1 document carries under key (cfg->website_key or
 * campaign_key), as canonical decimal text in buf; NULL when it is absent
 * or not an integer. */
const char *translate_v1_id(const struct v1_doc *doc, const char *key, char *buf, size_t cap);

/* Pick the route for a post: campaign match beats website match beats
 * catch-all; ties go to the first in file order.  Ids are canonical decimal
 * text or NULL when the post lacks them.  NULL when nothing matches. */
const struct bridge_route *translate_route_for(const struct bridge_config *c,
					       const char *website_id, const char *campaign_id);

/* Read doc's ids with c's match keys into *ids and pick its route.  NULL
 * when no route matches: translate_no_route() says so. */
const struct bridge_route *translate_route(const struct bridge_config *c, const struct v1_doc *doc,
					   struct translate_ids *ids);

/* "no route matches website_id W and campaign_id C" ("(absent)" for an id
 * the post lacks) into buf, the one text every entry point gives. */
void translate_no_route(const struct translate_ids *ids, char *buf, size_t cap);

/* mapping_apply() of m to doc with flags (MAPPING_TRACE).  With a route,
 * delivery_id receives the result's delivery id and, when sig is not NULL,
 * sig its signature, as delivery_digests() gives them (sig is "" when the
 * signature cannot be computed: the caller that sends refuses then).
 * route, delivery_id and sig may be NULL (map, diff: no delivery). */
int translate_map(const struct mapping *m, const struct bridge_route *route,
		  const struct v1_doc *doc, unsigned flags, struct mapping_result *ret,
		  char *delivery_id, char *sig, struct bridge_error *err);

#endif
