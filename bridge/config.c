#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge/buf.h"
#include "bridge/confread.h"
#include "bridge/config.h"
#include "bridge/convert.h"
#include "bridge/log.h"
#include "bridge/mapping.h"

static const char *const delivery_names[] = { "forward", "queued", NULL };
static const char *const mode_names[] = { "forward", "dry-run", "dual", NULL };
static const char *const encoding_names[] = { "hex", "base64", NULL }; /* enum sign_encoding */
static const char *const unrouted_names[] = { "reject", "accept", NULL };
static const char *const log_level_names[] = { "debug", "info", "warn", "error", NULL };

/* A URL path the listener serves: a rule of listen.path and dry_run.v2_path. */
static int url_path_check(const char *name, const char *v, char *why, size_t cap)
{
	if (v[0] == '/' && !strpbrk(v, "?# "))
		return 0;
	snprintf(why, cap, "'%s' must start with '/' and hold no '?', '#' or space", name);
	return -1;
}

static int header_name_check(const char *name, const char *v, char *why, size_t cap)
{
	if (upstream_header_name_valid(v))
		return 0;
	snprintf(why, cap, "'%s' = \"%s\" is not a valid HTTP header name", name, v);
	return -1;
}

#define C(member)                   CFG_FIELD(struct bridge_config, member)
#define C_INT(n, member, lo, hi, d) CFG_INT_ROW(n, struct bridge_config, member, lo, hi, d)
static const struct cfg_setting top_settings[] = {
	CFG_CUSTOM_ROW("listen"),
	CFG_CUSTOM_ROW("admin"),
	CFG_CUSTOM_ROW("limits"),
	CFG_CUSTOM_ROW("tls"),
	{ .name = "unrouted", .type = CFG_ENUM, C(unrouted_accept), .choices = unrouted_names },
	CFG_CUSTOM_ROW("match_keys"),
	CFG_CUSTOM_ROW("upstream"),
	/* -1: not set, so that --log-level and the built-in info apply */
	{ .name = "log_level",
	  .type = CFG_ENUM,
	  C(log_level),
	  .def = -1,
	  .choices = log_level_names,
	  .shown = "\"info\"" },
	{ .name = "workers", .type = CFG_INT, C(workers), .max = 256, .shown = "number of cores" },
	C_INT("log_buffer", log_buffer, 4096, 1 << 30, 4 << 20),
	CFG_CUSTOM_ROW("dry_run"),
	CFG_CUSTOM_ROW("record"),
	CFG_CUSTOM_ROW("queue"),
	CFG_CUSTOM_ROW("shared"),
	CFG_CUSTOM_ROW("routes"),
	{ .name = NULL },
};

static const struct cfg_setting listen_settings[] = {
	{ .name = "address", .type = CFG_TEXT, C(listen_address), .text = "127.0.0.1" },
	C_INT("port", listen_port, 0, 65535, 8080),
	{ .name = "path", .type = CFG_TEXT, C(listen_path), .text = "/", .check = url_path_check },
	{ .name = "reuseport", .type = CFG_BOOL, C(listen_reuseport) },
	CFG_CUSTOM_ROW("tls"),
	CFG_CUSTOM_ROW("auth"),
	CFG_CUSTOM_ROW("allow"),
	CFG_CUSTOM_ROW("trusted_proxies"),
	{ .name = NULL },
};

static const struct cfg_setting admin_settings[] = {
	{ .name = "address",
	  .type = CFG_TEXT,
	  CFG_FIELD(struct bridge_admin, address),
	  .text = "127.0.0.1" },
	CFG_INT_ROW("port", struct bridge_admin, port, 0, 65535, 9180),
	CFG_CUSTOM_ROW("tls"),
	CFG_CUSTOM_ROW("auth"),
	CFG_CUSTOM_ROW("allow"),
	{ .name = NULL },
};

/* listen.tls and admin.tls */
struct listener_tls {
	char *cert_file, *key_file;
};
static const struct cfg_setting listener_tls_settings[] = {
	{ .name = "cert_file", .type = CFG_FILE, CFG_FIELD(struct listener_tls, cert_file) },
	{ .name = "key_file", .type = CFG_FILE, CFG_FIELD(struct listener_tls, key_file) },
	{ .name = NULL },
};

static const struct cfg_setting limits_settings[] = {
	C_INT("max_body", max_body, 64, 64LL << 20, 1 << 20),
	C_INT("max_header_bytes", max_header_bytes, 1024, 1 << 20, 64 << 10),
	C_INT("max_json_depth", max_json_depth, 2, 64, 8),
	C_INT("max_keys", max_keys, 1, 100000, 1000),
	C_INT("max_string", max_string, 16, 16LL << 20, 65536),
	C_INT("max_headers", max_headers, 8, 10000, 100),
	C_INT("request_timeout_ms", request_timeout_ms, 100, 3600000, 30000),
	C_INT("request_deadline_ms", request_deadline_ms, 100, 3600000, 10000),
	{ .name = NULL },
};

