//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// TestSelection: a cluster's namespaces, exclude_namespaces and
// service_selector decide which services are programmed, against a real
// apiserver; a Role per namespace from packaging/rbac-namespaced.yaml is
// all a host with namespaces needs.
func TestSelection(t *testing.T) {
	alpha := theLab.Cluster("alpha")
	admin := alpha.Admin
	// Namespaces of this run: a kept lab (KO_LAB_KEEP) has the last run's,
	// and without a controller-manager a namespace is never deleted.
	run := rbacRandom(t)
	// One service per namespace, each answered by its own pod.
	in1, in2, out := namespace(t, admin, "sel-in-1-"+run), namespace(t, admin, "sel-in-2-"+run), namespace(t, admin, "sel-out-"+run)
	vips := map[string]netip.Addr{}
	for ns, pod := range map[string]string{in1: "a1", in2: "a2", out: "a3"} {
		vips[ns] = service(t, admin, ns, "web", web)
		slice(t, admin, ns, "web", "1", web, []ep{readyEP(ip(pod))})
	}

	t.Run("namespaces", func(t *testing.T) {
		waitSynced(t, startDaemon(t, selectionConfig(t, alpha.Kubeconfig, fmt.Sprintf("namespaces = [%q, %q]", in1, in2))))
		answeredBy(t, url(vips[in1], 80), 6, "a1")
		answeredBy(t, url(vips[in2], 80), 6, "a2")
		notProgrammed(t, "the service of a namespace not listed", vips[out])
		// Services created while it runs: the listed namespace's arrives,
		// which is after the other namespace's would have.
		late := service(t, admin, out, "late", web)
		slice(t, admin, out, "late", "1", web, []ep{readyEP(ip("a3"))})
		next := service(t, admin, in1, "next", web)
		slice(t, admin, in1, "next", "1", web, []ep{readyEP(ip("a3"))})
		answeredBy(t, url(next, 80), 6, "a3")
		notProgrammed(t, "a service created in a namespace not listed", late)
	})

	t.Run("a Role per namespace is enough", func(t *testing.T) {
		manifest := rbacNamespacedManifest(t)
		kc := namespacedKubeconfig(t, manifest, in1, in2)
		cfg := selectionConfig(t, kc, fmt.Sprintf("namespaces = [%q, %q]", in1, in2))
		waitSynced(t, startDaemon(t, cfg))
		answeredBy(t, url(vips[in1], 80), 6, "a1")
		answeredBy(t, url(vips[in2], 80), 6, "a2")
		notProgrammed(t, "the service of a namespace not listed", vips[out])

		// check-config --online asks in each listed namespace.
		code, output := checkConfigOnline(t, cfg)
		for _, want := range []string{
			"  ok       list services in namespace " + in1 + "\n",
			"  ok       watch endpointslices.discovery.k8s.io in namespace " + in2 + "\n",
			"  result   ok\n",
		} {
			if !strings.Contains(output, want) {
				t.Errorf("check-config --online lacks %q", want)
			}
		}
		if code != 0 || strings.Contains(output, "MISSING") || strings.Contains(output, "warning") {
			t.Errorf("check-config --online exited %d, want 0 without MISSING or warnings", code)
		}
		// A namespace without the Role is a missing permission, with the
		// command that grants it.
		code, output = checkConfigOnline(t, selectionConfig(t, kc, fmt.Sprintf("namespaces = [%q, %q, %q]", in1, in2, out)))
		for _, want := range []string{
			"  MISSING  list services in namespace " + out + "\n",
			`  hint     for ns in ` + out + `; do sed "s/WATCHED-NAMESPACE/$ns/" /usr/share/doc/kube-outpost/rbac-namespaced.yaml | kubectl apply -f -; done`,
			"  result   FAILED (4 permissions missing)",
		} {
			if !strings.Contains(output, want) {
				t.Errorf("check-config --online lacks %q", want)
			}
		}
		if code != 1 {
			t.Errorf("check-config --online exited %d for a namespace without the Role, want 1", code)
		}
	})

	t.Run("exclude_namespaces", func(t *testing.T) {
		// What the watcher asks for, asked directly: the apiserver
		// supports metadata.namespace in field selectors for Services and
		// EndpointSlices, which are listed with it.
		fields := fmt.Sprintf("metadata.namespace!=%s,metadata.namespace!=%s", out, in2)
		svcs, err := admin.CoreV1().Services("").List(context.Background(), metav1.ListOptions{FieldSelector: fields})
		if err != nil {
			t.Fatalf("listing services with field selector %q: %v", fields, err)
		}
		slices, err := admin.DiscoveryV1().EndpointSlices("").List(context.Background(), metav1.ListOptions{FieldSelector: fields})
		if err != nil {
			t.Fatalf("listing endpointslices with field selector %q: %v", fields, err)
		}
		seen := map[string]bool{}
		for _, s := range svcs.Items {
			seen["service "+s.Namespace] = true
		}
		for _, s := range slices.Items {
			seen["slice "+s.Namespace] = true
		}
		if seen["service "+out] || seen["slice "+out] || seen["service "+in2] || !seen["service "+in1] || !seen["slice "+in1] {
			t.Fatalf("field selector %q: namespaces seen %v", fields, seen)
		}

		waitSynced(t, startDaemon(t, selectionConfig(t, alpha.Kubeconfig, fmt.Sprintf("exclude_namespaces = [%q, %q]", out, in2))))
		answeredBy(t, url(vips[in1], 80), 6, "a1")
		notProgrammed(t, "the service of an excluded namespace", vips[out])
		notProgrammed(t, "the service of an excluded namespace", vips[in2])
	})

	t.Run("service_selector", func(t *testing.T) {
		ns := namespace(t, admin, "sel-label-"+run)
		shown := service(t, admin, ns, "shown", web, func(s *corev1.Service) { s.Labels = map[string]string{"expose": "outside"} })
		slice(t, admin, ns, "shown", "1", web, []ep{readyEP(ip("a1"))})
		hidden := service(t, admin, ns, "hidden", web, func(s *corev1.Service) { s.Labels = map[string]string{"expose": "inside"} })
		slice(t, admin, ns, "hidden", "1", web, []ep{readyEP(ip("a2"))})

		// The apiserver tells a label-selected watch that an object left
		// it with a delete, and that one joined it with an add: what the
		// watcher relies on to drop and bring back a relabelled service.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// From the list's version on: a watch from now would begin with an
		// add of every object that matches.
		list, err := admin.CoreV1().Services(ns).List(ctx, metav1.ListOptions{LabelSelector: "expose=outside"})
		if err != nil {
			t.Fatal(err)
		}
		watcher, err := admin.CoreV1().Services(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "expose=outside", ResourceVersion: list.ResourceVersion})
		if err != nil {
			t.Fatal(err)
		}
		defer watcher.Stop()

		waitSynced(t, startDaemon(t, selectionConfig(t, alpha.Kubeconfig, `service_selector = "expose=outside"`)))
		answeredBy(t, url(shown, 80), 6, "a1")
		notProgrammed(t, "a service the selector does not match", hidden)

		relabel(t, admin, ns, "shown", "inside")
		waitEvent(t, watcher, watch.Deleted, "shown")
		eventually(t, 20*time.Second, "the relabelled service's rules removed", func() error {
			if mentions(kernelState(t), shown) {
				return fmt.Errorf("the kernel still has %s", shown)
			}
			return nil
		})
		relabel(t, admin, ns, "shown", "outside")
		waitEvent(t, watcher, watch.Added, "shown")
		answeredBy(t, url(shown, 80), 6, "a1")
		relabel(t, admin, ns, "hidden", "outside")
		answeredBy(t, url(hidden, 80), 6, "a2")
	})
}

