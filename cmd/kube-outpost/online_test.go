package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

// fakeAPIServer answers the three self reviews over HTTPS like an apiserver
// with RBAC: token "least" has packaging/rbac.yaml's rules, token "admin"
// has cluster-admin's, any other token is rejected with 401.
func fakeAPIServer(t *testing.T) *httptest.Server {
	t.Helper()
	least := []authorizationv1.ResourceRule{
		{Verbs: []string{"list", "watch"}, APIGroups: []string{""}, Resources: []string{"services"}},
		{Verbs: []string{"list", "watch"}, APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}},
	}
	admin := []authorizationv1.ResourceRule{{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}}}
	allowed := func(rules []authorizationv1.ResourceRule, a *authorizationv1.ResourceAttributes) bool {
		in := func(vs []string, v string) bool { return slices.Contains(vs, "*") || slices.Contains(vs, v) }
		return slices.ContainsFunc(rules, func(r authorizationv1.ResourceRule) bool {
			return a.Subresource == "" && in(r.Verbs, a.Verb) && in(r.APIGroups, a.Group) && in(r.Resources, a.Resource)
		})
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var user string
		var rules []authorizationv1.ResourceRule
		switch req.Header.Get("Authorization") {
		case "Bearer least":
			user, rules = "system:serviceaccount:kube-outpost:kube-outpost", least
		case "Bearer admin":
			user, rules = "system:serviceaccount:ops:admin", admin
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
				Status: metav1.StatusFailure, Message: "Unauthorized", Reason: metav1.StatusReasonUnauthorized, Code: 401})
			return
		}
		// client-go may send protobuf: decode whatever it sent, answer JSON.
		body, _ := io.ReadAll(req.Body)
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		switch o := obj.(type) {
		case *authenticationv1.SelfSubjectReview:
			o.Status.UserInfo = authenticationv1.UserInfo{Username: user, Groups: []string{"system:authenticated"}}
		case *authorizationv1.SelfSubjectAccessReview:
			o.Status.Allowed = allowed(rules, o.Spec.ResourceAttributes)
		case *authorizationv1.SelfSubjectRulesReview:
			o.Status.ResourceRules = rules
		default:
			http.NotFound(w, req)
			return
		}
		out, err := runtime.Encode(scheme.Codecs.LegacyCodec(authenticationv1.SchemeGroupVersion, authorizationv1.SchemeGroupVersion), obj)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(out)
	})
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// onlineConfig writes a kubeconfig per cluster and a config naming them
// all, and loads it as check-config does.
func onlineConfig(t *testing.T, clusters []onlineCluster) *config.Config {
	t.Helper()
	dir := t.TempDir()
	var toml strings.Builder
	for i, c := range clusters {
		kc := clientcmdapi.NewConfig()
		kc.Clusters["c"] = &clientcmdapi.Cluster{Server: c.server, CertificateAuthorityData: c.ca}
		kc.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: c.token}
		kc.Contexts["ctx"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
		kc.CurrentContext = "ctx"
		path := filepath.Join(dir, c.name+".kubeconfig")
		if err := clientcmd.WriteToFile(*kc, path); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&toml, "[[clusters]]\nname = %q\nkubeconfig = %q\nservice_cidrs = [\"10.%d.0.0/16\"]\n", c.name, path, 96+i)
	}
	cfg, err := config.Parse([]byte(toml.String()), filepath.Join(dir, "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

type onlineCluster struct {
	name, server, token string
	ca                  []byte
}

func TestCheckOnline(t *testing.T) {
	srv := fakeAPIServer(t)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "https://" + ln.Addr().String()
	ln.Close()

	least := onlineCluster{"least", srv.URL, "least", ca}
	admin := onlineCluster{"admin", srv.URL, "admin", ca}
	for _, c := range []struct {
		name     string
		clusters []onlineCluster
		code     int
		stdout   []string // in this order
		absent   []string
		stderr   string
	}{
		{name: "exactly enough", clusters: []onlineCluster{least}, code: 0,
			stdout: []string{`cluster "least": ` + srv.URL + ` (context "ctx", kubeconfig `,
				"  user     system:serviceaccount:kube-outpost:kube-outpost\n",
				"  ok       watch endpointslices.discovery.k8s.io in all namespaces\n",
				"  result   ok\n"},
			absent: []string{"warning", "MISSING", "error"}},
		// Excess alone warns and still passes: kube-outpost works with it.
		{name: "too much", clusters: []onlineCluster{least, admin}, code: 0,
			stdout: []string{`cluster "least"`, "  result   ok\n", `cluster "admin"`,
				"  warning  may do anything in the cluster (cluster-admin or equivalent)\n", "  result   ok, with 1 warning"}},
		// Every cluster gets its block, in config order, whatever fails.
		{name: "failures", clusters: []onlineCluster{
			{"down", down, "least", ca}, {"badtoken", srv.URL, "nope", ca}, least, {"otherca", srv.URL, "least", otherCA(t)},
		}, code: 1,
			stdout: []string{
				`cluster "down": ` + down, "  error    unreachable: connection refused", "  result   FAILED (unreachable)",
				`cluster "badtoken"`, "  error    authentication failed (401 Unauthorized)", "  result   FAILED (unauthenticated)",
				`cluster "least"`, "  result   ok\n",
				`cluster "otherca"`, "  error    TLS: the apiserver's certificate is not signed by the CA of the kubeconfig", "  result   FAILED (tls)",
			},
			stderr: fmt.Sprintf("check-config --online: kube-outpost cannot watch 3 of 4 clusters: \"down\" (%s), \"badtoken\" (%s), \"otherca\" (%s)\n",
				down, srv.URL, srv.URL)},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := checkOnline(context.Background(), onlineConfig(t, c.clusters), &stdout, &stderr)
			out := stdout.String()
			if code != c.code || stderr.String() != c.stderr {
				t.Errorf("exit %d, stderr %q; want %d, %q\n%s", code, stderr.String(), c.code, c.stderr, out)
			}
			rest := out
			for _, want := range c.stdout {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("stdout lacks %q after what came before:\n%s", want, out)
				}
				rest = rest[i+len(want):]
			}
			for _, no := range c.absent {
				if strings.Contains(out, no) {
					t.Errorf("stdout has %q:\n%s", no, out)
				}
			}
		})
	}
}

// otherCA is a CA certificate that signed nothing.
func otherCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "other CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
