/*
 * The `queue` command: inspect and repair the store while serve runs.
 */
#include <errno.h>
#include <limits.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "bridge/clock.h"
#include "bridge/confread.h"
#include "cli.h"
#include "bridge/log.h"
#include "bridge/queue.h"
#include "bridge/store.h"
#include "cmd_out.h"

#define QUEUE_CMD_BUSY_MS 5000

static const char usage_queue[] =
	"usage: webhook-bridge queue (--config FILE | --store PATH) COMMAND [options]\n"
	"\n"
	"Inspects and repairs the store of queued delivery; safe while serve runs.\n"
	"--config FILE reads the store's path from the file's queue { path = ...; },\n"
	"or its shared { url = ...; } group; --store takes a path or a postgresql:// URL.\n"
	"\n"
	"commands:\n"
	"  list [--pending | --dead] [--route NAME] [--limit N] [--newest] [--json]\n"
	"         one line per delivery, oldest first (default limit 100; 0 = all)\n"
	"  show ID [--json] [--reveal]\n"
	"         one delivery with its headers and body; credentials masked\n"
	"         unless --reveal\n"
	"  retry ID... | retry --all [--route NAME] [--older-than SECONDS]\n"
	"         a dead letter goes back to pending with a fresh attempt count;\n"
	"         a pending delivery becomes due now; --all: every dead letter\n"
	"  purge ID... | purge --dead [--route NAME] [--older-than SECONDS]\n"
	"              | purge --all --yes\n"
	"         delete deliveries for good (--all includes pending ones)\n"
	"  stats  depth, dead letters and oldest age, in the /metrics format\n"
	"  recover [--output FILE]\n"
	"         save every row SQLite can still read from a damaged store (it is\n"
	"         only read) into a new store FILE (default: the store's path +\n"
	"         \".recovered\"; must not exist), ids, headers, body and attempt\n"
	"         state kept; says how many rows were saved and which ids were\n"
	"         unreadable.  serve can start on FILE.\n"
	"\n"
	"exit: 0 done, 1 an ID was not found or could not be retried,\n"
	"      2 usage, configuration or store error\n";

struct opts {
	const char *config, *store, *output;
	int pending, dead, all, yes, newest, json, reveal;
	const char *route;
	long long limit;
	long long older_than_s;
};

static int parse_count(const char *s, long long min, long long *ret)
{
	return cli_int_parse(s, min, LLONG_MAX, ret);
}

static void time_text(int64_t ms, char *buf, size_t cap)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (ms <= 0 || !gmtime_r(&t, &tm)) {
		snprintf(buf, cap, "-");
		return;
	}
	snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* "3d4h", "5m3s", "12s", "0s"; negative spans print as "-". */
