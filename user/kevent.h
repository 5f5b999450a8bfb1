/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* Kernel decisions (struct egr_event from the ring buffer) as audit records,
 * for `egressd run` and the daemon alike. */
#ifndef EGR_KEVENT_H
#define EGR_KEVENT_H

#include "audit.h"
#include "egressd_shared.h"

/* Fill r from e (times, process, destination, verdict, reason, detail).
 * The caller sets r->cgroup and r->policy (names it owns). */
void kevent_to_record(const struct egr_event *e, struct audit_record *r);

#endif
