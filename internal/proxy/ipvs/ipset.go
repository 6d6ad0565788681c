package ipvs

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// IPSetRunner is the ipset command. Tests swap in FakeIPSet.
type IPSetRunner interface {
	// Restore runs `ipset restore -exist` with script on stdin. ipset
	// applies the lines one by one: what precedes a failing line stays.
	Restore(ctx context.Context, script []byte) error
	// List returns the names of every set (`ipset list -n`).
	List(ctx context.Context) ([]string, error)
	// Save returns the members of a set, sorted (`ipset save NAME`);
	// nil when the set does not exist.
	Save(ctx context.Context, name string) ([]string, error)
}

type execIPSet struct{ bin string }

// NewIPSet returns the IPSetRunner of the system's ipset tool.
func NewIPSet() (IPSetRunner, error) {
	bin, err := exec.LookPath("ipset")
	if err != nil {
		return nil, fmt.Errorf("ipset not found: install the ipset package: %w", err)
	}
	return execIPSet{bin: bin}, nil
}

func (r execIPSet) Restore(ctx context.Context, script []byte) error {
	cmd := exec.CommandContext(ctx, r.bin, "restore", "-exist")
	cmd.Stdin = bytes.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ipset restore: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (r execIPSet) Save(ctx context.Context, name string) ([]string, error) {
	names, err := r.List(ctx)
	if err != nil || !slices.Contains(names, name) {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, r.bin, "save", name)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ipset save %s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return saveMembers(out, name), nil
}

// saveMembers returns the members of set name in `ipset save` output.
func saveMembers(out []byte, name string) []string {
	members := []string{}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "add" && f[1] == name {
			members = append(members, f[2])
		}
	}
	slices.Sort(members)
	return members
}

func (r execIPSet) List(ctx context.Context) ([]string, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, r.bin, "list", "-n")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ipset list -n: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.Fields(string(out)), nil
}

// ipset is one of our sets.
type ipset struct {
	name, typ string
	ipv6      bool
}

// Our sets. ipsets are not per family as iptables tables are, hence the
// suffix for IPv6.
//
//	VIPS  (hash:ip):      every ClusterIP bound to outpost0
//	PORTS (hash:ip,port): VIP,proto:port of every virtual server
func ourSets(ipv6 bool) (vips, ports ipset) {
	sfx := ""
	if ipv6 {
		sfx = "6"
	}
	return ipset{name: setPrefix + "VIPS" + sfx, typ: "hash:ip", ipv6: ipv6},
		ipset{name: setPrefix + "PORTS" + sfx, typ: "hash:ip,port", ipv6: ipv6}
}

// nodePortSet is the set of the node ports this host serves, at each of
// its addresses (serve_node_ports), with endpoints or not:
//
//	NODEPORTS (hash:ip,port): host address,proto:node port
//
// It exists only while a cluster serves node ports. It is also how a
// restarted daemon knows which virtual servers at this host's own
// addresses are ours: they are not on outpost0.
func nodePortSet(ipv6 bool) ipset {
	sfx := ""
	if ipv6 {
		sfx = "6"
	}
	return ipset{name: setPrefix + "NODEPORTS" + sfx, typ: "hash:ip,port", ipv6: ipv6}
}

// clientSet is the set of this family's routed_clients ranges:
//
//	CLIENTS (hash:net): the sources whose routed packets may reach a VIP
//
// It always exists, empty without routed_clients, so that the rules do not
// depend on the configuration.
func clientSet(ipv6 bool) ipset {
	sfx := ""
	if ipv6 {
		sfx = "6"
	}
	return ipset{name: setPrefix + "CLIENTS" + sfx, typ: "hash:net", ipv6: ipv6}
}

// setPrefix starts the name of every set of ours, and only ours.
const setPrefix = "OUTPOST-IPVS-"

func (s ipset) tmp() string { return s.name + "-TMP" }

func (s ipset) createArgs() string {
	family := "inet"
	if s.ipv6 {
		family = "inet6"
	}
	// maxelem above the default 65536: one entry per service port.
	return fmt.Sprintf("%s family %s maxelem 1048576", s.typ, family)
}

// appendSwap appends to script the lines that replace the content of s by
// members at once: fill a temporary set, swap, destroy the old content. A
// temporary set left by an interrupted run is reused.
func (s ipset) appendSwap(script []byte, members []string) []byte {
	script = fmt.Appendf(script, "create %s %s\n", s.name, s.createArgs())
	script = fmt.Appendf(script, "create %s %s\n", s.tmp(), s.createArgs())
	script = fmt.Appendf(script, "flush %s\n", s.tmp())
	for _, m := range members {
		script = fmt.Appendf(script, "add %s %s\n", s.tmp(), m)
	}
	script = fmt.Appendf(script, "swap %s %s\n", s.tmp(), s.name)
	return fmt.Appendf(script, "destroy %s\n", s.tmp())
}

// isOurSet says whether a set name is one of ours, of one family, whatever
// version of kube-outpost made it.
func isOurSet(name string, ipv6 bool) bool {
	if !strings.HasPrefix(name, setPrefix) {
		return false
	}
	return strings.HasSuffix(strings.TrimSuffix(name, "-TMP"), "6") == ipv6
}

// setContent is the members of a set, sorted: comparable with slices.Equal.
type setContent []string

func newSetContent(m map[string]bool) setContent {
	out := make(setContent, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func portMember(k ServiceKey) string {
	return fmt.Sprintf("%s,%s:%d", k.VIP, strings.ToLower(string(k.Protocol)), k.Port)
}
