//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// TestRBACCheckOnline runs `check-config --online` from the outside host
// against a real apiserver with RBAC, with credentials that are exactly
// right (the lab's, made from packaging/rbac.yaml), too weak, too strong
// (cluster-admin, and a mix of cluster-wide writes and a namespaced Secret
// read), rejected, for another CA, and for a port nothing listens on.
func TestRBACCheckOnline(t *testing.T) {
	alpha, beta := theLab.Cluster("alpha"), theLab.Cluster("beta")
	ns := namespace(t, alpha.Admin, "rbac-check")
	// Unique names: the lab may be kept (KO_LAB_KEEP) and the test run again.
	suffix := rbacRandom(t)

	labKC, err := clientcmd.LoadFromFile(alpha.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	server := labKC.Clusters[labKC.Contexts[labKC.CurrentContext].Cluster].Server
	ca, err := os.ReadFile(alpha.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := os.ReadFile(beta.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := net.SplitHostPort(strings.TrimPrefix(server, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	closedPort := "https://" + net.JoinHostPort(host, "6444")

	// Bound to list services only: no watch, no EndpointSlices.
	weak := rbacAccount(t, ns, "weak-"+suffix, []rbacv1.PolicyRule{
		{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"services"}},
	}, "")
	weakKC := rbacKubeconfig(t, "weak", server, ca, weak)
	rbacWaitAllowed(t, weakKC, authorizationv1.ResourceAttributes{Verb: "list", Resource: "services"})

	strongBinding := "rbac-check-strong-" + suffix
	strong := rbacAccount(t, ns, "strong-"+suffix, nil, "cluster-admin")
	strongKC := rbacKubeconfig(t, "strong", server, ca, strong)
	rbacWaitAllowed(t, strongKC, authorizationv1.ResourceAttributes{Verb: "*", Group: "*", Resource: "*"})

	// Enough, plus writes on services cluster-wide, and Secrets in
	// kube-system only, through a RoleBinding there.
	leaky := rbacAccount(t, ns, "leaky-"+suffix, []rbacv1.PolicyRule{
		{Verbs: []string{"get", "list", "watch", "update", "delete"}, APIGroups: []string{""}, Resources: []string{"services"}},
		{Verbs: []string{"list", "watch"}, APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}},
	}, "")
	rbacRoleBinding(t, "kube-system", ns, "leaky-"+suffix, []rbacv1.PolicyRule{
		{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"secrets"}},
	})
	leakyKC := rbacKubeconfig(t, "leaky", server, ca, leaky)
	rbacWaitAllowed(t, leakyKC, authorizationv1.ResourceAttributes{Verb: "get", Resource: "secrets", Namespace: "kube-system"})
	rbacWaitAllowed(t, leakyKC, authorizationv1.ResourceAttributes{Verb: "watch", Group: "discovery.k8s.io", Resource: "endpointslices"})

	for _, c := range []struct {
		name     string
		clusters []rbacCluster
		code     int
		want     []string // in this order
		absent   []string
	}{
		{
			name:     "least privilege",
			clusters: []rbacCluster{{"alpha", alpha.Kubeconfig, alphaRange.String()}, {"beta", beta.Kubeconfig, betaRange.String()}},
			code:     0,
			want: []string{
				`cluster "alpha": ` + server,
				"  user     system:serviceaccount:kube-outpost:kube-outpost\n",
				"  ok       list services in all namespaces\n",
				"  ok       watch services in all namespaces\n",
				"  ok       list endpointslices.discovery.k8s.io in all namespaces\n",
				"  ok       watch endpointslices.discovery.k8s.io in all namespaces\n",
				"  result   ok\n",
				`cluster "beta": `,
				"  result   ok\n",
			},
			// The defaults every ServiceAccount has (ClusterTrustBundles,
			// discovery) must not count as excess.
			absent: []string{"warning", "MISSING", "error", "note"},
		},
		{
			name:     "too weak",
			clusters: []rbacCluster{{"alpha", weakKC, alphaRange.String()}},
			code:     1,
			want: []string{
				"  user     system:serviceaccount:" + ns + ":weak-" + suffix + "\n",
				"  ok       list services in all namespaces\n",
				"  MISSING  watch services in all namespaces\n",
				"  MISSING  list endpointslices.discovery.k8s.io in all namespaces\n",
				"  MISSING  watch endpointslices.discovery.k8s.io in all namespaces\n",
				"  hint     kubectl apply -f /usr/share/doc/kube-outpost/rbac.yaml, then: kubectl create clusterrolebinding kube-outpost-weak-" + suffix +
					" --clusterrole=kube-outpost --serviceaccount=" + ns + ":weak-" + suffix + "\n",
				"  result   FAILED (3 permissions missing)",
				`check-config --online: kube-outpost cannot watch 1 of 1 clusters: "alpha" (` + server + ")",
			},
			absent: []string{"warning"},
		},
		{
			name:     "too strong",
			clusters: []rbacCluster{{"alpha", strongKC, alphaRange.String()}},
			code:     0,
			want: []string{
				"  ok       watch endpointslices.discovery.k8s.io in all namespaces\n",
				`  warning  may do anything in the cluster (cluster-admin or equivalent): RBAC: allowed by ClusterRoleBinding "` +
					strongBinding + `" of ClusterRole "cluster-admin" to ServiceAccount "strong-` + suffix + "/" + ns + `"`,
				"  result   ok, with 1 warning",
			},
			absent: []string{"MISSING", "error", "FAILED"},
		},
		{
			name:     "writes and secrets",
			clusters: []rbacCluster{{"alpha", leakyKC, alphaRange.String()}},
			code:     0,
			want: []string{
				"  ok       watch endpointslices.discovery.k8s.io in all namespaces\n",
				`  warning  may update services in all namespaces: RBAC: allowed by ClusterRoleBinding "rbac-check-leaky-` + suffix + `"`,
				`  warning  may delete services in all namespaces: RBAC: allowed by ClusterRoleBinding "rbac-check-leaky-` + suffix + `"`,
				// Sorted by text; the needed list and watch are taken out.
				"  warning  reads Secrets: may get secrets (rule seen in namespace kube-system)\n",
				"  warning  write access: may get, update, delete services (rule seen in namespace default, kube-system, " + ns + ")\n",
				"  result   ok, with 4 warnings",
			},
			absent: []string{"MISSING", "error", "note"},
		},
		{
			name:     "bad token",
			clusters: []rbacCluster{{"alpha", rbacKubeconfig(t, "bad", server, ca, "not-a-token"), alphaRange.String()}},
			code:     1,
			want: []string{
				"  error    authentication failed (401 Unauthorized)",
				"  result   FAILED (unauthenticated)",
			},
			absent: []string{"  ok ", "user"},
		},
		{
			name:     "another cluster's CA",
			clusters: []rbacCluster{{"alpha", rbacKubeconfig(t, "otherca", server, otherCA, "not-a-token"), alphaRange.String()}},
			code:     1,
			want:     []string{"  error    TLS: the apiserver's certificate is not signed by the CA of the kubeconfig", "  result   FAILED (tls)"},
		},
		{
			name:     "nothing listens",
			clusters: []rbacCluster{{"alpha", rbacKubeconfig(t, "closed", closedPort, ca, "not-a-token"), alphaRange.String()}},
			code:     1,
			want:     []string{`cluster "alpha": ` + closedPort, "  error    unreachable: connection refused", "  result   FAILED (unreachable)"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Always logged (checkConfigOnline): docs/credentials.md shows this output.
			code, out := checkConfigOnline(t, rbacConfig(t, c.clusters))
			if code != c.code {
				t.Errorf("exit code %d, want %d", code, c.code)
			}
			rest := out
			for _, w := range c.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("output lacks %q (after what came before)", w)
				}
				rest = rest[i+len(w):]
			}
			for _, a := range c.absent {
				if strings.Contains(out, a) {
					t.Errorf("output has %q", a)
				}
			}
		})
	}
}

