#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge/confread.h"
#include "bridge/config.h"
#include "bridge/convert.h"
#include "bridge/log.h"
#include "bridge/mapping.h"

static const char *const top_keys[] = { "listen",     "limits",   "tls",       "unrouted",
					"match_keys", "upstream", "log_level", "workers",
					"log_buffer", "dry_run",  "record",    "queue",
					"shared",     "routes",   "admin",     NULL };
static const char *const record_keys[] = { "path",   "rotate_bytes",    "keep",
					   "redact", "redact_defaults", "headers",
					   NULL };
static const char *const dry_run_keys[] = { "report",   "rotate_bytes", "keep",
					    "stdout",   "v2_path",      "v2_record",
					    "window_s", "max_entries",  NULL };
static const char *const listen_keys[] = {
	"address", "port", "path", "tls", "auth", "allow", "trusted_proxies", "reuseport", NULL
};
static const char *const admin_keys[] = { "address", "port", "tls", "auth", "allow", NULL };
static const char *const listen_tls_keys[] = { "cert_file", "key_file", NULL };
static const char *const limits_keys[] = {
	"max_body",    "max_header_bytes",   "max_json_depth",      "max_keys", "max_string",
	"max_headers", "request_timeout_ms", "request_deadline_ms", NULL
};
static const char *const tls_keys[] = { "ca_file", NULL };
static const char *const match_key_keys[] = { "website_id", "campaign_id", NULL };
static const char *const upstream_keys[] = { "max_connections", "max_response_body",
					     "idle_timeout_ms", NULL };
static const char *const route_keys[] = { "name",
					  "mapping",
					  "endpoint",
					  "mode",
					  "delivery",
					  "auth_header",
					  "secret",
					  "secret_file",
					  "secrets",
					  "secrets_file",
					  "signature_header",
					  "signature_encoding",
					  "delivery_id_header",
					  "match",
					  "timeout_ms",
					  "ca_file",
					  "auth",
					  "legacy_endpoint",
					  "legacy_auth_header",
					  "headers",
					  "cutover",
					  NULL };
static const char *const cutover_keys[] = { "ramp", "copy", "rollback", NULL };
static const char *const rollback_keys[] = { "max_failure_rate", "window_s", "min_posts", NULL };
static const char *const auth_keys[] = { "name", "value", "value_file", NULL };
static const char *const match_keys[] = { "website_id", "campaign_id", NULL };
static const char *const delivery_names[] = { "forward", "queued", NULL };
static const char *const mode_names[] = { "forward", "dry-run", "dual", NULL };

const char *route_mode_name(enum route_mode m)
{
	return m <= ROUTE_DUAL ? mode_names[m] : "?";
}
static const char *const unrouted_names[] = { "reject", "accept", NULL };

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

static void get_header_name(const config_setting_t *g, const char *name, char **out,
			    const char *deflt, const char *file, struct diag *d)
{
	const char *v = deflt;

	if (cfg_get_text(g, name, &v, file, d) == 1 && !upstream_header_name_valid(v)) {
		diag_add(d, cfg_file(g, file), cfg_line(config_setting_get_member(g, name)),
			 "'%s' = \"%s\" is not a valid HTTP header name", name, v);
		v = deflt;
	}
	*out = xstrdup(v);
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
	grown = realloc(c->tls_files, (c->n_tls_files + 1) * sizeof(char *));
	if (!grown)
		return 0;
	c->tls_files = grown;
	c->tls_files[c->n_tls_files] = strdup(key);
	return c->n_tls_files++;
}

static void check_readable(const config_setting_t *s, const char *what, const char *path,
			   const char *file, struct diag *d)
{
	if (access(path, R_OK) != 0)
		diag_add(d, cfg_file(s, file), cfg_line(s), "%s '%s': %s", what, path,
			 strerror(errno));
}

/* A file setting: resolved against the config's folder and checked readable;
 * *ret stays as it is when the setting is absent. */
static void load_file(const config_setting_t *g, const char *name, char **ret, const char *file,
		      struct diag *d)
{
	const char *v;

