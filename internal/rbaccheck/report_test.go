package rbaccheck

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

func render(r *Result) string {
	var b strings.Builder
	r.Write(&b, "  ")
	return b.String()
}

func TestWrite(t *testing.T) {
	good := newAuthz(shipped...)
	weak := newAuthz(rule(s("list"), s(""), s("services")))
	weak.user = "system:serviceaccount:apps:reader"
	strong := newAuthz(rule(s("*"), s("*"), s("*")))
	strong.reason = `RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "cluster-admin" to ServiceAccount "reader/apps"`
	unauth := newAuthz()
	unauth.ssrErr = apierrors.NewUnauthorized("Unauthorized")
	incomplete := newAuthz(shipped...)
	incomplete.incomplete = true

	for _, c := range []struct {
		name string
		z    *authz
		want string
	}{
		{"good", good, `
  user     system:serviceaccount:kube-outpost:kube-outpost
  ok       list services in all namespaces
  ok       watch services in all namespaces
  ok       list endpointslices.discovery.k8s.io in all namespaces
  ok       watch endpointslices.discovery.k8s.io in all namespaces
  result   ok
`},
		{"too weak", weak, `
  user     system:serviceaccount:apps:reader
  ok       list services in all namespaces
  MISSING  watch services in all namespaces
  MISSING  list endpointslices.discovery.k8s.io in all namespaces
  MISSING  watch endpointslices.discovery.k8s.io in all namespaces
  hint     kubectl apply -f /usr/share/doc/kube-outpost/rbac.yaml, then: kubectl create clusterrolebinding kube-outpost-reader --clusterrole=kube-outpost --serviceaccount=apps:reader
  result   FAILED (3 permissions missing): kube-outpost cannot watch this cluster with these credentials
`},
		{"too strong", strong, `
  user     system:serviceaccount:kube-outpost:kube-outpost
  ok       list services in all namespaces
  ok       watch services in all namespaces
  ok       list endpointslices.discovery.k8s.io in all namespaces
  ok       watch endpointslices.discovery.k8s.io in all namespaces
  warning  may do anything in the cluster (cluster-admin or equivalent): RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "cluster-admin" to ServiceAccount "reader/apps"
  result   ok, with 1 warning: kube-outpost needs only list and watch on services and endpointslices; credentials that can do more are worth more to whoever steals them from this host
`},
		{"unauthenticated", unauth, `
  error    authentication failed (401 Unauthorized): the apiserver rejects these credentials (a wrong or expired token, the token of a deleted ServiceAccount, or a client certificate it does not trust)
  result   FAILED (unauthenticated): kube-outpost cannot watch this cluster with these credentials
`},
		{"incomplete", incomplete, `
  user     system:serviceaccount:kube-outpost:kube-outpost
  ok       list services in all namespaces
  ok       watch services in all namespaces
  ok       list endpointslices.discovery.k8s.io in all namespaces
  ok       watch endpointslices.discovery.k8s.io in all namespaces
  note     the apiserver could not list every rule (an authorizer other than RBAC, such as a webhook?) in namespace default, kube-system, kube-outpost (webhook authorizer does not support user rule resolution): excess granted there is only found by the targeted checks above
  result   ok
`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := "\n" + render(Check(context.Background(), c.z.client(), Options{}))
			if got != c.want {
				t.Errorf("got:%s\nwant:%s", got, c.want)
			}
		})
	}
}

// Errors come before warnings and notes whatever order they were found in.
func TestWriteOrdersBySeverity(t *testing.T) {
	r := &Result{Findings: []Finding{
		{Severity: Note, Text: "n"}, {Severity: Warning, Text: "w"}, {Severity: Error, Kind: KindUnreachable, Text: "e"},
	}}
	got := render(r)
	want := "  note     n\n"
	if i, j, k := strings.Index(got, "error    e"), strings.Index(got, "warning  w"), strings.Index(got, want); i < 0 || j < i || k < j {
		t.Errorf("order wrong:\n%s", got)
	}
	if !strings.HasSuffix(got, "  result   FAILED (unreachable): kube-outpost cannot watch this cluster with these credentials\n") {
		t.Errorf("verdict wrong:\n%s", got)
	}
}

func TestHintForUser(t *testing.T) {
	r := &Result{User: "jane", Needed: []Access{{Permission: Needed[0]}}}
	if h := r.hint(); !strings.HasSuffix(h, "--clusterrole=kube-outpost --user=jane") {
		t.Errorf("hint %q", h)
	}
	r.User = saUser
	if h := r.hint(); h != "kubectl apply -f /usr/share/doc/kube-outpost/rbac.yaml (it binds this ServiceAccount)" {
		t.Errorf("hint %q", h)
	}
}
