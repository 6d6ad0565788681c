// Package laststate keeps each cluster's last known state on disk: the
// objects its service ports were built from, as the apiserver last gave
// them, so that after a restart or a reboot while the apiserver cannot be
// reached the daemon can serve them until the cluster syncs (issue 13,
// guarantee 2). Rules live in the kernel and a reboot wipes them; this file
// is what survives.
//
// A file is used whole or not at all: one that is damaged, truncated, of
// another format, of another cluster or configuration, or too old is
// ignored with the reason. What is used is handed to the model, which
// checks it as it checks live objects.
package laststate

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
)

// FormatVersion is the version of the file layout this build writes and
// reads. A build that changes the layout, or what the objects mean to the
// model, gives it a new number: a file of another version is not read.
const FormatVersion = 1

// MaxBytes bounds a file: whoever writes a cluster's objects decides their
// size, and this disk is the host's. The cluster's limits bound the
// objects kept (model.Store.Export); this bounds their bytes. At the
// default limits (20,000 services, 200,000 endpoints) a state takes about
// half of it.
const MaxBytes = 64 << 20

// maxBytes is MaxBytes; tests lower it.
var maxBytes = MaxBytes

// envelopeSlack is what the envelope adds to the payload.
const envelopeSlack = 256

// Identity is what of a cluster's configuration decides which objects its
// informers deliver: a file written under another one holds another
// selection, or another cluster, and is not used. The rest of the
// configuration (ranges of this host, endpoint_cidrs, limits) is applied
// when the objects are built, as it is to live ones.
type Identity struct {
	Cluster           string   `json:"cluster"`
	Server            string   `json:"server"`
	Context           string   `json:"context"`
	ServiceCIDRs      []string `json:"service_cidrs"`
	Namespaces        []string `json:"namespaces,omitempty"`
	ExcludeNamespaces []string `json:"exclude_namespaces,omitempty"`
	ServiceSelector   string   `json:"service_selector,omitempty"`
	Reach             string   `json:"reach"`
}

// IdentityOf is c's identity.
func IdentityOf(c config.Cluster) Identity {
	id := Identity{
		Cluster: c.Name, Server: c.Server, Context: c.ContextName,
		Namespaces: c.Namespaces, ExcludeNamespaces: c.ExcludeNamespaces,
		ServiceSelector: c.ServiceSelector, Reach: string(c.Reach),
	}
	for _, p := range c.ServiceCIDRs {
		id.ServiceCIDRs = append(id.ServiceCIDRs, p.String())
	}
	return id
}

// differs names the first field in which a file's identity differs from
// the configured one, "" when none does.
func (id Identity) differs(want Identity) string {
	field := func(name string, got, want any) string {
		return fmt.Sprintf("%s %v, configured now %v", name, got, want)
	}
	switch {
	case id.Server != want.Server:
		return field("server", id.Server, want.Server)
	case id.Context != want.Context:
		return field("context", id.Context, want.Context)
	case !slices.Equal(id.ServiceCIDRs, want.ServiceCIDRs):
		return field("service_cidrs", id.ServiceCIDRs, want.ServiceCIDRs)
	case !slices.Equal(id.Namespaces, want.Namespaces):
		return field("namespaces", id.Namespaces, want.Namespaces)
	case !slices.Equal(id.ExcludeNamespaces, want.ExcludeNamespaces):
		return field("exclude_namespaces", id.ExcludeNamespaces, want.ExcludeNamespaces)
	case id.ServiceSelector != want.ServiceSelector:
		return field("service_selector", fmt.Sprintf("%q", id.ServiceSelector), fmt.Sprintf("%q", want.ServiceSelector))
	case id.Reach != want.Reach:
		return field("reach", id.Reach, want.Reach)
	}
	return ""
}

// State is one cluster's last known state.
type State struct {
	Identity Identity
	// SavedAt is when the objects were last known to be the cluster's:
	// when they were saved.
	SavedAt time.Time
	Objects model.Objects
}

// envelope is the file: the format first, so that any build can tell a
// file of another version, and the checksum of the payload's bytes.
type envelope struct {
	Format  int             `json:"format"`
	SHA256  string          `json:"sha256"`
	Payload json.RawMessage `json:"payload"`
}

