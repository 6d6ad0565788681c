package config

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// Load reads and validates the config file at path. A file that cannot be
// read gives a plain error; a file with problems gives Problems, sorted by
// line.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// Parse validates data as the contents of filename. filename names the file
// in problems, and relative kubeconfig paths are resolved against its
// directory. Kubeconfig files are read now, so that a wrong path or context
// fails check-config rather than the daemon's first connection.
func Parse(data []byte, filename string) (*Config, error) {
	text := string(data)
	dir := filepath.Dir(filename)
	if abs, err := filepath.Abs(dir); err == nil { // so that Kubeconfig is absolute
		dir = abs
	}
	c := &checker{file: filename, dir: dir, loc: newLocator(text)}

	var raw rawConfig
	if _, err := toml.Decode(text, &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			c.add(pe.Position.Line, "", "syntax error: %s", pe.Message)
		} else {
			// With every scalar decoded into any, only the shape of
			// clusters can mismatch: typically [clusters] for [[clusters]].
			c.add(c.loc.line(-1, "clusters"), "", "clusters: must be tables written [[clusters]]")
		}
		return nil, c.err()
	}
	var tree map[string]any
	if _, err := toml.Decode(text, &tree); err != nil {
		return nil, err // cannot happen: the same text decoded above
	}
	c.unknownKeys(tree)
	cfg := c.config(&raw)
	if err := c.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// rawConfig is the file as written. Values are kept as any so that a value
// of the wrong type is one problem among the others, not a decode error that
// hides the rest of the file.
type rawConfig struct {
	Mode           any          `toml:"mode"`
	MinSyncPeriod  any          `toml:"min_sync_period"`
	SyncPeriod     any          `toml:"sync_period"`
	FullSyncPeriod any          `toml:"full_sync_period"`
	Masquerade     any          `toml:"masquerade"`
	MasqueradeMark any          `toml:"masquerade_mark"`
	IPVSScheduler  any          `toml:"ipvs_scheduler"`
	EBPFCgroup     any          `toml:"ebpf_cgroup"`
	EBPFPinDir     any          `toml:"ebpf_pin_dir"`
	MetricsAddress any          `toml:"metrics_address"`
	ServiceMetrics any          `toml:"service_metrics"`
	Profiling      any          `toml:"profiling"`
	HealthzAddress any          `toml:"healthz_address"`
	LogLevel       any          `toml:"log_level"`
	LogFormat      any          `toml:"log_format"`
	StatusSocket   any          `toml:"status_socket"`
	RoutedClients  any          `toml:"routed_clients"`
	StateDir       any          `toml:"state_dir"`
	StaleStateAge  any          `toml:"stale_state_max_age"`
	DNS            any          `toml:"dns"`
	Clusters       []rawCluster `toml:"clusters"`
}

type rawCluster struct {
	Name              any `toml:"name"`
	Kubeconfig        any `toml:"kubeconfig"`
	Context           any `toml:"context"`
	ServiceCIDRs      any `toml:"service_cidrs"`
	LocalServiceCIDR  any `toml:"local_service_cidr"`
	Namespaces        any `toml:"namespaces"`
	ExcludeNamespaces any `toml:"exclude_namespaces"`
	ServiceSelector   any `toml:"service_selector"`
	Reach             any `toml:"reach"`
	NodeAddressTypes  any `toml:"node_address_types"`
	ServeNodePorts    any `toml:"serve_node_ports"`
	AllowExternalIPs  any `toml:"allow_external_ips"`
	EndpointCIDRs     any `toml:"endpoint_cidrs"`
	PodCIDRs          any `toml:"pod_cidrs"`
	DNSZone           any `toml:"dns_zone"`
	DNSDefault        any `toml:"dns_default"`
	// The limits (limits.go).
	MaxServices         any `toml:"max_services"`
	MaxEndpointsPerPort any `toml:"max_endpoints_per_port"`
	MaxEndpoints        any `toml:"max_endpoints"`
}

var (
	topKeys = []string{"mode", "min_sync_period", "sync_period", "full_sync_period", "masquerade", "masquerade_mark", "ipvs_scheduler",
		"ebpf_cgroup", "ebpf_pin_dir",
		"metrics_address", "service_metrics", "profiling", "healthz_address", "log_level", "log_format", "status_socket", "routed_clients",
		"state_dir", "stale_state_max_age", "dns", "clusters"}
	clusterKeys = []string{"name", "kubeconfig", "context", "service_cidrs",
		"namespaces", "exclude_namespaces", "service_selector",
		"local_service_cidr", "allow_external_ips", "endpoint_cidrs", "serve_node_ports",
		"reach", "node_address_types",
		"max_services", "max_endpoints_per_port", "max_endpoints", "pod_cidrs", "dns_zone", "dns_default"}

	nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
)

