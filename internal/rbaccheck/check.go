// Package rbaccheck asks a cluster's apiserver whether a kubeconfig's
// credentials authenticate, whether they grant every permission
// kube-outpost's watcher needs, and whether they grant more than that.
//
// It only asks the apiserver about the caller itself (SelfSubjectReview,
// SelfSubjectAccessReview, SelfSubjectRulesReview), which every
// authenticated identity may do by default, so it works with the
// least-privilege credentials it checks.
//
// What it can and cannot see:
//
//   - The needed permissions are checked exactly: a SelfSubjectAccessReview
//     goes through the apiserver's whole authorizer chain (RBAC, webhooks,
//     system:masters), as the watcher's own requests will, and where they
//     will: cluster-wide, or in each of a cluster's namespaces.
//   - Excess is found two ways, each with its blind spots. Targeted access
//     reviews of a few dangerous capabilities (everything, Secrets, creating
//     pods, writing the watched resources, granting RBAC, impersonation)
//     also see webhook authorizers and name the binding that grants them,
//     but only cover the capabilities asked about, cluster-wide. Rules
//     reviews list every rule RBAC grants, but per namespace: they see
//     ClusterRoleBindings and the RoleBindings of the namespaces asked
//     about (default, kube-system, the watched ones and the
//     ServiceAccount's own), not
//     RoleBindings in other namespaces, which cannot be enumerated with
//     the permissions being checked. Authorizers that cannot list their
//     rules (webhooks) make the review "incomplete"; that is reported as a
//     note.
//   - What every identity gets from Kubernetes' default policy (discovery,
//     self reviews, ClusterTrustBundles for ServiceAccounts) is not excess.
//     Defaults that a distribution adds on top of those are reported.
package rbaccheck

