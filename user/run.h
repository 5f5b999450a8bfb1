/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* `egressd run [options] -- CMD [ARG...]` and `egressd cleanup`. */
#ifndef EGR_RUN_H
#define EGR_RUN_H

#include <stdio.h>

/* Exit status: CMD's status, or 2 for egressd's own errors (bad input,
 * missing privileges or kernel features), 128+N if CMD died of signal N. */
#define RUN_EXIT_USAGE 2

int run_main(int argc, char **argv);
int run_cleanup_main(int argc, char **argv);
void run_usage(FILE *out);

#endif
