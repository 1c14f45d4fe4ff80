package storage_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			t.Errorf("failed put left %s", p)
		}
		return nil
	})
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
