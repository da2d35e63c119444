/*
 * jsondiff: table-driven cases (documents a and b, ignore patterns, the
 * expected entries as "+ path: b", "- path: a", "~ path: a -> b" lines),
 * then errors, limits, provenance lookup and the JSON rendering.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "bridge/jsondiff.h"
#include "bridge/mapping.h"
#include "tap.h"

/* The entries as text lines, for comparing with a table's expectation. */
static char *listing(const struct jsondiff *d)
{
	size_t cap = 1, len = 0;
	char *s;

	for (size_t i = 0; i < d->n_entries; i++)
		cap += strlen(d->entries[i].path) + d->entries[i].a_len + d->entries[i].b_len + 16;
	s = malloc(cap);
	if (!s)
		return NULL;
	s[0] = '\0';
	for (size_t i = 0; i < d->n_entries; i++) {
		const struct jsondiff_entry *e = &d->entries[i];

		if (e->kind == JSONDIFF_ADDED)
			len += (size_t)snprintf(s + len, cap - len, "+ %s: %s\n", e->path, e->b);
		else if (e->kind == JSONDIFF_REMOVED)
			len += (size_t)snprintf(s + len, cap - len, "- %s: %s\n", e->path, e->a);
		else
			len += (size_t)snprintf(s + len, cap - len, "~ %s: %s -> %s\n", e->path,
						e->a, e->b);
	}
	return s;
}

#define V2_A                                                                                     \
	"{\"id\":\"P1\",\"state\":\"COMPLETED\",\"campaign\":{\"id\":123456,\"name\":\"Quiz\","  \
	"\"themes\":[{\"code\":\"T1\"},{\"code\":\"T2\"}],\"channel\":{\"uuid\":\"U\","          \
	"\"website\":{\"id\":1234,\"country\":\"BE\"}}},"                                        \
	"\"form\":[{\"id\":1001,\"variable\":\"lastname\",\"responses\":[{\"value\":\"Doe\"}]}," \
	"{\"id\":1003,\"variable\":\"email\",\"responses\":[{\"value\":\"a@example.com\"}]}],"   \
	"\"optins\":[{\"id\":2001,\"response\":\"1\",\"variable\":\"news\",\"categories\":[]}]," \
	"\"questionnaire\":[]}"

/* The same document: members and form entries in another order, other spacing. */
#define V2_A_REORDERED                                                                             \
	"{ \"state\": \"COMPLETED\", \"id\": \"P1\",\n"                                            \
	"  \"form\": [ "                                                                           \
	"{\"variable\":\"email\",\"id\":1003,\"responses\":[{\"value\":\"a@example.com\"}]},\n"    \
	"            {\"responses\":[{\"value\":\"Doe\"}],\"variable\":\"lastname\",\"id\":1001} " \
	"],\n"                                                                                     \
	"  \"questionnaire\": [],\n"                                                               \
	"  \"optins\": "                                                                           \
	"[{\"variable\":\"news\",\"categories\":[],\"response\":\"1\",\"id\":2001}],\n"            \
	"  \"campaign\": "                                                                         \
	"{\"channel\":{\"website\":{\"country\":\"BE\",\"id\":1234},\"uuid\":\"U\"},"              \
	"\"themes\":[{\"code\":\"T1\"},{\"code\":\"T2\"}],\"name\":\"Quiz\",\"id\":123456} }"

struct diff_case {
	const char *name;
	const char *a;
	const char *b;
	const char *ignore[4]; /* NULL-terminated */
	int leaves;
	const char *want; /* listing(); "" = equal */
};

