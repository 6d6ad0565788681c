package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"strings"
	"testing"
)

// A cluster with namespaces is checked in each of them, not cluster-wide:
// a Role per namespace is what such a host gets.
func TestCheckOnlineNamespaces(t *testing.T) {
	srv := fakeAPIServer(t)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	cfg := onlineConfig(t, []onlineCluster{{"least", srv.URL, "least", ca}})
	cfg.Clusters[0].Namespaces = []string{"shop", "billing"}
	var stdout, stderr bytes.Buffer
	if code := checkOnline(context.Background(), cfg, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr %q\n%s", code, stderr.String(), stdout.String())
	}
	out := stdout.String()
	rest := out
	for _, want := range []string{
		"  ok       list services in namespace shop\n",
		"  ok       watch endpointslices.discovery.k8s.io in namespace shop\n",
		"  ok       list services in namespace billing\n",
		"  ok       watch endpointslices.discovery.k8s.io in namespace billing\n",
		"  result   ok\n",
	} {
		i := strings.Index(rest, want)
		if i < 0 {
			t.Fatalf("stdout lacks %q after what came before:\n%s", want, out)
		}
		rest = rest[i+len(want):]
	}
	if strings.Contains(out, "all namespaces") {
		t.Errorf("checked cluster-wide as well:\n%s", out)
	}
}
