//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// nodePodNet holds the pod subnets of nodes: the k-th node gets
// 10.245.k.0/24, with its own address .1 on it. Nothing but the node routes
// it: the host reaches those pods only through the node.
var nodePodNet = netip.MustParsePrefix("10.245.0.0/16")

// maxNodes bounds AddNode: node k has infra address 10.250.0.(220+k), above
// the apiservers' 10.250.0.10-209.
const maxNodes = 30

// Node is a Kubernetes node as far as the network goes: namespace
// <ID>-node-<name> on the infra bridge at 10.250.0.(220+k), with pods of its
// own (Node.AddPod) on subnet 10.245.k.0/24 behind it, forwarding between
// them. The lab routes nothing to that subnet, so a test decides how the host
// reaches those pods: a route via Node.IP (what reach = "routes" installs),
// or the node's NodePorts (ForwardNodePort, what reach = "nodeport" uses).
// The Kubernetes Node object is the test's to create.
type Node struct {
	Name    string
	NS      string
	IP      netip.Addr
	PodCIDR netip.Prefix
	// BPFFS is the directory of the node's bpffs (Options.BPF) in the
	// test's mount namespace: where a daemon in the node pins (at its
	// /sys/fs/bpf); "" without.
	BPFFS string

	lab    *Lab
	pods   int    // pods added so far, guarded by lab.mu
	mounts string // the script of Options.BPF's mounts, as Lab.hostMounts; set before the node is returned
}

// AddNode creates a node. Lab.Close removes it.
func (l *Lab) AddNode(ctx context.Context, name string) (_ *Node, err error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("lab: node name %q: want [a-z0-9-], at most 40 characters", name)
	}
	if l.remote != "" {
		return nil, errors.New("lab: a remote lab has no nodes")
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
	if _, ok := l.nodes[name]; ok || len(l.nodes) >= maxNodes {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: node %s exists, or %d nodes already", name, maxNodes)
	}
	k := len(l.nodes) + 1
	b := nodePodNet.Addr().As4()
	b[2] = byte(k)
	n := &Node{
		Name:    name,
		NS:      l.ID + "-node-" + name,
		IP:      netip.AddrFrom4([4]byte{10, 250, 0, byte(220 + k)}),
		PodCIDR: netip.PrefixFrom(netip.AddrFrom4(b), 24),
		lab:     l,
	}
	l.nodes[name] = n
	l.mu.Unlock()

	if err := l.addNetns(n.NS); err != nil {
		return nil, err
	}
	if err := vethInto(l.routerNS, "infra", fmt.Sprintf("vnode%d", k), n.NS); err != nil {
		return nil, err
	}
	gw := n.PodCIDR.Addr().Next()
	for _, s := range [][]string{
		{"addr", "add", n.IP.String() + "/24", "dev", "eth0"},
		{"link", "add", "pods", "address", bridgeMAC(gw), "type", "bridge"},
		{"addr", "add", fmt.Sprintf("%s/%d", gw, n.PodCIDR.Bits()), "dev", "pods"},
		{"link", "set", "pods", "up"},
	} {
		if err := ipIn(n.NS, s...); err != nil {
			return nil, err
		}
	}
	if err := writeSysctlIn(n.NS, "net/ipv4/ip_forward", "1"); err != nil {
		return nil, err
	}
	if l.bpf != nil {
		dir := filepath.Join(l.Dir, "bpffs-node-"+name)
		script, err := l.bpfMounts(dir)
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		n.BPFFS, n.mounts = dir, script
		l.mu.Unlock()
	}
	l.logf("node %s at %s, pods %s", name, n.IP, n.PodCIDR)
	return n, nil
}

// AddPod is Lab.AddPod for a pod behind the node, on its pod subnet.
func (n *Node) AddPod(ctx context.Context, name string, tcpPorts, udpPorts []int) (*Pod, error) {
	return n.lab.addPod(ctx, name, n, tcpPorts, udpPorts)
}

