/*
 * settings: the settings tables against the README's configuration tables
 * (every documented name is a setting, every setting is documented, the
 * defaults and ranges agree) and the messages the tables give (unknown
 * names with the nearest known one, ranges).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge/buf.h"
#include "bridge/config.h"
#include "bridge/queue.h"
#include "tap.h"

#define MAX_NAMES 400

static char *documented[MAX_NAMES];
static size_t n_documented;
static int defaults_compared;

/* The whole file (malloc'd), or NULL. */
static char *read_all(const char *path)
{
	struct buf b = BUF_INIT(16u << 20);
	FILE *f = fopen(path, "rb");
	int rc;

	if (!f)
		return NULL;
	rc = buf_read_file(&b, f);
	fclose(f);
	if (rc < 0) {
		buf_free(&b);
		return NULL;
	}
	return buf_take(&b, NULL);
}

static const struct cfg_setting *find_setting(const char *full)
{
	for (const struct cfg_table *t = bridge_config_tables; t->prefix; t++) {
		size_t n = strlen(t->prefix);
		const struct cfg_setting *s;

		if (strncmp(full, t->prefix, n) == 0 && (s = cfg_table_find(t->settings, full + n)))
			return s;
	}
	return NULL;
}

/* s[0, n) with its backticks dropped into out, a trailing " (...)" cut
 * off into paren (without the parentheses). */
static void plain_text(const char *s, size_t n, char *out, size_t cap, char *paren, size_t pcap)
{
	size_t keep = n, o = 0;

	paren[0] = '\0';
	if (n > 2 && s[n - 1] == ')') {
		int depth = 0;

		for (size_t i = n; i-- > 0;) {
			depth += s[i] == ')';
			depth -= s[i] == '(';
			if (depth == 0) {
				if (i > 0 && s[i - 1] == ' ') {
					keep = i - 1;
					snprintf(paren, pcap, "%.*s", (int)(n - i - 2), s + i + 1);
				}
				break;
			}
		}
	}
	for (size_t i = 0; i < keep; i++)
		if (s[i] != '`' && o + 1 < cap)
			out[o++] = s[i];
	out[o] = '\0';
}

/* The row's default as the README gives it, against the setting's. */
static void check_default(const char *full, const struct cfg_setting *s, const char *item, size_t n)
{
	char got[300], paren[200], buf[64], name[400];
	const char *want = cfg_setting_default_text(s, buf, sizeof(buf));
	long long lo, hi;

	plain_text(item, n, got, sizeof(got), paren, sizeof(paren));
	snprintf(name, sizeof(name), "README's default of %s is the table's", full);
	if (want)
		is_str(got, want, name);
	else
		ok(item[0] != '`', name); /* none, off, required: no value */
	defaults_compared++;
	/* a range given as (min–max) */
	if (sscanf(paren, "%lld\xe2\x80\x93%lld", &lo, &hi) == 2) {
		snprintf(name, sizeof(name), "README's range of %s is the table's", full);
		ok(s->type == CFG_INT && lo == s->min && hi == s->max, name);
	}
}

/* Items of a default cell: split at ", " outside backticks and parentheses. */
static size_t split_items(const char *s, size_t n, const char **at, size_t *len, size_t max)
{
	size_t k = 0, start = 0;
	int tick = 0, depth = 0;

	for (size_t i = 0; i < n && k < max; i++) {
		if (s[i] == '`')
			tick = !tick;
		else if (!tick && s[i] == '(')
			depth++;
		else if (!tick && s[i] == ')' && depth > 0)
			depth--;
		else if (!tick && !depth && s[i] == ',' && i + 1 < n && s[i + 1] == ' ') {
			at[k] = s + start;
			len[k++] = i - start;
			start = i + 2;
		}
	}
	if (k < max) {
		at[k] = s + start;
		len[k++] = n - start;
	}
	return k;
}

static void note_documented(const char *full)
{
	if (n_documented < MAX_NAMES)
		documented[n_documented++] = strdup(full);
}

