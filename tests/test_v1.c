/*
 * v1 parsing: table-driven cases (input / expected outcome), then the
 * document shape for the accepted ones.  Run under ASan/LSan, every
 * rejection also proves its error path frees what was built.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/v1.h"
#include "tap.h"
#include "v1_same.h"

#define NO_OFFSET (-2) /* do not check err.offset */

struct reject_case {
	const char *name;
	const char *body;
	size_t len;          /* 0: strlen(body) */
	const char *message; /* expected substring of err.message */
	long offset;         /* expected err.offset, or NO_OFFSET */
	const char *key;     /* expected err.key, or NULL */
};

static const struct reject_case json_rejects[] = {
	/* syntax (yajl) */
	{ "empty body", "", 0, "invalid JSON at byte 0: premature EOF", 0, NULL },
	{ "blank body", "  \n", 0, "invalid JSON at byte 3: premature EOF", 3, NULL },
	{ "truncated after colon", "{\"a\":", 0, "invalid JSON at byte 5: premature EOF", 5, NULL },
	{ "truncated in string", "{\"a\":\"abc", 0, "invalid JSON at byte", NO_OFFSET, NULL },
	{ "truncated object", "{\"a\":1", 0, "invalid JSON at byte 6: premature EOF", 6, NULL },
	{ "missing value", "{\"a\":}", 0, "invalid JSON at byte", NO_OFFSET, NULL },
	{ "block comment", "{\"a\":1 /* c */}", 0, "invalid JSON at byte 7: probable comment found",
	  7, NULL },
	{ "line comment", "// c\n{\"a\":1}", 0, "invalid JSON at byte 0: probable comment found", 0,
	  NULL },
	{ "trailing garbage", "{\"a\":1} x", 0, "invalid JSON at byte 9: trailing garbage", 9,
	  NULL },
	{ "second document", "{\"a\":1}{\"b\":2}", 0, "trailing garbage", NO_OFFSET, NULL },
	{ "NaN", "{\"a\":NaN}", 0, "invalid JSON at byte 6: invalid char in json text", 6, NULL },
	{ "Infinity", "{\"a\":Infinity}", 0, "invalid JSON at byte", NO_OFFSET, NULL },
	{ "-Infinity", "{\"a\":-Infinity}", 0, "invalid JSON at byte", NO_OFFSET, NULL },
	{ "leading zero", "{\"a\":01}", 0, "invalid JSON at byte", NO_OFFSET, NULL },
	{ "plus sign", "{\"a\":+1}", 0, "invalid JSON at byte", NO_OFFSET, NULL },
	{ "bare fraction dot", "{\"a\":1.}", 0, "invalid JSON at byte", NO_OFFSET, NULL },
	{ "single quotes", "{'a':1}", 0, "invalid JSON at byte", NO_OFFSET, NULL },
	{ "unquoted key", "{a:1}", 0, "invalid JSON at byte", NO_OFFSET, NULL },
	{ "trailing comma", "{\"a\":1,}", 0, "invalid JSON at byte", NO_OFFSET, NULL },
	{ "raw control char in string", "{\"a\":\"x\ty\"}", 0, "invalid JSON at byte", NO_OFFSET,
	  NULL },
	{ "bad escape", "{\"a\":\"\\q\"}", 0, "invalid JSON at byte", NO_OFFSET, NULL },
	/* yajl reports the bytes it consumed: at or just past the bad byte */
	{ "UTF-8 BOM", "\xef\xbb\xbf{\"a\":1}", 0,
	  "invalid JSON at byte 1: invalid char in json text", 1, NULL },
	/* raw bytes */
	{ "embedded NUL", "{\"a\":\"x\0y\"}", 11, "invalid JSON at byte 7: embedded NUL byte", 7,
	  NULL },
	{ "NUL after document", "{\"a\":1}\0", 8, "embedded NUL byte", 7, NULL },
	{ "invalid UTF-8 byte", "{\"a\":\"\xff\"}", 0,
	  "invalid JSON at byte 7: invalid bytes in UTF8 string", 7, NULL },
	{ "overlong UTF-8", "{\"a\":\"\xc0\xaf\"}", 0, "not valid UTF-8", 5, "a" },
	{ "UTF-8 encoded surrogate", "{\"a\":\"\xed\xa0\x80\"}", 0, "not valid UTF-8", 5, "a" },
	{ "above U+10FFFF", "{\"a\":\"\xf4\x90\x80\x80\"}", 0, "not valid UTF-8", 5, "a" },
	{ "invalid UTF-8 in key", "{\"k\xc0\x80\":1}", 0, "is not valid UTF-8", 1, NULL },
	{ "lone high surrogate escape", "{\"a\":\"x\\ud800\"}", 0, "unpaired UTF-16 surrogate", 7,
	  "a" },
	{ "lone low surrogate escape", "{\"a\":\"\\udc00\"}", 0, "unpaired UTF-16 surrogate", 6,
	  "a" },
	{ "high surrogate + non-low escape", "{\"a\":\"\\ud83d\\u0041\"}", 0,
	  "unpaired UTF-16 surrogate", 6, "a" },
	{ "surrogate escape in key", "{\"\\ud800\":1}", 0, "unpaired UTF-16 surrogate", 2, NULL },
	/* shape */
	{ "top-level array", "[1]", 0, "must be a JSON object, found an array at byte 0", 0, NULL },
	{ "top-level string", " \"x\"", 0, "must be a JSON object, found a scalar at byte 1", 1,
	  NULL },
	{ "top-level number", "42", 0, "must be a JSON object, found a scalar at byte 0", 0, NULL },
	{ "top-level null", "null", 0, "must be a JSON object", 0, NULL },
	{ "nested object", "{\"ok\":1,\"a\":{\"b\":1}}", 0,
	  "value of key 'a' is an object at byte 12", 12, "a" },
	{ "array inside array", "{\"list\":[1,[2]]}", 0,
	  "array of key 'list' contains an array at byte 11", 11, "list" },
	{ "object inside array", "{\"list\":[{\"b\":1}]}", 0,
	  "array of key 'list' contains an object at byte 9", 9, "list" },
	{ "duplicate key", "{\"a\":1,\"b\":2,\"a\":3}", 0, "duplicate key 'a' at byte 13", 13,
	  "a" },
	{ "duplicate key via escape", "{\"\\u00e9\":1,\"\xc3\xa9\":2}", 0,
	  "duplicate key '\xc3\xa9'", 12, "\xc3\xa9" },
	{ "key containing NUL", "{\"a\\u0000b\":1}", 0, "contains a NUL character", 1,
	  "a\\u0000b" },
	{ "key with quote is rendered escaped", "{\"q\\\"'\":{}}", 0, "key 'q\"\\''", NO_OFFSET,
	  NULL },
	{ "key control chars rendered", "{\"c\\n\":{}}", 0, "key 'c\\n'", NO_OFFSET, NULL },
};

