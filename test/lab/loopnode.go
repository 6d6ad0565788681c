//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// loopNet holds the addresses of loopback-only nodes: the k-th one has
// 10.252.(k/256).(k%256) on its loopback.
var loopNet = netip.MustParsePrefix("10.252.0.0/16")

// maxLoopNodes bounds AddLoopbackNode; far more than a 2-core machine can
// run daemons for.
const maxLoopNodes = 1000

// AddLoopbackNode creates a node whose namespace <ID>-node-<name> has
// nothing but its loopback, which holds the node's own address (a /32 of
// 10.252.0.0/16, the InternalIP Node.Register gives it). It has no link,
// no route and no pods: it reaches an apiserver only through a relay in
// it (Cluster.RelayIn). This is how many daemons run against one
// apiserver at once (the fleet benchmark): AddNode's infra network holds
// at most 30 nodes. Lab.Close removes it.
func (l *Lab) AddLoopbackNode(ctx context.Context, name string) (*Node, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("lab: node name %q: want [a-z0-9-], at most 40 characters", name)
	}
	if l.remote != "" {
		return nil, errors.New("lab: a remote lab has no nodes")
	}
	for _, c := range l.Clusters {
		if c.ServiceCIDR.Overlaps(loopNet) {
			return nil, fmt.Errorf("lab: cluster %s: ServiceCIDR %v overlaps the loopback nodes' network %v", c.Name, c.ServiceCIDR, loopNet)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("lab is closed")
	}
	if l.nodes == nil {
		l.nodes = map[string]*Node{}
	}
	if _, ok := l.nodes[name]; ok || l.loopNodes >= maxLoopNodes {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: node %s exists, or %d loopback nodes already", name, maxLoopNodes)
	}
	l.loopNodes++
	k := l.loopNodes
	b := loopNet.Addr().As4()
	b[2], b[3] = byte(k/256), byte(k%256)
	n := &Node{Name: name, NS: l.ID + "-node-" + name, IP: netip.AddrFrom4(b), lab: l}
	l.nodes[name] = n
	l.mu.Unlock()

	if err := l.addNetns(n.NS); err != nil {
		return nil, err
	}
	if err := ipIn(n.NS, "addr", "add", n.IP.String()+"/32", "dev", "lo"); err != nil {
		return nil, err
	}
	return n, nil
}
