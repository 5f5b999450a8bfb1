/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* `egressd daemon`: the host-wide enforcer (docs/daemon.md). */
#ifndef EGR_DAEMON_H
#define EGR_DAEMON_H

#include <stdio.h>

int daemon_main(int argc, char **argv);
void daemon_usage(FILE *out);

#endif