static const struct reject_case form_rejects[] = {
	{ "bad escape", "a=%zz", 0, "invalid form data at byte 2", 2, NULL },
	{ "escape with one hex digit", "a=1&b=%4", 0, "invalid form data at byte 6", 6, NULL },
	{ "lone percent", "a=%", 0, "invalid form data at byte 2", 2, NULL },
	{ "bad escape in key", "ok=1&k%G1=x", 0, "invalid form data at byte 6", 6, NULL },
	{ "invalid UTF-8 value", "a=%ff", 0, "value of key 'a' at byte 2 is not valid UTF-8", 2,
	  "a" },
	{ "overlong UTF-8", "a=%c0%af", 0, "not valid UTF-8", 2, "a" },
	{ "encoded surrogate", "a=%ed%a0%80", 0, "not valid UTF-8", 2, "a" },
	{ "truncated sequence", "a=%e2%82", 0, "not valid UTF-8", 2, "a" },
	{ "raw invalid byte", "a=x\xfe", 0, "not valid UTF-8", 2, "a" },
	{ "invalid UTF-8 key", "x=1&%ff=1", 0, "at byte 4 is not valid UTF-8", 4, NULL },
	{ "key containing NUL", "a%00b=1", 0, "contains a NUL character", 0, "a\\u0000b" },
	{ "raw NUL byte", "a=1&b=\0", 7, "invalid form data at byte 6: embedded NUL byte", 6,
	  NULL },
};

static void check_reject(int is_json, const struct reject_case *c, const struct v1_limits *lim)
{
	struct v1_doc *doc = (struct v1_doc *)1;
	struct bridge_error err;
	size_t len = c->len ? c->len : strlen(c->body);
	char name[256];
	int rc;

	rc = is_json ? v1_parse_json(c->body, len, lim, &doc, &err)
		     : v1_parse_form(c->body, len, lim, &doc, &err);
	snprintf(name, sizeof(name), "%s %s: rejected", is_json ? "json" : "form", c->name);
	if (!ok(rc == -1 && doc == NULL, name))
		return;
	snprintf(name, sizeof(name), "%s %s: message", is_json ? "json" : "form", c->name);
	if (!ok(strstr(err.message, c->message) != NULL, name)) {
		printf("#   got:  \"%s\"\n", err.message);
		printf("#   want: \"...%s...\"\n", c->message);
	}
	if (c->offset != NO_OFFSET) {
		snprintf(name, sizeof(name), "%s %s: offset", is_json ? "json" : "form", c->name);
		is_int(err.offset, c->offset, name);
	}
	if (c->key) {
		snprintf(name, sizeof(name), "%s %s: key", is_json ? "json" : "form", c->name);
		is_str(err.key, c->key, name);
	}
}

/* Expect an accepted document; returns NULL (after a failed check) otherwise. */
static struct v1_doc *parse_ok(int is_json, const char *body, size_t len,
			       const struct v1_limits *lim, const char *name)
{
	struct v1_doc *doc = NULL;
	struct bridge_error err;
	int rc;

	rc = is_json ? v1_parse_json(body, len, lim, &doc, &err)
		     : v1_parse_form(body, len, lim, &doc, &err);
	if (!ok(rc == 0 && doc != NULL, name)) {
		printf("#   error: %s (offset %ld)\n", err.message, err.offset);
		return NULL;
	}
	return doc;
}

static int value_is(const struct v1_value *v, enum v1_type type, const char *bytes, size_t len)
{
	return v && v->type == type && v->len == len && v->text &&
	       memcmp(v->text, bytes, len) == 0 && v->text[len] == '\0';
}

static const struct v1_value *field(const struct v1_doc *d, const char *key)
{
	const struct v1_field *f = v1_doc_get(d, key);

	return f ? &f->value : NULL;
}

