package audit

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"testing"

	"github.com/ehrport/ehrport/storage"
)

// A report keeps the MaxExamples smallest findings of each code and counts
// them all: the verdict and the counts never depend on what was dropped,
// and OnFinding sees every one.
func TestAuditBoundedFindings(t *testing.T) {
	st, _ := storage.NewLocalStore(t.TempDir())
	for i := range 7 {
		put(t, st, fmt.Sprintf("leak/%d.ndjson", 6-i), ndjson(1))
	}
	put(t, st, "a-notes.txt", []byte("plain words\n")) // plaintext too, but only high
	random := make([]byte, 4096)
	rand.Read(random)
	put(t, st, "mystery.bin", random)
	var streamed []string
	rep, err := Run(context.Background(), Options{Store: st, Policy: DefaultPolicy(), MaxExamples: 3, Concurrency: 4,
		OnFinding: func(f Finding) { streamed = append(streamed, f.Object) }})
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, f := range rep.Findings {
		kept = append(kept, f.Object)
	}
	// The most severe of each code are kept: the critical leaks, not the
	// text file that sorts before them.
	want := []string{"leak/0.ndjson", "leak/1.ndjson", "leak/2.ndjson", "mystery.bin"}
	if !slices.Equal(kept, want) {
		t.Errorf("kept %q, want %q", kept, want)
	}
	if rep.FindingCounts["plaintext-object"] != 8 || rep.FindingCounts["unknown-content"] != 1 || rep.FindingsOmitted != 5 || len(streamed) != 9 {
		t.Errorf("counts %v, omitted %d, streamed %d", rep.FindingCounts, rep.FindingsOmitted, len(streamed))
	}
	if n := rep.CountAtLeast(High); n != 9 {
		t.Errorf("CountAtLeast(high) = %d, want 9", n)
	}
	if n := rep.CountAtLeast(Critical); n != 7 {
		t.Errorf("CountAtLeast(critical) = %d, want 7", n)
	}
	if w, any := rep.Worst(); !any || w != Critical {
		t.Errorf("Worst = %s, %v", w, any)
	}
}

// A report built by hand (no BySeverity) still counts its findings.
func TestReportCountsWithoutBySeverity(t *testing.T) {
	r := &Report{Findings: []Finding{{Severity: High}, {Severity: Low}}}
	if r.CountAtLeast(Medium) != 1 {
		t.Errorf("CountAtLeast(medium) = %d", r.CountAtLeast(Medium))
	}
	if w, any := r.Worst(); !any || w != High {
		t.Errorf("Worst = %s, %v", w, any)
	}
	if _, any := (&Report{}).Worst(); any {
		t.Error("an empty report has a worst finding")
	}
}
