/*
 * Queued delivery: the log line serve writes for each queue event.
 */
#include <stdio.h>
#include <time.h>

#include "bridge/log.h"
#include "bridge/queue.h"

void queue_event_log(const struct queue_event *ev, void *arg)
{
	static const char *const names[] = {
		[QUEUE_EV_DELIVERED] = "queue_delivered",
		[QUEUE_EV_ATTEMPT_FAILED] = "queue_attempt_failed",
		[QUEUE_EV_DEAD_LETTER] = "queue_dead_letter",
		[QUEUE_EV_STORE_ERROR] = "queue_store_error",
		[QUEUE_EV_STORE_RECOVERED] = "queue_store_recovered",
		[QUEUE_EV_STORE_WARNING] = "queue_store_warning",
		[QUEUE_EV_PRIORITY] = "queue_priority_unchanged",
	};
	static const enum log_level levels[] = {
		[QUEUE_EV_DELIVERED] = LOG_INFO,       [QUEUE_EV_ATTEMPT_FAILED] = LOG_WARN,
		[QUEUE_EV_DEAD_LETTER] = LOG_ERROR,    [QUEUE_EV_STORE_ERROR] = LOG_ERROR,
		[QUEUE_EV_STORE_RECOVERED] = LOG_WARN, [QUEUE_EV_STORE_WARNING] = LOG_WARN,
		[QUEUE_EV_PRIORITY] = LOG_WARN,
	};
	struct log_line l;

	log_begin(&l, levels[ev->type], names[ev->type]);
	if (ev->id)
		log_int(&l, "queue_id", ev->id);
	if (ev->route && *ev->route)
		log_str(&l, "route", ev->route);
	if (ev->participation_id && *ev->participation_id)
		log_str(&l, "participation_id", ev->participation_id);
	if (ev->state && *ev->state)
		log_str(&l, "state", ev->state);
	if (ev->delivery_id && *ev->delivery_id)
		log_str(&l, "delivery_id", ev->delivery_id);
	if (ev->attempt)
		log_int(&l, "attempt", ev->attempt);
	if (ev->status)
		log_int(&l, "upstream_status", ev->status);
	if (ev->outcome)
		log_str(&l, "outcome", ev->outcome);
	if (ev->outcome)
		log_int(&l, "latency_ms", ev->elapsed_ms);
	if (ev->id)
		log_int(&l, "age_ms", ev->age_ms);
	if (ev->type == QUEUE_EV_ATTEMPT_FAILED) {
		char t[64];
		time_t s = (time_t)(ev->next_attempt_ms / 1000);
		struct tm tm;

		if (gmtime_r(&s, &tm)) {
			snprintf(t, sizeof(t), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
				 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
				 tm.tm_min, tm.tm_sec, (int)(ev->next_attempt_ms % 1000));
			log_str(&l, "next_attempt", t);
		}
	}
	if (ev->type == QUEUE_EV_STORE_RECOVERED)
		log_str(&l, "message", ev->reason);
	else
		log_str(&l, "error", ev->reason);
	log_end(&l);
}
