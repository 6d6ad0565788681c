package status

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestWriteReportLastKnownState: a cluster that serves its last known state
// says so, with the state's time, in the table and in its lines; a state
// that could not be saved is said too.
func TestWriteReportLastKnownState(t *testing.T) {
	r := exampleReport(t)
	r.Clusters[1].LastKnownStateFrom = now.Add(-3*time.Hour - 20*time.Minute)
	r.Clusters[0].StateSavedAt = now.Add(-time.Minute)
	r.Clusters[0].StateSaveError = "cluster \"prod\": the state takes more than 64 MiB, the most a state file may take: not saved"
	var b bytes.Buffer
	if err := testRenderer.report(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"staging  https://10.0.0.2:6443  UNREACHABLE  STALE   1",
		"  serving last known state from 2026-03-01 08:54:07 UTC (3h20m ago), saved by an earlier run: not synced yet, and its live state replaces it once it is\n",
		"  last known state not saved: cluster \"prod\": the state takes more than 64 MiB",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "the rules of an earlier run for this cluster stay in force") {
		t.Errorf("a cluster serving its last known state is said to keep the kernel's rules:\n%s", b.String())
	}
}

// TestExplainLastKnownState: explain says that a port comes from the last
// known state, and the kernel agrees with it: the backend programmed it.
func TestExplainLastKnownState(t *testing.T) {
	s := fixtureStore(t)
	st := s.Snapshot()
	from := now.Add(-time.Hour)
	for _, c := range st.Clusters {
		if c.Name == "staging" {
			c.LastKnown = from
		}
	}
	_, k := iptablesKernel(t, st)
	ex, err := BuildExplanation(t.Context(), st, s.Refusals(), mustQuery(t, "staging/default/web"), k.mode, k.ex)
	if err != nil {
		t.Fatal(err)
	}
	p := onePort(t, ex)
	if p.ClusterSynced || !p.ClusterLastKnownStateFrom.Equal(from) || len(ex.Notes) != 1 ||
		!strings.Contains(ex.Notes[0], `cluster "staging" has not synced yet: its rules are programmed from its last known state, saved 2026-03-01T11:14:07Z`) {
		t.Errorf("notes %q, port %+v", ex.Notes, p)
	}
	wantAgree(t, p)
	var b bytes.Buffer
	if err := testRenderer.explanation(&b, ex); err != nil {
		t.Fatal(err)
	}
	if want := "  cluster not synced: programmed from its last known state of 2026-03-01 11:14:07 UTC\n"; !strings.Contains(b.String(), want) {
		t.Errorf("explanation lacks %q:\n%s", want, b.String())
	}
}
