package cluster

import (
	"net"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A watcher started while its apiserver refuses connections syncs within a
// probe period of the apiserver answering, however long client-go's
// backoff would have grown meanwhile.
func TestWatcherFollowsAnAPIServerThatComesBack(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	api := &fakeAPIServer{stop: make(chan struct{})}
	api.svcs = []corev1.Service{{
		TypeMeta:   metav1.TypeMeta{Kind: "Service", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", ResourceVersion: "8"},
	}}
	api.slices = []discoveryv1.EndpointSlice{{
		TypeMeta: metav1.TypeMeta{Kind: "EndpointSlice", APIVersion: "discovery.k8s.io/v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-1", ResourceVersion: "9",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}}
	s := &sink{slices: map[string]*discoveryv1.EndpointSlice{}}
	w := watcherOf(t, "http://"+addr, s)
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			w.Stop()
		}
	}
	defer stop()

	// Long enough for client-go's backoff to reach 3.2 s and more (0.8 s,
	// doubling, each with up to as much again of jitter).
	time.Sleep(6 * time.Second)
	st := w.Status()
	if st.Synced || st.Connected || st.DownSince.IsZero() || st.WatchErrors == 0 {
		t.Fatalf("while the apiserver refuses: %+v; want an outage, not synced", st)
	}

	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the apiserver's port was taken meanwhile: %v", err)
	}
	srv := httptest.NewUnstartedServer(api)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	// The watcher stops first: the server's Close waits for open watches.
	defer srv.Close()
	defer stop()
	back := time.Now()
	waitFor(t, "synced once the apiserver answers", func() bool { st := w.Status(); return st.Synced && st.Connected })
	took := time.Since(back)
	t.Logf("synced %s after the apiserver answered (probe every %s)", took.Round(10*time.Millisecond), defaultTimings.probeEvery)
	if limit := defaultTimings.probeEvery + 3*time.Second; took > limit {
		t.Errorf("synced %s after the apiserver answered, want within %s", took, limit)
	}
	st = w.Status()
	if !st.DownSince.IsZero() {
		t.Errorf("DownSince = %v after the apiserver answered", st.DownSince)
	}
	if st.Restarts[RestartAPIServerBack] == 0 {
		t.Errorf("restarts %v: no held request counted as let go", st.Restarts)
	}
}
