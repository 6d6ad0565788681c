package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// certPEM is a self-signed client certificate valid from notBefore to
// notAfter.
func certPEM(t testing.TB, notBefore, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kube-outpost"},
		NotBefore: notBefore, NotAfter: notAfter, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestCredentialProblems: credentials certain to fail are problems, each
// naming the kubeconfig and the user; good ones are none.
func TestCredentialProblems(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "k.kubeconfig")
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	good := certPEM(t, now.Add(-time.Hour), now.Add(time.Hour))
	if err := os.WriteFile(filepath.Join(dir, "good.crt"), good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		user clientcmdapi.AuthInfo
		want []string
	}{
		{"good certificate inline", clientcmdapi.AuthInfo{ClientCertificateData: good}, nil},
		{"good certificate file, relative to the kubeconfig", clientcmdapi.AuthInfo{ClientCertificate: "good.crt"}, nil},
		{"token file", clientcmdapi.AuthInfo{TokenFile: "token"}, nil},
		{"exec plugin on PATH", clientcmdapi.AuthInfo{Exec: &clientcmdapi.ExecConfig{Command: "true"}}, nil},
		{"expired", clientcmdapi.AuthInfo{ClientCertificateData: certPEM(t, now.Add(-48*time.Hour), now.Add(-24*time.Hour))},
			[]string{`user "u": the client certificate expired at 2026-12-01T12:00:00Z`}},
		{"not yet valid", clientcmdapi.AuthInfo{ClientCertificateData: certPEM(t, now.Add(time.Hour), now.Add(48*time.Hour))},
			[]string{`user "u": the client certificate is not valid before 2026-12-02T13:00:00Z`}},
		{"not PEM", clientcmdapi.AuthInfo{ClientCertificateData: []byte("garbage")}, []string{`user "u": the client certificate is not PEM`}},
		{"certificate file missing", clientcmdapi.AuthInfo{ClientCertificate: "gone.crt"},
			[]string{`user "u": client-certificate: open ` + filepath.Join(dir, "gone.crt") + `: no such file or directory`}},
		{"token file missing", clientcmdapi.AuthInfo{TokenFile: "/nonexistent/token"},
			[]string{`user "u": tokenFile: stat /nonexistent/token: no such file or directory`}},
		{"exec plugin missing", clientcmdapi.AuthInfo{Exec: &clientcmdapi.ExecConfig{Command: "kube-outpost-no-such-plugin"}},
			[]string{`user "u": exec plugin "kube-outpost-no-such-plugin": exec: "kube-outpost-no-such-plugin": executable file not found in $PATH`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, p := range credentialProblems(kc, "u", &tt.user, now) {
				got = append(got, strings.TrimPrefix(p, "kubeconfig "+kc+": "))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q\nwant %q", got, tt.want)
			}
		})
	}
}
