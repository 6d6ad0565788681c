package config

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/reach"
)

// kubeconfig returns a kubeconfig with one cluster and user per context; the
// cluster of context x is served at https://x.example:6443.
func kubeconfig(current string, contexts ...string) string {
	var cl, users, ctxs strings.Builder
	for _, c := range contexts {
		fmt.Fprintf(&cl, "- name: %s\n  cluster:\n    server: https://%s.example:6443\n", c, c)
		fmt.Fprintf(&users, "- name: %s\n  user:\n    token: not-a-secret\n", c)
		fmt.Fprintf(&ctxs, "- name: %s\n  context:\n    cluster: %s\n    user: %s\n", c, c, c)
	}
	return "apiVersion: v1\nkind: Config\nclusters:\n" + cl.String() + "users:\n" + users.String() +
		"contexts:\n" + ctxs.String() + fmt.Sprintf("current-context: %q\n", current)
}

// testDir returns a directory holding the kubeconfigs the tests refer to.
func testDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"prod.kubeconfig":  kubeconfig("default", "default"),
		"multi.kubeconfig": kubeconfig("", "blue", "green"),
		"gone.kubeconfig":  kubeconfig("gone", "blue"),
		"bad.kubeconfig":   "clusters: {{{",
		"noserver.kubeconfig": "apiVersion: v1\nkind: Config\ncurrent-context: x\n" +
			"contexts:\n- name: x\n  context:\n    cluster: nowhere\n    user: u\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// lines joins its arguments as the lines of a file, so that a test's line
// numbers can be read off its position in the list.
func lines(l ...string) string { return strings.Join(l, "\n") + "\n" }

// problems returns err's problems as "line: message", failing the test if
// err is not what Parse promises.
func problems(t *testing.T, err error) []string {
	t.Helper()
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error %v (%T) is not Problems", err, err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, fmt.Sprintf("%d: %s", p.Line, p.Msg))
	}
	return got
}

