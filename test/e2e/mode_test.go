//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	ciliumebpf "github.com/cilium/ebpf"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	koebpf "github.com/kube-outpost/kube-outpost/internal/proxy/ebpf"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
	"github.com/kube-outpost/kube-outpost/internal/proxy/ipvs"
	_ "github.com/kube-outpost/kube-outpost/internal/proxy/modes" // the modes needs reads
	"github.com/kube-outpost/kube-outpost/internal/proxy/nftables"
	"github.com/kube-outpost/kube-outpost/internal/status"
	"github.com/kube-outpost/kube-outpost/test/lab"
)

// The scenarios are written once and run in every proxy mode: here, on this
// machine's kernel, in iptables, nftables and ebpf mode; in the IPVS VM
// suite (test/vm), whose kernel has ip_vs, in ipvs mode, with
// KO_E2E_MODE=ipvs and a remote lab (KO_E2E_REMOTE, see
// test/lab/remote.go). What differs between the modes is only how the
// kernel's state is read, in this file (ebpf mode's: the maps pinned in
// the lab host's bpffs, bpfhost_test.go).
var mode = envOr("KO_E2E_MODE", "iptables")

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// needs skips a scenario the mode under test declares it cannot do: a
// scenario is written once for every mode, and skipped by capability,
// never by a mode's name.
func needs(t *testing.T, c config.Capability) {
	t.Helper()
	if !can(t, c) {
		t.Skipf("mode %s cannot do %s", mode, c)
	}
}

// can says whether the mode under test declares it can do c, for a
// scenario that expects one outcome or another.
func can(t *testing.T, c config.Capability) bool {
	t.Helper()
	m := proxy.Lookup(config.Mode(mode))
	if m == nil {
		t.Fatalf("mode %q is not in this build", mode)
	}
	return m.Can.Has(c)
}

// syncTool is the command every sync of the mode under test that adds a
// service runs, which a test makes fail on demand (startObserved): sub, if
// set, is the only subcommand made to fail. counted: its refusals count in
// kube_outpost_sync_proxy_rules_restore_failures_total, as iptables-restore
// transactions do, and nftables mode's `nft -f -` (its transactions; its
// reads, `nft --json list`, stay working); ipvs mode's ipset restore fails
// the sync without being counted there. A mode that syncs through no
// command (config.CanSyncByCommand; ebpf mode writes its maps with bpf()
// itself) has none, and the scenarios that need one skip.
var syncTool = map[string]struct {
	name, sub string
	counted   bool
}{
	"iptables": {name: "iptables-restore", counted: true},
	"ipvs":     {name: "ipset", sub: "restore"},
	"nftables": {name: "nft", sub: "-f", counted: true},
}[mode]

// kernelState is everything the host namespace's kernel holds for proxying,
// as text with every address spelled out: the iptables rules (our chains,
// and in ipvs mode the fixed rules), and in ipvs mode the virtual servers
// with their real servers, our ipsets and the addresses on outpost0; in
// ebpf mode the pinned maps (ebpfMaps). A service is programmed when its
// ClusterIP appears in it; an address that must never be programmed must
// not.
func kernelState(t *testing.T) string {
	t.Helper()
	s, err := saveRules(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	switch mode {
	case "nftables":
		return s + nftTables(theLab)
	case "ebpf":
		return s + ebpfMaps(t, theLab, nil)
	}
	if mode != "ipvs" {
		return s
	}
	ctx := context.Background()
	var b strings.Builder
	b.WriteString(s)
	vs, err := theLab.HostRun(ctx, "cat", "/proc/net/ip_vs")
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString(decodeIPVS(t, vs))
	sets, err := theLab.HostRun(ctx, "ipset", "list")
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString(sets)
	if addrs, err := theLab.HostRun(ctx, "ip", "-o", "addr", "show", "dev", "outpost0"); err == nil {
		b.WriteString(addrs)
	}
	return b.String()
}

// decodeIPVS turns /proc/net/ip_vs (hex addresses) into lines like
// "TCP 10.96.0.10:80 rr" and "  -> 10.244.1.1:8080 Masq 1".
func decodeIPVS(t *testing.T, s string) string {
	t.Helper()
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && (f[0] == "TCP" || f[0] == "UDP" || f[0] == "SCTP"):
			fmt.Fprintf(&b, "%s %s %s\n", f[0], hexAddrPort(t, f[1]), strings.Join(f[2:], " "))
		case len(f) >= 4 && f[0] == "->" && f[1] != "RemoteAddress:Port":
			fmt.Fprintf(&b, "  -> %s %s %s\n", hexAddrPort(t, f[1]), f[2], f[3])
		}
	}
	return b.String()
}

