/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Descriptors between threads whose descriptor tables differ.
 *
 * A proxy worker takes a descriptor table of its own (unshare(CLONE_FILES)
 * at thread start): RLIMIT_NOFILE then bounds each worker's table, not the
 * whole process, so N workers hold N times the connections one table
 * could, and a connection's sockets exist only in the worker that owns
 * it. The table starts as a copy of the process's, so a worker may use
 * any descriptor that existed when it started, at the same number.
 *
 * Descriptors made later in the process's table (listeners for a pod's
 * namespace, the kernel relay's maps), and sockets a worker hands to
 * another thread (DNS over TCP; interception when the engine worker's
 * hand-over queue is full, intercept.h), cross through the broker:
 * one thread that shares the process's table, one SOCK_SEQPACKET pair per
 * worker, SCM_RIGHTS. A call blocks the worker until the broker answers;
 * the broker runs nothing that waits on a worker.
 *
 * A worker whose unshare() fails keeps the process's table, and every call
 * below then works on it directly (no broker round trip).
 */
#ifndef EGR_FDBROKER_H
#define EGR_FDBROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct fdbroker;

/* n_clients: the workers, each with its own channel. */
int fdbroker_create(struct fdbroker **out, unsigned n_clients);
int fdbroker_start(struct fdbroker *b);
/* Stops the broker: call once no client is inside a call (workers
 * joined). Accepts NULL. */
void fdbroker_destroy(struct fdbroker *b);

/* In client thread `client`: take a descriptor table of its own. 0, or
 * -errno with the thread still on the process's table. */
int fdbroker_unshare(struct fdbroker *b, unsigned client);
/* The calling thread has a table of its own (fdbroker_unshare worked). */
bool fdbroker_private(void);

/* fn gets the descriptors in the process's table and owns them: it runs
 * in the broker thread (private caller) or right here (shared caller),
 * exactly once. If they could not cross (the broker out of descriptors,
 * the channel broken), fn still runs, here, with -1 for each, so that its
 * own cleanup (releasing counts) happens. The caller's copies are closed
 * in every case. Returns what fn returned. */
typedef int (*fdbroker_fn)(void *arg, int *fds, unsigned n);
int fdbroker_export(struct fdbroker *b, unsigned client, int *fds, unsigned n,
		    fdbroker_fn fn, void *arg);

/* A copy, in the calling thread's table, of fd of the process's table;
 * with take, the broker closes the process's copy once it has the request
 * (also when it cannot send the copy). Returns the new descriptor
 * (O_CLOEXEC) or -errno. A shared caller gets fd itself with take, a
 * duplicate without: either way the result is the caller's to close. */
int fdbroker_import(struct fdbroker *b, unsigned client, int fd, bool take);

/* The SCM_RIGHTS plumbing, also for other channels of the process (the
 * interception engine's hand-over socket). fdbroker_send_fds(): one packet
 * of len bytes with n (at most FDBROKER_MAX_FDS) descriptors; flags for
 * sendmsg (MSG_NOSIGNAL always); 0, -EIO (short) or -errno.
 * fdbroker_recv_fds(): one packet and up to want descriptors (*got of
 * them, the rest -1); on MSG_CTRUNC (the receiver's table full, or more
 * sent than asked for) none is kept. Returns the bytes read or -errno. */
#define FDBROKER_MAX_FDS 4
int fdbroker_send_fds(int s, const void *buf, size_t len, const int *fds, unsigned n,
		      int flags);
ssize_t fdbroker_recv_fds(int s, void *buf, size_t len, int *fds, unsigned want,
			  unsigned *got, int flags);

#endif
