package bench

import (
	"bufio"
	"strconv"
	"strings"
	"time"
)

// metricSum adds up the series called name in a Prometheus text scrape
// (the apiserver's /metrics) whose labels include every one of labels,
// each written as in the exposition (`resource="endpointslices"`). The
// apiserver's scrape has tens of thousands of lines and some the lab's
// stricter lab.ParseMetrics has no use for; this reads only what it asks.
func metricSum(scrape, name string, labels ...string) float64 {
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(scrape))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		rest, ok := strings.CutPrefix(l, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		set := ""
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			set, rest = rest[1:end], rest[end+1:]
		}
		match := true
		for _, want := range labels {
			if !hasLabel(set, want) {
				match = false
				break
			}
		}
		f := strings.Fields(rest)
		if !match || len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// hasLabel reports whether the label set `a="x",b="y"` holds want
// (`b="y"`) as a whole pair, not as the end of another label's name.
func hasLabel(set, want string) bool {
	for i := 0; ; {
		k := strings.Index(set[i:], want)
		if k < 0 {
			return false
		}
		k += i
		if k == 0 || set[k-1] == ',' {
			return true
		}
		i = k + 1
	}
}

// programmingMean is the mean of kube-outpost's network programming
// latency (the trigger time flip writes to the end of the sync that
// programmed it) over the observations between scrapes a and b; 0 with
// none, or without either scrape.
func programmingMean(a, b []byte) time.Duration {
	const name = "kube_outpost_network_programming_duration_seconds"
	if a == nil || b == nil {
		return 0
	}
	n := metricSum(string(b), name+"_count") - metricSum(string(a), name+"_count")
	sum := metricSum(string(b), name+"_sum") - metricSum(string(a), name+"_sum")
	if n <= 0 {
		return 0
	}
	return time.Duration(sum / n * float64(time.Second))
}
