package status

import "time"

// DNS is the state of the daemon's DNS server ([dns]).
type DNS struct {
	// Listen are the addresses it answers on, UDP and TCP each.
	Listen []string `json:"listen"`
	// Names is how many service names it answers now.
	Names int        `json:"names"`
	Zones []DNSZones `json:"zones"`
	// Queries are the queries answered since the start, by rcode, in
	// the order of names.Rcodes; an rcode never given is left out.
	Queries []RcodeCount `json:"queries"`
	// Dropped are the queries dropped unanswered since the start, by
	// reason, in the order of names.DropReasons; a reason never met is
	// left out.
	Dropped []DropCount `json:"dropped,omitempty"`
	// Skipped is how many service ports have a name that cannot be a
	// DNS name, left out; SkippedFirst are the first few, as
	// cluster/namespace/name:port.
	Skipped      int      `json:"skipped"`
	SkippedFirst []string `json:"skipped_first,omitempty"`
	// Resolved is the registration with systemd-resolved; nil with
	// dns.resolved = "off".
	Resolved *Resolved `json:"resolved,omitempty"`
}

// Resolved is whether systemd-resolved sends the zones to the server.
type Resolved struct {
	// Registered: resolved held the registration at the last check.
	Registered bool `json:"registered"`
	// Link is the link it is on; Servers and Domains what it holds.
	Link    string   `json:"link"`
	Servers []string `json:"servers,omitempty"`
	Domains []string `json:"domains,omitempty"`
	// Problem says why it is not registered.
	Problem string `json:"problem,omitempty"`
	// CheckedAt is the last check.
	CheckedAt time.Time `json:"checked_at"`
}

// DNSZones are the zones one cluster answers.
type DNSZones struct {
	Cluster string   `json:"cluster"`
	Zones   []string `json:"zones"`
	// Reverse are the reverse zones of its service ranges, whose PTR
	// queries it answers.
	Reverse []string `json:"reverse_zones"`
}

// RcodeCount is how many queries got one rcode.
type RcodeCount struct {
	Rcode string `json:"rcode"`
	Count uint64 `json:"count"`
}

// DropCount is how many queries were dropped for one reason.
type DropCount struct {
	Reason string `json:"reason"`
	Count  uint64 `json:"count"`
}
