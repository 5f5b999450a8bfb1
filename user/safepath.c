// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* Files root opens in places an agent may write: see safepath.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safepath.h"

#define SAFEPATH_MAX_LINKS 40 /* as the kernel's MAXSYMLINKS */

static int fail(char *err, size_t errsz, int e, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errsz, int e, const char *fmt, ...)
{
	va_list ap;

	if (errsz) {
		va_start(ap, fmt);
		vsnprintf(err, errsz, fmt, ap);
		va_end(ap);
	}
	return e;
}

/* uid 0, or ours (a test as another user) */
static int trusted_uid(uid_t u)
{
	return u == 0 || u == geteuid();
}

int safepath_dir(const char *path, size_t *base, char *err, size_t errsz)
{
	char rest[2 * PATH_MAX], target[PATH_MAX], comp[NAME_MAX + 1];
	const char *slash;
	size_t off = 0, dlen;
	int dfd, hops = 0;

	if (errsz)
		err[0] = '\0';
	if (!path || !*path)
		return fail(err, errsz, -EINVAL, "empty path");
	slash = strrchr(path, '/');
	*base = slash ? (size_t)(slash - path) + 1 : 0;
	if (!path[*base])
		return fail(err, errsz, -EISDIR, "names a directory, not a file");
	dlen = slash ? (size_t)(slash - path) : 0;
	if (dlen >= sizeof(rest) / 2)
		return fail(err, errsz, -ENAMETOOLONG, "path too long");
	memcpy(rest, path, dlen);
	rest[dlen] = '\0';

	dfd = open(path[0] == '/' ? "/" : ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return fail(err, errsz, -errno, "cannot open the starting directory: %s", strerror(errno));
	for (;;) {
		struct stat st;
		size_t len;
		ssize_t tl;
		int nfd;

		while (rest[off] == '/')
			off++;
		if (!rest[off])
			return dfd;
		len = strcspn(rest + off, "/");
		if (len > NAME_MAX) {
			close(dfd);
			return fail(err, errsz, -ENAMETOOLONG, "a component is too long");
		}
		memcpy(comp, rest + off, len);
		comp[len] = '\0';
		off += len;
		if (!strcmp(comp, "."))
			continue;
		nfd = openat(dfd, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0 || fstat(nfd, &st)) {
			int e = -errno;

			if (nfd >= 0)
				close(nfd);
			close(dfd);
			return fail(err, errsz, e, "%s: %s", comp, strerror(-e));
		}
		if (S_ISDIR(st.st_mode)) {
			close(dfd);
			dfd = nfd;
			continue;
		}
		if (!S_ISLNK(st.st_mode)) {
			close(nfd);
			close(dfd);
			return fail(err, errsz, -ENOTDIR, "%s is not a directory", comp);
		}
		/* Only root's symlinks: an agent can make them only as itself. */
		if (!trusted_uid(st.st_uid)) {
			close(nfd);
			close(dfd);
			return fail(err, errsz, -EPERM,
				    "%s is a symlink owned by uid %ld: only symlinks owned by "
				    "root are followed (an agent could have left it)",
				    comp, (long)st.st_uid);
		}
		tl = readlinkat(nfd, "", target, sizeof(target) - 1);
		close(nfd);
		if (tl < 0 || ++hops > SAFEPATH_MAX_LINKS ||
		    (size_t)tl + strlen(rest + off) + 2 > sizeof(rest)) {
			int e = tl < 0 ? -errno : -ELOOP;

			close(dfd);
			return fail(err, errsz, e, "%s: cannot follow the symlink: %s", comp, strerror(-e));
		}
		target[tl] = '\0';
		/* rest = target + what was left after the link */
		memmove(rest + tl + 1, rest + off, strlen(rest + off) + 1);
		memcpy(rest, target, (size_t)tl);
		rest[tl] = '/';
		off = 0;
		if (target[0] == '/') {
			close(dfd);
			dfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
			if (dfd < 0)
				return fail(err, errsz, -errno, "cannot open /: %s", strerror(errno));
		}
	}
}

int safepath_append(int dirfd, const char *name, char *err, size_t errsz)
{
	const int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
	struct stat st;
	int fd, e;

	if (errsz)
		err[0] = '\0';
	fd = openat(dirfd, name, flags | O_NOFOLLOW, 0640);
	if (fd < 0 && errno == ELOOP) {
		/* root's own symlink (/dev/stdout) is followed; any other is
		 * one an agent could have left */
		if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISLNK(st.st_mode) && trusted_uid(st.st_uid))
			fd = openat(dirfd, name, flags, 0640);
		else
			return fail(err, errsz, -ELOOP,
				    "is a symlink not owned by root: refusing to follow it");
	}
	if (fd < 0) {
		e = -errno;
		return fail(err, errsz, e, "%s", strerror(-e));
	}
	if (fstat(fd, &st)) {
		e = -errno;
		close(fd);
		return fail(err, errsz, e, "%s", strerror(-e));
	}
	if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode)) {
		close(fd);
		return fail(err, errsz, -EINVAL, "is not a regular file, a FIFO or a terminal");
	}
	if (S_ISREG(st.st_mode) && st.st_nlink != 1) {
		close(fd);
		return fail(err, errsz, -EMLINK,
			    "has %ld hard links: it may be another file's name",
			    (long)st.st_nlink);
	}
	if (!trusted_uid(st.st_uid)) {
		close(fd);
		return fail(err, errsz, -EPERM,
			    "is owned by uid %ld, not by root: egressd appends only to a "
			    "file it or root created (remove it, or chown root)",
			    (long)st.st_uid);
	}
	if (fcntl(fd, F_SETFL, O_APPEND) < 0) { /* O_NONBLOCK off */
		e = -errno;
		close(fd);
		return fail(err, errsz, e, "%s", strerror(-e));
	}
	return fd;
}