/* One table row: "| `a`, `b` | defaults | meaning |". */
static void check_row(const char *line, size_t len, const char *prefix)
{
	const char *c1 = line + 2, *c2, *e2, *items[16];
	char names[16][120], full[260];
	size_t n_names = 0, item_len[16], n_items;

	c2 = strstr(c1, " | ");
	if (!c2 || c2 > line + len)
		return;
	c2 += 3;
	e2 = strstr(c2, " | ");
	if (!e2 || e2 > line + len)
		return;
	for (const char *p = c1; p < c2 && n_names < 16; p++) {
		const char *q;

		if (*p != '`')
			continue; /* ", " or " / " between names */
		if (!(q = memchr(p + 1, '`', (size_t)(c2 - p - 1))))
			break;
		snprintf(names[n_names++], sizeof(names[0]), "%.*s", (int)(q - p - 1), p + 1);
		p = q;
	}
	n_items = split_items(c2, (size_t)(e2 - c2), items, item_len, 16);
	for (size_t i = 0; i < n_names; i++) {
		const struct cfg_setting *s;
		size_t k = n_items == n_names ? i : 0;
		char what[300];

		snprintf(full, sizeof(full), "%s%.119s", prefix, names[i]);
		s = find_setting(full);
		snprintf(what, sizeof(what), "README's %s is a setting of the tables", full);
		ok(s != NULL, what);
		note_documented(full);
		if (s && s->type != CFG_CUSTOM)
			check_default(full, s, n_items == n_names ? items[k] : c2,
				      n_items == n_names ? item_len[k] : (size_t)(e2 - c2));
	}
}

/* The two "| setting | default | meaning |" tables of the configuration
 * reference: the top level's (full names) and a route's. */
static int check_tables(const char *readme)
{
	const char *sec = strstr(readme, "\n## Configuration reference\n"), *end, *p;
	int table = -1;

	if (!sec)
		return 0;
	end = strstr(sec + 1, "\n## ");
	if (!end)
		end = sec + strlen(sec);
	for (p = sec; p && p < end; p = strchr(p, '\n')) {
		const char *line = *p == '\n' ? p + 1 : p;
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);

		if (strncmp(line, "| setting | default |", 21) == 0)
			table++;
		else if (table >= 0 && strncmp(line, "| `", 3) == 0)
			check_row(line, len, table == 0 ? "" : "routes.");
		if (!nl)
			break;
		p = nl;
	}
	return table + 1;
}

/* The queue's settings as the README gives them:
 * `queue = { path = "queue.db"; max_attempts = 10; ... };` */
static int check_queue(const char *readme)
{
	const char *p = strstr(readme, "`queue = { "), *end;
	int n = 0;

	if (!p || !(end = strstr(p, "};`")))
		return 0;
	p += strlen("`queue = { ");
	while (p < end) {
		char name[80], value[80], full[120], buf[64], what[200];
		const struct cfg_setting *s;
		const char *want;
		int used = 0;

		while (p < end && (*p == ' ' || *p == '\n'))
			p++;
		if (p >= end || sscanf(p, "%79[a-z_] = %79[^;];%n", name, value, &used) != 2 ||
		    !used)
			break;
		p += used;
		snprintf(full, sizeof(full), "queue.%s", name);
		s = find_setting(full);
		snprintf(what, sizeof(what), "README's %s is a setting of the tables", full);
		ok(s != NULL, what);
		note_documented(full);
		n++;
		if (!s || !(want = cfg_setting_default_text(s, buf, sizeof(buf))))
			continue; /* path: the example's, there is no default */
		snprintf(what, sizeof(what), "README's default of %s is the table's", full);
		is_str(value, want, what);
		defaults_compared++;
	}
	return n;
}

static int is_documented(const char *full, int custom)
{
	size_t n = strlen(full);

	for (size_t i = 0; i < n_documented; i++) {
		if (strcmp(documented[i], full) == 0)
			return 1;
		/* a group read by its own code: documented by its members */
		if (custom && strncmp(documented[i], full, n) == 0 && documented[i][n] == '.')
			return 1;
	}
	return 0;
}

