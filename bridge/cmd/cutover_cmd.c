/* The `cutover` command, and serve's side of the cutover: opening its
 * store and the log line of each change. */
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <yajl/yajl_tree.h>

#include "cli.h"
#include "bridge/config.h"
#include "bridge/cutover.h"
#include "bridge/log.h"

static const char usage_cutover[] =
	"usage: webhook-bridge cutover --config FILE [ROUTE [--ramp N | --kill]]\n"
	"       webhook-bridge cutover --config FILE --kill\n"
	"\n"
	"Shows the cutover state of every dual route (ramp: the share of\n"
	"participations v2 answers, status), or changes one route's ramp (0..100),\n"
	"or puts v1 back as primary (--kill: one route, or every route without ROUTE).\n"
	"The change is stored in the state store; a running serve follows it within\n"
	"a second.\n"
	"exit: 0 done, 1 no such route or the store cannot be used, 2 usage error\n";

void cutover_event_log(const struct cutover_event *ev, void *arg)
{
	struct log_line l;
	char rate[32];

	(void)arg;
	switch (ev->kind) {
	case CUTOVER_EVENT_ROLLBACK:
		log_begin(&l, LOG_ERROR, "cutover_rollback");
		log_str(&l, "route", ev->route);
		log_int(&l, "old_ramp", ev->old_ramp);
		log_int(&l, "ramp", 0);
		log_int(&l, "window_s", ev->window_s);
		log_int(&l, "v2_posts", ev->v2_posts);
		log_int(&l, "v2_failed", ev->v2_failed);
		snprintf(rate, sizeof(rate), "%.4f", ev->v2_rate);
		log_raw(&l, "v2_failure_rate", rate, strlen(rate));
		log_int(&l, "v1_posts", ev->v1_posts);
		log_int(&l, "v1_failed", ev->v1_failed);
		snprintf(rate, sizeof(rate), "%.4f", ev->v1_rate);
		log_raw(&l, "v1_failure_rate", rate, strlen(rate));
		snprintf(rate, sizeof(rate), "%g", ev->max_rate);
		log_raw(&l, "max_failure_rate", rate, strlen(rate));
		log_str(&l, "message",
			"v2 failed more than the rollback allows: v1 answers every participation "
			"until an operator raises the ramp");
		log_end(&l);
		return;
	case CUTOVER_EVENT_STORE_ERROR:
		log_begin(&l, LOG_ERROR, "cutover_store_error");
		log_str(&l, "route", ev->route);
		log_str(&l, "message", ev->error);
		log_end(&l);
		return;
	case CUTOVER_EVENT_INITIAL:
		log_begin(&l, LOG_INFO, "cutover_initial");
		log_str(&l, "route", ev->route);
		log_int(&l, "ramp", ev->new_ramp);
		log_str(&l, "by", ev->by);
		log_end(&l);
		return;
	case CUTOVER_EVENT_CHANGED:
	case CUTOVER_EVENT_FOLLOWED:
	default:
		log_begin(&l, ev->new_status == CUTOVER_KILLED ? LOG_WARN : LOG_INFO,
			  ev->kind == CUTOVER_EVENT_FOLLOWED ? "cutover_followed"
							     : "cutover_changed");
		if (ev->route) {
			log_str(&l, "route", ev->route);
			log_int(&l, "old_ramp", ev->old_ramp);
			log_str(&l, "old_status", cutover_status_name(ev->old_status));
		} else {
			log_str(&l, "route", "*");
			log_int(&l, "routes", ev->n_routes);
		}
		log_int(&l, "ramp", ev->new_ramp);
		log_str(&l, "status", cutover_status_name(ev->new_status));
		log_str(&l, "by", ev->by);
		log_end(&l);
		return;
	}
}

static int open_backend(const struct bridge_config *cfg, int create, struct cutover_backend *b,
			struct bridge_error *err)
{
	int shared = 0;
	char *path;
	int rc;

	/* several bridges: the state is theirs, in the shared store */
	if (cfg->queue.shared.url)
		return cutover_shared_open(&cfg->queue.shared, create, b, err);
	path = cutover_store_path(cfg, &shared);
	if (!path)
		return bridge_error_set(err, "out of memory");
	/* the queue's store is the queue's to create */
	rc = cutover_sqlite_open(path, create && !shared, b, err);
	free(path);
	return rc;
}

int cutover_serve_configure(struct cutover *c, const struct bridge_config *cfg,
			    struct bridge_error *err)
{
	struct cutover_backend b;
	int any = 0;

	for (size_t i = 0; i < cfg->n_routes; i++)
		any |= cfg->routes[i].mode == ROUTE_DUAL;
	/* the store is opened with the first dual route (at start or at a
	 * reload): a config without one writes no state file */
	if (any && !cutover_has_backend(c)) {
		if (open_backend(cfg, 1, &b, err) < 0)
			return -1;
		cutover_set_backend(c, &b);
		cutover_backend_close(&b); /* accepts the emptied one */
	}
	return cutover_configure(c, cfg, err);
}

struct cutover *cutover_serve_open(const struct bridge_config *cfg, struct bridge_error *err)
{
	struct cutover *c = cutover_new(NULL, cutover_event_log, NULL);

	if (!c) {
		bridge_error_set(err, "out of memory");
		return NULL;
	}
	if (cutover_serve_configure(c, cfg, err) < 0) {
		cutover_free(c);
		return NULL;
	}
	return c;
}