static const struct cfg_setting tls_settings[] = {
	{ .name = "ca_file", .type = CFG_FILE, C(ca_file), .shown = "system trust store" },
	{ .name = NULL },
};

static const struct cfg_setting match_keys_settings[] = {
	{ .name = "website_id", .type = CFG_TEXT, C(website_key), .text = "website_id" },
	{ .name = "campaign_id", .type = CFG_TEXT, C(campaign_key), .text = "campaign_id" },
	{ .name = NULL },
};

static const struct cfg_setting record_settings[] = {
	{ .name = "path", .type = CFG_OUTPUT, C(record_path), .text = "LOGS_DIRECTORY" },
	C_INT("rotate_bytes", record_rotate_bytes, 0, 1LL << 40, 100 << 20),
	C_INT("keep", record_keep, 1, 1000, 5),
	CFG_CUSTOM_ROW("redact"),
	{ .name = "redact_defaults", .type = CFG_BOOL, C(record_redact_defaults), .def = 1 },
	CFG_CUSTOM_ROW("headers"),
	{ .name = NULL },
};

static const struct cfg_setting dry_run_settings[] = {
	{ .name = "report", .type = CFG_OUTPUT, C(report_path), .text = "LOGS_DIRECTORY" },
	C_INT("rotate_bytes", report_rotate_bytes, 0, 1LL << 40, 100 << 20),
	C_INT("keep", report_keep, 1, 1000, 5),
	{ .name = "stdout", .type = CFG_BOOL, C(dry_run_stdout), .def = 1 },
	{ .name = "v2_path", .type = CFG_TEXT, C(shadow_path), .check = url_path_check },
	{ .name = "v2_record", .type = CFG_OUTPUT, C(v2_record_path) },
	{ .name = "window_s",
	  .type = CFG_INT,
	  C(shadow_window_ms),
	  .min = 1,
	  .max = 7 * 86400,
	  .def = 3600,
	  .scale = 1000 },
	C_INT("max_entries", shadow_max_entries, 1, 10000000, 100000),
	{ .name = NULL },
};
#undef C
#undef C_INT

#define R(member)                   CFG_FIELD(struct bridge_route, member)
#define R_INT(n, member, lo, hi, d) CFG_INT_ROW(n, struct bridge_route, member, lo, hi, d)
static const struct cfg_setting route_settings[] = {
	{ .name = "name", .type = CFG_TEXT, R(name) },
	CFG_CUSTOM_ROW("mapping"),
	CFG_CUSTOM_ROW("endpoint"),
	{ .name = "mode", .type = CFG_ENUM, R(mode), .choices = mode_names },
	{ .name = "delivery", .type = CFG_ENUM, R(queued), .choices = delivery_names },
	CFG_CUSTOM_ROW("auth_header"),
	CFG_CUSTOM_ROW("secret"),
	CFG_CUSTOM_ROW("secret_file"),
	CFG_CUSTOM_ROW("secrets"),
	CFG_CUSTOM_ROW("secrets_file"),
	{ .name = "signature_header",
	  .type = CFG_TEXT,
	  R(signature_header),
	  .text = "X-Qualifio-Signature",
	  .check = header_name_check },
	{ .name = "signature_encoding",
	  .type = CFG_ENUM,
	  R(signature_encoding),
	  .choices = encoding_names },
	{ .name = "delivery_id_header",
	  .type = CFG_TEXT,
	  R(delivery_id_header),
	  .text = "X-Bridge-Delivery-Id",
	  .check = header_name_check },
	CFG_CUSTOM_ROW("match"),
	R_INT("timeout_ms", timeout_ms, 1, 600000, 10000),
	{ .name = "ca_file", .type = CFG_FILE, R(ca_file), .shown = "tls.ca_file" },
	CFG_CUSTOM_ROW("auth"),
	CFG_CUSTOM_ROW("legacy_endpoint"),
	CFG_CUSTOM_ROW("legacy_auth_header"),
	CFG_CUSTOM_ROW("headers"),
	CFG_CUSTOM_ROW("cutover"),
	{ .name = NULL },
};
#undef R
#undef R_INT

const struct cfg_table bridge_config_tables[] = {
	{ "", top_settings },
	{ "listen.", listen_settings },
	{ "listen.tls.", listener_tls_settings }, /* admin.tls too */
	{ "admin.", admin_settings },
	{ "limits.", limits_settings },
	{ "upstream.", upstream_limits_settings },
	{ "tls.", tls_settings },
	{ "match_keys.", match_keys_settings },
	{ "record.", record_settings },
	{ "dry_run.", dry_run_settings },
	{ "queue.", queue_settings },
	{ "shared.", shared_settings },
	{ "routes.", route_settings },
	{ NULL, NULL },
};

static const char *const cutover_keys[] = { "ramp", "copy", "rollback", NULL };
static const char *const rollback_keys[] = { "max_failure_rate", "window_s", "min_posts", NULL };
static const char *const auth_keys[] = { "name", "value", "value_file", NULL };
static const char *const match_keys[] = { "website_id", "campaign_id", NULL };

