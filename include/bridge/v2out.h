/*
 * v2out: the webhook 2.0 (schema 2.3.0) document model that mapping_apply
 * fills, and its writer.
 *
 * The model can only describe what the schema allows: a fixed set of scalar
 * slots (the root, browser, campaign, channel, website and up to
 * V2_MAX_THEMES themes) plus the three entry sections.  A mapping therefore
 * cannot produce anything outside the v2 structure; v2_target_lookup() is the
 * single list of paths a rule may write.
 *
 * Values are borrowed: a struct v2_val points at bytes owned by someone else
 * (the v1 document, the loaded mapping or the apply arena) that must outlive
 * v2_doc_write().  V2_ABSENT values are omitted, never written as null.
 */
#ifndef BRIDGE_V2OUT_H
#define BRIDGE_V2OUT_H

#include <stddef.h>
#include "bridge/diag.h"

enum v2_kind {
	V2_ABSENT = 0,
	V2_STRING, /* s/len: UTF-8 bytes, may contain NUL */
	V2_NUMBER, /* s/len: a JSON integer's exact text */
	V2_BOOL,   /* s = "true" or "false" */
};

struct v2_val {
	enum v2_kind kind;
	const char *s;
	size_t len;
};

enum v2_type {
	V2_T_STRING,
	V2_T_INTEGER,
};

/* Scalar slots in schema order.  Theme slots follow V2_F_WEBSITE_COUNTRY:
 * theme i's code is V2_F_THEMES + 2 * i, its description the next slot. */
enum v2_field {
	V2_F_ID,
	V2_F_IP,
	V2_F_URL,
	V2_F_STARTED_AT,
	V2_F_COMPLETED_AT,
	V2_F_STATE,
	V2_F_BROWSER_DEVICE,
	V2_F_BROWSER_USER_AGENT,
	V2_F_CAMPAIGN_ID,
	V2_F_CAMPAIGN_NAME,
	V2_F_CAMPAIGN_TYPE,
	V2_F_CHANNEL_UUID,
	V2_F_CHANNEL_PUBLISH_TYPE,
	V2_F_CHANNEL_DATE_START,
	V2_F_CHANNEL_DATE_END,
	V2_F_WEBSITE_ID,
	V2_F_WEBSITE_NAME,
	V2_F_WEBSITE_DOMAIN,
	V2_F_WEBSITE_COUNTRY,
	V2_F_THEMES,
};

#define V2_MAX_THEMES 16
#define V2_N_SLOTS    (V2_F_THEMES + 2 * V2_MAX_THEMES)

enum v2_section {
	V2_FORM,
	V2_OPTINS,
	V2_QUESTIONNAIRE,
	V2_N_SECTIONS,
};

/* One response.  Written keys, in this order, when present:
 * label, value, file{path,name,type}, score, isCorrect. */
struct v2_response {
	struct v2_val label;
	struct v2_val value;
	struct v2_val file_path;
	struct v2_val file_name;
	struct v2_val file_type;
	struct v2_val score;
	struct v2_val is_correct;
};

struct v2_category_ref {
	struct v2_val id;
	struct v2_val label;
	struct v2_val technical_name;
};

struct v2_category {
	struct v2_val id;
	struct v2_val label;
	struct v2_val technical_name;
	struct v2_category_ref parent; /* omitted when all three are absent */
};

/* One form[], optins[] or questionnaire[] entry.  Which members are written
 * depends on the section:
 *   form:          id, label, type, variable, responses
 *   optins:        id, label, description, response, variable, categories
 *   questionnaire: id, label, type, score, maxScore, variable, responses
 * `responses` (form, questionnaire) and `categories` (optins) are always
 * written, possibly empty.
 *
 * head and tail (NULL: none) are the members that come from a rule, not
 * from the payload, written once by v2_entry_parts() and copied whole:
 * head is "{" and the members before the first one a payload fills (form:
 * id, label, type, variable; optins: id, label, description;
 * questionnaire: id, label, type), tail an opt-in's variable and
 * categories.  They replace those values in the output, which is the same
 * either way. */
struct v2_entry {
	struct v2_val id;
	struct v2_val label;
	struct v2_val type;
	struct v2_val description;
	struct v2_val response;
	struct v2_val score;
	struct v2_val max_score;
	struct v2_val variable;
	const struct v2_category *categories;
	size_t n_categories;
	struct v2_response *responses;
	size_t n_responses;
	const char *head, *tail;
	size_t head_len, tail_len;
};

struct v2_doc {
	struct v2_val slot[V2_N_SLOTS];
	struct v2_entry *entries[V2_N_SECTIONS];
	size_t n_entries[V2_N_SECTIONS];
};

/* Resolve a rule's target path ("campaign.channel.website.id",
 * "campaign.themes[0].code" ...) to its slot and type.  Returns 0, or -1 for
 * a path that is not a v2 scalar the rules may write. */
int v2_target_lookup(const char *path, int *ret_slot, enum v2_type *ret_type);

/* The comma-separated list of every path v2_target_lookup accepts (themes
 * shown as campaign.themes[N].code), for error messages.  Static storage. */
const char *v2_target_list(void);

/* An entry's head and tail (see struct v2_entry) from its values, written
 * as v2_doc_write writes them, in new malloc'd strings (tail NULL but for
 * opt-ins).  Returns 0, or -1 with both NULL: out of memory, or a string that
 * is not UTF-8 (v2_doc_write then fails on the values as it would). */
int v2_entry_parts(enum v2_section sec, const struct v2_entry *e, char **head, size_t *head_len,
		   char **tail, size_t *tail_len);

/* Write d as one compact JSON object (no trailing newline) into a new
 * malloc'd buffer.  Strings are validated as UTF-8.  Returns 0, or -1 with
 * err->message set (invalid UTF-8, out of memory, output over max_len). */
int v2_doc_write(const struct v2_doc *d, size_t max_len, char **ret, size_t *ret_len,
		 struct bridge_error *err);

#endif