// hexAddrPort decodes "0A600001:0050" (IPv4) or "[fd00:...]:0050" (IPv6,
// which /proc/net/ip_vs prints in brackets).
func hexAddrPort(t *testing.T, s string) string {
	t.Helper()
	i := strings.LastIndexByte(s, ':')
	port, err := strconv.ParseUint(s[i+1:], 16, 16)
	if err != nil {
		t.Fatalf("/proc/net/ip_vs: port in %q: %v", s, err)
	}
	h := s[:i]
	if strings.HasPrefix(h, "[") {
		a, err := netip.ParseAddr(strings.Trim(h, "[]"))
		if err != nil {
			t.Fatalf("/proc/net/ip_vs: %q: %v", s, err)
		}
		return netip.AddrPortFrom(a, uint16(port)).String()
	}
	n, err := strconv.ParseUint(h, 16, 32)
	if err != nil {
		t.Fatalf("/proc/net/ip_vs: address in %q: %v", s, err)
	}
	a := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	return netip.AddrPortFrom(a, uint16(port)).String()
}

// mentions says whether the kernel state names addr as a whole address
// (10.96.0.1 does not match 10.96.0.10).
func mentions(state string, addr netip.Addr) bool {
	s := addr.String()
	for i := 0; ; {
		j := strings.Index(state[i:], s)
		if j < 0 {
			return false
		}
		end := i + j + len(s)
		if end == len(state) || !strings.ContainsRune("0123456789abcdef.", rune(state[end])) {
			if k := i + j; k == 0 || !strings.ContainsRune("0123456789abcdef.", rune(state[k-1])) {
				return true
			}
		}
		i = end
	}
}

// nftTables is nftables mode's tables in l's host namespace, as `nft list
// table` prints them; "" when there are none.
func nftTables(l *lab.Lab) string {
	var b strings.Builder
	for _, fam := range []string{"ip", "ip6"} {
		if out, err := l.HostRun(context.Background(), "nft", "list", "table", fam, "kube-outpost"); err == nil {
			b.WriteString(out)
		}
	}
	return b.String()
}

// familyRules is what the mode under test programmed in one IP family of
// l's host namespace: the nat and filter tables of iptables-save or
// ip6tables-save, nftables mode's table of that family, or ebpf mode's
// maps of that family.
func familyRules(t *testing.T, l *lab.Lab, v6 bool) string {
	t.Helper()
	if mode == "ebpf" {
		return ebpfMaps(t, l, &v6)
	}
	if mode == "nftables" {
		fam := map[bool]string{false: "ip", true: "ip6"}[v6]
		out, err := l.HostRun(context.Background(), "nft", "list", "table", fam, "kube-outpost")
		if err != nil {
			// No table is no rules of ours, which the caller judges;
			// any other failure is said.
			if !strings.Contains(out, "No such file or directory") {
				t.Logf("nft list table %s kube-outpost: %v", fam, err)
			}
			return ""
		}
		return out
	}
	return saveIn(t, l, map[bool]string{false: "iptables-save", true: "ip6tables-save"}[v6])
}

// programmedAt, dnatText, hasOurs and refusals are what familyRules
// shows in the mode under test: a port at an address, a DNAT to an
// endpoint (ebpf mode: a slot of a service), any object of ours at all,
// the refusal of TCP and UDP (ebpf mode has no rule for it: the hooks
// refuse a service without endpoints, noEndpointsAt).
func programmedAt(vip netip.Addr, port int, proto string) string {
	switch mode {
	case "nftables":
		return fmt.Sprintf("%s . %s . %d", vip, proto, port)
	case "ebpf":
		return fmt.Sprintf("%s %s ", strings.ToUpper(proto), netip.AddrPortFrom(vip, uint16(port)))
	}
	return fmt.Sprintf("-d %s/%d -p %s -m %s --dport %d", vip, vip.BitLen(), proto, proto, port)
}