const char *route_mode_name(enum route_mode m)
{
	return m <= ROUTE_DUAL ? mode_names[m] : "?";
}

static char *xstrdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int header_value_valid(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 && *s != '\t')
			return 0;
	return 1;
}

/* An id list: array of integers or of numeric strings, kept as canonical text. */
static void load_ids(const config_setting_t *match, const char *name, char ***ret, size_t *n,
		     const char *file, struct diag *d)
{
	const config_setting_t *s = config_setting_get_member(match, name);
	int len;

	*ret = NULL;
	*n = 0;
	if (!s)
		return;
	if (!config_setting_is_array(s) && !config_setting_is_list(s)) {
		diag_add(d, cfg_file(s, file), cfg_line(s),
			 "'%s' must be an array of ids, e.g. [ 1234 ]", name);
		return;
	}
	len = config_setting_length(s);
	if (len == 0) {
		diag_add(d, cfg_file(s, file), cfg_line(s),
			 "'%s' is empty: it would match nothing (remove it to match any)", name);
		return;
	}
	*ret = calloc((size_t)len, sizeof(char *));
	for (int i = 0; i < len && *ret; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		char num[32], canon[32];
		struct bridge_error err;

		if (config_setting_type(e) == CONFIG_TYPE_INT ||
		    config_setting_type(e) == CONFIG_TYPE_INT64)
			snprintf(num, sizeof(num), "%lld", config_setting_get_int64(e));
		else if (config_setting_type(e) == CONFIG_TYPE_STRING)
			snprintf(num, sizeof(num), "%s", config_setting_get_string(e));
		else {
			diag_add(d, cfg_file(s, file), cfg_line(s), "'%s' element %d is not an id",
				 name, i);
			continue;
		}
		if (convert_integer(num, strlen(num), canon, sizeof(canon), &err) < 0) {
			diag_add(d, cfg_file(s, file), cfg_line(s), "'%s' element %d: %s", name, i,
				 err.message);
			continue;
		}
		(*ret)[(*n)++] = strdup(canon);
	}
}

static void load_secrets(const config_setting_t *g, struct bridge_route *r, const char *file,
			 struct diag *d)
{
	const config_setting_t *one = config_setting_get_member(g, "secret");
	const config_setting_t *many = config_setting_get_member(g, "secrets");
	const config_setting_t *one_file = config_setting_get_member(g, "secret_file");
	const config_setting_t *many_file = config_setting_get_member(g, "secrets_file");
	const char *v;
	char *text, *line, *save;
	size_t len;
	int n, rc;

	if ((one || one_file) && (many || many_file)) {
		diag_add(d, cfg_file(g, file), cfg_line(g),
			 "set 'secret' or 'secrets' (or their _file forms), not both");
		return;
	}
	if (one || one_file) {
		rc = cfg_get_secret(g, "secret", &text, &len, file, d);
		if (rc <= 0)
			return;
		r->inline_secret |= rc == 2;
		r->secrets = calloc(1, sizeof(char *));
		r->secret_lens = calloc(1, sizeof(size_t));
		if (!r->secrets || !r->secret_lens) {
			free(text);
			return;
		}
		r->secrets[0] = text;
		r->secret_lens[0] = len;
		r->n_secrets = 1;
		return;
	}
	if (many_file && !many) {
		/* one secret per line, the signing one first */
		if (cfg_get_secret(g, "secrets", &text, &len, file, d) <= 0)
			return;
		r->secrets = calloc(len / 2 + 2, sizeof(char *));
		r->secret_lens = calloc(len / 2 + 2, sizeof(size_t));
		for (line = strtok_r(text, "\r\n", &save); line && r->secrets && r->secret_lens;
		     line = strtok_r(NULL, "\r\n", &save)) {
			r->secrets[r->n_secrets] = strdup(line);
			r->secret_lens[r->n_secrets++] = strlen(line);
		}
		free(text);
		return;
	}
	if (!many)
		return;
	r->inline_secret = 1;
	if (many_file) {
		diag_add(d, cfg_file(many_file, file), cfg_line(many_file),
			 "set 'secrets' or 'secrets_file', not both");
		return;
	}
	if (!config_setting_is_array(many) || config_setting_length(many) < 1) {
		diag_add(d, cfg_file(many, file), cfg_line(many),
			 "'secrets' must be a non-empty array of strings, the signing one first");
		return;
	}
	n = config_setting_length(many);
	r->secrets = calloc((size_t)n, sizeof(char *));
	r->secret_lens = calloc((size_t)n, sizeof(size_t));
	if (!r->secrets || !r->secret_lens)
		return;
	for (int i = 0; i < n; i++) {
		v = config_setting_get_string_elem(many, (unsigned)i);
		if (!v || !*v) {
			diag_add(d, cfg_file(many, file), cfg_line(many),
				 "'secrets' element %d must be a non-empty string", i);
			continue;
		}
		if (strstr(v, "${")) {
			diag_add(d, cfg_file(many, file), cfg_line(many),
				 "'secrets' element %d holds '${': nothing is expanded; use "
				 "'secrets_file'",
				 i);
			continue;
		}
		r->secrets[r->n_secrets] = strdup(v);
		r->secret_lens[r->n_secrets++] = strlen(v);
	}
}

