/*
 * console: the page an operator watches a migration on, served by the admin
 * listener at GET / (with /console.js and /console.css): per route the
 * cutover state with ramp and kill buttons (calling POST /cutover/...),
 * posts per minute by outcome for v1 and v2 over the last hour, the answers
 * since the start, the shadow comparison, the queue and the last errors.
 * Static text compiled into the binary; it reads GET /cutover and
 * GET /console/data, whose JSON console_data_json() makes.
 */
#ifndef BRIDGE_CONSOLE_H
#define BRIDGE_CONSOLE_H

struct admin_view;

/* The static file at path: 1 with its content type and NUL-terminated body
 * (static storage), else 0. */
int console_asset(const char *path, const char **ret_type, const char **ret_body);

/* {"time_ms","ready":{"status","message"},"routes":[...],"history":{...},
 * "shadow":{...}|null,"unmapped":[...],"queue":{...}|null,"errors":[...]};
 * malloc'd, NULL on out of memory.  Call on the admin's thread. */
char *console_data_json(const struct admin_view *v);

#endif
