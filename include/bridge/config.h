/*
 * config: the server configuration (libconfig) and its routes.
 *
 * bridge_config_load reads and validates the whole file, loads every route's
 * mapping, and reports every problem as "file:line: message" in a diag.  The
 * loaded config is immutable and owns everything it points to (strings are
 * copied out of libconfig, whose strings die with config_destroy); share it read-only.
 */
#ifndef BRIDGE_CONFIG_H
#define BRIDGE_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "bridge/access.h"
#include "bridge/confread.h"
#include "bridge/cutover.h"
#include "bridge/diag.h"
#include "bridge/sign.h"
#include "bridge/upstream.h"
#include "bridge/queue.h"

struct mapping;

enum route_mode {
	ROUTE_FORWARD, /* deliver the signed v2 and answer with the endpoint's outcome */
	ROUTE_DRY_RUN, /* report the v2 it would send; answer 200, or legacy_endpoint's outcome */
	ROUTE_DUAL,    /* v1 to legacy_endpoint (authoritative) and v2 to endpoint, at once */
};

/* The route sends v2 to `endpoint`. */
#define ROUTE_HEADERS_MAX 16 /* a route's static extra headers */
#define ROUTE_SENDS_V2(r) ((r)->mode == ROUTE_FORWARD || (r)->mode == ROUTE_DUAL)

const char *route_mode_name(enum route_mode m);

struct bridge_route {
	char *name;
	int line;                /* where the route starts in the config file */
	char *mapping_file;      /* resolved path */
	struct mapping *mapping; /* owned */
	enum route_mode mode;
	char *endpoint;          /* NULL allowed in dry-run */
	struct upstream_url url; /* parsed endpoint (valid when endpoint != NULL) */
	char *legacy_endpoint;   /* v1 passthrough: required in dual, optional in dry-run */
	struct upstream_url legacy_url;
	size_t legacy_tls_index;
	char *auth_name;   /* NULL when no auth header */
	int inline_secret; /* a secret or auth value written in the config itself */
	char *auth_value;
	char **header_names, **header_values; /* `headers`: static extra headers, in order */
	size_t n_headers;                     /* at most ROUTE_HEADERS_MAX */
	char *legacy_auth_name; /* legacy_auth_header: sent to legacy_endpoint, or NULL */
	char *legacy_auth_value;
	char **secrets; /* secrets[0] signs; all verify */
	size_t *secret_lens;
	size_t n_secrets;
	char *signature_header; /* default X-Qualifio-Signature */
	enum sign_encoding signature_encoding;
	char *delivery_id_header; /* default X-Bridge-Delivery-Id */
	char **website_ids;       /* canonical decimal text; empty = any */
	size_t n_website_ids;
	char **campaign_ids;
	size_t n_campaign_ids;
	int timeout_ms;          /* default 10000 */
	char *ca_file;           /* NULL: tls.ca_file */
	size_t tls_index;        /* index into bridge_config.tls_files */
	struct access_auth auth; /* required in addition to listen.auth */
	int queued; /* delivery = "queued": stored, answered 202, delivered by the queue */
	/* mode = "dual": both importers, the share answered by v2 steered at run
	 * time (cutover.h); `cutover` group or its defaults */
	struct cutover_route_config cutover;
};

/* The admin listener (admin = { … }): /metrics, /readyz, /healthz,
 * /dry-run/summary, apart from the webhook listener that faces the internet. */
struct bridge_admin {
	int enabled;     /* an admin group is present */
	char *address;   /* default 127.0.0.1 */
	int port;        /* default 9180; 0 = ephemeral */
	char *cert_file; /* admin.tls */
	char *key_file;
	struct access_auth auth;  /* admin.auth */
	struct access_list allow; /* admin.allow; empty = anyone */
};

struct bridge_config {
	char *path;
	char *listen_address;   /* default 127.0.0.1 */
	int listen_port;        /* default 8080; 0 = ephemeral */
	int listen_reuseport;   /* listen.reuseport: let other processes share the port */
	char *listen_path;      /* default "/" */
	char *listen_cert_file; /* listen.tls: the bridge is the HTTPS URL itself */
	char *listen_key_file;
	struct access_auth auth;  /* listen.auth */
	struct access_list allow; /* listen.allow; empty = anyone */
	struct access_list
		trusted_proxies; /* listen.trusted_proxies: their X-Forwarded-For is logged */
	size_t max_body;         /* default 1 MiB */
	size_t max_header_bytes; /* default 64 KiB */
	size_t max_json_depth;   /* default 8 */
	size_t max_keys;         /* default 1000 */
	size_t max_string;       /* bytes in one v1 key or value, default 65536 */
	size_t max_headers;      /* request header lines, default 100 */
	int request_timeout_ms;  /* inbound idle timeout, default 30000 */
	int request_deadline_ms; /* first byte to whole request, default 10000 */
	char *ca_file;           /* tls.ca_file; NULL = system default trust */
	int unrouted_accept;     /* unrouted = "accept" */
	char *website_key;       /* match_keys.website_id, default "website_id" */
	char *campaign_key;      /* match_keys.campaign_id, default "campaign_id" */
	int log_level;           /* enum log_level, -1 when not set */
	int workers;             /* event-loop threads sharing the port; 0 = one per core */
	size_t log_buffer;       /* log_buffer: bytes held per stream for a slow reader */
	struct upstream_limits upstream;
	struct bridge_route *routes;
	size_t n_routes;
	char *record_path; /* record.path: capture of inbound v1 posts, or NULL */
	unsigned long long record_rotate_bytes; /* record.rotate_bytes, default 100 MiB */
	unsigned record_keep;                   /* record.keep, default 5 */
	unsigned long long report_rotate_bytes; /* dry_run.rotate_bytes, default 100 MiB */
	unsigned report_keep;                   /* dry_run.keep, default 5 */
	int record_redact_defaults;             /* record.redact_defaults, default true */
	char **record_redact;                   /* record.redact: extra patterns */
	size_t n_record_redact;
	char **record_headers; /* record.headers: NULL = the module's default list */
	size_t n_record_headers;
	char *report_path;         /* dry_run.report: JSON lines, one per translated post */
	int dry_run_stdout;        /* dry_run.stdout: echo each v2 to stdout (default 1) */
	char *shadow_path;         /* dry_run.v2_path: real v2 posts are compared here */
	char *v2_record_path;      /* dry_run.v2_record: capture of verified real v2 posts */
	long shadow_window_ms;     /* dry_run.window_s */
	size_t shadow_max_entries; /* dry_run.max_entries */
	char **tls_files; /* distinct CA files used by https routes ("" = system default) */
	size_t n_tls_files, cap_tls_files;
	struct queue_config queue; /* queue.path NULL when there is no queue group */
	struct bridge_admin admin;
};

int bridge_config_load(const char *path, struct bridge_config **ret, struct diag *d);
/* Every settings table of the file, with the prefix of its names (the
 * README's configuration tables are checked against them); ends with a
 * NULL prefix. */
extern const struct cfg_table bridge_config_tables[];
void bridge_config_free(struct bridge_config *c); /* accepts NULL */

/* The effective configuration as libconfig text on f (bridge/config_print.c):
 * every setting with the default the loader filled in, resolved paths, every
 * secret as CONFIG_PRINT_MASK and endpoint URLs with their credentials
 * masked.  The text loads again as it is (check passes it). */
#define CONFIG_PRINT_MASK "********"
void bridge_config_print(const struct bridge_config *c, FILE *f);

#endif
