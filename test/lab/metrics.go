package lab

import (
	"bufio"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Samples are a Prometheus scrape's series, by name and then labels written
// as `a="x",b="y"` (sorted, as the exposition writes them).
type Samples map[string]map[string]float64

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \S+)?$`)

// ParseMetrics reads the Prometheus text exposition format, as the
// daemon's /metrics writes it.
func ParseMetrics(text string) (Samples, error) {
	out := Samples{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		m := sampleLine.FindStringSubmatch(l)
		if m == nil {
			return nil, fmt.Errorf("unparsable metrics line %q", l)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %v", l, err)
		}
		if out[m[1]] == nil {
			out[m[1]] = map[string]float64{}
		}
		out[m[1]][m[2]] = v
	}
	return out, sc.Err()
}