func TestParse(t *testing.T) {
	dir := testDir(t)
	for _, tt := range []struct {
		name string
		toml string
		want *Config
	}{{
		name: "defaults",
		toml: lines(
			`[[clusters]]`,
			`name = "prod"`,
			`kubeconfig = "prod.kubeconfig"`,
			`service_cidrs = ["10.96.0.0/12"]`,
		),
		want: &Config{
			Mode:             DefaultMode,
			MinSyncPeriod:    0,
			SyncPeriod:       30 * time.Second,
			FullSyncPeriod:   time.Hour,
			Masquerade:       true,
			MasqueradeMark:   0x00100000,
			IPVSScheduler:    "rr",
			EBPFPinDir:       "/sys/fs/bpf/kube-outpost",
			MetricsAddress:   netip.MustParseAddrPort("127.0.0.1:10249"),
			HealthzAddress:   netip.MustParseAddrPort("127.0.0.1:10256"),
			LogLevel:         slog.LevelInfo,
			LogFormat:        LogText,
			StatusSocket:     "/run/kube-outpost/status.sock",
			StateDir:         "/var/lib/kube-outpost",
			StaleStateMaxAge: 24 * time.Hour,
			Clusters: []Cluster{{
				Name:         "prod",
				Kubeconfig:   filepath.Join(dir, "prod.kubeconfig"),
				ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
				ContextName:  "default",
				Reach:        reach.Direct, NodeAddressTypes: []string{"InternalIP"},
				Server:  "https://default.example:6443",
				DNSZone: "prod.internal",
			}},
		},
	}, {
		name: "every key set",
		toml: lines(
			`mode = "iptables"`,
			`min_sync_period = "100ms"`,
			`sync_period = "1s"`,
			`full_sync_period = "30m"`,
			`masquerade = false`,
			`masquerade_mark = 0x200`,
			`ipvs_scheduler = "sh"`,
			`ebpf_cgroup = "/sys/fs/cgroup/unified/app.slice"`,
			`ebpf_pin_dir = "/sys/fs/bpf/ko"`,
			`metrics_address = "[::1]:9100"`,
			`healthz_address = ""`,
			`log_level = "debug"`,
			`log_format = "json"`,
			`status_socket = ""`,
			`state_dir = "/srv/ko/"`,
			`stale_state_max_age = "0s"`,
			``,
			`[dns]`,
			`listen = ["127.0.0.153:53", "[::1]:5353"]`,
			`ttl = "30s"`,
			`resolved = "off"`,
			`max_qps = 50000`,
			``,
			`[[clusters]] # a comment`,
			`name = "blue-1"`,
			`kubeconfig = "$DIR/multi.kubeconfig"`,
			`context = "blue"`,
			`dns_zone = "Blue.Example.Internal."`,
			`dns_default = true`,
			`service_cidrs = [`,
			`  "10.96.0.0/16",   # IPv4`,
			`  "fd00:10:96::/108",`,
			`]`,
			`[[clusters]]`,
			`"name" = "green"`,
			`kubeconfig = "sub/../multi.kubeconfig"`,
			`context = "green"`,
			`service_cidrs = ["10.97.0.0/16", "fd00:10:97::/108"]`,
		),
		want: &Config{
			Mode:           "iptables",
			Asks:           Capabilities{CanIPv6},
			MinSyncPeriod:  100 * time.Millisecond,
			SyncPeriod:     time.Second,
			FullSyncPeriod: 30 * time.Minute,
			Masquerade:     false,
			MasqueradeMark: 0x200,
			IPVSScheduler:  "sh",
			EBPFCgroup:     "/sys/fs/cgroup/unified/app.slice",
			EBPFPinDir:     "/sys/fs/bpf/ko",
			MetricsAddress: netip.MustParseAddrPort("[::1]:9100"),
			LogLevel:       slog.LevelDebug,
			LogFormat:      LogJSON,
			StateDir:       "/srv/ko",
			DNS: DNS{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.153:53"), netip.MustParseAddrPort("[::1]:5353")},
				TTL: 30 * time.Second, Resolved: ResolvedOff, MaxQPS: 50000},
			Clusters: []Cluster{{
				Name:       "blue-1",
				Kubeconfig: filepath.Join(dir, "multi.kubeconfig"),
				Context:    "blue",
				ServiceCIDRs: []netip.Prefix{
					netip.MustParsePrefix("10.96.0.0/16"),
					netip.MustParsePrefix("fd00:10:96::/108"),
				},
				ContextName: "blue",
				Reach:       reach.Direct, NodeAddressTypes: []string{"InternalIP"},
				Server:  "https://blue.example:6443",
				DNSZone: "blue.example.internal", DNSDefault: true,
			}, {
				Name:       "green",
				Kubeconfig: filepath.Join(dir, "multi.kubeconfig"),
				Context:    "green",
				ServiceCIDRs: []netip.Prefix{
					netip.MustParsePrefix("10.97.0.0/16"),
					netip.MustParsePrefix("fd00:10:97::/108"),
				},
				ContextName: "green",
				Reach:       reach.Direct, NodeAddressTypes: []string{"InternalIP"},
				Server:  "https://green.example:6443",
				DNSZone: "green.internal",
			}},
		},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			data := strings.ReplaceAll(tt.toml, "$DIR", dir)
			got, err := Parse([]byte(data), filepath.Join(dir, "config.toml"))
			if err != nil {
				t.Fatalf("Parse:\n%v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseProblems(t *testing.T) {
	// okCluster is a valid cluster for tests of the top-level keys: their
	// lines come first, then these four.
	okCluster := []string{
		`[[clusters]]`,
		`name = "prod"`,
		`kubeconfig = "prod.kubeconfig"`,
		`service_cidrs = ["10.96.0.0/12"]`,
	}
	top := func(l ...string) string { return lines(append(l, okCluster...)...) }

	for _, tt := range []struct {
		name string
		toml string
		want []string
	}{
		// Syntax: one problem, nothing else checked.
		{"syntax error", lines(`mode = "iptables"`, `sync_period = "30s`, `[[clusters]]`),
			[]string{`2: syntax error: strings cannot contain newlines`}},
		{"syntax error hides the rest", lines(`mode = "fast"`, `[[clusters]]`, `name = `),
			[]string{`3: syntax error: expected value but found '\n' instead`}},
		{"single clusters table", lines(`mode = "iptables"`, `[clusters]`, `name = "prod"`),
			[]string{`2: clusters: must be tables written [[clusters]]`}},

		// Unknown keys.
		{"unknown key near miss", lines(okCluster[0], okCluster[1], okCluster[2], `service_cidr = ["10.96.0.0/12"]`), []string{
			`1: cluster "prod": service_cidrs is required: the cluster's Service IP ranges, like ["10.96.0.0/12"]`,
			`4: unknown key "clusters[0].service_cidr" (did you mean "service_cidrs"?)`,
		}},
		{"unknown key in capitals", top(`Mode = "iptables"`), []string{`1: unknown key "Mode" (did you mean "mode"?)`}},
		{"unknown keys", top(`foo = 1`, `bar.baz = 2`), []string{`1: unknown key "foo"`, `2: unknown key "bar"`}},
		{"cluster key at top level", top(`name = "prod"`), []string{
			`1: unknown key "name" (cluster keys go in a [[clusters]] table)`,
		}},
		{"top-level key in a cluster", lines(append(okCluster, `mode = "iptables"`)...), []string{
			`5: unknown key "clusters[0].mode" (top-level keys go before the first [[clusters]])`,
		}},
		{"unknown table", lines(append(okCluster, `[extra]`, `a = 1`)...), []string{`5: unknown key "extra"`}},
		{"unknown sub-table of a cluster", lines(append(okCluster, `[clusters.remap]`, `a = 1`)...), []string{
			`5: unknown key "clusters[0].remap"`,
		}},

		// Top-level values.
		{"mode", top(`mode = "fast"`), []string{`1: mode "fast": this build has the modes "iptables", "ipvs", "limited", and "auto" to pick one`}},
		{"mode not in this build", top(`mode = "nftables"`), []string{`1: mode "nftables": this build has the modes "iptables", "ipvs", "limited", and "auto" to pick one`}},
		{"ipvs scheduler", top(`ipvs_scheduler = "fastest"`), []string{`1: ipvs_scheduler "fastest": must be one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh, fo, ovf, twos`}},
		{"mode type", top(`mode = 1`), []string{`1: mode: must be a string, not an integer`}},
		{"duration syntax", top(`full_sync_period = "1x"`), []string{
			`1: full_sync_period "1x": not a duration (write it like "30s" or "1m30s")`,
		}},
		{"duration type", top(`sync_period = 30`), []string{
			`1: sync_period: must be a duration string like "30s", not an integer`,
		}},
		{"duration below zero", top(`min_sync_period = "-10ms"`), []string{`1: min_sync_period "-10ms": must be from 0s to 1m`}},
		{"duration zero", top(`sync_period = "0s"`), []string{`1: sync_period "0s": must be from 1s to 1h`}},
		{"duration negative", top(`sync_period = "-5s"`), []string{`1: sync_period "-5s": must be from 1s to 1h`}},
		{"duration that spins the loop", top(`full_sync_period = "1ns"`), []string{`1: full_sync_period "1ns": must be from 10s to 24h`}},
		{"duration past use", top(`sync_period = "48h"`), []string{`1: sync_period "48h": must be from 1s to 1h`}},
		{"min above sync", top(`sync_period = "10s"`, `min_sync_period = "20s"`), []string{
			`2: min_sync_period 20s is longer than sync_period 10s`,
		}},
		{"default min above sync", top(`min_sync_period = "30s"`, `sync_period = "2s"`), []string{
			`1: min_sync_period 30s is longer than sync_period 2s`,
		}},
		{"masquerade type", top(`masquerade = "yes"`), []string{`1: masquerade: must be true or false, not a string`}},
		{"service_metrics type", top(`service_metrics = 1`), []string{`1: service_metrics: must be true or false, not an integer`}},
		{"profiling type", top(`profiling = "on"`), []string{`1: profiling: must be true or false, not a string`}},
		{"profiling without metrics", top(`metrics_address = ""`, `profiling = true`), []string{
			`2: profiling = true needs metrics_address, where the profiles are served: set one, or profiling = false`,
		}},
		{"addresses", top(
			`metrics_address = "localhost:10249"`,
			`healthz_address = "127.0.0.1"`,
		), []string{
			`1: metrics_address "localhost:10249": "localhost" is not an IP address (host names are not resolved), like "127.0.0.1:10249"`,
			`2: healthz_address "127.0.0.1": must be an IP address and port, like "127.0.0.1:10256", or "" to turn it off`,
		}},
		{"address ports", top(
			`metrics_address = "127.0.0.1:0"`,
			`healthz_address = "127.0.0.1:70000"`,
		), []string{
			`1: metrics_address "127.0.0.1:0": invalid port: must be 1-65535`,
			`2: healthz_address "127.0.0.1:70000": invalid port: must be 1-65535`,
		}},
		{"address without IP", top(`metrics_address = ":10249"`), []string{
			`1: metrics_address ":10249": give the IP address to listen on, like "127.0.0.1:10249" (0.0.0.0 means every IPv4 address)`,
		}},
		{"address type", top(`healthz_address = 10256`), []string{
			`1: healthz_address: must be a string like "127.0.0.1:10256", not an integer`,
		}},
		{"addresses clash on a port", top(`metrics_address = "0.0.0.0:10249"`, `healthz_address = "127.0.0.1:10249"`), []string{
			`2: healthz_address 127.0.0.1:10249 and metrics_address 0.0.0.0:10249 cannot both listen on port 10249: ` +
				`give them the same address to serve both on one listener, or different ports`,
		}},
		{"status socket", top(`status_socket = "run/ko.sock"`), []string{
			`1: status_socket "run/ko.sock": must be an absolute path, like "/run/kube-outpost/status.sock", or "" to turn it off`,
		}},
		{"status socket too long", top(`status_socket = "/run/` + strings.Repeat("x", 110) + `"`), []string{
			`1: status_socket "/run/` + strings.Repeat("x", 110) + `": 115 bytes, longer than the 107 a unix socket's path may have`,
		}},
		{"status socket type", top(`status_socket = false`), []string{
			`1: status_socket: must be a path like "/run/kube-outpost/status.sock", not a boolean`,
		}},
		{"state dir", top(`state_dir = "var/lib/ko"`), []string{
			`1: state_dir "var/lib/ko": must be an absolute path, like "/var/lib/kube-outpost", or "" to keep no state`,
		}},
		{"state dir type", top(`state_dir = 1`), []string{
			`1: state_dir: must be a path like "/var/lib/kube-outpost", not an integer`,
		}},
		{"stale state age", top(`stale_state_max_age = "1000h"`, `stale_state_max_age2 = 1`), []string{
			`1: stale_state_max_age "1000h": must be from 0s to 720h`,
			`2: unknown key "stale_state_max_age2" (did you mean "stale_state_max_age"?)`,
		}},
		// The DNS server ([dns]) and the clusters' zones.
		{"dns on with defaults", top(`[dns]`), nil},
		{"dns", top(`[dns]`, `listen = ["127.0.0.153", "127.0.0.1:0", "::1:53", "127.0.0.1:10249", "[::1]:53", "[::1]:53"]`, `ttl = "1ms"`, `port = 53`), []string{
			`2: dns.listen[0] "127.0.0.153": must be an IP address and port, like "127.0.0.153:53"`,
			`2: dns.listen[1] "127.0.0.1:0": invalid port: must be 1-65535`,
			`2: dns.listen[2] "::1:53": must be an IP address and port, like "127.0.0.153:53"`,
			`2: dns.listen[3] "127.0.0.1:10249": metrics_address 127.0.0.1:10249 listens on the same port`,
			`2: dns.listen[5] "[::1]:53": listed twice`,
			`3: dns.ttl "1ms": must be from 1s to 1h`,
			`4: unknown key "dns.port"`,
		}},
		{"dns types", top(`dns = "127.0.0.153:53"`), []string{`1: dns: must be a table written [dns], not a string`}},
		{"dns listen type", top(`[dns]`, `listen = "127.0.0.153:53"`), []string{`2: dns.listen: must be an array of strings, not a string`}},
		{"dns off", top(`[dns]`, `listen = []`), nil},
		{"dns resolved", top(`[dns]`, `resolved = "on"`), []string{`2: dns.resolved "on": must be "auto" or "off"`}},
		{"dns max_qps", top(`[dns]`, `max_qps = 99`), []string{`2: dns.max_qps 99: must be 100 to 1000000 (the default is 10000)`}},
		{"dns max_qps type", top(`[dns]`, `max_qps = "fast"`), []string{`2: dns.max_qps: must be an integer like 10000, not a string`}},
		{"dns resolved type", top(`[dns]`, `resolved = false`), []string{`2: dns.resolved: must be a string, not a boolean`}},
		{"dns resolved off", top(`[dns]`, `resolved = "off"`), nil},
		{"dns zone", lines(append(okCluster, `dns_zone = "prod_1.internal"`, `dns_default = "yes"`)...), []string{
			`5: cluster "prod": dns_zone "prod_1.internal": label "prod_1": must be 1 to 63 letters, digits and '-', not starting or ending with '-'`,
			`6: cluster "prod": dns_default: must be true or false, not a string`,
		}},
		{"dns zone reverse", lines(append(okCluster, `dns_zone = "10.in-addr.arpa"`)...), []string{
			`5: cluster "prod": dns_zone "10.in-addr.arpa": a reverse-lookup zone: the daemon answers those of its own addresses by itself`,
		}},
		{"dns zones overlap", lines(append(okCluster, `dns_zone = "example.internal"`, `dns_default = true`,
			`[[clusters]]`, `name = "dev"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.112.0.0/12"]`,
			`dns_zone = "dev.example.internal"`, `dns_default = true`)...), []string{
			`11: cluster "dev": dns_zone: zone dev.example.internal overlaps zone example.internal of cluster "prod" (line 5): one name would have two answers`,
			`12: cluster "dev": dns_default: only one cluster may answer cluster.local, and cluster "prod" does (line 6)`,
		}},
		{"dns zone is cluster.local", lines(append(okCluster, `dns_zone = "cluster.local"`, `dns_default = true`)...), []string{
			`6: cluster "prod": dns_default: cluster.local overlaps its own zone cluster.local`,
		}},
		{"stale state age negative", top(`stale_state_max_age = "-1h"`), []string{`1: stale_state_max_age "-1h": must be from 0s to 720h`}},
		{"state turned off", top(`state_dir = ""`, `stale_state_max_age = "0s"`), nil},
		{"addresses may be equal", top(`metrics_address = "0.0.0.0:10249"`, `healthz_address = "0.0.0.0:10249"`), nil},
		{"addresses may share a port on two IPs", top(`metrics_address = "127.0.0.1:9000"`, `healthz_address = "127.0.0.2:9000"`), nil},
		{"log level", top(`log_level = "verbose"`), []string{`1: log_level "verbose": must be debug, info, warn or error`}},
		{"log level in capitals", top(`log_level = "INFO"`), []string{`1: log_level "INFO": must be debug, info, warn or error`}},
		{"log format", top(`log_format = "logfmt"`, `log_level = 3`), []string{
			`1: log_format "logfmt": must be text or json`,
			`2: log_level: must be a string, not an integer`,
		}},
		{"mark zero", top(`masquerade_mark = 0`), []string{
			`1: masquerade_mark 0: must be one bit of a 32-bit mark, like 0x00100000`,
		}},
		{"mark too wide", top(`masquerade_mark = 0x100000000`), []string{
			`1: masquerade_mark 4294967296: must be one bit of a 32-bit mark, like 0x00100000`,
		}},
		{"mark two bits", top(`masquerade_mark = 0x3000`), []string{`1: masquerade_mark 0x3000: must have exactly one bit set`}},
		{"mark of kube-proxy", top(`masquerade_mark = 0x4000`), []string{
			`1: masquerade_mark 0x4000: taken by kube-proxy, which uses 0x4000 and 0x8000`,
		}},
		{"mark of kube-proxy drop", top(`masquerade_mark = 0x8000`), []string{
			`1: masquerade_mark 0x8000: taken by kube-proxy, which uses 0x4000 and 0x8000`,
		}},
		{"mark type", top(`masquerade_mark = "0x100"`), []string{
			`1: masquerade_mark: must be an integer like 0x00100000, not a string`,
		}},

		// Clusters.
		{"no clusters", lines(`mode = "iptables"`), []string{`0: no clusters: add a [[clusters]] table`}},
		{"empty clusters", lines(`clusters = []`), []string{`1: no clusters: add a [[clusters]] table`}},
		{"name missing", lines(`[[clusters]]`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/12"]`),
			[]string{`1: clusters[0]: name is required`}},
		{"name invalid", lines(`[[clusters]]`, `name = "Prod_1"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/12"]`),
			[]string{`2: clusters[0]: name "Prod_1": must be lowercase letters, digits and '-', starting and ending with a letter or digit`}},
		{"name trailing dash", lines(`[[clusters]]`, `name = "prod-"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/12"]`),
			[]string{`2: clusters[0]: name "prod-": must be lowercase letters, digits and '-', starting and ending with a letter or digit`}},
		{"name too long", lines(`[[clusters]]`, `name = "`+strings.Repeat("a", 41)+`"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/12"]`),
			[]string{`2: clusters[0]: name "` + strings.Repeat("a", 41) + `": longer than 40 characters`}},
		{"name type", lines(`[[clusters]]`, `name = 7`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/12"]`),
			[]string{`2: clusters[0]: name: must be a string, not an integer`}},
		{"name duplicate", lines(append(okCluster, `[[clusters]]`, `name = "prod"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.112.0.0/12"]`)...),
			[]string{`6: clusters[1]: name "prod": already used by clusters[0] (line 2)`}},

		// Kubeconfig.
		{"kubeconfig missing", lines(`[[clusters]]`, `name = "prod"`, `service_cidrs = ["10.96.0.0/12"]`),
			[]string{`1: cluster "prod": kubeconfig is required`}},
		{"kubeconfig empty", lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = ""`, `service_cidrs = ["10.96.0.0/12"]`),
			[]string{`3: cluster "prod": kubeconfig is empty`}},
		{"kubeconfig no such file", lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = "nope.kubeconfig"`, `service_cidrs = ["10.96.0.0/12"]`),
			[]string{`3: cluster "prod": kubeconfig $DIR/nope.kubeconfig: no such file or directory`}},
		{"kubeconfig directory", lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = "$DIR/adir"`, `service_cidrs = ["10.96.0.0/12"]`),
			[]string{`3: cluster "prod": kubeconfig $DIR/adir: is a directory`}},
		{"kubeconfig invalid", lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = "bad.kubeconfig"`, `service_cidrs = ["10.96.0.0/12"]`),
			[]string{`3: cluster "prod": kubeconfig $DIR/bad.kubeconfig: not a valid kubeconfig: *`}},
		{"context not found", lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = "multi.kubeconfig"`, `context = "red"`, `service_cidrs = ["10.96.0.0/12"]`),
			[]string{`4: cluster "prod": kubeconfig $DIR/multi.kubeconfig: context "red" not found (have: blue, green)`}},
		{"no current-context", lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = "multi.kubeconfig"`, `service_cidrs = ["10.96.0.0/12"]`),
			[]string{`3: cluster "prod": kubeconfig $DIR/multi.kubeconfig: no current-context, so set context (have: blue, green)`}},
		{"current-context not found", lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = "gone.kubeconfig"`, `service_cidrs = ["10.96.0.0/12"]`),
			[]string{`3: cluster "prod": kubeconfig $DIR/gone.kubeconfig: current-context "gone" not found (have: blue)`}},
		{"context without server", lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = "noserver.kubeconfig"`, `service_cidrs = ["10.96.0.0/12"]`),
			[]string{`3: cluster "prod": kubeconfig $DIR/noserver.kubeconfig: context "x": cluster "nowhere" has no server`}},

		// Service CIDRs.
		{"cidrs missing", lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = "prod.kubeconfig"`),
			[]string{`1: cluster "prod": service_cidrs is required: the cluster's Service IP ranges, like ["10.96.0.0/12"]`}},
		{"cidrs empty", lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = []`),
			[]string{`4: cluster "prod": service_cidrs is empty: no ClusterIP would be reachable`}},
		{"cidrs not an array", lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = "10.96.0.0/12"`),
			[]string{`4: cluster "prod": service_cidrs: must be an array of CIDR strings, not a string`}},
		{"cidrs bad", lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = "prod.kubeconfig"`,
			`service_cidrs = ["10.96.0.0/12", "10.96.0.0/33", 10, "10.96.0.0", "10.300.0.0/16", "10.96.0.1/12", "fd00::1/108"]`), []string{
			`4: cluster "prod": service_cidrs[1] "10.96.0.0/33": invalid prefix length`,
			`4: cluster "prod": service_cidrs[2]: must be a string, not an integer`,
			`4: cluster "prod": service_cidrs[3] "10.96.0.0": missing prefix length, like /12`,
			`4: cluster "prod": service_cidrs[4] "10.300.0.0/16": invalid IP address`,
			`4: cluster "prod": service_cidrs[5] "10.96.0.1/12": not a network address (did you mean 10.96.0.0/12?)`,
			`4: cluster "prod": service_cidrs[6] "fd00::1/108": not a network address (did you mean fd00::/108?)`,
		}},
		{"cidrs over lines point at the key", lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = "prod.kubeconfig"`,
			`service_cidrs = [`, `  "10.96.0.0/12",`, `  "10.96.0.0/33",`, `]`, `context = "default"`),
			[]string{`4: cluster "prod": service_cidrs[1] "10.96.0.0/33": invalid prefix length`}},
		{"cidrs overlap", lines(
			`[[clusters]]`,
			`name = "a"`,
			`kubeconfig = "prod.kubeconfig"`,
			`service_cidrs = ["10.96.0.0/12", "fd00::/64"]`,
			`[[clusters]]`,
			`name = "b"`,
			`kubeconfig = "prod.kubeconfig"`,
			`service_cidrs = ["10.96.0.0/16", "10.112.0.0/12", "fd00::/108"]`,
		), []string{
			`8: cluster "b": service_cidrs[0] 10.96.0.0/16 overlaps cluster "a" service_cidrs[0] 10.96.0.0/12 (line 4): two clusters cannot share ClusterIPs on one host; set local_service_cidr on one of them to reach its ClusterIPs at a range of this host's own`,
			`8: cluster "b": service_cidrs[2] fd00::/108 overlaps cluster "a" service_cidrs[1] fd00::/64 (line 4): two clusters cannot share ClusterIPs on one host; set local_service_cidr on one of them to reach its ClusterIPs at a range of this host's own`,
		}},
		{"cidrs may overlap within a cluster", lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = "prod.kubeconfig"`,
			`service_cidrs = ["10.96.0.0/12", "10.96.0.0/16"]`), nil},
		{"inline clusters point at clusters", lines(`mode = "iptables"`,
			`clusters = [{name = "prod", kubeconfig = "prod.kubeconfig", service_cidrs = ["10.96.0.0/33"]}]`),
			[]string{`2: cluster "prod": service_cidrs[0] "10.96.0.0/33": invalid prefix length`}},

		// All at once, in line order.
		{"many problems", lines(
			`mode = "fast"`,
			`masquerade_mark = 0x4000`,
			`[[clusters]]`,
			`name = "prod"`,
			`kubeconfig = "nope.kubeconfig"`,
			`service_cidrs = ["10.96.0.1/12"]`,
			`[[clusters]]`,
			`name = "prod"`,
			`kubeconfig = "multi.kubeconfig"`,
			`context = "red"`,
			`service_cidrs = ["10.96.0.0/16"]`,
			`sevice_cidrs = []`,
		), []string{
			`1: mode "fast": this build has the modes "iptables", "ipvs", "limited", and "auto" to pick one`,
			`2: masquerade_mark 0x4000: taken by kube-proxy, which uses 0x4000 and 0x8000`,
			`5: cluster "prod": kubeconfig $DIR/nope.kubeconfig: no such file or directory`,
			`6: cluster "prod": service_cidrs[0] "10.96.0.1/12": not a network address (did you mean 10.96.0.0/12?)`,
			`8: clusters[1]: name "prod": already used by clusters[0] (line 4)`,
			`10: clusters[1]: kubeconfig $DIR/multi.kubeconfig: context "red" not found (have: blue, green)`,
			`12: unknown key "clusters[1].sevice_cidrs" (did you mean "service_cidrs"?)`,
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := testDir(t)
			data := strings.ReplaceAll(tt.toml, "$DIR", dir)
			cfg, err := Parse([]byte(data), filepath.Join(dir, "config.toml"))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Parse:\n%v", err)
				}
				return
			}
			if cfg != nil {
				t.Errorf("Parse returned a config along with problems")
			}
			got := problems(t, err)
			ok := len(got) == len(tt.want)
			for i := 0; ok && i < len(got); i++ {
				want := strings.ReplaceAll(tt.want[i], "$DIR", dir)
				// A trailing * stands for text from a library.
				if prefix, found := strings.CutSuffix(want, "*"); found {
					ok = strings.HasPrefix(got[i], prefix)
				} else {
					ok = got[i] == want
				}
			}
			if !ok {
				t.Errorf("Parse problems:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestUnreadableKubeconfig(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any file")
	}
	dir := testDir(t)
	if err := os.Chmod(filepath.Join(dir, "prod.kubeconfig"), 0); err != nil {
		t.Fatal(err)
	}
	_, err := Parse([]byte(lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = "prod.kubeconfig"`,
		`service_cidrs = ["10.96.0.0/12"]`)), filepath.Join(dir, "config.toml"))
	want := fmt.Sprintf(`3: cluster "prod": kubeconfig %s/prod.kubeconfig: permission denied`, dir)
	if got := problems(t, err); len(got) != 1 || got[0] != want {
		t.Errorf("problems %q, want %q", got, want)
	}
}