static void check_readme(void)
{
	char *readme = read_all("README.md");
	int missing = 0;

	ok(readme != NULL, "README.md read (run from the source root)");
	if (!readme)
		return;
	is_int(check_tables(readme), 2, "the README's two settings tables found");
	ok(check_queue(readme) >= 7, "the README's queue settings found");
	ok(defaults_compared >= 50, "the README's defaults compared");
	for (const struct cfg_table *t = bridge_config_tables; t->prefix; t++)
		for (const struct cfg_setting *s = t->settings; s->name; s++) {
			char full[200];

			snprintf(full, sizeof(full), "%s%s", t->prefix, s->name);
			if (!is_documented(full, s->type == CFG_CUSTOM)) {
				printf("#   %s is in no README table\n", full);
				missing++;
			}
		}
	is_int(missing, 0, "every setting of the tables is in the README");
	for (size_t i = 0; i < n_documented; i++)
		free(documented[i]);
	free(readme);
}

/* The diagnostics of a config text (static), "" when it loads. */
static const char *load(const char *text)
{
	static char dir[] = "/tmp/bridge-test-settings-XXXXXX", out[8192];
	static int made;
	char path[200];
	struct diag d = { 0 };
	struct bridge_config *c = NULL;
	FILE *f;

	if (!made && !mkdtemp(dir))
		return "(no temporary folder)";
	made = 1;
	snprintf(path, sizeof(path), "%s/bridge.conf", dir);
	f = fopen(path, "w");
	if (!f)
		return "(cannot write the config)";
	fputs(text, f);
	fclose(f);
	bridge_config_load(path, &c, &d);
	snprintf(out, sizeof(out), "%s", d.text ? d.text : "");
	diag_reset(&d);
	bridge_config_free(c);
	unlink(path);
	return out;
}

static int has(const char *hay, const char *needle)
{
	if (strstr(hay, needle))
		return 1;
	printf("#   wanted \"%s\" in:\n#   %s\n", needle, hay);
	return 0;
}

static void check_messages(void)
{
	const char *out;

	is_int(diag_edit_distance("max_bdy", 7, "max_body", 8), 1, "a deletion is one edit");
	is_int(diag_edit_distance("max_bdoy", 8, "max_body", 8), 1, "a swap is one edit");
	is_int(diag_edit_distance("port", 4, "path", 4), 3, "three substitutions are three edits");
	out = load("limits = { max_bdoy = 100; };\nlog_levle = \"info\";\nzzzz = 1;\n"
		   "queue = { max_atempts = 3; path = \"q.db\"; };\n");
	ok(has(out, "bridge.conf:1: unknown setting 'max_bdoy' in 'limits'; did you mean "
		    "'max_body'?"),
	   "a typo in a group: the nearest name");
	ok(has(out, "bridge.conf:2: unknown setting 'log_levle'; did you mean 'log_level'?"),
	   "a typo at the top level: the nearest name");
	ok(has(out, "bridge.conf:3: unknown setting 'zzzz'\n"), "no name near: no hint");
	ok(has(out, "bridge.conf:4: unknown setting 'max_atempts' in 'queue'; did you mean "
		    "'max_attempts'?"),
	   "the queue's settings: the nearest name");
	out = load("limits = { max_json_depth = 65; };\nqueue = { path = \"q.db\"; max_depth = 0; "
		   "};\n");
	ok(has(out, "bridge.conf:1: 'max_json_depth' = 65 is out of range [2, 64]"),
	   "a range from the table");
	ok(has(out, "bridge.conf:2: 'max_depth' = 0 is out of range [1, 1000000000]"),
	   "the queue's range from its table");
}

static void check_defaults(void)
{
	struct queue_config q;
	struct upstream_limits u;
	struct shared_config s;

	queue_config_default(&q);
	is_int(q.max_attempts, 10, "queue default max_attempts from its table");
	is_int(q.backoff_max_ms, 600000, "queue default backoff_max_ms from its table");
	ok(q.path == NULL, "queue: no default path");
	queue_config_clear(&q);
	upstream_limits_default(&u);
	is_int(u.max_connections, 64, "upstream default max_connections from its table");
	shared_config_default(&s);
	is_int(s.lease_ms, 30000, "shared default lease_ms from its table");
	shared_config_clear(&s);
}

int main(void)
{
	check_readme();
	check_messages();
	check_defaults();
	return tap_done();
}
