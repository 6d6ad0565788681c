// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Socket-level load balancing for the host's own processes: a connect()
 * or sendto() to a service address is sent to one of its endpoints
 * before the kernel routes anything, and the application keeps seeing
 * the service address (getpeername, recvfrom). The approach is Cilium's
 * bpf_sock.c; the code and the map layouts are ours (sock.h). */

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "sock.h"

#define ECONNREFUSED 111

/* What a cgroup sock_addr hook returns: 0 fails the syscall (with EPERM,
 * or the errno bpf_set_retval set), 1 lets it go on. */
#define SYS_REJECT 0
#define SYS_PROCEED 1

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct svc4_key);
	__type(value, struct svc_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ko_svc4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct backend4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ko_be4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct svc6_key);
	__type(value, struct svc_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ko_svc6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct backend6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ko_be6 SEC(".maps");

/* Socket-local storage goes with its socket: unlike an LRU map, a busy
 * host cannot evict the entry of a live connection. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_xlate);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ko_sock SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ko_config SEC(".maps");

/* An LRU map: an affinity evicted under pressure only costs a new pick. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct aff_key);
	__type(value, struct aff_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ko_affinity SEC(".maps");

/* Translations that found a service and no backend: refusals of ports
 * without endpoints, and (never, if the writer's order holds) a slot or
 * backend missing under a concurrent update. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ko_nobackend SEC(".maps");

/* in_scope returns the socket's network namespace cookie when its
 * sockets are translated, else 0. */
static __always_inline __u64 in_scope(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&ko_config, &zero);

	if (cfg && cfg->netns_cookie && cfg->netns_cookie == bpf_get_netns_cookie(ctx))
		return cfg->netns_cookie;
	return 0;
}

/* affine returns the backend id the service's affinity holds for this
 * namespace, 0 when none holds (or it timed out), and refreshes it. */
static __always_inline __u32 affine(const struct aff_key *key, const struct svc_value *head, __u64 now)
{
	struct aff_value *a;

	if (!head->affinity_sec)
		return 0;
	a = bpf_map_lookup_elem(&ko_affinity, key);
	if (!a || now - a->last_ns > (__u64)head->affinity_sec * 1000000000ULL)
		return 0;
	a->last_ns = now;
	return a->backend_id;
}

static __always_inline void stick(const struct aff_key *key, const struct svc_value *head, __u64 now,
				  __u32 backend_id)
{
	struct aff_value a = {.last_ns = now, .backend_id = backend_id};

	if (head->affinity_sec)
		bpf_map_update_elem(&ko_affinity, key, &a, BPF_ANY);
}

static __always_inline int refuse(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&ko_nobackend, &zero);

	if (n)
		*n += 1;
	/* Without it the syscall fails with EPERM, which applications take
	 * for a policy decision rather than a closed port. */
	bpf_set_retval(-ECONNREFUSED);
	return SYS_REJECT;
}

/* A pick can lose a race with the daemon: the head it read may count a
 * slot that a shrink has deleted since, or its slot may name a backend
 * that has gone since (the program can be preempted between lookups).
 * The daemon's write order keeps the slots the current head counts, and
 * their backends, whole, so the pick is made again from a fresh read of
 * the head; only a service changed PICK_TRIES times under one connect()
 * is refused. */
#define PICK_TRIES 3

/* pick returns one of count slots. The caller reads count once: the
 * value it checked for 0 is the one it divides by. */
static __always_inline __u16 pick(__u16 count)
{
	return (bpf_get_prandom_u32() % count) + 1;
}

static __always_inline struct sock_xlate *storage(struct bpf_sock_addr *ctx, __u64 flags)
{
	return bpf_sk_storage_get(&ko_sock, ctx->sk, 0, flags);
}

static __always_inline void remember4(struct sock_xlate *x, __be32 vip, __be16 vport,
				      const struct backend4 *be)
{
	__u32 i;

	/* The same translation again (a UDP socket's next datagram) keeps
	 * its slot, so that one busy service does not push out the others. */
#pragma unroll
	for (i = 0; i < XLATE_SLOTS; i++) {
		if (x->v4[i].vip == vip && x->v4[i].vport == vport && x->v4[i].backend == be->addr &&
		    x->v4[i].bport == be->port)
			return;
	}
	i = x->next4 % XLATE_SLOTS;
	x->v4[i].vip = vip;
	x->v4[i].vport = vport;
	x->v4[i].backend = be->addr;
	x->v4[i].bport = be->port;
	x->next4 = i + 1;
}

/* fwd4 finds the backend of IPv4 service vip:vport; NULL and *refused
 * when the service has none, NULL alone when there is no such service. */
