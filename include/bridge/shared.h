/*
 * shared: the optional top-level group naming the PostgreSQL database that
 * several bridges share
 *
 *   shared = { url = "postgresql://bridge@/bridge?host=/run/postgresql";
 *              password_file = "pg.password"; connections = 4;
 *              lease_ms = 30000; poll_ms = 1000; instance = "bridge-a"; };
 *
 * When it is set, the state that spans instances lives there: the queue's
 * store (unless queue.path names a local one) and its dedup keys.  Without
 * it nothing changes.
 */
#ifndef BRIDGE_SHARED_H
#define BRIDGE_SHARED_H

#include <libconfig.h>
#include <stddef.h>

#include "bridge/confread.h"
#include "bridge/diag.h"

#define SHARED_INSTANCE_MAX 64

struct shared_config {
	char *url;       /* libpq URI or key=value string; NULL: no `shared` group */
	char *password;  /* password or password_file; NULL when none */
	int connections; /* 4: connections each bridge keeps (plus one for wake-ups) */
	int lease_ms;    /* 30000: how long a claimed delivery stays with its bridge unrenewed */
	int poll_ms;    /* 1000 (QUEUE_POLL_MS): the store looked at this often without a wake-up */
	char *instance; /* this bridge's name in leases and report lines; host name by default */
};

void shared_config_default(struct shared_config *c);
/* The `shared` group's settings. */
extern const struct cfg_setting shared_settings[];
void shared_config_clear(struct shared_config *c); /* accepts zeroed */
/* Deep copy; -1 out of memory (ret cleared). */
int shared_config_copy(struct shared_config *ret, const struct shared_config *c);

/* Read the group (defaults for what is absent).  Every problem goes to d as
 * file:line; -1 if there was one.  Absent group: 0 with ret->url NULL.  A
 * password inside the URL is refused: it belongs in password_file. */
int shared_config_load(const config_setting_t *root, const char *file, struct shared_config *ret,
		       struct diag *d);

/* The URL as it may be printed: a password in it replaced by "***".
 * Writes into buf (always terminated). */
const char *shared_url_shown(const char *url, char *buf, size_t cap);

#endif
