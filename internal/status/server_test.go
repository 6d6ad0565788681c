package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// fakeSource answers with fixed data; services named "nope" do not exist
// and "boom" breaks.
type fakeSource struct{ report Report }

func (f fakeSource) Status() Report { return f.report }

func (f fakeSource) Explain(_ context.Context, q Query) (Explanation, error) {
	switch q.Name {
	case "nope":
		return Explanation{}, fmt.Errorf("cluster %q has no service %s/%s: %w", q.Cluster, q.Namespace, q.Name, model.ErrNotFound)
	case "boom":
		return Explanation{}, errors.New("iptables-save: exit status 4")
	}
	return Explanation{Query: q.String(), Mode: "iptables", Ports: []PortExplanation{{Key: "answered"}}}, nil
}

var testReport = Report{
	Mode: "iptables", Version: "v1.2.3", StartedAt: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC),
	LastSync: Sync{At: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Duration: Duration(105 * time.Millisecond)},
	Clusters: []ClusterStatus{{Name: "prod", Server: "https://10.0.0.1:6443", Reachable: true, Synced: true, Services: 3, Refused: []Refusal{}}},
}

// shortDir is a temporary directory with a short path: a unix socket's
// path has room for 107 bytes only.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ko-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// serve runs Serve until the test ends, and returns once it answers.
func serve(t *testing.T, path string, src Source) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, path, src) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { stop() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := Get(t.Context(), path); err == nil {
			return stop
		}
		select {
		case err := <-done:
			t.Fatalf("Serve: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the status socket never answered")
		}
	}
}

func asJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestServeAndAsk(t *testing.T) {
	path := filepath.Join(shortDir(t), "run", "status.sock")
	serve(t, path, fakeSource{testReport})
	ctx := t.Context()

	r, err := Get(ctx, path)
	if err != nil || asJSON(t, r) != asJSON(t, testReport) {
		t.Errorf("Get = %s, %v\nwant %s", asJSON(t, r), err, asJSON(t, testReport))
	}

	for _, q := range []string{"prod/default/web", "10.96.0.10:80/TCP", "[fd00::10]:53"} {
		ex, err := Explain(ctx, path, mustQuery(t, q))
		if err != nil || ex.Query != q || len(ex.Ports) != 1 {
			t.Errorf("Explain(%s) = %+v, %v", q, ex, err)
		}
	}

	_, err = Explain(ctx, path, mustQuery(t, "prod/default/nope"))
	var se *ServerError
	if !errors.Is(err, model.ErrNotFound) || !errors.As(err, &se) || se.Code != 404 || err.Error() != `cluster "prod" has no service default/nope: not found` {
		t.Errorf("not found: %v", err)
	}
	_, err = Explain(ctx, path, mustQuery(t, "prod/default/boom"))
	if !errors.As(err, &se) || se.Code != 500 || errors.Is(err, model.ErrNotFound) || !strings.Contains(err.Error(), "exit status 4") {
		t.Errorf("failure: %v", err)
	}
}

// Requests the client never makes, from a raw HTTP client on the socket.
func TestServeBadRequests(t *testing.T) {
	path := filepath.Join(shortDir(t), "s.sock")
	serve(t, path, fakeSource{testReport})
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	for _, tc := range []struct {
		method, uri string
		code        int
		body        string
	}{
		{"GET", "/explain", 400, "give either service="},
		{"GET", "/explain?service=a/b/c&target=10.0.0.1:80", 400, "give either service="},
		{"GET", "/explain?service=10.0.0.1:80", 400, "want CLUSTER/NAMESPACE/NAME"},
		{"GET", "/explain?target=a/b/c", 400, "want IP:PORT"},
		{"GET", "/explain?target=10.0.0.1:80/ICMP", 400, `protocol \"ICMP\"`},
		{"POST", "/status", 405, ""},
		{"GET", "/metrics", 404, ""},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), tc.method, "http://x"+tc.uri, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.body) {
			t.Errorf("%s %s = %d %s, want %d with %q", tc.method, tc.uri, resp.StatusCode, b, tc.code, tc.body)
		}
	}
}

