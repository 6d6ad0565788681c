package status

import (
	"fmt"
	"strings"
)

// maxReverseShown is how many reverse zones of a cluster the text lists:
// a /12 service range is sixteen of them.
const maxReverseShown = 2

// dnsLines are the text of the DNS server's state, already escaped by
// forTerminal with the rest of the report.
func dnsLines(d *DNS) []string {
	head := fmt.Sprintf("DNS: answering on %s, %d service names", strings.Join(d.Listen, ", "), d.Names)
	out := []string{head}
	for _, z := range d.Zones {
		line := fmt.Sprintf("  %s: %s", z.Cluster, strings.Join(z.Zones, ", "))
		if n := len(z.Reverse); n > 0 {
			shown := z.Reverse[:min(n, maxReverseShown)]
			line += "; reverse " + strings.Join(shown, ", ")
			if more := n - len(shown); more > 0 {
				line += fmt.Sprintf(" and %d more", more)
			}
		}
		out = append(out, line)
	}
	var counts []string
	for _, q := range d.Queries {
		counts = append(counts, fmt.Sprintf("%s %d", q.Rcode, q.Count))
	}
	if len(counts) == 0 {
		counts = []string{"none yet"}
	}
	out = append(out, "  queries answered: "+strings.Join(counts, ", "))
	if len(d.Dropped) > 0 {
		var dropped []string
		for _, q := range d.Dropped {
			dropped = append(dropped, fmt.Sprintf("%s %d", q.Reason, q.Count))
		}
		out = append(out, "  queries dropped: "+strings.Join(dropped, ", "))
	}
	if d.Skipped > 0 {
		line := fmt.Sprintf("  left out, not valid DNS names: %d service ports (%s", d.Skipped, strings.Join(d.SkippedFirst, ", "))
		if d.Skipped > len(d.SkippedFirst) {
			line += ", ..."
		}
		out = append(out, line+")")
	}
	if r := d.Resolved; r != nil {
		if r.Registered {
			out = append(out, fmt.Sprintf("  systemd-resolved: registered on link %s, server %s, routing domains %s",
				r.Link, strings.Join(r.Servers, " "), "~"+strings.Join(r.Domains, " ~")))
		} else {
			out = append(out, "  systemd-resolved: not registered: "+r.Problem)
		}
	}
	return out
}
