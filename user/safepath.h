/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Opening files that root writes on the command line's say, in places an
 * agent may write. `sudo egressd run --log egressd.log` in the user's
 * project directory: the agent (that user) can leave a symlink there, and
 * the next run, as root, would append agent-chosen text to whatever it
 * points at (/etc/bash.bashrc). So:
 *
 * - the directory is reached component by component; a symlink on the
 *   way is followed only if root owns it (an agent can make symlinks only
 *   as itself), and the directory is then held open, so a later reopen
 *   (log rotation) cannot be sent elsewhere by renaming a directory;
 * - the file itself is not reached through a symlink other than root's
 *   (where root's lead is walked the same way); a regular file must be
 *   owned by root (egressd created it, or root did) and have one link (not
 *   another file's second name); a FIFO or terminal, which keeps nothing,
 *   may be anyone's. (/dev/stdout and /dev/fd/N are not opened here:
 *   audit.c uses the descriptor egressd was given.)
 */
#ifndef EGR_SAFEPATH_H
#define EGR_SAFEPATH_H

#include <stddef.h>

/*
 * Open the directory part of path (the file's parent; "." if none) as
 * described above. Returns an O_PATH directory descriptor (close-on-exec)
 * and the last component's offset in path through *base, or -errno with
 * a message naming the offending component in err.
 */
int safepath_dir(const char *path, size_t *base, char *err, size_t errsz);

/*
 * Open name in dirfd for appending (created 0640 if missing) and check
 * it as described above. Returns the descriptor or -errno with a message
 * in err (which names name only: the caller adds the full path).
 */
int safepath_append(int dirfd, const char *name, char *err, size_t errsz);

/*
 * Files root reads and acts on (credentials, the daemon's configuration and
 * policies): every directory above path (relative paths from the working
 * directory) must be root's and not writable by group or others unless
 * sticky (/tmp) or on a read-only mount, since whoever can write one could
 * swap the file for their own; a symbolic link on the way must be root's, and where it leads
 * is checked the same way. 0, or -errno with why naming the offending
 * directory, followed by fix (what to do).
 */
int safepath_parents_trusted(const char *path, const char *fix, char *why, size_t whylen);
/* The same, and if path itself is a symbolic link: root's, and where it
 * leads checked the same way (up to 40 links). The file's own owner and
 * mode are the caller's to check. */
int safepath_file_trusted(const char *path, const char *fix, char *why, size_t whylen);

#endif
