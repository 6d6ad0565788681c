package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"

	goipt "github.com/coreos/go-iptables/iptables"
)

// Runner is the lowest layer: the iptables commands. Tests swap in Fake, so
// that everything above, rule generation included, runs for real.
type Runner interface {
	// Restore applies an iptables-restore script without flushing what it
	// does not name, as one transaction.
	Restore(ctx context.Context, script []byte) error
	// Save returns iptables-save output for one table.
	Save(ctx context.Context, table string) ([]byte, error)
	// HasRandomFully says whether MASQUERADE takes --random-fully, which
	// avoids source port clashes between many clients behind one address.
	HasRandomFully() bool
	// ListChain returns one chain's rules as `iptables -S CHAIN` prints
	// them, without the -N line; ErrNoChain when the chain is not there.
	// It reads one chain, which costs little however many rules the
	// table holds: the canary check runs it every few seconds.
	ListChain(ctx context.Context, table, chain string) ([]string, error)
}

// ErrNoChain is ListChain's error for a chain that does not exist.
var ErrNoChain = errors.New("no such chain")

// execRunner runs the iptables binaries of one IP family.
type execRunner struct {
	restore, save string
	ipt           *goipt.IPTables
}

// NewRunner returns the Runner of one family for the iptables variant in
// use on this host (variant.go: legacy or nf_tables, whichever holds the
// host's rules).
func NewRunner(ipv6 bool) (Runner, error) {
	v, err := hostVariant()
	if err != nil {
		return nil, err
	}
	proto := goipt.ProtocolIPv4
	if ipv6 {
		proto = goipt.ProtocolIPv6
	}
	cmd, restore, save := v.bins(ipv6)
	for _, bin := range []string{restore, save} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s not found: install the iptables package: %w", bin, err)
		}
	}
	path, err := exec.LookPath(cmd)
	if err != nil {
		return nil, fmt.Errorf("%s not found: install the iptables package: %w", cmd, err)
	}
	ipt, err := goipt.New(goipt.IPFamily(proto), goipt.Timeout(5), goipt.Path(path))
	if err != nil {
		return nil, fmt.Errorf("probing iptables: %w", err)
	}
	return &execRunner{restore: restore, save: save, ipt: ipt}, nil
}

func (r *execRunner) HasRandomFully() bool { return r.ipt.HasRandomFully() }

func (r *execRunner) ListChain(_ context.Context, table, chain string) ([]string, error) {
	out, err := r.ipt.List(table, chain)
	var e *goipt.Error
	// iptables-nft 1.8 says a missing chain (or a table that `nft flush
	// ruleset` took) is "incompatible", not "No chain".
	if errors.As(err, &e) && (e.IsNotExist() || strings.Contains(e.Error(), "is incompatible")) {
		return nil, ErrNoChain
	}
	if err != nil {
		return nil, err
	}
	var rules []string
	for _, l := range out {
		if !strings.HasPrefix(l, "-N ") && !strings.HasPrefix(l, "-P ") {
			rules = append(rules, l)
		}
	}
	return rules, nil
}

func (r *execRunner) Restore(ctx context.Context, script []byte) error {
	// --wait: the legacy backend serialises writers with the xtables lock.
	cmd := exec.CommandContext(ctx, r.restore, "--noflush", "--wait=5")
	cmd.Stdin = bytes.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return &RestoreError{Output: strings.TrimSpace(out.String()), Err: err, Script: script}
	}
	return nil
}

func (r *execRunner) Save(ctx context.Context, table string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, r.save, "-t", table)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s -t %s: %w: %s", r.save, table, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// RestoreError is a failed iptables-restore, with the lines it complained
// about.
type RestoreError struct {
	Output string
	Err    error
	Script []byte
}

func (e *RestoreError) Error() string {
	msg := fmt.Sprintf("iptables-restore: %v: %s", e.Err, e.Output)
	// iptables-restore names the failing line number: quote that line.
	var n int
	if m := lineMention.FindAllStringSubmatch(e.Output, -1); len(m) > 0 {
		n, _ = strconv.Atoi(m[len(m)-1][1])
	}
	if n > 0 {
		lines := strings.Split(string(e.Script), "\n")
		if n <= len(lines) {
			msg += fmt.Sprintf(" (line %d: %q)", n, lines[n-1])
		}
	}
	return msg
}

func (e *RestoreError) Unwrap() error { return e.Err }

// lineMention is how iptables-restore names a script line: "line 3 failed",
// "line 3: RULE_APPEND failed", "Error occurred at line: 3".
var lineMention = regexp.MustCompile(`line:? (\d+)`)

// TransactionFailed marks a refused restore as a proxy.TransactionFailure:
// the whole script was rejected and the previous rules stayed in force.
func (e *RestoreError) TransactionFailed() {}