type rbacCluster struct{ name, kubeconfig, cidr string }

// rbacConfig writes a config with the given clusters; mode does not matter
// to check-config.
func rbacConfig(t *testing.T, clusters []rbacCluster) string {
	t.Helper()
	var b strings.Builder
	for _, c := range clusters {
		fmt.Fprintf(&b, "[[clusters]]\nname = %q\nkubeconfig = %q\nservice_cidrs = [%q]\n\n", c.name, c.kubeconfig, c.cidr)
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rbacAccount creates a ServiceAccount bound cluster-wide to either a new
// ClusterRole with rules or an existing one (clusterRole), removes them all
// when the test ends, and returns a token of it from the TokenRequest API.
func rbacAccount(t *testing.T, ns, name string, rules []rbacv1.PolicyRule, clusterRole string) string {
	t.Helper()
	ctx := context.Background()
	admin := theLab.Cluster("alpha").Admin
	objName := "rbac-check-" + name
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.CoreV1().ServiceAccounts(ns).Delete(ctx, name, metav1.DeleteOptions{}) })
	if clusterRole == "" {
		clusterRole = objName
		cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: clusterRole}, Rules: rules}
		if _, err := admin.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = admin.RbacV1().ClusterRoles().Delete(ctx, cr.Name, metav1.DeleteOptions{}) })
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: objName},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}},
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.RbacV1().ClusterRoleBindings().Delete(ctx, crb.Name, metav1.DeleteOptions{}) })
	ttl := int64(time.Hour / time.Second)
	tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// rbacRoleBinding grants a ServiceAccount rules in one namespace only, with
// a Role and RoleBinding there that are removed when the test ends.
func rbacRoleBinding(t *testing.T, roleNS, saNS, name string, rules []rbacv1.PolicyRule) {
	t.Helper()
	ctx := context.Background()
	admin := theLab.Cluster("alpha").Admin
	objName := "rbac-check-" + name
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: objName}, Rules: rules}
	if _, err := admin.RbacV1().Roles(roleNS).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.RbacV1().Roles(roleNS).Delete(ctx, objName, metav1.DeleteOptions{}) })
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: objName},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: objName},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: saNS, Name: name}},
	}
	if _, err := admin.RbacV1().RoleBindings(roleNS).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.RbacV1().RoleBindings(roleNS).Delete(ctx, objName, metav1.DeleteOptions{}) })
}

// rbacKubeconfig writes a kubeconfig as an administrator would hand it to
// the outside host: server, CA and a bearer token.
func rbacKubeconfig(t *testing.T, name, server string, ca []byte, token string) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["alpha"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	// The token in a file of its own, as check-config advises.
	if err := os.WriteFile(path+".token", []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{TokenFile: path + ".token"}
	kc.Contexts["alpha"] = &clientcmdapi.Context{Cluster: "alpha", AuthInfo: name}
	kc.CurrentContext = "alpha"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// rbacWaitAllowed waits until the apiserver's RBAC cache has the new
// binding, so that the check does not race it.
func rbacWaitAllowed(t *testing.T, kubeconfig string, attrs authorizationv1.ResourceAttributes) {
	t.Helper()
	client, err := theLab.ClientFromKubeconfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "binding in effect", func() error {
		res, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(context.Background(),
			&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs}},
			metav1.CreateOptions{})
		switch {
		case err != nil:
			return err
		case !res.Status.Allowed:
			return fmt.Errorf("%+v not allowed yet", attrs)
		}
		return nil
	})
}

func rbacRandom(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
