// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Attacker for the events_lost_reported case: refused UDP sends as fast
 * as one thread can make them, each a kernel decision egressd must record
 * or say it could not (the event ring fills).
 *
 * usage: deny_flood ADDR PORT COUNT
 * prints "refused N of COUNT".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	long count, i, refused = 0;
	int fd;

	if (argc != 4 || inet_pton(AF_INET, argv[1], &sin.sin_addr) != 1) {
		fprintf(stderr, "usage: deny_flood ADDR PORT COUNT\n");
		return 2;
	}
	sin.sin_port = htons((unsigned short)atoi(argv[2]));
	count = atol(argv[3]);
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	for (i = 0; i < count; i++)
		if (sendto(fd, "x", 1, 0, (struct sockaddr *)&sin, sizeof(sin)) < 0 &&
		    errno == EPERM)
			refused++;
	printf("refused %ld of %ld\n", refused, count);
	return 0;
}
