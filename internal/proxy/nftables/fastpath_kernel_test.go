//go:build kernel

package nftables

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
)

// TestKernelFastPathSameRules: the rules the fast path sends over netlink
// are those nft compiles from renderPort's text, for either family, each
// protocol, with and without masquerading, for one to four endpoints.
func TestKernelFastPathSameRules(t *testing.T) {
	elsewhere(t)
	t.Cleanup(func() { run(t, "nft", "flush", "ruleset") })
	for _, v6 := range []bool{false, true} {
		f := familyOf(v6)
		run(t, "nft", "add", "table", string(f.nft), TableName)
		for _, pr := range []model.Protocol{model.TCP, model.UDP, model.SCTP} {
			for _, mark := range []uint32{0, testMark} {
				for n := 1; n <= 4; n++ {
					eps := make([]string, n)
					for i := range eps {
						if v6 {
							eps[i] = fmt.Sprintf("[fd00:1::%x]:%d", i+1, 8080+i)
						} else {
							eps[i] = fmt.Sprintf("10.0.1.%d:%d", i+1, 8080+i)
						}
					}
					vip := "10.96.0.10"
					if v6 {
						vip = "fd00:96::10"
					}
					sp := svc("alpha", "default", "web", "http", pr, vip, 80, eps...)
					r := renderPort(f, sp, false, mark)
					text := r.rules[serviceChain(sp.Key)]
					if len(text) != n+1 {
						t.Fatalf("renderPort wrote %d rules, want %d: %q", len(text), n+1, text)
					}
					run(t, "nft", "add", "counter", string(f.nft), TableName, counterName(sp.Key))
					run(t, "nft", "add", "chain", string(f.nft), TableName, "by-nft")
					run(t, "nft", "add", "chain", string(f.nft), TableName, "by-netlink")
					run(t, "nft", "flush", "chain", string(f.nft), TableName, "by-nft")
					for _, rule := range text {
						run(t, "nft", "add rule "+string(f.nft)+" "+TableName+" by-nft "+rule)
					}
					cr := ChainRules{Chain: "by-netlink", Rules: serviceExprs(f, sp, mark)}
					if err := (&NetlinkWriter{}).ReplaceRules(t.Context(), f.nft, []ChainRules{cr}); err != nil {
						t.Fatal(err)
					}
					got, want := chainRules(t, f, "by-netlink"), chainRules(t, f, "by-nft")
					if got != want {
						t.Errorf("%s, %s, mark %#x, %d endpoints: netlink wrote\n%s\nnft wrote\n%s", f.nft, pr, mark, n, got, want)
					}
				}
			}
		}
	}
}

// chainRules are a chain's rules as nft lists them.
func chainRules(t *testing.T, f family, chain string) string {
	t.Helper()
	var rules []string
	for _, l := range strings.Split(run(t, "nft", "list", "chain", string(f.nft), TableName, chain), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l == "}" || strings.HasPrefix(l, "table ") || strings.HasPrefix(l, "chain ") {
			continue
		}
		rules = append(rules, l)
	}
	return strings.Join(rules, "\n")
}