	if (cfg_get_text(g, name, &v, file, d) != 1)
		return;
	free(*ret);
	*ret = cfg_resolve_path(file, v);
	check_readable(config_setting_get_member(g, name), name, *ret, file, d);
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

static void load_route(struct bridge_config *c, const config_setting_t *g, struct bridge_route *r,
		       const char *file, struct diag *d)
{
	const config_setting_t *match;
	const char *v;
	int mode = ROUTE_FORWARD, enc = SIGN_HEX;
	long long timeout = 10000;
	struct bridge_error err;

	r->line = cfg_line(g);
	r->timeout_ms = 10000;
	if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
		diag_add(d, cfg_file(g, file), cfg_line(g), "each route must be a group { ... }");
		return;
	}
	cfg_check_keys(g, route_keys, file, d);
	if (cfg_get_text(g, "name", &v, file, d) == 1)
		r->name = strdup(v);
	else if (!config_setting_get_member(g, "name"))
		diag_add(d, cfg_file(g, file), cfg_line(g), "route has no 'name'");
	for (struct bridge_route *o = c->routes; o < r; o++)
		if (r->name && o->name && strcmp(o->name, r->name) == 0)
			diag_add(d, cfg_file(g, file), cfg_line(g),
				 "route name '%s' is already used at line %d", r->name, o->line);

	if (cfg_get_enum(g, "mode", mode_names, &mode, file, d) < 0)
		mode = ROUTE_DRY_RUN; /* already reported: do not add forward-only complaints */
	r->mode = (enum route_mode)mode;
	{
		int delivery = 0;

		if (cfg_get_enum(g, "delivery", delivery_names, &delivery, file, d) == 1 &&
		    delivery == 1) {
			if (r->mode != ROUTE_FORWARD)
				diag_add(d, cfg_file(g, file),
					 cfg_line(config_setting_get_member(g, "delivery")),
					 "delivery = \"queued\" needs mode = \"forward\"");
			r->queued = 1;
		}
	}

	if (cfg_get_text(g, "mapping", &v, file, d) == 1) {
		struct diag md = { 0 };

		r->mapping_file = cfg_resolve_path(file, v);
		if (access(r->mapping_file, R_OK) != 0) {
			diag_add(d, cfg_file(g, file),
				 cfg_line(config_setting_get_member(g, "mapping")),
				 "route '%s': mapping '%s': %s", r->name ? r->name : "?",
				 r->mapping_file, strerror(errno));
		} else if (mapping_load(r->mapping_file, &r->mapping, &md) < 0) {
			diag_merge(d, &md);
			diag_add(d, cfg_file(g, file),
				 cfg_line(config_setting_get_member(g, "mapping")),
				 "route '%s': mapping '%s' did not load (%d error(s) above)",
				 r->name ? r->name : "?", r->mapping_file, md.count);
		}
		diag_reset(&md);
	} else if (!config_setting_get_member(g, "mapping")) {
		diag_add(d, cfg_file(g, file), cfg_line(g), "route '%s' has no 'mapping'",
			 r->name ? r->name : "?");
	}

	if (cfg_get_text(g, "endpoint", &v, file, d) == 1) {
		if (upstream_url_parse(v, &r->url, &err) < 0)
			endpoint_refused(g, "endpoint", v, err.message, file, d);
		else
			r->endpoint = strdup(v);
	} else if (ROUTE_SENDS_V2(r) && !config_setting_get_member(g, "endpoint")) {
		diag_add(d, cfg_file(g, file), cfg_line(g),
			 "route '%s' is in %s mode but has no 'endpoint'", r->name ? r->name : "?",
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
				 r->name ? r->name : "?");
	} else if (r->mode == ROUTE_DUAL && !config_setting_get_member(g, "legacy_endpoint")) {
		diag_add(d, cfg_file(g, file), cfg_line(g),
			 "route '%s' is in dual mode but has no 'legacy_endpoint' (the "
			 "authoritative v1 importer)",
			 r->name ? r->name : "?");
	}

	r->inline_secret |= load_header_pair(g, "auth_header", &r->auth_name, &r->auth_value, file,
					     d) == 2;
	load_route_headers(g, r, file, d);
	r->inline_secret |= load_header_pair(g, "legacy_auth_header", &r->legacy_auth_name,
					     &r->legacy_auth_value, file, d) == 2;
	load_secrets(g, r, file, d);
	if (ROUTE_SENDS_V2(r) && r->n_secrets == 0 && !config_setting_get_member(g, "secret") &&
	    !config_setting_get_member(g, "secrets") &&
	    !config_setting_get_member(g, "secret_file") &&
	    !config_setting_get_member(g, "secrets_file"))
		diag_add(d, cfg_file(g, file), cfg_line(g),
			 "route '%s' is in %s mode but has no 'secret' to sign with",
			 r->name ? r->name : "?", route_mode_name(r->mode));