func TestSocketPermissions(t *testing.T) {
	dir := filepath.Join(shortDir(t), "run")
	path := filepath.Join(dir, "status.sock")
	serve(t, path, fakeSource{testReport})
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	di, err := os.Stat(dir)
	if err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode %v (%v), want 0700", di.Mode(), err)
	}
	// Nothing of the private directory the socket was bound in is left.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want the socket only", len(entries))
	}
}

// staleSocket leaves a socket at path that nobody listens on, as a daemon
// killed with SIGKILL does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
}

func TestStaleSocket(t *testing.T) {
	path := filepath.Join(shortDir(t), "s.sock")
	staleSocket(t, path)
	_, err := Get(t.Context(), path)
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "nobody answers on "+path) {
		t.Errorf("Get on a stale socket: %v", err)
	}
	serve(t, path, fakeSource{testReport})
	if _, err := Get(t.Context(), path); err != nil {
		t.Errorf("after Serve replaced the stale socket: %v", err)
	}
}

func TestSocketInUse(t *testing.T) {
	path := filepath.Join(shortDir(t), "s.sock")
	serve(t, path, fakeSource{testReport})
	err := Serve(t.Context(), path, fakeSource{})
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "another kube-outpost answers") {
		t.Errorf("second Serve: %v, want ErrInUse", err)
	}
	if _, err := Get(t.Context(), path); err != nil {
		t.Errorf("the first server stopped answering: %v", err)
	}
}

func TestSocketPathNotASocket(t *testing.T) {
	path := filepath.Join(shortDir(t), "s.sock")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Serve(t.Context(), path, fakeSource{}); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("Serve over a file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Error("Serve touched a file that is not a socket")
	}
}

func TestServeStopRemovesOnlyItsSocket(t *testing.T) {
	path := filepath.Join(shortDir(t), "s.sock")
	stop := serve(t, path, fakeSource{testReport})
	if err := stop(); err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left after stop: %v", err)
	}

	// A successor took over the path (the old socket was removed by
	// hand): the old server's stop leaves the successor's socket alone.
	stopOld := serve(t, path, fakeSource{testReport})
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	next := testReport
	next.Version = "successor"
	serve(t, path, fakeSource{next})
	stopOld()
	if r, err := Get(t.Context(), path); err != nil || r.Version != "successor" {
		t.Errorf("the successor's socket: %+v, %v", r.Version, err)
	}
}

func TestClientNotRunning(t *testing.T) {
	path := filepath.Join(shortDir(t), "missing.sock")
	_, err := Get(t.Context(), path)
	if !errors.Is(err, ErrNotRunning) || err.Error() != "kube-outpost is not running (no socket at "+path+")" {
		t.Errorf("Get without a daemon: %v", err)
	}
}

func TestClientPermissionDenied(t *testing.T) {
	// As root, permissions do not stop a connect: check the mapping of
	// the error a non-root user gets.
	err := dialError("/run/kube-outpost/status.sock", &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.EACCES)})
	if !errors.Is(err, ErrPermission) || !strings.HasPrefix(err.Error(), "permission denied: run as root") {
		t.Errorf("EACCES: %v", err)
	}
	if os.Geteuid() == 0 {
		return
	}
	path := filepath.Join(shortDir(t), "s.sock")
	serve(t, path, fakeSource{testReport})
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := Get(t.Context(), path); !errors.Is(err, ErrPermission) {
		t.Errorf("Get on a socket not ours: %v", err)
	}
}

// A daemon listens first, so that a second daemon stops its start there,
// and a start that fails after Listen closes the socket again.
func TestListenThenClose(t *testing.T) {
	path := filepath.Join(shortDir(t), "s.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); !errors.Is(err, ErrInUse) {
		t.Errorf("second Listen: %v, want ErrInUse", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