// TestKernelFastPath: random partial syncs against the kernel with the
// fast path on use it, leave every chain as a full sync by nft writes
// it, and a connection reaches the endpoint a fast-path change gave.
func TestKernelFastPath(t *testing.T) {
	elsewhere(t)
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", v6), func(t *testing.T) {
			p, _ := kernelProxier(t, v6)
			st := testState()
			last := kernelSteps(t, p, st)
			// Then every port of this family without affinity gets
			// other endpoints, one sync each: each is a fast batch.
			fast, want := p.fastBatches.Load(), int64(0)
			for _, c := range last.Clusters {
				for _, k := range slices.SortedFunc(maps.Keys(c.Ports), model.PortKey.Compare) {
					sp := c.Ports[k]
					if k.IPv6 != v6 || len(sp.Endpoints) == 0 || sp.Affinity != 0 {
						continue
					}
					eps := []string{sp.Endpoints[0].Addr.String(), sp.Endpoints[len(sp.Endpoints)-1].Addr.String(), sp.Endpoints[0].Addr.String()}
					last = modeltest.CloneState(last)
					modeltest.ClusterOf(last, c.Name).Ports[k] = withEndpoints(sp, eps...)
					mustSync(t, p, last, false)
					want++
				}
			}
			if want == 0 {
				t.Fatal("no port to change")
			}
			if got := p.fastBatches.Load() - fast; got != want {
				t.Errorf("%d of %d endpoint changes took the fast path", got, want)
			}
			before := ourChains(t, familyOf(v6))
			nftOnly := New(Options{NFT: p.opt.NFT, IPv6: v6, MasqueradeMark: testMark, RoutedClients: testRouted})
			mustSync(t, nftOnly, last, true)
			after := ourChains(t, familyOf(v6))
			for _, name := range slices.Sorted(maps.Keys(after)) {
				if before[name] != after[name] {
					t.Errorf("chain %s as the partial syncs left it:\n%s\nas nft writes it:\n%s", name, before[name], after[name])
				}
			}
			if len(before) != len(after) {
				t.Errorf("%d chains after the partial syncs, %d after a full sync", len(before), len(after))
			}
		})
	}
	t.Run("traffic", func(t *testing.T) {
		serveEndpoint(t)
		p, _ := kernelProxier(t, false)
		nowhere := svc("alpha", "default", "web", "http", model.TCP, "10.96.0.10", 80, "10.0.1.9:8080")
		mustSync(t, p, state(cluster("alpha", true, alphaCIDRs, nowhere)), true)
		web := svc("alpha", "default", "web", "http", model.TCP, "10.96.0.10", 80, "10.0.1.1:8080")
		mustSync(t, p, state(cluster("alpha", true, alphaCIDRs, web)), false)
		if p.fastBatches.Load() != 1 {
			t.Fatalf("%d syncs took the fast path, want the endpoint change's", p.fastBatches.Load())
		}
		mustAnswer(t, "10.96.0.10:80", "a1")
	})
}

// ourChains are the chains of our table, name to listing.
func ourChains(t *testing.T, f family) map[string]string {
	t.Helper()
	out := map[string]string{}
	var name string
	var body []string
	for _, l := range strings.Split(run(t, "nft", "list", "table", string(f.nft), TableName), "\n") {
		switch {
		case strings.HasPrefix(l, "\tchain "):
			name, body = strings.TrimSuffix(strings.TrimPrefix(l, "\tchain "), " {"), nil
		case name != "" && l == "\t}":
			out[name] = strings.Join(body, "\n")
			name = ""
		case name != "":
			body = append(body, l)
		}
	}
	return out
}

// TestKernelListObjects: the objects named over netlink are those nft's
// listing names, for a table with every kind of object, and none for a
// table that does not exist.
func TestKernelListObjects(t *testing.T) {
	elsewhere(t)
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", v6), func(t *testing.T) {
			p, nft := kernelProxier(t, v6)
			w := &NetlinkWriter{}
			if got, err := w.ListObjects(t.Context(), familyOf(v6).nft); err != nil || len(got) != 0 {
				t.Fatalf("before the first sync: %v, %v; want none", got, err)
			}
			mustSync(t, p, testState(), true)
			got, err := w.ListObjects(t.Context(), familyOf(v6).nft)
			if err != nil {
				t.Fatal(err)
			}
			want, err := New(Options{NFT: nft, IPv6: v6}).listObjects(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, want) {
				t.Errorf("over netlink: %v\nnft lists: %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
			}
			kinds := map[string]bool{}
			for id := range got {
				kind, _, _ := strings.Cut(id, "/")
				kinds[kind] = true
			}
			if len(kinds) != 4 {
				t.Errorf("kinds listed: %v, want chain, set, map and counter", kinds)
			}
		})
	}
}
