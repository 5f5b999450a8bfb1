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
#include <sys/statvfs.h>
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

/*
 * Walk the directory path rest (modified) from dfd (consumed), following a
 * symlink only if root owns it, and return the directory reached (O_PATH).
 */
static int walk_dirs(int dfd, char *rest, size_t restsz, char *err, size_t errsz)
{
	char target[PATH_MAX], comp[NAME_MAX + 1];
	size_t off = 0;
	int hops = 0;

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
		    (size_t)tl + strlen(rest + off) + 2 > restsz) {
			int e = tl < 0 ? -errno : -ELOOP;

			close(dfd);
			return fail(err, errsz, e, "%s: cannot follow the symlink: %s", comp,
				    strerror(-e));
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

int safepath_dir(const char *path, size_t *base, char *err, size_t errsz)
{
	char rest[2 * PATH_MAX];
	const char *slash;
	size_t dlen;
	int dfd;

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
		return fail(err, errsz, -errno, "cannot open the starting directory: %s",
			    strerror(errno));
	return walk_dirs(dfd, rest, sizeof(rest), err, errsz);
}

int safepath_append(int dirfd, const char *name, char *err, size_t errsz)
{
	const int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
	char cur[NAME_MAX + 1], rest[2 * PATH_MAX], target[PATH_MAX];
	struct stat st;
	int fd = -1, dfd = dirfd, hops, e;

	if (errsz)
		err[0] = '\0';
	if (snprintf(cur, sizeof(cur), "%s", name) >= (int)sizeof(cur))
		return fail(err, errsz, -ENAMETOOLONG, "name too long");
	/* The file itself: a symlink is followed only if root owns it, and
	 * where it leads is walked the same way as the directories. */
	for (hops = 0; fd < 0; hops++) {
		const char *slash;
		ssize_t tl;

		fd = openat(dfd, cur, flags | O_NOFOLLOW, 0640);
		if (fd >= 0)
			break;
		e = -errno;
		if (e != -ELOOP) {
			fail(err, errsz, e, "%s", strerror(-e));
			goto out;
		}
		/* owner and target read through one descriptor of the link:
		 * no swap between the two */
		{
			int lfd = openat(dfd, cur, O_PATH | O_NOFOLLOW | O_CLOEXEC);

			if (lfd < 0 || fstat(lfd, &st) || !S_ISLNK(st.st_mode) ||
			    !trusted_uid(st.st_uid)) {
				if (lfd >= 0)
					close(lfd);
				fail(err, errsz, -ELOOP,
				     "is a symlink not owned by root: refusing to follow it");
				e = -ELOOP;
				goto out;
			}
			tl = readlinkat(lfd, "", target, sizeof(target) - 1);
			close(lfd);
		}
		if (tl < 0 || hops >= SAFEPATH_MAX_LINKS) {
			e = tl < 0 ? -errno : -ELOOP;
			fail(err, errsz, e, "cannot follow the symlink: %s", strerror(-e));
			goto out;
		}
		target[tl] = '\0';
		slash = strrchr(target, '/');
		if (snprintf(cur, sizeof(cur), "%s", slash ? slash + 1 : target) >=
		    (int)sizeof(cur) || !cur[0]) {
			e = -EINVAL;
			fail(err, errsz, e, "symlink to %s: not a file name", target);
			goto out;
		}
		if (slash) {
			int start;

			snprintf(rest, sizeof(rest), "%.*s", (int)(slash - target), target);
			start = target[0] == '/' ? open("/", O_PATH | O_DIRECTORY | O_CLOEXEC) :
						   fcntl(dfd, F_DUPFD_CLOEXEC, 0);
			if (start < 0) {
				e = -errno;
				fail(err, errsz, e, "%s", strerror(-e));
				goto out;
			}
			start = walk_dirs(start, rest, sizeof(rest), err, errsz);
			if (start < 0) {
				e = start;
				goto out;
			}
			if (dfd != dirfd)
				close(dfd);
			dfd = start;
		}
	}
	if (fstat(fd, &st)) {
		e = -errno;
		fail(err, errsz, e, "%s", strerror(-e));
		goto out;
	}
	e = 0;
	if (S_ISREG(st.st_mode)) {
		if (st.st_nlink != 1)
			e = fail(err, errsz, -EMLINK,
				 "has %ld hard links: it may be another file's name",
				 (long)st.st_nlink);
		else if (!trusted_uid(st.st_uid))
			e = fail(err, errsz, -EPERM,
				 "is owned by uid %ld, not by root: egressd appends only to a "
				 "file it or root created (remove it, or chown root)",
				 (long)st.st_uid);
	} else if (!S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode)) {
		e = fail(err, errsz, -EINVAL, "is not a regular file, a FIFO or a terminal");
	}
	/* A FIFO or terminal keeps nothing: whoever owns it, appending to it
	 * changes no file. O_NONBLOCK off: a slow reader slows the writer,
	 * it does not lose records. */
	if (!e && fcntl(fd, F_SETFL, O_APPEND) < 0)
		e = fail(err, errsz, -errno, "%s", strerror(errno));
out:
	if (dfd != dirfd)
		close(dfd);
	if (e) {
		if (fd >= 0)
			close(fd);
		return e;
	}
	return fd;
}