import (
	"context"
	"fmt"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Permission is a verb on a resource. The watcher needs it in all
// namespaces, or, when a cluster's namespaces are listed, in each of them:
// its informers are cluster-wide, or one per listed namespace.
type Permission struct {
	Verb        string
	Group       string
	Resource    string
	Subresource string
}

// String is kubectl's spelling: "watch endpointslices.discovery.k8s.io".
func (p Permission) String() string {
	return p.Verb + " " + resourceName(p.Group, p.Resource, p.Subresource)
}

func resourceName(group, resource, sub string) string {
	s := resource
	if group != "" {
		s += "." + group
	}
	if sub != "" {
		s += "/" + sub
	}
	return s
}

// Needed is what the watcher (internal/cluster) does: an informer per
// resource (and watched namespace), which lists and then watches. It never
// gets a single object, so get is not needed.
var Needed = []Permission{
	{Verb: "list", Resource: "services"},
	{Verb: "watch", Resource: "services"},
	{Verb: "list", Group: "discovery.k8s.io", Resource: "endpointslices"},
	{Verb: "watch", Group: "discovery.k8s.io", Resource: "endpointslices"},
}

// NodesNeeded is what a cluster with reach = "nodeport" or "routes" needs
// on top of Needed: its node watcher lists and watches Nodes, which are
// cluster-scoped. For a direct cluster it is excess.
var NodesNeeded = []Permission{
	{Verb: "list", Resource: "nodes"},
	{Verb: "watch", Resource: "nodes"},
}

// everything is asked first: when it is allowed, every other excess check
// would only repeat it.
var everything = Permission{Verb: "*", Group: "*", Resource: "*"}

// probes are the capabilities that make leaked credentials dangerous, asked
// about cluster-wide through the whole authorizer chain. A request for "*"
// matches only rules that grant "*", so everything above cannot be
// confused with any of these.
var probes = []Permission{
	{Verb: "get", Resource: "secrets"},
	{Verb: "list", Resource: "secrets"},
	{Verb: "create", Resource: "pods"},
	{Verb: "create", Resource: "pods", Subresource: "exec"},
	{Verb: "update", Resource: "services"},
	{Verb: "delete", Resource: "services"},
	{Verb: "update", Group: "discovery.k8s.io", Resource: "endpointslices"},
	{Verb: "delete", Group: "discovery.k8s.io", Resource: "endpointslices"},
	{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings"},
	{Verb: "impersonate", Resource: "serviceaccounts"},
	{Verb: "impersonate", Resource: "users"},
}

// defaultGrants are what Kubernetes' bootstrap policy gives every
// authenticated identity (system:basic-user) and every ServiceAccount
// (system:cluster-trust-bundle-discovery, on by default since 1.37).
// Read-only non-resource URLs (system:discovery, system:public-info-viewer,
// system:service-account-issuer-discovery) are skipped by nonResource.
var defaultGrants = []Permission{
	{Verb: "create", Group: "authorization.k8s.io", Resource: "selfsubjectaccessreviews"},
	{Verb: "create", Group: "authorization.k8s.io", Resource: "selfsubjectrulesreviews"},
	{Verb: "create", Group: "authentication.k8s.io", Resource: "selfsubjectreviews"},
	{Verb: "get", Group: "certificates.k8s.io", Resource: "clustertrustbundles"},
	{Verb: "list", Group: "certificates.k8s.io", Resource: "clustertrustbundles"},
	{Verb: "watch", Group: "certificates.k8s.io", Resource: "clustertrustbundles"},
}

// DefaultNamespaces are asked for rules: the ones every cluster has. The
// ServiceAccount's own namespace is added, where a stray RoleBinding is most
// likely.
var DefaultNamespaces = []string{"default", "kube-system"}

// Severity orders findings; only errors make a check fail.
type Severity int

const (
	Note Severity = iota
	Warning
	Error
)

func (s Severity) String() string {
	switch s {
	case Error:
		return "error"
	case Warning:
		return "warning"
	}
	return "note"
}

// Kind says what a finding is about, for callers that act on it.
type Kind string

const (
	// KindUnreachable: no HTTP answer (refused, no route, timeout, DNS).
	KindUnreachable Kind = "unreachable"
	// KindTLS: the TLS handshake failed (unknown CA, wrong name, expired).
	KindTLS Kind = "tls"
	// KindUnauthenticated: the apiserver rejected the credentials (401),
	// or took the caller for system:anonymous.
	KindUnauthenticated Kind = "unauthenticated"
	// KindCheckFailed: the apiserver answered, but a review failed.
	KindCheckFailed Kind = "check-failed"
	// KindExcess: a permission beyond Needed.
	KindExcess Kind = "excess"
	// KindIncomplete: the excess check could not see everything.
	KindIncomplete Kind = "incomplete"
)

// Finding is one thing the check found, besides the needed permissions.
type Finding struct {
	Severity Severity
	Kind     Kind
	Text     string
}

// Access is the answer for one needed permission.
type Access struct {
	Permission
	// Namespace is where it was asked for; "" is all namespaces.
	Namespace string
	Allowed   bool
	// Reason is the authorizer's explanation, e.g. the binding that allows
	// it; often empty for a denial.
	Reason string
}

// Result is what one cluster's check found.
type Result struct {
	// User and Groups are who the apiserver takes the credentials for;
	// empty when it could not tell.
	User   string
	Groups []string
	// Needed has one entry per Needed permission, in that order, for each
	// watched namespace in turn (Options.WatchNamespaces); nil when the
	// check could not get that far (see Findings).
	Needed   []Access
	Findings []Finding
	// alsoNeeded are needed beyond Needed (NodesNeeded), not excess.
	alsoNeeded []Permission
	// want is how many entries Needed must have.
	want int
}

// Failed reports whether kube-outpost could not work with these
// credentials: unreachable, unauthenticated, or a needed permission missing
// or unknown.
func (r *Result) Failed() bool {
	if len(r.Needed) < max(r.want, len(Needed)) {
		return true
	}
	for _, a := range r.Needed {
		if !a.Allowed {
			return true
		}
	}
	return r.Count(Error) > 0
}

// Missing returns the needed permissions that are not granted, once for
// each namespace they are missing in.
func (r *Result) Missing() []Permission {
	var out []Permission
	for _, a := range r.Needed {
		if !a.Allowed {
			out = append(out, a.Permission)
		}
	}
	return out
}

// missingIn returns the namespaces a needed permission is missing in, in
// the order asked; "" stands for all namespaces.
func (r *Result) missingIn() []string {
	var out []string
	for _, a := range r.Needed {
		if !a.Allowed && !slices.Contains(out, a.Namespace) {
			out = append(out, a.Namespace)
		}
	}
	return out
}

// Count returns how many findings have severity s.
func (r *Result) Count(s Severity) int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == s {
			n++
		}
	}
	return n
}

