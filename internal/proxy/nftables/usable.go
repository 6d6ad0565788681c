package nftables

import (
	"context"
	"fmt"
	"os"
	"time"

	"sigs.k8s.io/knftables"
)

// Usable says whether this host can run nftables mode: it builds, in one
// transaction, a throw-away table with every kind of statement and object
// the mode programs (a verdict map lookup, numgen matches, a dynamic set
// with a timeout, a named counter, fib, ct state, DNAT, masquerade,
// reject) and
// deletes it again, so that nothing is left whether it works or not. It
// is cheap (one nft run after nft's own checks), and run with full
// privileges it also has the kernel load every module the mode needs.
func Usable(ctx context.Context) error {
	for _, fam := range []family{familyV4, familyV6} {
		if err := usable(ctx, fam); err != nil {
			if fam == familyV6 && ipv6Disabled() {
				continue
			}
			return err
		}
	}
	return nil
}

func usable(ctx context.Context, f family) error {
	name := fmt.Sprintf("kube-outpost-probe-%d", os.Getpid())
	nft, err := knftables.New(f.nft, name)
	if err != nil {
		return err
	}
	return nft.Run(ctx, probeTransaction(nft, f))
}

// probeTransaction is the throw-away table of Usable, made and deleted.
func probeTransaction(nft knftables.Interface, f family) *knftables.Transaction {
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	nat, out, prio := knftables.NATType, knftables.OutputHook, knftables.DNATPriority
	tx.Add(&knftables.Chain{Name: "nat", Type: &nat, Hook: &out, Priority: &prio})
	filter, fprio := knftables.FilterType, knftables.FilterPriority
	tx.Add(&knftables.Chain{Name: "filter", Type: &filter, Hook: &out, Priority: &fprio})
	post, sprio := knftables.PostroutingHook, knftables.SNATPriority
	tx.Add(&knftables.Chain{Name: "post", Type: &nat, Hook: &post, Priority: &sprio})
	tx.Add(&knftables.Chain{Name: "ep"})
	tx.Add(&knftables.Chain{Name: "svc"})
	tx.Add(&knftables.Map{Name: "ips", Type: f.addrType + " . inet_proto . inet_service : verdict"})
	timeout := time.Minute
	tx.Add(&knftables.Set{Name: "aff", Type: f.addrType, Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag}, Timeout: &timeout})
	tx.Add(&knftables.Counter{Name: "cnt"})
	dst := "192.0.2.1"
	if f == familyV6 {
		dst = "[2001:db8::1]"
	}
	tx.Add(&knftables.Rule{Chain: "ep", Rule: fmt.Sprintf("update @aff { %s saddr }", f.ip)})
	tx.Add(&knftables.Rule{Chain: "ep", Rule: "meta l4proto tcp dnat to " + dst + ":80"})
	tx.Add(&knftables.Rule{Chain: "svc", Rule: `counter name "cnt"`})
	tx.Add(&knftables.Rule{Chain: "svc", Rule: fmt.Sprintf("%s saddr @aff goto ep", f.ip)})
	tx.Add(&knftables.Rule{Chain: "svc", Rule: "numgen random mod 2 0 meta l4proto tcp dnat to " + dst + ":80"})
	tx.Add(&knftables.Rule{Chain: "svc", Rule: "numgen random mod 2 0 goto ep"})
	tx.Add(&knftables.Rule{Chain: "nat", Rule: fmt.Sprintf("%s daddr . meta l4proto . th dport vmap @ips", f.ip)})
	tx.Add(&knftables.Rule{Chain: "nat", Rule: f.localNotLoopback() + " meta l4proto . th dport { tcp . 1 } goto svc"})
	tx.Add(&knftables.Rule{Chain: "filter", Rule: "ct state new meta l4proto tcp reject with tcp reset"})
	tx.Add(&knftables.Rule{Chain: "filter", Rule: "reject"})
	tx.Add(&knftables.Rule{Chain: "post", Rule: "meta mark & 0x4000 == 0 return"})
	tx.Add(&knftables.Rule{Chain: "post", Rule: "masquerade fully-random"})
	tx.Add(&knftables.Element{Map: "ips", Key: []string{addrOf(f), "tcp", "80"}, Value: []string{"goto svc"}})
	tx.Delete(&knftables.Table{})
	return tx
}

func addrOf(f family) string {
	if f == familyV6 {
		return "2001:db8::2"
	}
	return "192.0.2.2"
}

// ipv6Disabled: a host booted with ipv6.disable=1 has no ip6 family; an
// IPv4-only setup runs without it.
func ipv6Disabled() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err != nil
}