func dnatText(ep string) string {
	switch mode {
	case "nftables":
		return "dnat to " + ep
	case "ebpf":
		return "  -> " + ep + " "
	}
	return "--to-destination " + ep
}

func hasOurs(rules string) bool {
	switch mode {
	case "nftables":
		return strings.Contains(rules, "table ip kube-outpost") || strings.Contains(rules, "table ip6 kube-outpost")
	case "ebpf":
		return strings.Contains(rules, ebpfMapsHeader)
	}
	return strings.Contains(rules, "OUTPOST-")
}

func refusals() []string {
	switch mode {
	case "nftables":
		return []string{"reject with tcp reset", "chain reject-check"}
	case "ebpf":
		return nil
	}
	return []string{"--reject-with tcp-reset", "--reject-with icmp6-port-unreachable"}
}

// noEndpointsAt is what familyRules shows for the service port key (a
// rule comment's name, "gamma/empty/web:http(v6)") at vip:port without
// endpoints: the comment of its refusal, or in ebpf mode, whose maps hold
// no names, a service entry without slots.
func noEndpointsAt(key string, vip netip.Addr, port int, proto string) string {
	if mode == "ebpf" {
		return programmedAt(vip, port, proto) + "endpoints 0 "
	}
	return key + " has no endpoints"
}

// namesPorts says whether familyRules names each service port, in a rule
// comment ("gamma/dual/web:http(v6)"): ipvs mode's virtual servers and
// ebpf mode's maps hold addresses, not names.
func namesPorts() bool {
	return mode == "iptables" || mode == "nftables"
}

// ebpfMapsHeader starts ebpfMaps' text when anything is pinned.
const ebpfMapsHeader = "ebpf maps pinned in "

// ebpfMaps is what ebpf mode's maps pinned in l's host bpffs (the
// default ebpf_pin_dir, which every config of the suite keeps) hold, in
// the IPv6 family if *v6, the IPv4 one if not, both if v6 is nil: after a
// header line, a line per service address, and one under it per slot,
// laid out as decodeIPVS lays out virtual servers, so that dnatTo,
// dnatFrom and mentions read both alike:
//
//	TCP 10.96.0.10:80 endpoints 2 owner 0x5d1f0c2e affinity 0s
//	  -> 10.244.1.1:8080 backend 3
//
// "" when nothing is pinned.
func ebpfMaps(t *testing.T, l *lab.Lab, v6 *bool) string {
	t.Helper()
	dir := pinDirOf(l)
	svcs, err := koebpf.ReadPinned(dir)
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString(ebpfMapsHeader + dir + "\n")
	for _, s := range svcs {
		if v6 != nil && s.Target.Addr().Is6() != *v6 {
			continue
		}
		fmt.Fprintf(&b, "%s %s endpoints %d owner %#08x affinity %ds\n", s.Protocol, s.Target, len(s.Backends), s.Owner, s.AffinitySeconds)
		for _, be := range s.Backends {
			if !be.Addr.IsValid() {
				fmt.Fprintf(&b, "  -> missing backend %d (slot %d)\n", be.ID, be.Slot)
				continue
			}
			fmt.Fprintf(&b, "  -> %s backend %d\n", be.Addr, be.ID)
		}
	}
	return b.String()
}

// pinDirOf is the default ebpf_pin_dir in l's host bpffs, as the test
// process sees it.
func pinDirOf(l *lab.Lab) string {
	if l.BPFFS == "" {
		panic("the lab's host has no bpffs of its own (lab.Options.BPF)")
	}
	return filepath.Join(l.BPFFS, filepath.Base(config.DefaultEBPFPinDir))
}

