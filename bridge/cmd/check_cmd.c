/*
 * check: a config (or a rule file) loaded and validated as serve would,
 * and what serve refuses at start beyond the file itself, without creating
 * or binding anything.  Every problem is printed as file:line: message.
 * Exit codes: 0 valid, 1 invalid, 2 usage errors.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netdb.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bridge/confread.h"
#include "cli.h"
#include "bridge/config.h"
#include "bridge/cutover.h"
#include "bridge/diag.h"
#include "bridge/listen.h"
#include "bridge/mapping.h"
#include "bridge/queue.h"
#include "bridge/record.h"
#include "bridge/store.h"
#include "bridge/upstream.h"

static const char usage_check[] =
	"usage: webhook-bridge check --config FILE [--print-config]\n"
	"       webhook-bridge check --mapping FILE\n"
	"\n"
	"Loads and validates; every problem is printed as file:line: message.\n"
	"Refuses what serve refuses at start (nothing is created or bound).\n"
	"--print-config: print the effective configuration instead of the summary:\n"
	"every default filled in, secrets masked; check accepts it again.\n"
	"exit: 0 valid, 1 invalid, 2 usage error\n";

/* A file serve appends to (report, capture): can it be opened? */
static int check_file(const char *path, struct bridge_error *err)
{
	if (path && cfg_path_writable(path) < 0)
		return bridge_error_set(err, "cannot open %s: %s", path, strerror(errno));
	return 0;
}

/* Can serve bind there?  Taken by another process (or by this config's own
 * running serve) is the host's state at this moment, not the config's: a
 * note on stderr, not a refusal. */
static int check_bind(const char *what, const char *address, int port, struct bridge_error *err)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	char service[16];
	int fd, rc = 0, one = 1, e;

	snprintf(service, sizeof(service), "%d", port);
	if (getaddrinfo(address, service, &hints, &ai) != 0)
		return 0; /* listen_address_check said it */
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			e = errno;
			if (e == EADDRINUSE)
				fprintf(stderr,
					"webhook-bridge check: note: %s%s port %d is in use now "
					"(serve cannot start while it is, unless it is its own "
					"running serve)\n",
					what, address, port);
			else
				rc = bridge_error_set(err, "cannot listen on %s%s port %d: %s",
						      what, address, port, strerror(e));
		}
		close(fd);
	}
	freeaddrinfo(ai);
	return rc;
}

/* serve opens (or creates) the cutover state with its first dual route. */
static int check_cutover_store(const struct bridge_config *cfg, struct bridge_error *err)
{
	struct cutover_backend b;
	char *path;
	int any = 0, shared = 0, rc = 0;

	for (size_t i = 0; i < cfg->n_routes; i++)
		any |= cfg->routes[i].mode == ROUTE_DUAL;
	if (!any || cfg->queue.shared.url) /* the shared store: checked with it */
		return 0;
	if (!(path = cutover_store_path(cfg, &shared)))
		return bridge_error_set(err, "out of memory");
	if (access(path, F_OK) == 0) {
		rc = cutover_sqlite_open(path, 0, &b, err);
		if (rc == 0)
			cutover_backend_close(&b);
	} else if (!shared && cfg_path_writable(path) < 0) { /* the queue creates its own */
		rc = bridge_error_set(err, "cannot create cutover state %s: %s", path,
				      strerror(errno));
	}
	free(path);
	return rc;
}

/* What serve refuses at start beyond the config file itself: listen and
 * admin addresses that are not IP literals or cannot be bound here, TLS
 * certificates and keys that cannot be loaded or do not match, CA files
 * that do not load, a queue store that cannot be opened, report and capture
 * files that cannot be written.  Nothing is created or changed. */
static int check_startup(const struct bridge_config *cfg, struct bridge_error *err)
{
	struct record_options ro;
	SSL_CTX *ctx;

	if (cfg->queue.path && queue_probe(&cfg->queue, err) < 0)
		return -1;
	if (check_cutover_store(cfg, err) < 0)
		return -1;
	if (check_file(cfg->report_path, err) < 0 || check_file(cfg->v2_record_path, err) < 0)
		return -1;
	if (cfg->record_path) {
		record_options_from(cfg, &ro);
		if (record_options_check(&ro, err) < 0 || check_file(cfg->record_path, err) < 0)
			return -1;
	}
	if (cfg->admin.enabled &&
	    (listen_address_check("admin", cfg->admin.address, err) < 0 ||
	     check_bind("admin ", cfg->admin.address, cfg->admin.port, err) < 0))
		return -1;
	if (listen_address_check("listen", cfg->listen_address, err) < 0 ||
	    check_bind("", cfg->listen_address, cfg->listen_port, err) < 0)
		return -1;
	for (size_t i = 0; i < cfg->n_tls_files; i++) {
		struct upstream_tls *t = NULL;

		if (upstream_tls_new(cfg->tls_files[i][0] ? cfg->tls_files[i] : NULL, &t, err) < 0)
			return -1;
		upstream_tls_free(t);
	}
	if (cfg->listen_cert_file) {
		ctx = listen_tls_new("listen.tls", cfg->listen_cert_file, cfg->listen_key_file,
				     err);
		if (!ctx)
			return -1;
		SSL_CTX_free(ctx);
	}
	if (cfg->admin.enabled && cfg->admin.cert_file) {
		ctx = listen_tls_new("admin.tls", cfg->admin.cert_file, cfg->admin.key_file, err);
		if (!ctx)
			return -1;
		SSL_CTX_free(ctx);
	}
	return 0;
}