/* An array of non-empty strings, copied. */
static void load_strings(const config_setting_t *g, const char *name, char ***ret, size_t *n,
			 const char *file, struct diag *d)
{
	const config_setting_t *s = config_setting_get_member(g, name);
	int len;

	*ret = NULL;
	*n = 0;
	if (!s)
		return;
	if (!config_setting_is_array(s) || (len = config_setting_length(s)) == 0) {
		diag_add(d, cfg_file(s, file), cfg_line(s),
			 "'%s' must be a non-empty array of strings", name);
		return;
	}
	*ret = calloc((size_t)len, sizeof(char *));
	for (int i = 0; i < len && *ret; i++) {
		const char *v = config_setting_get_string_elem(s, (unsigned)i);

		if (!v || !*v)
			diag_add(d, cfg_file(s, file), cfg_line(s),
				 "'%s' element %d must be a non-empty string", name, i);
		else
			(*ret)[(*n)++] = strdup(v);
	}
}

/* A capture is read by more people than the config: it must never hold
 * the credential a sender presented to the bridge. */
static void check_record_headers(const struct bridge_config *c, const config_setting_t *root,
				 const char *file, struct diag *d)
{
	const config_setting_t *s = config_setting_lookup((config_setting_t *)root,
							  "record.headers");

	for (size_t i = 0; i < c->n_record_headers; i++) {
		const char *h = c->record_headers[i];
		int secret = strcasecmp(h, "Authorization") == 0 ||
			     strcasecmp(h, "Proxy-Authorization") == 0 ||
			     strcasecmp(h, "Cookie") == 0 ||
			     (c->auth.header_name && strcasecmp(h, c->auth.header_name) == 0);

		for (size_t k = 0; k < c->n_routes && !secret; k++)
			secret = c->routes[k].auth.header_name &&
				 strcasecmp(h, c->routes[k].auth.header_name) == 0;
		if (secret)
			diag_add(d, cfg_file(s, file), cfg_line(s),
				 "record.headers names '%s', which carries an inbound credential: "
				 "a capture never stores it",
				 h);
	}
}

static size_t tls_index_for(struct bridge_config *c, const char *ca_file)
{
	const char *key = ca_file ? ca_file : "";
	char **grown;

	for (size_t i = 0; i < c->n_tls_files; i++)
		if (strcmp(c->tls_files[i], key) == 0)
			return i;
	grown = grow_array(c->tls_files, &c->cap_tls_files, c->n_tls_files + 1, sizeof(char *), 4);
	if (!grown)
		return 0;
	c->tls_files = grown;
	c->tls_files[c->n_tls_files] = strdup(key);
	return c->n_tls_files++;
}

/* `key = { name = "..."; value = "..."; };`: a header the bridge sends. */
/* name and value (or value_file): 2 with the value inline, 1 from a file,
 * 0 absent, -1 refused. */
static int load_header_pair(const config_setting_t *g, const char *key, char **ret_name,
			    char **ret_value, const char *file, struct diag *d)
{
	const config_setting_t *auth = cfg_get_group(g, key, file, d);
	const char *an = NULL;
	char *av = NULL;
	size_t avn;
	int rc;

	if (!auth)
		return 0;
	cfg_check_keys(auth, auth_keys, file, d);
	if (cfg_get_text(auth, "name", &an, file, d) == 1 && !upstream_header_name_valid(an))
		diag_add(d, cfg_file(auth, file), cfg_line(auth),
			 "%s name \"%s\" is not a valid HTTP header name", key, an);
	rc = cfg_get_secret(auth, "value", &av, &avn, file, d);
	if (av && !header_value_valid(av))
		diag_add(d, cfg_file(auth, file), cfg_line(auth),
			 "%s value must not contain control characters", key);
	if (!an || (!av && rc == 0))
		diag_add(d, cfg_file(auth, file), cfg_line(auth),
			 "%s needs both 'name' and 'value' (or 'value_file')", key);
	*ret_name = xstrdup(an);
	*ret_value = av;
	return rc;
}

/* `headers = ( { name = "X-Tenant"; value = "acme"; }, ... );`: static
 * headers sent with every v2 delivery of the route.  Names the bridge sets
 * itself (or that are hop-by-hop) are refused here rather than at every
 * post. */
static void load_route_headers(const config_setting_t *g, struct bridge_route *r, const char *file,
			       struct diag *d)
{
	static const char *const own[] = {
		"Host",       "Content-Length",    "Content-Type", "User-Agent",
		"Connection", "Transfer-Encoding", "Keep-Alive",   "TE",
		"Trailer",    "Upgrade",           "traceparent",  "X-Request-Id",
		NULL
	};
	const config_setting_t *list = config_setting_get_member(g, "headers");
	int len = list ? config_setting_length(list) : 0;

