/*
 * store_pg: the PostgreSQL engine behind store.h.  Only bridge/store.c
 * calls these; everybody else calls store.h, which dispatches to the
 * engine a store was opened with.  Each function has the contract of its
 * store_* namesake; what differs is stated here.
 *
 *  - Connections: a pool of shared_config.connections, each used by one
 *    thread at a time (a thread waits for a free one); a broken connection
 *    is reopened on its next use, at most every backoff (200 ms doubling to
 *    5 s): meanwhile calls fail at once with the last error.
 *  - Claims: store_pg_due sets a lease (this store's holder, expiry in the
 *    database's clock) on the rows it returns, skipping rows another
 *    transaction has locked and rows under a lease that has not expired;
 *    outcomes apply only to rows this store still holds, or that no lease
 *    holds (the operator's tools: a stale holder is refused once another
 *    bridge claimed the row).
 *  - Wake-ups: one more connection LISTENs; every change commits a NOTIFY.
 */
#ifndef BRIDGE_STORE_PG_H
#define BRIDGE_STORE_PG_H

#include "bridge/shared.h"
#include "bridge/store.h"

struct store_pg;

int store_pg_open(const struct shared_config *c, unsigned flags, struct store_pg **ret,
		  struct bridge_error *err);
void store_pg_close(struct store_pg *p);
const char *store_pg_name(const struct store_pg *p);
const char *store_pg_holder(const struct store_pg *p);
/* In the database: 0 when it has no schema yet, -1 unreachable.  Never
 * creates nor migrates. */
int store_pg_schema_version(struct store_pg *p, struct bridge_error *err);
int store_pg_schema_known(void); /* the version this build creates */

int store_pg_insert(struct store_pg *p, const struct store_item *const *items, size_t n,
		    int64_t now_ms, int *ret_results, struct store_receipt *receipts,
		    struct bridge_error *err);
int store_pg_lanes(struct store_pg *p, size_t max, struct store_lane **ret, size_t *ret_n,
		   struct bridge_error *err);
int store_pg_due(struct store_pg *p, const char *endpoint, const char *ca_file, int64_t now_ms,
		 struct store_row *rows, size_t max, size_t *ret_n, struct bridge_error *err);
int store_pg_next_wake(struct store_pg *p, const char *endpoint, const char *ca_file,
		       int64_t after_ms, int64_t *ret, struct bridge_error *err);
int store_pg_apply(struct store_pg *p, const struct store_outcome *o, size_t n,
		   struct bridge_error *err);
int store_pg_renew(struct store_pg *p, const int64_t *ids, size_t n, size_t *ret_renewed,
		   struct bridge_error *err);
int store_pg_release(struct store_pg *p, struct bridge_error *err);
int store_pg_count(struct store_pg *p, struct store_counts *ret, struct bridge_error *err);
int store_pg_count_routes(struct store_pg *p,
			  int (*cb)(const struct store_route_counts *c, void *arg), void *arg,
			  struct bridge_error *err);
int store_pg_oldest(struct store_pg *p, int64_t *ret, struct bridge_error *err);
int store_pg_watch_fd(struct store_pg *p);
int store_pg_watch_drain(struct store_pg *p);
int store_pg_probe(struct store_pg *p, int64_t now_ms, struct bridge_error *err);

int store_pg_list(struct store_pg *p, const struct store_filter *f,
		  int (*cb)(const struct store_row *row, void *arg), void *arg,
		  struct bridge_error *err);
int store_pg_get(struct store_pg *p, int64_t id, struct store_row *ret, struct bridge_error *err);
int store_pg_retry(struct store_pg *p, int64_t id, int64_t now_ms, struct bridge_error *err);
int store_pg_retry_dead(struct store_pg *p, const struct store_filter *f, int64_t now_ms,
			int64_t *ret_n, int64_t *ret_skipped, struct bridge_error *err);
int store_pg_purge_id(struct store_pg *p, int64_t id, struct bridge_error *err);
int store_pg_purge(struct store_pg *p, const struct store_filter *f, int64_t *ret_n,
		   struct bridge_error *err);

int store_pg_shadow_offer(struct store_pg *p, const struct store_shadow_offer *o, long ttl_ms,
			  struct store_shadow_entry *ret_other,
			  struct store_shadow_entry *ret_expired, int *ret_duplicate,
			  struct bridge_error *err);
int store_pg_shadow_count(struct store_pg *p, const char *const *names, const long long *n,
			  size_t k, const struct store_shadow_path *paths, size_t n_paths,
			  struct bridge_error *err);
int store_pg_shadow_totals(struct store_pg *p, size_t max_paths,
			   void (*count_cb)(const char *name, long long n, void *arg),
			   void (*path_cb)(const struct store_shadow_path_total *t, void *arg),
			   void *arg, long long waiting[2], struct bridge_error *err);
int store_pg_shadow_sweep(struct store_pg *p, long ttl_ms, size_t max_entries,
			  void (*cb)(const struct store_shadow_entry *e, const char *reason,
				     void *arg),
			  void *arg, int *ret_swept, struct bridge_error *err);

int store_pg_cutover_load(struct store_pg *p,
			  int (*cb)(const char *route, int ramp, int status, long long changed_ms,
				    const char *by, void *arg),
			  void *arg, struct bridge_error *err);
int store_pg_cutover_put(struct store_pg *p, const char *route, int ramp, int status,
			 long long changed_ms, const char *by, int only_if_absent,
			 int *ret_inserted, struct bridge_error *err);
int store_pg_cutover_version(struct store_pg *p, long long *ret, struct bridge_error *err);

/* Shared by both engines (bridge/store.c). */
int store_row_checksum(const char *endpoint, const char *ca_file, int timeout_ms,
		       const char *delivery_id, const char *headers, const void *body, size_t len,
		       unsigned char out[STORE_CHECKSUM_LEN]);
char *store_headers_text(const struct store_item *it);
/* it->seal, or one made now in *tmp (store_seal_clear it after): -1 out of memory */
int store_seal_of(const struct store_item *it, struct store_seal *tmp,
		  const struct store_seal **ret);
int store_headers_parse(char *text, struct upstream_header **ret, size_t *ret_n);

#endif
