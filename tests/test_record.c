/*
 * test_record: the capture module.  Redaction is checked on the raw bytes of
 * the file (a redacted value must appear nowhere, in any encoding the sender
 * used); rotation at the size; four threads writing at once leave whole,
 * parseable lines; form and invalid bodies.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yajl/yajl_tree.h>

#include "bridge/record.h"
#include "tap.h"

static char dir[] = "/tmp/test_record-XXXXXX";

static char *path_in(const char *name)
{
	static char buf[4][512];
	static int k;

	k = (k + 1) % 4;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", dir, name);
	return buf[k];
}

static char *slurp(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	if (fread(buf, 1, (size_t)n, f) != (size_t)n)
		n = 0;
	buf[n] = '\0';
	fclose(f);
	if (ret_len)
		*ret_len = (size_t)n;
	return buf;
}

static int contains(const char *hay, size_t n, const char *needle)
{
	return memmem(hay, n, needle, strlen(needle)) != NULL;
}

static long file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Count lines; every one must parse as a JSON object.  Returns the count,
 * or -1 if a line is not a whole JSON object or the file does not end
 * with a newline. */
static long whole_lines(const char *text, size_t n)
{
	long count = 0;
	size_t i = 0;

	if (n && text[n - 1] != '\n')
		return -1;
	while (i < n) {
		const char *nl = memchr(text + i, '\n', n - i);
		size_t len = (size_t)(nl - (text + i));
		char *line = strndup(text + i, len);
		char ebuf[128];
		yajl_val v = yajl_tree_parse(line, ebuf, sizeof(ebuf));

		free(line);
		if (!v || !YAJL_IS_OBJECT(v)) {
			yajl_tree_free(v);
			return -1;
		}
		yajl_tree_free(v);
		count++;
		i += len + 1;
	}
	return count;
}

/* The one line of a single-record file, parsed. */
static yajl_val only_record(const char *path)
{
	size_t n;
	char *text = slurp(path, &n);
	char ebuf[128];
	yajl_val v = NULL;

	if (text && whole_lines(text, n) == 1)
		v = yajl_tree_parse(text, ebuf, sizeof(ebuf));
	free(text);
	return v;
}

static const char *str_at(yajl_val v, const char *a, const char *b)
{
	const char *p[] = { a, b, NULL };
	yajl_val x = yajl_tree_get(v, p, yajl_t_any);

	if (!x)
		return NULL;
	if (YAJL_IS_STRING(x))
		return YAJL_GET_STRING(x);
	if (YAJL_IS_NUMBER(x))
		return YAJL_GET_NUMBER(x);
	return NULL;
}

static struct recorder *open_rec(const char *name, uint64_t rotate, unsigned keep,
				 const char *const *extra, size_t n_extra)
{
	struct record_options o;
	struct bridge_error err;
	struct recorder *r;

	record_options_default(&o);
	o.path = path_in(name);
	o.rotate_bytes = rotate;
	o.keep = keep;
	o.redact = extra;
	o.n_redact = n_extra;
	bridge_error_clear(&err);
	r = recorder_open(&o, &err);
	if (!r)
		printf("# recorder_open: %s\n", err.message);
	return r;
}

static int put(struct recorder *r, const char *ct, const char *body)
{
	struct bridge_error err;
	struct timeval tv = { 1700000000, 123456 };
	struct record_header h[] = {
		{ "content-type", ct },
		{ "User-Agent", "Qualifio-Webhook/1.0" },
		{ "Authorization", "Basic c2VjcmV0LXRva2Vu" },
		{ "X-Forwarded-For", "198.51.100.7" },
		{ "X-Forwarded-For", "203.0.113.9" },
	};
	int rc;

	bridge_error_clear(&err);
	rc = recorder_write(r, ct, &tv, h, sizeof(h) / sizeof(h[0]), body, strlen(body), &err);
	if (rc < 0)
		printf("# recorder_write: %s\n", err.message);
	return rc;
}

