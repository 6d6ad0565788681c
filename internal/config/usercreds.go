package config

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// credentialProblems are what makes a kubeconfig user certain to fail:
// a client certificate that expired or cannot be read, a token file or an
// exec plugin that is not there. Caught here, they refuse the config (or
// the reload) naming the cluster, instead of a watcher that fails at every
// retry while the check said all was well. Whether the apiserver accepts
// the credentials is for `check-config --online`.
func credentialProblems(kubeconfig, name string, u *clientcmdapi.AuthInfo, now time.Time) []string {
	var out []string
	rel := func(path string) string {
		if path == "" || filepath.IsAbs(path) {
			return path
		}
		return filepath.Join(filepath.Dir(kubeconfig), path)
	}
	certPEM := u.ClientCertificateData
	if len(certPEM) == 0 && u.ClientCertificate != "" {
		data, err := os.ReadFile(rel(u.ClientCertificate))
		if err != nil {
			out = append(out, fmt.Sprintf("kubeconfig %s: user %q: client-certificate: %v", kubeconfig, name, err))
		}
		certPEM = data
	}
	if len(certPEM) > 0 {
		if block, _ := pem.Decode(certPEM); block == nil {
			out = append(out, fmt.Sprintf("kubeconfig %s: user %q: the client certificate is not PEM", kubeconfig, name))
		} else if cert, err := x509.ParseCertificate(block.Bytes); err != nil {
			out = append(out, fmt.Sprintf("kubeconfig %s: user %q: the client certificate does not parse: %v", kubeconfig, name, err))
		} else if now.After(cert.NotAfter) {
			out = append(out, fmt.Sprintf("kubeconfig %s: user %q: the client certificate expired at %s", kubeconfig, name,
				cert.NotAfter.UTC().Format(time.RFC3339)))
		} else if now.Before(cert.NotBefore) {
			out = append(out, fmt.Sprintf("kubeconfig %s: user %q: the client certificate is not valid before %s", kubeconfig, name,
				cert.NotBefore.UTC().Format(time.RFC3339)))
		}
	}
	if u.TokenFile != "" {
		if _, err := os.Stat(rel(u.TokenFile)); err != nil {
			out = append(out, fmt.Sprintf("kubeconfig %s: user %q: tokenFile: %v", kubeconfig, name, err))
		}
	}
	if u.Exec != nil && u.Exec.Command != "" {
		cmd := u.Exec.Command
		if strings.Contains(cmd, "/") { // as client-go: a path is relative to the kubeconfig, a bare name is looked up in PATH
			cmd = rel(cmd)
		}
		if _, err := exec.LookPath(cmd); err != nil {
			out = append(out, fmt.Sprintf("kubeconfig %s: user %q: exec plugin %q: %v", kubeconfig, name, u.Exec.Command, err))
		}
	}
	return out
}
