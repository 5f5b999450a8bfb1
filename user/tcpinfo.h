/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
#ifndef EGR_TCPINFO_H
#define EGR_TCPINFO_H

#include <stdint.h>

/*
 * Bytes a TCP socket has taken for sending since it was opened: acked plus
 * still queued (tcpi_bytes_acked + SIOCOUTQ). Monotonic; a lower bound when
 * ACKs race the two reads. Includes the SYN's sequence number on sockets
 * that counted it, so callers compare differences, never absolute values.
 */
int tcpinfo_bytes_taken(int fd, uint64_t *out);

#endif