	if (!list)
		return;
	if (!config_setting_is_list(list) || len > ROUTE_HEADERS_MAX) {
		diag_add(d, cfg_file(list, file), cfg_line(list),
			 "'headers' must be a list of at most %d { name; value; } groups",
			 ROUTE_HEADERS_MAX);
		return;
	}
	r->header_names = calloc((size_t)len + 1, sizeof(char *));
	r->header_values = calloc((size_t)len + 1, sizeof(char *));
	for (int i = 0; i < len && r->header_names && r->header_values; i++) {
		const config_setting_t *h = config_setting_get_elem(list, (unsigned)i);
		const char *name = NULL, *value = NULL;
		int clash = 0;

		if (!config_setting_is_group(h)) {
			diag_add(d, cfg_file(list, file), cfg_line(h),
				 "'headers' element %d must be a { name; value; } group", i);
			continue;
		}
		cfg_check_keys(h, auth_keys, file, d);
		if (cfg_get_text(h, "name", &name, file, d) != 1 ||
		    cfg_get_string(h, "value", &value, file, d) != 1 ||
		    !upstream_header_name_valid(name) || !header_value_valid(value)) {
			diag_add(d, cfg_file(h, file), cfg_line(h),
				 "'headers' element %d needs a header 'name' and a 'value' "
				 "without control characters",
				 i);
			continue;
		}
		for (int k = 0; own[k]; k++)
			clash |= strcasecmp(name, own[k]) == 0;
		if (clash || strncasecmp(name, "Proxy-", 6) == 0) {
			diag_add(d, cfg_file(h, file), cfg_line(h),
				 "'headers': '%s' is set by the bridge itself or is hop-by-hop",
				 name);
			continue;
		}
		r->header_names[r->n_headers] = xstrdup(name);
		r->header_values[r->n_headers++] = xstrdup(value);
	}
}

/* The refusal quotes the URL with its password and query values masked:
 * the error output reaches people the config's secrets do not. */
static void endpoint_refused(const config_setting_t *g, const char *name, const char *url,
			     const char *why, const char *file, struct diag *d)
{
	char shown[512];

	upstream_url_redact(url, shown, sizeof(shown));
	diag_add(d, cfg_file(g, file), cfg_line(config_setting_get_member(g, name)), "%s '%s': %s",
		 name, shown, why);
}

/* A rate 0..1, written as a float (0.05) or an integer (0, 1). */
static void load_rate(const config_setting_t *g, const char *name, double *out, const char *file,
		      struct diag *d)
{
	const config_setting_t *s = config_setting_get_member(g, name);
	double v;

	if (!s)
		return;
	if (config_setting_type(s) == CONFIG_TYPE_FLOAT)
		v = config_setting_get_float(s);
	else if (config_setting_type(s) == CONFIG_TYPE_INT ||
		 config_setting_type(s) == CONFIG_TYPE_INT64)
		v = (double)config_setting_get_int64(s);
	else {
		diag_add(d, cfg_file(s, file), cfg_line(s), "'%s' must be a number 0..1", name);
		return;
	}
	if (!(v >= 0 && v <= 1)) {
		diag_add(d, cfg_file(s, file), cfg_line(s), "'%s' = %g is out of range [0, 1]",
			 name, v);
		return;
	}
	*out = v;
}

/* `cutover = { ramp; copy; rollback = { max_failure_rate; window_s; min_posts; }; }`:
 * dual routes only (they have both importers). */
static void load_cutover(const config_setting_t *g, struct bridge_route *r, const char *file,
			 struct diag *d)
{
	const config_setting_t *cg = cfg_get_group(g, "cutover", file, d), *rb;
	long long n;

	cutover_route_config_default(&r->cutover);
	if (!cg)
		return;
	if (r->mode != ROUTE_DUAL) {
		diag_add(d, cfg_file(cg, file), cfg_line(cg),
			 "route '%s': cutover needs mode = \"dual\" (both endpoint and "
			 "legacy_endpoint)",
			 r->name ? r->name : "?");
		return;
	}
	cfg_check_keys(cg, cutover_keys, file, d);
	if (cfg_get_int(cg, "ramp", 0, 100, &n, file, d) == 1)
		r->cutover.ramp = (int)n;
	cfg_get_bool(cg, "copy", &r->cutover.copy, file, d);
	rb = cfg_get_group(cg, "rollback", file, d);
	if (!rb)
		return;
	cfg_check_keys(rb, rollback_keys, file, d);
	load_rate(rb, "max_failure_rate", &r->cutover.max_failure_rate, file, d);
	if (cfg_get_int(rb, "window_s", 10, CUTOVER_WINDOW_MAX, &n, file, d) == 1)
		r->cutover.window_s = (int)n;
	if (cfg_get_int(rb, "min_posts", 1, 1000000, &n, file, d) == 1)
		r->cutover.min_posts = (int)n;
}