const maxNameLen = 40

// checker turns a rawConfig into a Config, collecting every problem.
type checker struct {
	file     string
	dir      string
	loc      *locator
	problems []*Problem
	cidrs    []seenCIDR // of the clusters checked so far, to find overlaps
	names    map[string]int
}

// seenCIDR is a range where a cluster's ClusterIPs appear on this host: a
// service CIDR, or the local_service_cidr that replaces one.
type seenCIDR struct {
	cluster  int
	who      string
	key      string // e.g. "service_cidrs[1]" or "local_service_cidr"
	prefix   netip.Prefix
	line     int
	replaced bool // a service CIDR mapped away by local_service_cidr
}

// unknownKeys reports keys that mean nothing here. It walks the decoded tree
// rather than MetaData.Undecoded because the decoder matches struct fields
// case-insensitively: "Mode" would otherwise pass unnoticed.
func (c *checker) unknownKeys(tree map[string]any) {
	for _, k := range slices.Sorted(maps.Keys(tree)) {
		if !slices.Contains(topKeys, k) {
			c.unknown(c.loc.line(-1, k), k, k, topKeys, clusterKeys, "cluster keys go in a [[clusters]] table")
		}
	}
	for i, cl := range tables(tree["clusters"]) {
		for _, k := range slices.Sorted(maps.Keys(cl)) {
			if !slices.Contains(clusterKeys, k) {
				c.unknown(c.loc.line(i, "clusters."+k), fmt.Sprintf("clusters[%d].%s", i, k), k,
					clusterKeys, topKeys, "top-level keys go before the first [[clusters]]")
			}
		}
	}
}

// tables returns an array of tables, which the decoder gives as
// []map[string]any for [[x]] and as []any for x = [{...}].
func tables(v any) []map[string]any {
	switch v := v.(type) {
	case []map[string]any:
		return v
	case []any:
		var out []map[string]any
		for _, e := range v {
			m, _ := e.(map[string]any)
			out = append(out, m)
		}
		return out
	}
	return nil
}

// Defaults is the configuration of a file that sets no top-level key.
func Defaults() *Config {
	return &Config{
		Mode:             DefaultMode,
		MinSyncPeriod:    DefaultMinSyncPeriod,
		SyncPeriod:       DefaultSyncPeriod,
		FullSyncPeriod:   DefaultFullSyncPeriod,
		Masquerade:       true,
		MasqueradeMark:   DefaultMasqueradeMark,
		IPVSScheduler:    DefaultIPVSScheduler,
		EBPFPinDir:       DefaultEBPFPinDir,
		MetricsAddress:   DefaultMetricsAddress,
		HealthzAddress:   DefaultHealthzAddress,
		LogLevel:         DefaultLogLevel,
		LogFormat:        DefaultLogFormat,
		StatusSocket:     DefaultStatusSocket,
		StateDir:         DefaultStateDir,
		StaleStateMaxAge: DefaultStaleStateMaxAge,
	}
}

