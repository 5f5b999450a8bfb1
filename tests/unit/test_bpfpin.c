// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Pinned (daemon) attachment, against the real kernel: the links outlive
 * the loader, so a cgroup whose daemon died is redirected to a closed port
 * (fails closed); a new loader adopts the pinned maps and swaps its
 * programs into the same links, without ever attaching twice.
 *
 * Privileged: needs root, a cgroup2 hierarchy and bpffs (mounted here, on
 * a temp dir in a private mount namespace). The cgroup is one this test
 * creates and removes; nothing is attached anywhere else.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <cmocka.h>

#include "bpfload.h"
#include "cgroup.h"
#include "log.h"
#include "policy.h"

static char bpffs[] = "/tmp/egr-bpffs-XXXXXX";
static char pins[PATH_MAX];
static char cgpath[PATH_MAX];
static int cgfd = -1;
static uint64_t cgid;

static int listen_on(uint16_t port, uint16_t *bound)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*bound = ntohs(a.sin_port);
	return fd;
}

/* A child in the test cgroup connects to 192.0.2.1:443 (never routed: only
 * a redirect can make it succeed). Returns 0 or the connect errno. */
static int connect_from_cgroup(void)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct sockaddr_in d = { .sin_family = AF_INET, .sin_port = htons(443) };
		char me[32];
		int fd, procs = openat(cgfd, "cgroup.procs", O_WRONLY);

		snprintf(me, sizeof(me), "%d", getpid());
		if (procs < 0 || write(procs, me, strlen(me)) < 0)
			_exit(100);
		inet_pton(AF_INET, "192.0.2.1", &d.sin_addr);
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&d, sizeof(d)))
			_exit(errno);
		if (write(fd, "x", 1) != 1)
			_exit(101);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static struct egr_bpf *load(uint16_t port)
{
	struct policy *p = policy_new("pin-test");
	char err[256];
	struct egr_bpf *b;

	assert_non_null(p);
	assert_int_equal(policy_add_rule(p, false, "192.0.2.0/24", "test", err, sizeof(err)), 0);
	assert_int_equal(egr_bpf_prepare_pinned(&b, pins), 0);
	assert_int_equal(egr_bpf_load(b, port, false), 0);
	assert_int_equal(egr_bpf_set_policy(b, 0, p), 0);
	assert_int_equal(egr_bpf_bind_cgroup(b, cgid, 0), 0);
	assert_int_equal(egr_bpf_attach_pinned(b, cgfd, cgid), 0);
	policy_free(p);
	return b;
}

/* The origin of the accepted connection came through egr_conns. */
static void accept_with_origin(int lfd, int conns_fd)
{
	struct sockaddr_in peer;
	socklen_t len = sizeof(peer), olen = sizeof(uint64_t);
	struct egr_conn_key k = { 0 };
	struct egr_origin o;
	int c = accept(lfd, (struct sockaddr *)&peer, &len);

	assert_true(c >= 0);
	assert_int_equal(getsockopt(c, SOL_SOCKET, SO_NETNS_COOKIE, &k.netns_cookie, &olen), 0);
	k.addr[10] = k.addr[11] = 0xff;
	memcpy(k.addr + 12, &peer.sin_addr, 4);
	k.port = ntohs(peer.sin_port);
	assert_int_equal(bpf_map_lookup_and_delete_elem(conns_fd, &k, &o), 0);
	assert_int_equal(o.dst_port, 443);
	assert_int_equal(o.cgroup_id, cgid);
	close(c);
}

static unsigned attached_count(void)
{
	__u32 ids[64], n = 64, attach_flags = 0;

	if (bpf_prog_query(cgfd, BPF_CGROUP_INET4_CONNECT, 0, &attach_flags, ids, &n))
		return 1000;
	return n;
}

