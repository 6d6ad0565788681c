// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Destroys the connected UDP sockets whose translation led to an endpoint
 * that has left its service, as the other modes clear such flows from
 * conntrack: a long-lived UDP client (a resolver's, a metrics agent's) then
 * gets an error and connects again, to a live endpoint. The daemon fills
 * ko_gone4/ko_gone6 and reads the iterator once. Apart from sock.c so
 * that the hooks load on kernels without bpf_sock_destroy (6.5). */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "sock.h"

#define AF_INET 2
#define AF_INET6 10

/* The few kernel fields read, relocated against the running kernel's BTF
 * (CO-RE), so no vmlinux.h is needed. */
struct sock_common {
	unsigned short skc_family;
	__be32 skc_daddr;
	__be16 skc_dport;
	struct {
		union {
			__be32 u6_addr32[4];
		} in6_u;
	} skc_v6_daddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct udp_sock;
struct bpf_iter_meta;

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

/* The same map as sock.c's: the loader hands over that one. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_xlate);
} ko_sock SEC(".maps");

/* Translations to forget: service and endpoint as the socket remembers
 * them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct xlate4);
	__type(value, __u8);
} ko_gone4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct xlate6);
	__type(value, __u8);
} ko_gone6 SEC(".maps");

static __always_inline int gone4(struct sock_xlate *x, __be32 daddr, __be16 dport)
{
	struct xlate4 key;
	__u32 i;

#pragma unroll
	for (i = 0; i < XLATE_SLOTS; i++) {
		if (x->v4[i].backend != daddr || x->v4[i].bport != dport)
			continue;
		key = x->v4[i];
		if (bpf_map_lookup_elem(&ko_gone4, &key))
			return 1;
	}
	return 0;
}

static __always_inline int gone6(struct sock_xlate *x, const __be32 *daddr, __be16 dport)
{
	struct xlate6 key;
	__u32 i;

#pragma unroll
	for (i = 0; i < XLATE_SLOTS; i++) {
		if (x->v6[i].backend[0] != daddr[0] || x->v6[i].backend[1] != daddr[1] ||
		    x->v6[i].backend[2] != daddr[2] || x->v6[i].backend[3] != daddr[3] ||
		    x->v6[i].bport != dport)
			continue;
		key = x->v6[i];
		if (bpf_map_lookup_elem(&ko_gone6, &key))
			return 1;
	}
	return 0;
}

SEC("iter/udp")
int destroy_udp(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;
	struct sock_xlate *x;
	__be32 d6[4];
	__be16 dport;

	if (!sk)
		return 0;
	/* Only sockets a hook translated have storage: a socket connected
	 * to the endpoint's address directly is left alone. */
	x = bpf_sk_storage_get(&ko_sock, sk, 0, 0);
	if (!x)
		return 0;
	dport = sk->__sk_common.skc_dport;
	if (!dport)
		return 0; /* not connected */
	if (sk->__sk_common.skc_family == AF_INET) {
		if (gone4(x, sk->__sk_common.skc_daddr, dport))
			bpf_sock_destroy((struct sock_common *)sk);
		return 0;
	}
	if (sk->__sk_common.skc_family != AF_INET6)
		return 0;
	d6[0] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[0];
	d6[1] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[1];
	d6[2] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[2];
	d6[3] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[3];
	/* An AF_INET6 socket connected to an IPv4 service remembers it in
	 * v4 (sock.c). */
	if (d6[0] == 0 && d6[1] == 0 && d6[2] == bpf_htonl(0xffff)) {
		if (gone4(x, d6[3], dport))
			bpf_sock_destroy((struct sock_common *)sk);
		return 0;
	}
	if (gone6(x, d6, dport))
		bpf_sock_destroy((struct sock_common *)sk);
	return 0;
}

char _license[] SEC("license") = "Dual BSD/GPL";
