package nftables

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
)

// fakeRules is the RuleWriter of the unit tests: it turns the
// expressions back into nft's text and writes them into a knftables Fake
// in one transaction, so the tracer and the dumps see what the kernel
// would hold (TestKernelFastPathSameRules shows the text is nft's own).
type fakeRules struct {
	f        *knftables.Fake
	batches  int
	chains   int
	failNext bool
}

func (w *fakeRules) ReplaceRules(ctx context.Context, _ knftables.Family, chains []ChainRules) error {
	if w.failNext {
		w.failNext = false
		return errors.New("injected netlink failure")
	}
	tx := w.f.NewTransaction()
	for _, cr := range chains {
		tx.Flush(&knftables.Chain{Name: cr.Chain})
		for _, r := range cr.Rules {
			text, err := exprText(r)
			if err != nil {
				return err
			}
			tx.Add(&knftables.Rule{Chain: cr.Chain, Rule: text})
		}
	}
	w.batches++
	w.chains += len(chains)
	return w.f.Run(ctx, tx)
}

// exprText is a service chain rule's expressions as nft lists them.
func exprText(r []expr.Any) (string, error) {
	var out []string
	var addr netip.Addr
	for i := 0; i < len(r); i++ {
		switch e := r[i].(type) {
		case *expr.Meta:
			switch {
			case e.Key == expr.MetaKeyMARK && !e.SourceRegister && i+2 < len(r):
				b, ok := r[i+1].(*expr.Bitwise)
				if !ok {
					return "", fmt.Errorf("meta mark load without bitwise: %#v", r[i+1])
				}
				out = append(out, fmt.Sprintf("meta mark set meta mark | %#x", binary.NativeEndian.Uint32(b.Xor)))
				i += 2 // the bitwise and the meta set
			case e.Key == expr.MetaKeyL4PROTO && i+1 < len(r):
				c := r[i+1].(*expr.Cmp)
				name := map[byte]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_SCTP: "sctp"}[c.Data[0]]
				out = append(out, "meta l4proto "+name)
				i++
			default:
				return "", fmt.Errorf("meta %v", e.Key)
			}
		case *expr.Objref:
			out = append(out, fmt.Sprintf("counter name %q", e.Name))
		case *expr.Numgen:
			c := r[i+1].(*expr.Cmp)
			out = append(out, fmt.Sprintf("numgen random mod %d %d", e.Modulus, binary.NativeEndian.Uint32(c.Data)))
			i++
		case *expr.Immediate:
			if e.Register == 1 {
				addr, _ = netip.AddrFromSlice(e.Data)
				continue
			}
			out = append(out, "dnat to "+netip.AddrPortFrom(addr, binary.BigEndian.Uint16(e.Data)).String())
		case *expr.NAT:
		default:
			return "", fmt.Errorf("expression %T", e)
		}
	}
	return strings.Join(out, " "), nil
}

// TestFastPathEqualsNFT: with the fast path on, random partial syncs and
// full syncs leave the table as nft alone writes it; endpoint changes go
// through it and run no nft transaction, full syncs give nft no service
// chain rule to parse.
func TestFastPathEqualsNFT(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", v6), func(t *testing.T) {
			w := &modeltest.World{Rng: rand.New(rand.NewPCG(3, 4)), St: testState()}
			f := &countingNFT{Fake: newFake(v6)}
			rw := &fakeRules{f: f.Fake}
			p := New(Options{NFT: f, Rules: rw, IPv6: v6, MasqueradeMark: testMark, RoutedClients: testRouted})
			mustSync(t, p, w.St, true)
			if rw.batches == 0 {
				t.Fatal("the full sync wrote no service chain over netlink")
			}
			if strings.Contains(f.LastTransaction.String(), "dnat to") {
				t.Errorf("the full sync gave nft service chain rules:\n%s", f.LastTransaction)
			}
			fastSteps := 0
			for i, step := range w.Steps(80, "alpha", "beta") {
				w.Apply(step, modeltest.Changes)
				runs, batches := f.runs, rw.batches
				if err := p.Sync(t.Context(), w.St, i%17 == 16); err != nil {
					t.Fatalf("step %d (%s): %v", i, step, err)
				}
				if rw.batches > batches && f.runs > runs && i%17 != 16 {
					t.Errorf("step %d (%s): a partial sync used both netlink and nft", i, step)
				}
				if rw.batches > batches && i%17 != 16 {
					fastSteps++
				}
				checkSameAsFull(t, f.Fake, w.St, v6)
				checkAllFlows(t, f.Fake, w.St, v6)
				if t.Failed() {
					t.Fatalf("step %d (%s) failed", i, step)
				}
			}
			if fastSteps == 0 {
				t.Error("no partial sync took the fast path")
			}
		})
	}
}

// TestFastPathFailure: a partial sync whose netlink batch fails writes
// the same with nft; a full sync whose batch fails fails, and from then
// on full syncs go through nft alone.
func TestFastPathFailure(t *testing.T) {
	f := &countingNFT{Fake: newFake(false)}
	rw := &fakeRules{f: f.Fake}
	p := New(Options{NFT: f, Rules: rw, MasqueradeMark: testMark, RoutedClients: testRouted})
	st := testState()
	mustSync(t, p, st, true)

	st = modeltest.CloneState(st)
	alpha := modeltest.ClusterOf(st, "alpha")
	alpha.Ports[webKey] = withEndpoints(alpha.Ports[webKey], "10.0.1.1:8080", "10.0.1.4:8080")
	rw.failNext = true
	runs := f.runs
	mustSync(t, p, st, false)
	if f.runs != runs+1 {
		t.Errorf("the failed batch was not written by nft: %d transactions", f.runs-runs)
	}
	checkSameAsFull(t, f.Fake, st, false)

	rw.failNext = true
	if err := p.Sync(t.Context(), st, true); err == nil {
		t.Fatal("a full sync whose netlink batch failed succeeded")
	}
	batches := rw.batches
	mustSync(t, p, st, false) // full: the failure asks for one
	if rw.batches != batches {
		t.Error("a full sync after a failed batch used netlink again")
	}
	checkSameAsFull(t, f.Fake, st, false)
	checkAllFlows(t, f.Fake, st, false)
}
