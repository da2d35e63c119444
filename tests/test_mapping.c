/*
 * test_mapping: rule loading (every error with its file:line), every rule
 * operation, unmapped policies, stages, provenance trace and concurrent use.
 * Rule files are written to a fresh temporary directory.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bridge/mapping.h"
#include "bridge/translate.h"
#include "bridge/v2out.h"
#include "tap.h"

static char tmpdir[256];

static const char *write_file(const char *name, const char *text)
{
	static char path[8][512];
	static int slot;
	char *p = path[slot++ % 8];
	FILE *f;

	snprintf(p, 512, "%s/%s", tmpdir, name);
	f = fopen(p, "w");
	if (!f) {
		perror(p);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
	return p;
}

static struct mapping *load_ok(const char *name, const char *text)
{
	struct mapping *m = NULL;
	struct diag d = { 0 };
	const char *path = write_file(name, text);
	int rc = mapping_load(path, &m, &d);

	if (!ok(rc == 0 && m, name))
		printf("# diag:\n%s", d.text ? d.text : "(none)\n");
	diag_reset(&d);
	return m;
}

/* Load a broken file; returns the diag text with the temp dir replaced by
 * "T" (caller frees), and the error count in *count. */
static char *load_err(const char *name, const char *text, int *count)
{
	struct mapping *m = NULL;
	struct diag d = { 0 };
	const char *path = write_file(name, text);
	int rc = mapping_load(path, &m, &d);
	char *out;
	size_t tl = strlen(tmpdir), j = 0;

	ok(rc == -1 && m == NULL && d.count > 0, name);
	*count = d.count;
	out = calloc(1, d.len + 1);
	for (size_t i = 0; d.text && i < d.len; i++) {
		if (strncmp(d.text + i, tmpdir, tl) == 0) {
			out[j++] = 'T';
			i += tl - 1;
		} else {
			out[j++] = d.text[i];
		}
	}
	diag_reset(&d);
	return out;
}

static int has(const char *text, const char *needle, const char *name)
{
	int r = ok(text && strstr(text, needle) != NULL, name);

	if (!r)
		printf("#   missing: %s\n#   in:\n%s", needle, text ? text : "(null)");
	return r;
}

/* Map a JSON document; returns the body or "ERR: message" (caller frees). */
static char *map_flags(const struct mapping *m, const char *json, unsigned flags,
		       struct mapping_result *keep, struct bridge_error *e)
{
	struct v1_limits lim;
	struct v1_doc *doc = NULL;
	struct mapping_result r;
	struct bridge_error local;
	char *out;

	if (!e)
		e = &local;
	translate_limits(NULL, &lim);
	if (translate_parse(V1_ENC_JSON, json, strlen(json), &lim, &doc, e) < 0) {
		if (asprintf(&out, "PARSE: %s", e->message) < 0)
			out = NULL;
		return out;
	}
	if (mapping_apply(m, doc, flags, &r, e) < 0) {
		if (asprintf(&out, "ERR: %s", e->message) < 0)
			out = NULL;
		ok(r.body == NULL && r.n_unmapped == 0 && r.trace == NULL,
		   "failed apply leaves an empty result");
		v1_doc_free(doc);
		return out;
	}
	out = strndup(r.body, r.len);
	if (keep)
		*keep = r;
	else
		mapping_result_clear(&r);
	v1_doc_free(doc);
	return out;
}

static char *map(const struct mapping *m, const char *json)
{
	return map_flags(m, json, 0, NULL, NULL);
}

static void check_map(const struct mapping *m, const char *json, const char *want, const char *name)
{
	char *got = map(m, json);

	is_str(got, want, name);
	free(got);
}

#define EMPTY_TAIL  "\"form\":[],\"optins\":[],\"questionnaire\":[]}"
#define NO_CAMPAIGN "\"campaign\":{\"themes\":[]},"
#define WEB_DEFAULT "\"channel\":{\"website\":{\"id\":18446744073709551615}}"

/* ---- load errors --------------------------------------------------------- */