	get_header_name(g, "signature_header", &r->signature_header, "X-Qualifio-Signature", file,
			d);
	get_header_name(g, "delivery_id_header", &r->delivery_id_header, "X-Bridge-Delivery-Id",
			file, d);
	if (cfg_get_string(g, "signature_encoding", &v, file, d) == 1) {
		enum sign_encoding e;

		if (sign_encoding_parse(v, &e) < 0)
			diag_add(d, cfg_file(g, file),
				 cfg_line(config_setting_get_member(g, "signature_encoding")),
				 "'signature_encoding' = \"%s\" is not one of: hex | base64", v);
		else
			enc = (int)e;
	}
	r->signature_encoding = (enum sign_encoding)enc;

	match = cfg_get_group(g, "match", file, d);
	if (match) {
		cfg_check_keys(match, match_keys, file, d);
		load_ids(match, "website_id", &r->website_ids, &r->n_website_ids, file, d);
		load_ids(match, "campaign_id", &r->campaign_ids, &r->n_campaign_ids, file, d);
	}
	if (cfg_get_int(g, "timeout_ms", 1, 600000, &timeout, file, d) == 1)
		r->timeout_ms = (int)timeout;
	load_file(g, "ca_file", &r->ca_file, file, d);
	if (r->endpoint && r->url.https)
		r->tls_index = tls_index_for(c, r->ca_file ? r->ca_file : c->ca_file);
	if (r->legacy_endpoint && r->legacy_url.https)
		r->legacy_tls_index = tls_index_for(c, r->ca_file ? r->ca_file : c->ca_file);
	access_auth_load(cfg_get_group(g, "auth", file, d), file, &r->auth, d);
	load_cutover(g, r, file, d);
}

static void load_size(const config_setting_t *g, const char *name, long long min, long long max,
		      size_t *out, const char *file, struct diag *d)
{
	long long v;

	if (g && cfg_get_int(g, name, min, max, &v, file, d) == 1)
		*out = (size_t)v;
}

/* What `listen` and `admin` share: address, port, tls, auth, allow.  l holds
 * the defaults on entry. */
static void load_listener(const config_setting_t *g, const char *name, struct bridge_admin *l,
			  const char *path, struct diag *d)
{
	const config_setting_t *lt;
	const char *v;
	long long n;

	if (cfg_get_text(g, "address", &v, path, d) == 1) {
		free(l->address);
		l->address = strdup(v);
	}
	if (cfg_get_int(g, "port", 0, 65535, &n, path, d) == 1)
		l->port = (int)n;
	lt = cfg_get_group(g, "tls", path, d);
	if (lt) {
		cfg_check_keys(lt, listen_tls_keys, path, d);
		load_file(lt, "cert_file", &l->cert_file, path, d);
		load_file(lt, "key_file", &l->key_file, path, d);
		if (!l->cert_file || !l->key_file)
			diag_add(d, path, cfg_line(lt), "%s.tls needs 'cert_file' and 'key_file'",
				 name);
	}
	access_auth_load(cfg_get_group(g, "auth", path, d), path, &l->auth, d);
	access_list_load(config_setting_get_member(g, "allow"), path, &l->allow, d);
}