static void test_pinned_fail_closed_and_adopt(void **state)
{
	uint16_t port, port2;
	struct egr_bpf *b;
	int lfd;

	(void)state;
	lfd = listen_on(0, &port);
	b = load(port);
	assert_int_equal(attached_count(), 1);
	assert_int_equal(connect_from_cgroup(), 0);
	accept_with_origin(lfd, egr_bpf_conns_fd(b));

	/* The daemon dies: no detach, its fds go away, the listener too. */
	egr_bpf_destroy(b);
	close(lfd);
	assert_int_equal(attached_count(), 1);
	assert_int_equal(connect_from_cgroup(), ECONNREFUSED);

	/* A new daemon on the same port adopts maps and links. */
	lfd = listen_on(port, &port2);
	assert_int_equal(port2, port);
	b = load(port);
	assert_int_equal(attached_count(), 1); /* updated in place, not twice */
	assert_int_equal(connect_from_cgroup(), 0);
	accept_with_origin(lfd, egr_bpf_conns_fd(b));

	/* Unpinning detaches: the connect is no longer redirected (the
	 * documentation address is unroutable here). */
	assert_int_equal(egr_bpf_unpin_cgroup(b, cgid), 0);
	egr_bpf_destroy(b);
	close(lfd);
	/* the kernel frees an unreferenced link from a work queue */
	for (int i = 0; i < 100 && attached_count(); i++)
		usleep(10000);
	assert_int_equal(attached_count(), 0);
	assert_int_not_equal(connect_from_cgroup(), 0);
}

static uint32_t binding_or(struct egr_bpf *b, uint64_t id, uint32_t none)
{
	uint32_t v;

	return egr_bpf_cgroup_binding(b, id, &v) ? none : v;
}

/*
 * After a daemon's walk no binding names another bank's policy id: the
 * next reload refills that bank with other policies. Unseen bindings go if
 * the walk was complete, and are denied if it was not; seen ones naming an
 * id outside the running bank are denied. Map keys only: no cgroup needed.
 */
static void test_settle_cgroups(void **state)
{
	enum { NONE = 0xffffffffu, DENY = EGR_MAX_POLICIES };
	struct policy *p = policy_new("settle-test");
	struct egr_policy_info info;
	char path[PATH_MAX + 32];
	uint64_t seen[3];
	struct egr_bpf *b;
	uint32_t id = 5;
	int denied, fd;

	(void)state;
	assert_non_null(p);
	assert_int_equal(egr_bpf_prepare_pinned(&b, pins), 0);
	assert_int_equal(egr_bpf_load(b, 15999, false), 0);
	assert_true(egr_bpf_prune_cgroups(b, NULL, 0) >= 0); /* the test before's */
	/* bank [512, 514) runs; 7 names the other bank */
	assert_int_equal(egr_bpf_bind_cgroup(b, 1001, 512), 0); /* seen, current */
	assert_int_equal(egr_bpf_bind_cgroup(b, 1002, 7), 0);   /* seen, old bank */
	assert_int_equal(egr_bpf_bind_cgroup(b, 1003, 514), 0); /* seen, past n */
	assert_int_equal(egr_bpf_bind_cgroup(b, 1004, 7), 0);   /* unseen */
	assert_int_equal(egr_bpf_bind_cgroup(b, 1005, DENY), 0); /* unseen, denied */
	seen[0] = 1003;
	seen[1] = 1001;
	seen[2] = 1002;
	/* an incomplete walk: the unseen one is denied, not kept or dropped */
	assert_int_equal(egr_bpf_settle_cgroups(b, seen, 3, false, 512, 514, &denied), 0);
	assert_int_equal(denied, 3);
	assert_int_equal(binding_or(b, 1001, NONE), 512);
	assert_int_equal(binding_or(b, 1002, NONE), DENY);
	assert_int_equal(binding_or(b, 1003, NONE), DENY);
	assert_int_equal(binding_or(b, 1004, NONE), DENY);
	assert_int_equal(binding_or(b, 1005, NONE), DENY);
	/* a complete one: the unseen go */
	assert_int_equal(egr_bpf_settle_cgroups(b, seen, 3, true, 512, 514, &denied), 2);
	assert_int_equal(denied, 0);
	assert_int_equal(binding_or(b, 1001, NONE), 512);
	assert_int_equal(binding_or(b, 1002, NONE), DENY);
	assert_int_equal(binding_or(b, 1004, NONE), NONE);
	assert_int_equal(binding_or(b, 1005, NONE), NONE);
	assert_true(egr_bpf_prune_cgroups(b, NULL, 0) >= 0);

	/* a cleared slot is no policy any more */
	assert_int_equal(egr_bpf_set_policy(b, id, p), 0);
	snprintf(path, sizeof(path), "%s/egr_policies", pins);
	fd = bpf_obj_get(path);
	assert_true(fd >= 0);
	assert_int_equal(bpf_map_lookup_elem(fd, &id, &info), 0);
	assert_true(info.flags & EGR_POLICY_VALID);
	assert_int_equal(egr_bpf_clear_policy(b, id), 0);
	assert_int_equal(bpf_map_lookup_elem(fd, &id, &info), 0);
	assert_false(info.flags & EGR_POLICY_VALID);
	close(fd);
	egr_bpf_destroy(b);
	policy_free(p);
}

