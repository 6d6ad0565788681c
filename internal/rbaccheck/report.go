package rbaccheck

import (
	"fmt"
	"io"
	"slices"
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
			line("ok", a.Permission.String()+inNamespace(a.Namespace))
			continue
		}
		line("MISSING", a.Permission.String()+inNamespace(a.Namespace)+because(a.Reason))
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
	missing := r.missingIn()
	if len(missing) == 0 {
		return ""
	}
	if !slices.Contains(missing, "") {
		return r.namespacedHint(missing)
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

// NamespacePlaceholder stands for the watched namespace in
// packaging/rbac-namespaced.yaml; it is not a valid namespace name, so a
// copy applied without replacing it fails instead of granting nothing.
const NamespacePlaceholder = "WATCHED-NAMESPACE"

// namespacedHint is hint for a cluster whose namespaces are listed: a Role
// in each namespace that lacks a permission, from rbac-namespaced.yaml.
func (r *Result) namespacedHint(namespaces []string) string {
	apply := fmt.Sprintf(`for ns in %s; do sed "s/%s/$ns/" /usr/share/doc/kube-outpost/rbac-namespaced.yaml | kubectl apply -f -; done`,
		strings.Join(namespaces, " "), NamespacePlaceholder)
	bind := ""
	parts := strings.Split(r.User, ":")
	switch {
	case r.User == "system:serviceaccount:kube-outpost:kube-outpost":
		return apply + " (it binds this ServiceAccount)"
	case len(parts) == 4 && parts[0] == "system" && parts[1] == "serviceaccount":
		bind = "--serviceaccount=" + parts[2] + ":" + parts[3]
	case r.User != "":
		bind = "--user=" + r.User
	default:
		return "bind the Role of /usr/share/doc/kube-outpost/rbac-namespaced.yaml to these credentials' user in namespace " + strings.Join(namespaces, ", ")
	}
	return fmt.Sprintf(`%s, then: for ns in %s; do kubectl -n "$ns" create rolebinding kube-outpost-%s --role=kube-outpost %s; done`,
		apply, strings.Join(namespaces, " "), parts[len(parts)-1], bind)
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
