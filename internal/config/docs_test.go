package config

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// referenceRow is a row of a key table in docs/configuration.md: the key
// in backticks, first cell.
var referenceRow = regexp.MustCompile("^\\| `([a-z0-9_]+)` \\|")

// documentedKeys reads the keys of the reference tables of
// docs/configuration.md, by the section ("## Top-level keys", "## Cluster
// keys") each table stands in.
func documentedKeys(t *testing.T) map[string][]string {
	t.Helper()
	data, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	fence := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "```") {
			fence = !fence
		}
		if fence {
			continue
		}
		if strings.HasPrefix(line, "## ") {
			section = strings.TrimPrefix(line, "## ")
			continue
		}
		if m := referenceRow.FindStringSubmatch(line); m != nil {
			out[section] = append(out[section], m[1])
		}
	}
	return out
}

// TestKeysDocumented: every key the loader accepts has its row in the
// reference of docs/configuration.md, in the right table, and every row
// there is a key the loader accepts. A new key without its documentation,
// or documentation of a key that is gone or misspelt, fails here.
func TestKeysDocumented(t *testing.T) {
	doc := documentedKeys(t)
	for _, c := range []struct {
		section string
		keys    []string
	}{
		{"Top-level keys", topKeys},
		{"Cluster keys", clusterKeys},
		{"DNS keys", dnsKeys},
	} {
		got := doc[c.section]
		if len(got) == 0 {
			t.Errorf("docs/configuration.md: no section %q with a table of keys (rows starting with | `key` |)", "## "+c.section)
			continue
		}
		for _, k := range c.keys {
			if !slices.Contains(got, k) {
				t.Errorf("docs/configuration.md: key %q is not documented under %q", k, "## "+c.section)
			}
		}
		seen := map[string]bool{}
		for _, k := range got {
			if seen[k] {
				t.Errorf("docs/configuration.md: key %q is documented twice under %q", k, "## "+c.section)
			}
			seen[k] = true
			if !slices.Contains(c.keys, k) {
				t.Errorf("docs/configuration.md: %q, documented under %q, is not a key there (the loader would refuse it)", k, "## "+c.section)
			}
		}
		delete(doc, c.section)
	}
	for section, keys := range doc {
		t.Errorf("docs/configuration.md: rows of keys %q under %q, which is not a section of keys", keys, "## "+section)
	}
}
