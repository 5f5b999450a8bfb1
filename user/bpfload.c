// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpfload.h"
#include "log.h"
#include "sockdiag.h"
#include "redirect.skel.h"

#define EGR_MAX_ATTACH 24

struct egr_bpf {
	struct redirect_bpf *skel;
	char pin_dir[PATH_MAX - 64]; /* "" unless pinned (daemon) */
	uint32_t conns_max; /* entries of egr_conns and egr_udp_socks */
	int conns_fd;
	bool loaded;
	int cgroup_fd; /* dup of the cgroup we attached to, -1 if none */
	struct {
		int prog_fd;
		enum bpf_attach_type type;
	} attached[EGR_MAX_ATTACH];
	int n_attached;
	struct ring_buffer *rb;
	egr_bpf_event_fn event_fn;
	void *event_ctx;
};

static int egr_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	/* libbpf's warnings explain verifier and attach failures; its debug
	 * output is only interesting with -vv. */
	if (level == LIBBPF_DEBUG && log_get_level() < EGR_LOG_DEBUG)
		return 0;
	log_vmsg(level == LIBBPF_WARN ? EGR_LOG_WARN : EGR_LOG_DEBUG, fmt, ap);
	return 0;
}

/* Pin path of map m under b->pin_dir. */
static int egr_pin_path(const struct egr_bpf *b, const char *name, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s", b->pin_dir, name);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* egr_conns is created before the programs (the proxy needs its fd
 * first); pinned, an existing one is adopted so that hand-offs recorded
 * by the programs still attached from a previous daemon are not lost. */
static int egr_conns_create(struct egr_bpf *b)
{
	char path[PATH_MAX];
	int err;

	if (b->pin_dir[0]) {
		err = egr_pin_path(b, "egr_conns", path, sizeof(path));
		if (err)
			return err;
		b->conns_fd = bpf_obj_get(path);
		if (b->conns_fd >= 0)
			return 0;
		if (errno != ENOENT) {
			err = -errno;
			log_error("cannot open pinned map %s: %s", path, strerror(-err));
			return err;
		}
	}
	b->conns_fd = bpf_map_create(BPF_MAP_TYPE_HASH, "egr_conns",
				     sizeof(struct egr_conn_key),
				     sizeof(struct egr_origin), b->conns_max, NULL);
	if (b->conns_fd < 0) {
		err = -errno;
		log_error("cannot create BPF map egr_conns: %s", strerror(-err));
		return err;
	}
	if (b->pin_dir[0] && bpf_obj_pin(b->conns_fd, path)) {
		err = -errno;
		log_error("cannot pin map %s: %s", path, strerror(-err));
		return err;
	}
	return 0;
}

static int egr_bpf_open(struct egr_bpf **out, const char *pin_dir, uint32_t conns_max)
{
	struct bpf_map *m;
	struct egr_bpf *b;
	int err;

	libbpf_set_print(egr_libbpf_print);
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->conns_fd = -1;
	b->cgroup_fd = -1;
	b->conns_max = conns_max && conns_max < EGR_MAX_CONNS ? conns_max : EGR_MAX_CONNS;
	if (pin_dir) {
		if (strlen(pin_dir) >= sizeof(b->pin_dir)) {
			free(b);
			return -ENAMETOOLONG;
		}
		snprintf(b->pin_dir, sizeof(b->pin_dir), "%s", pin_dir);
	}
	b->skel = redirect_bpf__open();
	if (!b->skel) {
		err = -errno;
		log_error("cannot open BPF object: %s", strerror(-err));
		free(b);
		return err;
	}
	err = egr_conns_create(b);
	if (err)
		goto fail;
	err = bpf_map__set_max_entries(b->skel->maps.egr_udp_socks, b->conns_max);
	if (err) {
		log_error("cannot size map egr_udp_socks: %s", strerror(-err));
		goto fail;
	}
	err = bpf_map__reuse_fd(b->skel->maps.egr_conns, b->conns_fd);
	if (err) {
		log_error("cannot reuse map egr_conns: %s", strerror(-err));
		goto fail;
	}
	if (b->pin_dir[0]) {
		char stale[PATH_MAX];

		/* Builds before the ring grew (e11e526) pinned it: nothing
		 * uses that pin any more. */
		if (!egr_pin_path(b, "egr_events", stale, sizeof(stale)))
			unlink(stale);
		/* libbpf adopts a compatible pinned map or pins a new one.
		 * Not the event ring: it holds nothing a restart needs, and
		 * a newer build with another size could not adopt it (libbpf
		 * refuses a pinned map whose size differs). */
		bpf_object__for_each_map(m, b->skel->obj) {
			char path[PATH_MAX];

			if (m == b->skel->maps.egr_conns || m == b->skel->maps.egr_events ||
			    bpf_map__is_internal(m))
				continue;
			err = egr_pin_path(b, bpf_map__name(m), path, sizeof(path));
			if (!err)
				err = bpf_map__set_pin_path(m, path);
			if (err)
				goto fail;
		}
	}
	*out = b;
	return 0;
fail:
	egr_bpf_destroy(b);
	return err;
}