static const struct diff_case cases[] = {
	{ "identical documents are equal", V2_A, V2_A, { NULL }, 0, "" },
	{ "reordered members and form/optins entries are equal",
	  V2_A,
	  V2_A_REORDERED,
	  { NULL },
	  0,
	  "" },
	{ "changed scalar",
	  "{\"state\":\"COMPLETED\"}",
	  "{\"state\":\"DONE\"}",
	  { NULL },
	  0,
	  "~ state: \"COMPLETED\" -> \"DONE\"\n" },
	{ "added and removed keys",
	  "{\"a\":1,\"b\":2}",
	  "{\"a\":1,\"c\":3}",
	  { NULL },
	  0,
	  "+ c: 3\n- b: 2\n" },
	{ "entries follow b's order, removed ones after",
	  "{\"z\":1,\"y\":2,\"x\":3}",
	  "{\"w\":0,\"x\":4,\"z\":1}",
	  { NULL },
	  0,
	  "+ w: 0\n~ x: 3 -> 4\n- y: 2\n" },
	{ "nested path",
	  "{\"campaign\":{\"channel\":{\"website\":{\"id\":1234}}}}",
	  "{\"campaign\":{\"channel\":{\"website\":{\"id\":1235}}}}",
	  { NULL },
	  0,
	  "~ campaign.channel.website.id: 1234 -> 1235\n" },
	{ "other arrays by index",
	  "{\"campaign\":{\"themes\":[{\"code\":\"T1\"},{\"code\":\"T2\"}]}}",
	  "{\"campaign\":{\"themes\":[{\"code\":\"T2\"},{\"code\":\"T1\"},{\"code\":\"T3\"}]}}",
	  { NULL },
	  0,
	  "~ campaign.themes[0].code: \"T1\" -> \"T2\"\n~ campaign.themes[1].code: \"T2\" -> "
	  "\"T1\"\n"
	  "+ campaign.themes[2]: {\"code\":\"T3\"}\n" },
	{ "form entry matched by variable",
	  V2_A,
	  "{\"id\":\"P1\",\"state\":\"COMPLETED\",\"campaign\":{\"id\":123456,\"name\":\"Quiz\","
	  "\"themes\":[{\"code\":\"T1\"},{\"code\":\"T2\"}],\"channel\":{\"uuid\":\"U\","
	  "\"website\":{\"id\":1234,\"country\":\"BE\"}}},"
	  "\"form\":[{\"id\":1003,\"variable\":\"email\",\"responses\":[{\"value\":\"b@example."
	  "com\"}]},"
	  "{\"id\":1007,\"variable\":\"mobile\",\"responses\":[]}],"
	  "\"optins\":[{\"id\":2001,\"response\":\"0\",\"variable\":\"news\",\"categories\":[]}],"
	  "\"questionnaire\":[]}",
	  { NULL },
	  0,
	  "~ form[email].responses[0].value: \"a@example.com\" -> \"b@example.com\"\n"
	  "+ form[mobile]: {\"id\":1007,\"variable\":\"mobile\",\"responses\":[]}\n"
	  "- form[lastname]: "
	  "{\"id\":1001,\"variable\":\"lastname\",\"responses\":[{\"value\":\"Doe\"}]}\n"
	  "~ optins[news].response: \"1\" -> \"0\"\n" },
	{ "leaves: a one-sided subtree is listed leaf by leaf",
	  "{\"form\":[]}",
	  "{\"form\":[{\"id\":1,\"variable\":\"v\",\"responses\":[{\"value\":\"x\"}]}],\"e\":{},"
	  "\"t\":[]}",
	  { NULL },
	  1,
	  "+ form[v].id: 1\n+ form[v].variable: \"v\"\n+ form[v].responses[0].value: \"x\"\n"
	  "+ e: {}\n+ t: []\n" },
	/* elements without a variable keep their relative order: "#0", "#1" */
	{ "repeated variables and entries without one",
	  "{\"form\":[{\"variable\":\"x\",\"n\":1},{\"variable\":\"x\",\"n\":2},{\"n\":3},{"
	  "\"variable\":7}]}",
	  "{\"form\":[{\"n\":3},{\"variable\":\"x\",\"n\":1},{\"variable\":7},{\"variable\":\"x\","
	  "\"n\":5}]}",
	  { NULL },
	  0,
	  "~ form[x#2].n: 2 -> 5\n" },
	{ "keyed matching only for root form/optins/questionnaire",
	  "{\"other\":[{\"variable\":\"a\"},{\"variable\":\"b\"}]}",
	  "{\"other\":[{\"variable\":\"b\"},{\"variable\":\"a\"}]}",
	  { NULL },
	  0,
	  "~ other[0].variable: \"a\" -> \"b\"\n~ other[1].variable: \"b\" -> \"a\"\n" },
	{ "numbers compare by text: 1 vs 1.0",
	  "{\"n\":1}",
	  "{\"n\":1.0}",
	  { NULL },
	  0,
	  "~ n: 1 -> 1.0\n" },
	{ "numbers compare by text: 100 vs 1e2",
	  "[100]",
	  "[1e2]",
	  { NULL },
	  0,
	  "~ [0]: 100 -> 1e2\n" },
	{ "numbers compare by text: 64-bit ids exact",
	  "{\"id\":18446744073709551615}",
	  "{\"id\":18446744073709551614}",
	  { NULL },
	  0,
	  "~ id: 18446744073709551615 -> 18446744073709551614\n" },
	{ "same big number is equal",
	  "{\"id\":18446744073709551615}",
	  "{\"id\":18446744073709551615}",
	  { NULL },
	  0,
	  "" },
	{ "type change string -> number",
	  "{\"id\":\"1\"}",
	  "{\"id\":1}",
	  { NULL },
	  0,
	  "~ id: \"1\" -> 1\n" },
	{ "type change object -> array",
	  "{\"x\":{\"a\":1}}",
	  "{\"x\":[1]}",
	  { NULL },
	  0,
	  "~ x: {\"a\":1} -> [1]\n" },
	{ "null, booleans",
	  "{\"a\":null,\"b\":true}",
	  "{\"a\":false,\"b\":true}",
	  { NULL },
	  0,
	  "~ a: null -> false\n" },
	{ "root scalar change has the empty path", "1", "2", { NULL }, 0, "~ : 1 -> 2\n" },
	{ "unicode: escapes equal raw UTF-8",
	  "{\"n\":\"\\u00e9t\\u00e9 \\ud83d\\ude00\",\"k\\u00e9\":1}",
	  "{\"n\":\"été 😀\",\"ké\":1}",
	  { NULL },
	  0,
	  "" },
	{ "unicode: different text, values re-escaped minimally",
	  "{\"ké\":\"été\"}",
	  "{\"ké\":\"\\u00e9t\\u00e8\\n\\u0001\"}",
	  { NULL },
	  0,
	  "~ ké: \"été\" -> \"étè\\n\\u0001\"\n" },
	{ "ignore form[*].id",
	  "{\"form\":[{\"id\":1,\"variable\":\"a\"},{\"id\":2,\"variable\":\"b\"}]}",
	  "{\"form\":[{\"id\":9,\"variable\":\"b\"},{\"id\":8,\"variable\":\"a\",\"x\":1}]}",
	  { "form[*].id", NULL },
	  0,
	  "+ form[a].x: 1\n" },
	{ "ignore campaign.channel.** (subtree and the node itself)",
	  "{\"campaign\":{\"id\":1,\"channel\":{\"uuid\":\"A\",\"website\":{\"id\":2}}}}",
	  "{\"campaign\":{\"id\":2,\"channel\":{\"uuid\":\"B\"}}}",
	  { "campaign.channel.**", NULL },
	  0,
	  "~ campaign.id: 1 -> 2\n" },
	{ "ignore ** matches zero segments",
	  "{\"campaign\":{\"channel\":1}}",
	  "{\"campaign\":{}}",
	  { "campaign.channel.**", NULL },
	  0,
	  "" },
	{ "ignore * matches exactly one segment",
	  "{\"campaign\":{\"id\":1,\"w\":{\"id\":1}},\"id\":1}",
	  "{\"campaign\":{\"id\":2,\"w\":{\"id\":2}},\"id\":2}",
	  { "*.id", NULL },
	  0,
	  "~ campaign.w.id: 1 -> 2\n~ id: 1 -> 2\n" },
	{ "ignore **.id at any depth",
	  "{\"campaign\":{\"id\":1,\"w\":{\"id\":1}},\"id\":1,\"x\":1}",
	  "{\"campaign\":{\"id\":2,\"w\":{\"id\":2}},\"id\":2,\"x\":2}",
	  { "**.id", NULL },
	  0,
	  "~ x: 1 -> 2\n" },
	{ "ignore a path ignores what is beneath it",
	  "{\"a\":{\"b\":1,\"c\":1},\"d\":1}",
	  "{\"a\":{\"b\":2},\"d\":2}",
	  { "a", NULL },
	  0,
	  "~ d: 1 -> 2\n" },
	{ "ignore [*] does not match members",
	  "{\"t\":[1,2],\"u\":{\"v\":1}}",
	  "{\"t\":[3,4],\"u\":{\"v\":2}}",
	  { "t[*]", "u[*]", NULL },
	  0,
	  "~ u.v: 1 -> 2\n" },
	{ "ignore by element index and by variable",
	  "{\"t\":[1,2],\"form\":[{\"variable\":\"a\",\"v\":1}]}",
	  "{\"t\":[3,2],\"form\":[{\"variable\":\"a\",\"v\":2}]}",
	  { "t[0]", "form[a].v", NULL },
	  0,
	  "" },
	{ "ignore patterns also apply leaf by leaf",
	  "{}",
	  "{\"form\":[{\"id\":1,\"variable\":\"a\"}]}",
	  { "form[*].id", NULL },
	  1,
	  "+ form[a].variable: \"a\"\n" },
	{ "ignore ** alone ignores everything", "{\"a\":1}", "[2]", { "**", NULL }, 0, "" },
};

