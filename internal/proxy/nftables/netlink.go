package nftables

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

// NetlinkWriter is the RuleWriter of the real kernel, in the network
// namespace the process was in when it first wrote. It encodes the batch
// itself (the expressions with github.com/google/nftables/expr) rather
// than through that module's Conn, which asks the kernel to echo every
// rule back and to acknowledge every message: at a full sync's 110,000
// rules that doubled the kernel's work and our memory. Here only the last
// message asks for an acknowledgement, which comes once the kernel
// committed the batch; an error in any message aborts the batch and comes
// back instead.
type NetlinkWriter struct {
	mu   sync.Mutex
	conn *netlink.Conn
}

// sendBuffer is the socket's send buffer: a batch goes in one sendmsg,
// which fails with EMSGSIZE beyond it (the default of 208 KiB holds about
// 60 service chains of 10 endpoints). It is kept, as closing a netfilter
// socket costs the kernel an RCU grace period: 13 ms here, against
// 0.15 ms for a batch of one chain.
const sendBuffer = 8 << 20

// replyTimeout bounds the wait for the kernel's answer to a batch, which
// it has written before sendmsg returns.
const replyTimeout = 10 * time.Second

// ReplaceRules implements RuleWriter.
func (w *NetlinkWriter) ReplaceRules(_ context.Context, fam knftables.Family, chains []ChainRules) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	msgs, err := ruleBatch(fam, chains)
	if err != nil {
		return err
	}
	if w.conn == nil {
		c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
		if err != nil {
			return err
		}
		bigSendBuffer(c)
		w.conn = c
	}
	if err := w.send(msgs); err != nil {
		// Unread replies of a failed batch must not be taken for the
		// next one's: that starts on a new socket.
		w.conn.Close()
		w.conn = nil
		return err
	}
	return nil
}

func (w *NetlinkWriter) send(msgs []netlink.Message) error {
	sent, err := w.conn.SendMessages(msgs)
	if err != nil {
		return err
	}
	// The kernel handled the batch within sendmsg: its answer, the
	// acknowledgement or an error, is waiting.
	want := sent[len(sent)-2].Header.Sequence
	// Never wait for ever on a reply that does not come: the sync loop
	// would stop with it.
	if err := w.conn.SetReadDeadline(time.Now().Add(replyTimeout)); err != nil {
		return err
	}
	replies, err := w.conn.Receive()
	if err != nil {
		return err
	}
	for _, m := range replies {
		if m.Header.Type == netlink.Error && m.Header.Sequence == want {
			return nil
		}
	}
	return fmt.Errorf("netlink: no acknowledgement of the batch among %d replies", len(replies))
}

// bigSendBuffer raises the send buffer past net.core.wmem_max as nft
// does (SO_SNDBUFFORCE needs CAP_NET_ADMIN, which the mode has), else to
// that maximum. Not fatal: runSplit halves a batch that does not fit.
func bigSendBuffer(c *netlink.Conn) {
	if rc, err := c.SyscallConn(); err == nil {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBuffer)
		}); err == nil && serr == nil {
			return
		}
	}
	_ = c.SetWriteBuffer(sendBuffer)
}

// ruleBatch is one nfnetlink batch that empties each chain of our table
// and appends its new rules, the last message asking for an
// acknowledgement.
func ruleBatch(fam knftables.Family, chains []ChainRules) ([]netlink.Message, error) {
	family := byte(unix.NFPROTO_IPV4)
	if fam == knftables.IPv6Family {
		family = unix.NFPROTO_IPV6
	}
	table := netlink.Attribute{Type: unix.NFTA_RULE_TABLE, Data: []byte(TableName + "\x00")}
	msgs := []netlink.Message{batchMsg(unix.NFNL_MSG_BATCH_BEGIN)}
	for _, cr := range chains {
		chain := netlink.Attribute{Type: unix.NFTA_RULE_CHAIN, Data: []byte(cr.Chain + "\x00")}
		data, err := netlink.MarshalAttributes([]netlink.Attribute{table, chain})
		if err != nil {
			return nil, err
		}
		// A DELRULE naming no rule deletes every rule of the chain.
		msgs = append(msgs, nftMsg(unix.NFT_MSG_DELRULE, netlink.Request, family, data))
		for _, rule := range cr.Rules {
			list := make([]netlink.Attribute, len(rule))
			for i, e := range rule {
				b, err := expr.Marshal(family, e)
				if err != nil {
					return nil, fmt.Errorf("chain %s: %w", cr.Chain, err)
				}
				list[i] = netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_LIST_ELEM, Data: b}
			}
			exprs, err := netlink.MarshalAttributes(list)
			if err != nil {
				return nil, err
			}
			data, err := netlink.MarshalAttributes([]netlink.Attribute{table, chain,
				{Type: unix.NLA_F_NESTED | unix.NFTA_RULE_EXPRESSIONS, Data: exprs}})
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, nftMsg(unix.NFT_MSG_NEWRULE, netlink.Request|netlink.Create|unix.NLM_F_APPEND, family, data))
		}
	}
	if len(msgs) == 1 {
		return nil, errors.New("netlink: an empty batch")
	}
	msgs[len(msgs)-1].Header.Flags |= netlink.Acknowledge
	return append(msgs, batchMsg(unix.NFNL_MSG_BATCH_END)), nil
}

func nftMsg(typ int, flags netlink.HeaderFlags, family byte, attrs []byte) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | typ), Flags: flags},
		Data:   append([]byte{family, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
}

// batchMsg begins or ends a batch of the nf_tables subsystem.
func batchMsg(typ int) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES},
	}
}

// ObjectLister names the objects of our table without nft: `nft --json
// list table` prints every rule too, and at 10,000 services × 10
// endpoints reading its 110,000 rules made a restarted daemon's first
// sync take 11.5 s and 684 MiB (BenchmarkKernelRestart).
type ObjectLister interface {
	// ListObjects returns our objects as "kind/name" (chain, set, map,
	// counter), none when the table does not exist.
	ListObjects(ctx context.Context, fam knftables.Family) (map[string]bool, error)
}

// ListObjects implements ObjectLister, with dumps of the table's chains,
// sets and stateful objects, which carry no rule and no element.
func (w *NetlinkWriter) ListObjects(_ context.Context, fam knftables.Family) (map[string]bool, error) {
	c, err := gnft.New()
	if err != nil {
		return nil, err
	}
	family := gnft.TableFamilyIPv4
	if fam == knftables.IPv6Family {
		family = gnft.TableFamilyIPv6
	}
	tables, err := c.ListTablesOfFamily(family)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	if !slices.ContainsFunc(tables, func(t *gnft.Table) bool { return t.Name == TableName }) {
		return out, nil
	}
	chains, err := c.ListChainsOfTableFamily(family)
	if err != nil {
		return nil, err
	}
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == TableName {
			out["chain/"+ch.Name] = true
		}
	}
	t := &gnft.Table{Name: TableName, Family: family}
	sets, err := c.GetSets(t)
	if err != nil {
		return nil, err
	}
	for _, s := range sets {
		if s.Anonymous {
			// A rule's own {…}: it goes with the rule.
			continue
		}
		if s.IsMap {
			out["map/"+s.Name] = true
		} else {
			out["set/"+s.Name] = true
		}
	}
	objs, err := c.GetObjects(t)
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if co, ok := o.(*gnft.CounterObj); ok {
			out["counter/"+co.Name] = true
		}
	}
	return out, nil
}