/* The prefix walk of safepath_parents_trusted; path absolute. */
static int parents_trusted(const char *path, bool resolved, const char *fix, char *why,
			   size_t whylen)
{
	char dir[2 * PATH_MAX];
	const char *base = strrchr(path, '/');
	bool link = false;
	struct stat st;
	char *real;
	int err;

	for (size_t i = 0; path[i] && &path[i] <= base; i++) {
		size_t len = i ? i : 1; /* the prefix before this '/', or "/" */

		if (path[i] != '/' || (i && path[i - 1] == '/'))
			continue;
		if (len >= sizeof(dir))
			return fail(why, whylen, -ENAMETOOLONG, "path too long");
		memcpy(dir, path, len);
		dir[len] = '\0';
		if (lstat(dir, &st) < 0) {
			err = errno;
			return fail(why, whylen, -err, "%s: %s", dir, strerror(err));
		}
		if (S_ISLNK(st.st_mode)) {
			if (!trusted_uid(st.st_uid))
				return fail(why, whylen, -EPERM,
					    "%s is a symbolic link owned by uid %u; %s", dir,
					    (unsigned)st.st_uid, fix);
			link = true;
			continue;
		}
		if (!S_ISDIR(st.st_mode))
			return fail(why, whylen, -ENOTDIR, "%s: %s", dir, strerror(ENOTDIR));
		if (!trusted_uid(st.st_uid))
			return fail(why, whylen, -EPERM, "directory %s is owned by uid %u; %s",
				    dir, (unsigned)st.st_uid, fix);
		if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX))
			return fail(why, whylen, -EPERM,
				    "directory %s is writable by group or others (mode %04o); %s",
				    dir, (unsigned)(st.st_mode & 07777), fix);
	}
	if (!link || resolved)
		return 0;
	/* Where the links lead: no link is left on that path. */
	snprintf(dir, sizeof(dir), "%.*s", (int)(base - path + 1), path);
	real = realpath(dir, NULL);
	if (!real) {
		err = errno;
		return fail(why, whylen, -err, "%s: %s", dir, strerror(err));
	}
	snprintf(dir, sizeof(dir), "%s/%s", real, base + 1);
	free(real);
	return parents_trusted(dir, true, fix, why, whylen);
}

int safepath_parents_trusted(const char *path, const char *fix, char *why, size_t whylen)
{
	char abs[2 * PATH_MAX], cwd[PATH_MAX];

	if (whylen)
		why[0] = '\0';
	if (!path || !*path)
		return fail(why, whylen, -EINVAL, "empty path");
	if (path[0] == '/')
		return parents_trusted(path, false, fix, why, whylen);
	if (!getcwd(cwd, sizeof(cwd)))
		return fail(why, whylen, -errno, "getcwd: %s", strerror(errno));
	if (snprintf(abs, sizeof(abs), "%s/%s", cwd, path) >= (int)sizeof(abs))
		return fail(why, whylen, -ENAMETOOLONG, "path too long");
	return parents_trusted(abs, false, fix, why, whylen);
}
