// Package ebpf is mode = "ebpf": socket-level load balancing for this
// host's own processes. Programs on cgroup v2 hooks (bpf/sock.c) send a
// connect() or sendto() to a service address to one of its endpoints
// before anything is routed, so there is no per-packet NAT and no
// conntrack entry, and a change is a map update. Replies and getpeername
// show the service address, as the application expects.
//
// The maps are written in an order that never lets a concurrent connect()
// see half a service (writer.go); the objects are pinned under a bpffs
// directory so that a restarted daemon takes them over (objects.go).
package ebpf
