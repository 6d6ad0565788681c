package iptables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// A host has two iptables: legacy (x_tables) and nf_tables, and the
// `iptables` alternative names one of them. Both are live in the kernel at
// once, so rules written with the one the host's other programs (Docker,
// firewalld, ufw, kubelet) do not use still apply, but beside theirs, in
// an order nobody chose. Like kube-proxy's iptables-wrapper, the variant
// that holds more rules is the one in use; a tie keeps the alternative.
type variant struct {
	// prefix is put before "iptables-restore" and the others: "" for the
	// alternative, else "legacy" or "nft" as in iptables-legacy-save.
	name string
	// why says how it was chosen, for the one log line.
	why string
}

// bins are the variant's restore and save binaries for one family.
func (v variant) bins(ipv6 bool) (cmd, restore, save string) {
	cmd = "iptables"
	if ipv6 {
		cmd = "ip6tables"
	}
	if v.name != "" {
		cmd += "-" + v.name
	}
	return cmd, cmd + "-restore", cmd + "-save"
}

// chooseVariant counts the rules each variant holds, in both families. It
// refuses a host where both hold rules of ours: they would both apply.
func chooseVariant(save func(bin string) ([]byte, error)) (variant, error) {
	count := func(name string) (rules, ours int, ok bool) {
		for _, fam := range []string{"iptables", "ip6tables"} {
			out, err := save(fam + "-" + name + "-save")
			if err != nil {
				continue
			}
			ok = true
			for _, l := range bytes.Split(out, []byte("\n")) {
				if bytes.HasPrefix(l, []byte("-A ")) {
					rules++
					if bytes.Contains(l, []byte(" "+chainPrefix)) {
						ours++
					}
				}
			}
		}
		return rules, ours, ok
	}
	legacy, legacyOurs, hasLegacy := count("legacy")
	nft, nftOurs, hasNft := count("nft")
	switch {
	case !hasLegacy || !hasNft:
		return variant{why: "only one iptables variant here"}, nil
	case legacyOurs > 0 && nftOurs > 0:
		return variant{}, fmt.Errorf("both iptables-legacy (%d rules) and iptables-nft (%d rules) hold rules of kube-outpost, "+
			"which would both apply: remove one set (e.g. iptables-legacy-save | grep OUTPOST) or run `kube-outpost cleanup` "+
			"with each as the iptables alternative", legacyOurs, nftOurs)
	case legacy > nft:
		return variant{name: "legacy", why: fmt.Sprintf("iptables-legacy holds %d rules, iptables-nft %d", legacy, nft)}, nil
	case nft > legacy:
		return variant{name: "nft", why: fmt.Sprintf("iptables-nft holds %d rules, iptables-legacy %d", nft, legacy)}, nil
	}
	return variant{why: fmt.Sprintf("iptables-legacy and iptables-nft hold %d rules each: the alternative decides", legacy)}, nil
}

// hostVariant is chosen once per process: the daemon, cleanup and explain
// of one run must all write and read the same tables.
var hostVariant = sync.OnceValues(func() (variant, error) {
	run := func(bin string, args ...string) ([]byte, error) {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return exec.CommandContext(ctx, bin, args...).Output()
	}
	v, err := chooseVariant(func(bin string) ([]byte, error) { return run(bin) })
	if err != nil || v.name == "" {
		return v, err
	}
	// The alternative's own names when it is the variant chosen: what an
	// admin (or a test's PATH) puts in front of iptables-restore stays
	// in the way.
	if out, err := run("iptables", "-V"); err == nil && alternative(string(out)) == v.name {
		v.name = ""
	}
	return v, nil
})

// alternative is the variant `iptables -V` says it is.
func alternative(version string) string {
	switch {
	case strings.Contains(version, "nf_tables"):
		return "nft"
	case strings.Contains(version, "legacy"):
		return "legacy"
	}
	return ""
}

// VariantInUse says which iptables this process writes, and why.
func VariantInUse() (string, error) {
	v, err := hostVariant()
	if err != nil {
		return "", err
	}
	name := v.name
	if name == "" {
		name = "the iptables alternative"
	} else {
		name = "iptables-" + name
	}
	return strings.TrimSpace(name + " (" + v.why + ")"), nil
}
