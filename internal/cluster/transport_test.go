package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/transport"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

// freezer relays TCP connections to target until it is frozen: from then
// on, no byte passes either way and nothing is closed, as behind a NAT or
// load balancer that lost the connection without a word.
type freezer struct {
	ln     net.Listener
	target string
	frozen chan struct{}
	once   sync.Once
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, frozen: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go f.pump(up, c)
			go f.pump(c, up)
		}
	}()
	return f
}

func (f *freezer) pump(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-f.frozen:
			// Held until the test ends and the server closes.
			io.Copy(io.Discard, src)
			return
		default:
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *freezer) freeze() { f.once.Do(func() { close(f.frozen) }) }

// A watch over HTTP/2 whose connection freezes ends within the health
// check's ping period and timeout, not after the kernel's 15 minutes, and
// ends as a watch the server closed.
func TestFrozenHTTP2Connection(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, `{"type":"BOOKMARK","object":{}}`)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	relay := newFreezer(t, srv.Listener.Addr().String())

	// As client-go builds it: utilnet.SetTransportDefaults turns on
	// golang.org/x/net/http2 with its 30 s and 15 s health check.
	tr := utilnet.SetTransportDefaults(&http.Transport{
		TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone(),
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", relay.ln.Addr().String())
		},
	})
	defer tr.CloseIdleConnections()
	const after, timeout = 300 * time.Millisecond, 300 * time.Millisecond
	if !tuneHTTP2(transport.NewUserAgentRoundTripper("test", tr), after, timeout) {
		t.Fatal("tuneHTTP2 did not find the transport under a client-go wrapper")
	}
	l := newLink(tr, srv.URL+"/readyz", &seen{}, slog.New(slog.DiscardHandler))

	resp, err := l.RoundTrip(get(t, srv.URL+"/api/v1/services?watch=true"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("the watch speaks %s, want HTTP/2", resp.Proto)
	}
	buf := make([]byte, 512)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := resp.Body.Read(buf); err != nil {
				ended <- err
				return
			}
		}
	}()
	frozen := time.Now()
	relay.freeze()
	select {
	case err := <-ended:
		took := time.Since(frozen)
		t.Logf("frozen connection noticed after %s (ping after %s, timeout %s)", took.Round(10*time.Millisecond), after, timeout)
		if err != io.EOF {
			t.Errorf("the watch ended with %v, want io.EOF", err)
		}
		if took > 10*(after+timeout) {
			t.Errorf("noticed after %s, want about %s", took, after+timeout)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a frozen HTTP/2 connection was not noticed")
	}
	if n := l.restartCounts()[RestartConnectionLost]; n != 1 {
		t.Errorf("restarts[%s] = %d, want 1", RestartConnectionLost, n)
	}
}

// connect gives a cluster's client the HTTP/2 health check, and a
// transport of its own.
func TestConnectTunesTheTransport(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	data := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: %q, insecure-skip-tls-verify: true}\n"+
		"users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n", srv.URL+"/prefix")
	if err := os.WriteFile(kc, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	transports := map[*http.Transport]bool{}
	for range 2 {
		_, l, err := connect(config.Cluster{Name: "c", Kubeconfig: kc}, &seen{}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if want := srv.URL + "/prefix/readyz"; l.probeURL != want {
			t.Errorf("probe URL %s, want %s", l.probeURL, want)
		}
		rt := l.next
		for {
			w, ok := rt.(utilnet.RoundTripperWrapper)
			if !ok {
				break
			}
			rt = w.WrappedRoundTripper()
		}
		tr, ok := rt.(*http.Transport)
		if !ok {
			t.Fatalf("under the wrappers: %T, want *http.Transport", rt)
		}
		if tr.HTTP2 == nil || tr.HTTP2.SendPingTimeout != http2PingAfter || tr.HTTP2.PingTimeout != http2PingTimeout {
			t.Errorf("HTTP/2 health check %+v, want a ping after %s, timing out after %s", tr.HTTP2, http2PingAfter, http2PingTimeout)
		}
		transports[tr] = true
	}
	if len(transports) != 2 {
		t.Error("two clients of the same cluster share a transport: tuning one would tune the other")
	}
}
