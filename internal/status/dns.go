package status

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
