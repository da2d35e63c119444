/*
 * access: who may post.  Inbound authentication (Qualifio's webhook 1.0
 * carries its credential in the URL it posts to: user-info, i.e. HTTP Basic,
 * or a query-string token; a header token is accepted too) and a source
 * allow-list of CIDR ranges (IPv4 and IPv6).
 *
 * Secrets are compared in constant time (over SHA-256 digests, so neither
 * content nor length leaks through timing).  A refusal never says which part
 * failed.  Loaded structures are immutable: share them between workers.
 */
#ifndef BRIDGE_ACCESS_H
#define BRIDGE_ACCESS_H

#include <stddef.h>
#include <libconfig.h>
#include "bridge/diag.h"

struct evhttp_request;

struct access_auth {
	int enabled;
	/* any configured method that matches lets the request in */
	char *basic_user, *basic_password; /* Authorization: Basic */
	char *query_name, *query_value;    /* ?name=value in the request URI */
	char *header_name, *header_value;  /* Name: value */
	int inline_secret;                 /* a password or value written in the config */
};

/* Load `auth = { basic = { user; password; }; query = { name; value; };
 * header = { name; value; }; };` from the group `g` (NULL: disabled). */
int access_auth_load(const config_setting_t *g, const char *file, struct access_auth *ret,
		     struct diag *d);
void access_auth_clear(struct access_auth *a);

/* 1 when the request may pass (or auth is disabled), 0 otherwise. */
int access_auth_check(const struct access_auth *a, struct evhttp_request *req);

/* The same on the request's parts, each NULL when absent: the Authorization
 * header's value, the query string (without '?') and the value of the
 * configured header.  Pure: what access_auth_check and its fuzzer call. */
int access_auth_check_parts(const struct access_auth *a, const char *authorization,
			    const char *query, const char *header);

struct access_cidr {
	int family; /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	int bits;
};

struct access_list {
	struct access_cidr *items; /* empty: everyone allowed */
	size_t n;
};

/* Load an array of "a.b.c.d/nn", "x::y/nn" or bare addresses. */
int access_list_load(const config_setting_t *arr, const char *file, struct access_list *ret,
		     struct diag *d);
void access_list_clear(struct access_list *l);
int access_cidr_parse(const char *s, struct access_cidr *ret);

/* 1 when addr (numeric text, as evhttp reports the peer) is in the list
 * (IPv4-mapped IPv6 addresses match IPv4 ranges), or the list is empty. */
int access_list_allows(const struct access_list *l, const char *addr);

#endif
