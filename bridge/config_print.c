/*
 * config_print: the effective configuration as libconfig text (`check
 * --print-config`).  It is printed from the loaded struct, so every default
 * the loader filled in shows; paths are the resolved ones.  Secrets never
 * appear: each is CONFIG_PRINT_MASK, and endpoint URLs have their password
 * and query values masked, so the output can go into a ticket and still
 * passes `check` as it is.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "bridge/config.h"
#include "bridge/log.h"
#include "bridge/shared.h"

/* A libconfig string: quote, backslash and control bytes escaped. */
static void str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\x%02x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static void kv_str(FILE *f, const char *ind, const char *k, const char *v)
{
	fprintf(f, "%s%s = ", ind, k);
	str(f, v);
	fputs(";\n", f);
}

static void kv_int(FILE *f, const char *ind, const char *k, long long v)
{
	/* libconfig reads a wider integer only with its L suffix */
	fprintf(f, "%s%s = %lld%s;\n", ind, k, v, v > INT32_MAX || v < INT32_MIN ? "L" : "");
}

static void kv_bool(FILE *f, const char *ind, const char *k, int v)
{
	fprintf(f, "%s%s = %s;\n", ind, k, v ? "true" : "false");
}

/* A path as an absolute one, so that the text works from any folder. */
static void kv_path(FILE *f, const char *ind, const char *k, const char *path)
{
	char real[PATH_MAX], cwd[PATH_MAX], joined[2 * PATH_MAX + 2];

	if (path[0] == '/' || !getcwd(cwd, sizeof(cwd))) {
		kv_str(f, ind, k, path);
	} else if (realpath(path, real)) {
		kv_str(f, ind, k, real);
	} else {
		snprintf(joined, sizeof(joined), "%s/%s", cwd, path);
		kv_str(f, ind, k, joined);
	}
}

static void kv_url(FILE *f, const char *ind, const char *k, const char *url)
{
	char shown[2048];

	upstream_url_redact(url, shown, sizeof(shown));
	kv_str(f, ind, k, shown);
}

static void kv_list(FILE *f, const char *ind, const char *k, char *const *v, size_t n)
{
	fprintf(f, "%s%s = [ ", ind, k);
	for (size_t i = 0; i < n; i++) {
		if (i)
			fputs(", ", f);
		str(f, v[i]);
	}
	fputs(" ];\n", f);
}

static void cidrs(FILE *f, const char *ind, const char *k, const struct access_list *l)
{
	char text[INET6_ADDRSTRLEN];

	if (!l->n)
		return;
	fprintf(f, "%s%s = [ ", ind, k);
	for (size_t i = 0; i < l->n; i++) {
		const struct access_cidr *c = &l->items[i];

		inet_ntop(c->family, c->addr, text, sizeof(text));
		fprintf(f, "%s\"%s/%d\"", i ? ", " : "", text, c->bits);
	}
	fputs(" ];\n", f);
}

static void pair(FILE *f, const char *ind, const char *group, const char *k1, const char *v1,
		 const char *k2)
{
	if (!v1)
		return;
	fprintf(f, "%s  %s = { %s = ", ind, group, k1);
	str(f, v1);
	fprintf(f, "; %s = \"%s\"; };\n", k2, CONFIG_PRINT_MASK);
}

static void auth(FILE *f, const char *ind, const struct access_auth *a)
{
	if (!a->enabled)
		return;
	fprintf(f, "%sauth = {\n", ind);
	pair(f, ind, "basic", "user", a->basic_user, "password");
	pair(f, ind, "query", "name", a->query_name, "value");
	pair(f, ind, "header", "name", a->header_name, "value");
	fprintf(f, "%s};\n", ind);
}

static void tls_pair(FILE *f, const char *ind, const char *cert, const char *key)
{
	if (!cert)
		return;
	fprintf(f, "%stls = {\n", ind);
	kv_path(f, "    ", "cert_file", cert);
	kv_path(f, "    ", "key_file", key);
	fprintf(f, "%s};\n", ind);
}

static void header(FILE *f, const char *ind, const char *k, const char *name, int masked,
		   const char *value)
{
	if (!name)
		return;
	fprintf(f, "%s%s = { name = ", ind, k);
	str(f, name);
	fputs("; value = ", f);
	str(f, masked ? CONFIG_PRINT_MASK : value);
	fputs("; };\n", f);
}