/* The route's rule file, loaded (its own errors merged into d). */
static void load_route_mapping(const config_setting_t *g, struct bridge_route *r, const char *file,
			       struct diag *d)
{
	const config_setting_t *s = config_setting_get_member(g, "mapping");
	const char *v, *name = r->name ? r->name : "?";
	struct diag md = { 0 };

	if (cfg_get_text(g, "mapping", &v, file, d) != 1) {
		if (!s)
			diag_add(d, cfg_file(g, file), cfg_line(g), "route '%s' has no 'mapping'",
				 name);
		return;
	}
	r->mapping_file = cfg_resolve_path(file, v);
	if (access(r->mapping_file, R_OK) != 0) {
		diag_add(d, cfg_file(g, file), cfg_line(s), "route '%s': mapping '%s': %s", name,
			 r->mapping_file, strerror(errno));
	} else if (mapping_load(r->mapping_file, &r->mapping, &md) < 0) {
		diag_merge(d, &md);
		diag_add(d, cfg_file(g, file), cfg_line(s),
			 "route '%s': mapping '%s' did not load (%d error(s) above)", name,
			 r->mapping_file, md.count);
	}
	diag_reset(&md);
}

/* endpoint (v2) and legacy_endpoint (v1), each required where the mode
 * sends there. */
static void load_route_endpoints(const config_setting_t *g, struct bridge_route *r,
				 const char *file, struct diag *d)
{
	const char *v, *name = r->name ? r->name : "?";
	struct bridge_error err;

	if (cfg_get_text(g, "endpoint", &v, file, d) == 1) {
		if (upstream_url_parse(v, &r->url, &err) < 0)
			endpoint_refused(g, "endpoint", v, err.message, file, d);
		else
			r->endpoint = strdup(v);
	} else if (ROUTE_SENDS_V2(r) && !config_setting_get_member(g, "endpoint")) {
		diag_add(d, cfg_file(g, file), cfg_line(g),
			 "route '%s' is in %s mode but has no 'endpoint'", name,
			 route_mode_name(r->mode));
	}
	if (cfg_get_text(g, "legacy_endpoint", &v, file, d) == 1) {
		if (upstream_url_parse(v, &r->legacy_url, &err) < 0)
			endpoint_refused(g, "legacy_endpoint", v, err.message, file, d);
		else
			r->legacy_endpoint = strdup(v);
		if (r->mode == ROUTE_FORWARD)
			diag_add(d, cfg_file(g, file),
				 cfg_line(config_setting_get_member(g, "legacy_endpoint")),
				 "route '%s': legacy_endpoint is for dry-run and dual modes, not "
				 "forward",
				 name);
	} else if (r->mode == ROUTE_DUAL && !config_setting_get_member(g, "legacy_endpoint")) {
		diag_add(d, cfg_file(g, file), cfg_line(g),
			 "route '%s' is in dual mode but has no 'legacy_endpoint' (the "
			 "authoritative v1 importer)",
			 name);
	}
}

/* Whether the route's mode was refused (the table reported it): the route
 * is then taken as dry-run, which adds no forward-only complaints. */
static int mode_refused(const config_setting_t *g)
{
	const config_setting_t *s = config_setting_get_member(g, "mode");

	return s && (config_setting_type(s) != CONFIG_TYPE_STRING ||
		     !cfg_name_in(mode_names, config_setting_get_string(s)));
}

