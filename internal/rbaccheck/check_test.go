package rbaccheck

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// authz is a small stand-in for the apiserver's authentication and RBAC
// authorizer, answering the three self reviews from rules the way RBAC
// matches them ("*" in a rule matches anything; a "*" request matches only
// a "*" rule).
type authz struct {
	user   string
	groups []string
	// cluster rules apply in every namespace and cluster-wide; ns rules
	// only in their namespace (and not to cluster-wide access reviews).
	cluster     []authorizationv1.ResourceRule
	ns          map[string][]authorizationv1.ResourceRule
	nonResource []authorizationv1.NonResourceRule
	incomplete  bool
	masters     bool   // allow every access review, as the system:masters authorizer does
	reason      string // given with every allowed access review
	evalError   string // given with every denied access review

	ssrErr, ssarErr, ssrrErr error

	// What was asked, for the tests to check.
	accessReviews []authorizationv1.ResourceAttributes
	rulesReviews  []string
}

// defaults are what every ServiceAccount has from the bootstrap policy.
var defaults = []authorizationv1.ResourceRule{
	{Verbs: []string{"create"}, APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"selfsubjectaccessreviews", "selfsubjectrulesreviews"}},
	{Verbs: []string{"create"}, APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"selfsubjectreviews"}},
	{Verbs: []string{"get", "list", "watch"}, APIGroups: []string{"certificates.k8s.io"}, Resources: []string{"clustertrustbundles"}},
}

var discovery = []authorizationv1.NonResourceRule{
	{Verbs: []string{"get"}, NonResourceURLs: []string{"/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"}},
	{Verbs: []string{"get"}, NonResourceURLs: []string{"/.well-known/openid-configuration", "/openid/v1/jwks"}},
}

// shipped is packaging/rbac.yaml's ClusterRole.
var shipped = []authorizationv1.ResourceRule{
	{Verbs: []string{"list", "watch"}, APIGroups: []string{""}, Resources: []string{"services"}},
	{Verbs: []string{"list", "watch"}, APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}},
}

const saUser = "system:serviceaccount:kube-outpost:kube-outpost"

func newAuthz(rules ...authorizationv1.ResourceRule) *authz {
	return &authz{
		user:        saUser,
		groups:      []string{"system:serviceaccounts", "system:serviceaccounts:kube-outpost", "system:authenticated"},
		cluster:     append(slices.Clone(defaults), rules...),
		nonResource: discovery,
	}
}

func matches(ruleValues []string, v string) bool {
	return slices.Contains(ruleValues, "*") || slices.Contains(ruleValues, v)
}

func allows(rules []authorizationv1.ResourceRule, a *authorizationv1.ResourceAttributes) bool {
	res := a.Resource
	if a.Subresource != "" {
		res += "/" + a.Subresource
	}
	for _, r := range rules {
		if len(r.ResourceNames) == 0 && matches(r.Verbs, a.Verb) && matches(r.APIGroups, a.Group) && matches(r.Resources, res) {
			return true
		}
	}
	return false
}

func (z *authz) client() *fake.Clientset {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "selfsubjectreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		if z.ssrErr != nil {
			return true, nil, z.ssrErr
		}
		return true, &authenticationv1.SelfSubjectReview{Status: authenticationv1.SelfSubjectReviewStatus{
			UserInfo: authenticationv1.UserInfo{Username: z.user, Groups: z.groups},
		}}, nil
	})
	cs.PrependReactor("create", "selfsubjectaccessreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if z.ssarErr != nil {
			return true, nil, z.ssarErr
		}
		ssar := action.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).DeepCopy()
		a := ssar.Spec.ResourceAttributes
		z.accessReviews = append(z.accessReviews, *a)
		rules := z.cluster
		if a.Namespace != "" {
			rules = append(slices.Clone(rules), z.ns[a.Namespace]...)
		}
		if ssar.Status.Allowed = z.masters || allows(rules, a); ssar.Status.Allowed {
			ssar.Status.Reason = z.reason
		} else {
			ssar.Status.EvaluationError = z.evalError
		}
		return true, ssar, nil
	})
	cs.PrependReactor("create", "selfsubjectrulesreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if z.ssrrErr != nil {
			return true, nil, z.ssrrErr
		}
		rr := action.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectRulesReview).DeepCopy()
		z.rulesReviews = append(z.rulesReviews, rr.Spec.Namespace)
		rr.Status.ResourceRules = append(slices.Clone(z.cluster), z.ns[rr.Spec.Namespace]...)
		rr.Status.NonResourceRules = z.nonResource
		rr.Status.Incomplete = z.incomplete
		if z.incomplete {
			rr.Status.EvaluationError = "webhook authorizer does not support user rule resolution"
		}
		return true, rr, nil
	})
	return cs
}