type payload struct {
	Identity       Identity                     `json:"identity"`
	SavedAt        time.Time                    `json:"saved_at"`
	Services       []*corev1.Service            `json:"services"`
	EndpointSlices []*discoveryv1.EndpointSlice `json:"endpoint_slices"`
	NodesKnown     bool                         `json:"nodes_known,omitempty"`
	Nodes          []node                       `json:"nodes,omitempty"`
}

// node is a model.NodeInfo as the file has it: named fields that a change
// of the Go type does not rename.
type node struct {
	Name          string         `json:"name"`
	Ready         bool           `json:"ready,omitempty"`
	Unschedulable bool           `json:"unschedulable,omitempty"`
	Addresses     []nodeAddr     `json:"addresses,omitempty"`
	PodCIDRs      []netip.Prefix `json:"pod_cidrs,omitempty"`
}

type nodeAddr struct {
	Type string     `json:"type"`
	Addr netip.Addr `json:"addr"`
}

// TooBigError is a state that would take more than MaxBytes.
type TooBigError struct {
	Cluster string
	Limit   int
}

func (e *TooBigError) Error() string {
	return fmt.Sprintf("cluster %q: the state takes more than %d MiB, the most a state file may take: not saved", e.Cluster, e.Limit>>20)
}

// Encode makes the file of st, its objects trimmed to what the model
// reads.
func Encode(st State) ([]byte, error) {
	var buf bytes.Buffer
	sumAt, sum, err := encodeTo(&buf, st)
	if err != nil {
		return nil, err
	}
	out := buf.Bytes()
	copy(out[sumAt:], sum)
	return out, nil
}

// sumPlaceholder stands in the file for the payload's checksum until the
// payload has been written and the checksum is known.
var sumPlaceholder = strings.Repeat("0", sha256.Size*2)

// encodeTo writes the file of st to w, object by object, so that a state
// of 10,000 services is never held whole a second time (as one buffer
// it was the daemon's highest use of memory: the file, the buffer's
// growth and the trimmed copies at once). The checksum comes before the
// payload in the file: w gets a placeholder at offset sumAt, and the
// caller writes sum (hex) over it.
func encodeTo(w io.Writer, st State) (sumAt int64, sum []byte, err error) {
	head := fmt.Sprintf(`{"format":%d,"sha256":"`, FormatVersion)
	if _, err := io.WriteString(w, head+sumPlaceholder+`","payload":`); err != nil {
		return 0, nil, err
	}
	pw := &payloadWriter{w: w, hash: sha256.New(), limit: maxBytes}
	enc := json.NewEncoder(pw)
	value := func(v any) {
		if pw.err == nil {
			// Encode's error is the writer's or a value's that cannot be
			// JSON, which these types always can.
			if err := enc.Encode(v); err != nil && pw.err == nil {
				pw.err = err
			}
		}
	}
	pw.str(`{"identity":`)
	value(st.Identity)
	pw.str(`,"saved_at":`)
	value(st.SavedAt.UTC())
	pw.str(`,"services":[`)
	for i, s := range st.Objects.Services {
		if i > 0 {
			pw.str(",")
		}
		value(trimService(s))
	}
	pw.str(`],"endpoint_slices":[`)
	for i, es := range st.Objects.Slices {
		if i > 0 {
			pw.str(",")
		}
		value(trimSlice(es))
	}
	pw.str("]")
	if st.Objects.NodesKnown {
		pw.str(`,"nodes_known":true`)
	}
	if len(st.Objects.Nodes) > 0 {
		var nodes []node
		for _, n := range st.Objects.Nodes {
			fn := node{Name: n.Name, Ready: n.Ready, Unschedulable: n.Unschedulable, PodCIDRs: n.PodCIDRs}
			for _, a := range n.Addresses {
				fn.Addresses = append(fn.Addresses, nodeAddr{Type: a.Type, Addr: a.Addr})
			}
			nodes = append(nodes, fn)
		}
		pw.str(`,"nodes":`)
		value(nodes)
	}
	pw.str("}")
	if pw.err != nil {
		if errors.Is(pw.err, errFull) {
			return 0, nil, &TooBigError{Cluster: st.Identity.Cluster, Limit: pw.limit}
		}
		return 0, nil, pw.err
	}
	if _, err := io.WriteString(w, "}\n"); err != nil {
		return 0, nil, err
	}
	return int64(len(head)), []byte(hex.EncodeToString(pw.hash.Sum(nil))), nil
}

