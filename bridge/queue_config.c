/*
 * queue, configuration: the optional top-level `queue` group (and through
 * it the `shared` group), read by its settings table.
 */
#include <stdlib.h>
#include <string.h>

#include "bridge/confread.h"
#include "bridge/queue.h"
#include "bridge/store.h"

#define Q(member)                   CFG_FIELD(struct queue_config, member)
#define Q_INT(n, member, lo, hi, d) CFG_INT_ROW(n, struct queue_config, member, lo, hi, d)

static const char *const secure_delete_names[] = { "fast", "on", NULL };

const struct cfg_setting queue_settings[] = {
	/* required unless a shared group holds the queue */
	{ .name = "path", .type = CFG_OUTPUT, Q(path), .text = "STATE_DIRECTORY" },
	Q_INT("max_attempts", max_attempts, 1, 1000, 10),
	Q_INT("max_age_s", max_age_s, 1, 366LL * 86400, 86400),
	Q_INT("backoff_base_ms", backoff_base_ms, 1, 3600000, 1000),
	Q_INT("backoff_max_ms", backoff_max_ms, 1, 86400000, 600000),
	Q_INT("per_endpoint_concurrency", per_endpoint_concurrency, 1, 1024, 4),
	Q_INT("max_depth", max_depth, 1, 1000000000, 1000000),
	Q_INT("delivery_nice", delivery_nice, 0, 19, 5),
	{ .name = "secure_delete",
	  .type = CFG_ENUM,
	  Q(secure_delete),
	  .choices = secure_delete_names },
	{ .name = NULL },
};
#undef Q
#undef Q_INT

void queue_config_default(struct queue_config *c)
{
	memset(c, 0, sizeof(*c));
	cfg_table_defaults(queue_settings, c);
	shared_config_default(&c->shared);
}

unsigned queue_config_store_flags(const struct queue_config *c)
{
	return c->secure_delete ? STORE_SECURE_DELETE : 0;
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