static void test_json_values(void)
{
	static const char body[] =
		" {\"s\":\"x\",\"n\":12,\"t\":true,\"f\":false,\"z\":null,"
		"\"arr\":[1,\"two\",null,false,-0.5e-3],\"empty\":[],\"\":\"empty key\"} \n";
	struct v1_doc *d = parse_ok(1, body, strlen(body), NULL,
				    "json scalars and arrays accepted");
	const struct v1_value *arr;

	if (!d)
		return;
	is_int(d->n_fields, 8, "eight fields");
	ok(strcmp(d->fields[0].key, "s") == 0 && strcmp(d->fields[5].key, "arr") == 0 &&
		   d->fields[5].key_len == 3,
	   "fields keep arrival order");
	ok(value_is(field(d, "s"), V1_STRING, "x", 1), "string value");
	ok(value_is(field(d, "n"), V1_NUMBER, "12", 2), "number value as text");
	ok(value_is(field(d, "t"), V1_BOOL, "true", 4), "true");
	ok(value_is(field(d, "f"), V1_BOOL, "false", 5), "false");
	ok(value_is(field(d, "z"), V1_NULL, "", 0), "null is empty text");
	ok(value_is(field(d, ""), V1_STRING, "empty key", 9), "empty key is a key");
	arr = field(d, "arr");
	ok(arr && arr->type == V1_ARRAY && arr->n_items == 5, "array of five scalars");
	if (arr && arr->n_items == 5) {
		ok(value_is(&arr->items[0], V1_NUMBER, "1", 1) &&
			   value_is(&arr->items[1], V1_STRING, "two", 3) &&
			   value_is(&arr->items[2], V1_NULL, "", 0) &&
			   value_is(&arr->items[3], V1_BOOL, "false", 5) &&
			   value_is(&arr->items[4], V1_NUMBER, "-0.5e-3", 7),
		   "array items typed and in order");
	}
	arr = field(d, "empty");
	ok(arr && arr->type == V1_ARRAY && arr->n_items == 0 && arr->text && arr->len == 0,
	   "empty array");
	is_int(v1_doc_index(d, "z"), 4, "v1_doc_index finds position");
	is_int(v1_doc_index(d, "missing"), -1, "v1_doc_index of absent key");
	ok(v1_doc_get(d, "missing") == NULL, "v1_doc_get of absent key");
	ok(v1_doc_get(d, "S") == NULL, "v1_doc_get is case-sensitive");
	v1_doc_free(d);
	v1_doc_free(NULL);
}

static void test_json_bytes(void)
{
	static const struct {
		const char *json;
		const char *bytes;
		size_t len;
		const char *name;
	} cases[] = {
		{ "\"\\u00e9\"", "\xc3\xa9", 2, "\\u00e9 -> C3 A9" },
		{ "\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80", 4, "surrogate pair -> F0 9F 98 80" },
		{ "\"\\uD83D\\uDE00\"", "\xf0\x9f\x98\x80", 4, "upper-case surrogate pair" },
		{ "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
		  "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, "raw UTF-8 kept byte-exact" },
		{ "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t", 8, "simple escapes" },
		{ "\"a\\u0000b\"", "a\0b", 3, "\\u0000 inside a value is kept (len counts it)" },
		{ "\"\\u20ac\"", "\xe2\x82\xac", 3, "\\u20ac -> E2 82 AC" },
		{ "\"\\uffff\"", "\xef\xbf\xbf", 3, "\\uffff (noncharacter, valid UTF-8)" },
		{ "\"\"", "", 0, "empty string" },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char body[128];
		struct v1_doc *d;

		snprintf(body, sizeof(body), "{\"v\":%s}", cases[i].json);
		d = parse_ok(1, body, strlen(body), NULL, cases[i].name);
		if (!d)
			continue;
		ok(value_is(field(d, "v"), V1_STRING, cases[i].bytes, cases[i].len), cases[i].name);
		v1_doc_free(d);
	}
}

static void test_json_numbers(void)
{
	static const char *nums[] = {
		"123456789012345678901234567890",
		"-0",
		"9223372036854775807",
		"9223372036854775808",
		"-9223372036854775808",
		"18446744073709551616",
		"0.1",
		"1e400",
		"-1.5E-7",
		"0",
	};
	size_t i;

	for (i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		char body[128], name[128];
		struct v1_doc *d;

		snprintf(body, sizeof(body), "{\"n\":%s}", nums[i]);
		snprintf(name, sizeof(name), "number %s kept as text", nums[i]);
		d = parse_ok(1, body, strlen(body), NULL, name);
		if (!d)
			continue;
		ok(value_is(field(d, "n"), V1_NUMBER, nums[i], strlen(nums[i])), name);
		v1_doc_free(d);
	}
}

static char *repeat(const char *head, const char *unit, size_t n, const char *tail)
{
	size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail), i;
	char *s = malloc(hl + ul * n + tl + 1);

	if (!s)
		abort();
	memcpy(s, head, hl);
	for (i = 0; i < n; i++)
		memcpy(s + hl + i * ul, unit, ul);
	memcpy(s + hl + n * ul, tail, tl + 1);
	return s;
}