func (z *authz) check(t *testing.T) *Result {
	t.Helper()
	return Check(context.Background(), z.client(), Options{})
}

func texts(r *Result, s Severity) []string {
	var out []string
	for _, f := range r.Findings {
		if f.Severity == s {
			out = append(out, f.Text)
		}
	}
	return out
}

func rule(verbs, groups, resources []string) authorizationv1.ResourceRule {
	return authorizationv1.ResourceRule{Verbs: verbs, APIGroups: groups, Resources: resources}
}

func s(v ...string) []string { return v }

func TestShippedRBACIsExactlyEnough(t *testing.T) {
	z := newAuthz(shipped...)
	r := z.check(t)
	if r.Failed() || len(r.Findings) != 0 {
		t.Fatalf("failed %v, findings %+v", r.Failed(), r.Findings)
	}
	if r.User != saUser || len(r.Groups) != 3 {
		t.Errorf("user %q groups %v", r.User, r.Groups)
	}
	if len(r.Needed) != len(Needed) {
		t.Fatalf("needed %+v", r.Needed)
	}
	for _, a := range r.Needed {
		if !a.Allowed {
			t.Errorf("%s not allowed", a.Permission)
		}
	}
	// The watcher lists and watches in all namespaces: a RoleBinding in one
	// namespace must not count, so the needed reviews are cluster-wide.
	for _, a := range z.accessReviews {
		if a.Namespace != "" {
			t.Errorf("access review in namespace %q: %+v", a.Namespace, a)
		}
	}
	if want := s("default", "kube-system", "kube-outpost"); !slices.Equal(z.rulesReviews, want) {
		t.Errorf("rules reviewed in %v, want %v (the ServiceAccount's own namespace too)", z.rulesReviews, want)
	}
}

func TestTooWeak(t *testing.T) {
	z := newAuthz(rule(s("list"), s(""), s("services")))
	r := z.check(t)
	if !r.Failed() {
		t.Fatal("not failed")
	}
	want := []Permission{Needed[1], Needed[2], Needed[3]}
	if got := r.Missing(); !slices.Equal(got, want) {
		t.Errorf("missing %v, want %v", got, want)
	}
	if len(r.Findings) != 0 {
		t.Errorf("findings %+v", r.Findings)
	}
}

// A RoleBinding in one namespace lets the watcher list nothing cluster-wide.
func TestNamespacedGrantIsNotEnough(t *testing.T) {
	z := newAuthz()
	z.ns = map[string][]authorizationv1.ResourceRule{"default": shipped}
	r := z.check(t)
	if !r.Failed() || len(r.Missing()) != 4 {
		t.Fatalf("failed %v, missing %v", r.Failed(), r.Missing())
	}
}

func TestClusterAdmin(t *testing.T) {
	z := newAuthz(rule(s("*"), s("*"), s("*")))
	z.nonResource = append(z.nonResource, authorizationv1.NonResourceRule{Verbs: s("*"), NonResourceURLs: s("*")})
	z.reason = `RBAC: allowed by ClusterRoleBinding "strong" of ClusterRole "cluster-admin" to ServiceAccount "strong/default"`
	r := z.check(t)
	if r.Failed() {
		t.Fatalf("failed: %+v", r)
	}
	w := texts(r, Warning)
	if len(w) != 1 || !strings.Contains(w[0], "may do anything") || !strings.Contains(w[0], `ClusterRole "cluster-admin"`) {
		t.Errorf("warnings %q: want one, naming the binding", w)
	}
	// Everything else would only repeat that one warning.
	if len(z.rulesReviews) != 0 {
		t.Errorf("rules reviewed in %v", z.rulesReviews)
	}
}

func TestSystemMasters(t *testing.T) {
	z := newAuthz()
	z.user, z.groups, z.masters = "lab-admin", s("system:masters", "system:authenticated"), true
	r := z.check(t)
	if r.Failed() {
		t.Fatalf("failed: %+v", r.Findings)
	}
	w := texts(r, Warning)
	if len(w) != 2 || !strings.Contains(w[0], "system:masters") || !strings.Contains(w[1], "may do anything") {
		t.Errorf("warnings %q", w)
	}
}

