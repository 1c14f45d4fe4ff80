package drill

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/cmd/internal/report"
	"github.com/ehrport/ehrport/storage"
)

// deafStore accepts deletes and keeps everything: a provider that says it
// deleted what it did not.
type deafStore struct {
	*storage.LocalStore
	deletes atomic.Int64 // Delete runs on several goroutines
}

func (s *deafStore) Delete(context.Context, string) error { s.deletes.Add(1); return nil }

func seedObjects(t *testing.T, st storage.Store, n int) {
	t.Helper()
	ctx := context.Background()
	put := func(key string) {
		if err := st.Put(ctx, key, strings.NewReader(key), int64(len(key)), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put(export.ManifestKey)
	for i := range n {
		put(fmt.Sprintf("exports/t/Type%02d/Patient.%03d.ndjson.ehr", i%7, i))
	}
}

// TestDecommissionDeletesWhileListing: every object in nested folders is
// deleted from the listing as it goes, the manifest first, and none is
// listed afterwards.
func TestDecommissionDeletesWhileListing(t *testing.T) {
	st, err := storage.NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	seedObjects(t, st, 250)
	dc, err := decommissionStore(context.Background(), st, false, 4)
	if err != nil {
		t.Fatal(err)
	}
	if dc.deleted != 251 || dc.remaining != 0 || len(dc.remainingAt) != 0 {
		t.Fatalf("deleted %d, remaining %d %v", dc.deleted, dc.remaining, dc.remainingAt)
	}
}

// TestDecommissionNamesBoundedRemains: a store that ignores deletes has all
// its objects counted as remaining, the first maxNamedRemaining named, and
// the drill reports them as not-deleted findings plus one for the rest.
func TestDecommissionNamesBoundedRemains(t *testing.T) {
	local, err := storage.NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := &deafStore{LocalStore: local}
	seedObjects(t, st, 150)
	dc, err := decommissionStore(context.Background(), st, false, 3)
	if err != nil {
		t.Fatal(err)
	}
	if st.deletes.Load() != 151 || dc.remaining != 151 || len(dc.remainingAt) != maxNamedRemaining {
		t.Fatalf("deletes %d, remaining %d, named %d", st.deletes.Load(), dc.remaining, len(dc.remainingAt))
	}

	deaf := &deafStore{LocalStore: mustLocal(t)}
	res := run(t, &Options{StoreA: deaf, DecommissionSource: true})
	r := res.Report
	if r.Verdict == report.Pass || !hasFinding(r, PhaseDecommission, "not-deleted", "manifest.json") {
		t.Fatalf("verdict %s, findings %+v", r.Verdict, r.Findings)
	}
}

func mustLocal(t *testing.T) *storage.LocalStore {
	t.Helper()
	st, err := storage.NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}