static __always_inline struct backend4 *fwd4(struct bpf_sock_addr *ctx, __u64 netns, __be32 vip,
					     __be16 vport, int *refused)
{
	struct svc4_key key = {};
	struct aff_key akey = {};
	struct svc_value *head, *slot;
	struct backend4 *be;
	__u16 count;
	__u64 now;
	__u32 id;
	int try;

	key.addr = vip;
	key.port = vport;
	key.proto = (__u8)ctx->protocol;
	head = bpf_map_lookup_elem(&ko_svc4, &key);
	if (!head)
		return 0;
	*refused = 1;
	count = *(volatile __u16 *)&head->count;
	if (!count)
		return 0;
	now = bpf_ktime_get_ns();
	akey.netns = netns;
	akey.addr[2] = bpf_htonl(0xffff);
	akey.addr[3] = vip;
	akey.port = vport;
	akey.proto = key.proto;
	/* An affine backend that is gone (the daemon forgets the affinity
	 * just after) gets a new pick, not a refusal. */
	id = affine(&akey, head, now);
	if (id && (be = bpf_map_lookup_elem(&ko_be4, &id)))
		goto found;
#pragma unroll
	for (try = 0; try < PICK_TRIES; try++) {
		if (try) {
			key.slot = 0;
			head = bpf_map_lookup_elem(&ko_svc4, &key);
			if (!head)
				return 0;
			count = *(volatile __u16 *)&head->count;
			if (!count)
				return 0;
		}
		key.slot = pick(count);
		slot = bpf_map_lookup_elem(&ko_svc4, &key);
		if (!slot)
			continue;
		id = slot->backend_id;
		be = bpf_map_lookup_elem(&ko_be4, &id);
		if (!be)
			continue;
		stick(&akey, head, now, id);
		goto found;
	}
	return 0;
found:
	*refused = 0;
	return be;
}

static __always_inline int xlate_fwd4(struct bpf_sock_addr *ctx)
{
	__be32 vip = ctx->user_ip4;
	__be16 vport = (__be16)ctx->user_port;
	struct backend4 *be;
	struct sock_xlate *x;
	int refused = 0;
	__u64 netns = in_scope(ctx);

	if (!netns)
		return SYS_PROCEED;
	be = fwd4(ctx, netns, vip, vport, &refused);
	if (refused)
		return refuse();
	if (!be)
		return SYS_PROCEED;
	x = storage(ctx, BPF_SK_STORAGE_GET_F_CREATE);
	if (x)
		remember4(x, vip, vport, be);
	ctx->user_ip4 = be->addr;
	ctx->user_port = (__u32)be->port;
	return SYS_PROCEED;
}

static __always_inline int rev4(struct sock_xlate *x, __be32 addr, __be16 port, __be32 *vip,
				__be16 *vport)
{
	__u32 i;

#pragma unroll
	for (i = 0; i < XLATE_SLOTS; i++) {
		if (x->v4[i].backend == addr && x->v4[i].bport == port && x->v4[i].vip) {
			*vip = x->v4[i].vip;
			*vport = x->v4[i].vport;
			return 1;
		}
	}
	return 0;
}

/* xlate_rev4 makes a reply, or the peer, appear to be the service the
 * socket asked for. */
static __always_inline int xlate_rev4(struct bpf_sock_addr *ctx)
{
	struct sock_xlate *x;
	__be32 vip;
	__be16 vport;

	if (!in_scope(ctx))
		return SYS_PROCEED;
	x = storage(ctx, 0);
	if (x && rev4(x, ctx->user_ip4, (__be16)ctx->user_port, &vip, &vport)) {
		ctx->user_ip4 = vip;
		ctx->user_port = (__u32)vport;
	}
	return SYS_PROCEED;
}

/* An AF_INET6 socket reaches IPv4 addresses at ::ffff:a.b.c.d. */
static __always_inline int v4mapped(struct bpf_sock_addr *ctx)
{
	return ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 && ctx->user_ip6[2] == bpf_htonl(0xffff);
}