static void test_patterns(void)
{
	static const struct {
		const char *pattern, *key;
		int want;
	} t[] = {
		{ "email", "email", 1 },       { "email", "EMAIL", 1 },
		{ "email", "optin_email", 0 }, { "email", "emails", 0 },
		{ "phone*", "phone", 1 },      { "phone*", "phone_2", 1 },
		{ "phone*", "iphone", 0 },     { "*_email", "contact_email", 1 },
		{ "*_email", "email", 0 },     { "*mail*", "optin_email_x", 1 },
		{ "*mail*", "mai", 0 },        { "address*", "Address_Line1", 1 },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		char name[128];

		snprintf(name, sizeof(name), "pattern '%s' %s '%s'", t[i].pattern,
			 t[i].want ? "matches" : "does not match", t[i].key);
		is_int(record_pattern_match(t[i].pattern, t[i].key, strlen(t[i].key)), t[i].want,
		       name);
	}
}

static void test_options(void)
{
	struct record_options o;
	struct bridge_error err;
	static const char *const bad[] = { "a*b" };
	struct recorder *r;

	record_options_default(&o);
	o.path = path_in("opt.ndjson");
	o.keep = 0;
	bridge_error_clear(&err);
	r = recorder_open(&o, &err);
	ok(!r && strstr(err.message, "keep"), "keep 0 is refused with a message naming keep");
	recorder_close(r);

	record_options_default(&o);
	o.path = path_in("opt.ndjson");
	o.redact = bad;
	o.n_redact = 1;
	r = recorder_open(&o, &err);
	ok(!r && strstr(err.message, "a*b"), "a '*' inside a pattern is refused");
	recorder_close(r);

	record_options_default(&o);
	o.path = path_in("no/such/dir/capture.ndjson");
	r = recorder_open(&o, &err);
	ok(!r && strstr(err.message, "cannot open"), "an unopenable path is refused");
	recorder_close(r);

	record_options_default(&o);
	r = recorder_open(&o, &err);
	ok(!r, "a missing path is refused");
	recorder_close(NULL); /* a no-op: a crash fails the program */
}

static void test_json_redaction(void)
{
	static const char *const extra[] = { "*_secret" };
	struct recorder *r = open_rec("json.ndjson", 0, 5, extra, 1);
	const char *body = "{\"participation_id\":\"4b1e9345-1c0c-463f-82a0-e6857dbdfe80\","
			   "\"campaign_id\":18446744073709551615,\"score\":-1.50e+3,"
			   "\"email\":\"jane.doe@example.org\",\"lastname\":\"Zyxwv\","
			   "\"FirstName\":\"Qwert\",\"phone_2\":\"+3281555111\","
			   "\"Address_Line1\":\"Rue Secr\\u00e8te 7\",\"ip\":\"A66A8BED9948CBDD\","
			   "\"city\":[\"Lieu1\",\"Lieu2\"],\"birthdate\":19900517,"
			   "\"api_secret\":\"tok-98765\",\"optin_email\":\"1\","
			   "\"flag\":true,\"none\":null,\"gender\":\"F\"}";
	size_t n;
	char *text;
	yajl_val v;

	if (!ok(r != NULL, "recorder opens"))
		return;
	is_int(put(r, "application/json; charset=utf-8", body), 0, "json post recorded");
	is_int(recorder_lines(r), 1, "one line counted");
	recorder_close(r);
	text = slurp(path_in("json.ndjson"), &n);
	if (!ok(text != NULL, "capture file exists"))
		return;
	ok(!contains(text, n, "jane.doe"), "email value absent from the file");
	ok(!contains(text, n, "example.org"), "email domain absent from the file");
	ok(!contains(text, n, "Zyxwv"), "lastname value absent");
	ok(!contains(text, n, "Qwert"), "FirstName value absent (keys match case-insensitively)");
	ok(!contains(text, n, "3281555111"), "phone_2 value absent (prefix pattern)");
	ok(!contains(text, n, "Secr"), "address value absent, escaped or not");
	ok(!contains(text, n, "A66A8BED"), "ip value absent");
	ok(!contains(text, n, "Lieu"), "array value of a redacted key absent");
	ok(!contains(text, n, "19900517"), "number value of a redacted key absent");
	ok(!contains(text, n, "98765"), "extra suffix pattern redacts");
	ok(!contains(text, n, "Basic"), "headers not in the keep list are not recorded");
	is_int(whole_lines(text, n), 1, "one whole JSON line");
	v = yajl_tree_parse(text, NULL, 0);
	ok(v != NULL, "line parses");
	is_str(str_at(v, "time", NULL), "2023-11-14T22:13:20.123Z", "arrival time, UTC, ms");
	is_str(str_at(v, "content_type", NULL), "application/json; charset=utf-8",
	       "content type as sent");
	is_str(str_at(v, "headers", "User-Agent"), "Qualifio-Webhook/1.0", "User-Agent kept");
	is_str(str_at(v, "headers", "X-Forwarded-For"), "198.51.100.7, 203.0.113.9",
	       "repeated header joined");
	is_str(str_at(v, "headers", "Content-Type"), "application/json; charset=utf-8",
	       "Content-Type kept under its configured name");
	is_str(str_at(v, "body", "email"), RECORD_REDACTED, "email replaced by the marker");
	is_str(str_at(v, "body", "city"), RECORD_REDACTED, "whole array replaced by the marker");
	is_str(str_at(v, "body", "campaign_id"), "18446744073709551615", "big number kept exactly");
	is_str(str_at(v, "body", "score"), "-1.50e+3", "number text kept exactly");
	is_str(str_at(v, "body", "optin_email"), "1", "optin_email is not an exact match of email");
	is_str(str_at(v, "body", "gender"), "F", "other values kept");
	ok(contains(text, n, "\"flag\":true") && contains(text, n, "\"none\":null"),
	   "booleans and null re-emitted as such");
	ok(contains(
		   text, n,
		   "\"participation_id\":\"4b1e9345-1c0c-463f-82a0-e6857dbdfe80\",\"campaign_id\""),
	   "fields keep their arrival order");
	yajl_tree_free(v);
	free(text);
}

