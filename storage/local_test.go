package storage_test

import (
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/ehrport/ehrport/storage"
	"github.com/ehrport/ehrport/storage/storetest"
)

func TestLocalConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storage.Store {
		st, err := storage.NewLocalStore(filepath.Join(t.TempDir(), "store"))
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

func TestLocalNoTempFilesLeft(t *testing.T) {
	dir := t.TempDir()
	st, _ := storage.NewLocalStore(dir)
	_ = st.Put(t.Context(), "a/b", strings.NewReader("short"), 10, storage.PutOptions{})
	for _, p := range filesUnder(dir) {
		t.Errorf("failed put left %s", p)
	}
}

// filesUnder lists every file below dir, temporary ones included (a
// store's List hides those).
func filesUnder(dir string) []string {
	var files []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	return files
}

func TestLocalFileModes(t *testing.T) {
	dir := t.TempDir()
	st, _ := storage.NewLocalStore(dir)
	if err := st.Put(t.Context(), "x/y", strings.NewReader("z"), 1, storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(dir, "x", "y"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("object mode %o, want 600", fi.Mode().Perm())
	}
	di, _ := os.Stat(filepath.Join(dir, "x"))
	if di.Mode().Perm() != 0o700 {
		t.Errorf("folder mode %o, want 700", di.Mode().Perm())
	}
}

func TestLocalKeysCannotEscape(t *testing.T) {
	st, _ := storage.NewLocalStore(t.TempDir())
	for _, k := range []string{"../x", "a/../../x", "./x", ".ehrport-tmp-1"} {
		if err := st.Put(t.Context(), k, strings.NewReader("x"), 1, storage.PutOptions{}); err == nil {
			t.Errorf("put %q succeeded", k)
		}
	}
}

// A Verified body is the caller's to check (storage.Copy fails its last
// read on a mismatch), so the folder does not hash it again; without
// Verified the folder compares SHA256 itself and keeps nothing on a
// mismatch. Either way a body that fails its read leaves nothing.
func TestLocalPutVerified(t *testing.T) {
	dir := t.TempDir()
	st, _ := storage.NewLocalStore(dir)
	body := "exact bytes"
	wrong := sha256.Sum256([]byte("other bytes"))
	if err := st.Put(t.Context(), "unverified", strings.NewReader(body), int64(len(body)), storage.PutOptions{SHA256: wrong[:]}); !errors.Is(err, storage.ErrIntegrity) {
		t.Fatalf("unverified put with a wrong SHA-256: %v, want ErrIntegrity", err)
	}
	if err := st.Put(t.Context(), "verified", strings.NewReader(body), int64(len(body)), storage.PutOptions{SHA256: wrong[:], Verified: true}); err != nil {
		t.Fatalf("verified put: %v (the caller checks a Verified body; the folder must not hash it again)", err)
	}
	failing := io.MultiReader(strings.NewReader(body[:5]), iotest.ErrReader(storage.ErrIntegrity))
	if err := st.Put(t.Context(), "failed", failing, int64(len(body)), storage.PutOptions{SHA256: wrong[:], Verified: true}); !errors.Is(err, storage.ErrIntegrity) {
		t.Fatalf("verified put whose body fails: %v, want its error", err)
	}
	left := filesUnder(dir)
	if len(left) != 1 || filepath.Base(left[0]) != "verified" {
		t.Fatalf("folder holds %q, want only \"verified\"", left)
	}
}