static void test_json_depth(void)
{
	struct v1_limits lim;
	struct v1_doc *d = NULL;
	struct bridge_error err;
	char *s;

	s = repeat("", "[", 100000, "");
	ok(v1_parse_json(s, strlen(s), NULL, &d, &err) == -1 && d == NULL,
	   "100000 nested [ rejected without crash");
	ok(strstr(err.message, "found an array at byte 0") != NULL, "deep [ : top level named");
	free(s);

	s = repeat("{\"a\":", "[", 100000, "");
	ok(v1_parse_json(s, strlen(s), NULL, &d, &err) == -1 && d == NULL,
	   "object holding 100000 nested [ rejected");
	is_str(err.message,
	       "array of key 'a' contains an array at byte 6: only scalars are allowed in arrays",
	       "deep array inside key: message");
	free(s);

	s = repeat("{\"a\":", "{\"a\":", 100000, "");
	ok(v1_parse_json(s, strlen(s), NULL, &d, &err) == -1 && d == NULL,
	   "100000 nested objects rejected");
	is_int(err.offset, 5, "nested objects: offset of the first inner {");
	free(s);

	v1_limits_default(&lim);
	lim.max_depth = 1;
	ok(v1_parse_json("{\"a\":[1]}", 9, &lim, &d, &err) == -1,
	   "max_depth 1 rejects an array value");
	is_str(err.message, "nesting deeper than 1 at byte 5", "max_depth message and offset");
	is_int(err.offset, 5, "max_depth offset");
	lim.max_depth = 0;
	ok(v1_parse_json("{}", 2, &lim, &d, &err) == -1, "max_depth 0 rejects the top object");
	is_str(err.message, "nesting deeper than 0 at byte 0", "max_depth 0 message");
	lim.max_depth = 2;
	d = parse_ok(1, "{\"a\":[1]}", 9, &lim, "max_depth 2 allows an array value");
	v1_doc_free(d);
	d = NULL;
	s = repeat("", "[", 100000, "");
	ok(v1_parse_json(s, strlen(s), &lim, &d, &err) == -1, "deep [ with limit 2 rejected");
	free(s);
}

static void test_json_limits(void)
{
	struct v1_limits lim, dflt;
	struct v1_doc *d = NULL;
	struct bridge_error err;
	char *s, *p;
	size_t i;

	v1_limits_default(&dflt);
	ok(dflt.max_depth == 8 && dflt.max_keys == 1000 && dflt.max_string == 65536 &&
		   dflt.max_items == 1000,
	   "default limits");

	lim = dflt;
	lim.max_keys = 2;
	d = parse_ok(1, "{\"a\":1,\"b\":2}", 13, &lim, "max_keys 2: two keys ok");
	v1_doc_free(d);
	ok(v1_parse_json("{\"a\":1,\"b\":2,\"c\":3}", 19, &lim, &d, &err) == -1,
	   "max_keys 2: third key rejected");
	is_str(err.message, "more than 2 keys in the object (key 'c' at byte 13)",
	       "max_keys message");

	lim = dflt;
	lim.max_string = 4;
	d = parse_ok(1, "{\"abcd\":\"wxyz\"}", 15, &lim, "max_string 4: 4 bytes ok");
	v1_doc_free(d);
	ok(v1_parse_json("{\"a\":\"wxyz\\u00e9\"}", 18, &lim, &d, &err) == -1,
	   "max_string counts decoded bytes");
	is_str(err.message, "value of key 'a' at byte 5 is longer than 4 bytes",
	       "max_string value message");
	ok(v1_parse_json("{\"abcde\":1}", 11, &lim, &d, &err) == -1, "max_string applies to keys");
	ok(v1_parse_json("{\"a\":12345}", 11, &lim, &d, &err) == -1,
	   "max_string applies to numbers");
	is_int(err.offset, 5, "number limit offset");

	lim = dflt;
	lim.max_items = 2;
	d = parse_ok(1, "{\"a\":[1,2]}", 11, &lim, "max_items 2: two items ok");
	v1_doc_free(d);
	ok(v1_parse_json("{\"a\":[1,2,3]}", 13, &lim, &d, &err) == -1,
	   "max_items 2: third item rejected");
	is_str(err.message, "array of key 'a' has more than 2 items (byte 10)",
	       "max_items message");

	/* 1000 distinct keys (the default limit) grow the field array and index */
	s = malloc(1001 * 16 + 8);
	p = s;
	*p++ = '{';
	for (i = 0; i < 1000; i++)
		p += sprintf(p, "%s\"k%zu\":%zu", i ? "," : "", i, i);
	strcpy(p, "}");
	d = parse_ok(1, s, strlen(s), NULL, "1000 keys accepted");
	if (d) {
		is_int(d->n_fields, 1000, "1000 fields");
		ok(value_is(field(d, "k999"), V1_NUMBER, "999", 3) &&
			   v1_doc_index(d, "k500") == 500,
		   "lookup among 1000 fields");
		v1_doc_free(d);
	}
	strcpy(p, ",\"k0\":1}");
	ok(v1_parse_json(s, strlen(s), NULL, &d, &err) == -1 &&
		   strstr(err.message, "duplicate key 'k0'"),
	   "duplicate found among 1000 keys");
	strcpy(p, ",\"new\":1}");
	ok(v1_parse_json(s, strlen(s), NULL, &d, &err) == -1 &&
		   strstr(err.message, "more than 1000 keys"),
	   "1001st key rejected by default");
	free(s);

	/* a long array grows items past several doublings */
	s = repeat("{\"a\":[0", ",1", 999, "]}");
	d = parse_ok(1, s, strlen(s), NULL, "1000 items accepted");
	if (d) {
		ok(field(d, "a")->n_items == 1000 &&
			   value_is(&field(d, "a")->items[999], V1_NUMBER, "1", 1),
		   "1000 items stored");
		v1_doc_free(d);
	}
	free(s);

	ok(v1_parse_json("{\"a\":[]}", 8, NULL, &d, NULL) == 0 && d,
	   "NULL limits and NULL err accepted");
	v1_doc_free(d);
	ok(v1_parse_json("{\"a\":{}}", 8, NULL, &d, NULL) == -1 && !d, "NULL err on failure");
}

