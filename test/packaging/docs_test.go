package packaging

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// docs are the Markdown files a reader follows links between.
func docs(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no docs/*.md")
	}
	return append([]string{"../../README.md"}, files...)
}

var (
	headingRE = regexp.MustCompile(`^#{1,6} +(.*?) *#*$`)
	// linkRE finds [text](target); images and reference links are not used.
	linkRE     = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	inlineLink = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
	codeSpan   = regexp.MustCompile("`[^`]*`")
)

// prose returns the lines of a Markdown file outside fenced code blocks,
// by line number.
func prose(data string) map[int]string {
	out := map[int]string{}
	fence := false
	for i, line := range strings.Split(data, "\n") {
		if strings.HasPrefix(line, "```") {
			fence = !fence
			continue
		}
		if !fence {
			out[i+1] = line
		}
	}
	return out
}

// slug is GitHub's anchor for a heading: lower case, every character but
// letters, digits, '_', '-' and spaces dropped, spaces turned into '-'.
func slug(heading string) string {
	heading = inlineLink.ReplaceAllString(heading, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '-':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

// anchors are the anchors of a Markdown file's headings, repeated ones
// numbered as GitHub numbers them.
func anchors(data string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	lines := prose(data)
	for n := 1; n <= len(strings.Split(data, "\n")); n++ {
		m := headingRE.FindStringSubmatch(lines[n])
		if m == nil {
			continue
		}
		s := slug(m[1])
		if k := seen[s]; k > 0 {
			out[fmt.Sprintf("%s-%d", s, k)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

// TestDocLinks: every relative link in the README and docs/ leads to a file
// that exists and, with a #fragment, to a heading of that file. A section
// that moves or is renamed breaks the links to it here, not in a reader's
// browser.
func TestDocLinks(t *testing.T) {
	cache := map[string]map[string]bool{}
	for _, file := range docs(t) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		cache[filepath.Clean(file)] = anchors(string(data))
		for n, line := range prose(string(data)) {
			for _, m := range linkRE.FindAllStringSubmatch(codeSpan.ReplaceAllString(line, ""), -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				path, frag, _ := strings.Cut(target, "#")
				dest := filepath.Clean(file)
				if path != "" {
					dest = filepath.Join(filepath.Dir(file), path)
				}
				where := fmt.Sprintf("%s:%d: link %s", strings.TrimPrefix(file, "../../"), n, target)
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s: %v", where, err)
					continue
				}
				if frag == "" {
					continue
				}
				if !strings.HasSuffix(dest, ".md") {
					t.Errorf("%s: a fragment on a file that is not Markdown", where)
					continue
				}
				a, ok := cache[dest]
				if !ok {
					d, err := os.ReadFile(dest)
					if err != nil {
						t.Fatal(err)
					}
					a = anchors(string(d))
					cache[dest] = a
				}
				if !a[frag] {
					t.Errorf("%s: %s has no heading with the anchor #%s", where, strings.TrimPrefix(dest, "../../"), frag)
				}
			}
		}
	}
}

// TestSlug pins the anchors GitHub makes of headings like ours.
func TestSlug(t *testing.T) {
	for h, want := range map[string]string{
		"Serving hosts routed through this one (`routed_clients`)": "serving-hosts-routed-through-this-one-routed_clients",
		"`reach = \"routes\"`":                               "reach--routes",
		"Credentials for `namespaces`: a Role per namespace": "credentials-for-namespaces-a-role-per-namespace",
		"1. Route the host's traffic with a Node's pod CIDR": "1-route-the-hosts-traffic-with-a-nodes-pod-cidr",
	} {
		if got := slug(h); got != want {
			t.Errorf("slug(%q) = %q, want %q", h, got, want)
		}
	}
}

// TestPackageShipsDocs: the package carries the README and the pages it
// links to, in the same layout, so that its links work in
// /usr/share/doc/kube-outpost too.
func TestPackageShipsDocs(t *testing.T) {
	data, err := os.ReadFile("../../nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"- src: README.md\n    dst: /usr/share/doc/kube-outpost/README.md",
		"- src: docs/*.md\n    dst: /usr/share/doc/kube-outpost/docs/",
	} {
		if !strings.Contains(string(data), want) {
			t.Errorf("nfpm.yaml does not ship %q", want)
		}
	}
}