int bridge_config_load(const char *path, struct bridge_config **ret, struct diag *d)
{
	struct bridge_config *c = calloc(1, sizeof(*c));
	const config_setting_t *root, *g, *routes;
	config_t cfg;
	const char *v;
	int errors_before = d->count, unrouted = 0;
	long long n;

	*ret = NULL;
	if (!c)
		return diag_add(d, path, 0, "out of memory");
	c->path = strdup(path);
	c->listen_port = 8080;
	c->max_body = 1024 * 1024;
	c->max_header_bytes = 64 * 1024;
	c->max_json_depth = 8;
	c->max_keys = 1000;
	c->max_string = 65536;
	c->max_headers = 100;
	c->request_timeout_ms = 30000;
	c->request_deadline_ms = 10000;
	upstream_limits_default(&c->upstream);

	if (cfg_read(&cfg, path, d) < 0) {
		config_destroy(&cfg);
		bridge_config_free(c);
		return -1;
	}
	root = config_root_setting(&cfg);
	cfg_check_keys(root, top_keys, path, d);

	c->listen_address = strdup("127.0.0.1");
	c->listen_path = strdup("/");
	g = cfg_get_group(root, "listen", path, d);
	if (g) {
		struct bridge_admin l = { .address = c->listen_address, .port = c->listen_port };

		cfg_check_keys(g, listen_keys, path, d);
		load_listener(g, "listen", &l, path, d);
		c->listen_address = l.address;
		c->listen_port = l.port;
		c->listen_cert_file = l.cert_file;
		c->listen_key_file = l.key_file;
		cfg_get_bool(g, "reuseport", &c->listen_reuseport, path, d);
		c->auth = l.auth;
		c->allow = l.allow;
		access_list_load(config_setting_get_member(g, "trusted_proxies"), path,
				 &c->trusted_proxies, d);
		if (cfg_get_text(g, "path", &v, path, d) == 1) {
			if (v[0] != '/' || strpbrk(v, "?# "))
				diag_add(
					d, cfg_file(g, path),
					cfg_line(config_setting_get_member(g, "path")),
					"'path' must start with '/' and hold no '?', '#' or space");
			free(c->listen_path);
			c->listen_path = strdup(v);
		}
	}
	g = cfg_get_group(root, "admin", path, d);
	if (g) {
		c->admin.enabled = 1;
		c->admin.address = strdup("127.0.0.1");
		c->admin.port = 9180;
		cfg_check_keys(g, admin_keys, path, d);
		load_listener(g, "admin", &c->admin, path, d);
	}

	g = cfg_get_group(root, "limits", path, d);
	if (g) {
		cfg_check_keys(g, limits_keys, path, d);
		load_size(g, "max_body", 64, 64LL * 1024 * 1024, &c->max_body, path, d);
		load_size(g, "max_header_bytes", 1024, 1024 * 1024, &c->max_header_bytes, path, d);
		load_size(g, "max_json_depth", 2, 64, &c->max_json_depth, path, d);
		load_size(g, "max_keys", 1, 100000, &c->max_keys, path, d);
		load_size(g, "max_string", 16, 16LL * 1024 * 1024, &c->max_string, path, d);
		load_size(g, "max_headers", 8, 10000, &c->max_headers, path, d);
		if (cfg_get_int(g, "request_timeout_ms", 100, 3600000, &n, path, d) == 1)
			c->request_timeout_ms = (int)n;
		if (cfg_get_int(g, "request_deadline_ms", 100, 3600000, &n, path, d) == 1)
			c->request_deadline_ms = (int)n;
	}

	g = cfg_get_group(root, "upstream", path, d);
	if (g) {
		cfg_check_keys(g, upstream_keys, path, d);
		load_size(g, "max_connections", 1, 10000, &c->upstream.max_connections, path, d);
		load_size(g, "max_response_body", 1024, 64LL * 1024 * 1024,
			  &c->upstream.max_response_body, path, d);
		if (cfg_get_int(g, "idle_timeout_ms", 100, 3600000, &n, path, d) == 1)
			c->upstream.idle_timeout_ms = (int)n;
	}

	g = cfg_get_group(root, "tls", path, d);
	if (g) {
		cfg_check_keys(g, tls_keys, path, d);
		load_file(g, "ca_file", &c->ca_file, path, d);
	}

	if (cfg_get_int(root, "workers", 0, 256, &n, path, d) == 1)
		c->workers = (int)n;
	c->log_buffer = 4u << 20;
	if (cfg_get_int(root, "log_buffer", 4096, 1 << 30, &n, path, d) == 1)
		c->log_buffer = (size_t)n;
	c->log_level = -1;
	if (cfg_get_string(root, "log_level", &v, path, d) == 1) {
		enum log_level lv;

		if (log_level_parse(v, &lv) < 0)
			diag_add(d, path, cfg_line(config_setting_get_member(root, "log_level")),
				 "'log_level' = \"%s\" is not one of: debug | info | warn | error",
				 v);
		else
			c->log_level = (int)lv;
	}

	c->record_rotate_bytes = 100ULL * 1024 * 1024;
	c->record_keep = 5;
	c->record_redact_defaults = 1;
	g = cfg_get_group(root, "record", path, d);
	if (g) {
		cfg_check_keys(g, record_keys, path, d);
		if (cfg_get_text(g, "path", &v, path, d) == 1)
			c->record_path = cfg_resolve_state_path(path, "LOGS_DIRECTORY", v);
		else if (!config_setting_get_member(g, "path"))
			diag_add(d, path, cfg_line(g),
				 "'record' needs a 'path' for the capture file");
		if (cfg_get_int(g, "rotate_bytes", 0, 1LL << 40, &n, path, d) == 1)
			c->record_rotate_bytes = (unsigned long long)n;
		if (cfg_get_int(g, "keep", 1, 1000, &n, path, d) == 1)
			c->record_keep = (unsigned)n;
		cfg_get_bool(g, "redact_defaults", &c->record_redact_defaults, path, d);
		load_strings(g, "redact", &c->record_redact, &c->n_record_redact, path, d);
		load_strings(g, "headers", &c->record_headers, &c->n_record_headers, path, d);
	}

	c->dry_run_stdout = 1;
	c->report_rotate_bytes = 100ULL * 1024 * 1024;
	c->report_keep = 5;
	c->shadow_window_ms = 3600000;
	c->shadow_max_entries = 100000;
	g = cfg_get_group(root, "dry_run", path, d);
	if (g) {
		cfg_check_keys(g, dry_run_keys, path, d);
		if (cfg_get_text(g, "report", &v, path, d) == 1)
			c->report_path = cfg_resolve_state_path(path, "LOGS_DIRECTORY", v);
		if (cfg_get_int(g, "rotate_bytes", 0, 1LL << 40, &n, path, d) == 1)
			c->report_rotate_bytes = (unsigned long long)n;
		if (cfg_get_int(g, "keep", 1, 1000, &n, path, d) == 1)
			c->report_keep = (unsigned)n;
		cfg_get_bool(g, "stdout", &c->dry_run_stdout, path, d);
		if (cfg_get_text(g, "v2_path", &v, path, d) == 1) {
			if (v[0] != '/' || strpbrk(v, "?# "))
				diag_add(d, path, cfg_line(config_setting_get_member(g, "v2_path")),
					 "'v2_path' must start with '/' and hold no '?', '#' or "
					 "space");
			c->shadow_path = strdup(v);
		}
		if (cfg_get_text(g, "v2_record", &v, path, d) == 1)
			c->v2_record_path = cfg_resolve_path(path, v);
		if (cfg_get_int(g, "window_s", 1, 7 * 86400, &n, path, d) == 1)
			c->shadow_window_ms = (long)n * 1000;
		load_size(g, "max_entries", 1, 10000000, &c->shadow_max_entries, path, d);
	}

	cfg_get_enum(root, "unrouted", unrouted_names, &unrouted, path, d);
	c->unrouted_accept = unrouted == 1;

	c->website_key = strdup("website_id");
	c->campaign_key = strdup("campaign_id");
	g = cfg_get_group(root, "match_keys", path, d);
	if (g) {
		cfg_check_keys(g, match_key_keys, path, d);
		if (cfg_get_text(g, "website_id", &v, path, d) == 1) {
			free(c->website_key);
			c->website_key = strdup(v);
		}
		if (cfg_get_text(g, "campaign_id", &v, path, d) == 1) {
			free(c->campaign_key);
			c->campaign_key = strdup(v);
		}
	}

	routes = cfg_get_list(root, "routes", path, d);
	if (routes) {
		int len = config_setting_length(routes);

		c->routes = calloc(len ? (size_t)len : 1, sizeof(*c->routes));
		for (int i = 0; i < len && c->routes; i++) {
			load_route(c, config_setting_get_elem(routes, (unsigned)i), &c->routes[i],
				   path, d);
			c->n_routes++;
		}
		if (len == 0)
			diag_add(d, path, cfg_line(routes),
				 "'routes' is empty: add at least one route");
	} else if (!config_setting_get_member(root, "routes")) {
		diag_add(d, path, 0, "no 'routes' list: add at least one route");
	}

	if (c->shadow_path && strcmp(c->shadow_path, c->listen_path) == 0)
		diag_add(d, path, 0, "dry_run.v2_path must differ from listen.path");
	if (c->admin.enabled && c->admin.port && c->admin.port == c->listen_port &&
	    strcmp(c->admin.address, c->listen_address) == 0)
		diag_add(d, path, 0, "admin and listen cannot share %s port %d", c->listen_address,
			 c->listen_port);
	check_record_headers(c, root, path, d);
	queue_config_load(root, path, &c->queue, d);
	for (size_t i = 0; i < c->n_routes; i++)
		if (c->routes[i].queued && !queue_config_has_store(&c->queue))
			diag_add(d, path, c->routes[i].line,
				 "route '%s' has delivery = \"queued\" but there is no "
				 "queue { path = \"...\"; } group nor shared group",
				 c->routes[i].name ? c->routes[i].name : "?");
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
