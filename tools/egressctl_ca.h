/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* `egressctl ca init|export`: argv[0] is the subcommand ("init", "export"),
 * as egressctl passes argv + 2. Returns an exit status (0, or 2 with one
 * line on stderr). */
#ifndef EGR_EGRESSCTL_CA_H
#define EGR_EGRESSCTL_CA_H

int egressctl_ca_main(int argc, char **argv);

#endif
