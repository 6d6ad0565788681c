package config

import (
	"slices"
	"strings"
)

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
