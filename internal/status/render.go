package status

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// WriteJSON writes v indented, for --output json, with every character a
// terminal would act on escaped (text.go).
func WriteJSON(w io.Writer, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	_, err := w.Write(escapeJSON(b.Bytes()))
	return err
}

// WriteReport writes r for an operator: a table with one line per cluster,
// then what needs attention per cluster.
func WriteReport(w io.Writer, r Report) error {
	return renderer{now: time.Now(), loc: time.Local}.report(w, r)
}

// WriteExplanation writes ex for an operator: per service port, the
// endpoints the model wants next to what the kernel does, what was left
// out and why, the rules, and every difference.
func WriteExplanation(w io.Writer, ex Explanation) error {
	return renderer{now: time.Now(), loc: time.Local}.explanation(w, ex)
}

// renderer holds the clock and zone, which tests fix.
type renderer struct {
	now time.Time
	loc *time.Location
}

func (rd renderer) report(w io.Writer, r Report) error {
	r = forTerminal(r)
	var b bytes.Buffer
	fmt.Fprintf(&b, "kube-outpost %s, %s mode, running since %s (%s)\n", r.Version, r.Mode, rd.when(r.StartedAt), human(rd.now.Sub(r.StartedAt)))
	if r.ModeChoice != "" {
		fmt.Fprintf(&b, "%s\n", r.ModeChoice)
	}
	b.WriteString(rd.syncLine(r))
	for _, w := range r.Warnings {
		fmt.Fprintf(&b, "WARNING: %s\n", w)
	}
	if dp := r.Datapath; dp != nil {
		datapathLines(&b, *dp)
	}

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nCLUSTER\tAPISERVER\tCONNECTION\tSYNCED\tSERVICES\tPORTS\tENDPOINTS\tNO ENDPOINTS\tREFUSED")
	for _, c := range r.Clusters {
		synced := "yes"
		switch {
		case !c.Synced && !c.LastKnownStateFrom.IsZero():
			synced = "STALE"
		case !c.Synced:
			synced = "NO"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", c.Name, c.Server, reachWord(c), synced,
			c.Services, c.ServicePorts, c.Endpoints, c.PortsWithoutEndpoints, len(c.Refused))
	}
	tw.Flush()

	for _, c := range r.Clusters {
		lines := rd.clusterDetails(c)
		if len(lines) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n%s:\n", c.Name)
		for _, l := range lines {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	if r.DNS != nil {
		b.WriteByte('\n')
		for _, l := range dnsLines(r.DNS) {
			fmt.Fprintf(&b, "%s\n", l)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// datapathLines lists the programs on one line (all go on the same
// cgroup) and the maps with their fill: a full map is the one thing here
// that makes syncs fail.
func datapathLines(b *bytes.Buffer, dp proxy.Datapath) {
	if len(dp.Programs) == 0 {
		b.WriteString("programs: none attached\n")
	} else {
		var hooks []string
		for _, p := range dp.Programs {
			hooks = append(hooks, fmt.Sprintf("%s (id %d)", p.Hook, p.ID))
		}
		fmt.Fprintf(b, "programs on %s: %s\n", dp.Programs[0].Target, strings.Join(hooks, ", "))
	}
	if len(dp.Maps) == 0 {
		return
	}
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MAP\tENTRIES\tCAPACITY\tFILL")
	for _, m := range dp.Maps {
		fill := "-"
		if m.Capacity > 0 {
			fill = fmt.Sprintf("%.1f%%", 100*float64(m.Entries)/float64(m.Capacity))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", m.Name, m.Entries, m.Capacity, fill)
	}
	tw.Flush()
}

func (rd renderer) syncLine(r Report) string {
	s := r.LastSync
	switch {
	case s.At.IsZero():
		return "last sync: none yet\n"
	case s.Error == "":
		return fmt.Sprintf("last sync: ok %s ago, took %s (%s)\n", human(rd.now.Sub(s.At)), human(s.Duration.Std()), fullWord(s.Full))
	}
	line := fmt.Sprintf("last sync: FAILED %s ago after %s (%s): %s\n", human(rd.now.Sub(s.At)), human(s.Duration.Std()), fullWord(s.Full), s.Error)
	if ok := r.LastSuccess; ok.At.IsZero() {
		line += "           no sync has succeeded yet: the rules of an earlier run, if any, are in force\n"
	} else {
		line += fmt.Sprintf("           last successful sync %s ago (%s): its rules stay in force\n", human(rd.now.Sub(ok.At)), rd.when(ok.At))
	}
	return line
}

func fullWord(full bool) string {
	if full {
		return "full"
	}
	return "partial"
}

// reachWord is the apiserver's state in one word, for the table.
func reachWord(c ClusterStatus) string {
	switch {
	case c.Reachable:
		return "ok"
	case c.LastError == "":
		return "connecting"
	}
	return "UNREACHABLE"
}

// clusterDetails are the lines worth reading about a cluster: outages,
// errors, not being synced, refusals.
func (rd renderer) clusterDetails(c ClusterStatus) []string {
	var out []string
	switch {
	case !c.Reachable && c.LastError != "" && !c.UnreachableSince.IsZero():
		since := c.UnreachableSince
		out = append(out, fmt.Sprintf("apiserver unreachable since %s (%s ago): %s", rd.when(since), human(rd.now.Sub(since)), c.LastError))
	case !c.Reachable && c.LastError != "":
		out = append(out, fmt.Sprintf("apiserver unreachable; last error %s ago: %s", human(rd.now.Sub(c.LastErrorAt)), c.LastError))
	case !c.Reachable:
		out = append(out, "apiserver not contacted yet")
	case c.LastError != "" && !c.LastErrorAt.IsZero():
		out = append(out, fmt.Sprintf("apiserver reachable; last error %s ago: %s", human(rd.now.Sub(c.LastErrorAt)), c.LastError))
	}
	switch {
	case !c.Synced && !c.LastKnownStateFrom.IsZero():
		from := c.LastKnownStateFrom
		out = append(out, fmt.Sprintf("serving last known state from %s (%s ago), saved by an earlier run: not synced yet, and its live state replaces it once it is",
			rd.when(from), human(rd.now.Sub(from))))
	case !c.Synced:
		out = append(out, "not synced yet: the rules of an earlier run for this cluster stay in force until it is")
	}
	if c.StateSaveError != "" {
		out = append(out, "last known state not saved: "+c.StateSaveError)
	}
	for _, r := range c.LocalRanges {
		out = append(out, fmt.Sprintf("service range %s reached at local range %s (same offset: dial the local address)", r.ServiceCIDR, r.LocalCIDR))
	}
	if len(c.AllowExternalIPs) > 0 {
		out = append(out, "external IPs captured on this host in "+strings.Join(c.AllowExternalIPs, ", "))
	}
	out = append(out, rd.reachDetails(c)...)
	if c.Connections != nil {
		line := fmt.Sprintf("new connections since the rules were written: %d", *c.Connections)
		var busiest []string
		for _, p := range c.Busiest {
			busiest = append(busiest, fmt.Sprintf("%s %d", p.Port, p.Connections))
		}
		if len(busiest) > 0 {
			line += " (busiest: " + strings.Join(busiest, ", ") + ")"
		}
		out = append(out, line)
	}
	if len(c.Refused) > 0 {
		out = append(out, fmt.Sprintf("refused (%d):", len(c.Refused)))
		var b bytes.Buffer
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, r := range c.Refused[:min(len(c.Refused), maxRefusedShown)] {
			fmt.Fprintf(tw, "  %s/%s\t%s\n", r.Namespace, r.Name, r.Reason)
		}
		tw.Flush()
		out = append(out, strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")...)
		if more := len(c.Refused) - maxRefusedShown; more > 0 {
			out = append(out, fmt.Sprintf("  and %d more (kube-outpost status --output json lists them all)", more))
		}
	}
	return out
}

func (rd renderer) explanation(w io.Writer, ex Explanation) error {
	ex = forTerminal(ex)
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s (%s mode)\n", ex.Query, ex.Mode)
	for _, n := range ex.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	if len(ex.Refused) > 0 {
		b.WriteString("refused:\n")
		for _, r := range ex.Refused {
			fmt.Fprintf(&b, "  %s/%s/%s: %s\n", r.Cluster, r.Namespace, r.Name, r.Reason)
		}
	}
	for _, p := range ex.Ports {
		b.WriteByte('\n')
		rd.port(&b, p)
	}
	_, err := w.Write(b.Bytes())
	return err
}

func (rd renderer) port(b *bytes.Buffer, p PortExplanation) {
	name := p.Key
	if !p.InModel {
		name = "(not in the model) cluster " + p.Cluster
	}
	fmt.Fprintf(b, "%s  %s\n", name, p.Target)
	if p.ClusterIP != "" {
		fmt.Fprintf(b, "  ClusterIP %s in the cluster; dial %s on this host\n", p.ClusterIP, p.Target)
	}
	if len(p.ExternalIPs) > 0 {
		fmt.Fprintf(b, "  external IPs on this host: %s\n", strings.Join(p.ExternalIPs, ", "))
	}
	if p.InModel {
		aff := "none"
		if p.Affinity > 0 {
			aff = "ClientIP, " + human(p.Affinity.Std())
		}
		fmt.Fprintf(b, "  session affinity: %s\n", aff)
		switch r := p.NoEndpointsReason; r {
		case "":
		case "no endpoints":
			b.WriteString("  endpoints: none, so connections are refused\n")
		default:
			fmt.Fprintf(b, "  endpoints: none (%s), so connections are refused\n", r)
		}
	}
	switch {
	case p.ClusterSynced:
	case !p.ClusterLastKnownStateFrom.IsZero():
		fmt.Fprintf(b, "  cluster not synced: programmed from its last known state of %s\n", rd.when(p.ClusterLastKnownStateFrom))
	default:
		b.WriteString("  cluster not synced: the kernel may still hold an earlier run's rules\n")
	}

	rd.endpointTable(b, p)

	if len(p.Excluded) > 0 {
		b.WriteString("  left out:\n")
		tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
		for _, e := range p.Excluded {
			why := e.Detail
			if e.Reason == string(model.ExcludedUnsafe) {
				why = "unsafe address: " + why
			}
			fmt.Fprintf(tw, "    %s\t%s\n", e.Addr, why)
		}
		tw.Flush()
	}

	switch k := p.Kernel; {
	case k.Error != "":
		fmt.Fprintf(b, "  kernel: could not be read: %s\n", k.Error)
	case len(k.Lines) == 0:
		b.WriteString("  kernel: nothing for this port\n")
	case len(k.Lines) == 1:
		fmt.Fprintf(b, "  kernel: %s\n", k.Lines[0])
	default:
		b.WriteString("  kernel:\n")
		for _, l := range k.Lines {
			fmt.Fprintf(b, "    %s\n", l)
		}
	}

	for _, n := range p.Notes {
		fmt.Fprintf(b, "  note: %s\n", n)
	}
	switch {
	case p.Kernel.Error != "":
	case len(p.Mismatches) == 0:
		b.WriteString("  model and kernel agree\n")
	default:
		fmt.Fprintf(b, "  MISMATCH between model and kernel (%d):\n", len(p.Mismatches))
		for _, m := range p.Mismatches {
			fmt.Fprintf(b, "    - %s\n", m)
		}
	}
}

// endpointTable lines up each endpoint's share in the model and in the
// kernel, one row per address either of them has, with the kernel's
// connection counts where the mode keeps them.
func (rd renderer) endpointTable(b *bytes.Buffer, p PortExplanation) {
	// A weight of 0 (draining) is still a weight where the mode uses them.
	weighted := slices.ContainsFunc(p.Endpoints, func(e Endpoint) bool { return e.Weight > 0 }) ||
		slices.ContainsFunc(p.Kernel.Endpoints, func(e proxy.KernelEndpoint) bool { return e.Weight > 0 })
	share := func(probability float64, weight int) string {
		if weight > 0 || weighted && probability == 0 {
			return fmt.Sprintf("weight %d", weight)
		}
		return percent(probability)
	}
	type row struct{ model, kernel, conns string }
	rows := map[netip.AddrPort]*row{}
	var order []netip.AddrPort
	at := func(a netip.AddrPort) *row {
		if r := rows[a]; r != nil {
			return r
		}
		r := &row{model: "-", kernel: "-"}
		rows[a] = r
		order = append(order, a)
		return r
	}
	for _, e := range p.Endpoints {
		r := at(e.Addr)
		r.model = share(e.Probability, e.Weight)
		if e.Terminating {
			r.model += " (terminating)"
		}
	}
	conns := false
	if p.Kernel.Error == "" {
		for _, e := range p.Kernel.Endpoints {
			r := at(e.Addr)
			r.kernel, r.conns = share(e.Probability, e.Weight), e.Conns
			conns = conns || e.Conns != ""
		}
	}
	if len(order) == 0 {
		if p.NoEndpointsReason == "" { // else said above
			b.WriteString("  endpoints: none\n")
		}
		return
	}
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	if conns {
		fmt.Fprintln(tw, "  ENDPOINT\tMODEL\tKERNEL\tCONNECTIONS")
	} else {
		fmt.Fprintln(tw, "  ENDPOINT\tMODEL\tKERNEL")
	}
	for _, a := range order {
		r := rows[a]
		if conns {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", a, r.model, r.kernel, r.conns)
		} else {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", a, r.model, r.kernel)
		}
	}
	tw.Flush()
}

func percent(p float64) string { return fmt.Sprintf("%.1f%%", p*100) }

func (rd renderer) when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.In(rd.loc).Format("2006-01-02 15:04:05 MST")
}

// human rounds a duration to what an operator reads: 105ms, 1.2s, 3m12s,
// 2h05m, 3d4h.
func human(d time.Duration) string {
	switch {
	case d < 0:
		return "0s" // clocks of two processes
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	d = d.Round(time.Hour)
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// reachDetails are the lines of a cluster reached through its nodes: its
// node list and, for reach = "routes", its routes.
func (rd renderer) reachDetails(c ClusterStatus) []string {
	if c.Reach == "" || c.Reach == "direct" {
		return nil
	}
	types := strings.Join(c.NodeAddressTypes, ", ")
	if types == "" {
		types = "InternalIP"
	}
	var out []string
	switch n := c.Nodes; {
	case n == nil:
		out = append(out, fmt.Sprintf("reach %s (node addresses: %s)", c.Reach, types))
	case n.Synced:
		out = append(out, fmt.Sprintf("reach %s (node addresses: %s): %d nodes, %d Ready", c.Reach, types, n.Nodes, n.Ready))
	default:
		out = append(out, fmt.Sprintf("reach %s (node addresses: %s): node list NOT received yet", c.Reach, types))
	}
	if n := c.Nodes; n != nil && n.LastError != "" {
		hint := ""
		if strings.Contains(n.LastError, "forbidden") {
			hint = " (needs list and watch on nodes: packaging/rbac-nodes.yaml)"
		}
		out = append(out, fmt.Sprintf("node watch: %d errors, last %s ago: %s%s", n.WatchErrors, human(rd.now.Sub(n.LastErrorAt)), n.LastError, hint))
	}
	if r := c.Routes; r != nil {
		out = append(out, fmt.Sprintf("routes: %d of %d installed (ip route show proto 95)", r.Installed, len(r.Wanted)))
		for _, x := range r.Refused {
			out = append(out, "  route refused: "+x)
		}
		for _, x := range r.Problems {
			out = append(out, "  not routed: "+x)
		}
	}
	return out
}
