// Package packaging checks the files in packaging/ that are not Go: they
// ship to users, who find a mistake in them only when it is too late.
package packaging

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const dashboardPath = "../../packaging/grafana-dashboard.json"

// exported are the metrics kube-outpost exports, with their type: a
// histogram is queried through its _bucket, _sum and _count series. The
// go_ and process_ metrics of the Prometheus client are allowed besides.
var exported = map[string]string{
	"kube_outpost_sync_proxy_rules_duration_seconds":         "histogram",
	"kube_outpost_sync_full_proxy_rules_duration_seconds":    "histogram",
	"kube_outpost_sync_partial_proxy_rules_duration_seconds": "histogram",
	"kube_outpost_sync_proxy_rules_last_timestamp_seconds":   "gauge",
	"kube_outpost_network_programming_duration_seconds":      "histogram",
	"kube_outpost_sync_proxy_rules_restore_failures_total":   "counter",
	"kube_outpost_services_programmed":                       "gauge",
	"kube_outpost_endpoints_programmed":                      "gauge",
	"kube_outpost_cluster_up":                                "gauge",
	"kube_outpost_cluster_synced":                            "gauge",
	"kube_outpost_watch_errors_total":                        "counter",
	"kube_outpost_watch_restarts_total":                      "counter",
	"kube_outpost_services_refused_total":                    "counter",
	"kube_outpost_build_info":                                "gauge",
}

// A dashboard that does not render is an empty page, so what Grafana needs
// is checked: the shape of every panel, and every query.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
}

func load(t *testing.T) *dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if dec.More() {
		t.Fatalf("%s: more than one JSON value", dashboardPath)
	}
	return &d
}

func TestDashboardShape(t *testing.T) {
	d := load(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both are needed to import and link the dashboard", d.UID, d.Title)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["instance"] != "query" {
		t.Errorf("variables %v: want datasource (a datasource variable) and instance (a query)", vars)
	}
	ids := map[int]string{}
	for _, p := range d.Panels {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q have the same id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Title == "" || p.Type == "" || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %d %q (%s): needs a title, a type and a place in the 24-column grid, has %+v", p.ID, p.Title, p.Type, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		// Bound to the variable, so that the dashboard works in any
		// Grafana whatever its Prometheus is called.
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource must be ${datasource}", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: query %q with refId %q: needs an expression and a refId of its own", p.Title, tg.Expr, tg.RefID)
			}
			refs[tg.RefID] = true
		}
	}
}

// TestDashboardMetrics checks every query: each metric exists, and is
// filtered by the instance variable, and every metric kube-outpost exports
// is shown somewhere.
func TestDashboardMetrics(t *testing.T) {
	d := load(t)
	used := map[string]bool{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			metrics, errs := metricsOf(tg.Expr)
			for _, e := range errs {
				t.Errorf("panel %q: %s", p.Title, e)
			}
			for _, m := range metrics {
				base, ok := known(m)
				if !ok {
					t.Errorf("panel %q: metric %s is not exported by kube-outpost (in %s)", p.Title, m, tg.Expr)
				}
				used[base] = true
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Name != "instance" {
			continue
		}
		q, _ := json.Marshal(v.Query)
		if !strings.Contains(string(q), "kube_outpost_build_info") {
			t.Errorf("variable instance: %s: want the instances that export kube_outpost_build_info", q)
		}
	}
	for m := range exported {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
}

func known(m string) (string, bool) {
	if strings.HasPrefix(m, "go_") || strings.HasPrefix(m, "process_") {
		return m, true
	}
	if _, ok := exported[m]; ok {
		return m, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, cut := strings.CutSuffix(m, suffix); cut && exported[base] == "histogram" {
			return base, true
		}
	}
	return m, false
}

var (
	selectorRE = regexp.MustCompile(`([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}`)
	// Parts of an expression that hold no metric name.
	groupingRE = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	noiseRE    = regexp.MustCompile(`"[^"]*"|\{[^}]*\}|\[[^\]]*\]|\$\{?\w+\}?|\b\d+(\.\d+)?([eE][-+]?\d+)?\b`)
	identRE    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	// The PromQL functions and keywords the dashboard may use.
	promql = []string{"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
		"time", "topk", "bottomk", "clamp_min", "clamp_max", "abs", "and", "or", "unless", "bool", "offset",
		"max_over_time", "min_over_time", "avg_over_time", "last_over_time", "changes", "resets", "absent"}
)

// metricsOf returns the metric names of a PromQL expression, and a problem
// for every metric selected without the instance filter.
func metricsOf(expr string) (metrics, problems []string) {
	for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		if slices.Contains(promql, m[1]) {
			continue
		}
		metrics = append(metrics, m[1])
		if !strings.Contains(m[2], `instance=~"$instance"`) {
			problems = append(problems, m[1]+` is not filtered by instance=~"$instance": `+expr)
		}
	}
	rest := groupingRE.ReplaceAllString(expr, "")
	rest = noiseRE.ReplaceAllString(rest, "")
	for _, id := range identRE.FindAllString(rest, -1) {
		if !slices.Contains(promql, id) && !slices.Contains(metrics, id) {
			problems = append(problems, id+` is selected without {instance=~"$instance"} (or is a function this test does not know): `+expr)
		}
	}
	return metrics, problems
}

// The checker must catch what it is there for.
func TestMetricsOf(t *testing.T) {
	for _, c := range []struct {
		expr     string
		metrics  []string
		problems int
	}{
		{`histogram_quantile(0.99, sum by (instance, le) (rate(kube_outpost_sync_proxy_rules_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`,
			[]string{"kube_outpost_sync_proxy_rules_duration_seconds_bucket"}, 0},
		{`time() - max by (instance) (kube_outpost_sync_proxy_rules_last_timestamp_seconds{instance=~"$instance"})`,
			[]string{"kube_outpost_sync_proxy_rules_last_timestamp_seconds"}, 0},
		{`sum(kube_outpost_cluster_up{job="x"})`, []string{"kube_outpost_cluster_up"}, 1},
		{`rate(kube_outpost_watch_errors_total[5m])`, nil, 1},
		{`go_goroutines`, nil, 1},
	} {
		metrics, problems := metricsOf(c.expr)
		if !slices.Equal(metrics, c.metrics) || len(problems) != c.problems {
			t.Errorf("metricsOf(%s) = %v, %q; want %v and %d problems", c.expr, metrics, problems, c.metrics, c.problems)
		}
	}
	for m, want := range map[string]bool{
		"kube_outpost_sync_proxy_rules_duration_seconds_bucket": true,
		"kube_outpost_cluster_up_bucket":                        false, // not a histogram
		"kube_outpost_sync_duration_seconds":                    false,
		"process_resident_memory_bytes":                         true,
	} {
		if _, ok := known(m); ok != want {
			t.Errorf("known(%s) = %v, want %v", m, ok, want)
		}
	}
}