static void test_load_errors(void)
{
	char *t;
	int n;

	/* One rule-file line per source line, numbered: left as written. */
	/* clang-format off */
	t = load_err("bad1.conf",
		     "version = 1;\n"                                                        /* 1 */
		     "timezone = \"Europe/Nowhere\";\n"                                      /* 2 */
		     "unmapped = \"keep\";\n"                                                /* 3 */
		     "colour = \"blue\";\n"                                                  /* 4 */
		     "fields = (\n"                                                          /* 5 */
		     "  { to = \"campaign.idd\"; from = \"campaign_id\"; },\n"               /* 6 */
		     "  { to = \"state\"; from = \"status\"; convert = \"titlecase\"; },\n"  /* 7 */
		     "  { to = \"ip\"; from = 5; },\n"                                       /* 8 */
		     "  { to = \"url\"; value = \"x\"; from = \"url\"; },\n"                 /* 9 */
		     "  { to = \"state\"; from = \"status2\"; },\n"                          /* 10 */
		     "  { to = \"campaign.id\"; value = 5000000000; },\n"                    /* 11 */
		     "  { to = \"device\"; from = \"d\"; extra = 1; },\n"                    /* 12 */
		     "  { to = \"campaign.channel.website.id\"; from = \"w\"; convert = \"upper\"; },\n" /* 13 */
		     "  { to = \"form[0].label\"; from = \"x\"; }\n"                         /* 14 */
		     ");\n"                                                                  /* 15 */
		     "variables = (\n"                                                       /* 16 */
		     "  { section = \"form\"; variable = \"gender\"; choices = ( [\"M\", \"Male\"], [\"M\", \"Man\"] ); },\n" /* 17 */
		     "  { section = \"optins\"; variable = \"gender\"; choices = ( [\"a\", \"b\"] ); },\n" /* 18 */
		     "  { section = \"questionnaire\"; variable = \"q1\"; max_score = \"ten\"; },\n" /* 19 */
		     "  { section = \"form\"; variable = \"x\"; required = \"yes\"; },\n"   /* 20 */
		     "  { section = \"quiz\"; variable = \"y\"; },\n"                         /* 21 */
		     "  { section = \"form\"; label = \"no name\"; }\n"                      /* 22 */
		     ");\n",
		     &n);
	/* clang-format on */
	has(t, "T/bad1.conf:2: 'timezone': unknown time zone", "bad zone reported at its line");
	has(t, "T/bad1.conf:3: 'unmapped' must be one of form, drop, reject, not \"keep\"",
	    "bad enum");
	has(t, "T/bad1.conf:4: unknown setting 'colour' in the mapping",
	    "unknown top-level setting");
	has(t, "T/bad1.conf:6: unknown v2 path 'campaign.idd'", "unknown v2 path");
	has(t,
	    "T/bad1.conf:7: 'convert' must be one of string, integer, upper, lower, datetime, not "
	    "\"titlecase\"",
	    "unknown convert");
	has(t, "T/bad1.conf:8: 'from' must be a string, not an integer", "wrong type");
	has(t, "T/bad1.conf:9: field rule has both 'value' (a constant) and 'from' (a v1 key)",
	    "value and from");
	has(t, "T/bad1.conf:10: duplicate target 'state' (first at T/bad1.conf:7)",
	    "duplicate target");
	has(t, "T/bad1.conf:11: integer 5000000000 does not fit in 32 bits",
	    "over-32-bit literal caught (libconfig would wrap it)");
	has(t, "T/bad1.conf:12: unknown setting 'extra' in a field rule",
	    "unknown setting in a rule");
	has(t, "T/bad1.conf:12: unknown v2 path 'device'", "second error on the same rule");
	has(t,
	    "T/bad1.conf:13: 'campaign.channel.website.id' is an integer: convert must be "
	    "\"integer\" or absent",
	    "integer target with string conversion");
	has(t,
	    "T/bad1.conf:14: unknown v2 path 'form[0].label': form, optins and questionnaire "
	    "entries come from 'variables'",
	    "entries are not field targets");
	has(t, "T/bad1.conf:17: duplicate entry \"M\" in 'choices' (first at line 17)",
	    "duplicate choice");
	has(t, "T/bad1.conf:18: 'choices' does not apply to optins variables",
	    "setting outside its section");
	has(t, "T/bad1.conf:18: duplicate variable 'gender' (first at T/bad1.conf:17)",
	    "duplicate variable");
	has(t, "T/bad1.conf:19: 'max_score': not an integer", "bad integer setting");
	has(t, "T/bad1.conf:20: 'required' must be true or false, not a string", "bad boolean");
	has(t, "T/bad1.conf:21: 'section' must be one of form, optins, questionnaire, not \"quiz\"",
	    "bad section");
	has(t, "T/bad1.conf:22: variable without 'variable' (its technical name)",
	    "missing variable name");
	is_int(n, 20, "every error of bad1.conf reported, nothing else");
	free(t);

	t = load_err("syntax.conf", "version = 1;\nfields = (\n  { to = \"id\"; from = ; }\n);\n",
		     &n);
	has(t, "T/syntax.conf:3: syntax error", "syntax error with file:line");
	is_int(n, 1, "one syntax error");
	free(t);

	t = load_err("dup.conf", "version = 1;\nversion = 2;\n", &n);
	has(t, "T/dup.conf:2: duplicate setting name", "libconfig duplicate setting");
	free(t);

	{
		struct mapping *m = NULL;
		struct diag d = { 0 };
		char path[600];

		snprintf(path, sizeof(path), "%s/does-not-exist.conf", tmpdir);
		ok(mapping_load(path, &m, &d) == -1 && m == NULL, "missing file fails");
		has(d.text, "does-not-exist.conf: cannot read: No such file or directory",
		    "missing file named (libconfig gives no file/line for I/O errors)");
		diag_reset(&d);
	}

	t = load_err("nozone.conf",
		     "fields = ( { to = \"startedAt\"; from = \"d\"; convert = \"datetime\"; } );\n"
		     "stages = ( { websites = [ 1 ]; timezone = \"UTC\";\n"
		     "  fields = ( { to = \"completedAt\"; from = \"e\"; convert = \"datetime\"; } "
		     "); } );\n",
		     &n);
	has(t, "T/nozone.conf:1: convert = \"datetime\" needs a 'timezone'",
	    "datetime without any zone");
	is_int(n, 1, "a stage zone satisfies the stage's own datetime rules");
	free(t);

	t = load_err("stages.conf",
		     "stages = (\n"
		     "  { name = \"a\"; },\n"
		     "  { websites = [ ]; },\n"
		     "  { campaigns = [ \"12a\" ]; unmapped = \"form\"; },\n"
		     "  { websites = [ 1 ]; replace = 1; colour = 2; }\n"
		     ");\n",
		     &n);
	has(t, "T/stages.conf:2: stage needs 'websites' or 'campaigns'", "stage without selector");
	has(t, "T/stages.conf:3: 'websites' must not be empty", "empty selector");
	has(t, "T/stages.conf:4: 'campaigns': not an integer", "bad selector id");
	has(t, "T/stages.conf:5: 'replace' must be true or false", "bad replace");
	has(t, "T/stages.conf:5: unknown setting 'colour' in a stage", "unknown stage setting");
	free(t);

	t = load_err(
		"vars.conf",
		"variables = (\n"
		"  { section = \"optins\"; variable = \"nl\"; default = \"yes\"; },\n"
		"  { section = \"form\"; variable = \"a\"; required = true; default = \"x\"; },\n"
		"  { section = \"questionnaire\"; variable = \"q\"; max_score = 5; max_score_from "
		"= \"q_max\"; },\n"
		"  { section = \"optins\"; variable = \"o\"; categories = ( { id = 1; name = "
		"\"x\"; } ); },\n"
		"  { section = \"form\"; variable = \"c\"; unknown = \"reject\"; },\n"
		"  { section = \"form\"; variable = \"f\"; file = true; choices = ( [\"a\", \"b\"] "
		"); },\n"
		"  \"oops\",\n"
		"  { section = \"form\"; variable = \"last\"; }\n"
		");\n"
		"fields = ( { to = \"id\"; value = \"X\"; required = true; } );\n"
		"mime_types = ( [ \"png\" ] );\n",
		&n);
	has(t, "T/vars.conf:2: an opt-in default must be \"1\", \"0\" or \"\", not \"yes\"",
	    "opt-in default checked");
	has(t, "T/vars.conf:3: variable 'a' is both 'required' and has a 'default'",
	    "required and default");
	has(t, "T/vars.conf:4: variable has both 'max_score' and 'max_score_from'",
	    "two max scores");
	has(t, "T/vars.conf:5: unknown setting 'name' in a category", "unknown category setting");
	has(t, "T/vars.conf:6: 'unknown' needs a 'map' or 'choices'", "unknown without a table");
	has(t, "T/vars.conf:7: a file variable cannot have 'choices'", "file with choices");
	has(t, "T/vars.conf:8: each entry of 'variables' must be a group", "non-group variable");
	has(t, "T/vars.conf:11: 'required' needs 'from': a constant is written as is",
	    "constant with required");
	has(t, "T/vars.conf:12: each entry of 'mime_types' must be a pair of strings", "bad pair");
	is_int(n, 9, "every error of vars.conf reported");
	free(t);

	t = load_err("lits.conf",
		     "variables = (\n"
		     "  { section = \"form\"; variable = \"a\"; id = 2147483647; },\n"
		     "  { section = \"form\"; variable = \"b\"; id = -2147483649; },\n"
		     "  { section = \"form\"; variable = \"c\"; id = 9223372036854775807L; },\n"
		     "  { section = \"form\"; variable = \"d\"; id = 9223372036854775808L; },\n"
		     "  { section = \"form\"; variable = \"e2\"; id = 0x80000000; label = "
		     "\"99999999999\"; }\n"
		     "  # id = 99999999999 in a comment is fine\n"
		     ");\n",
		     &n);
	has(t, "T/lits.conf:3: integer -2147483649 does not fit in 32 bits",
	    "negative 32-bit overflow");
	has(t, "T/lits.conf:5: integer 9223372036854775808L does not fit in 64 bits",
	    "64-bit overflow");
	has(t, "T/lits.conf:6: integer 0x80000000 does not fit in 32 bits", "hex overflow");
	is_int(n, 3, "in-range literals, strings and comments are not flagged");
	free(t);
}

static void test_include(void)
{
	struct mapping *m;
	char cwd[512], sub[600];
	char *t;
	int n;

	snprintf(sub, sizeof(sub), "%s/inc", tmpdir);
	mkdir(sub, 0700);
	write_file("inc/vars.conf", "variables = ( { section = \"form\"; variable = \"city\"; "
				    "label = \"City\"; } );\n");
	write_file("inc/bad.conf", "fields = (\n  { to = \"nowhere\"; from = \"x\"; }\n);\n");
	if (!getcwd(cwd, sizeof(cwd)))
		cwd[0] = '\0';
	ok(chdir("/") == 0, "run the include test from another directory");
	m = load_ok("withinc.conf", "unmapped = \"drop\";\n@include \"inc/vars.conf\"\n");
	if (m)
		check_map(m, "{\"city\":\"Namur\"}",
			  "{" NO_CAMPAIGN "\"form\":[{\"label\":\"City\",\"variable\":\"city\","
			  "\"responses\":[{\"value\":\"Namur\"}]}],"
			  "\"optins\":[],\"questionnaire\":[]}",
			  "@include resolved against the rule file's folder");
	mapping_free(m);
	t = load_err("withbad.conf", "version = 1;\n@include \"inc/bad.conf\"\n", &n);
	has(t, "T/inc/bad.conf:2: unknown v2 path 'nowhere'",
	    "errors in an included file name that file");
	free(t);
	if (cwd[0] && chdir(cwd) != 0)
		perror("chdir");
}

/* ---- entries' constant parts ---------------------------------------------- */

static struct v2_val sval(const char *s)
{
	struct v2_val v = { V2_STRING, s, strlen(s) };

	return v;
}

/* The document with one entry e in section sec, written from its values
 * or, when parts, with its head and tail rendered by v2_entry_parts. */