/* The CLI's "who, from where". */
static void cli_who(char *out, size_t cap)
{
	struct passwd *pw = getpwuid(getuid());
	char host[128] = "";

	gethostname(host, sizeof(host) - 1);
	snprintf(out, cap, "%s (cutover command on %s, pid %ld)", pw ? pw->pw_name : "?",
		 host[0] ? host : "?", (long)getpid());
}

static void print_event(const struct cutover_event *ev, void *arg)
{
	(void)arg;
	if (ev->kind == CUTOVER_EVENT_CHANGED && ev->route)
		printf("%s: ramp %d -> %d (%s -> %s)\n", ev->route, ev->old_ramp, ev->new_ramp,
		       cutover_status_name(ev->old_status), cutover_status_name(ev->new_status));
	else if (ev->kind == CUTOVER_EVENT_CHANGED)
		printf("every route (%d changed): ramp %d (%s)\n", ev->n_routes, ev->new_ramp,
		       cutover_status_name(ev->new_status));
}

static int print_state(struct cutover *c, const struct bridge_config *cfg)
{
	char *json = cutover_state_json(c, cfg);
	yajl_val root = json ? yajl_tree_parse(json, NULL, 0) : NULL;
	static const char *routes_path[] = { "routes", NULL };
	yajl_val routes = root ? yajl_tree_get(root, routes_path, yajl_t_array) : NULL;
	size_t n = routes ? YAJL_GET_ARRAY(routes)->len : 0;

	if (!routes)
		printf("no route has a cutover (mode = \"dual\")\n");
	if (routes && !n)
		printf("no route has a cutover (mode = \"dual\")\n");
	for (size_t i = 0; i < n; i++) {
		yajl_val r = YAJL_GET_ARRAY(routes)->values[i];
		static const char *k_route[] = { "route", NULL }, *k_ramp[] = { "ramp", NULL },
				  *k_status[] = { "status", NULL },
				  *k_primary[] = { "primary", NULL }, *k_by[] = { "by", NULL },
				  *k_copy[] = { "copy", NULL };
		yajl_val route = yajl_tree_get(r, k_route, yajl_t_string);
		yajl_val ramp = yajl_tree_get(r, k_ramp, yajl_t_number);
		yajl_val status = yajl_tree_get(r, k_status, yajl_t_string);
		yajl_val primary = yajl_tree_get(r, k_primary, yajl_t_string);
		yajl_val by = yajl_tree_get(r, k_by, yajl_t_string);
		yajl_val copy = yajl_tree_get(r, k_copy, yajl_t_any);

		printf("%s: ramp %s%% (primary %s), %s, copy %s, last change by %s\n",
		       route ? YAJL_GET_STRING(route) : "?", ramp ? YAJL_GET_NUMBER(ramp) : "?",
		       primary ? YAJL_GET_STRING(primary) : "?",
		       status ? YAJL_GET_STRING(status) : "?", YAJL_IS_TRUE(copy) ? "on" : "off",
		       by ? YAJL_GET_STRING(by) : "?");
	}
	yajl_tree_free(root);
	free(json);
	return 0;
}

int cmd_cutover(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "ramp", required_argument, NULL, 'r' },
		{ "kill", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL, *route = NULL;
	struct bridge_config *cfg = NULL;
	struct cutover_backend b;
	struct cutover *c = NULL;
	struct bridge_error err;
	struct diag d = { 0 };
	char who[CUTOVER_BY_MAX];
	long long ramp = -1;
	int opt, kill = 0, rc = 1;

	optind = 0; /* glibc: a full rescan */
	while ((opt = cli_getopt("cutover", argc, argv, "c:h", opts)) != -1) {
		switch (opt) {
		case 'c': config_path = optarg; break;
		case 'r':
			if (cli_int_parse(optarg, 0, 100, &ramp) < 0)
				return cli_usage("cutover",
						 "--ramp must be a whole number 0..100, not '%s'",
						 optarg);
			break;
		case 'k': kill = 1; break;
		case 'h': fputs(usage_cutover, stdout); return 0;
		default: return 2;
		}
	}
	if (optind < argc)
		route = argv[optind++];
	if (!config_path)
		return cli_usage("cutover", "%s", "--config FILE is required");
	if (optind < argc)
		return cli_usage("cutover", "%s", "one ROUTE at most");
	if (kill && ramp >= 0)
		return cli_usage("cutover", "%s", "give --ramp N or --kill, not both");
	if (!route && ramp >= 0)
		return cli_usage("cutover", "%s", "--ramp N needs a ROUTE");
	if (route && !kill && ramp < 0)
		return cli_usage("cutover", "%s", "give --ramp N or --kill after ROUTE");
	if (bridge_config_load(config_path, &cfg, &d) < 0) {
		fputs(d.text ? d.text : "", stderr);
		fprintf(stderr, "webhook-bridge cutover: %s: %d error(s)\n", config_path, d.count);
		diag_reset(&d);
		return 2;
	}
	bridge_error_clear(&err);
	memset(&b, 0, sizeof(b));
	if (open_backend(cfg, 1, &b, &err) < 0)
		goto out;
	c = cutover_new(&b, print_event, NULL);
	if (!c || cutover_configure(c, cfg, &err) < 0) {
		if (!c)
			cutover_backend_close(&b);
		goto out;
	}
	if (kill || ramp >= 0) {
		struct cutover_change ch = { .route = route, .ramp = (int)ramp, .kill = kill };

		cli_who(who, sizeof(who));
		ch.by = who;
		if (cutover_apply(c, &ch, &err) < 0)
			goto out;
	}
	rc = print_state(c, cfg);
out:
	if (rc)
		fprintf(stderr, "webhook-bridge cutover: %s\n", err.message);
	cutover_free(c);
	bridge_config_free(cfg);
	return rc;
}