static void span_text(int64_t ms, char *buf, size_t cap)
{
	int64_t s = ms / 1000;

	if (ms < 0)
		snprintf(buf, cap, "-");
	else if (s >= 86400)
		snprintf(buf, cap, "%lldd%lldh", (long long)(s / 86400),
			 (long long)(s % 86400 / 3600));
	else if (s >= 3600)
		snprintf(buf, cap, "%lldh%lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
	else if (s >= 60)
		snprintf(buf, cap, "%lldm%llds", (long long)(s / 60), (long long)(s % 60));
	else
		snprintf(buf, cap, "%llds", (long long)s);
}

static void json_str(FILE *out, const char *s)
{
	json_fput_quoted(out, s, strlen(s), JSON_ESC_LOG);
}

/* A stored header value shown without --reveal.  By name nothing tells a
 * credential apart (an auth_header may be called X-Access-Code), so every
 * value is masked except the headers the bridge itself writes: the body's
 * type and length, the agent, and the delivery id (whatever the route names
 * its header, its value is the row's delivery id) and the signature (an
 * HMAC of the body shown beside it, "sha256=...", not a credential). */
static int header_shown(const struct store_row *r, const struct upstream_header *h)
{
	static const char *const plain[] = { "Content-Type", "Content-Length", "User-Agent", "Host",
					     NULL };

	for (int i = 0; plain[i]; i++)
		if (strcasecmp(h->name, plain[i]) == 0)
			return 1;
	return strcmp(h->value, r->delivery_id) == 0 || strncmp(h->value, "sha256=", 7) == 0;
}

static const char *status_name(int status)
{
	return status == STORE_DEAD ? "dead" : "pending";
}

/* The store, from --store (a path or a postgresql:// URL) or the config's
 * queue.path or shared group: 0 and *ret (the SQLite store's path,
 * malloc'd) or *ret_shared (url set: the shared store), with the flags
 * the config asks the SQLite store to be opened with in *ret_flags (when
 * not NULL), or the exit status. */
static int store_path_find(const struct opts *o, char **ret, struct shared_config *ret_shared,
			   unsigned *ret_flags)
{
	struct queue_config qc;
	const char *path = o->store;

	*ret = NULL;
	if (ret_flags)
		*ret_flags = 0;
	shared_config_default(ret_shared);
	queue_config_default(&qc);
	if (o->config) {
		struct diag d = { 0 };
		config_t cfg;

		if (cfg_read(&cfg, o->config, &d) < 0 ||
		    queue_config_load(config_root_setting(&cfg), o->config, &qc, &d) < 0) {
			fputs(d.text ? d.text : "", stderr);
			config_destroy(&cfg);
			diag_reset(&d);
			return 2;
		}
		config_destroy(&cfg);
		diag_reset(&d);
		if (!queue_config_has_store(&qc)) {
			fprintf(stderr,
				"webhook-bridge queue: %s has no queue { path = \"...\"; } "
				"group nor shared group, so no store\n",
				o->config);
			return 2;
		}
		path = qc.path;
		if (ret_flags)
			*ret_flags = queue_config_store_flags(&qc);
	}
	if (path &&
	    (strncmp(path, "postgresql://", 13) == 0 || strncmp(path, "postgres://", 11) == 0)) {
		shared_config_clear(&qc.shared);
		qc.shared.url = strdup(path);
		path = NULL;
	}
	if (path) {
		*ret = strdup(path);
	} else {
		/* the shared store, with the bridges running on it */
		*ret_shared = qc.shared;
		shared_config_default(&qc.shared);
	}
	queue_config_clear(&qc);
	if (!*ret && !ret_shared->url) {
		fprintf(stderr, "webhook-bridge queue: out of memory\n");
		return 2;
	}
	return 0;
}

static int open_store(const struct opts *o, struct store **ret)
{
	struct shared_config shared;
	struct bridge_error err;
	unsigned flags;
	char *path;
	int rc;

	bridge_error_clear(&err);
	rc = store_path_find(o, &path, &shared, &flags);
	if (rc)
		return rc;
	if (path)
		rc = store_open(path, flags, QUEUE_CMD_BUSY_MS, ret, &err);
	else
		rc = store_open_shared(&shared, 0, ret, &err);
	free(path);
	shared_config_clear(&shared);
	if (rc < 0) {
		fprintf(stderr, "webhook-bridge queue: %s\n", err.message);
		return 2;
	}
	return 0;
}

/* ---- list ---------------------------------------------------------------- */

struct list_ctx {
	const struct opts *o;
	int64_t now;
	long long n;
};

static const char *endpoint_shown(const char *url, char *buf, size_t cap)
{
	upstream_url_redact(url, buf, cap);
	return buf;
}

static void row_json(FILE *out, const struct store_row *r, int with_body, int reveal)
{
	char shown[512];

	fprintf(out, "{\"id\":%lld,\"status\":\"%s\",\"route\":", (long long)r->id,
		status_name(r->status));
	json_str(out, r->route);
	fputs(",\"endpoint\":", out);
	json_str(out, reveal ? r->endpoint : endpoint_shown(r->endpoint, shown, sizeof(shown)));
	fputs(",\"delivery_id\":", out);
	json_str(out, r->delivery_id);
	fputs(",\"participation_id\":", out);
	json_str(out, r->participation_id);
	fputs(",\"state\":", out);
	json_str(out, r->state);
	fprintf(out,
		",\"attempts\":%d,\"created_ms\":%lld,\"since_ms\":%lld,"
		"\"next_attempt_ms\":%lld,\"last_attempt_ms\":%lld,\"last_status\":%d,"
		"\"last_error\":",
		r->attempts, (long long)r->created_ms, (long long)r->since_ms,
		r->status == STORE_PENDING ? (long long)r->next_attempt_ms : 0LL,
		(long long)r->last_attempt_ms, r->last_status);
	json_str(out, r->last_error);
	fprintf(out, ",\"integrity\":\"%s\"", store_row_integrity_name(r->integrity));
	if (with_body) {
		fprintf(out, ",\"timeout_ms\":%d,\"ca_file\":", r->timeout_ms);
		json_str(out, r->ca_file);
		fputs(",\"headers\":[", out);
		for (size_t i = 0; i < r->n_headers; i++) {
			fputs(i ? ",[" : "[", out);
			json_str(out, r->headers[i].name);
			fputc(',', out);
			json_str(out, reveal || header_shown(r, &r->headers[i])
					      ? r->headers[i].value
					      : "***");
			fputc(']', out);
		}
		fputs("],\"body\":", out);
		json_str(out, r->body);
	}
	fputs("}\n", out);
}

/* s with its control bytes escaped (a row may hold what a sender or another
 * program wrote), cut to cap - 1 bytes. */
static const char *text_safe(const char *s, char *buf, size_t cap)
{
	FILE *f = fmemopen(buf, cap, "w");

	buf[0] = '\0';
	if (!f)
		return "?";
	out_print_str(f, s, 0);
	fclose(f);
	buf[cap - 1] = '\0';
	return buf;
}

static int list_row(const struct store_row *r, void *arg)
{
	struct list_ctx *c = arg;
	char age[32], next[32], route[80], pid[160], state[48], did[160], error[400];

	c->n++;
	if (c->o->json) {
		row_json(stdout, r, 0, 0);
		return 0;
	}
	span_text(c->now - r->created_ms, age, sizeof(age));
	if (r->status == STORE_DEAD)
		snprintf(next, sizeof(next), "-");
	else if (r->next_attempt_ms <= c->now)
		snprintf(next, sizeof(next), "due");
	else
		span_text(r->next_attempt_ms - c->now, next, sizeof(next));
	printf("%-8lld %-7s %8d %7s %7s  %-16.16s %-36.36s %-10.10s %.36s  %.80s\n",
	       (long long)r->id, status_name(r->status), r->attempts, age, next,
	       text_safe(r->route, route, sizeof(route)),
	       r->participation_id[0] ? text_safe(r->participation_id, pid, sizeof(pid)) : "-",
	       r->state[0] ? text_safe(r->state, state, sizeof(state)) : "-",
	       text_safe(r->delivery_id, did, sizeof(did)),
	       text_safe(r->last_error, error, sizeof(error)));
	return 0;
}

static int cmd_list(struct store *s, const struct opts *o)
{
	struct store_filter f;
	struct list_ctx c = { o, clock_wall_ms(), 0 };
	struct bridge_error err;

	store_filter_init(&f);
	f.status = o->pending ? STORE_PENDING : o->dead ? STORE_DEAD : -1;
	f.route = o->route;
	f.limit = o->limit;
	f.newest_first = o->newest;
	if (o->older_than_s >= 0)
		f.created_before = c.now - o->older_than_s * 1000;
	if (!o->json)
		printf("%-8s %-7s %8s %7s %7s  %-16s %-36s %-10s %-36s  %s\n", "ID", "STATUS",
		       "ATTEMPTS", "AGE", "NEXT", "ROUTE", "PARTICIPATION", "STATE", "DELIVERY ID",
		       "LAST ERROR");
	bridge_error_clear(&err);
	if (store_list(s, &f, list_row, &c, &err) < 0) {
		fprintf(stderr, "webhook-bridge queue: %s\n", err.message);
		return 2;
	}
	return 0;
}

/* ---- show ---------------------------------------------------------------- */

static int parse_id(const char *s, int64_t *ret)
{
	long long v;

	if (parse_count(s, 1, &v) < 0)
		return -1;
	*ret = v;
	return 0;
}

static int cmd_show(struct store *s, const struct opts *o, char **ids, int n_ids)
{
	struct store_row r;
	struct bridge_error err;
	int64_t id, now = clock_wall_ms();
	char t[64], span[32], shown[512], safe[1024];
	int rc;

	if (n_ids != 1)
		return cli_usage("queue", "%s", "show takes exactly one ID");
	if (parse_id(ids[0], &id) < 0)
		return cli_usage("queue", "'%s' is not a delivery ID (a positive integer)", ids[0]);
	bridge_error_clear(&err);
	rc = store_get(s, id, &r, &err);
	if (rc < 0) {
		fprintf(stderr, "webhook-bridge queue: %s\n", err.message);
		return 2;
	}
	if (rc == 1) {
		fprintf(stderr,
			"webhook-bridge queue: no delivery %lld (delivered, purged, or "
			"never queued)\n",
			(long long)id);
		return 1;
	}
	if (o->json) {
		row_json(stdout, &r, 1, o->reveal);
		store_row_clear(&r);
		return 0;
	}
	printf("id:               %lld\n", (long long)r.id);
	printf("status:           %s\n", status_name(r.status));
	printf("route:            %s\n", text_safe(r.route, safe, sizeof(safe)));
	printf("endpoint:         %s\n",
	       o->reveal ? r.endpoint : endpoint_shown(r.endpoint, shown, sizeof(shown)));
	printf("trust store:      %s\n", r.ca_file[0] ? r.ca_file : "system default");
	printf("timeout:          %d ms per attempt\n", r.timeout_ms);
	printf("delivery id:      %s\n", text_safe(r.delivery_id, safe, sizeof(safe)));
	printf("participation id: %s\n",
	       r.participation_id[0] ? text_safe(r.participation_id, safe, sizeof(safe)) : "-");
	printf("state:            %s\n", r.state[0] ? text_safe(r.state, safe, sizeof(safe)) : "-");
	printf("attempts:         %d\n", r.attempts);
	time_text(r.created_ms, t, sizeof(t));
	span_text(now - r.created_ms, span, sizeof(span));
	printf("queued:           %s (%s ago)\n", t, span);
	if (r.since_ms != r.created_ms) {
		time_text(r.since_ms, t, sizeof(t));
		printf("retried:          %s\n", t);
	}
	if (r.status == STORE_PENDING) {
		time_text(r.next_attempt_ms, t, sizeof(t));
		span_text(r.next_attempt_ms - now, span, sizeof(span));
		printf("next attempt:     %s%s%s%s\n", t,
		       r.next_attempt_ms > now ? " (in " : " (due)",
		       r.next_attempt_ms > now ? span : "", r.next_attempt_ms > now ? ")" : "");
	}
	time_text(r.last_attempt_ms, t, sizeof(t));
	printf("last attempt:     %s\n", t);
	if (r.last_status)
		printf("last status:      %d\n", r.last_status);
	printf("last error:       %s\n",
	       r.last_error[0] ? text_safe(r.last_error, safe, sizeof(safe)) : "-");
	printf("integrity:        %s\n",
	       r.integrity == STORE_ROW_INTACT ? "intact (matches its checksum)"
	       : r.integrity == STORE_ROW_CORRUPT
		       ? "CORRUPT: does not match its checksum; never sent"
		       : "unchecked (stored before checksums; sent only if "
			 "its body is a JSON object)");
	printf("headers:\n");
	for (size_t i = 0; i < r.n_headers; i++)
		printf("  %s: %s\n", text_safe(r.headers[i].name, shown, sizeof(shown)),
		       o->reveal || header_shown(&r, &r.headers[i])
			       ? text_safe(r.headers[i].value, safe, sizeof(safe))
			       : "*** (--reveal shows it)");
	printf("body (%zu bytes):\n", r.len);
	fwrite(r.body, 1, r.len, stdout);
	putchar('\n');
	store_row_clear(&r);
	return 0;
}

/* ---- retry / purge ------------------------------------------------------- */

static int cmd_retry(struct store *s, const struct opts *o, char **ids, int n_ids)
{
	struct bridge_error err;
	int64_t now = clock_wall_ms();
	int status = 0;

	bridge_error_clear(&err);
	if (o->all) {
		struct store_filter f;
		int64_t n = 0, skipped = 0;

		if (n_ids)
			return cli_usage("queue", "%s", "retry takes IDs or --all, not both");
		store_filter_init(&f);
		f.route = o->route;
		if (o->older_than_s >= 0)
			f.created_before = now - o->older_than_s * 1000;
		if (store_retry_dead(s, &f, now, &n, &skipped, &err) < 0) {
			fprintf(stderr, "webhook-bridge queue: %s\n", err.message);
			return 2;
		}
		printf("retried %lld dead letter%s\n", (long long)n, n == 1 ? "" : "s");
		if (skipped)
			printf("left %lld dead letter%s: the same participation and state is "
			       "already queued\n",
			       (long long)skipped, skipped == 1 ? "" : "s");
		return 0;
	}
	if (n_ids == 0)
		return cli_usage("queue", "%s", "retry needs IDs or --all");
	if (o->route || o->older_than_s >= 0)
		return cli_usage("queue", "%s", "--route and --older-than go with --all");
	for (int i = 0; i < n_ids; i++) {
		int64_t id;
		int rc;

		if (parse_id(ids[i], &id) < 0)
			return cli_usage("queue", "'%s' is not a delivery ID (a positive integer)",
					 ids[i]);
		rc = store_retry(s, id, now, &err);
		if (rc < 0) {
			fprintf(stderr, "webhook-bridge queue: %s\n", err.message);
			return 2;
		}
		if (rc == STORE_RETRY_DONE) {
			printf("retry %lld: due now\n", (long long)id);
		} else if (rc == STORE_RETRY_NOT_FOUND) {
			fprintf(stderr, "webhook-bridge queue: no delivery %lld\n", (long long)id);
			status = 1;
		} else {
			fprintf(stderr,
				"webhook-bridge queue: delivery %lld stays dead: the same "
				"participation and state is already queued\n",
				(long long)id);
			status = 1;
		}
	}
	return status;
}

static int cmd_purge(struct store *s, const struct opts *o, char **ids, int n_ids)
{
	struct bridge_error err;
	int status = 0;

	bridge_error_clear(&err);
	if (o->dead || o->all) {
		struct store_filter f;
		int64_t n = 0;

		if (n_ids)
			return cli_usage("queue", "%s",
					 "purge takes IDs, --dead or --all, not several");
		if (o->dead && o->all)
			return cli_usage("queue", "%s", "give --dead or --all, not both");
		if (o->all && !o->yes)
			return cli_usage("queue", "%s",
					 "purge --all deletes pending deliveries too: add --yes");
		store_filter_init(&f);
		f.status = o->dead ? STORE_DEAD : -1;
		f.route = o->route;
		if (o->older_than_s >= 0)
			f.created_before = clock_wall_ms() - o->older_than_s * 1000;
		if (store_purge(s, &f, &n, &err) < 0) {
			fprintf(stderr, "webhook-bridge queue: %s\n", err.message);
			return 2;
		}
		printf("purged %lld deliver%s\n", (long long)n, n == 1 ? "y" : "ies");
		return 0;
	}
	if (n_ids == 0)
		return cli_usage("queue", "%s", "purge needs IDs, --dead or --all --yes");
	if (o->route || o->older_than_s >= 0)
		return cli_usage("queue", "%s", "--route and --older-than go with --dead or --all");
	for (int i = 0; i < n_ids; i++) {
		int64_t id;
		int rc;

		if (parse_id(ids[i], &id) < 0)
			return cli_usage("queue", "'%s' is not a delivery ID (a positive integer)",
					 ids[i]);
		rc = store_purge_id(s, id, &err);
		if (rc < 0) {
			fprintf(stderr, "webhook-bridge queue: %s\n", err.message);
			return 2;
		}
		if (rc == 0) {
			printf("purged %lld\n", (long long)id);
		} else {
			fprintf(stderr, "webhook-bridge queue: no delivery %lld\n", (long long)id);
			status = 1;
		}
	}
	return status;
}

static int cmd_stats(struct store *s)
{
	struct store_counts c;
	struct bridge_error err;
	int64_t now = clock_wall_ms(), age;

	bridge_error_clear(&err);
	if (store_count(s, &c, &err) < 0) {
		fprintf(stderr, "webhook-bridge queue: %s\n", err.message);
		return 2;
	}
	age = c.oldest_created_ms > 0 && now > c.oldest_created_ms ? now - c.oldest_created_ms : 0;
	printf("# HELP webhook_bridge_queue_depth Deliveries waiting in the queue, in flight "
	       "included.\n# TYPE webhook_bridge_queue_depth gauge\nwebhook_bridge_queue_depth "
	       "%lld\n",
	       (long long)c.pending);
	printf("# HELP webhook_bridge_queue_oldest_age_seconds Age of the oldest waiting delivery "
	       "(0 when none).\n# TYPE webhook_bridge_queue_oldest_age_seconds gauge\n"
	       "webhook_bridge_queue_oldest_age_seconds %lld.%03lld\n",
	       (long long)(age / 1000), (long long)(age % 1000));
	printf("# HELP webhook_bridge_queue_dead_letters Dead letters in the store, waiting for "
	       "`queue retry` or `queue purge`.\n# TYPE webhook_bridge_queue_dead_letters gauge\n"
	       "webhook_bridge_queue_dead_letters %lld\n",
	       (long long)c.dead);
	return 0;
}

static int cmd_recover(const struct opts *o)
{
	struct store_recover_report r;
	struct bridge_error err;
	struct shared_config shared;
	char *path, *out = NULL;
	int rc;

	rc = store_path_find(o, &path, &shared, NULL);
	if (rc)
		return rc;
	if (!path) {
		shared_config_clear(&shared);
		fprintf(stderr,
			"webhook-bridge queue: recover reads a damaged SQLite store; "
			"PostgreSQL recovers its own (the shared store needs no recover)\n");
		return 2;
	}
	if (!o->output && asprintf(&out, "%s.recovered", path) < 0) {
		free(path);
		fprintf(stderr, "webhook-bridge queue: out of memory\n");
		return 2;
	}
	bridge_error_clear(&err);
	rc = store_recover(path, o->output ? o->output : out, &r, &err);
	if (rc < 0) {
		fprintf(stderr, "webhook-bridge queue: recover: %s\n", err.message);
	} else {
		printf("recovered %s into %s\n", path, o->output ? o->output : out);
		printf("saved: %lld deliver%s (%lld pending, %lld dead letter%s",
		       (long long)r.saved, r.saved == 1 ? "y" : "ies", (long long)r.pending,
		       (long long)r.dead, r.dead == 1 ? "" : "s");
		if (r.corrupt)
			printf(", %lld of them made dead letters: they do not match their checksum",
			       (long long)r.corrupt);
		printf(")\n");
		if (r.unreadable)
			printf("unreadable: %lld id%s (%s): SQLite said \"%s\"; some may have been "
			       "delivered before the damage\n",
			       (long long)r.unreadable, r.unreadable == 1 ? "" : "s",
			       r.unreadable_ids, r.first_error);
		else
			printf("unreadable: 0\n");
		printf("ids given out: up to %lld (the new store goes on from there)\n",
		       (long long)r.highest_id);
		if (r.other_tables[0])
			printf("other tables: %s (%lld row%s copied)%s%s%s\n", r.other_tables,
			       (long long)r.other_rows, r.other_rows == 1 ? "" : "s",
			       r.other_damaged[0] ? "; stopped at a read error in " : "",
			       r.other_damaged,
			       r.other_damaged[0] ? ": the rest of it is lost" : "");
	}
	free(out);
	free(path);
	return rc < 0 ? 2 : 0;
}

int cmd_queue(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "store", required_argument, NULL, 's' },
		{ "pending", no_argument, NULL, 'p' },
		{ "dead", no_argument, NULL, 'd' },
		{ "all", no_argument, NULL, 'a' },
		{ "yes", no_argument, NULL, 'y' },
		{ "route", required_argument, NULL, 'r' },
		{ "limit", required_argument, NULL, 'l' },
		{ "older-than", required_argument, NULL, 'o' },
		{ "newest", no_argument, NULL, 'n' },
		{ "json", no_argument, NULL, 'j' },
		{ "reveal", no_argument, NULL, 'R' },
		{ "output", required_argument, NULL, 'O' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o;
	struct store *s = NULL;
	const char *cmd;
	int c, rc;

	memset(&o, 0, sizeof(o));
	o.limit = 100;
	o.older_than_s = -1;
	optind = 0; /* glibc: a full rescan, also when called more than once */
	while ((c = cli_getopt("queue", argc, argv, "c:s:h", longopts)) != -1) {
		switch (c) {
		case 'c': o.config = optarg; break;
		case 's': o.store = optarg; break;
		case 'p': o.pending = 1; break;
		case 'd': o.dead = 1; break;
		case 'a': o.all = 1; break;
		case 'y': o.yes = 1; break;
		case 'r': o.route = optarg; break;
		case 'n': o.newest = 1; break;
		case 'j': o.json = 1; break;
		case 'R': o.reveal = 1; break;
		case 'O': o.output = optarg; break;
		case 'l':
			if (parse_count(optarg, 0, &o.limit) < 0)
				return cli_usage("queue", "--limit must be a number >= 0, not '%s'",
						 optarg);
			break;
		case 'o':
			if (parse_count(optarg, 0, &o.older_than_s) < 0 ||
			    o.older_than_s > 100LL * 365 * 86400)
				return cli_usage("queue", "--older-than takes seconds, not '%s'",
						 optarg);
			break;
		case 'h': fputs(usage_queue, stdout); return 0;
		default: return 2;
		}
	}
	if (!o.config == !o.store)
		return cli_usage("queue", "%s",
				 "give exactly one of --config FILE or --store PATH");
	if (optind >= argc)
		return cli_usage("queue", "%s",
				 "which command? list, show, retry, purge, stats or recover");
	cmd = argv[optind++];
	if (strcmp(cmd, "list") && strcmp(cmd, "show") && strcmp(cmd, "retry") &&
	    strcmp(cmd, "purge") && strcmp(cmd, "stats") && strcmp(cmd, "recover"))
		return cli_usage("queue",
				 "unknown command '%s' (list, show, retry, purge, stats, recover)",
				 cmd);
	if (o.pending && o.dead && strcmp(cmd, "list") == 0)
		return cli_usage("queue", "%s", "give --pending or --dead, not both");
	if ((o.pending && strcmp(cmd, "list")) ||
	    (o.dead && strcmp(cmd, "list") && strcmp(cmd, "purge")) ||
	    (o.all && strcmp(cmd, "retry") && strcmp(cmd, "purge")) ||
	    (o.yes && strcmp(cmd, "purge")) || (o.reveal && strcmp(cmd, "show")) ||
	    (o.newest && strcmp(cmd, "list")) || (o.output && strcmp(cmd, "recover")))
		return cli_usage("queue", "an option does not apply to '%s'", cmd);
	if ((strcmp(cmd, "list") == 0 || strcmp(cmd, "stats") == 0 ||
	     strcmp(cmd, "recover") == 0) &&
	    optind < argc)
		return cli_usage("queue", "unexpected argument '%s'", argv[optind]);
	if (strcmp(cmd, "recover") == 0)
		return cmd_recover(&o);
	rc = open_store(&o, &s);
	if (rc)
		return rc;
	if (strcmp(cmd, "list") == 0)
		rc = cmd_list(s, &o);
	else if (strcmp(cmd, "show") == 0)
		rc = cmd_show(s, &o, argv + optind, argc - optind);
	else if (strcmp(cmd, "retry") == 0)
		rc = cmd_retry(s, &o, argv + optind, argc - optind);
	else if (strcmp(cmd, "purge") == 0)
		rc = cmd_purge(s, &o, argv + optind, argc - optind);
	else
		rc = cmd_stats(s);
	store_close(s);
	fflush(stdout);
	return rc;
}
