/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* Kernel decisions (struct egr_event from the ring buffer) as audit records,
 * for `egressd run` and the daemon alike. */
#ifndef EGR_KEVENT_H
#define EGR_KEVENT_H

#include "audit.h"
#include "egressd_shared.h"
#include "kfold.h"

/* Fill r from e (times, process, destination, verdict, reason, detail).
 * The caller sets r->cgroup and r->policy (names it owns). */
void kevent_to_record(const struct egr_event *e, struct audit_record *r);

/* A record kfold made (kfold.h): r from kevent_to_record(e), then its
 * count and times from sp; a mixed one loses the destination and process
 * and says why in detail (of len bytes, r->detail points into it). */
void kevent_span(struct audit_record *r, const struct kfold_span *sp, char *detail, size_t len);

#endif
