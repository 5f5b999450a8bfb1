// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* egressd: command dispatch. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>

#include "daemon.h"
#include "landlock.h"
#include "log.h"
#include "policy_cli.h"
#include "run.h"
#include "runpty.h"

static void usage(FILE *out)
{
	fprintf(out,
"Usage: egressd COMMAND [ARGS]\n"
"\n"
"Transparent egress enforcement for AI agents: whatever an agent runs, its\n"
"network traffic goes only where its policy allows, and every attempt is\n"
"logged with the process that made it.\n"
"\n"
"Commands:\n"
"  run [OPTIONS] -- CMD [ARG...]   run CMD in its own enforced cgroup\n"
"                                  (egressd run --help for the options)\n"
"  daemon [--config FILE]          enforce a configuration on many cgroups\n"
"                                  (egressd daemon --help)\n"
"  policy show-default             print the built-in default policy (JSON)\n"
"  policy check FILE...            validate policy files\n"
"  scope [--] CMD [ARG...]         run CMD unable to ptrace (6.12+: signal, reach\n"
"                                  the abstract sockets of) processes outside it\n"
"                                  (agents the daemon enforces; egressd scope --help)\n"
"  cleanup                         remove what killed runs left (cgroups, CA dirs;\n"
"                                  egressd cleanup --help)\n"
"  version                         print the version\n"
"  help                            this text\n");
}

int main(int argc, char **argv)
{
	const char *cmd;

	log_set_prefix("egressd");
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	cmd = argv[1];
	/* run and daemon hold the CA key, leaf keys and the credentials they
	 * inject: no core dump of them, no ptrace by anyone but root. (A
	 * command run execs afresh and is dumpable again.) */
	if (!strcmp(cmd, "run") || !strcmp(cmd, "daemon"))
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (!strcmp(cmd, "run"))
		return run_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "policy"))
		return policy_cli_main("egressd", argc - 2, argv + 2);
	if (!strcmp(cmd, "daemon"))
		return daemon_main(argc - 1, argv + 1);
	if (!strcmp(cmd, RUNPTY_MONITOR_CMD))
		return runpty_monitor_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "scope"))
		return scope_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "cleanup"))
		return run_cleanup_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("egressd %s\n", EGRESSD_VERSION);
		return 0;
	}
	if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "egressd: unknown command '%s'\n\n", cmd);
	usage(stderr);
	return 2;
}