static void run_cases(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct diff_case *tc = &cases[i];
		struct jsondiff_options opt = { 0 };
		struct jsondiff d;
		struct bridge_error err;
		size_t n_ignore = 0;
		char *got;
		int rc;

		while (tc->ignore[n_ignore])
			n_ignore++;
		opt.ignore = tc->ignore;
		opt.n_ignore = n_ignore;
		opt.leaves = tc->leaves;
		rc = jsondiff_compare(tc->a, strlen(tc->a), tc->b, strlen(tc->b), &opt, &d, &err);
		if (!ok(rc == 0, tc->name)) {
			printf("#   error: %s\n", err.message);
			continue;
		}
		got = listing(&d);
		is_str(got, tc->want, tc->name);
		/* the counts agree with the entries */
		{
			size_t add = 0, rem = 0, chg = 0;

			for (size_t j = 0; j < d.n_entries; j++)
				*(d.entries[j].kind == JSONDIFF_ADDED     ? &add
				  : d.entries[j].kind == JSONDIFF_REMOVED ? &rem
									  : &chg) += 1;
			ok(add == d.n_added && rem == d.n_removed && chg == d.n_changed &&
				   !d.truncated,
			   "counts match the entries");
		}
		free(got);
		jsondiff_clear(&d);
	}
}

