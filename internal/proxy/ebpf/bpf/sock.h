/* Map layouts shared by the hooks. The Go side gets the same structs from
 * bpf2go (-type), so a change here shows in the generated types. */
#pragma once

#include <linux/types.h>

/* Slot 0 of a service holds svc_value.count; slots 1..count hold
 * svc_value.backend_id. One key type for both keeps a service's slots
 * next to its head in one hash map, as Cilium's lbmap does. */
struct svc4_key {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
	__u16 slot;
	__u16 pad2;
};

struct svc6_key {
	__be32 addr[4];
	__be16 port;
	__u8 proto;
	__u8 pad;
	__u16 slot;
	__u16 pad2;
};

struct svc_value {
	__u32 backend_id; /* slots 1..count */
	__u16 count;      /* slot 0: how many slots; 0 refuses */
	__u16 flags;
	/* slot 0: a hash of the owning cluster's name, so that a restarted
	 * daemon keeps the entries of clusters it has not synced yet. */
	__u32 owner;
	__u32 affinity_sec; /* slot 0: ClientIP affinity timeout, 0 for none */
};

struct backend4 {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct backend6 {
	__be32 addr[4];
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/* One translation a socket made: what the application asked for and
 * where the kernel sent it instead. */
struct xlate4 {
	__be32 vip;
	__be32 backend;
	__be16 vport;
	__be16 bport;
};

/* A socket remembers its last XLATE_SLOTS translations: one is enough for
 * a connected socket, an unconnected UDP socket may talk to several
 * services at once (a resolver asking two name servers). */
#define XLATE_SLOTS 4

struct xlate6 {
	__be32 vip[4];
	__be32 backend[4];
	__be16 vport;
	__be16 bport;
};

/* An AF_INET6 socket that dials an IPv4 service (at ::ffff:a.b.c.d)
 * keeps its translation in v4, as an AF_INET socket does. */
struct sock_xlate {
	struct xlate4 v4[XLATE_SLOTS];
	struct xlate6 v6[XLATE_SLOTS];
	__u32 next4;
	__u32 next6;
};

/* ClientIP affinity: the client of a socket-level balancer is the network
 * namespace (all of this host's sockets in scope share one), as in
 * Cilium. IPv4 services are keyed at ::ffff:a.b.c.d. */
struct aff_key {
	__u64 netns;
	__be32 addr[4];
	__be16 port;
	__u8 proto;
	__u8 pad;
	__u32 pad2;
};

struct aff_value {
	__u64 last_ns;
	__u32 backend_id;
	__u32 pad;
};

struct config {
	/* Only sockets of this network namespace are translated; 0 matches
	 * none, so a half-loaded datapath translates nothing. */
	__u64 netns_cookie;
};
