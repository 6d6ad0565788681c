package iptables

import (
	"errors"
	"strings"
	"testing"
)

// TestChooseVariant: the variant with more rules is the one in use, as
// kube-proxy's iptables-wrapper decides; rules of ours in both refuse.
func TestChooseVariant(t *testing.T) {
	rules := func(n int, ours bool) []byte {
		var b strings.Builder
		b.WriteString("*nat\n:DOCKER - [0:0]\n")
		for range n {
			b.WriteString("-A DOCKER -j RETURN\n")
		}
		if ours {
			b.WriteString("-A OUTPUT -j OUTPOST-SERVICES\n")
		}
		b.WriteString("COMMIT\n")
		return []byte(b.String())
	}
	for _, tt := range []struct {
		name        string
		saves       map[string][]byte // by binary; missing ones fail
		want, error string
	}{
		{"only the alternative", map[string][]byte{}, "", ""},
		{"docker on legacy", map[string][]byte{"iptables-legacy-save": rules(12, false), "iptables-nft-save": rules(0, false),
			"ip6tables-legacy-save": rules(1, false), "ip6tables-nft-save": rules(0, false)}, "legacy", ""},
		{"firewalld on nft", map[string][]byte{"iptables-legacy-save": rules(0, false), "iptables-nft-save": rules(30, false)}, "nft", ""},
		{"a tie", map[string][]byte{"iptables-legacy-save": rules(3, false), "iptables-nft-save": rules(3, false)}, "", ""},
		{"ours in both", map[string][]byte{"iptables-legacy-save": rules(3, true), "iptables-nft-save": rules(5, true)}, "", "both iptables-legacy"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, err := chooseVariant(func(bin string) ([]byte, error) {
				if out, ok := tt.saves[bin]; ok {
					return out, nil
				}
				return nil, errors.New("not found")
			})
			switch {
			case tt.error != "":
				if err == nil || !strings.Contains(err.Error(), tt.error) {
					t.Fatalf("err %v, want one saying %q", err, tt.error)
				}
			case err != nil:
				t.Fatal(err)
			case v.name != tt.want:
				t.Errorf("variant %q (%s), want %q", v.name, v.why, tt.want)
			}
		})
	}
	if cmd, restore, save := (variant{name: "legacy"}).bins(true); cmd != "ip6tables-legacy" || restore != "ip6tables-legacy-restore" || save != "ip6tables-legacy-save" {
		t.Errorf("bins: %s %s %s", cmd, restore, save)
	}
}