struct error_case {
	const char *name;
	const char *a;
	size_t alen; /* 0: strlen */
	const char *b;
	size_t blen;
	const char *ignore;
	const char *want; /* substring of the message */
	long offset;      /* -2: do not check */
};

static const struct error_case errors[] = {
	{ "invalid JSON in b names b and the byte", "{}", 0, "{\"a\":1,}", 0, NULL,
	  "b: invalid JSON at byte", -2 },
	{ "invalid JSON in a names a", "{\"a\" 1}", 0, "{}", 0, NULL, "a: invalid JSON at byte",
	  -2 },
	{ "comments are not JSON", "{}", 0, "{/* c */}", 0, NULL, "b: invalid JSON", -2 },
	{ "trailing garbage", "{} {}", 0, "{}", 0, NULL, "a: invalid JSON", -2 },
	{ "embedded NUL byte", "{\"a\":\"x\0y\"}", 11, "{}", 0, NULL,
	  "a: invalid JSON at byte 7: embedded NUL", 7 },
	{ "duplicate key", "{}", 0, "{\"k\":1,\"j\":2,\"k\":3}", 0, NULL,
	  "b: invalid JSON at byte 19: duplicate key \"k\"", 19 },
	{ "empty document", "", 0, "{}", 0, NULL, "a: invalid JSON", -2 },
	{ "invalid UTF-8", "{}", 0, "{\"a\":\"\xff\"}", 0, NULL, "b: invalid JSON", -2 },
	{ "unclosed ignore bracket", "{}", 0, "{}", 0, "form[*.id", "unclosed [", -2 },
	{ "empty ignore segment", "{}", 0, "{}", 0, "form..id", "empty segment", -2 },
	{ "empty ignore pattern", "{}", 0, "{}", 0, "", "empty", -2 },
};