static void test_form(void)
{
	struct recorder *r = open_rec("form.ndjson", 0, 5, NULL, 0);
	size_t n;
	char *text;
	yajl_val v;

	if (!ok(r != NULL, "recorder opens (form)"))
		return;
	is_int(put(r, "application/x-www-form-urlencoded",
		   "participation_id=abc&email=jane%40example.org&lastname=Doe+Smithers"
		   "&phone=%2B32+81&gender=F&q=a&q=b"),
	       0, "form post recorded");
	recorder_close(r);
	text = slurp(path_in("form.ndjson"), &n);
	if (!ok(text != NULL, "form capture exists"))
		return;
	ok(!contains(text, n, "jane") && !contains(text, n, "%40example"),
	   "form email absent, decoded or encoded");
	ok(!contains(text, n, "Smithers"), "form lastname absent");
	ok(!contains(text, n, "+32") && !contains(text, n, "%2B32"), "form phone absent");
	v = yajl_tree_parse(text, NULL, 0);
	ok(v != NULL, "form line parses");
	is_str(str_at(v, "body", "gender"), "F", "form field decoded");
	is_str(str_at(v, "body", "lastname"), RECORD_REDACTED, "form lastname marker");
	{
		const char *p[] = { "body", "q", NULL };
		yajl_val q = yajl_tree_get(v, p, yajl_t_array);

		ok(q && YAJL_GET_ARRAY(q)->len == 2, "repeated form key becomes an array");
	}
	yajl_tree_free(v);
	free(text);
}