static char *write_entry(enum v2_section sec, const struct v2_entry *e, bool parts, size_t max,
			 int *ret_parts_rc)
{
	struct v2_doc d;
	struct v2_entry copy = *e;
	struct bridge_error err;
	char *head = NULL, *tail = NULL, *out = NULL, *body;
	size_t len;

	memset(&d, 0, sizeof(d));
	if (parts) {
		*ret_parts_rc = v2_entry_parts(sec, e, &head, &copy.head_len, &tail,
					       &copy.tail_len);
		copy.head = head;
		copy.tail = tail;
	}
	d.entries[sec] = &copy;
	d.n_entries[sec] = 1;
	if (v2_doc_write(&d, max, &body, &len, &err) == 0) {
		out = body;
	} else if (asprintf(&out, "ERR: %s", err.message) < 0) {
		out = NULL;
	}
	free(head);
	free(tail);
	return out;
}

/* Written with and without the parts: the same bytes, or the same error. */
static void same_with_parts(enum v2_section sec, const struct v2_entry *e, size_t max, int want_rc,
			    const char *name)
{
	int rc = 99;
	char *plain = write_entry(sec, e, false, max, NULL);
	char *fast = write_entry(sec, e, true, max, &rc);

	is_int(rc, want_rc, name);
	is_str(fast, plain, name);
	free(plain);
	free(fast);
}

static void test_entry_parts(void)
{
	static const struct v2_category cats[] = {
		{ .id = { V2_NUMBER, "118", 3 },
		  .label = { V2_STRING, "News & \"more\"", 13 },
		  .parent = { .technical_name = { V2_STRING, "tab\there", 8 } } },
	};
	struct v2_entry e = { 0 };
	char *head, *tail, *full;
	size_t hl, tl;

	e.id = (struct v2_val){ V2_NUMBER, "1001", 4 };
	e.label = sval("Say \"hi\"\\ \n\r\t\b\f \x01\x1f\x7f / caf\xc3\xa9 \xe2\x80\xa8");
	e.type = sval("LAST\"NAME");
	e.description = sval("line\nbreak");
	e.variable = sval("var\\iable");
	e.response = sval("1");
	e.score = (struct v2_val){ V2_NUMBER, "5", 1 };
	e.categories = cats;
	e.n_categories = 1;

	ok(v2_entry_parts(V2_FORM, &e, &head, &hl, &tail, &tl) == 0 && tail == NULL,
	   "a form entry has a head and no tail");
	is_str(head,
	       "{\"id\":1001,\"label\":\"Say \\\"hi\\\"\\\\ \\n\\r\\t\\b\\f \\u0001\\u001F\x7f / "
	       "caf\xc3\xa9 \xe2\x80\xa8\",\"type\":\"LAST\\\"NAME\",\"variable\":\"var\\\\iable\"",
	       "the head is escaped as the writer escapes (quote, backslash, controls; DEL, '/' "
	       "and UTF-8 as they are)");
	is_int(hl, head ? strlen(head) : 0, "the head's length");
	free(head);
	ok(v2_entry_parts(V2_OPTINS, &e, &head, &hl, &tail, &tl) == 0, "an opt-in's parts");
	is_str(tail,
	       "\"variable\":\"var\\\\iable\",\"categories\":[{\"id\":118,\"label\":\"News & "
	       "\\\"more\\\"\",\"parent\":{\"technicalName\":\"tab\\there\"}}]",
	       "an opt-in's tail: variable and categories, escaped");
	free(head);
	free(tail);

	for (int sec = 0; sec < V2_N_SECTIONS; sec++)
		same_with_parts(
			(enum v2_section)sec, &e, 1 << 20, 0,
			"an entry with strings to escape: the same document with its parts");

	/* The ceiling: the parts are copied only when they fit, else written
	 * piece by piece, which fails where the values fail. */
	full = write_entry(V2_OPTINS, &e, false, 1 << 20, NULL);
	for (size_t max = 40; full && max <= strlen(full) + 1; max++)
		same_with_parts(V2_OPTINS, &e, max, 0,
				"the same output or error under each ceiling");
	free(full);

	/* An opt-in without head members or response: the tail opens the object. */
	memset(&e, 0, sizeof(e));
	e.variable = sval("v");
	same_with_parts(V2_OPTINS, &e, 1 << 20, 0, "an empty head: no comma before the tail");
	same_with_parts(V2_FORM, &e, 1 << 20, 0, "a form head of the variable alone");

	/* Not UTF-8: no parts, and the document fails as it does without them. */
	e.label = sval("bad \xff byte");
	ok(v2_entry_parts(V2_FORM, &e, &head, &hl, &tail, &tl) == -1 && !head && !tail,
	   "a label that is not UTF-8 has no parts");
	same_with_parts(V2_FORM, &e, 1 << 20, -1, "a label that is not UTF-8: the same error");
	e.label = sval("ok");
	e.variable = sval("bad \xc3 var");
	ok(v2_entry_parts(V2_OPTINS, &e, &head, &hl, &tail, &tl) == -1 && !head && !tail,
	   "an opt-in variable that is not UTF-8: no head, no tail");
}

/* Responses that are a value alone are written at once: the bytes of the
 * member-by-member form, the same error for a value that is not UTF-8, and
 * the same cut under each ceiling. */
static void test_value_only(void)
{
	struct v2_response resp[3];
	struct v2_entry e = { 0 };
	struct v2_doc d;
	struct bridge_error err;
	char *body = NULL;
	size_t len = 0, full = 0;
	int bad = 0;

	memset(resp, 0, sizeof(resp));
	memset(&d, 0, sizeof(d));
	resp[0].value = sval("a \"q\" \\ \n\x01 caf\xc3\xa9");
	resp[1].label = sval("L");
	resp[1].value = sval("v");
	resp[2].value = sval("");
	e.variable = sval("x");
	e.responses = resp;
	e.n_responses = 3;
	d.entries[V2_FORM] = &e;
	d.n_entries[V2_FORM] = 1;
	if (v2_doc_write(&d, 1 << 20, &body, &len, &err) == 0)
		full = len;
	is_str(body,
	       "{\"campaign\":{\"themes\":[]},\"form\":[{\"variable\":\"x\",\"responses\":["
	       "{\"value\":\"a \\\"q\\\" \\\\ \\n\\u0001 caf\xc3\xa9\"},{\"label\":\"L\",\"value\":"
	       "\"v\"},{\"value\":\"\"}]}],\"optins\":[],\"questionnaire\":[]}",
	       "responses of a value alone, escaped, beside one with a label");
	free(body);
	for (size_t max = full - 40; full && max <= full + 1; max++) {
		int rc = v2_doc_write(&d, max, &body, &len, &err);

		if (max >= full ? rc != 0 || len != full
				: rc != -1 || !strstr(err.message, "more than"))
			bad++;
		if (rc == 0)
			free(body);
	}
	is_int(bad, 0, "responses of a value alone: written or refused whole under each ceiling");
	resp[2].value = sval("bad \xff");
	ok(v2_doc_write(&d, 1 << 20, &body, &len, &err) == -1, "a value that is not UTF-8 fails");
	is_str(err.message, "v2 output: invalid UTF-8 in a string (at \"value\")",
	       "and names the value");
}

/* A rule file's labels with characters to escape, through a loaded mapping. */
static void test_rule_parts(void)
{
	struct mapping *m = load_ok(
		"parts.conf", "version = 1;\nunmapped = \"drop\";\n"
			      "variables = (\n"
			      "  { section = \"form\"; variable = \"a\\\"b\"; id = 7; label = "
			      "\"Say \\\"hi\\\"\\t\\\\\";"
			      " type = \"T\\n\"; },\n"
			      "  { section = \"optins\"; variable = \"o\"; label = \"caf\xc3\xa9\";"
			      " description = \"\\x01\";"
			      "    categories = ( { id = 3; technical_name = \"t\\\"n\"; } ); }\n"
			      ");\n");

	if (!m)
		return;
	check_map(m, "{\"a\\\"b\":\"x\",\"optin_o\":\"true\"}",
		  "{\"campaign\":{\"themes\":[]},\"form\":[{\"id\":7,\"label\":\"Say "
		  "\\\"hi\\\"\\t\\\\\",\"type\":\"T\\n\",\"variable\":\"a\\\"b\","
		  "\"responses\":[{\"value\":\"x\"}]}],\"optins\":[{\"label\":\"caf\xc3\xa9\","
		  "\"description\":\"\\u0001\",\"response\":\"1\",\"variable\":\"o\","
		  "\"categories\":[{\"id\":3,\"technicalName\":\"t\\\"n\"}]}],"
		  "\"questionnaire\":[]}",
		  "a rule's constants with quotes, backslashes and controls, escaped once");
	mapping_free(m);
}