static void run_errors(void)
{
	for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
		const struct error_case *tc = &errors[i];
		const char *ign[1] = { tc->ignore };
		struct jsondiff_options opt = { .ignore = ign, .n_ignore = tc->ignore ? 1 : 0 };
		struct jsondiff d;
		struct bridge_error err;
		int rc = jsondiff_compare(tc->a, tc->alen ? tc->alen : strlen(tc->a), tc->b,
					  tc->blen ? tc->blen : strlen(tc->b), &opt, &d, &err);

		ok(rc == -1, tc->name);
		if (!ok(strstr(err.message, tc->want) != NULL, "message names the problem")) {
			printf("#   got: %s\n#   want: %s\n", err.message, tc->want);
		}
		if (tc->offset != -2)
			is_int(err.offset, tc->offset, "error offset");
		ok(d.n_entries == 0 && d.entries == NULL,
		   "nothing left in the result after an error");
		jsondiff_clear(&d);
	}
}

static void run_limits(void)
{
	struct jsondiff_options opt = { 0 };
	struct jsondiff d;
	struct bridge_error err;
	char deep[300], many_a[4096], many_b[4096];
	size_t n = 0, la = 0, lb = 0;
	int rc;

	/* depth: 64 by default, the root counts 1 */
	for (int i = 0; i < 65; i++)
		deep[n++] = '[';
	for (int i = 0; i < 65; i++)
		deep[n++] = ']';
	rc = jsondiff_compare("[]", 2, deep, n, NULL, &d, &err);
	ok(rc == -1 && strstr(err.message, "b: invalid JSON at byte 65: nested deeper than 64"),
	   "65 levels over the default depth of 64");
	printf("#   %s\n", err.message);
	rc = jsondiff_compare(deep + 1, n - 2, deep + 1, n - 2, NULL, &d, &err);
	ok(rc == 0 && d.n_entries == 0, "64 levels are accepted");
	jsondiff_clear(&d);
	opt.max_depth = 3;
	rc = jsondiff_compare("[[[1]]]", 7, "[[[[1]]]]", 9, &opt, &d, &err);
	ok(rc == -1 && strstr(err.message, "nested deeper than 3"), "max_depth is honoured");

	/* entries: counting goes on past max_entries */
	la = (size_t)snprintf(many_a, sizeof(many_a), "[");
	lb = (size_t)snprintf(many_b, sizeof(many_b), "[");
	for (int i = 0; i < 50; i++) {
		la += (size_t)snprintf(many_a + la, sizeof(many_a) - la, "%s%d", i ? "," : "", i);
		lb += (size_t)snprintf(many_b + lb, sizeof(many_b) - lb, "%s%d", i ? "," : "",
				       i + 1);
	}
	many_a[la++] = ']';
	many_b[lb++] = ']';
	memset(&opt, 0, sizeof(opt));
	opt.max_entries = 5;
	rc = jsondiff_compare(many_a, la, many_b, lb, &opt, &d, &err);
	ok(rc == 0, "max_entries: compare succeeds");
	is_int(d.n_entries, 5, "max_entries: 5 entries kept");
	is_int(d.n_changed, 50, "max_entries: all 50 differences counted");
	ok(d.truncated, "max_entries: truncated is set");
	jsondiff_clear(&d);

	/* input and memory ceilings */
	memset(&opt, 0, sizeof(opt));
	opt.max_input = 10;
	rc = jsondiff_compare("{}", 2, "{\"abcdefgh\":1}", 14, &opt, &d, &err);
	ok(rc == -1 && strstr(err.message, "b: larger than 10 bytes"), "max_input");
	memset(&opt, 0, sizeof(opt));
	opt.max_memory = 1000;
	rc = jsondiff_compare(many_a, la, many_b, lb, &opt, &d, &err);
	ok(rc == -1 && strstr(err.message, "memory"), "max_memory");
	printf("#   %s\n", err.message);
	ok(d.entries == NULL, "max_memory: result empty");

	/* names in messages */
	memset(&opt, 0, sizeof(opt));
	opt.name_a = "translated";
	opt.name_b = "real.json";
	rc = jsondiff_compare("{}", 2, "{", 1, &opt, &d, &err);
	ok(rc == -1 && strncmp(err.message, "real.json: invalid JSON", 23) == 0,
	   "name_b used in the message");
	printf("#   %s\n", err.message);
}