static bool read_only(const char *dir)
{
	struct statvfs sv;

	return statvfs(dir, &sv) == 0 && (sv.f_flag & ST_RDONLY);
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
		/* A root-owned directory writable by others, on a read-only
		 * mount (a Kubernetes ConfigMap or Secret volume is 0777): not
		 * changed through this mount. Never another user's: a
		 * read-only bind mount of their directory (systemd's
		 * ProtectHome=read-only) is still theirs to write elsewhere. */
		if (trusted_uid(st.st_uid) &&
		    (!(st.st_mode & 022) || (st.st_mode & S_ISVTX) || read_only(dir)))
			continue;
		if (!trusted_uid(st.st_uid))
			return fail(why, whylen, -EPERM, "directory %s is owned by uid %u; %s",
				    dir, (unsigned)st.st_uid, fix);
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

int safepath_file_trusted(const char *path, const char *fix, char *why, size_t whylen)
{
	char cur[2 * PATH_MAX], target[PATH_MAX];
	int hops, err;

	if (whylen)
		why[0] = '\0';
	if (!path || snprintf(cur, sizeof(cur), "%s", path) >= (int)sizeof(cur))
		return fail(why, whylen, -ENAMETOOLONG, "path too long");
	/* A symlink as the file itself (a ConfigMap's key -> ..data/key):
	 * root's, and where it leads checked like the file. */
	for (hops = 0;; hops++) {
		struct stat st;
		const char *slash;
		ssize_t tl;

		err = safepath_parents_trusted(cur, fix, why, whylen);
		if (err)
			return err;
		if (lstat(cur, &st))
			return fail(why, whylen, -errno, "%s: %s", cur, strerror(errno));
		if (!S_ISLNK(st.st_mode))
			return 0;
		if (!trusted_uid(st.st_uid))
			return fail(why, whylen, -EPERM, "%s is a symbolic link owned by uid %u; %s",
				    cur, (unsigned)st.st_uid, fix);
		tl = readlink(cur, target, sizeof(target) - 1);
		if (tl < 0 || hops >= SAFEPATH_MAX_LINKS)
			return fail(why, whylen, tl < 0 ? -errno : -ELOOP,
				    "%s: cannot follow the symlink", cur);
		target[tl] = '\0';
		slash = strrchr(cur, '/');
		if (target[0] == '/' || !slash) {
			snprintf(cur, sizeof(cur), "%s", target);
		} else {
			char dir[2 * PATH_MAX];

			snprintf(dir, sizeof(dir), "%.*s", (int)(slash - cur), cur);
			if (snprintf(cur, sizeof(cur), "%s/%s", dir, target) >= (int)sizeof(cur))
				return fail(why, whylen, -ENAMETOOLONG, "path too long");
		}
	}
}