/* ---- operations ---------------------------------------------------------- */

static const char *const fields_conf =
	"unmapped = \"drop\";\n"
	"timezone = \"Europe/Brussels\";\n"
	"fields = (\n"
	"  { to = \"id\"; from = \"pid\"; required = true; convert = \"upper\"; },\n" /* 4 */
	"  { to = \"ip\"; value = \"0000000000000000\"; },\n"                         /* 5 */
	"  { to = \"url\"; from = \"url\"; default = \"\"; },\n"                      /* 6 */
	"  { to = \"campaign.id\"; from = \"cid\"; convert = \"integer\"; },\n"       /* 7 */
	"  { to = \"campaign.channel.website.id\"; from = \"wid\"; default = "
	"\"18446744073709551615\"; },\n"                                         /* 8 */
	"  { to = \"campaign.name\"; from = \"name\"; convert = \"lower\"; },\n" /* 9 */
	"  { to = \"state\"; from = \"status\"; map = ( [\"complete\", \"COMPLETED\"] ); unknown = "
	"\"keep\"; },\n" /* 10 */
	"  { to = \"browser.device\"; from = \"device\"; map = ( [\"m\", \"mobile\"], [\"d\", "
	"\"desktop\"] ); unknown = \"reject\"; },\n"                             /* 11 */
	"  { to = \"startedAt\"; from = \"start\"; convert = \"datetime\"; },\n" /* 12 */
	"  { to = \"completedAt\"; from = \"end\"; convert = \"datetime\"; ambiguous = \"later\"; "
	"},\n" /* 13 */
	"  { to = \"campaign.channel.dateStart\"; from = \"ds\"; convert = \"datetime\"; gap = "
	"\"shift\"; },\n" /* 14 */
	"  { to = \"campaign.channel.dateEnd\"; from = \"de\"; convert = \"datetime\"; ambiguous = "
	"\"reject\"; },\n"                                                                /* 15 */
	"  { to = \"campaign.themes[1].code\"; from = \"t1\"; convert = \"string\"; },\n" /* 16 */
	"  { to = \"campaign.type\"; from = \"type\"; map = ( [\"1\", \"QUIZZ\"] ); }\n"  /* 17 */
	");\n";

static void test_fields(void)
{
	struct mapping *m = load_ok("fields.conf", fields_conf);
	struct bridge_error e;
	char *got;

	if (!m)
		return;
	check_map(m, "{\"pid\":\"ab-c\"}",
		  "{\"id\":\"AB-C\",\"ip\":\"0000000000000000\",\"url\":\"\","
		  "\"campaign\":{\"themes\":[],\"channel\":{\"website\":{\"id\":"
		  "18446744073709551615}}}," EMPTY_TAIL,
		  "copy+upper, constant, string default, integer default above 2^63");
	check_map(m,
		  "{\"pid\":\"x\",\"url\":null,\"cid\":\"18446744073709551615\",\"wid\":"
		  "9007199254740993}",
		  "{\"id\":\"X\",\"ip\":\"0000000000000000\",\"url\":\"\","
		  "\"campaign\":{\"id\":18446744073709551615,\"themes\":[],\"channel\":{"
		  "\"website\":{\"id\":9007199254740993}}}," EMPTY_TAIL,
		  "null takes the default; 64-bit ids exact from a string and from a number");
	check_map(m,
		  "{\"pid\":\"x\",\"cid\":\" -0042 \",\"name\":\"\xc3\x89T\xc3\x89 "
		  "Summer\",\"type\":2}",
		  "{\"id\":\"X\",\"ip\":\"0000000000000000\",\"url\":\"\","
		  "\"campaign\":{\"id\":-42,\"name\":\"\xc3\x89t\xc3\x89 "
		  "summer\",\"type\":\"2\",\"themes\":[]," WEB_DEFAULT "}," EMPTY_TAIL,
		  "integer canonical, lower touches ASCII only, number copied as text, unmapped "
		  "value kept");
	check_map(m,
		  "{\"pid\":\"x\",\"status\":\"complete\",\"device\":\"m\",\"type\":\"1\",\"t1\":"
		  "true}",
		  "{\"id\":\"X\",\"ip\":\"0000000000000000\",\"url\":\"\",\"state\":\"COMPLETED\","
		  "\"browser\":{\"device\":\"mobile\"},"
		  "\"campaign\":{\"type\":\"QUIZZ\",\"themes\":[{\"code\":\"true\"}]," WEB_DEFAULT
		  "}," EMPTY_TAIL,
		  "value maps; a lone theme index 1 becomes the first written theme");
	check_map(m, "{\"pid\":\"x\",\"status\":\"pending\"}",
		  "{\"id\":\"X\",\"ip\":\"0000000000000000\",\"url\":\"\",\"state\":\"pending\","
		  "\"campaign\":{\"themes\":[]," WEB_DEFAULT "}," EMPTY_TAIL,
		  "unknown = keep passes the value through");

	/* Both DST changes in Europe/Brussels (2021-03-28 and 2021-10-31). */
	check_map(
		m,
		"{\"pid\":\"x\",\"start\":\"2021-07-01 12:00:00\",\"end\":\"2021-10-31 02:30:00\","
		"\"ds\":\"2021-03-28 02:30:00\",\"de\":\"2021-01-15 23:59:59\"}",
		"{\"id\":\"X\",\"ip\":\"0000000000000000\",\"url\":\"\",\"startedAt\":\"2021-07-"
		"01T10:00:00.000Z\","
		"\"completedAt\":\"2021-10-31T01:30:00.000Z\",\"campaign\":{\"themes\":[],"
		"\"channel\":{"
		"\"dateStart\":\"2021-03-28T01:30:00.000Z\",\"dateEnd\":\"2021-01-15T22:59:59."
		"000Z\",\"website\":{\"id\":18446744073709551615}}}," EMPTY_TAIL,
		"datetime: summer, ambiguous=later, gap=shift, winter");
	check_map(m, "{\"pid\":\"x\",\"start\":\"2021-10-31 02:30:00\"}",
		  "{\"id\":\"X\",\"ip\":\"0000000000000000\",\"url\":\"\",\"startedAt\":\"2021-10-"
		  "31T00:30:00.000Z\","
		  "\"campaign\":{\"themes\":[]," WEB_DEFAULT "}," EMPTY_TAIL,
		  "datetime: ambiguous defaults to the earlier instant");

	got = map_flags(m, "{\"pid\":\"x\",\"start\":\"2021-03-28 02:30:00\"}", 0, NULL, &e);
	ok(strncmp(got, "ERR: v1 key 'start': ", 21) == 0, "gap rejected by default");
	is_int(e.line, 12, "gap error names the rule line");
	is_str(e.key, "start", "gap error names the key");
	free(got);
	got = map_flags(m, "{\"pid\":\"x\",\"de\":\"2021-10-31 02:30:00\"}", 0, NULL, &e);
	ok(strncmp(got, "ERR: v1 key 'de': ", 18) == 0,
	   "ambiguous = reject refuses the autumn hour");
	free(got);

	got = map_flags(m, "{\"url\":\"u\"}", 0, NULL, &e);
	is_str(got, "ERR: required v1 key 'pid' is absent", "required key absent");
	ok(e.file && strstr(e.file, "/fields.conf"), "required error names the rule file");
	is_int(e.line, 4, "required error names the rule line");
	is_str(e.key, "pid", "required error names the key");
	free(got);
	got = map(m, "{\"pid\":null}");
	is_str(got, "ERR: required v1 key 'pid' is null", "required key null");
	free(got);
	got = map_flags(m, "{\"pid\":\"x\",\"cid\":\"12a\"}", 0, NULL, &e);
	ok(strncmp(got, "ERR: v1 key 'cid': not an integer: \"12a\"", 40) == 0,
	   "bad integer names key and value");
	is_int(e.line, 7, "bad integer names the rule line");
	free(got);
	got = map(m, "{\"pid\":\"x\",\"cid\":1.5}");
	ok(strncmp(got, "ERR: v1 key 'cid': not an integer", 33) == 0,
	   "fraction is not an integer");
	free(got);
	got = map(m, "{\"pid\":\"x\",\"cid\":\"18446744073709551616\"}");
	ok(strncmp(got, "ERR: v1 key 'cid': ", 19) == 0, "2^64 is out of range");
	free(got);
	got = map(m, "{\"pid\":\"x\",\"wid\":\"web\"}");
	ok(strncmp(got, "ERR: v1 key 'wid': not an integer", 33) == 0,
	   "integer targets always convert");
	free(got);
	got = map_flags(m, "{\"pid\":\"x\",\"device\":\"tablet\"}", 0, NULL, &e);
	is_str(got, "ERR: v1 key 'device': value \"tablet\" is not in the map", "unknown = reject");
	is_int(e.line, 11, "map error names the rule line");
	free(got);
	got = map(m, "{\"pid\":[\"a\",\"b\"]}");
	is_str(got, "ERR: v1 key 'pid': a list of 2 values where id takes one",
	       "list into a scalar refused");
	free(got);
	mapping_free(m);
}

