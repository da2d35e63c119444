/*
 * fuzz_mapping: v1_parse_json then mapping_apply with the shipped
 * mappings/qualifio-v1-to-v2.conf (found under $BRIDGE_SOURCE_ROOT, else the
 * working directory).  Each document is mapped without and with
 * MAPPING_TRACE.  Invariants (abort on violation): both runs agree; a failure
 * carries a message; a success is one JSON object (yajl_tree_parse) without
 * NUL bytes and every trace record is complete.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

#include "bridge/mapping.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct mapping *mapping;

static void load_mapping(void)
{
	const char *root = getenv("BRIDGE_SOURCE_ROOT");
	char path[4096];
	struct diag d = { 0 };

	snprintf(path, sizeof(path), "%s%smappings/qualifio-v1-to-v2.conf", root ? root : "",
		 root ? "/" : "");
	if (mapping_load(path, &mapping, &d) < 0) {
		fprintf(stderr, "fuzz_mapping: %s", d.text ? d.text : "cannot load the mapping\n");
		abort();
	}
	diag_reset(&d);
}

static int apply(const struct v1_doc *doc, unsigned flags, struct mapping_result *res)
{
	struct bridge_error err;
	yajl_val tree;
	char why[128], *text;

	bridge_error_clear(&err);
	memset(res, 0, sizeof(*res));
	if (mapping_apply(mapping, doc, flags, res, &err) < 0) {
		if (!err.message[0])
			abort();
		return -1;
	}
	/* The contract gives pointer + length: parse a NUL-terminated copy. */
	if (!res->body || memchr(res->body, '\0', res->len) || !(text = malloc(res->len + 1)))
		abort();
	memcpy(text, res->body, res->len);
	text[res->len] = '\0';
	tree = yajl_tree_parse(text, why, sizeof(why));
	if (!YAJL_IS_OBJECT(tree))
		abort();
	yajl_tree_free(tree);
	free(text);
	for (size_t i = 0; i < res->n_trace; i++)
		if (!res->trace[i].path || !res->trace[i].file || !res->trace[i].what)
			abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct v1_limits lim;
	struct v1_doc *doc;
	struct bridge_error err;
	struct mapping_result plain, traced;
	int rc_plain, rc_traced;

	if (!mapping)
		load_mapping();
	v1_limits_default(&lim);
	if (v1_parse_json((const char *)data, size, &lim, &doc, &err) < 0)
		return 0;
	rc_plain = apply(doc, 0, &plain);
	rc_traced = apply(doc, MAPPING_TRACE, &traced);
	if (rc_plain != rc_traced ||
	    (rc_plain == 0 &&
	     (plain.len != traced.len || memcmp(plain.body, traced.body, plain.len) != 0)))
		abort();
	mapping_result_clear(&plain);
	mapping_result_clear(&traced);
	v1_doc_free(doc);
	return 0;
}