static void route(FILE *f, const struct bridge_route *r, int last)
{
	const char *ind = "    ";

	fputs("  {\n", f);
	kv_str(f, ind, "name", r->name);
	kv_path(f, ind, "mapping", r->mapping_file);
	kv_str(f, ind, "mode", route_mode_name(r->mode));
	kv_str(f, ind, "delivery", r->queued ? "queued" : "forward");
	if (r->endpoint)
		kv_url(f, ind, "endpoint", r->endpoint);
	if (r->legacy_endpoint)
		kv_url(f, ind, "legacy_endpoint", r->legacy_endpoint);
	if (r->n_secrets == 1) {
		kv_str(f, ind, "secret", CONFIG_PRINT_MASK);
	} else if (r->n_secrets > 1) {
		fprintf(f, "%ssecrets = [ ", ind);
		for (size_t i = 0; i < r->n_secrets; i++)
			fprintf(f, "%s\"%s\"", i ? ", " : "", CONFIG_PRINT_MASK);
		fputs(" ];\n", f);
	}
	kv_str(f, ind, "signature_header", r->signature_header);
	kv_str(f, ind, "signature_encoding",
	       r->signature_encoding == SIGN_BASE64 ? "base64" : "hex");
	kv_str(f, ind, "delivery_id_header", r->delivery_id_header);
	header(f, ind, "auth_header", r->auth_name, 1, NULL);
	header(f, ind, "legacy_auth_header", r->legacy_auth_name, 1, NULL);
	if (r->n_headers) {
		fprintf(f, "%sheaders = (\n", ind);
		for (size_t i = 0; i < r->n_headers; i++) {
			fprintf(f, "%s  { name = ", ind);
			str(f, r->header_names[i]);
			fputs("; value = ", f);
			str(f, r->header_values[i]);
			fprintf(f, "; }%s\n", i + 1 < r->n_headers ? "," : "");
		}
		fprintf(f, "%s);\n", ind);
	}
	if (r->n_website_ids || r->n_campaign_ids) {
		fprintf(f, "%smatch = {\n", ind);
		if (r->n_website_ids)
			kv_list(f, "      ", "website_id", r->website_ids, r->n_website_ids);
		if (r->n_campaign_ids)
			kv_list(f, "      ", "campaign_id", r->campaign_ids, r->n_campaign_ids);
		fprintf(f, "%s};\n", ind);
	}
	kv_int(f, ind, "timeout_ms", r->timeout_ms);
	if (r->mode == ROUTE_DUAL) {
		fprintf(f, "%scutover = {\n", ind);
		kv_int(f, "      ", "ramp", r->cutover.ramp);
		kv_bool(f, "      ", "copy", r->cutover.copy);
		fprintf(f, "      rollback = {\n        max_failure_rate = %.15g%s;\n",
			r->cutover.max_failure_rate,
			r->cutover.max_failure_rate ==
					(double)(long long)r->cutover.max_failure_rate
				? ".0"
				: "");
		kv_int(f, "        ", "window_s", r->cutover.window_s);
		kv_int(f, "        ", "min_posts", r->cutover.min_posts);
		fprintf(f, "      };\n%s};\n", ind);
	}
	if (r->ca_file)
		kv_path(f, ind, "ca_file", r->ca_file);
	auth(f, ind, &r->auth);
	fprintf(f, "  }%s\n", last ? "" : ",");
}