static const char *const vars_conf =
	"unmapped = \"drop\";\n"
	"prefixes = { optins = \"opt_\"; };\n"
	"mime_types = ( [\"PNG\", \"image/x-custom-png\"], [\".heic\", "
	"\"image/heif\"] );\n"
	"variables = (\n"
	"  { section = \"form\"; variable = \"gender\"; id = 12345; label = "
	"\"Gender\"; type = \"GENDER\";\n" /* 5 */
	"    choices = ( [\"M\", \"Male\"], [\"F\", \"Female\"] ); convert = "
	"\"upper\"; },\n"
	"  { section = \"form\"; variable = \"size\"; choices = ( [\"S\", "
	"\"Small\"] ); unknown = \"reject\"; },\n" /* 7 */
	"  { section = \"form\"; variable = \"cv\"; from = \"cv_url\"; type = "
	"\"FILE UPLOAD\"; file = true; },\n" /* 8 */
	"  { section = \"form\"; variable = \"hobbies\"; separator = \";\"; "
	"},\n" /* 9 */
	"  { section = \"form\"; variable = \"lang\"; from = \"language\"; "
	"default = \"fr\"; },\n" /* 10 */
	"  { section = \"form\"; variable = \"colour\"; map = ( [\"r\", "
	"\"red\"] ); },\n" /* 11 */
	"  { section = \"optins\"; variable = \"news\"; id = 7; label = "
	"\"News\"; description = \"Monthly\";\n" /* 12 */
	"    categories = ( { id = 118; label = \"Newsletter\"; technical_name "
	"= \"newsletter\";\n"
	"                     parent = { id = 218; label = \"Marketing\"; "
	"technical_name = \"marketing\"; }; },\n"
	"                   { label = \"Bare\"; } ); },\n"
	"  { section = \"optins\"; variable = \"sms\"; map = ( [\"yes\", "
	"\"1\"], [\"no\", \"0\"] ); },\n" /* 16 */
	"  { section = \"optins\"; variable = \"tos\"; from = \"terms\"; "
	"required = true; },\n" /* 17 */
	"  { section = \"questionnaire\"; variable = \"q1\"; id = 31; label = "
	"\"Capital?\"; type = \"ALPHA NUMERIC\";\n" /* 18 */
	"    score_from = \"q1_score\"; max_score = 100; response_score_from = "
	"\"q1_rs\"; correct_from = \"q1_ok\"; },\n"
	"  { section = \"questionnaire\"; variable = \"q2\"; max_score_from = "
	"\"q2_max\"; separator = \"|\"; }\n" /* 20 */
	");\n";

#define OPT_TOS "\"optins\":[{\"response\":\"1\",\"variable\":\"tos\",\"categories\":[]}]"

