package rbaccheck

import (
	"fmt"
	"io"
	"strings"
)

// Write prints the result as the body of one block, each line indented:
// the identity, the needed permissions, the findings (errors first), a hint
// when a permission is missing, and a one-line verdict.
func (r *Result) Write(w io.Writer, indent string) {
	line := func(label, text string) { fmt.Fprintf(w, "%s%-8s %s\n", indent, label, text) }
	if r.User != "" {
		line("user", r.User)
	}
	for _, a := range r.Needed {
		if a.Allowed {
			line("ok", a.Permission.String()+" in all namespaces")
			continue
		}
		line("MISSING", a.Permission.String()+" in all namespaces"+because(a.Reason))
	}
	for _, s := range []Severity{Error, Warning, Note} {
		for _, f := range r.Findings {
			if f.Severity == s {
				line(s.String(), f.Text)
			}
		}
	}
	if hint := r.hint(); hint != "" {
		line("hint", hint)
	}
	line("result", r.verdict())
}

// hint says how to grant what is missing, to the identity found.
func (r *Result) hint() string {
	if len(r.Missing()) == 0 {
		return ""
	}
	// The file is packaging/rbac.yaml in the source, and installed with
	// the documentation, where the operator reading this finds it.
	const apply = "kubectl apply -f /usr/share/doc/kube-outpost/rbac.yaml"
	parts := strings.Split(r.User, ":")
	switch {
	case r.User == "system:serviceaccount:kube-outpost:kube-outpost":
		return apply + " (it binds this ServiceAccount)"
	case len(parts) == 4 && parts[0] == "system" && parts[1] == "serviceaccount":
		return fmt.Sprintf("%s, then: kubectl create clusterrolebinding kube-outpost-%s --clusterrole=kube-outpost --serviceaccount=%s:%s",
			apply, parts[3], parts[2], parts[3])
	case r.User != "":
		return fmt.Sprintf("%s, then: kubectl create clusterrolebinding kube-outpost-user --clusterrole=kube-outpost --user=%s", apply, r.User)
	}
	return "bind the ClusterRole of /usr/share/doc/kube-outpost/rbac.yaml to these credentials' user"
}

// verdict is the last line of a block: what to do about this cluster.
func (r *Result) verdict() string {
	if r.Failed() {
		var why []string
		kinds := map[Kind]bool{}
		for _, f := range r.Findings {
			if f.Severity == Error && !kinds[f.Kind] {
				kinds[f.Kind] = true
				why = append(why, string(f.Kind))
			}
		}
		if n := len(r.Missing()); n > 0 {
			why = append(why, plural(n, "permission")+" missing")
		}
		return "FAILED (" + strings.Join(why, ", ") + "): kube-outpost cannot watch this cluster with these credentials"
	}
	if n := r.Count(Warning); n > 0 {
		return "ok, with " + plural(n, "warning") + ": kube-outpost needs only list and watch on services and endpointslices; " +
			"credentials that can do more are worth more to whoever steals them from this host"
	}
	return "ok"
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
