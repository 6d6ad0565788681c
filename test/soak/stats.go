package soak

import (
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kube-outpost/kube-outpost/test/lab"
)

// samples are a scrape's series, by name and then labels as written in the
// exposition (`le="0.5"`, `cluster="soak"`); "" for a series without labels.
type samples map[string]map[string]float64

// parseMetrics reads the Prometheus text exposition format.
func parseMetrics(text string) (samples, error) {
	m, err := lab.ParseMetrics(text)
	return samples(m), err
}

// value is a series' value; 0 when absent (a counter that never counted).
func (s samples) value(name, labels string) float64 { return s[name][labels] }

// bucket is one cumulative histogram bucket: count observations <= le.
type bucket struct {
	le    float64
	count float64
}

var leLabel = regexp.MustCompile(`(?:^|,)le="([^"]*)"`)

// histogram returns the buckets of histogram name (without labels other
// than le), sorted by le, the +Inf bucket last.
func (s samples) histogram(name string) []bucket {
	var out []bucket
	for labels, v := range s[name+"_bucket"] {
		m := leLabel.FindStringSubmatch(labels)
		if m == nil {
			continue
		}
		le, err := strconv.ParseFloat(m[1], 64) // ParseFloat knows "+Inf"
		if err != nil {
			continue
		}
		out = append(out, bucket{le: le, count: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].le < out[j].le })
	return out
}

// minus returns the buckets of what was observed after base: h - base, per
// bucket. A bucket absent from base counts from 0.
func minus(h, base []bucket) []bucket {
	before := map[float64]float64{}
	for _, b := range base {
		before[b.le] = b.count
	}
	out := make([]bucket, len(h))
	for i, b := range h {
		out[i] = bucket{le: b.le, count: b.count - before[b.le]}
	}
	return out
}

// histogramQuantile is PromQL's histogram_quantile: the q-quantile of
// cumulative buckets, interpolated linearly within its bucket. It is NaN
// without observations; when the quantile falls in the +Inf bucket, the
// highest finite bound.
func histogramQuantile(q float64, bs []bucket) float64 {
	if len(bs) == 0 {
		return math.NaN()
	}
	total := bs[len(bs)-1].count
	if total <= 0 || !math.IsInf(bs[len(bs)-1].le, 1) {
		return math.NaN()
	}
	rank := q * total
	prevLE, prevCount := 0.0, 0.0
	for i, b := range bs {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				if i == 0 {
					return math.NaN()
				}
				return bs[i-1].le
			}
			if b.count == prevCount {
				return b.le
			}
			return prevLE + (b.le-prevLE)*(rank-prevCount)/(b.count-prevCount)
		}
		prevLE, prevCount = b.le, b.count
	}
	return bs[len(bs)-2].le
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of ds; 0
// for none.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(k, len(s)-1))]
}

// point is one sample of a time series: seconds since the soak began, and
// a value.
type point struct {
	t, v float64
}

// fit returns the least-squares line v = a + b*t through ps.
func fit(ps []point) (a, b float64) {
	n := float64(len(ps))
	if n == 0 {
		return 0, 0
	}
	var st, sv float64
	for _, p := range ps {
		st += p.t
		sv += p.v
	}
	mt, mv := st/n, sv/n
	var stt, stv float64
	for _, p := range ps {
		stt += (p.t - mt) * (p.t - mt)
		stv += (p.t - mt) * (p.v - mv)
	}
	if stt == 0 {
		return mv, 0
	}
	b = stv / stt
	return mv - b*mt, b
}

func mean(ps []point) float64 {
	if len(ps) == 0 {
		return math.NaN()
	}
	s := 0.0
	for _, p := range ps {
		s += p.v
	}
	return s / float64(len(ps))
}

// between returns the points with from <= t < to.
func between(ps []point, from, to float64) []point {
	var out []point
	for _, p := range ps {
		if p.t >= from && p.t < to {
			out = append(out, p)
		}
	}
	return out
}

// The RSS criterion. The first half of the churn is warm-up: the daemon's
// caches fill and the Go heap finds its size. Over the second half the
// least-squares line through the RSS samples may rise by at most
// rssTolerance of the mean RSS of that half, and by no less than
// rssFloor, which is below what GC alone moves RSS by. Over a one-hour soak
// that is a slope of 10 %/h (about 5 MB/h for a daemon of 50 MB); a leak
// of 2 KB per change at 3 changes a second is 22 MB/h and fails.
const (
	rssTolerance = 0.05
	rssFloor     = 2 << 20 // bytes
	// rssMinSamples is how many samples the second half needs for the
	// criterion to be judged at all.
	rssMinSamples = 10
)

// rssVerdict is the RSS criterion applied to one soak.
type rssVerdict struct {
	From, To  float64 // the window judged, seconds since the soak began
	Samples   int
	Mean      float64 // bytes, over the window
	Slope     float64 // bytes per hour, least squares over the window
	Growth    float64 // bytes: Slope times the window's length
	Limit     float64 // bytes: the largest Growth allowed
	Judged    bool    // enough samples to judge
	OK        bool
	FirstMean float64 // bytes: mean of the window's first tenth
	LastMean  float64 // bytes: mean of the window's last tenth
}

// judgeRSS applies the RSS criterion to the samples of rss (seconds since
// the soak began, bytes) taken while churn ran from churnFrom to churnTo.
func judgeRSS(rss []point, churnFrom, churnTo float64) rssVerdict {
	mid := churnFrom + (churnTo-churnFrom)/2
	w := between(rss, mid, churnTo+1e-9)
	v := rssVerdict{From: mid, To: churnTo, Samples: len(w)}
	if len(w) < rssMinSamples {
		v.OK = true // not judged: too short a soak to tell
		return v
	}
	v.Judged = true
	_, b := fit(w)
	v.Mean = mean(w)
	v.Slope = b * 3600
	v.Growth = b * (churnTo - mid)
	v.Limit = math.Max(rssTolerance*v.Mean, rssFloor)
	v.OK = v.Growth <= v.Limit
	tenth := (churnTo - mid) / 10
	v.FirstMean = mean(between(w, mid, mid+tenth))
	v.LastMean = mean(between(w, churnTo-tenth, churnTo+1e-9))
	return v
}

// buildVersion is the version label of kube_outpost_build_info.
func buildVersion(m samples) string {
	for labels := range m["kube_outpost_build_info"] {
		for _, kv := range strings.Split(labels, ",") {
			if v, ok := strings.CutPrefix(kv, "version="); ok {
				return strings.Trim(v, `"`)
			}
		}
	}
	return "(unknown version)"
}