static void run_trace(void)
{
	static struct mapping_trace t[] = {
		{ .path = "id",
		  .from_key = "participation_id",
		  .file = "r.conf",
		  .line = 10,
		  .what = "upper" },
		{ .path = "form[gender].responses[0].value",
		  .from_key = "gender",
		  .file = "r.conf",
		  .line = 20,
		  .what = "choice" },
		{ .path = "form[upload].responses[0].file",
		  .from_key = "upload",
		  .file = "r.conf",
		  .line = 30,
		  .what = "file" },
		{ .path = "campaign.themes[0].code",
		  .from_key = "theme_code",
		  .file = "r.conf",
		  .line = 40,
		  .what = "copy" },
		{ .path = "form[gender2].responses[0].value",
		  .from_key = "g2",
		  .file = "r.conf",
		  .line = 50,
		  .what = "copy" },
	};
	static const struct {
		const char *path;
		enum jsondiff_trace_match match;
		int line;
	} want[] = {
		{ "id", JSONDIFF_TRACE_EXACT, 10 },
		{ "form[gender].responses[0].value", JSONDIFF_TRACE_EXACT, 20 },
		{ "form[gender].responses[0].label", JSONDIFF_TRACE_ENTRY, 20 },
		{ "form[gender].id", JSONDIFF_TRACE_ENTRY, 20 },
		{ "form[upload].responses[0].file.name", JSONDIFF_TRACE_INSIDE, 30 },
		{ "form[gender2].label", JSONDIFF_TRACE_ENTRY, 50 },
		{ "form[lastname].id", JSONDIFF_TRACE_NONE, 0 },
		{ "campaign.themes[0].description", JSONDIFF_TRACE_NONE, 0 },
		{ "campaign.themes", JSONDIFF_TRACE_NONE, 0 },
		{ "idx", JSONDIFF_TRACE_NONE, 0 },
	};
	struct jsondiff d;
	struct bridge_error err;
	struct evbuffer *out;
	size_t n_t = sizeof(t) / sizeof(t[0]);
	char *text;
	static const char a[] =
		"{\"id\":\"A\",\"form\":[{\"variable\":\"gender\",\"label\":\"G\"}]}";
	static const char b[] = "{\"id\":\"B\",\"x\":\"\\\"q\\\"\",\"form\":[]}";

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		enum jsondiff_trace_match m;
		const struct mapping_trace *r = jsondiff_trace_find(t, n_t, want[i].path, &m);
		char name[160];

		snprintf(name, sizeof(name), "trace_find %s", want[i].path);
		is_int(m, want[i].match, name);
		is_int(r ? r->line : 0, want[i].line, name);
	}

	/* attribute + render: a removed value is looked up in a's trace, an
	 * added or changed one in b's, falling back to the other side. */
	if (jsondiff_compare(a, strlen(a), b, strlen(b), NULL, &d, &err) < 0) {
		ok(0, "compare for attribute");
		printf("#   %s\n", err.message);
		return;
	}
	ok(jsondiff_attribute(&d, t, n_t, NULL, 0, &err) == 0, "attribute succeeds");
	is_int(d.n_entries, 3, "three entries");
	is_str(d.entries[0].rule, "r.conf:10", "changed id: rule from a's trace (fallback)");
	is_str(d.entries[0].from, "participation_id", "changed id: from key");
	is_str(d.entries[1].rule, NULL, "added x: no rule");
	is_str(d.entries[2].rule, "r.conf:20", "removed form[gender]: the entry's rule");
	is_str(d.entries[2].what, "attribute of the variable rule", "removed form[gender]: what");
	out = evbuffer_new();
	ok(jsondiff_render_json(&d, out, &err) == 0, "render succeeds");
	evbuffer_add(out, "", 1);
	text = (char *)evbuffer_pullup(out, -1);
	is_str(text,
	       "[{\"kind\":\"changed\",\"path\":\"id\",\"a\":\"A\",\"b\":\"B\",\"rule\":\"r.conf:"
	       "10\","
	       "\"from\":\"participation_id\",\"what\":\"upper\"},"
	       "{\"kind\":\"added\",\"path\":\"x\",\"b\":\"\\\"q\\\"\"},"
	       "{\"kind\":\"removed\",\"path\":\"form[gender]\",\"a\":{\"variable\":\"gender\","
	       "\"label\":\"G\"},"
	       "\"rule\":\"r.conf:20\",\"what\":\"attribute of the variable rule\"}]",
	       "rendered JSON array");
	evbuffer_free(out);
	jsondiff_clear(&d);
	jsondiff_clear(&d);
	jsondiff_clear(NULL); /* twice and on NULL: a crash fails the program */

	out = evbuffer_new();
	memset(&d, 0, sizeof(d));
	ok(jsondiff_render_json(&d, out, &err) == 0 && evbuffer_get_length(out) == 2,
	   "empty diff renders []");
	evbuffer_free(out);
	is_str(jsondiff_kind_name(JSONDIFF_ADDED), "added", "kind names");
	is_str(jsondiff_kind_name(JSONDIFF_REMOVED), "removed", "kind names");
	is_str(jsondiff_kind_name(JSONDIFF_CHANGED), "changed", "kind names");
}