static __always_inline int same6(const __be32 *a, const __be32 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static __always_inline void remember6(struct sock_xlate *x, const struct svc6_key *svc,
				      const struct backend6 *be)
{
	__u32 i;

#pragma unroll
	for (i = 0; i < XLATE_SLOTS; i++) {
		if (same6(x->v6[i].vip, svc->addr) && x->v6[i].vport == svc->port &&
		    same6(x->v6[i].backend, be->addr) && x->v6[i].bport == be->port)
			return;
	}
	i = x->next6 % XLATE_SLOTS;
	__builtin_memcpy(x->v6[i].vip, svc->addr, sizeof(svc->addr));
	x->v6[i].vport = svc->port;
	__builtin_memcpy(x->v6[i].backend, be->addr, sizeof(be->addr));
	x->v6[i].bport = be->port;
	x->next6 = i + 1;
}

static __always_inline int xlate_fwd6(struct bpf_sock_addr *ctx)
{
	struct svc6_key key = {};
	struct aff_key akey = {};
	struct svc_value *head, *slot;
	struct sock_xlate *x;
	struct backend6 *be;
	__be16 vport = (__be16)ctx->user_port;
	__u64 netns = in_scope(ctx), now;
	__u16 count;
	__u32 id;
	int try;

	if (!netns)
		return SYS_PROCEED;
	if (v4mapped(ctx)) {
		__be32 vip = ctx->user_ip6[3];
		struct backend4 *be4;
		int refused = 0;

		be4 = fwd4(ctx, netns, vip, vport, &refused);
		if (refused)
			return refuse();
		if (!be4)
			return SYS_PROCEED;
		x = storage(ctx, BPF_SK_STORAGE_GET_F_CREATE);
		if (x)
			remember4(x, vip, vport, be4);
		ctx->user_ip6[3] = be4->addr;
		ctx->user_port = (__u32)be4->port;
		return SYS_PROCEED;
	}
	key.addr[0] = ctx->user_ip6[0];
	key.addr[1] = ctx->user_ip6[1];
	key.addr[2] = ctx->user_ip6[2];
	key.addr[3] = ctx->user_ip6[3];
	key.port = vport;
	key.proto = (__u8)ctx->protocol;
	head = bpf_map_lookup_elem(&ko_svc6, &key);
	if (!head)
		return SYS_PROCEED;
	count = *(volatile __u16 *)&head->count;
	if (!count)
		return refuse();
	now = bpf_ktime_get_ns();
	akey.netns = netns;
	__builtin_memcpy(akey.addr, key.addr, sizeof(key.addr));
	akey.port = vport;
	akey.proto = key.proto;
	id = affine(&akey, head, now);
	if (id && (be = bpf_map_lookup_elem(&ko_be6, &id)))
		goto found;
#pragma unroll
	for (try = 0; try < PICK_TRIES; try++) {
		if (try) {
			key.slot = 0;
			head = bpf_map_lookup_elem(&ko_svc6, &key);
			if (!head)
				return refuse();
			count = *(volatile __u16 *)&head->count;
			if (!count)
				return refuse();
		}
		key.slot = pick(count);
		slot = bpf_map_lookup_elem(&ko_svc6, &key);
		if (!slot)
			continue;
		id = slot->backend_id;
		be = bpf_map_lookup_elem(&ko_be6, &id);
		if (!be)
			continue;
		stick(&akey, head, now, id);
		goto found;
	}
	return refuse();
found:
	x = storage(ctx, BPF_SK_STORAGE_GET_F_CREATE);
	if (x)
		remember6(x, &key, be);
	ctx->user_ip6[0] = be->addr[0];
	ctx->user_ip6[1] = be->addr[1];
	ctx->user_ip6[2] = be->addr[2];
	ctx->user_ip6[3] = be->addr[3];
	ctx->user_port = (__u32)be->port;
	return SYS_PROCEED;
}

static __always_inline int xlate_rev6(struct bpf_sock_addr *ctx)
{
	__be32 addr[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	__be16 port = (__be16)ctx->user_port;
	struct sock_xlate *x;
	__u32 i;

	if (!in_scope(ctx))
		return SYS_PROCEED;
	x = storage(ctx, 0);
	if (!x)
		return SYS_PROCEED;
	if (v4mapped(ctx)) {
		__be32 vip;
		__be16 vport;

		if (rev4(x, addr[3], port, &vip, &vport)) {
			ctx->user_ip6[3] = vip;
			ctx->user_port = (__u32)vport;
		}
		return SYS_PROCEED;
	}
#pragma unroll
	for (i = 0; i < XLATE_SLOTS; i++) {
		if (same6(x->v6[i].backend, addr) && x->v6[i].bport == port && x->v6[i].vport) {
			ctx->user_ip6[0] = x->v6[i].vip[0];
			ctx->user_ip6[1] = x->v6[i].vip[1];
			ctx->user_ip6[2] = x->v6[i].vip[2];
			ctx->user_ip6[3] = x->v6[i].vip[3];
			ctx->user_port = (__u32)x->v6[i].vport;
			break;
		}
	}
	return SYS_PROCEED;
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	return xlate_fwd4(ctx);
}

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx)
{
	return xlate_fwd4(ctx);
}

SEC("cgroup/recvmsg4")
int recvmsg4(struct bpf_sock_addr *ctx)
{
	return xlate_rev4(ctx);
}

SEC("cgroup/getpeername4")
int getpeername4(struct bpf_sock_addr *ctx)
{
	return xlate_rev4(ctx);
}

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	return xlate_fwd6(ctx);
}

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx)
{
	return xlate_fwd6(ctx);
}

SEC("cgroup/recvmsg6")
int recvmsg6(struct bpf_sock_addr *ctx)
{
	return xlate_rev6(ctx);
}

SEC("cgroup/getpeername6")
int getpeername6(struct bpf_sock_addr *ctx)
{
	return xlate_rev6(ctx);
}

char _license[] SEC("license") = "Dual BSD/GPL";