int egr_bpf_prepare(struct egr_bpf **out, uint32_t conns_max)
{
	return egr_bpf_open(out, NULL, conns_max);
}

int egr_bpf_prepare_pinned(struct egr_bpf **out, const char *pin_dir)
{
	if (mkdir(pin_dir, 0700) && errno != EEXIST) {
		int err = -errno;

		log_error("cannot create %s: %s (is bpffs mounted there or above?)",
			  pin_dir, strerror(-err));
		return err;
	}
	return egr_bpf_open(out, pin_dir, EGR_MAX_CONNS);
}

int egr_bpf_conns_fd(const struct egr_bpf *b)
{
	return b->conns_fd;
}

int egr_bpf_load(struct egr_bpf *b, uint16_t proxy_port, bool proxy_v6)
{
	struct in6_addr lo6 = IN6ADDR_LOOPBACK_INIT;
	int err;

	b->skel->rodata->proxy_ip4 = htonl(INADDR_LOOPBACK);
	memcpy((void *)b->skel->rodata->proxy_ip6, &lo6, 16);
	b->skel->rodata->proxy_port = proxy_port;
	b->skel->rodata->proxy_has_v6 = proxy_v6;
	err = redirect_bpf__load(b->skel);
	if (err) {
		log_error("cannot load BPF programs: %s (kernel 6.1+ with "
			  "CONFIG_CGROUP_BPF and BTF, and CAP_BPF/CAP_NET_ADMIN "
			  "or root are required)", strerror(-err));
		return err;
	}
	b->loaded = true;
	return 0;
}

static int egr_map_fd(struct bpf_map *m)
{
	return bpf_map__fd(m);
}

/* Delete the keys of map fd (key_size bytes each) for which doomed()
 * says so: collected first, since deleting during get_next_key restarts
 * the walk. Returns how many were deleted, or -ENOMEM. */
static int map_delete_if(int fd, size_t key_size, bool (*doomed)(const void *key, void *ctx),
			 void *ctx)
{
	uint64_t cur[8] = { 0 }, next[8]; /* aligned for doomed()'s cast */
	char *keys = NULL;
	size_t n = 0, cap = 0, i;
	bool have = false;
	int deleted = 0;

	if (key_size > sizeof(cur))
		return -EINVAL;
	while (!bpf_map_get_next_key(fd, have ? cur : NULL, next)) {
		memcpy(cur, next, key_size);
		have = true;
		if (!doomed(cur, ctx))
			continue;
		if (n == cap) {
			char *v;

			cap = cap ? cap * 2 : 16;
			v = realloc(keys, cap * key_size);
			if (!v) {
				free(keys);
				return -ENOMEM;
			}
			keys = v;
		}
		memcpy(keys + n++ * key_size, cur, key_size);
	}
	for (i = 0; i < n; i++)
		if (!bpf_map_delete_elem(fd, keys + i * key_size))
			deleted++;
	free(keys);
	return deleted;
}

static bool gateway_listed(const struct policy *p, const struct egr_gateway_key *k)
{
	for (size_t i = 0; i < p->n_gateways; i++) {
		const struct policy_gateway *g = &p->gateways[i];

		for (size_t j = 0; j < g->n_addrs; j++)
			if (g->port == k->port && !memcmp(g->addrs[j].b, k->addr, 16))
				return true;
	}
	return false;
}

struct gateways_ctx {
	uint32_t policy_id;
	const struct policy *p;
};