static void load_route(struct bridge_config *c, const config_setting_t *g, struct bridge_route *r,
		       const char *file, struct diag *d)
{
	static const char *const secret_names[] = { "secret", "secrets", "secret_file",
						    "secrets_file", NULL };
	const config_setting_t *match;
	int has_secret = 0;

	r->line = cfg_line(g);
	cfg_table_defaults(route_settings, r);
	if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
		diag_add(d, cfg_file(g, file), cfg_line(g), "each route must be a group { ... }");
		return;
	}
	cfg_table_load(g, route_settings, r, file, d);
	if (!config_setting_get_member(g, "name"))
		diag_add(d, cfg_file(g, file), cfg_line(g), "route has no 'name'");
	for (struct bridge_route *o = c->routes; o < r; o++)
		if (r->name && o->name && strcmp(o->name, r->name) == 0)
			diag_add(d, cfg_file(g, file), cfg_line(g),
				 "route name '%s' is already used at line %d", r->name, o->line);
	if (mode_refused(g))
		r->mode = ROUTE_DRY_RUN;
	if (r->queued && r->mode != ROUTE_FORWARD)
		diag_add(d, cfg_file(g, file), cfg_line(config_setting_get_member(g, "delivery")),
			 "delivery = \"queued\" needs mode = \"forward\"");
	load_route_mapping(g, r, file, d);
	load_route_endpoints(g, r, file, d);

	r->inline_secret |= load_header_pair(g, "auth_header", &r->auth_name, &r->auth_value, file,
					     d) == 2;
	load_route_headers(g, r, file, d);
	r->inline_secret |= load_header_pair(g, "legacy_auth_header", &r->legacy_auth_name,
					     &r->legacy_auth_value, file, d) == 2;
	load_secrets(g, r, file, d);
	for (const char *const *n = secret_names; *n; n++)
		has_secret |= config_setting_get_member(g, *n) != NULL;
	if (ROUTE_SENDS_V2(r) && r->n_secrets == 0 && !has_secret)
		diag_add(d, cfg_file(g, file), cfg_line(g),
			 "route '%s' is in %s mode but has no 'secret' to sign with",
			 r->name ? r->name : "?", route_mode_name(r->mode));

	match = cfg_get_group(g, "match", file, d);
	if (match) {
		cfg_check_keys(match, match_keys, file, d);
		load_ids(match, "website_id", &r->website_ids, &r->n_website_ids, file, d);
		load_ids(match, "campaign_id", &r->campaign_ids, &r->n_campaign_ids, file, d);
	}
	if (r->endpoint && r->url.https)
		r->tls_index = tls_index_for(c, r->ca_file ? r->ca_file : c->ca_file);
	if (r->legacy_endpoint && r->legacy_url.https)
		r->legacy_tls_index = tls_index_for(c, r->ca_file ? r->ca_file : c->ca_file);
	access_auth_load(cfg_get_group(g, "auth", file, d), file, &r->auth, d);
	load_cutover(g, r, file, d);
}

/* What `listen` and `admin` share besides their tables: tls, auth, allow. */
static void load_listener(const config_setting_t *g, const char *name, char **cert, char **key,
			  struct access_auth *auth, struct access_list *allow, const char *path,
			  struct diag *d)
{
	const config_setting_t *lt = cfg_get_group(g, "tls", path, d);
	struct listener_tls tls = { 0 };

	if (lt) {
		cfg_table_load(lt, listener_tls_settings, &tls, path, d);
		*cert = tls.cert_file;
		*key = tls.key_file;
		if (!tls.cert_file || !tls.key_file)
			diag_add(d, path, cfg_line(lt), "%s.tls needs 'cert_file' and 'key_file'",
				 name);
	}
	access_auth_load(cfg_get_group(g, "auth", path, d), path, auth, d);
	access_list_load(config_setting_get_member(g, "allow"), path, allow, d);
}

/* What the groups' own code reads (their CFG_CUSTOM rows), after their
 * tables, when the group is present. */
static void listen_rest(const config_setting_t *g, struct bridge_config *c, const char *path,
			struct diag *d)
{
	load_listener(g, "listen", &c->listen_cert_file, &c->listen_key_file, &c->auth, &c->allow,
		      path, d);
	access_list_load(config_setting_get_member(g, "trusted_proxies"), path, &c->trusted_proxies,
			 d);
}

static void admin_rest(const config_setting_t *g, struct bridge_config *c, const char *path,
		       struct diag *d)
{
	c->admin.enabled = 1;
	load_listener(g, "admin", &c->admin.cert_file, &c->admin.key_file, &c->admin.auth,
		      &c->admin.allow, path, d);
}

static void record_rest(const config_setting_t *g, struct bridge_config *c, const char *path,
			struct diag *d)
{
	if (!config_setting_get_member(g, "path"))
		diag_add(d, path, cfg_line(g), "'record' needs a 'path' for the capture file");
	load_strings(g, "redact", &c->record_redact, &c->n_record_redact, path, d);
	load_strings(g, "headers", &c->record_headers, &c->n_record_headers, path, d);
}

static void load_routes(const config_setting_t *root, struct bridge_config *c, const char *path,
			struct diag *d)
{
	const config_setting_t *routes = cfg_get_list(root, "routes", path, d);
	int len = routes ? config_setting_length(routes) : 0;

	if (!routes) {
		if (!config_setting_get_member(root, "routes"))
			diag_add(d, path, 0, "no 'routes' list: add at least one route");
		return;
	}
	c->routes = calloc(len ? (size_t)len : 1, sizeof(*c->routes));
	for (int i = 0; i < len && c->routes; i++) {
		load_route(c, config_setting_get_elem(routes, (unsigned)i), &c->routes[i], path, d);
		c->n_routes++;
	}
	if (len == 0)
		diag_add(d, path, cfg_line(routes), "'routes' is empty: add at least one route");
}

/* What no one group can check alone. */
static void check_across(const config_setting_t *root, struct bridge_config *c, const char *path,
			 struct diag *d)
{
	if (c->shadow_path && strcmp(c->shadow_path, c->listen_path) == 0)
		diag_add(d, path, 0, "dry_run.v2_path must differ from listen.path");
	if (c->admin.enabled && c->admin.port && c->admin.port == c->listen_port &&
	    strcmp(c->admin.address, c->listen_address) == 0)
		diag_add(d, path, 0, "admin and listen cannot share %s port %d", c->listen_address,
			 c->listen_port);
	check_record_headers(c, root, path, d);
	for (size_t i = 0; i < c->n_routes; i++)
		if (c->routes[i].queued && !queue_config_has_store(&c->queue))
			diag_add(d, path, c->routes[i].line,
				 "route '%s' has delivery = \"queued\" but there is no "
				 "queue { path = \"...\"; } group nor shared group",
				 c->routes[i].name ? c->routes[i].name : "?");
}