/* A config that holds secrets itself should be readable by its owner only
 * (the *_file forms keep them out of it). */
static void check_secret_mode(const struct bridge_config *cfg, const char *path)
{
	int inline_secret = cfg->auth.inline_secret || cfg->admin.auth.inline_secret;
	struct stat st;

	for (size_t i = 0; i < cfg->n_routes; i++)
		inline_secret |= cfg->routes[i].inline_secret || cfg->routes[i].auth.inline_secret;
	if (inline_secret && stat(path, &st) == 0 && (st.st_mode & 077))
		fprintf(stderr,
			"webhook-bridge check: warning: %s holds secrets and is readable by "
			"%s (mode %04o); chmod 600 it, or move the secrets to *_file settings\n",
			path, (st.st_mode & 007) ? "others" : "its group",
			(unsigned)(st.st_mode & 07777));
}

/* The shared store: reachable, and at which schema version. */
static int check_shared(const struct bridge_config *cfg, struct bridge_error *err)
{
	struct store *s = NULL;
	int v;

	if (store_open_shared(&cfg->queue.shared, 0, &s, err) < 0)
		return -1;
	v = store_schema_version(s, err);
	if (v < 0) {
		store_close(s);
		return -1;
	}
	if (v > store_schema_known()) {
		bridge_error_set(err,
				 "shared store %s has schema version %d; this webhook-bridge "
				 "knows %d: upgrade it",
				 store_path(s), v, store_schema_known());
		store_close(s);
		return -1;
	}
	if (v == 0)
		printf("  shared %s: reachable, no schema yet (serve creates version %d), "
		       "instance %s\n",
		       store_path(s), store_schema_known(), cfg->queue.shared.instance);
	else
		printf("  shared %s: reachable, schema version %d, instance %s\n", store_path(s), v,
		       cfg->queue.shared.instance);
	store_close(s);
	return 0;
}

int cmd_check(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "mapping", required_argument, NULL, 'm' },
		{ "print-config", no_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL, *mapping_path = NULL;
	int print_config = 0;
	struct bridge_error err;
	struct diag d = { 0 };
	int c, rc;

	while ((c = cli_getopt("check", argc, argv, "c:m:h", opts)) != -1) {
		switch (c) {
		case 'c': config_path = optarg; break;
		case 'm': mapping_path = optarg; break;
		case 'p': print_config = 1; break;
		case 'h': fputs(usage_check, stdout); return 0;
		default: return 2;
		}
	}
	if (!config_path == !mapping_path)
		return cli_usage("check", "%s",
				 "give exactly one of --config FILE or --mapping FILE");
	if (optind < argc)
		return cli_usage("check", "unexpected argument '%s'", argv[optind]);
	if (print_config && !config_path)
		return cli_usage("check", "%s", "--print-config needs --config FILE");
	if (config_path) {
		struct bridge_config *cfg = NULL;

		rc = bridge_config_load(config_path, &cfg, &d);
		if (rc == 0 && check_startup(cfg, &err) < 0) {
			diag_add(&d, config_path, 0, "%s", err.message);
			rc = -1;
		}
		if (rc == 0 && print_config) {
			bridge_config_print(cfg, stdout);
			check_secret_mode(cfg, config_path);
		} else if (rc == 0) {
			printf("ok: %s: %zu route(s)\n", config_path, cfg->n_routes);
			for (size_t i = 0; i < cfg->n_routes; i++) {
				char endpoint[512];

				upstream_url_redact(
					cfg->routes[i].endpoint ? cfg->routes[i].endpoint : "",
					endpoint, sizeof(endpoint));
				printf("  route %s: %s, mapping %s%s%s", cfg->routes[i].name,
				       route_mode_name(cfg->routes[i].mode),
				       cfg->routes[i].mapping_file,
				       cfg->routes[i].endpoint ? ", endpoint " : "", endpoint);
				if (cfg->routes[i].mode == ROUTE_DUAL)
					printf(", cutover: initial ramp %d%%, copy %s, rolls back "
					       "over %g in %d s (at least %d posts)",
					       cfg->routes[i].cutover.ramp,
					       cfg->routes[i].cutover.copy ? "on" : "off",
					       cfg->routes[i].cutover.max_failure_rate,
					       cfg->routes[i].cutover.window_s,
					       cfg->routes[i].cutover.min_posts);
				printf("\n");
			}
			check_secret_mode(cfg, config_path);
			if (cfg->queue.shared.url && check_shared(cfg, &err) < 0) {
				diag_add(&d, config_path, 0, "%s", err.message);
				rc = -1;
			}
		}
		bridge_config_free(cfg);
	} else {
		struct mapping *m = NULL;

		rc = mapping_load(mapping_path, &m, &d);
		if (rc == 0)
			printf("ok: %s\n", mapping_path);
		mapping_free(m);
	}
	if (rc < 0) {
		fputs(d.text ? d.text : "", stderr);
		fprintf(stderr, "%d error(s)\n", d.count);
	}
	diag_reset(&d);
	return rc < 0 ? 1 : 0;
}