/* A run that died mid-test (a sanitizer's abort skips teardown) left its
 * cgroup behind: remove those of this test whose process is gone. */
static void remove_stale_cgroups(const char *mnt)
{
	char path[PATH_MAX + 320], rest;
	struct dirent *de;
	DIR *dir = opendir(mnt);
	int pid;

	if (!dir)
		return;
	while ((de = readdir(dir))) {
		if (sscanf(de->d_name, "egressd-test.%d%c", &pid, &rest) != 1 || pid <= 0 ||
		    !kill(pid, 0) || errno != ESRCH)
			continue;
		snprintf(path, sizeof(path), "%s/%s", mnt, de->d_name);
		cgroup_kill_all(path, 2000);
		if (rmdir(path))
			fprintf(stderr, "test_bpfpin: cannot remove %s: %s\n", path,
				strerror(errno));
	}
	closedir(dir);
}

static int setup(void **state)
{
	char mnt[PATH_MAX - 64], err[256];

	(void)state;
	if (geteuid() != 0) {
		fprintf(stderr, "test_bpfpin: needs root\n");
		return -1;
	}
	log_set_level(EGR_LOG_WARN);
	/* Private mounts: the bpffs and any cgroup2 mount vanish with us. */
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
		return -1;
	if (!mkdtemp(bpffs) || mount("bpf", bpffs, "bpf", 0, NULL))
		return -1;
	snprintf(pins, sizeof(pins), "%s/egressd", bpffs);
	if (cgroup_find_mount(mnt, sizeof(mnt), err, sizeof(err))) {
		fprintf(stderr, "test_bpfpin: %s\n", err);
		return -1;
	}
	remove_stale_cgroups(mnt);
	snprintf(cgpath, sizeof(cgpath), "%s/egressd-test.%d", mnt, (int)getpid());
	if (mkdir(cgpath, 0755))
		return -1;
	cgfd = open(cgpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cgid = cgroup_id(cgpath);
	return cgfd < 0 || !cgid ? -1 : 0;
}

static int teardown(void **state)
{
	char dir[PATH_MAX + 32];

	(void)state;
	/* Whatever a failed test left: pins (detach), the cgroup, the mount. */
	snprintf(dir, sizeof(dir), "rm -rf '%s'", pins);
	if (system(dir)) {
		/* reported by the umount below failing to matter */
	}
	if (cgfd >= 0)
		close(cgfd);
	cgroup_kill_all(cgpath, 2000);
	rmdir(cgpath);
	umount2(bpffs, MNT_DETACH);
	rmdir(bpffs);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pinned_fail_closed_and_adopt),
		cmocka_unit_test(test_settle_cgroups),
	};

	return cmocka_run_group_tests_name("bpfpin", tests, setup, teardown);
}