func (c *checker) config(raw *rawConfig) *Config {
	cfg := Defaults()

	c.mode(cfg, raw.Mode) // modes.go

	before := len(c.problems)
	cfg.MinSyncPeriod = c.duration("min_sync_period", raw.MinSyncPeriod, cfg.MinSyncPeriod)
	cfg.SyncPeriod = c.duration("sync_period", raw.SyncPeriod, cfg.SyncPeriod)
	cfg.FullSyncPeriod = c.duration("full_sync_period", raw.FullSyncPeriod, cfg.FullSyncPeriod)
	// Comparing a default that stood in for a bad value would only confuse.
	if len(c.problems) == before && cfg.MinSyncPeriod > cfg.SyncPeriod {
		at := c.loc.line(-1, "min_sync_period")
		if at == 0 {
			at = c.loc.line(-1, "sync_period")
		}
		c.add(at, "", "min_sync_period %v is longer than sync_period %v", cfg.MinSyncPeriod, cfg.SyncPeriod)
	}

	if raw.Masquerade != nil {
		if b, ok := raw.Masquerade.(bool); ok {
			cfg.Masquerade = b
		} else {
			c.typeErr(c.loc.line(-1, "masquerade"), "", "masquerade", "true or false", raw.Masquerade)
		}
	}
	cfg.MasqueradeMark = c.mark(raw.MasqueradeMark, cfg.MasqueradeMark)
	if raw.ServiceMetrics != nil {
		if b, ok := raw.ServiceMetrics.(bool); ok {
			cfg.ServiceMetrics = b
		} else {
			c.typeErr(c.loc.line(-1, "service_metrics"), "", "service_metrics", "true or false", raw.ServiceMetrics)
		}
	}
	if raw.Profiling != nil {
		if b, ok := raw.Profiling.(bool); ok {
			cfg.Profiling = b
		} else {
			c.typeErr(c.loc.line(-1, "profiling"), "", "profiling", "true or false", raw.Profiling)
		}
	}

	if raw.IPVSScheduler != nil {
		line := c.loc.line(-1, "ipvs_scheduler")
		if s, ok := c.str(line, "", "ipvs_scheduler", raw.IPVSScheduler, "a string"); ok {
			if slices.Contains(IPVSSchedulers, s) {
				cfg.IPVSScheduler = s
			} else {
				c.add(line, "", "ipvs_scheduler %q: must be one of %s", s, strings.Join(IPVSSchedulers, ", "))
			}
		}
	}

	c.ebpf(cfg, raw) // topkeys.go
	c.serving(cfg, raw)
	c.dns(cfg, raw.DNS) // dnskeys.go, after serving: it compares their ports
	c.logging(cfg, raw)
	c.statusSocket(cfg, raw)
	c.state(cfg, raw) // topkeys.go
	cfg.RoutedClients = c.routedClients(raw.RoutedClients)

	if len(raw.Clusters) == 0 {
		c.add(c.loc.line(-1, "clusters"), "", "no clusters: add a [[clusters]] table")
	}
	c.names = map[string]int{}
	for i, rc := range raw.Clusters {
		cfg.Clusters = append(cfg.Clusters, c.cluster(i, rc))
	}
	c.overlaps()
	c.zoneOverlaps(cfg)
	c.ranges(cfg, raw)
	c.podCIDROverlaps(cfg)
	c.nodePortsNeedMasquerade(cfg)
	c.capabilities(cfg, raw) // modes.go
	c.bounds(cfg)            // bounds.go
	return cfg
}

func (c *checker) cluster(i int, raw rawCluster) Cluster {
	line := func(key string) int { return c.loc.line(i, "clusters."+key) }
	// Until the name is known good, the cluster is named by its position.
	who := fmt.Sprintf("clusters[%d]", i)
	var cl Cluster

	if raw.Name == nil {
		c.add(line("name"), who, "name is required")
	} else if name, ok := c.str(line("name"), who, "name", raw.Name, "a string"); ok {
		switch first, dup := c.names[name]; {
		case len(name) > maxNameLen:
			c.add(line("name"), who, "name %q: longer than %d characters", name, maxNameLen)
		case !nameRE.MatchString(name):
			c.add(line("name"), who, "name %q: must be lowercase letters, digits and '-', starting and ending with a letter or digit", name)
		case dup:
			c.add(line("name"), who, "name %q: already used by clusters[%d] (line %d)", name, first, c.loc.line(first, "clusters.name"))
		default:
			c.names[name] = i
			cl.Name = name
			who = fmt.Sprintf("cluster %q", name)
		}
	}

	if raw.Kubeconfig == nil {
		c.add(line("kubeconfig"), who, "kubeconfig is required")
	} else if path, ok := c.str(line("kubeconfig"), who, "kubeconfig", raw.Kubeconfig, "a string"); ok {
		if path == "" {
			c.add(line("kubeconfig"), who, "kubeconfig is empty")
		} else {
			if !filepath.IsAbs(path) {
				path = filepath.Join(c.dir, path)
			}
			cl.Kubeconfig = path
		}
	}
	c.dnsZone(&cl, who, line, raw) // dnskeys.go
	cl.Context, _ = c.str(line("context"), who, "context", raw.Context, "a string")
	if cl.Kubeconfig != "" {
		c.kubeconfig(&cl, who, line)
	}

	cl.ServiceCIDRs = c.serviceCIDRs(i, who, line("service_cidrs"), raw.ServiceCIDRs)
	c.localServiceCIDR(i, &cl, who, line("local_service_cidr"), raw.LocalServiceCIDR)
	c.selection(&cl, who, line, raw)
	c.reach(&cl, who, line, raw)
	cl.AllowExternalIPs = c.cidrList(line("allow_external_ips"), who, "allow_external_ips", raw.AllowExternalIPs)
	cl.EndpointCIDRs = c.cidrList(line("endpoint_cidrs"), who, "endpoint_cidrs", raw.EndpointCIDRs)
	c.limits(&cl, who, line, raw) // limits.go
	return cl
}