static void test_variables(void)
{
	struct mapping *m = load_ok("vars.conf", vars_conf);
	struct bridge_error e;
	char *got;

	if (!m)
		return;
	check_map(m, "{\"terms\":1,\"gender\":\"m\"}",
		  "{" NO_CAMPAIGN "\"form\":[{\"id\":12345,\"label\":\"Gender\",\"type\":"
		  "\"GENDER\",\"variable\":\"gender\","
		  "\"responses\":[{\"label\":\"Male\",\"value\":\"M\"}]},"
		  "{\"variable\":\"lang\",\"responses\":[{\"value\":\"fr\"}]}]," OPT_TOS
		  ",\"questionnaire\":[]}",
		  "choice label after upper; default for an absent variable; rename via from");
	check_map(m, "{\"terms\":1,\"gender\":\"x\",\"language\":\"nl\",\"colour\":\"b\"}",
		  "{" NO_CAMPAIGN "\"form\":[{\"id\":12345,\"label\":\"Gender\",\"type\":"
		  "\"GENDER\",\"variable\":\"gender\","
		  "\"responses\":[{\"value\":\"X\"}]},{\"variable\":\"lang\",\"responses\":[{"
		  "\"value\":\"nl\"}]},"
		  "{\"variable\":\"colour\",\"responses\":[{\"value\":\"b\"}]}]," OPT_TOS
		  ",\"questionnaire\":[]}",
		  "unknown choice kept without label; map keep");
	got = map_flags(m, "{\"terms\":1,\"size\":\"XL\"}", 0, NULL, &e);
	is_str(got, "ERR: v1 key 'size': value \"XL\" is not one of the choices of 'size'",
	       "choices unknown = reject");
	is_int(e.line, 7, "choice error names the rule line");
	free(got);

	check_map(m,
		  "{\"terms\":1,\"cv_url\":[\"https://files.example.com/up/a%20b/CV.PNG?sig=1#x\","
		  "\"https://files.example.com/doc.heic\",\"https://files.example.com\",\"https://"
		  "x.example/y/file.unknownext\",\"\"]}",
		  "{" NO_CAMPAIGN
		  "\"form\":[{\"type\":\"FILE UPLOAD\",\"variable\":\"cv\",\"responses\":["
		  "{\"file\":{\"path\":\"https://files.example.com/up/a%20b/"
		  "CV.PNG?sig=1#x\",\"name\":\"CV.PNG\",\"type\":\"image/x-custom-png\"}},"
		  "{\"file\":{\"path\":\"https://files.example.com/"
		  "doc.heic\",\"name\":\"doc.heic\",\"type\":\"image/heif\"}},"
		  "{\"file\":{\"path\":\"https://files.example.com\",\"type\":\"application/"
		  "octet-stream\"}},"
		  "{\"file\":{\"path\":\"https://x.example/y/"
		  "file.unknownext\",\"name\":\"file.unknownext\",\"type\":\"application/"
		  "octet-stream\"}}]},"
		  "{\"variable\":\"lang\",\"responses\":[{\"value\":\"fr\"}]}]," OPT_TOS
		  ",\"questionnaire\":[]}",
		  "file uploads: name, configured MIME types, default type, empty skipped");
	/* the first control byte is found at any offset, past whole words too,
	 * and UTF-8 is not one */
	for (size_t at = 0; at < 24; at += 5) {
		char body[160], want[160], name[64];

		snprintf(body, sizeof(body),
			 "{\"terms\":1,\"cv_url\":\"%.*s\\u007f\xc3\xa9/x\\u0001y\"}", (int)at,
			 "https://files.example.com/");
		snprintf(want, sizeof(want),
			 "ERR: v1 key 'cv_url': upload URL has control character 0x7F at byte %zu",
			 at);
		snprintf(name, sizeof(name), "upload URL: DEL at byte %zu", at);
		got = map_flags(m, body, 0, NULL, &e);
		is_str(got, want, name);
		free(got);
	}

	check_map(m, "{\"terms\":1,\"hobbies\":\" chess ; go;;\\u00e9checs \",\"language\":null}",
		  "{" NO_CAMPAIGN "\"form\":[{\"variable\":\"hobbies\",\"responses\":[{\"value\":"
		  "\"chess\"},{\"value\":\"go\"},"
		  "{\"value\":\"\xc3\xa9"
		  "checs\"}]},{\"variable\":\"lang\",\"responses\":[{\"value\":\"fr\"}]}]," OPT_TOS
		  ",\"questionnaire\":[]}",
		  "separator splits, trims and drops empty pieces; null takes the default");
	check_map(m, "{\"terms\":1,\"hobbies\":[\"a;b\",null,7]}",
		  "{" NO_CAMPAIGN "\"form\":[{\"variable\":\"hobbies\",\"responses\":[{\"value\":"
		  "\"a\"},{\"value\":\"b\"},"
		  "{\"value\":\"7\"}]},{\"variable\":\"lang\",\"responses\":[{\"value\":\"fr\"}]}]"
		  "," OPT_TOS ",\"questionnaire\":[]}",
		  "array items become responses (null items skipped, separator on strings)");

	/* Opt-in normalisation. */
	{
		static const struct {
			const char *v1, *want;
		} cases[] = {
			{ "1", "1" },        { "0", "0" },         { "true", "1" },
			{ "false", "0" },    { "\"1\"", "1" },     { "\"0\"", "0" },
			{ "\"true\"", "1" }, { "\"false\"", "0" }, { "\"\"", "" },
			{ "null", "" },
		};
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			char in[128], want[512], name[128];

			snprintf(in, sizeof(in), "{\"terms\":%s,\"language\":\"fr\"}", cases[i].v1);
			snprintf(want, sizeof(want),
				 "{" NO_CAMPAIGN "\"form\":[{\"variable\":\"lang\",\"responses\":[{"
				 "\"value\":\"fr\"}]}],"
				 "\"optins\":[{\"response\":\"%s\",\"variable\":\"tos\","
				 "\"categories\":[]}],\"questionnaire\":[]}",
				 cases[i].want);
			snprintf(name, sizeof(name), "opt-in %s -> \"%s\"", cases[i].v1,
				 cases[i].want);
			check_map(m, in, want, name);
		}
	}
	got = map_flags(m, "{\"terms\":\"yes\"}", 0, NULL, &e);
	is_str(got,
	       "ERR: v1 key 'terms': not an opt-in value: \"yes\" (expected 1, 0, true, false, "
	       "empty or null)",
	       "bad opt-in value names the key");
	is_int(e.line, 17, "bad opt-in names the rule line");
	free(got);
	got = map(m, "{\"terms\":2}");
	ok(strncmp(got, "ERR: v1 key 'terms': not an opt-in value: \"2\"", 45) == 0,
	   "2 is not an opt-in value");
	free(got);
	got = map(m, "{\"terms\":[1]}");
	ok(strncmp(got, "ERR: v1 key 'terms': a list", 27) == 0, "list is not an opt-in value");
	free(got);
	got = map(m, "{\"language\":\"fr\"}");
	is_str(got, "ERR: required v1 key 'terms' is absent", "required opt-in");
	free(got);
	check_map(
		m, "{\"terms\":0,\"opt_news\":\"1\",\"opt_sms\":\"no\"}",
		"{" NO_CAMPAIGN
		"\"form\":[{\"variable\":\"lang\",\"responses\":[{\"value\":\"fr\"}]}],\"optins\":["
		"{\"id\":7,\"label\":\"News\",\"description\":\"Monthly\",\"response\":\"1\","
		"\"variable\":\"news\",\"categories\":["
		"{\"id\":118,\"label\":\"Newsletter\",\"technicalName\":\"newsletter\",\"parent\":{"
		"\"id\":218,\"label\":\"Marketing\","
		"\"technicalName\":\"marketing\"}},{\"label\":\"Bare\"}]},"
		"{\"response\":\"0\",\"variable\":\"sms\",\"categories\":[]},"
		"{\"response\":\"0\",\"variable\":\"tos\",\"categories\":[]}],\"questionnaire\":[]"
		"}",
		"opt-ins: prefix, description, categories with parent, map before normalisation, "
		"rule order");

	/* Questionnaire. */
	check_map(m,
		  "{\"terms\":1,\"q1\":\"Brussels\",\"q1_score\":\"50\",\"q1_rs\":50,\"q1_ok\":"
		  "\"1\"}",
		  "{" NO_CAMPAIGN
		  "\"form\":[{\"variable\":\"lang\",\"responses\":[{\"value\":\"fr\"}]}]," OPT_TOS
		  ","
		  "\"questionnaire\":[{\"id\":31,\"label\":\"Capital?\",\"type\":\"ALPHA "
		  "NUMERIC\",\"score\":50,\"maxScore\":100,"
		  "\"variable\":\"q1\",\"responses\":[{\"value\":\"Brussels\",\"score\":50,"
		  "\"isCorrect\":true}]}]}",
		  "question score, constant max score, response score and correctness");
	check_map(m, "{\"terms\":1,\"q2\":\"a|b\",\"q2_max\":10}",
		  "{" NO_CAMPAIGN
		  "\"form\":[{\"variable\":\"lang\",\"responses\":[{\"value\":\"fr\"}]}]," OPT_TOS
		  ","
		  "\"questionnaire\":[{\"maxScore\":10,\"variable\":\"q2\",\"responses\":[{"
		  "\"value\":\"a\"},{\"value\":\"b\"}]}]}",
		  "max score from a key, multi-valued answer");
	check_map(m, "{\"terms\":1,\"q1\":[\"A\",\"B\"],\"q1_rs\":[10,0],\"q1_ok\":[true,false]}",
		  "{" NO_CAMPAIGN
		  "\"form\":[{\"variable\":\"lang\",\"responses\":[{\"value\":\"fr\"}]}]," OPT_TOS
		  ","
		  "\"questionnaire\":[{\"id\":31,\"label\":\"Capital?\",\"type\":\"ALPHA "
		  "NUMERIC\",\"maxScore\":100,"
		  "\"variable\":\"q1\",\"responses\":[{\"value\":\"A\",\"score\":10,\"isCorrect\":"
		  "true},"
		  "{\"value\":\"B\",\"score\":0,\"isCorrect\":false}]}]}",
		  "per-response lists align with the responses");
	check_map(m, "{\"terms\":1,\"q1_score\":0}",
		  "{" NO_CAMPAIGN
		  "\"form\":[{\"variable\":\"lang\",\"responses\":[{\"value\":\"fr\"}]}]," OPT_TOS
		  ","
		  "\"questionnaire\":[{\"id\":31,\"label\":\"Capital?\",\"type\":\"ALPHA "
		  "NUMERIC\",\"score\":0,\"maxScore\":100,"
		  "\"variable\":\"q1\",\"responses\":[]}]}",
		  "a score without an answer still produces the entry (nothing lost)");
	got = map(m, "{\"terms\":1,\"q1\":[\"A\",\"B\"],\"q1_ok\":[true]}");
	is_str(got, "ERR: v1 key 'q1_ok': 1 values for the 2 responses of 'q1'",
	       "per-response list length checked");
	free(got);
	got = map(m, "{\"terms\":1,\"q1\":\"A\",\"q1_ok\":\"maybe\"}");
	ok(strncmp(got, "ERR: v1 key 'q1_ok': not a correctness value: \"maybe\"", 53) == 0,
	   "bad correctness value");
	free(got);
	got = map(m, "{\"terms\":1,\"q1\":\"A\",\"q1_score\":\"lots\"}");
	ok(strncmp(got, "ERR: v1 key 'q1_score': not an integer", 38) == 0,
	   "bad score names the helper key");
	free(got);
	mapping_free(m);
}

