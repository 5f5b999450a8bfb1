/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * A small epoll event loop in the style of Redis ae.c: register an fd with
 * an interest mask, a callback and its data; one loop per thread.
 *
 * Timers are intrusive (struct loop_timer lives in the caller's object, no
 * allocation per arm) and come in two kinds:
 *  - FIFO lists, one per fixed duration (peek, connect, idle, ...): every
 *    entry of a list shares the duration, so appending at the tail keeps the
 *    list sorted and start/stop are O(1);
 *  - "at" timers with an arbitrary deadline (c-ares), kept in a sorted list
 *    with O(n) insertion; meant for a handful of them per loop.
 * epoll_wait's timeout is computed from the list heads.
 *
 * Not thread-safe except loop_stop(), which may be called from any thread.
 */
#ifndef EGR_LOOP_H
#define EGR_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#define LOOP_READ 0x1
#define LOOP_WRITE 0x2
#define LOOP_RDHUP 0x10 /* the peer shut its sending side (EPOLLRDHUP) */
/* Only in the events passed to a callback, never in a mask: */
#define LOOP_ERR 0x4 /* EPOLLERR: read SO_ERROR */
#define LOOP_HUP 0x8 /* EPOLLHUP: both directions are shut / reset */

struct loop;
struct loop_timer;
struct loop_timer_list;

/* events: LOOP_READ / LOOP_WRITE / LOOP_RDHUP / LOOP_ERR / LOOP_HUP. An fd deleted by an
 * earlier callback of the same batch is not reported any more. */
typedef void (*loop_fd_cb)(struct loop *l, int fd, void *data, int events);
typedef void (*loop_timer_cb)(struct loop *l, struct loop_timer *t);

struct loop_timer {
	struct loop_timer *prev, *next;
	struct loop_timer_list *list; /* NULL when not armed */
	uint64_t deadline_ms;         /* CLOCK_MONOTONIC, ms */
	loop_timer_cb cb;
	void *data;                   /* free for the owner */
};

int loop_create(struct loop **out);
void loop_destroy(struct loop *l); /* accepts NULL; does not close fds */

/* Register fd (or change an existing registration: mask, cb and data). */
int loop_add(struct loop *l, int fd, int mask, loop_fd_cb cb, void *data);
/* Change the interest mask only (0 = none; errors/hangups still reported). */
int loop_mod(struct loop *l, int fd, int mask);
int loop_del(struct loop *l, int fd);
/* fd is about to be closed and has no duplicate: close() removes it from
 * the epoll set, so only the loop's own entry goes (no syscall). */
void loop_forget(struct loop *l, int fd);
/* Current mask of fd, -1 if not registered. */
int loop_mask(const struct loop *l, int fd);

/* Run until loop_stop(). Returns 0, or -errno if epoll_wait failed. A stop
 * requested before loop_run() makes it return at once; the request is
 * consumed, so loop_run() may be called again afterwards. */
int loop_run(struct loop *l);
void loop_stop(struct loop *l); /* thread-safe, async-signal-safe */
/* fn runs before every epoll_wait() and once more when loop_run() returns:
 * the end of each pass over the ready events (the audit's batched writes,
 * audit_thread_flush()). NULL: nothing. */
void loop_set_before_wait(struct loop *l, void (*fn)(void));

/* Milliseconds on CLOCK_MONOTONIC, cached once per loop iteration. */
uint64_t loop_now_ms(const struct loop *l);
/* Refresh the cached time (after something slow). */
uint64_t loop_update_time(struct loop *l);

/* A list of timers that all share one duration. */
struct loop_timer_list *loop_timer_list_create(struct loop *l, unsigned duration_ms);
unsigned loop_timer_list_duration(const struct loop_timer_list *q);
/* Change q's duration (a reload). Timers armed later fire duration_ms after
 * their start; a shorter duration also brings the armed ones forward to at
 * most duration_ms from now, a longer one leaves them as they are. */
void loop_timer_list_set_duration(struct loop *l, struct loop_timer_list *q,
				  unsigned duration_ms);
/* Arm t on q: fires duration_ms from now. Re-arming moves it to the tail. */
void loop_timer_start(struct loop *l, struct loop_timer_list *q,
		      struct loop_timer *t, loop_timer_cb cb);
/* Arm t at an arbitrary monotonic deadline (few such timers per loop). */
void loop_timer_start_at(struct loop *l, struct loop_timer *t,
			 uint64_t deadline_ms, loop_timer_cb cb);
void loop_timer_stop(struct loop_timer *t); /* no-op if not armed */
static inline bool loop_timer_active(const struct loop_timer *t)
{
	return t->list != 0;
}

#endif
