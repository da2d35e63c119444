/*
 * queue, configuration: the optional top-level `queue` group (and through
 * it the `shared` group), read by its settings table.
 */
#include <stdlib.h>
#include <string.h>

#include "bridge/confread.h"
#include "bridge/queue.h"

#define Q(member) CFG_FIELD(struct queue_config, member)
const struct cfg_setting queue_settings[] = {
	/* required unless a shared group holds the queue */
	{ .name = "path", .type = CFG_OUTPUT, Q(path), .text = "STATE_DIRECTORY" },
	{ .name = "max_attempts",
	  .type = CFG_INT,
	  Q(max_attempts),
	  .min = 1,
	  .max = 1000,
	  .def = 10 },
	{ .name = "max_age_s",
	  .type = CFG_INT,
	  Q(max_age_s),
	  .min = 1,
	  .max = 366LL * 86400,
	  .def = 86400 },
	{ .name = "backoff_base_ms",
	  .type = CFG_INT,
	  Q(backoff_base_ms),
	  .min = 1,
	  .max = 3600000,
	  .def = 1000 },
	{ .name = "backoff_max_ms",
	  .type = CFG_INT,
	  Q(backoff_max_ms),
	  .min = 1,
	  .max = 86400000,
	  .def = 600000 },
	{ .name = "per_endpoint_concurrency",
	  .type = CFG_INT,
	  Q(per_endpoint_concurrency),
	  .min = 1,
	  .max = 1024,
	  .def = 4 },
	{ .name = "max_depth",
	  .type = CFG_INT,
	  Q(max_depth),
	  .min = 1,
	  .max = 1000000000,
	  .def = 1000000 },
	{ .name = NULL },
};
#undef Q

void queue_config_default(struct queue_config *c)
{
	memset(c, 0, sizeof(*c));
	cfg_table_defaults(queue_settings, c);
	shared_config_default(&c->shared);
}

int queue_config_has_store(const struct queue_config *c)
{
	return c->path || c->shared.url;
}

void queue_config_clear(struct queue_config *c)
{
	if (!c)
		return;
	free(c->path);
	c->path = NULL;
	shared_config_clear(&c->shared);
}

int queue_config_load(const config_setting_t *root, const char *file, struct queue_config *ret,
		      struct diag *d)
{
	const config_setting_t *g, *max;
	int before = d->count;

	queue_config_default(ret);
	shared_config_load(root, file, &ret->shared, d);
	g = cfg_get_group(root, "queue", file, d);
	if (g) {
		cfg_table_load(g, queue_settings, ret, file, d);
		if (!config_setting_get_member(g, "path") && !ret->shared.url &&
		    !config_setting_get_member(root, "shared"))
			diag_add(d, cfg_file(g, file), cfg_line(g),
				 "'queue' needs a 'path' for its store, e.g. path = \"queue.db\", "
				 "or a 'shared' group");
		max = config_setting_get_member(g, "backoff_max_ms");
		if (ret->backoff_max_ms < ret->backoff_base_ms)
			diag_add(d, cfg_file(g, file), cfg_line(max ? max : g),
				 "'backoff_max_ms' (%d) is smaller than 'backoff_base_ms' (%d)",
				 ret->backoff_max_ms, ret->backoff_base_ms);
	}
	if (d->count > before) {
		queue_config_clear(ret);
		return -1;
	}
	return 0;
}