void bridge_config_print(const struct bridge_config *c, FILE *f)
{
	const char *ind = "  ";

	fputs("# the effective configuration of ", f);
	str(f, c->path);
	fputs(": every default filled in, secrets masked\n", f);
	fputs("listen = {\n", f);
	kv_str(f, ind, "address", c->listen_address);
	kv_int(f, ind, "port", c->listen_port);
	kv_str(f, ind, "path", c->listen_path);
	kv_bool(f, ind, "reuseport", c->listen_reuseport);
	tls_pair(f, ind, c->listen_cert_file, c->listen_key_file);
	auth(f, ind, &c->auth);
	cidrs(f, ind, "allow", &c->allow);
	cidrs(f, ind, "trusted_proxies", &c->trusted_proxies);
	fputs("};\n", f);
	if (c->admin.enabled) {
		fputs("admin = {\n", f);
		kv_str(f, ind, "address", c->admin.address);
		kv_int(f, ind, "port", c->admin.port);
		tls_pair(f, ind, c->admin.cert_file, c->admin.key_file);
		auth(f, ind, &c->admin.auth);
		cidrs(f, ind, "allow", &c->admin.allow);
		fputs("};\n", f);
	}
	fputs("limits = {\n", f);
	kv_int(f, ind, "max_body", (long long)c->max_body);
	kv_int(f, ind, "max_header_bytes", (long long)c->max_header_bytes);
	kv_int(f, ind, "max_json_depth", (long long)c->max_json_depth);
	kv_int(f, ind, "max_keys", (long long)c->max_keys);
	kv_int(f, ind, "max_string", (long long)c->max_string);
	kv_int(f, ind, "max_headers", (long long)c->max_headers);
	kv_int(f, ind, "request_timeout_ms", c->request_timeout_ms);
	kv_int(f, ind, "request_deadline_ms", c->request_deadline_ms);
	fputs("};\n", f);
	fputs("upstream = {\n", f);
	kv_int(f, ind, "max_connections", (long long)c->upstream.max_connections);
	kv_int(f, ind, "max_response_body", (long long)c->upstream.max_response_body);
	kv_int(f, ind, "idle_timeout_ms", c->upstream.idle_timeout_ms);
	fputs("};\n", f);
	if (c->ca_file) {
		fputs("tls = {\n", f);
		kv_path(f, ind, "ca_file", c->ca_file);
		fputs("};\n", f);
	} else {
		fputs("# tls.ca_file: not set, the system's trust store\n", f);
	}
	kv_str(f, "", "unrouted", c->unrouted_accept ? "accept" : "reject");
	fputs("match_keys = {\n", f);
	kv_str(f, ind, "website_id", c->website_key);
	kv_str(f, ind, "campaign_id", c->campaign_key);
	fputs("};\n", f);
	kv_str(f, "", "log_level",
	       log_level_name(c->log_level >= 0 ? (enum log_level)c->log_level : LOG_INFO));
	kv_int(f, "", "workers", c->workers);
	if (!c->workers)
		fputs("# workers = 0: one per core\n", f);
	kv_int(f, "", "log_buffer", (long long)c->log_buffer);
	fputs("dry_run = {\n", f);
	if (c->report_path)
		kv_path(f, ind, "report", c->report_path);
	kv_int(f, ind, "rotate_bytes", (long long)c->report_rotate_bytes);
	kv_int(f, ind, "keep", c->report_keep);
	kv_bool(f, ind, "stdout", c->dry_run_stdout);
	if (c->shadow_path)
		kv_str(f, ind, "v2_path", c->shadow_path);
	if (c->v2_record_path)
		kv_path(f, ind, "v2_record", c->v2_record_path);
	kv_int(f, ind, "window_s", c->shadow_window_ms / 1000);
	kv_int(f, ind, "max_entries", (long long)c->shadow_max_entries);
	fputs("};\n", f);
	if (c->record_path) {
		fputs("record = {\n", f);
		kv_path(f, ind, "path", c->record_path);
		kv_int(f, ind, "rotate_bytes", (long long)c->record_rotate_bytes);
		kv_int(f, ind, "keep", c->record_keep);
		kv_bool(f, ind, "redact_defaults", c->record_redact_defaults);
		if (c->n_record_redact)
			kv_list(f, ind, "redact", c->record_redact, c->n_record_redact);
		if (c->n_record_headers)
			kv_list(f, ind, "headers", c->record_headers, c->n_record_headers);
		fputs("};\n", f);
	}
	if (c->queue.shared.url) {
		char shown[2048];

		fputs("shared = {\n", f);
		kv_str(f, ind, "url", shared_url_shown(c->queue.shared.url, shown, sizeof(shown)));
		if (c->queue.shared.password)
			kv_str(f, ind, "password", CONFIG_PRINT_MASK);
		kv_int(f, ind, "connections", c->queue.shared.connections);
		kv_int(f, ind, "lease_ms", c->queue.shared.lease_ms);
		kv_int(f, ind, "poll_ms", c->queue.shared.poll_ms);
		if (c->queue.shared.instance)
			kv_str(f, ind, "instance", c->queue.shared.instance);
		else
			fputs("  # instance: not set, the host name\n", f);
		fputs("};\n", f);
	}
	if (c->queue.path) {
		fputs("queue = {\n", f);
		kv_path(f, ind, "path", c->queue.path);
		kv_int(f, ind, "max_attempts", c->queue.max_attempts);
		kv_int(f, ind, "max_age_s", c->queue.max_age_s);
		kv_int(f, ind, "backoff_base_ms", c->queue.backoff_base_ms);
		kv_int(f, ind, "backoff_max_ms", c->queue.backoff_max_ms);
		kv_int(f, ind, "per_endpoint_concurrency", c->queue.per_endpoint_concurrency);
		kv_int(f, ind, "max_depth", c->queue.max_depth);
		kv_str(f, ind, "secure_delete", c->queue.secure_delete ? "on" : "fast");
		kv_int(f, ind, "delivery_nice", c->queue.delivery_nice);
		fputs("};\n", f);
	}
	fputs("routes = (\n", f);
	for (size_t i = 0; i < c->n_routes; i++)
		route(f, &c->routes[i], i + 1 == c->n_routes);
	fputs(");\n", f);
}