// pinsIn lists every pin in l's host bpffs, which is the lab's own: in
// ebpf mode, what must be gone after cleanup. The iterators the kernel
// puts in every bpffs (maps.debug, progs.debug) are not pins.
func pinsIn(t *testing.T, l *lab.Lab) string {
	t.Helper()
	var pins []string
	err := filepath.WalkDir(l.BPFFS, func(path string, d fs.DirEntry, err error) error {
		rel := strings.TrimPrefix(path, l.BPFFS+"/")
		if err == nil && path != l.BPFFS && rel != "maps.debug" && rel != "progs.debug" {
			pins = append(pins, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pins) == 0 {
		return ""
	}
	return "pinned in " + l.BPFFS + ": " + strings.Join(pins, " ")
}

// ownState is kernelState without anything that is not kube-outpost's: what
// must be empty after cleanup. In ebpf mode that is every pin in the lab
// host's bpffs: removing the pins of the links detaches the hooks.
func ownState(t *testing.T) string {
	t.Helper()
	if mode == "nftables" || mode == "ebpf" {
		s, err := saveRules(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var own []string
		for _, l := range strings.Split(s, "\n") {
			if strings.Contains(l, "OUTPOST") {
				own = append(own, l)
			}
		}
		own = append(own, nftTables(theLab))
		if mode == "ebpf" {
			own = append(own, pinsIn(t, theLab))
		}
		return strings.TrimSpace(strings.Join(own, "\n"))
	}
	var own []string
	for _, l := range strings.Split(kernelState(t), "\n") {
		if strings.Contains(l, "OUTPOST") || strings.Contains(l, "outpost0") ||
			strings.HasPrefix(l, "TCP ") || strings.HasPrefix(l, "UDP ") || strings.HasPrefix(l, "SCTP ") {
			own = append(own, l)
		}
	}
	return strings.Join(own, "\n")
}

// refusedHere checks that the host itself refuses a service without
// endpoints (name ns/svc, ClusterIP vip) for routed clients: in iptables
// mode a reject rule of the service behind the FORWARD hook; in ipvs mode,
// where a routed client's packets to a local VIP go through INPUT, the VIP
// in our VIPS set, no port of it in PORTS, and the INPUT hook.
func refusedHere(t *testing.T, name string, vip netip.Addr) {
	t.Helper()
	state := kernelState(t)
	switch mode {
	case "ipvs":
		vips, err := theLab.HostRun(context.Background(), "ipset", "list", "OUTPOST-IPVS-VIPS")
		if err != nil {
			t.Fatal(err)
		}
		ports, err := theLab.HostRun(context.Background(), "ipset", "list", "OUTPOST-IPVS-PORTS")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(state, "-A INPUT") || !strings.Contains(state, "OUTPOST-IPVS-FILTER") || !mentions(vips, vip) || mentions(ports, vip) {
			t.Fatalf("%s (%s): want the INPUT hook, the VIP in OUTPOST-IPVS-VIPS and no port of it in OUTPOST-IPVS-PORTS:\n%s", name, vip, state)
		}
	case "nftables":
		if !strings.Contains(state, "type filter hook forward") || !strings.Contains(state, "jump reject-check") || !strings.Contains(state, name+":") {
			t.Fatalf("no forward hook into reject-check or reject element for %s:\n%s", name, state)
		}
	case "ebpf":
		t.Fatalf("mode %s has no routed clients to refuse %s to: a scenario that asks this must need config.CanRoutedClients", mode, name)
	default:
		if !strings.Contains(state, "-A FORWARD") || !strings.Contains(state, name) {
			t.Fatalf("no FORWARD hook or reject rule for %s:\n%s", name, state)
		}
	}
}

// programmedByMode checks that the service port vip:port (TCP) is
// programmed the way the mode under test does it, so that a suite run in
// ipvs mode cannot pass on iptables rules: a virtual server with the
// endpoints as real servers, a service entry of ebpf mode's maps with the
// endpoints in its slots, or a dispatch rule into a service chain.
func programmedByMode(t *testing.T, vip netip.Addr, port int, endpoints ...string) {
	t.Helper()
	state := kernelState(t)
	switch mode {
	case "ipvs", "ebpf":
		head := fmt.Sprintf("TCP %s ", netip.AddrPortFrom(vip, uint16(port)))
		_, rest, ok := strings.Cut(state, head)
		if !ok {
			t.Fatalf("no virtual server or service entry %q in the kernel:\n%s", head, state)
		}
		var dests []string
		for _, l := range strings.Split(rest, "\n")[1:] {
			if !strings.HasPrefix(l, "  -> ") {
				break
			}
			dests = append(dests, strings.Fields(l)[1])
		}
		slices.Sort(dests)
		want := slices.Sorted(slices.Values(endpoints))
		if !slices.Equal(dests, want) {
			t.Fatalf("virtual server or service %s leads to %v, want %v", head, dests, want)
		}
		if strings.Contains(state, "OUTPOST-SERVICES") {
			t.Fatalf("%s mode, but iptables mode's chains are there:\n%s", mode, state)
		}
		if mode == "ebpf" {
			if nft := nftTables(theLab); nft != "" {
				t.Fatalf("ebpf mode, but nftables mode's tables are there:\n%s", nft)
			}
			if !strings.Contains(state, ebpfMapsHeader) {
				t.Fatalf("ebpf mode, but nothing is pinned:\n%s", state)
			}
		}
	case "nftables":
		// The element of the cluster's verdict map, the endpoint
		// chains' DNAT, and not a rule of iptables mode's.
		if !strings.Contains(state, programmedAt(vip, port, "tcp")+" comment ") || !strings.Contains(state, "numgen random mod") {
			t.Fatalf("no verdict map element for %s:%d in table ip kube-outpost:\n%s", vip, port, state)
		}
		for _, ep := range endpoints {
			if !strings.Contains(state, dnatText(ep)) {
				t.Fatalf("no DNAT to %s:\n%s", ep, state)
			}
		}
		if strings.Contains(state, "OUTPOST-") {
			t.Fatalf("nftables mode, but iptables mode's chains are there:\n%s", state)
		}
	default:
		if !strings.Contains(state, fmt.Sprintf("-d %s/32 -p tcp -m tcp --dport %d", vip, port)) || !strings.Contains(state, ":OUTPOST-SERVICES") {
			t.Fatalf("no dispatch rule for %s:%d in OUTPOST-SERVICES' tree:\n%s", vip, port, state)
		}
		for _, ep := range endpoints {
			if !strings.Contains(state, "--to-destination "+ep) {
				t.Fatalf("no DNAT to %s:\n%s", ep, state)
			}
		}
		if strings.Contains(state, "OUTPOST-IPVS") {
			t.Fatalf("iptables mode, but ipvs mode's chains are there:\n%s", state)
		}
	}
}

// kernelStateIn is kernelState for the host of lab l (IPv4).
func kernelStateIn(t *testing.T, l *lab.Lab) string {
	t.Helper()
	state := v4Rules(t, l)
	if mode == "nftables" || mode == "ebpf" {
		return state + familyRules(t, l, false)
	}
	if mode != "ipvs" {
		return state
	}
	ctx := context.Background()
	vs, err := l.HostRun(ctx, "cat", "/proc/net/ip_vs")
	if err != nil {
		t.Fatal(err)
	}
	state += decodeIPVS(t, vs)
	if addrs, err := l.HostRun(ctx, "ip", "-o", "addr", "show", "dev", "outpost0"); err == nil {
		state += addrs
	}
	return state
}

// ruleComments returns the comments the mode under test wrote into rules
// since recorded began (the iptables-restore input a wrapper appended to
// it) or holds now (nftables mode's table), with the longest its tool
// takes; ok is false for a mode that writes no comment per service (ipvs
// mode restores only its fixed rules, once; ebpf mode's maps hold no
// names).
func ruleComments(t *testing.T, l *lab.Lab, recorded string) (comments []string, limit int, ok bool) {
	t.Helper()
	switch mode {
	case "ipvs", "ebpf":
		return nil, 0, false
	case "nftables":
		for _, m := range regexp.MustCompile(`comment "([^"]*)"`).FindAllStringSubmatch(familyRules(t, l, false), -1) {
			comments = append(comments, m[1])
		}
		return comments, nftables.MaxComment, true
	}
	restores, err := os.ReadFile(recorded)
	if err != nil {
		t.Fatalf("no iptables-restore since the recording began: %v", err)
	}
	for _, m := range regexp.MustCompile(`--comment ("(?:[^"\\]|\\.)*"|\S+)`).FindAllStringSubmatch(string(restores), -1) {
		comments = append(comments, strings.Trim(m[1], `"`))
	}
	// The kernel's xt_comment holds 255 bytes: iptables-nft cuts a longer
	// one, iptables-legacy refuses the restore.
	return comments, 255, true
}

// checkKernelDetail checks explain's kernel detail of port p as the mode
// under test shows it: endpoints real servers or DNAT targets; ebpf mode
// has no detail beyond its lines, a service entry and a slot per endpoint.
func checkKernelDetail(t *testing.T, p status.PortExplanation, endpoints int) {
	t.Helper()
	switch mode {
	case "ebpf":
		if len(p.Kernel.Endpoints) != endpoints || len(p.Kernel.Lines) != 1+endpoints || !strings.HasPrefix(p.Kernel.Lines[0], "service ") {
			t.Errorf("%s: kernel view %+v", p.Key, p.Kernel)
		}
	case "ipvs":
		if v := kernelDetail[ipvs.ExplainDetail](t, p); !v.Bound || v.Server == nil || len(v.Server.Destinations) != endpoints {
			t.Errorf("%s: kernel detail %+v", p.Key, v)
		}
	case "nftables":
		if v := kernelDetail[nftables.PortView](t, p); len(v.Endpoints) != endpoints || v.Chain == "" || len(v.Dispatch) != 1 {
			t.Errorf("%s: kernel detail %+v", p.Key, v)
		}
	default:
		if v := kernelDetail[iptables.ExplainDetail](t, p); len(v.Endpoints) != endpoints || v.Chain == "" || len(v.Dispatch) != 1 {
			t.Errorf("%s: kernel detail %+v", p.Key, v)
		}
	}
}

// breakPort undoes in the kernel what the mode under test programmed for
// port p, behind the daemon's back, the way an operator's mistake would:
// explain must then report a mismatch.
func breakPort(t *testing.T, p status.PortExplanation, vip netip.Addr) {
	t.Helper()
	ctx := context.Background()
	var err error
	switch mode {
	case "ipvs":
		// The ClusterIP leaves outpost0: IPVS no longer gets its packets.
		_, err = theLab.HostRun(ctx, "ip", "addr", "del", vip.String()+"/32", "dev", "outpost0")
	case "nftables":
		// The service chain loses its rules: no endpoint is picked.
		_, err = theLab.HostRun(ctx, "nft", "flush", "chain", "ip", nftables.TableName, kernelDetail[nftables.PortView](t, p).Chain)
	case "ebpf":
		// The backend of the port's first slot goes from the pinned
		// map, as a `bpftool map delete` would take it.
		err = deleteBackend(t, p)
	default:
		_, err = theLab.HostRun(ctx, "iptables", "-t", "nat", "-F", kernelDetail[iptables.ExplainDetail](t, p).Chain)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// evenShare says whether explain gives endpoint ep the share of one of n
// as the mode under test spells it: ipvs mode a weight of 1 for round
// robin, the others a probability.
func evenShare(ep status.Endpoint, n int) bool {
	if mode == "ipvs" {
		return ep.Weight == 1
	}
	return ep.Probability == 1/float64(n)
}

// deleteBackend deletes the backend entry of port p's first slot from ebpf
// mode's map pinned in the lab host's bpffs, behind the daemon's back.
func deleteBackend(t *testing.T, p status.PortExplanation) error {
	t.Helper()
	target, proto, _ := strings.Cut(p.Target, "/")
	ap := netip.MustParseAddrPort(target)
	svcs, err := koebpf.ReadPinned(pinDirOf(theLab))
	if err != nil {
		return err
	}
	for _, s := range svcs {
		if s.Target != ap || string(s.Protocol) != proto || len(s.Backends) == 0 {
			continue
		}
		name := map[bool]string{false: "ko_be4", true: "ko_be6"}[ap.Addr().Is6()]
		m, err := ciliumebpf.LoadPinnedMap(filepath.Join(pinDirOf(theLab), name), nil)
		if err != nil {
			return err
		}
		defer m.Close()
		t.Logf("deleting backend %d (%s) of %s from %s", s.Backends[0].ID, s.Backends[0].Addr, p.Target, name)
		return m.Delete(s.Backends[0].ID)
	}
	return fmt.Errorf("no service entry with a slot for %s in the maps", p.Target)
}