func (r *Result) add(s Severity, k Kind, format string, args ...any) {
	r.Findings = append(r.Findings, Finding{Severity: s, Kind: k, Text: fmt.Sprintf(format, args...)})
}

// Options tune a check; the zero value is the default.
type Options struct {
	// Namespaces whose rules are reviewed; DefaultNamespaces when nil.
	// The watched namespaces are reviewed as well.
	Namespaces []string
	// WatchNamespaces are the namespaces the watcher lists and watches in,
	// a cluster's `namespaces`: the needed permissions are asked for in
	// each of them. Nil means all namespaces, with cluster-wide informers.
	WatchNamespaces []string
	// Nodes: the cluster's reach needs the Node list (NodesNeeded).
	Nodes bool
}

// Check asks the apiserver behind client about the caller's identity and
// permissions. It never fails as a whole: problems, connection errors
// included, are findings of the result.
func Check(ctx context.Context, client kubernetes.Interface, opts Options) *Result {
	r := &Result{}
	if !r.authenticate(ctx, client) {
		return r
	}
	watched := opts.WatchNamespaces
	if len(watched) == 0 {
		watched = []string{metav1.NamespaceAll}
	}
	type ask struct {
		p  Permission
		ns string
	}
	var asks []ask
	for _, ns := range watched {
		for _, p := range Needed {
			asks = append(asks, ask{p, ns})
		}
	}
	if opts.Nodes {
		r.alsoNeeded = NodesNeeded
		for _, p := range NodesNeeded {
			asks = append(asks, ask{p, metav1.NamespaceAll})
		}
	}
	r.want = len(asks)
	for _, a := range asks {
		p, ns := a.p, a.ns
		st, err := reviewIn(ctx, client, p, ns)
		if err != nil {
			doing := "cannot ask whether it may " + p.String()
			if ns != "" {
				doing += inNamespace(ns)
			}
			r.fail(err, doing)
			r.Needed = nil // unknown is not ok: Failed says so
			return r
		}
		r.Needed = append(r.Needed, Access{Permission: p, Namespace: ns, Allowed: st.Allowed, Reason: reason(st)})
	}
	r.excess(ctx, client, opts)
	return r
}

// authenticate finds out who the credentials are; false when they are not
// usable at all (or the apiserver is not reachable).
func (r *Result) authenticate(ctx context.Context, client kubernetes.Interface) bool {
	ssr, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	switch {
	case err == nil:
		r.User, r.Groups = ssr.Status.UserInfo.Username, ssr.Status.UserInfo.Groups
	case apierrors.IsNotFound(err), apierrors.IsForbidden(err), apierrors.IsMethodNotSupported(err):
		// An apiserver before 1.28, or one that turned the API off: the
		// credentials got past authentication (401 otherwise), so go on
		// without a name.
		r.add(Note, KindIncomplete, "cannot tell who the credentials belong to: %v", err)
		return true
	default:
		r.fail(err, "")
		return false
	}
	if r.User == "system:anonymous" {
		r.add(Error, KindUnauthenticated, "the apiserver takes these credentials for system:anonymous: "+
			"the kubeconfig has no token or client certificate that it accepts")
		return false
	}
	if slices.Contains(r.Groups, "system:masters") {
		r.add(Warning, KindExcess, "member of group system:masters: every request is allowed, and no RBAC rule can restrict it")
	}
	return true
}

// fail records err as an error finding of the kind Describe gives it.
func (r *Result) fail(err error, doing string) {
	kind, text := Describe(err)
	if doing != "" {
		text = doing + ": " + text
	}
	r.add(Error, kind, "%s", text)
}

// inNamespace is how a namespace is named after a permission.
func inNamespace(ns string) string {
	if ns == "" {
		return " in all namespaces"
	}
	return " in namespace " + ns
}

// review asks whether p is allowed cluster-wide.
func review(ctx context.Context, client kubernetes.Interface, p Permission) (authorizationv1.SubjectAccessReviewStatus, error) {
	return reviewIn(ctx, client, p, metav1.NamespaceAll)
}

