// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Socket-level load balancing for the host's own processes: a connect()
 * or sendto() to a service address is sent to one of its endpoints
 * before the kernel routes anything, and the application keeps seeing
 * the service address (getpeername, recvfrom). The approach is Cilium's
 * bpf_sock.c; the code and the map layouts are ours (sock.h). */

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

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

static __always_inline int in_scope(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&ko_config, &zero);

	return cfg && cfg->netns_cookie && cfg->netns_cookie == bpf_get_netns_cookie(ctx);
}

static __always_inline void count_no_backend(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&ko_nobackend, &zero);

	if (n)
		*n += 1;
}

static __always_inline void remember(struct bpf_sock_addr *ctx, __be32 vip, __be16 vport,
				     const struct backend4 *be)
{
	struct sock_xlate *x;
	__u32 i;

	x = bpf_sk_storage_get(&ko_sock, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!x)
		return;
	/* The same translation again (a UDP socket's next datagram) keeps
	 * its slot, so that one busy service does not push out the others. */
#pragma unroll
	for (i = 0; i < XLATE_SLOTS; i++) {
		if (x->v4[i].vip == vip && x->v4[i].vport == vport && x->v4[i].backend == be->addr &&
		    x->v4[i].bport == be->port)
			return;
	}
	i = x->next % XLATE_SLOTS;
	x->v4[i].vip = vip;
	x->v4[i].vport = vport;
	x->v4[i].backend = be->addr;
	x->v4[i].bport = be->port;
	x->next = i + 1;
}

/* xlate_fwd points ctx at a backend of the service it names. It returns
 * SYS_PROCEED also when ctx names no service. */
static __always_inline int xlate_fwd(struct bpf_sock_addr *ctx)
{
	struct svc4_key key = {};
	struct svc_value *head, *slot;
	struct backend4 *be;
	__be32 vip = ctx->user_ip4;
	__be16 vport = (__be16)ctx->user_port;
	__u16 count;

	if (!in_scope(ctx))
		return SYS_PROCEED;
	key.addr = vip;
	key.port = vport;
	key.proto = (__u8)ctx->protocol;
	head = bpf_map_lookup_elem(&ko_svc4, &key);
	if (!head)
		return SYS_PROCEED;
	count = head->count;
	if (count == 0)
		goto refuse;
	key.slot = (bpf_get_prandom_u32() % count) + 1;
	slot = bpf_map_lookup_elem(&ko_svc4, &key);
	if (!slot)
		goto refuse;
	be = bpf_map_lookup_elem(&ko_be4, &slot->backend_id);
	if (!be)
		goto refuse;
	remember(ctx, vip, vport, be);
	ctx->user_ip4 = be->addr;
	ctx->user_port = (__u32)be->port;
	return SYS_PROCEED;
refuse:
	count_no_backend();
	/* Without it the syscall fails with EPERM, which applications take
	 * for a policy decision rather than a closed port. */
	bpf_set_retval(-ECONNREFUSED);
	return SYS_REJECT;
}

/* xlate_rev makes a reply, or the peer, appear to be the service the
 * socket asked for. */
static __always_inline int xlate_rev(struct bpf_sock_addr *ctx)
{
	struct sock_xlate *x;
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	__u32 i;

	if (!in_scope(ctx))
		return SYS_PROCEED;
	x = bpf_sk_storage_get(&ko_sock, ctx->sk, 0, 0);
	if (!x)
		return SYS_PROCEED;
#pragma unroll
	for (i = 0; i < XLATE_SLOTS; i++) {
		if (x->v4[i].backend == addr && x->v4[i].bport == port && x->v4[i].vip) {
			ctx->user_ip4 = x->v4[i].vip;
			ctx->user_port = (__u32)x->v4[i].vport;
			break;
		}
	}
	return SYS_PROCEED;
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	return xlate_fwd(ctx);
}

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx)
{
	return xlate_fwd(ctx);
}

SEC("cgroup/recvmsg4")
int recvmsg4(struct bpf_sock_addr *ctx)
{
	return xlate_rev(ctx);
}

SEC("cgroup/getpeername4")
int getpeername4(struct bpf_sock_addr *ctx)
{
	return xlate_rev(ctx);
}

char _license[] SEC("license") = "Dual BSD/GPL";