// selectionConfig writes a config of cluster alpha with a kubeconfig and
// extra cluster keys, otherwise as writeConfig does.
func selectionConfig(t *testing.T, kubeconfig, keys string) string {
	t.Helper()
	alpha := theLab.Cluster("alpha")
	cfg := fmt.Sprintf("mode = %q\nmin_sync_period = \"200ms\"\nstatus_socket = %q\n\n[[clusters]]\nname = \"alpha\"\nkubeconfig = %q\nservice_cidrs = [%q]\n%s\n",
		mode, statusSocket(t), kubeconfig, alpha.ServiceCIDR.String(), keys)
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitSynced waits until the daemon has programmed the whole of its
// cluster: until then the rules of the daemon before it stay, which may
// have more services.
func waitSynced(t *testing.T, d *daemon) {
	t.Helper()
	eventually(t, 30*time.Second, "kube-outpost ready", func() error {
		if d.count(`msg=ready clusters_not_synced=\[\]`) == 0 {
			return errors.New("no ready log line with every cluster synced")
		}
		return nil
	})
}

// notProgrammed checks that the kernel has nothing for vip and that it does
// not answer, once the daemon has synced (waitSynced), and something
// created after vip answers, so that vip would be programmed by then.
func notProgrammed(t *testing.T, what string, vip netip.Addr) {
	t.Helper()
	if state := kernelState(t); mentions(state, vip) {
		t.Errorf("%s (%s) is in the kernel:\n%s", what, vip, state)
	}
	if body, err := get(url(vip, 80)); err == nil {
		t.Errorf("%s (%s) answered: %q", what, vip, body)
	}
}

func relabel(t *testing.T, c kubernetes.Interface, ns, name, expose string) {
	t.Helper()
	ctx := context.Background()
	svc, err := c.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Labels = map[string]string{"expose": expose}
	if _, err := c.CoreV1().Services(ns).Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitEvent waits for an event of type typ about the service name.
func waitEvent(t *testing.T, w watch.Interface, typ watch.EventType, name string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case e, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("the watch ended before a %s event for %s", typ, name)
			}
			svc, isSvc := e.Object.(*corev1.Service)
			if !isSvc || svc.Name != name {
				continue
			}
			if e.Type != typ {
				t.Fatalf("a %s event for %s, want %s", e.Type, name, typ)
			}
			return
		case <-timeout:
			t.Fatalf("no %s event for %s", typ, name)
		}
	}
}

