// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * epoll event loop (see loop.h). Registrations live in an array indexed by
 * fd, as in Redis ae.c: an event for an fd that an earlier callback of the
 * same batch deleted finds no registration and is dropped, so callers never
 * see events for objects they already released. If the fd number was
 * reused in between, the new owner gets one spurious wakeup, which
 * non-blocking code tolerates (EAGAIN).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

#define LOOP_MAX_EVENTS 256

struct loop_reg {
	int mask; /* -1: not registered */
	loop_fd_cb cb;
	void *data;
};

struct loop_timer_list {
	struct loop_timer head; /* sentinel of a circular list */
	unsigned duration_ms;
	bool sorted;            /* the "at" list: insertion keeps deadline order */
	struct loop_timer_list *next_list;
};

struct loop {
	int epfd;
	int stopfd; /* eventfd: loop_stop() from other threads */
	atomic_bool stop;
	struct loop_reg *regs;
	int nregs;
	uint64_t now_ms;
	struct loop_timer_list at; /* arbitrary deadlines */
	struct loop_timer_list *lists;
	void (*before_wait)(void);
	struct epoll_event events[LOOP_MAX_EVENTS];
};

static uint64_t clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void list_init(struct loop_timer_list *q, unsigned duration_ms, bool sorted)
{
	q->head.next = q->head.prev = &q->head;
	q->head.list = q;
	q->duration_ms = duration_ms;
	q->sorted = sorted;
	q->next_list = NULL;
}

int loop_create(struct loop **out)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct loop *l;
	int err;

	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->epfd = -1;
	l->stopfd = -1;
	list_init(&l->at, 0, true);
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		err = -errno;
		goto fail;
	}
	l->stopfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->stopfd < 0) {
		err = -errno;
		goto fail;
	}
	/* The stop fd is not in regs[]: data.fd identifies it in loop_run(). */
	ev.data.fd = l->stopfd;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->stopfd, &ev) < 0) {
		err = -errno;
		goto fail;
	}
	l->now_ms = clock_ms();
	*out = l;
	return 0;
fail:
	loop_destroy(l);
	return err;
}

void loop_destroy(struct loop *l)
{
	struct loop_timer_list *q, *next;

	if (!l)
		return;
	for (q = l->lists; q; q = next) {
		next = q->next_list;
		/* Unlink armed timers so their owners see them inactive. */
		while (q->head.next != &q->head)
			loop_timer_stop(q->head.next);
		free(q);
	}
	while (l->at.head.next != &l->at.head)
		loop_timer_stop(l->at.head.next);
	if (l->stopfd >= 0)
		close(l->stopfd);
	if (l->epfd >= 0)
		close(l->epfd);
	free(l->regs);
	free(l);
}

static int regs_reserve(struct loop *l, int fd)
{
	struct loop_reg *n;
	int i, size;

	if (fd < l->nregs)
		return 0;
	size = l->nregs ? l->nregs : 64;
	while (size <= fd)
		size *= 2;
	n = realloc(l->regs, (size_t)size * sizeof(*n));
	if (!n)
		return -ENOMEM;
	for (i = l->nregs; i < size; i++)
		n[i].mask = -1;
	l->regs = n;
	l->nregs = size;
	return 0;
}

#define LOOP_MASKS (LOOP_READ | LOOP_WRITE | LOOP_RDHUP)

static uint32_t epoll_mask(int mask)
{
	return (mask & LOOP_READ ? EPOLLIN : 0) | (mask & LOOP_WRITE ? EPOLLOUT : 0) |
	       (mask & LOOP_RDHUP ? EPOLLRDHUP : 0);
}

int loop_add(struct loop *l, int fd, int mask, loop_fd_cb cb, void *data)
{
	struct epoll_event ev = { .events = epoll_mask(mask), .data.fd = fd };
	int op, err;

	if (fd < 0)
		return -EBADF;
	err = regs_reserve(l, fd);
	if (err)
		return err;
	op = l->regs[fd].mask < 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
	/* The relay re-states its interest after every pump: an unchanged
	 * registration must not cost a syscall. */
	if (op == EPOLL_CTL_MOD && l->regs[fd].mask == (mask & LOOP_MASKS) &&
	    l->regs[fd].cb == cb && l->regs[fd].data == data)
		return 0;
	if (epoll_ctl(l->epfd, op, fd, &ev) < 0)
		return -errno;
	l->regs[fd].mask = mask & LOOP_MASKS;
	l->regs[fd].cb = cb;
	l->regs[fd].data = data;
	return 0;
}

int loop_mod(struct loop *l, int fd, int mask)
{
	struct epoll_event ev = { .events = epoll_mask(mask), .data.fd = fd };

	if (fd < 0 || fd >= l->nregs || l->regs[fd].mask < 0)
		return -ENOENT;
	mask &= LOOP_MASKS;
	if (l->regs[fd].mask == mask)
		return 0;
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
		return -errno;
	l->regs[fd].mask = mask;
	return 0;
}

int loop_del(struct loop *l, int fd)
{
	if (fd < 0 || fd >= l->nregs || l->regs[fd].mask < 0)
		return -ENOENT;
	l->regs[fd].mask = -1;
	l->regs[fd].cb = NULL;
	l->regs[fd].data = NULL;
	if (epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL) < 0)
		return -errno;
	return 0;
}

void loop_forget(struct loop *l, int fd)
{
	if (fd < 0 || fd >= l->nregs)
		return;
	l->regs[fd].mask = -1;
	l->regs[fd].cb = NULL;
	l->regs[fd].data = NULL;
}

int loop_mask(const struct loop *l, int fd)
{
	if (fd < 0 || fd >= l->nregs)
		return -1;
	return l->regs[fd].mask;
}