func TestWriteAccessAndSecrets(t *testing.T) {
	z := newAuthz(
		rule(s("get", "list", "watch", "create", "update", "delete"), s(""), s("services", "endpoints")),
		rule(s("list", "watch"), s("discovery.k8s.io"), s("endpointslices")),
		rule(s("get"), s(""), s("secrets")),
	)
	r := z.check(t)
	if r.Failed() {
		t.Fatalf("failed: %+v", r.Findings)
	}
	want := []string{
		"may get secrets in all namespaces",
		"may update services in all namespaces",
		"may delete services in all namespaces",
		// Rules, sorted; the needed verbs are taken out of the first.
		"reads Secrets: may get secrets (rule seen in namespace default, kube-system, kube-outpost)",
		"write access: may get, create, update, delete services; get, list, watch, create, update, delete endpoints " +
			"(rule seen in namespace default, kube-system, kube-outpost)",
	}
	if got := texts(r, Warning); !slices.Equal(got, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestGetIsMoreThanNeeded(t *testing.T) {
	z := newAuthz(rule(s("get", "list", "watch"), s("", "discovery.k8s.io"), s("services", "endpointslices")))
	r := z.check(t)
	// The cross product also grants endpointslices in the core group and
	// services in discovery.k8s.io, which do not exist but are not needed.
	want := "more than needed: may get services, endpointslices.discovery.k8s.io; " +
		"get, list, watch endpointslices, services.discovery.k8s.io"
	if w := texts(r, Warning); len(w) != 1 || !strings.HasPrefix(w[0], want+" (rule seen") {
		t.Errorf("warnings %q\nwant %q", w, want)
	}
}

func TestNamespacedExcessNamesItsNamespaces(t *testing.T) {
	z := newAuthz(shipped...)
	z.ns = map[string][]authorizationv1.ResourceRule{
		"kube-system":  {rule(s("get", "list"), s(""), s("secrets"))},
		"kube-outpost": {rule(s("get", "list"), s(""), s("secrets")), {Verbs: s("get"), APIGroups: s(""), Resources: s("configmaps"), ResourceNames: s("a", "b")}},
	}
	r := z.check(t)
	want := []string{
		"more than needed: may get configmaps (only the objects named a, b) (rule seen in namespace kube-outpost)",
		"reads Secrets: may get, list secrets (rule seen in namespace kube-system, kube-outpost)",
	}
	if got := texts(r, Warning); !slices.Equal(got, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestWildcards(t *testing.T) {
	z := newAuthz(shipped...)
	z.cluster = append(z.cluster, rule(s("get", "list", "watch"), s("*"), s("*")))
	z.nonResource = append(z.nonResource, authorizationv1.NonResourceRule{Verbs: s("get"), NonResourceURLs: s("*")},
		authorizationv1.NonResourceRule{Verbs: s("post"), NonResourceURLs: s("/logs")})
	r := z.check(t)
	w := texts(r, Warning)
	if len(w) < 3 {
		t.Fatalf("warnings %q", w)
	}
	// A read-only '*' rule also reads Secrets, which the targeted review
	// names first.
	for _, want := range []string{"may get secrets in all namespaces", "may list secrets in all namespaces",
		`wildcard rule: verbs [get, list, watch] on resources [*] in API groups [*]`,
		"non-resource URLs: may get *", "non-resource URLs: may post /logs"} {
		if !slices.ContainsFunc(w, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("no warning %q in\n%s", want, strings.Join(w, "\n"))
		}
	}
}

func TestIncompleteRulesAreANote(t *testing.T) {
	z := newAuthz(shipped...)
	z.incomplete = true
	r := z.check(t)
	if r.Failed() || r.Count(Warning) != 0 {
		t.Fatalf("failed %v findings %+v", r.Failed(), r.Findings)
	}
	n := texts(r, Note)
	if len(n) != 1 || !strings.Contains(n[0], "namespace default, kube-system, kube-outpost (webhook authorizer") {
		t.Errorf("notes %q", n)
	}
}

func TestRulesReviewRefusedIsANote(t *testing.T) {
	z := newAuthz(shipped...)
	z.ssrrErr = apierrors.NewForbidden(schema.GroupResource{Group: "authorization.k8s.io", Resource: "selfsubjectrulesreviews"}, "", errors.New("no"))
	r := z.check(t)
	if r.Failed() || r.Count(Warning) != 0 || r.Count(Note) != 3 {
		t.Fatalf("failed %v findings %+v", r.Failed(), r.Findings)
	}
}

func TestUnauthorized(t *testing.T) {
	z := newAuthz(shipped...)
	z.ssrErr = apierrors.NewUnauthorized("Unauthorized")
	r := z.check(t)
	if !r.Failed() || r.Needed != nil || len(r.Findings) != 1 || r.Findings[0].Kind != KindUnauthenticated {
		t.Fatalf("failed %v needed %v findings %+v", r.Failed(), r.Needed, r.Findings)
	}
	if len(z.accessReviews) != 0 {
		t.Errorf("asked %d access reviews after a 401", len(z.accessReviews))
	}
}

func TestAnonymous(t *testing.T) {
	z := newAuthz(shipped...)
	z.user, z.groups = "system:anonymous", s("system:unauthenticated")
	r := z.check(t)
	if !r.Failed() || len(r.Findings) != 1 || r.Findings[0].Kind != KindUnauthenticated || !strings.Contains(r.Findings[0].Text, "system:anonymous") {
		t.Fatalf("failed %v findings %+v", r.Failed(), r.Findings)
	}
}

// An apiserver without SelfSubjectReview (before 1.28) is still checked.
func TestNoSelfSubjectReview(t *testing.T) {
	z := newAuthz(shipped...)
	z.ssrErr = apierrors.NewNotFound(schema.GroupResource{Group: "authentication.k8s.io", Resource: "selfsubjectreviews"}, "")
	r := z.check(t)
	if r.Failed() || r.User != "" || r.Count(Note) != 1 || len(r.Needed) != 4 {
		t.Fatalf("failed %v findings %+v", r.Failed(), r.Findings)
	}
	if want := DefaultNamespaces; !slices.Equal(z.rulesReviews, want) {
		t.Errorf("rules reviewed in %v, want %v", z.rulesReviews, want)
	}
}

// Without access reviews the needed permissions are unknown, which is not
// ok.
func TestAccessReviewRefused(t *testing.T) {
	z := newAuthz(shipped...)
	z.ssarErr = apierrors.NewForbidden(schema.GroupResource{Group: "authorization.k8s.io", Resource: "selfsubjectaccessreviews"}, "", errors.New("no"))
	r := z.check(t)
	if !r.Failed() || r.Count(Error) != 1 || r.Findings[0].Kind != KindCheckFailed ||
		!strings.HasPrefix(r.Findings[0].Text, "cannot ask whether it may list services: the apiserver answered 403 Forbidden") {
		t.Fatalf("failed %v findings %+v", r.Failed(), r.Findings)
	}
}

func TestEvaluationErrorIsShown(t *testing.T) {
	z := newAuthz()
	z.evalError = "webhook timed out"
	r := z.check(t)
	if !r.Failed() || r.Needed[0].Reason != "evaluation error: webhook timed out" {
		t.Fatalf("needed %+v", r.Needed)
	}
}

func TestOptionsNamespaces(t *testing.T) {
	z := newAuthz(shipped...)
	Check(context.Background(), z.client(), Options{Namespaces: s("apps", "kube-outpost")})
	if want := s("apps", "kube-outpost"); !slices.Equal(z.rulesReviews, want) {
		t.Errorf("rules reviewed in %v, want %v", z.rulesReviews, want)
	}
}

// reach = nodeport or routes needs the Node list: then it is needed, and
// missing it fails; for a direct cluster it is excess.
func TestNodesForReach(t *testing.T) {
	nodes := rule(s("list", "watch"), s(""), s("nodes"))
	withNodes := newAuthz(append(slices.Clone(shipped), nodes)...)
	r := Check(context.Background(), withNodes.client(), Options{Nodes: true})
	if r.Failed() || len(r.Findings) != 0 || len(r.Needed) != len(Needed)+len(NodesNeeded) {
		t.Fatalf("reach with node access: failed %v, findings %+v, needed %+v", r.Failed(), r.Findings, r.Needed)
	}
	r = Check(context.Background(), newAuthz(shipped...).client(), Options{Nodes: true})
	if got := r.Missing(); !r.Failed() || !slices.Equal(got, NodesNeeded) {
		t.Fatalf("reach without node access: failed %v, missing %v", r.Failed(), got)
	}
	r = withNodes.check(t)
	if r.Failed() || len(texts(r, Warning)) == 0 {
		t.Fatalf("direct cluster with node access: failed %v, warnings %v", r.Failed(), texts(r, Warning))
	}
}