// ForwardNodePort makes the node forward proto ("tcp" or "udp") traffic to
// its own address at nodePort to target, as kube-proxy does on a node for a
// NodePort service with one endpoint. The client's address is kept (no
// masquerade): the pod answers through the node, its only way out.
func (n *Node) ForwardNodePort(proto string, nodePort int, target netip.AddrPort) error {
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" {
		return fmt.Errorf("lab: protocol %q: want tcp or udp", proto)
	}
	script := fmt.Sprintf("*nat\n-A PREROUTING -d %s/32 -p %s -m %s --dport %d -j DNAT --to-destination %s\nCOMMIT\n",
		n.IP, proto, proto, nodePort, target)
	cmd := n.lab.nsCommand(context.Background(), n.NS, "iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("lab: node %s: forwarding %s/%d: %v: %s", n.Name, proto, nodePort, err, out)
	}
	return nil
}

// Command returns `ip netns exec <NS> name args...`, killed if the test
// process dies.
func (n *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return n.lab.nsCommand(ctx, n.NS, name, args...)
}

// KillAll kills every process in the node's namespace: what a daemon
// started there left behind (kube-proxy's iptables-restore outlives it).
func (n *Node) KillAll() {
	for _, pid := range netnsPids(n.NS) {
		if pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// Dial dials from the node's namespace (IP literals only, as DialHost).
func (n *Node) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return dialIn(ctx, n.NS, network, addr)
}

// HTTPGetHeader is Lab.HTTPGetHeader from the node's namespace.
func (n *Node) HTTPGetHeader(ctx context.Context, url string) (string, http.Header, error) {
	return httpGet(ctx, n.Dial, url)
}

// RouteAsHost gives the node the host's routes: the pod network and every
// cluster's ServiceCIDR via the router, so that a proxy running on the
// node (kube-proxy or kube-outpost, side by side in the comparison)
// reaches the lab's pods and ClusterIPs the way one on the host does.
func (n *Node) RouteAsHost() error {
	prefixes := []netip.Prefix{podNet}
	for _, c := range n.lab.Clusters {
		prefixes = append(prefixes, c.ServiceCIDR.Masked())
	}
	for _, p := range prefixes {
		if err := ipIn(n.NS, "route", "replace", p.String(), "via", routerInfra.String()); err != nil {
			return err
		}
	}
	return nil
}

// nthAddr returns the n-th address of p (n = 0 is p's own address).
func nthAddr(p netip.Prefix, n int) (netip.Addr, error) {
	a := p.Masked().Addr()
	for i := 0; i < n; i++ {
		a = a.Next()
	}
	if !p.Contains(a) || !p.Contains(a.Next()) { // the last one is broadcast
		return netip.Addr{}, fmt.Errorf("no address %d in %v", n, p)
	}
	return a, nil
}

// Register creates the node's Kubernetes Node object with cs, as kubelet and
// the node IPAM controller would: its InternalIP, its pod CIDR (if it has
// one), Ready.
func (n *Node) Register(ctx context.Context, cs kubernetes.Interface) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name}}
	if n.PodCIDR.IsValid() { // a loopback node has none
		node.Spec = corev1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String()}}
	}
	created, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	// Status is a subresource: set it the way kubelet does.
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n.IP.String()},
			{Type: corev1.NodeHostName, Address: n.Name},
		},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: now, LastTransitionTime: now,
		}},
	}
	_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

// SetNodeReady sets a Node's Ready condition, as the node lifecycle
// controller does when its kubelet stops reporting.
func SetNodeReady(ctx context.Context, cs kubernetes.Interface, name string, status corev1.ConditionStatus) error {
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			n.Status.Conditions[i].Status = status
			n.Status.Conditions[i].Reason = "NodeStatusUnknown"
			if status == corev1.ConditionTrue {
				n.Status.Conditions[i].Reason = "KubeletReady"
			}
		}
	}
	_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}