// reviewIn asks whether p is allowed in namespace ns ("" is all).
func reviewIn(ctx context.Context, client kubernetes.Interface, p Permission, ns string) (authorizationv1.SubjectAccessReviewStatus, error) {
	ssar := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: p.Verb, Group: p.Group, Resource: p.Resource, Subresource: p.Subresource},
	}}
	res, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, ssar, metav1.CreateOptions{})
	if err != nil {
		return authorizationv1.SubjectAccessReviewStatus{}, err
	}
	return res.Status, nil
}

func reason(st authorizationv1.SubjectAccessReviewStatus) string {
	switch {
	case st.Reason != "" && st.EvaluationError != "":
		return st.Reason + " (evaluation error: " + st.EvaluationError + ")"
	case st.EvaluationError != "":
		return "evaluation error: " + st.EvaluationError
	}
	return st.Reason
}

// excess adds a warning for each permission beyond Needed that it finds.
func (r *Result) excess(ctx context.Context, client kubernetes.Interface, opts Options) {
	st, err := review(ctx, client, everything)
	if err != nil {
		r.add(Note, KindIncomplete, "cannot check for excess permissions: %v", err)
		return
	}
	if st.Allowed {
		r.add(Warning, KindExcess, "may do anything in the cluster (cluster-admin or equivalent)%s", because(reason(st)))
		return
	}
	for _, p := range probes {
		st, err := review(ctx, client, p)
		if err != nil {
			r.add(Note, KindIncomplete, "cannot ask whether it may %s: %v", p, err)
			continue
		}
		if st.Allowed {
			r.add(Warning, KindExcess, "may %s in all namespaces%s", p, because(reason(st)))
		}
	}
	r.rules(ctx, client, r.namespaces(opts))
}

func because(reason string) string {
	if reason == "" {
		return ""
	}
	return ": " + reason
}

// namespaces are the ones to review rules in: the configured ones, the
// watched ones (where a Role grants what is needed, and maybe more), and a
// ServiceAccount's own.
func (r *Result) namespaces(opts Options) []string {
	ns := slices.Clone(opts.Namespaces)
	if ns == nil {
		ns = slices.Clone(DefaultNamespaces)
	}
	ns = append(ns, opts.WatchNamespaces...)
	if parts := strings.Split(r.User, ":"); len(parts) == 4 && parts[0] == "system" && parts[1] == "serviceaccount" {
		ns = append(ns, parts[2])
	}
	var out []string
	for _, n := range ns {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// rules reviews the rules granted in each namespace and warns once for each
// rule that grants more than Needed and the defaults, naming the namespaces
// it was seen in.
func (r *Result) rules(ctx context.Context, client kubernetes.Interface, namespaces []string) {
	type seen struct {
		text       string
		namespaces []string
	}
	var found []*seen
	byText := map[string]*seen{}
	note := func(text, ns string) {
		s := byText[text]
		if s == nil {
			s = &seen{text: text}
			byText[text] = s
			found = append(found, s)
		}
		if !slices.Contains(s.namespaces, ns) {
			s.namespaces = append(s.namespaces, ns)
		}
	}
	// Namespaces whose rules are incomplete, by the reason given.
	var incomplete []*seen
	for _, ns := range namespaces {
		rr, err := client.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx,
			&authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns}}, metav1.CreateOptions{})
		if err != nil {
			r.add(Note, KindIncomplete, "cannot list the rules in namespace %s: %v", ns, err)
			continue
		}
		for _, rule := range rr.Status.ResourceRules {
			if text := resourceExcess(rule, r.alsoNeeded); text != "" {
				note(text, ns)
			}
		}
		for _, rule := range rr.Status.NonResourceRules {
			if text := nonResourceExcess(rule); text != "" {
				note(text, ns)
			}
		}
		if rr.Status.Incomplete {
			i := slices.IndexFunc(incomplete, func(s *seen) bool { return s.text == rr.Status.EvaluationError })
			if i < 0 {
				incomplete = append(incomplete, &seen{text: rr.Status.EvaluationError})
				i = len(incomplete) - 1
			}
			incomplete[i].namespaces = append(incomplete[i].namespaces, ns)
		}
	}
	// The apiserver lists rules in no particular order.
	slices.SortFunc(found, func(a, b *seen) int { return strings.Compare(a.text, b.text) })
	for _, s := range found {
		r.add(Warning, KindExcess, "%s (rule seen in namespace %s)", s.text, strings.Join(s.namespaces, ", "))
	}
	if len(incomplete) > 0 {
		where := make([]string, len(incomplete))
		for i, s := range incomplete {
			where[i] = "namespace " + strings.Join(s.namespaces, ", ")
			if s.text != "" {
				where[i] += " (" + s.text + ")"
			}
		}
		r.add(Note, KindIncomplete, "the apiserver could not list every rule (an authorizer other than RBAC, such as a webhook?) "+
			"in %s: excess granted there is only found by the targeted checks above", strings.Join(where, "; "))
	}
}