/* No shared state: the same comparison from several threads at once gives
 * the same listing every time. */
#define N_THREADS 4
#define N_ROUNDS  200

static void *thread_run(void *arg)
{
	const struct diff_case *tc = &cases[7]; /* form entry matched by variable */
	const char *ign[] = { "campaign.**" };
	struct jsondiff_options opt = { .ignore = ign, .n_ignore = 1, .leaves = 1 };
	long bad = 0;
	char *first = NULL;

	(void)arg;
	for (int i = 0; i < N_ROUNDS; i++) {
		struct jsondiff d;
		struct bridge_error err;
		char *got;

		if (jsondiff_compare(tc->a, strlen(tc->a), tc->b, strlen(tc->b), &opt, &d, &err) <
		    0) {
			bad++;
			continue;
		}
		got = listing(&d);
		if (!first)
			first = got;
		else if (!got || strcmp(got, first) != 0)
			bad++;
		if (got != first)
			free(got);
		jsondiff_clear(&d);
	}
	bad += !first || !strstr(first, "form[mobile].id");
	free(first);
	return (void *)bad;
}

static void run_threads(void)
{
	pthread_t th[N_THREADS];
	long bad = 0;

	for (int i = 0; i < N_THREADS; i++)
		if (pthread_create(&th[i], NULL, thread_run, NULL) != 0)
			bad++;
	for (int i = 0; i < N_THREADS; i++) {
		void *r;

		pthread_join(th[i], &r);
		bad += (long)r;
	}
	is_int(bad, 0, "4 threads x 200 comparisons agree");
}

/* A variable named like a made label ("country#2") beside two "country"
 * elements (found by fuzz_jsondiff): each element keeps a label of its own,
 * so a document equals itself and a change is found where it is. */
static void run_label_collision(void)
{
	static const char a[] =
		"{\"form\":[{\"variable\":\"country#2\",\"v\":1},"
		"{\"variable\":\"country\",\"v\":2},{\"variable\":\"country\",\"v\":3},"
		"{\"variable\":\"#0\",\"v\":4},{\"v\":5}]}";
	static const char b[] =
		"{\"form\":[{\"variable\":\"country#2\",\"v\":1},"
		"{\"variable\":\"country\",\"v\":2},{\"variable\":\"country\",\"v\":9},"
		"{\"variable\":\"#0\",\"v\":4},{\"v\":5}]}";
	struct jsondiff d;
	struct bridge_error err;

	bridge_error_clear(&err);
	ok(jsondiff_compare(a, strlen(a), a, strlen(a), NULL, &d, &err) == 0 &&
		   d.n_added + d.n_removed + d.n_changed == 0,
	   "label collision: a document equals itself");
	jsondiff_clear(&d);
	ok(jsondiff_compare(a, strlen(a), b, strlen(b), NULL, &d, &err) == 0 && d.n_changed == 1 &&
		   d.n_added + d.n_removed == 0,
	   "label collision: one change found");
	jsondiff_clear(&d);
}

int main(void)
{
	run_cases();
	run_label_collision();
	run_errors();
	run_limits();
	run_trace();
	run_threads();
	return tap_done();
}