static void test_invalid(void)
{
	struct recorder *r = open_rec("invalid.ndjson", 0, 5, NULL, 0);
	size_t n;
	char *text;
	long lines;

	if (!ok(r != NULL, "recorder opens (invalid)"))
		return;
	is_int(put(r, "application/json", "{\"email\":\"leak@example.org\",\"x\":"), 0,
	       "truncated JSON recorded");
	is_int(put(r, "application/json", "{\"email\":\"leak2@example.org\",\"n\":{\"a\":1}}"), 0,
	       "nested JSON recorded");
	is_int(put(r, "text/plain", "email=leak3@example.org"), 0, "other content type recorded");
	is_int(put(r, "application/x-www-form-urlencoded", "email=%ZZleak4"), 0,
	       "bad form encoding recorded");
	recorder_close(r);
	text = slurp(path_in("invalid.ndjson"), &n);
	if (!ok(text != NULL, "invalid capture exists"))
		return;
	lines = whole_lines(text, n);
	is_int(lines, 4, "four whole lines");
	ok(!contains(text, n, "leak"), "no byte of an invalid body is recorded");
	ok(!contains(text, n, "\"body\":"), "invalid records have no body member");
	{
		int invalid = 0;
		const char *p = text;

		while ((p = strstr(p, "\"invalid\":true")) != NULL) {
			invalid++;
			p++;
		}
		is_int(invalid, 4, "each one marked invalid");
	}
	ok(contains(text, n, "\"reason\":\"unsupported content type\""), "reason for text/plain");
	ok(contains(text, n, "\"body_bytes\":"), "body size recorded");
	free(text);

	/* a line over max_line becomes an invalid record */
	{
		struct record_options o;
		struct bridge_error err;
		static const char big_body_head[] = "{\"gender\":\"";
		char body[3000];
		yajl_val v;

		record_options_default(&o);
		o.path = path_in("maxline.ndjson");
		o.max_line = 1000;
		r = recorder_open(&o, &err);
		memcpy(body, big_body_head, sizeof(big_body_head) - 1);
		memset(body + sizeof(big_body_head) - 1, 'x', 2000);
		strcpy(body + sizeof(big_body_head) - 1 + 2000, "\"}");
		is_int(r ? put(r, "application/json", body) : -1, 0, "long post recorded");
		recorder_close(r);
		v = only_record(path_in("maxline.ndjson"));
		ok(v && str_at(v, "reason", NULL) &&
			   strstr(str_at(v, "reason", NULL), "over the limit"),
		   "a line over max_line is recorded as invalid, saying why");
		ok(file_size(path_in("maxline.ndjson")) < 1000, "and stays under max_line");
		yajl_tree_free(v);
	}
}

static void test_headers_utf8(void)
{
	struct recorder *r = open_rec("hdr.ndjson", 0, 5, NULL, 0);
	struct record_header h[] = { { "User-Agent", "bad\xff\xfe agent" } };
	struct bridge_error err;
	yajl_val v;

	if (!ok(r != NULL, "recorder opens (headers)"))
		return;
	is_int(recorder_write(r, "application/json", NULL, h, 1, "{}", 2, &err), 0,
	       "header with invalid UTF-8 recorded");
	recorder_close(r);
	v = only_record(path_in("hdr.ndjson"));
	is_str(v ? str_at(v, "headers", "User-Agent") : NULL, "bad\xEF\xBF\xBD\xEF\xBF\xBD agent",
	       "invalid bytes become U+FFFD");
	yajl_tree_free(v);
}

static void test_rotation(void)
{
	struct recorder *r = open_rec("rot.ndjson", 1000, 3, NULL, 0);
	char body[256], name[64];
	size_t n;
	char *text;
	int i, sizes_ok = 1;
	long total = 0;

	if (!ok(r != NULL, "recorder opens (rotation)"))
		return;
	for (i = 0; i < 40; i++) {
		snprintf(body, sizeof(body),
			 "{\"participation_id\":\"rot-%03d\",\"gender\":\"%0150d\"}", i, i);
		if (put(r, "application/json", body) < 0)
			break;
	}
	is_int(i, 40, "40 posts recorded with rotation");
	recorder_close(r);
	ok(file_size(path_in("rot.ndjson")) > 0, "current file exists");
	for (int k = 1; k <= 3; k++) {
		snprintf(name, sizeof(name), "rot.ndjson.%d", k);
		ok(file_size(path_in(name)) > 0, "rotated file kept");
	}
	ok(file_size(path_in("rot.ndjson.4")) < 0, "no file beyond keep");
	for (int k = 0; k <= 3; k++) {
		long sz;

		snprintf(name, sizeof(name), k ? "rot.ndjson.%d" : "rot.ndjson", k);
		sz = file_size(path_in(name));
		if (sz > 1000 || sz < 0)
			sizes_ok = 0;
		text = slurp(path_in(name), &n);
		if (text) {
			long l = whole_lines(text, n);

			if (l < 0)
				sizes_ok = 0;
			else
				total += l;
		}
		free(text);
	}
	ok(sizes_ok, "every file at most rotate_bytes, made of whole lines");
	text = slurp(path_in("rot.ndjson"), &n);
	ok(text && contains(text, n, "rot-039"), "newest record in the current file");
	free(text);
	text = slurp(path_in("rot.ndjson.3"), &n);
	ok(text && !contains(text, n, "rot-000"), "oldest records dropped beyond keep");
	free(text);
	ok(total > 3 && total < 40, "lines spread over the kept files");
}

struct worker_arg {
	struct recorder *r;
	int id;
	int failures;
};

#define PER_THREAD 500

