/*
 * queue_writer: enqueues and the writer thread.  Callers (server workers)
 * append to one list; the writer thread takes everything waiting (up to
 * QUEUE_BATCH_MAX) and stores it in one transaction, so the posts of every
 * connection that arrived during one fsync share the next fsync.  Nobody is
 * answered before the commit that holds their row returned: a synchronous
 * caller waits on a condition, an asynchronous one gets its callback on its
 * own event_base afterwards.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "bridge/clock.h"
#include "bridge/queue.h"
#include "bridge/store.h"
#include "queue_types.h"

static void pending_free(struct queue_pending *p)
{
	free(p->own_headers);
	free(p->own_data);
	store_seal_clear(&p->own_seal);
	free(p);
}

void queue_refused_note(struct queue *q, int refused, size_t bytes)
{
	long long seen = atomic_load(&q->refused_bytes);

	if (refused) {
		while ((long long)bytes > seen &&
		       !atomic_compare_exchange_weak(&q->refused_bytes, &seen, (long long)bytes))
			;
		return;
	}
	/* one as large as every refused one went through; a larger refusal
	 * noted since (seen changed) stays */
	while (seen > 0 && (long long)bytes >= seen &&
	       !atomic_compare_exchange_weak(&q->refused_bytes, &seen, 0))
		;
}

/* One transaction for the batch; results into every pending enqueue.  Past
 * max_depth, the late comers of the batch are refused, not the whole batch. */
static void batch_commit(struct queue *q, struct queue_pending *batch)
{
	const struct store_item *items[QUEUE_BATCH_MAX];
	struct store_receipt receipts[QUEUE_BATCH_MAX];
	int results[QUEUE_BATCH_MAX];
	struct queue_pending *p;
	struct bridge_error err, full;
	long long room = q->cfg.max_depth - atomic_load(&q->depth);
	size_t n = 0, k = 0, stored = 0, dups = 0, largest = 0;
	int rc = 0;

	bridge_error_clear(&full);
	bridge_error_set(&full,
			 "the queue is full (max_depth = %lld pending deliveries); the "
			 "endpoint is probably down",
			 q->cfg.max_depth);
	for (p = batch; p && (long long)n < room; p = p->next) {
		size_t bytes = store_item_bytes(p->item);

		items[n++] = p->item;
		if (bytes > largest)
			largest = bytes;
	}
	bridge_error_clear(&err);
	/* held until the rows stored are counted (queue_types.h says why) */
	queue_counts_lock(q);
	if (n) {
		rc = store_insert(q->store, items, n, clock_wall_ms(), results, receipts, &err);
		if (rc < 0)
			atomic_fetch_add(&q->store_errors, 1);
		atomic_store(&q->store_failing, rc < 0);
		queue_refused_note(q, rc < 0, largest);
	}
	for (p = batch; p; p = p->next, k++) {
		if (k >= n || rc < 0) {
			p->result = -1;
			snprintf(p->error, sizeof(p->error), "%s",
				 k >= n ? full.message : err.message);
			continue;
		}
		p->result = results[k] == STORE_DUPLICATE ? QUEUE_DUPLICATE : QUEUE_STORED;
		p->receipt = receipts[k];
		if (results[k] == STORE_INSERTED) {
			stored++;
			queue_key_add(q, p->item->endpoint,
				      p->item->ca_file ? p->item->ca_file : "");
			queue_count_add(q, p->item->route, 1, 0);
		} else {
			dups++;
		}
	}
	queue_counts_unlock(q);
	atomic_fetch_add(&q->enqueued, (long long)stored);
	atomic_fetch_add(&q->duplicates, (long long)dups);
	if (stored)
		queue_tick_soon(q);
}

void *queue_writer_run(void *arg)
{
	struct queue *q = arg;

	pthread_mutex_lock(&q->commit_mu);
	for (;;) {
		struct queue_pending *batch, *last, *p, *next;
		size_t n = 1;

		while (!q->waiting && !q->writer_stop)
			pthread_cond_wait(&q->writer_cv, &q->commit_mu);
		if (!q->waiting)
			break; /* stopping, nothing left */
		batch = last = q->waiting;
		while (last->next && n < QUEUE_BATCH_MAX) {
			last = last->next;
			n++;
		}
		q->waiting = last->next;
		if (!q->waiting)
			q->waiting_tail = &q->waiting;
		q->n_waiting -= n;
		last->next = NULL;
		for (p = batch; p; p = p->next)
			q->waiting_bytes -= p->item->len;
		pthread_mutex_unlock(&q->commit_mu);
		batch_commit(q, batch);
		pthread_mutex_lock(&q->commit_mu);
		for (p = batch; p; p = next) {
			next = p->next;
			p->done = 1;
			if (p->sync)
				continue;
			if (p->cancelled)
				pending_free(p); /* its event went with the cancel */
			else
				event_active(p->ev, EV_READ, 0);
		}
		pthread_cond_broadcast(&q->done_cv);
	}
	pthread_mutex_unlock(&q->commit_mu);
	return NULL;
}

/* The caller holds commit_mu. */
static int waiting_add(struct queue *q, struct queue_pending *p, struct bridge_error *err)
{
	if (q->writer_stop)
		return bridge_error_set(err, "the queue is shutting down");
	if (atomic_load(&q->outcomes_failing))
		return bridge_error_set(
			err, "the queue store fails its writes: deliveries cannot be "
			     "recorded, so no post is taken until they can; retry later");
	if (q->n_waiting >= QUEUE_WAITING_MAX ||
	    q->waiting_bytes + p->item->len > QUEUE_WAITING_BYTES_MAX)
		return bridge_error_set(err,
					"%zu posts (%zu bytes) are already waiting for the "
					"store",
					q->n_waiting, q->waiting_bytes);
	p->next = NULL;
	*q->waiting_tail = p;
	q->waiting_tail = &p->next;
	q->n_waiting++;
	q->waiting_bytes += p->item->len;
	pthread_cond_signal(&q->writer_cv);
	return 0;
}

