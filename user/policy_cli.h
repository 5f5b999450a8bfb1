/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* `policy show-default` and `policy check FILE...`, shared by egressd and
 * egressctl. argv[0] is the subcommand. Returns an exit status. */
#ifndef EGR_POLICY_CLI_H
#define EGR_POLICY_CLI_H

int policy_cli_main(const char *prog, int argc, char **argv);

#endif