static void *writer(void *p)
{
	struct worker_arg *a = p;
	char body[256];
	struct bridge_error err;

	for (int i = 0; i < PER_THREAD; i++) {
		snprintf(body, sizeof(body),
			 "{\"participation_id\":\"t%d-%04d\",\"email\":\"w%d@example.org\","
			 "\"q\":\"%0*d\"}",
			 a->id, i, a->id, 20 + (i % 50), i);
		if (recorder_write(a->r, "application/json", NULL, NULL, 0, body, strlen(body),
				   &err) < 0)
			a->failures++;
	}
	return NULL;
}

/* Four threads at once; with rotate_bytes, across rotations too. */
static void test_threads(const char *name, uint64_t rotate, unsigned keep)
{
	struct recorder *r = open_rec(name, rotate, keep, NULL, 0);
	struct worker_arg args[4];
	pthread_t th[4];
	int failures = 0, bad_files = 0, seen_ok = 1;
	long total = 0;
	static unsigned char seen[4][PER_THREAD];
	char label[160];

	if (!ok(r != NULL, "recorder opens (threads)"))
		return;
	memset(seen, 0, sizeof(seen));
	for (int i = 0; i < 4; i++) {
		args[i] = (struct worker_arg){ r, i, 0 };
		pthread_create(&th[i], NULL, writer, &args[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		failures += args[i].failures;
	}
	is_int(recorder_lines(r), 4 * PER_THREAD, "every write counted");
	recorder_close(r);
	for (unsigned k = 0; k <= keep; k++) {
		char fname[128];
		size_t n;
		char *text;
		long l;

		snprintf(fname, sizeof(fname), k ? "%s.%u" : "%s", name, k);
		text = slurp(path_in(fname), &n);
		if (!text)
			continue;
		l = whole_lines(text, n);
		if (l < 0)
			bad_files++;
		else
			total += l;
		for (const char *p = text; (p = strstr(p, "\"participation_id\":\"t")) != NULL;
		     p++) {
			int t, i;

			if (sscanf(p, "\"participation_id\":\"t%d-%d", &t, &i) == 2 && t >= 0 &&
			    t < 4 && i >= 0 && i < PER_THREAD)
				seen[t][i]++;
		}
		if (contains(text, n, "example.org"))
			bad_files++;
		free(text);
	}
	for (int t = 0; t < 4; t++)
		for (int i = 0; i < PER_THREAD; i++)
			if (seen[t][i] != 1)
				seen_ok = 0;
	snprintf(label, sizeof(label), "%s: no write failed", name);
	is_int(failures, 0, label);
	snprintf(label, sizeof(label), "%s: every file is whole JSON lines, no email", name);
	is_int(bad_files, 0, label);
	snprintf(label, sizeof(label), "%s: 4 x %d lines", name, PER_THREAD);
	is_int(total, 4 * PER_THREAD, label);
	snprintf(label, sizeof(label), "%s: each record exactly once", name);
	ok(seen_ok, label);
}

static void test_append(void)
{
	struct recorder *r = open_rec("append.ndjson", 0, 5, NULL, 0);
	size_t n;
	char *text;

	put(r, "application/json", "{\"a\":\"1\"}");
	recorder_close(r);
	r = open_rec("append.ndjson", 0, 5, NULL, 0);
	put(r, "application/json", "{\"a\":\"2\"}");
	recorder_close(r);
	text = slurp(path_in("append.ndjson"), &n);
	is_int(text ? whole_lines(text, n) : -1, 2, "reopening appends");
	free(text);
	{
		struct stat st;

		ok(stat(path_in("append.ndjson"), &st) == 0 && (st.st_mode & 0777) == 0600,
		   "capture file is mode 0600");
	}
}

static void cleanup(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	while (d && (e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			unlink(path_in(e->d_name));
	if (d)
		closedir(d);
	rmdir(dir);
}

int main(void)
{
	if (!mkdtemp(dir)) {
		printf("Bail out! mkdtemp: %s\n", strerror(errno));
		return 1;
	}
	umask(022);
	test_patterns();
	test_options();
	test_json_redaction();
	test_form();
	test_invalid();
	test_headers_utf8();
	test_rotation();
	test_threads("threads.ndjson", 0, 1);
	test_threads("threads-rot.ndjson", 16384, 100);
	test_append();
	cleanup();
	return tap_done();
}