int queue_enqueue(struct queue *q, const struct store_item *item, struct store_receipt *ret,
		  struct bridge_error *err)
{
	struct queue_pending p;
	struct store_item sealed = *item;
	struct store_seal seal = { 0 };

	memset(&p, 0, sizeof(p));
	p.q = q;
	p.item = &sealed;
	p.sync = 1;
	/* checked alone, so that a bad item cannot fail the batch it would join */
	if (store_item_check(item, err) < 0)
		return -1;
	if (!item->seal) {
		if (store_seal_make(item, &seal) < 0)
			return bridge_error_set(err, "out of memory");
		sealed.seal = &seal;
	}
	pthread_mutex_lock(&q->commit_mu);
	if (waiting_add(q, &p, err) < 0) {
		pthread_mutex_unlock(&q->commit_mu);
		store_seal_clear(&seal);
		return -1;
	}
	while (!p.done)
		pthread_cond_wait(&q->done_cv, &q->commit_mu);
	pthread_mutex_unlock(&q->commit_mu);
	store_seal_clear(&seal);
	if (p.result < 0)
		return bridge_error_set(err, "%s", p.error);
	if (ret)
		*ret = p.receipt;
	return p.result;
}

static void pending_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue_pending *p = arg;

	p->cb(p->result, p->result >= 0 ? &p->receipt : NULL, p->result < 0 ? p->error : NULL,
	      p->arg);
	event_free(p->ev);
	pending_free(p);
}

/* Copy the item into one allocation owned by p. */
static int pending_copy(struct queue_pending *p, const struct store_item *it)
{
	const char *strs[] = { it->route,       it->endpoint,         it->ca_file,
			       it->delivery_id, it->participation_id, it->state };
	const char **outs[] = { &p->own.route,       &p->own.endpoint,         &p->own.ca_file,
				&p->own.delivery_id, &p->own.participation_id, &p->own.state };
	size_t total = it->len + 1, i;
	char *w;

	for (i = 0; i < 6; i++)
		total += strlen(strs[i] ? strs[i] : "") + 1;
	for (i = 0; i < it->n_headers; i++)
		total += strlen(it->headers[i].name) + strlen(it->headers[i].value) + 2;
	p->own_data = malloc(total);
	p->own_headers = calloc(it->n_headers ? it->n_headers : 1, sizeof(*p->own_headers));
	if (!p->own_data || !p->own_headers)
		return -1;
	w = p->own_data;
	for (i = 0; i < 6; i++) {
		size_t n = strlen(strs[i] ? strs[i] : "") + 1;

		memcpy(w, strs[i] ? strs[i] : "", n);
		*outs[i] = w;
		w += n;
	}
	for (i = 0; i < it->n_headers; i++) {
		size_t nn = strlen(it->headers[i].name) + 1, vn = strlen(it->headers[i].value) + 1;

		memcpy(w, it->headers[i].name, nn);
		p->own_headers[i].name = w;
		w += nn;
		memcpy(w, it->headers[i].value, vn);
		p->own_headers[i].value = w;
		w += vn;
	}
	if (it->len)
		memcpy(w, it->body, it->len);
	p->own.body = w;
	p->own.len = it->len;
	p->own.timeout_ms = it->timeout_ms;
	p->own.headers = p->own_headers;
	p->own.n_headers = it->n_headers;
	p->item = &p->own;
	/* a seal the caller made is kept, not made again */
	if ((it->seal ? store_seal_copy(it->seal, &p->own_seal)
		      : store_seal_make(&p->own, &p->own_seal)) < 0)
		return -1;
	p->own.seal = &p->own_seal;
	return 0;
}

int queue_enqueue_async(struct queue *q, struct event_base *base, const struct store_item *item,
			queue_enqueue_cb cb, void *arg, struct queue_pending **ret,
			struct bridge_error *err)
{
	struct queue_pending *p;

	*ret = NULL;
	if (!base || !cb)
		return bridge_error_set(err, "queue_enqueue_async: base and callback are required");
	if (store_item_check(item, err) < 0)
		return -1;
	p = calloc(1, sizeof(*p));
	if (!p || pending_copy(p, item) < 0 ||
	    !(p->ev = event_new(base, -1, 0, pending_done_cb, p))) {
		if (p)
			pending_free(p);
		return bridge_error_set(err, "out of memory");
	}
	p->q = q;
	p->cb = cb;
	p->arg = arg;
	pthread_mutex_lock(&q->commit_mu);
	if (waiting_add(q, p, err) < 0) {
		pthread_mutex_unlock(&q->commit_mu);
		event_free(p->ev);
		pending_free(p);
		return -1;
	}
	pthread_mutex_unlock(&q->commit_mu);
	*ret = p;
	return 0;
}

void queue_enqueue_cancel(struct queue_pending *p)
{
	struct queue *q;

	if (!p)
		return;
	q = p->q;
	pthread_mutex_lock(&q->commit_mu);
	event_free(p->ev); /* also takes it off the active list if the writer was done */
	p->ev = NULL;
	if (!p->done) {
		p->cancelled = 1; /* the writer frees it */
		pthread_mutex_unlock(&q->commit_mu);
		return;
	}
	pthread_mutex_unlock(&q->commit_mu);
	pending_free(p);
}
