package nftables

import (
	"context"
	"encoding/binary"
	"errors"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// The fast path: a partial sync that only gives existing service chains
// new rules (an endpoint came, went or moved) is sent to the kernel as one
// netlink batch of its own rather than through nft. nft reads every
// chain, set and counter of the table before each transaction (its
// cache), so at 10,000 services a one-endpoint change cost 130 to 220 ms,
// nearly all of it nft; the batch costs about a millisecond. Everything
// else goes through nft (objects with comments, maps and sets are nft's
// to write), and a fast path that fails falls back to the same changes
// as an nft transaction. A full sync sends its service chains' rules
// the same way, between two nft transactions (runSplit).
//
// The rules are byte for byte those nft compiles from renderPort's text
// (TestKernelFastPathSameRules compares the two in the kernel), so a
// listing, explain and the next full sync cannot tell which wrote them.

// RuleWriter replaces the rules of existing chains of our table, all in
// one batch that the kernel applies whole or not at all.
type RuleWriter interface {
	ReplaceRules(ctx context.Context, fam knftables.Family, chains []ChainRules) error
}

// ChainRules are one chain's new rules, in expressions.
type ChainRules struct {
	Chain string
	Rules [][]expr.Any
}

// fastChains are the plan's changes as chain rewrites, when that is all
// the plan does: no object made or deleted, no element, only service
// chains of ports without affinity that the kernel has, and their
// counters, which it has too.
func (pl *plan) fastChains(f family, masqMark uint32) ([]ChainRules, bool) {
	if len(pl.rewrites) == 0 || pl.rewritesNew || len(pl.delElems)+len(pl.addElems)+len(pl.empty)+len(pl.remove)+len(pl.removeAt) != 0 {
		return nil, false
	}
	ours := map[string]bool{}
	for _, sp := range pl.rewrites {
		ours[serviceChain(sp.Key)] = true
		ours[counterName(sp.Key)] = true
	}
	for _, o := range pl.create {
		switch o := o.(type) {
		case *knftables.Table:
		case *knftables.Chain:
			if !ours[o.Name] {
				return nil, false
			}
		case *knftables.Counter:
			if !ours[o.Name] {
				return nil, false
			}
		default:
			return nil, false
		}
	}
	for _, o := range pl.write {
		var chain string
		switch o := o.(type) {
		case flush:
			ch, ok := o.Object.(*knftables.Chain)
			if !ok {
				return nil, false
			}
			chain = ch.Name
		case *knftables.Rule:
			chain = o.Chain
		default:
			return nil, false
		}
		if !ours[chain] {
			return nil, false
		}
	}
	out := make([]ChainRules, 0, len(pl.rewrites))
	for _, sp := range pl.rewrites {
		out = append(out, ChainRules{Chain: serviceChain(sp.Key), Rules: serviceExprs(f, sp, masqMark)})
	}
	return out, true
}

// serviceExprs are the rules renderPort writes in a service chain of a
// port without affinity, as nft compiles them (nft --debug=netlink).
func serviceExprs(f family, p *model.ServicePort, masqMark uint32) [][]expr.Any {
	var first []expr.Any
	if masqMark != 0 {
		// meta mark set meta mark | mark
		first = append(first,
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(^masqMark), Xor: native32(masqMark)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
	}
	// counter name "cnt-…"
	first = append(first, &expr.Objref{Type: unix.NFT_OBJECT_COUNTER, Name: counterName(p.Key)})
	rules := [][]expr.Any{first}
	natFamily := uint32(unix.NFPROTO_IPV4)
	if f.nft == knftables.IPv6Family {
		natFamily = unix.NFPROTO_IPV6
	}
	// The model holds only the protocols that have a number.
	proto, _ := p.Key.Protocol.IPNumber()
	n := len(p.Endpoints)
	for i, ep := range p.Endpoints {
		var r []expr.Any
		if n-i > 1 {
			// numgen random mod n-i 0
			r = append(r, &expr.Numgen{Register: 1, Modulus: uint32(n - i), Type: unix.NFT_NG_RANDOM},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native32(0)})
		}
		// meta l4proto <proto> dnat to <addr>:<port>
		addr := ep.Addr.Addr()
		if f.nft == knftables.IPv4Family {
			addr = addr.Unmap()
		}
		r = append(r,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Immediate{Register: 1, Data: addr.AsSlice()},
			&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, ep.Addr.Port())},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFamily, RegAddrMin: 1, RegProtoMin: 2, Specified: true})
		rules = append(rules, r)
	}
	return rules
}

