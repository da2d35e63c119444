/*
 * mapping: the mapping-variable rule engine (v1 document -> v2 JSON).
 *
 * A mapping is loaded once from a libconfig rule file (see mappings/README.md
 * for the language), fully validated at load time, and immutable afterwards:
 * one struct mapping may be applied from several threads at once.  Every rule
 * remembers the file and line it came from, so errors and provenance can
 * name it.
 *
 * Output (mapping_result.body) is one compact JSON object in webhook 2.0
 * shape: keys in schema order, `form`, `optins`, `questionnaire` and
 * `campaign.themes` always present, absent values omitted (never null),
 * numbers emitted from their exact text, strings as valid UTF-8.
 */
#ifndef BRIDGE_MAPPING_H
#define BRIDGE_MAPPING_H

#include <stddef.h>
#include "bridge/diag.h"
#include "bridge/v1.h"

struct mapping;

/* Load and validate a rule file.  Every problem is added to d as
 * "file:line: message"; returns 0 and sets *ret on success, -1 (and *ret
 * NULL) when d->count > 0. */
int mapping_load(const char *path, struct mapping **ret, struct diag *d);
void mapping_free(struct mapping *m); /* accepts NULL */
const char *mapping_path(const struct mapping *m);

enum mapping_unmapped {
	MAPPING_UNMAPPED_FORM, /* generic form[] entry: nothing lost (default) */
	MAPPING_UNMAPPED_DROP,
	MAPPING_UNMAPPED_REJECT, /* mapping_apply fails, naming the key */
};

/* One v2 value and the rule that produced it (only with MAPPING_TRACE). */
struct mapping_trace {
	char *path; /* v2 path, e.g. "campaign.channel.website.id", "form[lastname].responses[0].value" */
	char *from_key;   /* v1 key it came from, NULL for constants/defaults */
	const char *file; /* rule file (owned by the mapping) */
	int line;         /* rule line */
	/* short description: "copy", "constant", "default", "datetime Europe/Brussels",
	 * "map complete->COMPLETED", "unmapped:form" ... */
	char *what;
};

struct mapping_result {
	char *body; /* v2 JSON (no trailing newline), owned */
	size_t len;
	/* the four texts below are in one allocation, ids, that owns them */
	char *participation_id; /* v2 `id` as emitted, or NULL when absent */
	char *state;            /* v2 `state` as emitted, or NULL */
	char *website_id;       /* v2 campaign.channel.website.id text, or NULL */
	char *campaign_id;      /* v2 campaign.id text, or NULL */
	char *ids;
	char **unmapped; /* v1 keys no rule named (whatever the policy did) */
	size_t n_unmapped;
	enum mapping_unmapped unmapped_policy; /* the policy that applied */
	struct mapping_trace *trace;           /* only with MAPPING_TRACE */
	size_t n_trace;
};

#define MAPPING_TRACE 0x1u

/* Map one v1 document.  On failure returns -1 with err naming the problem:
 * err->file/line = the rule, err->key = the v1 key, message e.g.
 * "required v1 key 'participation_id' is absent" or
 * "v1 key 'campaign_id': not an integer: \"12a\"".  On success the caller
 * must mapping_result_clear() the result. */
int mapping_apply(const struct mapping *m, const struct v1_doc *in, unsigned flags,
		  struct mapping_result *ret, struct bridge_error *err);
void mapping_result_clear(struct mapping_result *r); /* accepts zeroed/cleared */

#endif