func TestLoad(t *testing.T) {
	dir := testDir(t)
	path := filepath.Join(dir, "config.toml")
	if _, err := Load(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want fs.ErrNotExist", err)
	}
	data := lines(`[[clusters]]`, `name = "prod"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/12", "fd00::/108"]`)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("Load:\n%v", err)
	}
	want := []string{fmt.Sprintf(`cluster "prod": kubeconfig %s/prod.kubeconfig (context "default", `+
		`server https://default.example:6443), service_cidrs 10.96.0.0/12,fd00::/108`, dir)}
	if got := cfg.Summary(); !reflect.DeepEqual(got, want) {
		t.Errorf("Summary:\n got %q\nwant %q", got, want)
	}
}

// TestExample keeps packaging/config.toml.example loadable and showing the
// defaults, its second cluster included once uncommented.
func TestExample(t *testing.T) {
	data, err := os.ReadFile("../../packaging/config.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, kc := range map[string]string{
		"prod.kubeconfig":    kubeconfig("default", "default"),
		"staging.kubeconfig": kubeconfig("", "staging"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(kc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	text := strings.ReplaceAll(string(data), "/etc/kube-outpost/", dir+"/")
	path := filepath.Join(dir, "config.toml")

	cfg, err := Parse([]byte(text), path)
	if err != nil {
		t.Fatalf("Parse example:\n%v", err)
	}
	defaults := *Defaults()
	defaults.Clusters = cfg.Clusters
	defaults.Asks = Capabilities{CanMasquerade} // the example sets masquerade = true
	if !reflect.DeepEqual(*cfg, defaults) {
		t.Errorf("example does not show the defaults:\n got %+v\nwant %+v", *cfg, defaults)
	}
	if len(cfg.Clusters) != 1 || cfg.Clusters[0].Name != "prod" ||
		!reflect.DeepEqual(cfg.Clusters[0].ServiceCIDRs, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}) {
		t.Errorf("example clusters: %+v", cfg.Clusters)
	}

	// Uncomment everything from the second cluster's header on.
	head, tail, ok := strings.Cut(text, "\n# [[clusters]]\n")
	if !ok {
		t.Fatal("example has no commented second cluster")
	}
	tail = strings.ReplaceAll("\n# [[clusters]]\n"+tail, "\n# ", "\n")
	cfg, err = Parse([]byte(head+tail), path)
	if err != nil {
		t.Fatalf("Parse example with its second cluster:\n%v", err)
	}
	if len(cfg.Clusters) != 2 || cfg.Clusters[1].Name != "staging" || cfg.Clusters[1].ContextName != "staging" {
		t.Errorf("example clusters: %+v", cfg.Clusters)
	}
}