static void test_unmapped(void)
{
	struct mapping *mf = load_ok(
		"um-form.conf", "fields = ( { to = \"id\"; from = \"pid\"; } );\n"
				"variables = ( { section = \"questionnaire\"; variable = \"q\"; "
				"score_from = \"q_score\"; },\n"
				"              { section = \"form\"; variable = \"email\"; } );\n"
				"ignore = [ \"signature\" ];\n");
	struct mapping *md = load_ok(
		"um-drop.conf",
		"unmapped = \"drop\";\nfields = ( { to = \"id\"; from = \"pid\"; } );\n");
	struct mapping *mr = load_ok("um-reject.conf",
				     "version = 1;\nunmapped = \"reject\";\nfields = ( { to = "
				     "\"id\"; from = \"pid\"; } );\n");
	const char *in = "{\"zeta\":\"z\",\"pid\":\"p\",\"email\":\"a@b\",\"signature\":\"s\","
			 "\"alpha\":[1,\"two\",null],"
			 "\"q_score\":3,\"nothing\":null,\"esc\":\"quote\\\" tab\\t nul\\u0000 "
			 "\\ud83d\\ude00 \\/\"}";
	struct mapping_result r;
	struct bridge_error e;
	char *got;

	if (!mf || !md || !mr)
		goto out;
	got = map_flags(mf, in, 0, &r, NULL);
	is_str(got,
	       "{\"id\":\"p\"," NO_CAMPAIGN
	       "\"form\":[{\"variable\":\"email\",\"responses\":[{\"value\":\"a@b\"}]},"
	       "{\"label\":\"zeta\",\"variable\":\"zeta\",\"responses\":[{\"value\":\"z\"}]},"
	       "{\"label\":\"alpha\",\"variable\":\"alpha\",\"responses\":[{\"value\":\"1\"},{"
	       "\"value\":\"two\"}]},"
	       "{\"label\":\"nothing\",\"variable\":\"nothing\",\"responses\":[]},"
	       "{\"label\":\"esc\",\"variable\":\"esc\",\"responses\":[{\"value\":\"quote\\\" "
	       "tab\\t nul\\u0000 \xf0\x9f\x98\x80 /\"}]}],"
	       "\"optins\":[],\"questionnaire\":[{\"score\":3,\"variable\":\"q\",\"responses\":[]}]"
	       "}",
	       "unmapped = form: generic entries after rule entries, in arrival order; escapes and "
	       "UTF-8 kept");
	is_int(r.n_unmapped, 4,
	       "four unmapped keys listed (helper and ignored keys count as named)");
	if (r.n_unmapped == 4) {
		is_str(r.unmapped[0], "zeta", "unmapped list in arrival order (1)");
		is_str(r.unmapped[3], "esc", "unmapped list in arrival order (4)");
	}
	is_int(r.unmapped_policy, MAPPING_UNMAPPED_FORM, "policy reported: form");
	mapping_result_clear(&r);
	free(got);

	got = map_flags(md, "{\"pid\":\"p\",\"extra\":\"x\"}", 0, &r, NULL);
	is_str(got, "{\"id\":\"p\"," NO_CAMPAIGN EMPTY_TAIL, "unmapped = drop leaves the key out");
	ok(r.n_unmapped == 1 && strcmp(r.unmapped[0], "extra") == 0, "dropped key still listed");
	is_int(r.unmapped_policy, MAPPING_UNMAPPED_DROP, "policy reported: drop");
	mapping_result_clear(&r);
	free(got);

	got = map_flags(mr, "{\"pid\":\"p\",\"a\":1,\"b\":2}", 0, NULL, &e);
	is_str(got, "ERR: unmapped v1 keys 'a', 'b' (unmapped = \"reject\")",
	       "unmapped = reject names the keys");
	is_str(e.key, "a", "reject error key is the first unmapped key");
	is_int(e.line, 2, "reject error names the unmapped setting's line");
	free(got);
	got = map(mr, "{\"pid\":\"p\",\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7}");
	is_str(got,
	       "ERR: unmapped v1 keys 'a', 'b', 'c', 'd', 'e' and 2 more (unmapped = \"reject\")",
	       "long reject list is bounded");
	free(got);
	check_map(mr, "{\"pid\":\"p\"}", "{\"id\":\"p\"," NO_CAMPAIGN EMPTY_TAIL,
		  "reject passes a fully mapped document");
out:
	mapping_free(mf);
	mapping_free(md);
	mapping_free(mr);
}

static const char *const stages_conf =
	"unmapped = \"form\";\n"
	"website_key = \"site\";\n"
	"fields = (\n"
	"  { to = \"campaign.id\"; from = \"campaign_id\"; },\n"
	"  { to = \"campaign.channel.website.id\"; from = \"site\"; },\n"
	"  { to = \"campaign.name\"; from = \"title\"; }\n"
	");\n"
	"variables = ( { section = \"form\"; variable = \"email\"; label = \"Email\"; } "
	");\n"
	"stages = (\n"
	"  { name = \"site 7\"; websites = [ 7, 8 ];\n" /* 10 */
	"    unmapped = \"drop\";\n"                    /* 11 */
	"    fields = ( { to = \"campaign.name\"; from = \"title\"; convert = \"upper\"; "
	"},\n" /* 12 */
	"               { to = \"campaign.type\"; value = \"SITE7\"; } );\n"
	"    variables = ( { section = \"form\"; variable = \"email\"; label = \"E-mail\"; "
	"} ); },\n"
	"  { name = \"campaign 99\"; campaigns = [ \"18446744073709551615\" ]; replace = "
	"true;\n" /* 15 */
	"    unmapped = \"reject\";\n"
	"    fields = ( { to = \"id\"; from = \"pid\"; } );\n"
	"    ignore = [ \"campaign_id\", \"site\" ]; },\n"
	"  { name = \"site 7 campaign 5\"; websites = [ 7 ]; campaigns = [ 5 ];\n" /* 19 */
	"    fields = ( { to = \"campaign.type\"; value = \"BOTH\"; } ); }\n"
	");\n";

static void test_stages(void)
{
	struct mapping *m = load_ok("stages.conf", stages_conf);
	struct mapping_result r;
	char *got;

	if (!m)
		return;
	check_map(m, "{\"site\":1,\"campaign_id\":2,\"title\":\"t\",\"email\":\"a@b\",\"x\":\"y\"}",
		  "{\"campaign\":{\"id\":2,\"name\":\"t\",\"themes\":[],\"channel\":{\"website\":{"
		  "\"id\":1}}},"
		  "\"form\":[{\"label\":\"Email\",\"variable\":\"email\",\"responses\":[{\"value\":"
		  "\"a@b\"}]},"
		  "{\"label\":\"x\",\"variable\":\"x\",\"responses\":[{\"value\":\"y\"}]}],"
		  "\"optins\":[],\"questionnaire\":[]}",
		  "no stage matches: base rules");
	check_map(m,
		  "{\"site\":\"0008\",\"campaign_id\":2,\"title\":\"t\",\"email\":\"a@b\",\"x\":"
		  "\"y\"}",
		  "{\"campaign\":{\"id\":2,\"name\":\"T\",\"type\":\"SITE7\",\"themes\":[],"
		  "\"channel\":{\"website\":{\"id\":8}}},"
		  "\"form\":[{\"label\":\"E-mail\",\"variable\":\"email\",\"responses\":[{"
		  "\"value\":\"a@b\"}]}],"
		  "\"optins\":[],\"questionnaire\":[]}",
		  "website stage: replaces rules in place, adds rules, overrides unmapped (ids "
		  "compared canonically)");
	got = map_flags(m,
			"{\"site\":7,\"campaign_id\":\"18446744073709551615\",\"pid\":\"p\","
			"\"title\":\"t\"}",
			0, NULL, NULL);
	is_str(got, "ERR: unmapped v1 key 'title' (unmapped = \"reject\")",
	       "campaign stage is more specific than a website stage; replace drops base rules");
	free(got);
	got = map_flags(m, "{\"site\":7,\"campaign_id\":\"18446744073709551615\",\"pid\":\"p\"}", 0,
			&r, NULL);
	is_str(got, "{\"id\":\"p\"," NO_CAMPAIGN EMPTY_TAIL, "replacing stage output");
	is_int(r.unmapped_policy, MAPPING_UNMAPPED_REJECT, "stage policy reported");
	mapping_result_clear(&r);
	free(got);
	check_map(m, "{\"site\":7,\"campaign_id\":5}",
		  "{\"campaign\":{\"id\":5,\"type\":\"BOTH\",\"themes\":[],\"channel\":{"
		  "\"website\":{\"id\":7}}},"
		  "\"form\":[],\"optins\":[],\"questionnaire\":[]}",
		  "a stage naming website and campaign wins over both");
	got = map(m, "{\"site\":\"abc\",\"campaign_id\":5}");
	ok(strncmp(got, "ERR: v1 key 'site': not an integer: \"abc\"", 41) == 0,
	   "non-integer selector matches no stage (the base rule then refuses it)");
	free(got);
	mapping_free(m);
}