// rbacNamespacedManifest reads packaging/rbac-namespaced.yaml, which is
// where the source is: not in the IPVS guest, whose e2e.test comes built.
func rbacNamespacedManifest(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	data, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "packaging", "rbac-namespaced.yaml"))
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("packaging/rbac-namespaced.yaml is not here (a built e2e.test away from the source); the RBAC is the same in every mode")
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// namespacedKubeconfig applies the manifest to each namespace, as its
// header says, for a ServiceAccount of this test rather than
// kube-outpost/kube-outpost (which the lab binds cluster-wide with
// rbac.yaml), and returns a kubeconfig with a bound token of it.
func namespacedKubeconfig(t *testing.T, manifest string, namespaces ...string) string {
	t.Helper()
	ctx := context.Background()
	admin := theLab.Cluster("alpha").Admin
	saNS := namespace(t, admin, "sel-sa")
	saName := "outpost-" + rbacRandom(t)
	for _, ns := range namespaces {
		for _, doc := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(strings.ReplaceAll(manifest, "WATCHED-NAMESPACE", ns), -1) {
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatal(err)
			}
			var err error
			switch tm.Kind {
			case "Namespace":
				// The ServiceAccount is this test's, in saNS.
			case "ServiceAccount":
				var sa corev1.ServiceAccount
				if err = yaml.UnmarshalStrict([]byte(doc), &sa); err == nil {
					sa.Namespace, sa.Name = saNS, saName
					_, err = admin.CoreV1().ServiceAccounts(saNS).Create(ctx, &sa, metav1.CreateOptions{})
				}
				if apierrors.IsAlreadyExists(err) {
					err = nil // applied for the namespace before
				}
			case "Role":
				var role rbacv1.Role
				if err = yaml.UnmarshalStrict([]byte(doc), &role); err == nil {
					if role.Namespace != ns {
						t.Fatalf("the Role is in namespace %q after replacing WATCHED-NAMESPACE with %q", role.Namespace, ns)
					}
					_, err = admin.RbacV1().Roles(ns).Create(ctx, &role, metav1.CreateOptions{})
					t.Cleanup(func() { _ = admin.RbacV1().Roles(ns).Delete(ctx, role.Name, metav1.DeleteOptions{}) })
				}
			case "RoleBinding":
				var rb rbacv1.RoleBinding
				if err = yaml.UnmarshalStrict([]byte(doc), &rb); err == nil {
					if len(rb.Subjects) != 1 || rb.Subjects[0].Name != "kube-outpost" || rb.Subjects[0].Namespace != "kube-outpost" {
						t.Fatalf("RoleBinding subjects %+v, want ServiceAccount kube-outpost/kube-outpost", rb.Subjects)
					}
					rb.Subjects[0].Namespace, rb.Subjects[0].Name = saNS, saName
					_, err = admin.RbacV1().RoleBindings(ns).Create(ctx, &rb, metav1.CreateOptions{})
					t.Cleanup(func() { _ = admin.RbacV1().RoleBindings(ns).Delete(ctx, rb.Name, metav1.DeleteOptions{}) })
				}
			case "":
				// Comments only.
			default:
				t.Fatalf("rbac-namespaced.yaml has a %s; this test applies only the kinds it expects", tm.Kind)
			}
			if err != nil {
				t.Fatalf("applying rbac-namespaced.yaml (%s) to %s: %v", tm.Kind, ns, err)
			}
		}
	}
	t.Cleanup(func() { _ = admin.CoreV1().ServiceAccounts(saNS).Delete(ctx, saName, metav1.DeleteOptions{}) })

	ttl := int64(time.Hour / time.Second)
	tr, err := admin.CoreV1().ServiceAccounts(saNS).CreateToken(ctx, saName,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	labKC, err := clientcmd.LoadFromFile(theLab.Cluster("alpha").Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	server := labKC.Clusters[labKC.Contexts[labKC.CurrentContext].Cluster].Server
	ca, err := os.ReadFile(theLab.Cluster("alpha").CAFile)
	if err != nil {
		t.Fatal(err)
	}
	kc := rbacKubeconfig(t, saName, server, ca, tr.Status.Token)
	for _, ns := range namespaces {
		rbacWaitAllowed(t, kc, authorizationv1.ResourceAttributes{Namespace: ns, Verb: "watch", Group: "discovery.k8s.io", Resource: "endpointslices"})
	}
	// Nothing cluster-wide: the daemon works with the Roles alone.
	client, err := theLab.ClientFromKubeconfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "list", Resource: "services"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status.Allowed {
		t.Fatal("the namespaced account may list services cluster-wide")
	}
	return kc
}

// checkConfigOnline runs `check-config --online` on the outside host and
// returns its exit code and output.
func checkConfigOnline(t *testing.T, cfg string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := theLab.HostRun(ctx, binary, "check-config", "--online", "--config", cfg)
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	t.Logf("kube-outpost check-config --online (exit %d):\n%s", code, out)
	return code, out
}