/* The one-pass JSON path: what it must take itself, what it must leave to
 * the yajl path; whatever it takes, yajl takes into the same document. */
struct fast_case {
	const char *name;
	const char *body;
	size_t len;                  /* 0: strlen(body) */
	int fast;                    /* 1: the one-pass path accepts, 0: it gives up */
	int yajl;                    /* 1: the yajl path accepts */
	const struct v1_limits *lim; /* NULL: defaults */
	const char *a;               /* expected bytes of field "a" (a scalar), or NULL */
	size_t a_len;
};

static const struct v1_limits lim_str4 = { 8, 1000, 4, 1000 };
static const struct v1_limits lim_keys2 = { 8, 2, 65536, 1000 };
static const struct v1_limits lim_items2 = { 8, 1000, 65536, 2 };
static const struct v1_limits lim_depth1 = { 1, 1000, 65536, 1000 };
static const struct v1_limits lim_depth0 = { 0, 1000, 65536, 1000 };

/* A body both paths refuse: the one-pass path gives up, yajl rejects it. */
#define REFUSED(name, body, lim)                  \
	{                                         \
		name, body, 0, 0, 0, lim, NULL, 0 \
	}

static const struct fast_case fast_cases[] = {
	{ "-0", "{\"a\":-0}", 0, 1, 1, NULL, "-0", 2 },
	{ "1E+2", "{\"a\":1E+2}", 0, 1, 1, NULL, "1E+2", 4 },
	{ "fraction and exponent", "{\"a\":-0.5e-3}", 0, 1, 1, NULL, "-0.5e-3", 7 },
	{ "zero", "{\"a\":0}", 0, 1, 1, NULL, "0", 1 },
	REFUSED("01", "{\"a\":01}", NULL),
	REFUSED("1.", "{\"a\":1.}", NULL),
	REFUSED("-", "{\"a\":-}", NULL),
	REFUSED("1e", "{\"a\":1e}", NULL),
	REFUSED("1e+", "{\"a\":1e+}", NULL),
	REFUSED(".5", "{\"a\":.5}", NULL),
	REFUSED("+1", "{\"a\":+1}", NULL),
	REFUSED("-01", "{\"a\":-01}", NULL),
	{ "true false null", "{\"a\":true,\"b\":false,\"c\":null}", 0, 1, 1, NULL, "true", 4 },
	REFUSED("truncated literal", "{\"a\":tru}", NULL),
	REFUSED("literal run on", "{\"a\":truex}", NULL),
	{ "simple escapes", "{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}", 0, 1, 1, NULL,
	  "\"\\/\b\f\n\r\t", 8 },
	{ "\\u00e9", "{\"a\":\"caf\\u00e9\"}", 0, 1, 1, NULL, "caf\xc3\xa9", 5 },
	{ "\\u20AC upper-case hex", "{\"a\":\"\\u20AC\"}", 0, 1, 1, NULL, "\xe2\x82\xac", 3 },
	{ "surrogate pair", "{\"a\":\"\\ud83d\\ude00\"}", 0, 1, 1, NULL, "\xf0\x9f\x98\x80", 4 },
	{ "NUL escape in a value", "{\"a\":\"x\\u0000y\"}", 0, 1, 1, NULL, "x\0y", 3 },
	REFUSED("NUL escape in a key", "{\"a\\u0000b\":1}", NULL),
	REFUSED("lone high surrogate", "{\"a\":\"\\ud800\"}", NULL),
	REFUSED("lone low surrogate", "{\"a\":\"\\udc00x\"}", NULL),
	REFUSED("high surrogate + \\u0041", "{\"a\":\"\\ud83d\\u0041\"}", NULL),
	REFUSED("bad escape", "{\"a\":\"\\x\"}", NULL),
	REFUSED("short \\u", "{\"a\":\"\\u12\"}", NULL),
	{ "raw UTF-8 and DEL", "{\"a\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x7f\"}", 0, 1, 1,
	  NULL, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x7f", 10 },
	{ "long string over blocks", "{\"a\":\"0123456789abcdef0123456789abcdef\\n0123456789\"}", 0,
	  1, 1, NULL, "0123456789abcdef0123456789abcdef\n0123456789", 43 },
	REFUSED("overlong UTF-8", "{\"a\":\"\xc0\xaf\"}", NULL),
	REFUSED("UTF-8 cut by an escape", "{\"a\":\"\xc3\\n\"}", NULL),
	REFUSED("invalid UTF-8 in a key", "{\"\xff\":1}", NULL),
	REFUSED("raw tab in a string", "{\"a\":\"x\ty\"}", NULL),
	{ "raw NUL in a string", "{\"a\":\"x\0y\"}", 11, 0, 0, NULL, NULL, 0 },
	{ "JSON whitespace", " \t\r\n{ \"a\" :\n[ 1 ,\t\"x\" ] , \"b\":2 }\r\n", 0, 1, 1, NULL,
	  NULL, 0 },
	REFUSED("vertical tab", "{\"a\":1}\v", NULL),
	REFUSED("form feed", "{\"a\":\f1}", NULL),
	{ "empty object", "{}", 0, 1, 1, NULL, NULL, 0 },
	{ "empty array", "{\"a\":[]}", 0, 1, 1, NULL, NULL, 0 },
	REFUSED("empty body", "", NULL),
	REFUSED("top-level array", "[1]", NULL),
	REFUSED("nested array", "{\"a\":[[1]]}", NULL),
	REFUSED("nested object", "{\"a\":{}}", NULL),
	REFUSED("deep nesting", "{\"a\":[[[[[[[[[[1]]]]]]]]]]}", NULL),
	REFUSED("duplicate key", "{\"a\":1,\"a\":2}", NULL),
	REFUSED("duplicate key via escape", "{\"\\u00e9\":1,\"\xc3\xa9\":2}", NULL),
	REFUSED("trailing comma", "{\"a\":1,}", NULL),
	REFUSED("trailing comma in array", "{\"a\":[1,]}", NULL),
	REFUSED("trailing garbage", "{\"a\":1} x", NULL),
	REFUSED("truncated", "{\"a\":\"abc", NULL),
	REFUSED("BOM", "\xef\xbb\xbf{}", NULL),
	{ "max_string: 4 bytes", "{\"a\":\"ab\\u00e9\"}", 0, 1, 1, &lim_str4, "ab\xc3\xa9", 4 },
	REFUSED("max_string: 5 bytes", "{\"a\":\"abcde\"}", &lim_str4),
	REFUSED("max_string: a number", "{\"a\":12345}", &lim_str4),
	REFUSED("max_string: false", "{\"a\":false}", &lim_str4),
	REFUSED("max_string: a key", "{\"abcde\":1}", &lim_str4),
	{ "max_keys: 2 keys", "{\"a\":1,\"b\":2}", 0, 1, 1, &lim_keys2, "1", 1 },
	REFUSED("max_keys: 3 keys", "{\"a\":1,\"b\":2,\"c\":3}", &lim_keys2),
	{ "max_items: 2 items", "{\"a\":[1,2]}", 0, 1, 1, &lim_items2, NULL, 0 },
	REFUSED("max_items: 3 items", "{\"a\":[1,2,3]}", &lim_items2),
	{ "max_depth 1: a scalar", "{\"a\":1}", 0, 1, 1, &lim_depth1, "1", 1 },
	REFUSED("max_depth 1: an array", "{\"a\":[]}", &lim_depth1),
	REFUSED("max_depth 0", "{}", &lim_depth0),
};

static void check_fast(const struct fast_case *c)
{
	size_t len = c->len ? c->len : strlen(c->body);
	struct v1_doc *fast = (struct v1_doc *)1, *ref = NULL, *doc = NULL;
	struct bridge_error err;
	int got, rc;
	char name[256];

	got = v1_parse_json_fast(c->body, len, c->lim, &fast);
	rc = v1_parse_json_yajl(c->body, len, c->lim, &ref, &err);
	snprintf(name, sizeof(name), "fast %s: %s", c->name, c->fast ? "accepted" : "gave up");
	ok(got == c->fast && (got ? fast != NULL : fast == NULL), name);
	snprintf(name, sizeof(name), "fast %s: yajl %s", c->name, c->yajl ? "accepts" : "rejects");
	ok((rc == 0) == c->yajl, name);
	if (got == 1) {
		snprintf(name, sizeof(name), "fast %s: the same document as yajl's", c->name);
		ok(v1_doc_same(fast, ref), name);
	}
	if (got == 1 && c->a) {
		snprintf(name, sizeof(name), "fast %s: the bytes of a", c->name);
		ok(fast->n_fields && value_is(&fast->fields[0].value, fast->fields[0].value.type,
					      c->a, c->a_len),
		   name);
	}
	snprintf(name, sizeof(name), "fast %s: v1_parse_json gives yajl's outcome", c->name);
	rc = v1_parse_json(c->body, len, c->lim, &doc, &err);
	ok(ref ? rc == 0 && v1_doc_same(doc, ref) : rc == -1 && doc == NULL, name);
	v1_doc_free(doc);
	v1_doc_free(ref);
	if (got == 1)
		v1_doc_free(fast);
}

/* The bench's payload and the fixtures' common shape go the one-pass way. */
static void test_json_fast_fixture(void)
{
	FILE *f = fopen("fixtures/v1/representative.json", "rb");
	char buf[16384];
	size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
	struct v1_doc *fast = NULL, *ref = NULL;
	struct bridge_error err;

	if (f)
		fclose(f);
	ok(n > 0 && n < sizeof(buf), "representative.json read");
	ok(v1_parse_json_fast(buf, n, NULL, &fast) == 1, "representative.json: the one-pass path");
	ok(v1_parse_json_yajl(buf, n, NULL, &ref, &err) == 0 && v1_doc_same(fast, ref),
	   "representative.json: the same document as yajl's");
	v1_doc_free(fast);
	v1_doc_free(ref);
}

static void test_json_fast(void)
{
	size_t i;

	for (i = 0; i < sizeof(fast_cases) / sizeof(fast_cases[0]); i++)
		check_fast(&fast_cases[i]);
	test_json_fast_fixture();
}

/* Keys of every length around the hash's word sizes (8, 16, 32): keys that
 * differ in one byte are told apart, a repeated key is found (a duplicate in
 * JSON, merged into a list in a form). */
static void test_key_lengths(void)
{
	int bad_split = 0, bad_dup = 0, bad_form = 0;

	for (size_t n = 1; n <= 40; n++) {
		char a[48], b[48], c[48], body[256];
		struct v1_doc *d = NULL;
		struct bridge_error err;

		memset(a, 'k', n);
		a[n] = '\0';
		memcpy(b, a, n + 1);
		memcpy(c, a, n + 1);
		b[n - 1] = 'x';
		c[n / 2] = 'y';
		snprintf(body, sizeof(body), "{\"%s\":1,\"%s\":2,\"%s\":3}", a, b, n > 1 ? c : "z");
		if (v1_parse_json_fast(body, strlen(body), NULL, &d) != 1 || d->n_fields != 3)
			bad_split++;
		v1_doc_free(d);
		d = NULL;
		snprintf(body, sizeof(body), "{\"%s\":1,\"%s\":2,\"%s\":3}", a, b, a);
		if (v1_parse_json_fast(body, strlen(body), NULL, &d) != 0 ||
		    v1_parse_json(body, strlen(body), NULL, &d, &err) != -1 ||
		    !strstr(err.message, "duplicate key"))
			bad_dup++;
		snprintf(body, sizeof(body), "%s=1&%s=2&%s=3", a, b, a);
		if (v1_parse_form(body, strlen(body), NULL, &d, &err) != 0 || d->n_fields != 2 ||
		    d->fields[0].value.type != V1_ARRAY || d->fields[0].value.n_items != 2)
			bad_form++;
		v1_doc_free(d);
	}
	is_int(bad_split, 0, "keys of 1 to 40 bytes one byte apart are distinct keys");
	is_int(bad_dup, 0, "a repeated key of 1 to 40 bytes is a duplicate");
	is_int(bad_form, 0, "a repeated form key of 1 to 40 bytes becomes a list");
}

static void test_form(void)
{
	static const char body[] = "a=1&&b=hello+world&c=%C3%A9&d=%e2%82%AC&flag&e=&"
				   "x=1&x=2&y=b=c&x=3&name=Zo\xc3\xa9&sp+ace=%2B%26%3D&z=a%00b&=v&";
	struct v1_doc *d = parse_ok(0, body, strlen(body), NULL, "form accepted");
	const struct v1_value *x;

	if (!d)
		return;
	is_int(d->n_fields, 12, "form: twelve distinct keys");
	ok(value_is(field(d, "a"), V1_STRING, "1", 1), "form: simple value");
	ok(value_is(field(d, "b"), V1_STRING, "hello world", 11), "form: + is a space");
	ok(value_is(field(d, "c"), V1_STRING, "\xc3\xa9", 2), "form: %C3%A9");
	ok(value_is(field(d, "d"), V1_STRING, "\xe2\x82\xac", 3), "form: mixed-case hex");
	ok(value_is(field(d, "flag"), V1_STRING, "", 0), "form: missing = gives empty value");
	ok(value_is(field(d, "e"), V1_STRING, "", 0), "form: empty value");
	ok(value_is(field(d, "y"), V1_STRING, "b=c", 3), "form: only the first = splits");
	ok(value_is(field(d, "name"), V1_STRING, "Zo\xc3\xa9", 4), "form: raw UTF-8 accepted");
	ok(value_is(field(d, "sp ace"), V1_STRING, "+&=", 3),
	   "form: decoded key and reserved chars");
	ok(value_is(field(d, "z"), V1_STRING, "a\0b", 3), "form: %00 kept inside a value");
	ok(value_is(field(d, ""), V1_STRING, "v", 1), "form: empty key");
	x = field(d, "x");
	ok(x && x->type == V1_ARRAY && x->n_items == 3 && x->text && x->len == 0,
	   "form: repeated key becomes an array");
	if (x && x->n_items == 3)
		ok(value_is(&x->items[0], V1_STRING, "1", 1) &&
			   value_is(&x->items[1], V1_STRING, "2", 1) &&
			   value_is(&x->items[2], V1_STRING, "3", 1),
		   "form: array keeps arrival order");
	is_int(v1_doc_index(d, "x"), 6, "form: repeated key stays at its first position");
	is_int(v1_doc_index(d, "y"), 7, "form: next key after it");
	v1_doc_free(d);

	d = parse_ok(0, "", 0, NULL, "form: empty body is an empty document");
	if (d)
		is_int(d->n_fields, 0, "form: no fields");
	v1_doc_free(d);
	d = parse_ok(0, "&&&", 3, NULL, "form: only separators");
	if (d)
		is_int(d->n_fields, 0, "form: separators give no fields");
	v1_doc_free(d);
}

static void test_form_limits(void)
{
	struct v1_limits lim;
	struct v1_doc *d = NULL;
	struct bridge_error err;
	char *s;

	v1_limits_default(&lim);
	lim.max_keys = 2;
	d = parse_ok(0, "a=1&b=2&a=3", 11, &lim, "form max_keys counts distinct keys");
	v1_doc_free(d);
	ok(v1_parse_form("a=1&b=2&c=3", 11, &lim, &d, &err) == -1 && !d, "form max_keys exceeded");
	is_str(err.message, "more than 2 keys in the form (key 'c' at byte 8)",
	       "form max_keys message");

	v1_limits_default(&lim);
	lim.max_items = 2;
	ok(v1_parse_form("a=1&a=2&a=3", 11, &lim, &d, &err) == -1 && !d, "form max_items exceeded");
	is_str(err.message, "key 'a' repeated more than 2 times (byte 8)",
	       "form max_items message");
	is_str(err.key, "a", "form max_items key");

	v1_limits_default(&lim);
	lim.max_string = 3;
	d = parse_ok(0, "abc=%41%42%43", 13, &lim, "form max_string counts decoded bytes");
	v1_doc_free(d);
	ok(v1_parse_form("a=abcd", 6, &lim, &d, &err) == -1, "form value over max_string");
	is_str(err.message, "value of key 'a' at byte 2 is longer than 3 bytes",
	       "form max_string message");
	ok(v1_parse_form("abcd=1", 6, &lim, &d, &err) == -1, "form key over max_string");

	/* many repetitions exercise item growth */
	s = repeat("k=0", "&k=1", 999, "");
	d = parse_ok(0, s, strlen(s), NULL, "form: 1000 repetitions accepted");
	if (d) {
		ok(d->n_fields == 1 && field(d, "k")->n_items == 1000 &&
			   value_is(&field(d, "k")->items[0], V1_STRING, "0", 1) &&
			   value_is(&field(d, "k")->items[999], V1_STRING, "1", 1),
		   "form: 1000 items stored in order");
		v1_doc_free(d);
	}
	free(s);
	s = repeat("k=0", "&k=1", 1000, "");
	ok(v1_parse_form(s, strlen(s), NULL, &d, &err) == -1 && !d,
	   "form: 1001 repetitions rejected");
	free(s);
}

/* Every accepted document is well formed; every rejection has a message. */
static int doc_sane(const struct v1_doc *d)
{
	size_t i, j;

	for (i = 0; i < d->n_fields; i++) {
		const struct v1_field *f = &d->fields[i];
		const struct v1_value *v = &f->value;

		if (!f->key || f->key[f->key_len] != '\0' || strlen(f->key) != f->key_len)
			return 0;
		if (!v->text || v->text[v->len] != '\0')
			return 0;
		if (v->type == V1_ARRAY ? (v->n_items && !v->items) : (v->n_items || v->items))
			return 0;
		for (j = 0; j < v->n_items; j++)
			if (!v->items[j].text || v->items[j].type == V1_ARRAY ||
			    v->items[j].text[v->items[j].len] != '\0')
				return 0;
		if (v1_doc_index(d, f->key) != (long)i)
			return 0;
	}
	return 1;
}

static void test_mutations(int is_json)
{
	static const char *const json_seeds[] = {
		"{\"a\":\"x\\u00e9\",\"n\":-1.5e3,\"l\":[1,\"\\ud83d\\ude00\",null,true],\"e\":[]}",
		"{\"k\":\"\xc3\xa9\\n\\\"\",\"z\":false,\"o\":{}}",
	};
	static const char *const form_seeds[] = {
		"a=1&b=hello+world&c=%C3%A9&a=2&flag&=v",
		"x=%e2%82%ac&x=&y=a%2Bb&&z=%00",
	};
	static const char pool[] = "{}[]\"\\:,0-eu&=%+aF\xff\xc3\xa9\x80 \0";
	const char *const *seeds = is_json ? json_seeds : form_seeds;
	unsigned long long rng = 88172645463325252ULL;
	int i, accepted = 0, rejected = 0, broken = 0;

	for (i = 0; i < 20000; i++) {
		char buf[160];
		size_t n = strlen(seeds[i % 2]), k, m;
		struct v1_doc *d = NULL;
		struct bridge_error err;
		int rc;

		memcpy(buf, seeds[i % 2], n);
		for (m = 0; m < 1 + (size_t)(i % 4); m++) {
			rng ^= rng << 13;
			rng ^= rng >> 7;
			rng ^= rng << 17;
			k = (size_t)(rng >> 8) % (n ? n : 1);
			switch ((rng >> 40) % 4) {
			case 0: /* replace */
				buf[k] = pool[(rng >> 20) % (sizeof(pool) - 1)];
				break;
			case 1: /* insert */
				if (n + 1 < sizeof(buf)) {
					memmove(buf + k + 1, buf + k, n - k);
					buf[k] = pool[(rng >> 20) % (sizeof(pool) - 1)];
					n++;
				}
				break;
			case 2: /* delete */
				if (n) {
					memmove(buf + k, buf + k + 1, n - k - 1);
					n--;
				}
				break;
			default: /* truncate */ n = k; break;
			}
		}
		rc = is_json ? v1_parse_json(buf, n, NULL, &d, &err)
			     : v1_parse_form(buf, n, NULL, &d, &err);
		if (rc == 0 && d && doc_sane(d))
			accepted++;
		else if (rc == -1 && !d && err.message[0] && err.offset >= -1 &&
			 err.offset <= (long)n)
			rejected++;
		else
			broken++;
		v1_doc_free(d);
	}
	printf("# %s mutations: %d accepted, %d rejected\n", is_json ? "json" : "form", accepted,
	       rejected);
	is_int(broken, 0,
	       is_json ? "json: 20000 mutated bodies give sane documents or clean errors"
		       : "form: 20000 mutated bodies give sane documents or clean errors");
	ok(accepted > 100 && rejected > 100,
	   is_json ? "json mutations reach both outcomes" : "form mutations reach both outcomes");
}

int main(void)
{
	struct v1_limits lim;
	size_t i;

	v1_limits_default(&lim);
	for (i = 0; i < sizeof(json_rejects) / sizeof(json_rejects[0]); i++)
		check_reject(1, &json_rejects[i], &lim);
	for (i = 0; i < sizeof(form_rejects) / sizeof(form_rejects[0]); i++)
		check_reject(0, &form_rejects[i], &lim);
	test_json_values();
	test_json_bytes();
	test_json_numbers();
	test_json_depth();
	test_json_limits();
	test_json_fast();
	test_key_lengths();
	test_form();
	test_form_limits();
	test_mutations(1);
	test_mutations(0);
	return tap_done();
}