/* The groups read by their tables, in the order they are read: where each
 * one's struct lies in bridge_config and what its own code reads. */
static const struct {
	const char *name; /* NULL: the top level */
	const struct cfg_setting *settings;
	size_t at;
	void (*rest)(const config_setting_t *g, struct bridge_config *c, const char *path,
		     struct diag *d);
	int defaults_if_present; /* admin: no address nor port without the group */
} groups[] = {
	{ NULL, top_settings, 0, NULL, 0 },
	{ "listen", listen_settings, 0, listen_rest, 0 },
	{ "admin", admin_settings, offsetof(struct bridge_config, admin), admin_rest, 1 },
	{ "limits", limits_settings, 0, NULL, 0 },
	{ "upstream", upstream_limits_settings, offsetof(struct bridge_config, upstream), NULL, 0 },
	{ "tls", tls_settings, 0, NULL, 0 },
	{ "record", record_settings, 0, record_rest, 0 },
	{ "dry_run", dry_run_settings, 0, NULL, 0 },
	{ "match_keys", match_keys_settings, 0, NULL, 0 },
};
#define N_GROUPS (sizeof(groups) / sizeof(groups[0]))

int bridge_config_load(const char *path, struct bridge_config **ret, struct diag *d)
{
	struct bridge_config *c = calloc(1, sizeof(*c));
	const config_setting_t *root, *g;
	config_t cfg;
	int errors_before = d->count;

	*ret = NULL;
	if (!c)
		return diag_add(d, path, 0, "out of memory");
	c->path = strdup(path);
	upstream_limits_default(&c->upstream);
	for (size_t i = 0; i < N_GROUPS; i++)
		if (!groups[i].defaults_if_present)
			cfg_table_defaults(groups[i].settings, (char *)c + groups[i].at);
	if (cfg_read(&cfg, path, d) < 0) {
		config_destroy(&cfg);
		bridge_config_free(c);
		return -1;
	}
	root = config_root_setting(&cfg);
	for (size_t i = 0; i < N_GROUPS; i++) {
		g = groups[i].name ? cfg_get_group(root, groups[i].name, path, d) : root;
		if (!g)
			continue;
		if (groups[i].defaults_if_present)
			cfg_table_defaults(groups[i].settings, (char *)c + groups[i].at);
		cfg_table_load(g, groups[i].settings, (char *)c + groups[i].at, path, d);
		if (groups[i].rest)
			groups[i].rest(g, c, path, d);
	}
	load_routes(root, c, path, d);
	queue_config_load(root, path, &c->queue, d);
	check_across(root, c, path, d);
	config_destroy(&cfg);
	if (d->count > errors_before) {
		bridge_config_free(c);
		return -1;
	}
	*ret = c;
	return 0;
}

static void free_list(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void bridge_config_free(struct bridge_config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_routes; i++) {
		struct bridge_route *r = &c->routes[i];

		free(r->name);
		free(r->mapping_file);
		mapping_free(r->mapping);
		free(r->endpoint);
		free(r->legacy_endpoint);
		free(r->auth_name);
		free(r->auth_value);
		free_list(r->header_names, r->n_headers);
		free_list(r->header_values, r->n_headers);
		free(r->legacy_auth_name);
		free(r->legacy_auth_value);
		free_list(r->secrets, r->n_secrets);
		free(r->secret_lens);
		free(r->signature_header);
		free(r->delivery_id_header);
		free_list(r->website_ids, r->n_website_ids);
		free_list(r->campaign_ids, r->n_campaign_ids);
		free(r->ca_file);
		access_auth_clear(&r->auth);
	}
	free(c->routes);
	queue_config_clear(&c->queue);
	free_list(c->tls_files, c->n_tls_files);
	free(c->path);
	free(c->listen_address);
	free(c->listen_path);
	free(c->ca_file);
	free(c->website_key);
	free(c->campaign_key);
	free(c->record_path);
	free_list(c->record_redact, c->n_record_redact);
	free_list(c->record_headers, c->n_record_headers);
	free(c->report_path);
	free(c->shadow_path);
	free(c->v2_record_path);
	free(c->listen_cert_file);
	free(c->listen_key_file);
	access_auth_clear(&c->auth);
	access_list_clear(&c->allow);
	access_list_clear(&c->trusted_proxies);
	free(c->admin.address);
	free(c->admin.cert_file);
	free(c->admin.key_file);
	access_auth_clear(&c->admin.auth);
	access_list_clear(&c->admin.allow);
	free(c);
}
