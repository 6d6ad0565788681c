package rbaccheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Describe says what went wrong with a request to an apiserver, in the
// terms an operator fixes it in: the network, the CA, or the credentials.
// The text keeps the original error at the end, for what it does not
// explain.
func Describe(err error) (Kind, string) {
	if err == nil {
		return "", ""
	}
	if apierrors.IsUnauthorized(err) {
		return KindUnauthenticated, "authentication failed (401 Unauthorized): the apiserver rejects these credentials " +
			"(a wrong or expired token, the token of a deleted ServiceAccount, or a client certificate it does not trust)"
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		s := status.Status()
		return KindCheckFailed, fmt.Sprintf("the apiserver answered %d %s: %s", s.Code, s.Reason, s.Message)
	}

	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		record    tls.RecordHeaderError
		verify    *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &unknownCA):
		return KindTLS, "TLS: the apiserver's certificate is not signed by the CA of the kubeconfig " +
			"(certificate-authority-data of its cluster entry): " + err.Error()
	case errors.As(err, &hostname):
		return KindTLS, fmt.Sprintf("TLS: the apiserver's certificate is not valid for %q "+
			"(use an address it lists, or tls-server-name in the kubeconfig): %v", hostname.Host, err)
	case errors.As(err, &invalid):
		return KindTLS, "TLS: the apiserver's certificate is not valid: " + err.Error()
	case errors.As(err, &verify):
		return KindTLS, "TLS: cannot verify the apiserver's certificate: " + err.Error()
	case errors.As(err, &record):
		return KindTLS, "TLS: the server does not speak TLS there: " + err.Error()
	}
	// net/http turns the RecordHeaderError of an HTTP answer into a plain
	// string.
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return KindTLS, "TLS: the server answers plain HTTP there, not HTTPS: " + err.Error()
	}
	// A TLS alert from the server reaches the client as this, the alert
	// type itself being unexported.
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return KindTLS, "TLS: the apiserver refused the handshake (a client certificate it does not accept?): " + err.Error()
	}

	var (
		dns   *net.DNSError
		netEr net.Error
	)
	switch {
	case errors.Is(err, context.Canceled):
		return KindUnreachable, "interrupted: " + err.Error()
	case errors.As(err, &dns):
		return KindUnreachable, fmt.Sprintf("unreachable: cannot resolve %q: %v", dns.Name, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return KindUnreachable, "unreachable: connection refused (is the apiserver running, and is this its address and port?): " + err.Error()
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return KindUnreachable, "unreachable: no route to the apiserver: " + err.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netEr) && netEr.Timeout():
		return KindUnreachable, "unreachable: no answer in time (a firewall dropping packets, or a wrong address?): " + err.Error()
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return KindUnreachable, "unreachable: the connection was closed before an answer (a proxy or load balancer in the way?): " + err.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// Anything else that kept the request from being answered, such
		// as a credential plugin that failed.
		return KindUnreachable, "no answer from the apiserver: " + err.Error()
	}
	return KindCheckFailed, err.Error()
}