/* An address of this policy that it no longer lists. */
static bool gateway_gone(const void *key, void *ctx)
{
	const struct egr_gateway_key *k = key;
	const struct gateways_ctx *gw = ctx;

	return k->policy_id == gw->policy_id && !gateway_listed(gw->p, k);
}

/*
 * The policy's gateway addresses: added first, then the ones a previous
 * version of the policy had and this one has not are removed, so that a
 * reload never makes a gateway that stays refuse connections meanwhile.
 */
static int egr_set_gateways(struct egr_bpf *b, uint32_t policy_id, const struct policy *p)
{
	int fd = egr_map_fd(b->skel->maps.egr_gateways);
	struct gateways_ctx gw;
	size_t i, j;
	uint8_t one = 1;
	int err = 0;

	for (i = 0; i < p->n_gateways; i++) {
		const struct policy_gateway *g = &p->gateways[i];

		for (j = 0; j < g->n_addrs; j++) {
			struct egr_gateway_key k = { .policy_id = policy_id, .port = g->port };

			memcpy(k.addr, g->addrs[j].b, 16);
			if (bpf_map_update_elem(fd, &k, &one, BPF_ANY)) {
				err = -errno;
				log_error("cannot fill BPF map egr_gateways: %s", strerror(-err));
				return err;
			}
		}
	}
	gw.policy_id = policy_id;
	gw.p = p;
	err = map_delete_if(fd, sizeof(struct egr_gateway_key), gateway_gone, &gw);
	return err < 0 ? err : 0;
}

int egr_bpf_set_policy(struct egr_bpf *b, uint32_t policy_id, const struct policy *p)
{
	struct egr_policy_info info = { .flags = EGR_POLICY_VALID };
	uint16_t ports[EGR_MAX_PORTS];
	bool any_port = false;
	size_t n = 0, i;
	uint8_t one = 1;
	int err;

	if (policy_id >= EGR_MAX_POLICIES)
		return -EINVAL;
	err = policy_allowed_ports(p, &any_port, ports, EGR_MAX_PORTS, &n);
	if (err == -E2BIG) {
		any_port = true; /* too many to list: let the proxy decide */
	} else if (err) {
		return err;
	}
	if (any_port)
		info.flags |= EGR_POLICY_ANY_PORT;
	if (p->mode == POLICY_AUDIT)
		info.flags |= EGR_POLICY_AUDIT;
	if (p->inbound_any)
		info.flags |= EGR_POLICY_INBOUND_ANY;
	for (i = 0; !any_port && i < n; i++) {
		struct egr_port_key k = { .policy_id = policy_id, .port = ports[i] };

		if (bpf_map_update_elem(egr_map_fd(b->skel->maps.egr_ports), &k, &one, BPF_ANY)) {
			err = -errno;
			log_error("cannot fill BPF map egr_ports: %s", strerror(-err));
			return err;
		}
	}
	for (i = 0; i < p->n_deny; i++) {
		const struct policy_rule *r = &p->deny[i];
		struct egr_cidr_key k = { .policy_id = policy_id };

		/* Only port-independent CIDR denials can be decided before
		 * the proxy has seen the connection. */
		if (r->kind != RULE_CIDR || !r->any_port)
			continue;
		k.prefixlen = 32 + r->prefixlen;
		memcpy(k.addr, r->net.b, 16);
		if (bpf_map_update_elem(egr_map_fd(b->skel->maps.egr_cidrs), &k, &one, BPF_ANY)) {
			err = -errno;
			log_error("cannot fill BPF map egr_cidrs: %s", strerror(-err));
			return err;
		}
		info.flags |= EGR_POLICY_CIDRS;
	}
	err = egr_set_gateways(b, policy_id, p);
	if (err)
		return err;
	/* Last: the policy becomes valid only once its maps are complete. */
	if (bpf_map_update_elem(egr_map_fd(b->skel->maps.egr_policies), &policy_id, &info, BPF_ANY)) {
		err = -errno;
		log_error("cannot fill BPF map egr_policies: %s", strerror(-err));
		return err;
	}
	return 0;
}

int egr_bpf_bind_cgroup(struct egr_bpf *b, uint64_t cgroup_id, uint32_t policy_id)
{
	__u64 id = cgroup_id;
	__u32 pid = policy_id;

	if (bpf_map_update_elem(egr_map_fd(b->skel->maps.egr_cgroups), &id, &pid, BPF_ANY)) {
		int err = -errno;

		log_error("cannot fill BPF map egr_cgroups: %s", strerror(-err));
		return err;
	}
	return 0;
}