uint64_t loop_now_ms(const struct loop *l)
{
	return l->now_ms;
}

uint64_t loop_update_time(struct loop *l)
{
	l->now_ms = clock_ms();
	return l->now_ms;
}

struct loop_timer_list *loop_timer_list_create(struct loop *l, unsigned duration_ms)
{
	struct loop_timer_list *q = malloc(sizeof(*q));

	if (!q)
		return NULL;
	list_init(q, duration_ms, false);
	q->next_list = l->lists;
	l->lists = q;
	return q;
}

unsigned loop_timer_list_duration(const struct loop_timer_list *q)
{
	return q->duration_ms;
}

void loop_timer_list_set_duration(struct loop *l, struct loop_timer_list *q,
				  unsigned duration_ms)
{
	uint64_t cap = l->now_ms + duration_ms;
	struct loop_timer *t;

	/* The list is in deadline order and capping keeps it so: every
	 * deadline past cap becomes cap, and later starts land at or
	 * after it. */
	if (duration_ms < q->duration_ms)
		for (t = q->head.prev; t != &q->head && t->deadline_ms > cap; t = t->prev)
			t->deadline_ms = cap;
	q->duration_ms = duration_ms;
}

static void timer_insert_before(struct loop_timer *pos, struct loop_timer *t)
{
	t->next = pos;
	t->prev = pos->prev;
	pos->prev->next = t;
	pos->prev = t;
	t->list = pos->list;
}

void loop_timer_stop(struct loop_timer *t)
{
	if (!t->list)
		return;
	t->prev->next = t->next;
	t->next->prev = t->prev;
	t->next = t->prev = NULL;
	t->list = NULL;
}

void loop_timer_start(struct loop *l, struct loop_timer_list *q,
		      struct loop_timer *t, loop_timer_cb cb)
{
	loop_timer_stop(t);
	t->deadline_ms = l->now_ms + q->duration_ms;
	t->cb = cb;
	timer_insert_before(&q->head, t); /* tail: same duration keeps order */
}

void loop_timer_start_at(struct loop *l, struct loop_timer *t,
			 uint64_t deadline_ms, loop_timer_cb cb)
{
	struct loop_timer *pos;

	loop_timer_stop(t);
	t->deadline_ms = deadline_ms;
	t->cb = cb;
	/* Walk from the tail: re-arming usually moves a deadline later. */
	for (pos = l->at.head.prev; pos != &l->at.head; pos = pos->prev)
		if (pos->deadline_ms <= deadline_ms)
			break;
	timer_insert_before(pos->next, t);
}

/* Fire the expired timers of q. A callback may re-arm or stop any timer,
 * so always restart from the head. */
static void list_expire(struct loop *l, struct loop_timer_list *q)
{
	struct loop_timer *t;

	while ((t = q->head.next) != &q->head && t->deadline_ms <= l->now_ms) {
		loop_timer_stop(t);
		t->cb(l, t);
	}
}

static void timers_expire(struct loop *l)
{
	struct loop_timer_list *q;

	list_expire(l, &l->at);
	for (q = l->lists; q; q = q->next_list)
		list_expire(l, q);
}

static int timers_timeout(const struct loop *l)
{
	const struct loop_timer_list *q;
	uint64_t next = UINT64_MAX;

	if (l->at.head.next != &l->at.head)
		next = l->at.head.next->deadline_ms;
	for (q = l->lists; q; q = q->next_list)
		if (q->head.next != &q->head && q->head.next->deadline_ms < next)
			next = q->head.next->deadline_ms;
	if (next == UINT64_MAX)
		return -1;
	if (next <= l->now_ms)
		return 0;
	if (next - l->now_ms > 3600 * 1000)
		return 3600 * 1000;
	return (int)(next - l->now_ms);
}

static void dispatch(struct loop *l, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		uint32_t e = l->events[i].events;
		int fd = l->events[i].data.fd;
		struct loop_reg *r;
		int ev = 0;

		if (fd == l->stopfd) {
			uint64_t v;
			ssize_t r = read(l->stopfd, &v, sizeof(v));

			(void)r; /* EAGAIN: someone else drained it */
			continue;
		}
		if (fd >= l->nregs || l->regs[fd].mask < 0)
			continue;
		r = &l->regs[fd];
		if (e & EPOLLIN)
			ev |= LOOP_READ;
		if (e & EPOLLOUT)
			ev |= LOOP_WRITE;
		if (e & EPOLLRDHUP)
			ev |= LOOP_RDHUP;
		/* A callback earlier in the batch may have narrowed the mask. */
		ev &= r->mask;
		if (e & EPOLLERR)
			ev |= LOOP_ERR;
		if (e & EPOLLHUP)
			ev |= LOOP_HUP;
		if (ev)
			r->cb(l, fd, r->data, ev);
	}
}

int loop_run(struct loop *l)
{
	int err = 0;

	while (!atomic_load(&l->stop)) {
		int timeout, n;

		l->now_ms = clock_ms();
		timers_expire(l);
		if (atomic_load(&l->stop))
			break;
		timeout = timers_timeout(l);
		if (l->before_wait)
			l->before_wait();
		n = epoll_wait(l->epfd, l->events, LOOP_MAX_EVENTS, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		l->now_ms = clock_ms();
		dispatch(l, n);
	}
	if (l->before_wait)
		l->before_wait(); /* what the last pass left */
	atomic_store(&l->stop, false);
	return err;
}

void loop_set_before_wait(struct loop *l, void (*fn)(void))
{
	l->before_wait = fn;
}

void loop_stop(struct loop *l)
{
	uint64_t one = 1;
	ssize_t r;

	atomic_store(&l->stop, true);
	r = write(l->stopfd, &one, sizeof(one));
	(void)r; /* EAGAIN: the counter is already non-zero, a wakeup is pending */
}