static int has_trace(const struct mapping_result *r, const char *path, const char *from, int line,
		     const char *what)
{
	for (size_t i = 0; i < r->n_trace; i++) {
		const struct mapping_trace *t = &r->trace[i];

		if (strcmp(t->path, path) == 0 &&
		    (from ? t->from_key && strcmp(t->from_key, from) == 0 : !t->from_key) &&
		    t->line == line && strcmp(t->what, what) == 0 && t->file)
			return 1;
	}
	printf("#   no trace %s <- %s line %d \"%s\"; have:\n", path, from ? from : "-", line,
	       what);
	for (size_t i = 0; i < r->n_trace; i++)
		printf("#     %s <- %s %s:%d %s\n", r->trace[i].path,
		       r->trace[i].from_key ? r->trace[i].from_key : "-",
		       r->trace[i].file ? r->trace[i].file : "-", r->trace[i].line,
		       r->trace[i].what);
	return 0;
}

static void test_trace(void)
{
	struct mapping *mf = load_ok("trace-fields.conf", fields_conf);
	struct mapping *mv = load_ok("trace-vars.conf", vars_conf);
	struct mapping *mu = load_ok("trace-um.conf", "unmapped = \"form\";\n");
	struct mapping_result r;
	char *got;

	if (!mf || !mv || !mu)
		goto out;
	got = map_flags(mf,
			"{\"pid\":\"p\",\"status\":\"complete\",\"start\":\"2021-07-01 "
			"12:00:00\",\"cid\":\"7\"}",
			MAPPING_TRACE, &r, NULL);
	ok(got && got[0] == '{', "traced apply succeeds");
	ok(has_trace(&r, "id", "pid", 4, "upper"), "trace: copy with conversion");
	ok(has_trace(&r, "ip", NULL, 5, "constant"), "trace: constant");
	ok(has_trace(&r, "url", "url", 6, "default"), "trace: default names the absent key");
	ok(has_trace(&r, "campaign.id", "cid", 7, "integer"), "trace: integer");
	ok(has_trace(&r, "state", "status", 10, "copy, map complete->COMPLETED"),
	   "trace: value map");
	ok(has_trace(&r, "startedAt", "start", 12, "datetime Europe/Brussels"),
	   "trace: datetime names the zone");
	ok(has_trace(&r, "campaign.channel.website.id", "wid", 8, "default"),
	   "trace: integer default");
	is_int(r.n_trace, 7, "one trace record per written value");
	ok(r.trace && r.trace[0].file && strstr(r.trace[0].file, "trace-fields.conf"),
	   "trace names the rule file");
	mapping_result_clear(&r);
	free(got);

	got = map_flags(mf, "{\"pid\":\"p\"}", 0, &r, NULL);
	ok(r.trace == NULL && r.n_trace == 0, "no trace without MAPPING_TRACE");
	mapping_result_clear(&r);
	free(got);

	got = map_flags(mv,
			"{\"terms\":\"true\",\"gender\":\"f\",\"cv_url\":\"https://h/"
			"x.pdf\",\"q1\":\"A\",\"q1_score\":1,\"q1_ok\":0}",
			MAPPING_TRACE, &r, NULL);
	ok(has_trace(&r, "form[gender].responses[0].value", "gender", 5, "choice upper"),
	   "trace: choice");
	ok(has_trace(&r, "form[cv].responses[0].file", "cv_url", 8, "file"), "trace: file upload");
	ok(has_trace(&r, "form[lang].responses[0].value", NULL, 10, "default"),
	   "trace: variable default");
	ok(has_trace(&r, "optins[tos].response", "terms", 17, "optin"), "trace: opt-in");
	ok(has_trace(&r, "questionnaire[q1].score", "q1_score", 18, "integer"),
	   "trace: score helper key");
	ok(has_trace(&r, "questionnaire[q1].maxScore", NULL, 18, "constant"),
	   "trace: constant max score");
	ok(has_trace(&r, "questionnaire[q1].responses[0].isCorrect", "q1_ok", 18, "correct"),
	   "trace: correctness");
	mapping_result_clear(&r);
	free(got);

	got = map_flags(mu, "{\"k\":\"v\"}", MAPPING_TRACE, &r, NULL);
	ok(has_trace(&r, "form[k].responses[0].value", "k", 1, "unmapped:form"),
	   "trace: unmapped entry");
	mapping_result_clear(&r);
	free(got);
out:
	mapping_free(mf);
	mapping_free(mv);
	mapping_free(mu);
}

static void test_result_fields(void)
{
	struct mapping *ship = NULL;
	struct diag d = { 0 };
	struct mapping_result r;
	char *got;

	ok(mapping_load("mappings/qualifio-v1-to-v2.conf", &ship, &d) == 0,
	   "shipped mapping loads");
	if (d.text)
		printf("# %s", d.text);
	diag_reset(&d);
	if (!ship)
		return;
	is_str(mapping_path(ship), "mappings/qualifio-v1-to-v2.conf", "mapping_path");
	got = map_flags(ship,
			"{\"participation_id\":\"4b1e9345-1c0c-463f-82a0-e6857dbdfe80\",\"status\":"
			"\"Complete\","
			"\"campaign_id\":\"9007199254740993\",\"website_id\":18446744073709551615}",
			0, &r, NULL);
	is_str(r.participation_id, "4B1E9345-1C0C-463F-82A0-E6857DBDFE80",
	       "result: participation id as emitted");
	is_str(r.state, "COMPLETED", "result: state");
	is_str(r.campaign_id, "9007199254740993", "result: campaign id text");
	is_str(r.website_id, "18446744073709551615", "result: website id text");
	ok(r.len == strlen(r.body) && r.body[r.len] == '\0', "result: len matches body");
	mapping_result_clear(&r);
	free(got);
	got = map_flags(ship, "{\"participation_id\":\"x\"}", 0, &r, NULL);
	ok(r.state == NULL && r.website_id == NULL && r.campaign_id == NULL,
	   "result: absent values are NULL");
	mapping_result_clear(&r);
	mapping_result_clear(&r);
	ok(r.body == NULL, "mapping_result_clear twice is safe");
	free(got);
	mapping_free(ship);
}

struct thread_arg {
	const struct mapping *m;
	const char *want;
	int failures;
};

static void *thread_main(void *p)
{
	struct thread_arg *a = p;

	for (int i = 0; i < 300; i++) {
		char *got = map(a->m, "{\"pid\":\"a\",\"cid\":\"18446744073709551615\",\"start\":"
				      "\"2021-10-31 02:30:00\","
				      "\"status\":\"complete\"}");

		if (!got || strcmp(got, a->want) != 0)
			a->failures++;
		free(got);
	}
	return NULL;
}

static void test_threads(void)
{
	struct mapping *m = load_ok("threads.conf", fields_conf);
	struct thread_arg args[4];
	pthread_t th[4];
	char *want;
	int fails = 0;

	if (!m)
		return;
	want = map(m, "{\"pid\":\"a\",\"cid\":\"18446744073709551615\",\"start\":\"2021-10-31 "
		      "02:30:00\",\"status\":\"complete\"}");
	for (int i = 0; i < 4; i++) {
		args[i].m = m;
		args[i].want = want;
		args[i].failures = 0;
		pthread_create(&th[i], NULL, thread_main, &args[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		fails += args[i].failures;
	}
	is_int(fails, 0, "one mapping applied from four threads gives identical output");
	free(want);
	mapping_free(m);
}

int main(void)
{
	const char *base = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/test_mapping.XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	test_load_errors();
	test_include();
	test_fields();
	test_variables();
	test_unmapped();
	test_stages();
	test_trace();
	test_result_fields();
	test_threads();
	test_entry_parts();
	test_rule_parts();
	test_value_only();
	{
		char cmd[600];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			printf("# could not remove %s\n", tmpdir);
	}
	return tap_done();
}