static int u64_cmp(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

struct keep_ctx {
	const uint64_t *ids;
	size_t n;
};

static bool cgroup_not_kept(const void *key, void *ctx)
{
	const struct keep_ctx *k = ctx;

	return !k->n || !bsearch(key, k->ids, k->n, sizeof(*k->ids), u64_cmp);
}

int egr_bpf_prune_cgroups(struct egr_bpf *b, uint64_t *keep, size_t n_keep)
{
	struct keep_ctx k = { keep, n_keep };

	if (n_keep) /* keep may be NULL then, which qsort must not get */
		qsort(keep, n_keep, sizeof(*keep), u64_cmp);
	/* the counts of cgroups that are gone, too (egr_bpf_forget_usage) */
	map_delete_if(egr_map_fd(b->skel->maps.egr_usage), sizeof(__u64), cgroup_not_kept, &k);
	return map_delete_if(egr_map_fd(b->skel->maps.egr_cgroups), sizeof(__u64),
			     cgroup_not_kept, &k);
}

int egr_bpf_settle_cgroups(struct egr_bpf *b, uint64_t *seen, size_t n_seen, bool complete,
			   uint32_t lo, uint32_t hi, int *denied)
{
	int fd = egr_map_fd(b->skel->maps.egr_cgroups);
	struct keep_ctx k = { seen, n_seen };
	__u32 deny = EGR_MAX_POLICIES, pid;
	__u64 cur = 0, next, *keys = NULL;
	size_t n = 0, cap = 0, i;
	bool have = false;
	int unbound = 0;

	*denied = 0;
	if (n_seen)
		qsort(seen, n_seen, sizeof(*seen), u64_cmp);
	/* Collect first: changing the map during get_next_key restarts it. */
	while (!bpf_map_get_next_key(fd, have ? &cur : NULL, &next)) {
		cur = next;
		have = true;
		if (n == cap) {
			__u64 *v;

			cap = cap ? cap * 2 : 64;
			v = realloc(keys, cap * sizeof(*v));
			if (!v) {
				free(keys);
				return -ENOMEM;
			}
			keys = v;
		}
		keys[n++] = cur;
	}
	for (i = 0; i < n; i++) {
		bool was_seen = !cgroup_not_kept(&keys[i], &k);

		if (!was_seen && complete) {
			if (!bpf_map_delete_elem(fd, &keys[i]))
				unbound++;
			bpf_map_delete_elem(egr_map_fd(b->skel->maps.egr_usage), &keys[i]);
			continue;
		}
		if (bpf_map_lookup_elem(fd, &keys[i], &pid))
			continue; /* gone meanwhile */
		if (pid >= EGR_MAX_POLICIES || (was_seen && pid >= lo && pid < hi))
			continue;
		if (bpf_map_update_elem(fd, &keys[i], &deny, BPF_EXIST) == 0)
			(*denied)++;
		else if (errno != ENOENT && !bpf_map_delete_elem(fd, &keys[i]))
			unbound++; /* better inherited than an old bank's id */
	}
	free(keys);
	return unbound;
}

int egr_bpf_clear_policy(struct egr_bpf *b, uint32_t policy_id)
{
	struct egr_policy_info none = { 0 };

	if (policy_id >= EGR_MAX_POLICIES)
		return -EINVAL;
	if (bpf_map_update_elem(egr_map_fd(b->skel->maps.egr_policies), &policy_id, &none,
				BPF_ANY))
		return -errno;
	return 0;
}

int egr_bpf_forget_usage(struct egr_bpf *b, uint64_t cgroup_id)
{
	__u64 id = cgroup_id;

	if (bpf_map_delete_elem(egr_map_fd(b->skel->maps.egr_usage), &id) && errno != ENOENT)
		return -errno;
	return 0;
}

int egr_bpf_set_limits(struct egr_bpf *b, unsigned per_cgroup)
{
	int fd = egr_map_fd(b->skel->maps.egr_limits);
	struct egr_limits l = { 0 };
	__u32 zero = 0;

	/* the epoch stays (egr_bpf_forget_pinned bumps it) */
	bpf_map_lookup_elem(fd, &zero, &l);
	l.per_cgroup = per_cgroup;
	if (bpf_map_update_elem(fd, &zero, &l, BPF_ANY)) {
		int err = -errno;

		log_error("cannot fill BPF map egr_limits: %s", strerror(-err));
		return err;
	}
	return 0;
}

static bool every_key(const void *key, void *ctx)
{
	(void)key;
	(void)ctx;
	return true;
}

int egr_bpf_forget_pinned(const char *pin_dir)
{
	struct egr_policy_info none = { 0 };
	char path[PATH_MAX];
	int fd, n, err = 0;
	__u32 id;

	if (snprintf(path, sizeof(path), "%s/egr_cgroups", pin_dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = bpf_obj_get(path);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno; /* the first start */
	n = map_delete_if(fd, sizeof(__u64), every_key, NULL);
	close(fd);
	if (n < 0)
		return n;
	/* The tenants' counts start over too: a build without them (an
	 * upgrade after a downgrade) let sockets close uncounted. A new
	 * epoch first, so that sockets counted before are not taken off the
	 * new counts when they close (they go uncounted until then). */
	if (snprintf(path, sizeof(path), "%s/egr_limits", pin_dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = bpf_obj_get(path);
	if (fd >= 0) {
		struct egr_limits l = { 0 };
		__u32 zero = 0;

		bpf_map_lookup_elem(fd, &zero, &l);
		l.epoch = (l.epoch + 1) & 0xffff; /* met again after 65,536 starts */
		bpf_map_update_elem(fd, &zero, &l, BPF_ANY);
		close(fd);
	}
	if (snprintf(path, sizeof(path), "%s/egr_usage", pin_dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = bpf_obj_get(path);
	if (fd >= 0) {
		map_delete_if(fd, sizeof(__u64), every_key, NULL);
		close(fd);
	}
	if (snprintf(path, sizeof(path), "%s/egr_policies", pin_dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = bpf_obj_get(path);
	if (fd < 0)
		return errno == ENOENT ? n : -errno;
	for (id = 0; id < EGR_MAX_POLICIES && !err; id++)
		if (bpf_map_update_elem(fd, &id, &none, BPF_ANY))
			err = -errno;
	close(fd);
	return err ? err : n;
}

int egr_bpf_unbind_cgroup(struct egr_bpf *b, uint64_t cgroup_id)
{
	__u64 id = cgroup_id;

	if (bpf_map_delete_elem(egr_map_fd(b->skel->maps.egr_cgroups), &id) && errno != ENOENT)
		return -errno;
	return 0;
}

int egr_bpf_cgroup_binding(struct egr_bpf *b, uint64_t cgroup_id, uint32_t *policy_id)
{
	__u64 id = cgroup_id;
	__u32 pid;

	if (bpf_map_lookup_elem(egr_map_fd(b->skel->maps.egr_cgroups), &id, &pid))
		return -errno;
	*policy_id = pid;
	return 0;
}

int egr_bpf_udp_origin_from(struct egr_bpf *b, uint16_t port, const struct sockaddr *peer,
			    struct egr_origin *o)
{
	struct sockaddr_storage local = { 0 };
	uint64_t cookie;
	int err;

	/* The datagram came to our listener on the same family's loopback. */
	if (peer->sa_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&local;

		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		in->sin_port = htons(port);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&local;

		in6->sin6_family = AF_INET6;
		in6->sin6_addr = in6addr_loopback;
		in6->sin6_port = htons(port);
	}
	err = sockdiag_udp_cookie((struct sockaddr *)&local, peer, &cookie);
	if (err)
		return err;
	return egr_bpf_udp_origin(b, cookie, o);
}

int egr_bpf_udp_origin(struct egr_bpf *b, uint64_t cookie, struct egr_origin *o)
{
	__u64 key = cookie;

	if (bpf_map_lookup_elem(egr_map_fd(b->skel->maps.egr_udp_socks), &key, o))
		return -errno;
	return 0;
}

int egr_bpf_attach(struct egr_bpf *b, int cgroup_fd)
{
	struct bpf_program *prog;
	int err;

	if (!b->loaded || b->n_attached)
		return -EINVAL;
	b->cgroup_fd = fcntl(cgroup_fd, F_DUPFD_CLOEXEC, 0);
	if (b->cgroup_fd < 0)
		return -errno;
	bpf_object__for_each_program(prog, b->skel->obj) {
		enum bpf_attach_type type = bpf_program__expected_attach_type(prog);
		int fd = bpf_program__fd(prog);

		if (b->n_attached >= EGR_MAX_ATTACH) {
			err = -E2BIG;
			goto fail;
		}
		if (bpf_prog_attach(fd, b->cgroup_fd, type, BPF_F_ALLOW_MULTI)) {
			err = -errno;
			log_error("cannot attach BPF program %s to the cgroup: %s",
				  bpf_program__name(prog), strerror(-err));
			goto fail;
		}
		b->attached[b->n_attached].prog_fd = fd;
		b->attached[b->n_attached].type = type;
		b->n_attached++;
	}
	return 0;
fail:
	egr_bpf_detach(b);
	return err;
}

/*
 * Daemon attachment: one bpf_link per program, pinned under
 * <pin_dir>/links/<cgroup id>/<program>. The pins outlive the daemon, so a
 * dead daemon leaves the cgroup redirected to a closed port (closed, not
 * open). A restarted daemon finds the pins and swaps its new programs into
 * the same links with BPF_LINK_UPDATE: at no instant is nothing attached.
 */
int egr_bpf_attach_pinned(struct egr_bpf *b, int cgroup_fd, uint64_t cgroup_id)
{
	char dir[PATH_MAX], path[PATH_MAX + 64];
	struct bpf_program *prog;
	int err = 0;

	if (!b->loaded || !b->pin_dir[0])
		return -EINVAL;
	snprintf(dir, sizeof(dir), "%s/links", b->pin_dir);
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	snprintf(dir, sizeof(dir), "%s/links/%llu", b->pin_dir, (unsigned long long)cgroup_id);
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	bpf_object__for_each_program(prog, b->skel->obj) {
		struct bpf_link *link;

		snprintf(path, sizeof(path), "%s/%s", dir, bpf_program__name(prog));
		link = access(path, F_OK) ? NULL : bpf_link__open(path);
		if (link) {
			err = bpf_link__update_program(link, prog);
			if (err)
				log_error("cannot update pinned link %s: %s", path, strerror(-err));
			/* closes our fd only: the pin keeps the link */
			bpf_link__destroy(link);
		} else {
			link = bpf_program__attach_cgroup(prog, cgroup_fd);
			if (!link) {
				err = -errno;
				log_error("cannot attach BPF program %s to cgroup %llu: %s",
					  bpf_program__name(prog),
					  (unsigned long long)cgroup_id, strerror(-err));
			} else {
				err = bpf_link__pin(link, path);
				if (err)
					log_error("cannot pin link %s: %s", path, strerror(-err));
				/* closes our fd: the link lives on while pinned,
				 * and is released at once if pinning failed */
				bpf_link__destroy(link);
			}
		}
		if (err)
			return err;
	}
	return 0;
}

int egr_bpf_unpin_cgroup(struct egr_bpf *b, uint64_t cgroup_id)
{
	char dir[PATH_MAX], path[PATH_MAX + 64];
	struct bpf_program *prog;

	if (!b->pin_dir[0])
		return -EINVAL;
	snprintf(dir, sizeof(dir), "%s/links/%llu", b->pin_dir, (unsigned long long)cgroup_id);
	bpf_object__for_each_program(prog, b->skel->obj) {
		snprintf(path, sizeof(path), "%s/%s", dir, bpf_program__name(prog));
		if (unlink(path) && errno != ENOENT)
			return -errno;
	}
	if (rmdir(dir) && errno != ENOENT)
		return -errno;
	return 0;
}

void egr_bpf_detach(struct egr_bpf *b)
{
	int i;

	if (!b || b->cgroup_fd < 0)
		return;
	/* Reverse order: connect hooks go last, so that nothing is
	 * redirected to a proxy whose hand-off program is already gone. */
	for (i = b->n_attached - 1; i >= 0; i--) {
		if (bpf_prog_detach2(b->attached[i].prog_fd, b->cgroup_fd, b->attached[i].type))
			log_warn("cannot detach BPF program (type %d): %s",
				 b->attached[i].type, strerror(errno));
	}
	b->n_attached = 0;
	close(b->cgroup_fd);
	b->cgroup_fd = -1;
}

void egr_bpf_keep_attached(struct egr_bpf *b)
{
	if (!b || b->cgroup_fd < 0)
		return;
	/* BPF_PROG_ATTACH attachments outlive our descriptors */
	b->n_attached = 0;
	close(b->cgroup_fd);
	b->cgroup_fd = -1;
}

int egr_bpf_sweep_conns(struct egr_bpf *b, uint64_t older_than_ns)
{
	enum { SWEEP_BATCH = 1024 };
	struct egr_conn_key cur, next, *doomed;
	struct egr_origin o;
	struct timespec ts;
	uint64_t now;
	bool have = false;
	int n = 0, removed = 0, i;

	doomed = malloc(SWEEP_BATCH * sizeof(*doomed));
	if (!doomed)
		return -ENOMEM;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	/* Collect first: deleting during get_next_key restarts the walk. */
	while (n < SWEEP_BATCH && !bpf_map_get_next_key(b->conns_fd, have ? &cur : NULL, &next)) {
		cur = next;
		have = true;
		if (bpf_map_lookup_elem(b->conns_fd, &cur, &o))
			continue; /* accepted meanwhile */
		if ((o.flags & EGR_ORIGIN_RELEASED) && now - o.released_ns >= older_than_ns)
			doomed[n++] = cur;
	}
	for (i = 0; i < n; i++)
		if (!bpf_map_delete_elem(b->conns_fd, &doomed[i]))
			removed++;
	free(doomed);
	return removed;
}

static int egr_rb_cb(void *ctx, void *data, size_t size)
{
	struct egr_bpf *b = ctx;

	if (size >= sizeof(struct egr_event) && b->event_fn)
		b->event_fn(b->event_ctx, data);
	return 0;
}

int egr_bpf_events_open(struct egr_bpf *b, egr_bpf_event_fn fn, void *ctx)
{
	b->event_fn = fn;
	b->event_ctx = ctx;
	b->rb = ring_buffer__new(bpf_map__fd(b->skel->maps.egr_events), egr_rb_cb, b, NULL);
	if (!b->rb) {
		int err = -errno;

		log_error("cannot open the BPF event ring buffer: %s", strerror(-err));
		return err;
	}
	return 0;
}

int egr_bpf_events_fd(const struct egr_bpf *b)
{
	return b && b->rb ? ring_buffer__epoll_fd(b->rb) : -1;
}

int egr_bpf_percpu_sum(int map_fd, uint32_t key, uint64_t *out)
{
	int ncpu = libbpf_num_possible_cpus(), i, err = 0;
	uint64_t *v;

	if (ncpu <= 0)
		return ncpu < 0 ? ncpu : -ENOENT;
	v = calloc((size_t)ncpu, sizeof(*v));
	if (!v)
		return -ENOMEM;
	if (bpf_map_lookup_elem(map_fd, &key, v)) {
		err = -errno;
	} else {
		*out = 0;
		for (i = 0; i < ncpu; i++)
			*out += v[i];
	}
	free(v);
	return err;
}

int egr_bpf_events_lost(struct egr_bpf *b, uint64_t *out)
{
	if (!b->loaded)
		return -EINVAL;
	return egr_bpf_percpu_sum(egr_map_fd(b->skel->maps.egr_stats), EGR_STAT_EVENTS_LOST,
				  out);
}

int egr_bpf_poll(struct egr_bpf *b, int timeout_ms)
{
	int n = ring_buffer__poll(b->rb, timeout_ms);

	return n == -EINTR ? 0 : n;
}

void egr_bpf_destroy(struct egr_bpf *b)
{
	if (!b)
		return;
	egr_bpf_detach(b);
	ring_buffer__free(b->rb);
	redirect_bpf__destroy(b->skel);
	if (b->conns_fd >= 0)
		close(b->conns_fd);
	free(b);
}

int egr_bpf_probe(char *err, size_t errlen)
{
	if (access("/sys/kernel/btf/vmlinux", R_OK)) {
		snprintf(err, errlen, "kernel BTF (/sys/kernel/btf/vmlinux) is missing: "
			 "a kernel built with CONFIG_DEBUG_INFO_BTF=y (5.8+, 6.1+ "
			 "recommended) is required");
		return -ENOENT;
	}
	if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, NULL) != 1) {
		snprintf(err, errlen, "this kernel cannot load cgroup socket-address "
			 "BPF programs: run as root (or with CAP_BPF and "
			 "CAP_NET_ADMIN) on a kernel with CONFIG_CGROUP_BPF=y");
		return -EPERM;
	}
	return 0;
}
