package config

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/hashicorp/go-multierror"
	"k8s.io/client-go/tools/clientcmd"
)

// Problem is one thing wrong with a config file.
type Problem struct {
	File string
	Line int // 0 when the problem is with the file as a whole
	Msg  string
}

func (p *Problem) Error() string {
	if p.Line == 0 {
		return fmt.Sprintf("%s: %s", p.File, p.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
}

// Load reads and validates the config file at path. A file that cannot be
// read gives a plain error; a file with problems gives a *multierror.Error
// whose Errors are all *Problem, sorted by line.
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

// Summary describes each cluster on one line, for check-config.
func (c *Config) Summary() []string {
	lines := make([]string, 0, len(c.Clusters))
	for _, cl := range c.Clusters {
		cidrs := make([]string, len(cl.ServiceCIDRs))
		for i, p := range cl.ServiceCIDRs {
			cidrs[i] = p.String()
		}
		line := fmt.Sprintf("cluster %q: kubeconfig %s (context %q, server %s), service_cidrs %s",
			cl.Name, cl.Kubeconfig, cl.ContextName, cl.Server, strings.Join(cidrs, ","))
		if cl.LocalServiceCIDR.IsValid() {
			line += fmt.Sprintf(", reached here at local_service_cidr %s", cl.LocalServiceCIDR)
		}
		lines = append(lines, line)
	}
	return lines
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
	MetricsAddress any          `toml:"metrics_address"`
	HealthzAddress any          `toml:"healthz_address"`
	LogLevel       any          `toml:"log_level"`
	LogFormat      any          `toml:"log_format"`
	StatusSocket   any          `toml:"status_socket"`
	RoutedClients  any          `toml:"routed_clients"`
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
	// The limits (limits.go).
	MaxServices         any `toml:"max_services"`
	MaxEndpointsPerPort any `toml:"max_endpoints_per_port"`
	MaxEndpoints        any `toml:"max_endpoints"`
}

var (
	topKeys = []string{"mode", "min_sync_period", "sync_period", "full_sync_period", "masquerade", "masquerade_mark", "ipvs_scheduler",
		"metrics_address", "healthz_address", "log_level", "log_format", "status_socket", "routed_clients", "clusters"}
	clusterKeys = []string{"name", "kubeconfig", "context", "service_cidrs",
		"namespaces", "exclude_namespaces", "service_selector",
		"local_service_cidr", "allow_external_ips", "endpoint_cidrs", "serve_node_ports",
		"reach", "node_address_types",
		"max_services", "max_endpoints_per_port", "max_endpoints", "pod_cidrs"}

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

// add records a problem; who, when not empty, names the cluster.
func (c *checker) add(line int, who, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if who != "" {
		msg = who + ": " + msg
	}
	c.problems = append(c.problems, &Problem{File: c.file, Line: line, Msg: msg})
}

// err returns the problems one per line, like a compiler, so that an editor
// can jump to each.
func (c *checker) err() error {
	if len(c.problems) == 0 {
		return nil
	}
	slices.SortStableFunc(c.problems, func(a, b *Problem) int { return cmp.Compare(a.Line, b.Line) })
	merr := &multierror.Error{ErrorFormat: func(errs []error) string {
		lines := make([]string, len(errs))
		for i, err := range errs {
			lines[i] = err.Error()
		}
		return strings.Join(lines, "\n")
	}}
	for _, p := range c.problems {
		merr.Errors = append(merr.Errors, p)
	}
	return merr
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

// unknown reports key, suggesting a near miss among the keys valid here, or
// else the right place for a key that is valid elsewhere.
func (c *checker) unknown(line int, path, key string, here, elsewhere []string, hint string) {
	switch s := closest(key, here); {
	case s != "":
		c.add(line, "", "unknown key %q (did you mean %q?)", path, s)
	case slices.Contains(elsewhere, key):
		c.add(line, "", "unknown key %q (%s)", path, hint)
	default:
		c.add(line, "", "unknown key %q", path)
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

func (c *checker) config(raw *rawConfig) *Config {
	cfg := &Config{
		Mode:           DefaultMode,
		MinSyncPeriod:  DefaultMinSyncPeriod,
		SyncPeriod:     DefaultSyncPeriod,
		FullSyncPeriod: DefaultFullSyncPeriod,
		Masquerade:     true,
		MasqueradeMark: DefaultMasqueradeMark,
		IPVSScheduler:  DefaultIPVSScheduler,
		MetricsAddress: DefaultMetricsAddress,
		HealthzAddress: DefaultHealthzAddress,
		LogLevel:       DefaultLogLevel,
		LogFormat:      DefaultLogFormat,
		StatusSocket:   DefaultStatusSocket,
	}

	line := c.loc.line(-1, "mode")
	if s, ok := c.str(line, "", "mode", raw.Mode, "a string"); ok {
		switch m := Mode(s); m {
		case ModeIPTables, ModeIPVS:
			cfg.Mode = m
		case ModeNFTables:
			// Refused here rather than at start, so that check-config
			// catches it before a restart.
			c.add(line, "", "mode %q is not available in this version: use \"iptables\" or \"ipvs\"", s)
		default:
			c.add(line, "", "mode %q: must be iptables or ipvs", s)
		}
	}

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

	c.serving(cfg, raw)
	c.logging(cfg, raw)
	c.statusSocket(cfg, raw)
	cfg.RoutedClients = c.routedClients(raw.RoutedClients)

	if len(raw.Clusters) == 0 {
		c.add(c.loc.line(-1, "clusters"), "", "no clusters: add a [[clusters]] table")
	}
	c.names = map[string]int{}
	for i, rc := range raw.Clusters {
		cfg.Clusters = append(cfg.Clusters, c.cluster(i, rc))
	}
	c.overlaps()
	c.ranges(cfg, raw)
	c.podCIDROverlaps(cfg)
	c.nodePortsNeedMasquerade(cfg)
	return cfg
}

func (c *checker) duration(key string, v any, def time.Duration) time.Duration {
	line := c.loc.line(-1, key)
	s, ok := c.str(line, "", key, v, `a duration string like "30s"`)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		c.add(line, "", `%s %q: not a duration (write it like "30s" or "1m30s")`, key, s)
	case d <= 0:
		c.add(line, "", "%s %q: must be greater than zero", key, s)
	default:
		return d
	}
	return def
}

// serving checks the addresses of the metrics and health endpoints.
func (c *checker) serving(cfg *Config, raw *rawConfig) {
	before := len(c.problems)
	cfg.MetricsAddress = c.address("metrics_address", raw.MetricsAddress, cfg.MetricsAddress)
	cfg.HealthzAddress = c.address("healthz_address", raw.HealthzAddress, cfg.HealthzAddress)
	m, h := cfg.MetricsAddress, cfg.HealthzAddress
	// Equal addresses share one listener; a wildcard and another address
	// on the same port would make the second listen fail at every start.
	if len(c.problems) == before && m.IsValid() && h.IsValid() && m != h && m.Port() == h.Port() &&
		(m.Addr().IsUnspecified() || h.Addr().IsUnspecified()) {
		at := c.loc.line(-1, "healthz_address")
		if at == 0 {
			at = c.loc.line(-1, "metrics_address")
		}
		c.add(at, "", "healthz_address %s and metrics_address %s cannot both listen on port %d: "+
			"give them the same address to serve both on one listener, or different ports", h, m, h.Port())
	}
}

// address parses an IP:port to listen on; "" turns the endpoint off. Host
// names are refused: the daemon must not depend on a resolver to start.
func (c *checker) address(key string, v any, def netip.AddrPort) netip.AddrPort {
	line := c.loc.line(-1, key)
	s, ok := c.str(line, "", key, v, fmt.Sprintf("a string like %q", def))
	if !ok {
		return def
	}
	if s == "" {
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		host, _, splitErr := net.SplitHostPort(s)
		switch {
		case splitErr != nil:
			c.add(line, "", "%s %q: must be an IP address and port, like %q, or \"\" to turn it off", key, s, def)
		case host == "":
			c.add(line, "", "%s %q: give the IP address to listen on, like %q (0.0.0.0 means every IPv4 address)", key, s, def)
		case !isIP(host):
			c.add(line, "", "%s %q: %q is not an IP address (host names are not resolved), like %q", key, s, host, def)
		default:
			c.add(line, "", "%s %q: invalid port: must be 1-65535", key, s)
		}
		return def
	}
	if ap.Port() == 0 {
		c.add(line, "", "%s %q: invalid port: must be 1-65535", key, s)
		return def
	}
	return ap
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

var logLevels = map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}

func (c *checker) logging(cfg *Config, raw *rawConfig) {
	line := c.loc.line(-1, "log_level")
	if s, ok := c.str(line, "", "log_level", raw.LogLevel, "a string"); ok {
		if l, known := logLevels[s]; known {
			cfg.LogLevel = l
		} else {
			c.add(line, "", "log_level %q: must be debug, info, warn or error", s)
		}
	}
	line = c.loc.line(-1, "log_format")
	if s, ok := c.str(line, "", "log_format", raw.LogFormat, "a string"); ok {
		switch f := LogFormat(s); f {
		case LogText, LogJSON:
			cfg.LogFormat = f
		default:
			c.add(line, "", "log_format %q: must be text or json", s)
		}
	}
}

// statusSocket checks the path of the status socket; "" turns it off.
func (c *checker) statusSocket(cfg *Config, raw *rawConfig) {
	line := c.loc.line(-1, "status_socket")
	s, ok := c.str(line, "", "status_socket", raw.StatusSocket, fmt.Sprintf("a path like %q", DefaultStatusSocket))
	switch {
	case !ok:
	case s != "" && !filepath.IsAbs(s):
		c.add(line, "", "status_socket %q: must be an absolute path, like %q, or \"\" to turn it off", s, DefaultStatusSocket)
	case len(s) > maxSocketPath:
		c.add(line, "", "status_socket %q: %d bytes, longer than the %d a unix socket's path may have", s, len(s), maxSocketPath)
	default:
		cfg.StatusSocket = s
	}
}

// maxSocketPath is the room in sockaddr_un.sun_path, without its NUL.
const maxSocketPath = 107

func (c *checker) mark(v any, def uint32) uint32 {
	if v == nil {
		return def
	}
	line := c.loc.line(-1, "masquerade_mark")
	n, ok := v.(int64)
	switch {
	case !ok:
		c.typeErr(line, "", "masquerade_mark", "an integer like 0x00100000", v)
	case n <= 0 || n > math.MaxUint32:
		c.add(line, "", "masquerade_mark %d: must be one bit of a 32-bit mark, like 0x00100000", n)
	case n&(n-1) != 0:
		c.add(line, "", "masquerade_mark %#x: must have exactly one bit set", n)
	case n == 0x4000 || n == 0x8000:
		c.add(line, "", "masquerade_mark %#x: taken by kube-proxy, which uses 0x4000 and 0x8000", n)
	default:
		return uint32(n)
	}
	return def
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

// kubeconfig fills cl.ContextName and cl.Server from cl's kubeconfig.
func (c *checker) kubeconfig(cl *Cluster, who string, line func(string) int) {
	kc, err := clientcmd.LoadFromFile(cl.Kubeconfig)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) { // the message already names the path
			c.add(line("kubeconfig"), who, "kubeconfig %s: %v", cl.Kubeconfig, pe.Err)
		} else {
			c.add(line("kubeconfig"), who, "kubeconfig %s: not a valid kubeconfig: %v", cl.Kubeconfig, err)
		}
		return
	}
	have := strings.Join(slices.Sorted(maps.Keys(kc.Contexts)), ", ")
	if have == "" {
		have = "none"
	}

	name, what, at := cl.Context, "context", line("context")
	if name == "" {
		name, what, at = kc.CurrentContext, "current-context", line("kubeconfig")
		if name == "" {
			c.add(at, who, "kubeconfig %s: no current-context, so set context (have: %s)", cl.Kubeconfig, have)
			return
		}
	}
	ctx := kc.Contexts[name]
	if ctx == nil {
		c.add(at, who, "kubeconfig %s: %s %q not found (have: %s)", cl.Kubeconfig, what, name, have)
		return
	}
	server := kc.Clusters[ctx.Cluster]
	if server == nil || server.Server == "" {
		c.add(at, who, "kubeconfig %s: context %q: cluster %q has no server", cl.Kubeconfig, name, ctx.Cluster)
		return
	}
	cl.ContextName, cl.Server = name, server.Server
}

// serviceCIDRs checks the CIDRs of clusters[i]; overlaps checks them
// against the other clusters' once all are known.
func (c *checker) serviceCIDRs(i int, who string, line int, v any) []netip.Prefix {
	if v == nil {
		c.add(line, who, `service_cidrs is required: the cluster's Service IP ranges, like ["10.96.0.0/12"]`)
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		c.typeErr(line, who, "service_cidrs", "an array of CIDR strings", v)
		return nil
	}
	if len(list) == 0 {
		c.add(line, who, "service_cidrs is empty: no ClusterIP would be reachable")
	}
	var out []netip.Prefix
	for j, e := range list {
		s, ok := e.(string)
		if !ok {
			c.typeErr(line, who, fmt.Sprintf("service_cidrs[%d]", j), "a string", e)
			continue
		}
		p, err := parseCIDR(s)
		if err != nil {
			c.add(line, who, "service_cidrs[%d] %q: %v", j, s, err)
			continue
		}
		c.cidrs = append(c.cidrs, seenCIDR{cluster: i, who: who, key: fmt.Sprintf("service_cidrs[%d]", j), prefix: p, line: line})
		out = append(out, p)
	}
	return out
}

// parseCIDR is netip.ParsePrefix with messages for people, refusing host
// bits: they usually mean a ClusterIP was pasted where the range belongs.
func parseCIDR(s string) (netip.Prefix, error) {
	addr, _, ok := strings.Cut(s, "/")
	if !ok {
		return netip.Prefix{}, errors.New("missing prefix length, like /12")
	}
	if a, err := netip.ParseAddr(addr); err != nil || a.Zone() != "" {
		return netip.Prefix{}, errors.New("invalid IP address")
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, errors.New("invalid prefix length")
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("not a network address (did you mean %s?)", m)
	}
	return p, nil
}

// str returns v if it is a string. It reports any other type; an absent
// value (nil) gives ok == false silently.
func (c *checker) str(line int, who, key string, v any, want string) (s string, ok bool) {
	s, ok = v.(string)
	if !ok && v != nil {
		c.typeErr(line, who, key, want, v)
	}
	return s, ok
}

func (c *checker) typeErr(line int, who, key, want string, v any) {
	c.add(line, who, "%s: must be %s, not %s", key, want, tomlType(v))
}

// tomlType names the type of a decoded value as the file spells it.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return "a date or time"
}

// closest returns the key in known that key most likely misspells, or "".
func closest(key string, known []string) string {
	best, bestDist := "", max(1, len(key)/4)+1
	for _, k := range known {
		// Lowercase first: a known key in capitals is surely that key.
		if d := editDistance(strings.ToLower(key), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// locator finds the line of each key and table header, which
// BurntSushi/toml parses but does not expose.
type locator struct{ entries []entry }

type entry struct {
	path    string // dotted, like "clusters.service_cidrs"; a header's is its table
	cluster int    // index of the enclosing [[clusters]], -1 before the first
	line    int
}

var (
	keyPart   = `(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')`
	dottedKey = keyPart + `(?:\s*\.\s*` + keyPart + `)*`
	arrayRE   = regexp.MustCompile(`^\s*\[\[\s*(` + dottedKey + `)\s*\]\]`)
	tableRE   = regexp.MustCompile(`^\s*\[\s*(` + dottedKey + `)\s*\]`)
	assignRE  = regexp.MustCompile(`^\s*(` + dottedKey + `)\s*=`)
	keyPartRE = regexp.MustCompile(keyPart)
)

// newLocator scans text, which toml has already parsed without error, so
// the patterns only have to tell statements apart, not validate them.
func newLocator(text string) *locator {
	l := &locator{}
	table, cluster := "", -1
	var st scanState
	for n, line := range strings.Split(text, "\n") {
		if st.depth == 0 && st.quote == "" {
			if m := arrayRE.FindStringSubmatch(line); m != nil {
				table = normKey(m[1])
				if table == "clusters" {
					cluster++
				}
				l.entries = append(l.entries, entry{table, cluster, n + 1})
			} else if m := tableRE.FindStringSubmatch(line); m != nil {
				table = normKey(m[1])
				l.entries = append(l.entries, entry{table, cluster, n + 1})
			} else if m := assignRE.FindStringSubmatch(line); m != nil {
				path := normKey(m[1])
				if table != "" {
					path = table + "." + path
				}
				l.entries = append(l.entries, entry{path, cluster, n + 1})
			}
		}
		st.scan(line)
	}
	return l
}

// line returns where path is set in clusters[cluster], or anywhere when
// cluster is -1. A path not in the file, such as a missing required key,
// gives the line of its table's header, which is near where it belongs; 0
// means nowhere.
func (l *locator) line(cluster int, path string) int {
	for p := path; p != ""; {
		for _, e := range l.entries {
			if (e.path == p || strings.HasPrefix(e.path, p+".")) && (cluster < 0 || e.cluster == cluster) {
				return e.line
			}
		}
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			break
		}
		p = p[:i]
	}
	if cluster >= 0 { // clusters written inline: clusters = [{...}]
		return l.line(-1, path)
	}
	return 0
}

func normKey(s string) string {
	parts := keyPartRE.FindAllString(s, -1)
	for i, p := range parts {
		parts[i] = strings.Trim(p, `"'`)
	}
	return strings.Join(parts, ".")
}

// scanState follows strings and brackets from line to line: inside a
// multi-line array or string, a line like `x = 1` is data, not a key.
type scanState struct {
	depth int    // open [ and { in values
	quote string // delimiter of the open multi-line string, if any
}

func (s *scanState) scan(line string) {
	for i := 0; i < len(line); i++ {
		if s.quote != "" {
			if strings.HasPrefix(line[i:], s.quote) {
				s.quote = ""
				i += 2
			} else if s.quote == `"""` && line[i] == '\\' {
				i++
			}
			continue
		}
		switch ch := line[i]; ch {
		case '#':
			return
		case '"', '\'':
			if q := strings.Repeat(string(ch), 3); strings.HasPrefix(line[i:], q) {
				s.quote = q
				i += 2
				continue
			}
			for i++; i < len(line) && line[i] != ch; i++ {
				if ch == '"' && line[i] == '\\' {
					i++
				}
			}
		case '[', '{':
			s.depth++
		case ']', '}':
			s.depth--
		}
	}
}
