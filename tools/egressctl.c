// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * egressctl: the operator's tool. This version works on policy files and
 * the interception CA; the daemon commands (status, conns, log, reload)
 * arrive with `egressd daemon`.
 */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "egressctl_ca.h"
#include "policy_cli.h"

static void usage(FILE *out)
{
	fprintf(out,
"Usage: egressctl COMMAND [ARGS]\n"
"\n"
"Commands:\n"
"  policy check FILE...     validate policy files (exit 2 if any is invalid)\n"
"  policy show-default      print the built-in default policy (JSON)\n"
"  ca init [--dir DIR] [--force] [--permit DOMAIN]... [--days N]\n"
"                           create the TLS interception CA (default /etc/egressd/ca)\n"
"  ca export [--dir DIR]    print the CA certificate (PEM)\n"
"  version                  print the version\n"
"  help                     this text\n");
}

int main(int argc, char **argv)
{
	log_set_prefix("egressctl");
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "ca"))
		return egressctl_ca_main(argc - 2, argv + 2);
	if (!strcmp(argv[1], "policy"))
		return policy_cli_main("egressctl", argc - 2, argv + 2);
	if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
		printf("egressctl %s\n", EGRESSD_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "egressctl: unknown command '%s'\n\n", argv[1]);
	usage(stderr);
	return 2;
}
