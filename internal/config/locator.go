package config

import (
	"regexp"
	"strings"
)

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