// readVerbs only read; every other verb writes, or escalates.
var readVerbs = []string{"get", "list", "watch"}

// resourceExcess describes what a rule grants beyond Needed and the
// defaults, or returns "" when nothing.
func resourceExcess(rule authorizationv1.ResourceRule, alsoNeeded []Permission) string {
	names := ""
	if len(rule.ResourceNames) > 0 {
		names = " (only the objects named " + strings.Join(rule.ResourceNames, ", ") + ")"
	}
	if slices.Contains(rule.Verbs, "*") || slices.Contains(rule.APIGroups, "*") || slices.Contains(rule.Resources, "*") {
		return fmt.Sprintf("wildcard rule: verbs %s on resources %s in API groups %s%s",
			list(rule.Verbs), list(rule.Resources), groups(rule.APIGroups), names)
	}
	// What is left of the rule once the needed and default permissions are
	// taken out, as verbs per resource, in the rule's own order.
	type left struct {
		verbs     []string
		resources []string
	}
	var lefts []*left
	write, secrets := false, false
	for _, g := range rule.APIGroups {
		for _, res := range rule.Resources {
			var verbs []string
			for _, v := range rule.Verbs {
				p := Permission{Verb: v, Group: g, Resource: res}
				if slices.Contains(Needed, p) || slices.Contains(alsoNeeded, p) || slices.Contains(defaultGrants, p) {
					continue
				}
				verbs = append(verbs, v)
				write = write || !slices.Contains(readVerbs, v)
				secrets = secrets || (g == "" && res == "secrets")
			}
			if len(verbs) == 0 {
				continue
			}
			i := slices.IndexFunc(lefts, func(l *left) bool { return slices.Equal(l.verbs, verbs) })
			if i < 0 {
				lefts = append(lefts, &left{verbs: verbs})
				i = len(lefts) - 1
			}
			lefts[i].resources = append(lefts[i].resources, resourceName(g, res, ""))
		}
	}
	if len(lefts) == 0 {
		return ""
	}
	parts := make([]string, len(lefts))
	for i, l := range lefts {
		parts[i] = strings.Join(l.verbs, ", ") + " " + strings.Join(l.resources, ", ")
	}
	what := "more than needed"
	switch {
	case write:
		what = "write access"
	case secrets:
		what = "reads Secrets"
	}
	return what + ": may " + strings.Join(parts, "; ") + names
}

// nonResourceExcess describes a non-resource rule beyond read-only paths.
// Discovery and health paths are readable by everyone by default; only
// "get *" (which includes /debug/pprof, /logs and /metrics) or another verb
// is worth a warning.
func nonResourceExcess(rule authorizationv1.NonResourceRule) string {
	readOnly := true
	for _, v := range rule.Verbs {
		if v != "get" && v != "head" {
			readOnly = false
		}
	}
	if readOnly && !slices.Contains(rule.NonResourceURLs, "*") {
		return ""
	}
	return fmt.Sprintf("non-resource URLs: may %s %s", strings.Join(rule.Verbs, ", "), strings.Join(rule.NonResourceURLs, ", "))
}

func list(s []string) string { return "[" + strings.Join(s, ", ") + "]" }

func groups(gs []string) string {
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g
		if g == "" {
			out[i] = `"" (core)`
		}
	}
	return list(out)
}
