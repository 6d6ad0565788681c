package rbaccheck

import (
	"context"
	"slices"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
)

func (z *authz) checkIn(t *testing.T, namespaces ...string) *Result {
	t.Helper()
	return Check(context.Background(), z.client(), Options{WatchNamespaces: namespaces})
}

// packaging/rbac-namespaced.yaml's Role, bound in each watched namespace,
// is exactly enough for a cluster with namespaces.
func TestNamespacedRoleIsExactlyEnough(t *testing.T) {
	z := newAuthz()
	z.ns = map[string][]authorizationv1.ResourceRule{"shop": shipped, "billing": shipped}
	r := z.checkIn(t, "shop", "billing")
	if r.Failed() || len(r.Findings) != 0 {
		t.Fatalf("failed %v, findings %+v", r.Failed(), r.Findings)
	}
	if len(r.Needed) != 2*len(Needed) {
		t.Fatalf("needed %+v, want each permission in each namespace", r.Needed)
	}
	for i, a := range r.Needed {
		if want := []string{"shop", "billing"}[i/len(Needed)]; a.Namespace != want || a.Permission != Needed[i%len(Needed)] || !a.Allowed {
			t.Errorf("needed[%d] = %+v, want %s allowed in %s", i, a, Needed[i%len(Needed)], want)
		}
	}
	for _, a := range z.accessReviews[:len(r.Needed)] {
		if a.Namespace == "" {
			t.Errorf("cluster-wide access review of a needed permission: %+v", a)
		}
	}
	// The watched namespaces are where a Role that grants more is.
	if want := s("default", "kube-system", "shop", "billing", "kube-outpost"); !slices.Equal(z.rulesReviews, want) {
		t.Errorf("rules reviewed in %v, want %v", z.rulesReviews, want)
	}
}

func TestNamespacedRoleMissingInOne(t *testing.T) {
	z := newAuthz()
	z.ns = map[string][]authorizationv1.ResourceRule{
		"shop": append(slices.Clone(shipped), rule(s("update"), s(""), s("services"))),
	}
	r := z.checkIn(t, "shop", "billing")
	if !r.Failed() || len(r.Missing()) != len(Needed) || !slices.Equal(r.missingIn(), s("billing")) {
		t.Fatalf("failed %v, missing %v in %v", r.Failed(), r.Missing(), r.missingIn())
	}
	got := "\n" + render(r)
	want := `
  user     system:serviceaccount:kube-outpost:kube-outpost
  ok       list services in namespace shop
  ok       watch services in namespace shop
  ok       list endpointslices.discovery.k8s.io in namespace shop
  ok       watch endpointslices.discovery.k8s.io in namespace shop
  MISSING  list services in namespace billing
  MISSING  watch services in namespace billing
  MISSING  list endpointslices.discovery.k8s.io in namespace billing
  MISSING  watch endpointslices.discovery.k8s.io in namespace billing
  warning  write access: may update services (rule seen in namespace shop)
  hint     for ns in billing; do sed "s/WATCHED-NAMESPACE/$ns/" /usr/share/doc/kube-outpost/rbac-namespaced.yaml | kubectl apply -f -; done (it binds this ServiceAccount)
  result   FAILED (4 permissions missing): kube-outpost cannot watch this cluster with these credentials
`
	if got != want {
		t.Errorf("got:%s\nwant:%s", got, want)
	}
}

// A ClusterRoleBinding is enough for any namespaces, and the hint for
// another ServiceAccount binds the Role to it in each namespace.
func TestNamespacesWithClusterRole(t *testing.T) {
	r := newAuthz(shipped...).checkIn(t, "shop")
	if r.Failed() || len(r.Findings) != 0 {
		t.Fatalf("failed %v, findings %+v", r.Failed(), r.Findings)
	}
	z := newAuthz()
	z.user = "system:serviceaccount:apps:reader"
	r = z.checkIn(t, "shop", "billing")
	want := `for ns in shop billing; do sed "s/WATCHED-NAMESPACE/$ns/" /usr/share/doc/kube-outpost/rbac-namespaced.yaml | kubectl apply -f -; done, ` +
		`then: for ns in shop billing; do kubectl -n "$ns" create rolebinding kube-outpost-reader --role=kube-outpost --serviceaccount=apps:reader; done`
	if h := r.hint(); h != want {
		t.Errorf("hint %q\nwant %q", h, want)
	}
}

// A check cut short in the second namespace is not ok, though every
// answer it got was.
func TestNamespacesCutShort(t *testing.T) {
	r := &Result{want: 2 * len(Needed)}
	for _, p := range Needed {
		r.Needed = append(r.Needed, Access{Permission: p, Namespace: "shop", Allowed: true})
	}
	if !r.Failed() {
		t.Error("not failed")
	}
}
