package rbaccheck

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func TestDescribe(t *testing.T) {
	post := func(err error) error { return &url.Error{Op: "Post", URL: "https://192.0.2.1:6443/apis", Err: err} }
	for _, c := range []struct {
		name string
		err  error
		kind Kind
		text string
	}{
		{"401", apierrors.NewUnauthorized("Unauthorized"), KindUnauthenticated, "authentication failed (401 Unauthorized)"},
		{"500", apierrors.NewInternalError(errors.New("etcd is sad")), KindCheckFailed, "the apiserver answered 500 InternalError"},
		{"403", apierrors.NewForbidden(schema.GroupResource{Resource: "x"}, "", errors.New("no")), KindCheckFailed, "the apiserver answered 403 Forbidden"},
		{"unknown CA", post(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), KindTLS, "not signed by the CA of the kubeconfig"},
		{"other verification", post(&tls.CertificateVerificationError{Err: errors.New("odd")}), KindTLS, "cannot verify"},
		{"remote alert", post(&net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}), KindTLS, "refused the handshake"},
		{"refused", post(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), KindUnreachable, "connection refused"},
		{"no route", post(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}), KindUnreachable, "no route"},
		{"dns", post(&net.OpError{Op: "dial", Err: &net.DNSError{Name: "api.example", Err: "no such host"}}), KindUnreachable, `cannot resolve "api.example"`},
		{"deadline", fmt.Errorf("rate limiter: %w", context.DeadlineExceeded), KindUnreachable, "no answer in time"},
		{"reset", post(&net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), KindUnreachable, "connection was closed"},
		{"plugin", post(errors.New("getting credentials: exec: executable aws not found")), KindUnreachable, "no answer from the apiserver: Post"},
		{"other", errors.New("strange"), KindCheckFailed, "strange"},
	} {
		t.Run(c.name, func(t *testing.T) {
			kind, text := Describe(c.err)
			if kind != c.kind || !strings.Contains(text, c.text) {
				t.Errorf("Describe = %s, %q; want %s, containing %q", kind, text, c.kind, c.text)
			}
		})
	}
}

// The errors client-go really returns, from real servers, keep what
// Describe looks for.
func TestDescribeRealErrors(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) })
	tlsSrv := httptest.NewUnstartedServer(ok)
	// The handshakes these cases fail on purpose are not news.
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0)
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	plain := httptest.NewServer(ok)
	defer plain.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	// Accepts and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	caOf := func(s *httptest.Server) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	}
	port := tlsSrv.Listener.Addr().(*net.TCPAddr).Port
	for _, c := range []struct {
		name string
		host string
		ca   []byte
		kind Kind
		text string
	}{
		{"401", tlsSrv.URL, caOf(tlsSrv), KindUnauthenticated, "401"},
		{"unknown CA", tlsSrv.URL, otherCA(t), KindTLS, "not signed by the CA"},
		// httptest's certificate is for 127.0.0.1 and example.com.
		{"wrong name", fmt.Sprintf("https://localhost:%d", port), caOf(tlsSrv), KindTLS, `not valid for "localhost"`},
		{"plain http", strings.Replace(plain.URL, "http:", "https:", 1), caOf(tlsSrv), KindTLS, "answers plain HTTP"},
		{"refused", "https://" + closedAddr, caOf(tlsSrv), KindUnreachable, "connection refused"},
		{"silent", "https://" + silent.Addr().String(), caOf(tlsSrv), KindUnreachable, "no answer in time"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := &rest.Config{Host: c.host, BearerToken: "t", TLSClientConfig: rest.TLSClientConfig{CAData: c.ca}, Timeout: 500 * time.Millisecond}
			rc.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
			cs, err := kubernetes.NewForConfig(rc)
			if err != nil {
				t.Fatal(err)
			}
			_, err = cs.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
			kind, text := Describe(err)
			if kind != c.kind || !strings.Contains(text, c.text) {
				t.Errorf("Describe(%v) = %s, %q; want %s, containing %q", err, kind, text, c.kind, c.text)
			}
		})
	}
}

// otherCA is a CA certificate that signed nothing: every httptest server
// shares one certificate, so none of them can stand for another CA.
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
