//go:build linux

package lab

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// Liar stands in front of a cluster's apiserver as a compromised one would:
// every answer is the real apiserver's, with the bytes a test chose
// rewritten. A real apiserver validates what it stores (names are DNS
// labels, endpoint addresses are IPs), so objects with control characters
// in their names or garbage for addresses can only come from an apiserver
// that lies; this is how a test serves them.
type Liar struct {
	// Kubeconfig is a copy of the cluster's Kubeconfig whose server is
	// the liar (https://127.0.0.1:<port> in the host namespace; the
	// apiserver's certificate is valid for 127.0.0.1).
	Kubeconfig string
	URL        string
	srv        *http.Server
}

// Liar starts a lying apiserver for c in the lab's host namespace: each
// response body is the apiserver's with every occurrence of a key of
// replace replaced by its value. Answers are JSON (the liar asks for
// nothing else), so a value may use JSON escapes such as \u001b; a key
// must not span lines, which watch events never do. Lab.Close stops it.
func (c *Cluster) Liar(replace map[string]string) (*Liar, error) {
	l := c.lab
	if l.remote != "" {
		return nil, errors.New("lab: a remote lab's apiservers are not the lab's to stand in front of")
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(c.dir, "apiserver.crt"), filepath.Join(c.dir, "apiserver.key"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.caPEM) {
		return nil, errors.New("lab: the cluster's CA does not parse")
	}
	upstream, err := url.Parse(c.url())
	if err != nil {
		return nil, err
	}
	ln, err := l.ListenHost("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	var pairs []string
	for k, v := range replace {
		if k == "" || strings.ContainsRune(k, '\n') {
			ln.Close()
			return nil, fmt.Errorf("lab: liar: key %q: want a non-empty one-line string", k)
		}
		pairs = append(pairs, k, v)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.Out.Host = upstream.Host
			// JSON, uncompressed: what the rewriting can read.
			pr.Out.Header.Set("Accept", "application/json")
			pr.Out.Header.Del("Accept-Encoding")
		},
		Transport: &http.Transport{
			Proxy:              nil,
			DialContext:        l.DialHost,
			TLSClientConfig:    &tls.Config{RootCAs: pool},
			DisableCompression: true,
		},
		// Watch events must reach the client as they come.
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			resp.Body = &rewriter{src: bufio.NewReaderSize(resp.Body, 64*1024), body: resp.Body, r: strings.NewReplacer(pairs...)}
			resp.ContentLength = -1
			resp.Header.Del("Content-Length")
			return nil
		},
		// A client going away mid-watch is normal here, not news.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	srv := &http.Server{
		Handler:           rp,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 10 * time.Second,
	}
	if err := l.track(srv); err != nil {
		ln.Close()
		return nil, err
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()

	lr := &Liar{URL: "https://" + ln.Addr().String(), srv: srv, Kubeconfig: filepath.Join(c.dir, "liar.kubeconfig")}
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	for _, cl := range cfg.Clusters {
		cl.Server = lr.URL
	}
	if err := clientcmd.WriteToFile(*cfg, lr.Kubeconfig); err != nil {
		return nil, err
	}
	if err := os.Chmod(lr.Kubeconfig, 0o600); err != nil {
		return nil, err
	}
	c.logf("lying apiserver at %s", lr.URL)
	return lr, nil
}

// rewriter rewrites a response body line by line: a JSON list is one line,
// and a JSON watch stream has one event per line.
type rewriter struct {
	src  *bufio.Reader
	body io.Closer
	r    *strings.Replacer
	out  bytes.Buffer
	err  error
}

func (w *rewriter) Read(p []byte) (int, error) {
	for w.out.Len() == 0 && w.err == nil {
		line, err := w.src.ReadBytes('\n')
		w.out.WriteString(w.r.Replace(string(line)))
		w.err = err
	}
	if w.out.Len() > 0 {
		return w.out.Read(p)
	}
	return 0, w.err
}

func (w *rewriter) Close() error { return w.body.Close() }