// native32 is a 32-bit value as the kernel's registers hold it: the meta
// mark and numgen's result are in host order.
func native32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// rewriteChunk is how many service chains one netlink batch of a full
// sync writes: the batch is held in memory until sent, and the kernel
// checks the whole table once per batch.
const rewriteChunk = 500

// runSplit writes a full sync in three steps, each one the kernel applies
// whole, so that nft parses no service chain's rules (at 10,000 services
// x 10 endpoints they are 110,000 rules and most of nft's time and
// memory): an nft transaction creates the service chains and counters
// that are missing; netlink batches give every service chain its rules;
// an nft transaction writes everything else, including the map elements
// that lead to those chains, and deletes what goes. No step leaves a
// packet somewhere the state before or after would not send it: a new
// chain is empty only while nothing leads to it, and a kept one has its
// old rules until its batch replaces them.
func (p *Proxier) runSplit(ctx context.Context, pl *plan) error {
	pre, rest := pl.splitRewrites()
	if err := p.runNFT(ctx, pre); err != nil {
		return err
	}
	size := rewriteChunk
	for i := 0; i < len(pl.rewrites); {
		chunk := pl.rewrites[i:min(i+size, len(pl.rewrites))]
		chains := make([]ChainRules, len(chunk))
		for j, sp := range chunk {
			chains[j] = ChainRules{Chain: serviceChain(sp.Key), Rules: serviceExprs(p.fam, sp, p.opt.MasqueradeMark)}
		}
		err := p.opt.Rules.ReplaceRules(ctx, p.fam.nft, chains)
		if errors.Is(err, unix.EMSGSIZE) && size > 1 {
			// Not sent: the socket's buffer is smaller than asked.
			size /= 2
			continue
		}
		i += len(chunk)
		if err != nil {
			// Some chains may hold their new rules already, and
			// the listing this sync began with does not have the
			// chains the first step made: the next full sync lists
			// anew and writes it all with nft.
			p.fullByNFT = true
			p.log.Warn("netlink batch of a full sync failed; full syncs go through nft alone from now on", "ipv6", p.opt.IPv6, "err", err)
			return &TransactionError{Family: p.fam.nft, Err: err}
		}
	}
	return p.runNFT(ctx, rest)
}

// splitRewrites parts a full sync's plan: pre creates the rewritten
// service chains and their counters; rest is everything else, without
// their rules.
func (pl *plan) splitRewrites() (pre, rest *plan) {
	ours := map[string]bool{}
	for _, sp := range pl.rewrites {
		ours["chain/"+serviceChain(sp.Key)] = true
		ours["counter/"+counterName(sp.Key)] = true
	}
	pre, rest = newPlan(), newPlan()
	*rest = *pl
	rest.create, rest.write = nil, nil
	for _, o := range pl.create {
		switch o := o.(type) {
		case *knftables.Chain:
			if ours["chain/"+o.Name] {
				pre.create = append(pre.create, o)
				continue
			}
		case *knftables.Counter:
			if ours["counter/"+o.Name] {
				pre.create = append(pre.create, o)
				continue
			}
		}
		rest.create = append(rest.create, o)
	}
	for _, o := range pl.write {
		if f, ok := o.(flush); ok {
			if ch, ok := f.Object.(*knftables.Chain); ok && ours["chain/"+ch.Name] {
				continue
			}
		}
		if r, ok := o.(*knftables.Rule); ok && ours["chain/"+r.Chain] {
			continue
		}
		rest.write = append(rest.write, o)
	}
	return pre, rest
}
