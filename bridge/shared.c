/*
 * shared: reading the `shared` group.  The URL is checked with libpq's own
 * parser, so what `check` accepts is what the connection will understand.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "bridge/confread.h"
#include "bridge/shared.h"

static int instance_check(const char *name, const char *v, char *why, size_t cap)
{
	if (strlen(v) <= SHARED_INSTANCE_MAX && !strpbrk(v, "/ \t"))
		return 0;
	snprintf(why, cap, "'%s' must be at most %d characters, without '/' or spaces", name,
		 SHARED_INSTANCE_MAX);
	return -1;
}

#define S(member)                   CFG_FIELD(struct shared_config, member)
#define S_INT(n, member, lo, hi, d) CFG_INT_ROW(n, struct shared_config, member, lo, hi, d)
const struct cfg_setting shared_settings[] = {
	CFG_CUSTOM_ROW("url"),
	CFG_CUSTOM_ROW("password"),
	CFG_CUSTOM_ROW("password_file"),
	S_INT("connections", connections, 2, 64, 4),
	S_INT("lease_ms", lease_ms, 1000, 3600000, 30000),
	S_INT("poll_ms", poll_ms, 100, 3600000, 1000),
	{ .name = "instance",
	  .type = CFG_TEXT,
	  S(instance),
	  .check = instance_check,
	  .shown = "the host name" },
	{ .name = NULL },
};
#undef S
#undef S_INT

void shared_config_default(struct shared_config *c)
{
	memset(c, 0, sizeof(*c));
	cfg_table_defaults(shared_settings, c);
}

void shared_config_clear(struct shared_config *c)
{
	if (!c)
		return;
	free(c->url);
	if (c->password) {
		explicit_bzero(c->password, strlen(c->password));
		free(c->password);
	}
	free(c->instance);
	shared_config_default(c);
}

static int dup_opt(char **dst, const char *src)
{
	*dst = NULL;
	if (!src)
		return 0;
	*dst = strdup(src);
	return *dst ? 0 : -1;
}

int shared_config_copy(struct shared_config *ret, const struct shared_config *c)
{
	*ret = *c;
	if (dup_opt(&ret->url, c->url) < 0 || dup_opt(&ret->password, c->password) < 0 ||
	    dup_opt(&ret->instance, c->instance) < 0) {
		free(ret->url);
		free(ret->password);
		free(ret->instance);
		shared_config_default(ret);
		return -1;
	}
	return 0;
}

/* What libpq makes of the URL: an error text, or whether it holds a
 * password. */
static int url_check(const char *url, int *ret_has_password, char *why, size_t cap)
{
	char *msg = NULL;
	PQconninfoOption *opts = PQconninfoParse(url, &msg);

	*ret_has_password = 0;
	if (!opts) {
		size_t n;

		snprintf(why, cap, "%s", msg ? msg : "out of memory");
		n = strlen(why);
		while (n && (why[n - 1] == '\n' || why[n - 1] == ' '))
			why[--n] = '\0';
		PQfreemem(msg);
		return -1;
	}
	for (PQconninfoOption *o = opts; o->keyword; o++)
		if (strcmp(o->keyword, "password") == 0 && o->val && *o->val)
			*ret_has_password = 1;
	PQconninfoFree(opts);
	return 0;
}

int shared_config_load(const config_setting_t *root, const char *file, struct shared_config *ret,
		       struct diag *d)
{
	const config_setting_t *g;
	const char *v;
	char why[300];
	size_t len;
	int before = d->count, has_password;

	shared_config_default(ret);
	g = cfg_get_group(root, "shared", file, d);
	if (!g)
		return d->count > before ? -1 : 0;
	cfg_table_load(g, shared_settings, ret, file, d);
	if (cfg_get_text(g, "url", &v, file, d) == 1) {
		const config_setting_t *s = config_setting_get_member(g, "url");

		if (url_check(v, &has_password, why, sizeof(why)) < 0)
			diag_add(d, cfg_file(s, file), cfg_line(s),
				 "'url' is not a PostgreSQL URL: %s", why);
		else if (has_password)
			diag_add(d, cfg_file(s, file), cfg_line(s),
				 "'url' holds a password: put it in a file and name it with "
				 "'password_file'");
		else if (!(ret->url = strdup(v)))
			diag_add(d, file, 0, "out of memory");
	} else if (!config_setting_get_member(g, "url")) {
		diag_add(d, cfg_file(g, file), cfg_line(g),
			 "'shared' needs a 'url', e.g. url = "
			 "\"postgresql://bridge@/bridge?host=/run/postgresql\"");
	}
	cfg_get_secret(g, "password", &ret->password, &len, file, d);
	if (d->count == before && ret->url && !ret->instance) {
		char host[SHARED_INSTANCE_MAX + 1] = "";

		if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
			snprintf(host, sizeof(host), "bridge");
		host[strcspn(host, "/ \t")] = '\0';
		if (!(ret->instance = strdup(host)))
			diag_add(d, file, 0, "out of memory");
	}
	if (d->count > before) {
		shared_config_clear(ret);
		return -1;
	}
	return 0;
}

const char *shared_url_shown(const char *url, char *buf, size_t cap)
{
	const char *scheme = strstr(url, "://"), *at, *colon, *end;

	if (!scheme) {
		snprintf(buf, cap, "%s", url);
		return buf;
	}
	end = scheme + 3 + strcspn(scheme + 3, "/?");
	at = memchr(scheme + 3, '@', (size_t)(end - scheme - 3));
	colon = at ? memchr(scheme + 3, ':', (size_t)(at - scheme - 3)) : NULL;
	if (!colon) {
		snprintf(buf, cap, "%s", url);
		return buf;
	}
	snprintf(buf, cap, "%.*s:***%s", (int)(colon - url), url, at);
	return buf;
}