// payloadWriter passes the payload to w, hashing it, and refuses it past
// limit bytes, so that a state too big to keep is never written whole.
// It keeps its first error and writes nothing after it.
type payloadWriter struct {
	w     io.Writer
	hash  hash.Hash
	n     int
	limit int
	err   error
}

var errFull = errors.New("full")

func (p *payloadWriter) Write(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.n+len(b) > p.limit {
		p.err = errFull
		return 0, p.err
	}
	p.n += len(b)
	p.hash.Write(b)
	if _, err := p.w.Write(b); err != nil {
		p.err = err
		return 0, err
	}
	return len(b), nil
}

func (p *payloadWriter) str(s string) { _, _ = p.Write([]byte(s)) }

// UnusableError is a file that is not used, and why.
type UnusableError struct {
	Path   string
	Reason string
}

func (e *UnusableError) Error() string { return e.Path + ": " + e.Reason }

// futureSlack is how far ahead of this host's clock a file's time may be:
// the clock of the run that wrote it may have been a little ahead.
const futureSlack = time.Minute

// Decode reads a file as want's state, saved at most maxAge before now.
// Any problem is an *UnusableError with Path empty; nothing of a file with
// one is returned.
func Decode(data []byte, want Identity, maxAge time.Duration, now time.Time) (State, error) {
	bad := func(format string, a ...any) (State, error) {
		return State{}, &UnusableError{Reason: fmt.Sprintf(format, a...)}
	}
	if len(data) > maxBytes+envelopeSlack {
		return bad("%d bytes, more than a state file may have", len(data))
	}
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return bad("damaged, truncated, or not a state file: %v", err)
	}
	if env.Format != FormatVersion {
		return bad("format version %d; this version of kube-outpost reads version %d", env.Format, FormatVersion)
	}
	sum := sha256.Sum256(env.Payload)
	if hex.EncodeToString(sum[:]) != env.SHA256 {
		return bad("checksum mismatch: the file is damaged")
	}
	var p payload
	if err := json.Unmarshal(env.Payload, &p); err != nil {
		return bad("payload does not decode: %v", err)
	}
	if p.Identity.Cluster != want.Cluster {
		return bad("the state of cluster %q, not of %q", p.Identity.Cluster, want.Cluster)
	}
	if d := p.Identity.differs(want); d != "" {
		return bad("written for another configuration of the cluster: %s", d)
	}
	switch age := now.Sub(p.SavedAt); {
	case p.SavedAt.IsZero():
		return bad("no time of saving")
	case age < -futureSlack:
		return bad("saved at %s, after this host's clock (%s): its age cannot be told", p.SavedAt.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case age > maxAge:
		return bad("saved at %s, %s ago: older than stale_state_max_age %s", p.SavedAt.Format(time.RFC3339), age.Round(time.Second), maxAge)
	}
	st := State{Identity: p.Identity, SavedAt: p.SavedAt, Objects: model.Objects{
		Services: p.Services, Slices: p.EndpointSlices, NodesKnown: p.NodesKnown,
	}}
	for _, n := range p.Nodes {
		if why := n.invalid(); why != "" {
			return bad("node %q: %s", n.Name, why)
		}
		ni := model.NodeInfo{Name: n.Name, Ready: n.Ready, Unschedulable: n.Unschedulable, PodCIDRs: n.PodCIDRs}
		for _, a := range n.Addresses {
			ni.Addresses = append(ni.Addresses, model.NodeAddr{Type: a.Type, Addr: a.Addr})
		}
		st.Objects.Nodes = append(st.Objects.Nodes, ni)
	}
	return st, nil
}

// invalid says what of a node could not have come from the node watcher,
// which keeps only what it could parse (cluster.nodeInfo): such a file was
// not written by kube-outpost, and none of it is used.
func (n node) invalid() string {
	for _, a := range n.Addresses {
		switch {
		case a.Type != string(corev1.NodeInternalIP) && a.Type != string(corev1.NodeExternalIP):
			return fmt.Sprintf("address type %q", a.Type)
		case !a.Addr.IsValid() || a.Addr.Zone() != "" || a.Addr.Is4In6():
			return fmt.Sprintf("address %q", a.Addr)
		}
	}
	for _, p := range n.PodCIDRs {
		if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() {
			return fmt.Sprintf("pod CIDR %q", p)
		}
	}
	return ""
}
