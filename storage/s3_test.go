package storage_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ehrport/ehrport/storage"
)

// A store that is down fails fast with ErrUnavailable and a message naming
// the store, never the secret.
func TestS3StoreDown(t *testing.T) {
	env := []string{
		"EHRPORT_STORE_DOWN_ENDPOINT=https://127.0.0.1:1",
		"EHRPORT_STORE_DOWN_ACCESS_KEY=ak",
		"EHRPORT_STORE_DOWN_SECRET_KEY=S3cr3tPlanted",
	}
	cfg, err := storage.LoadConfig("/dev/null", env)
	if err != nil {
		t.Fatal(err)
	}
	st, err := storage.OpenRef(cfg, "down:bucket/prefix")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = st.Stat(ctx, "k")
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("stat on a down store: %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "S3cr3tPlanted") {
		t.Fatal("secret in error text")
	}
	if !strings.Contains(err.Error(), "down:bucket/prefix/k") {
		t.Errorf("error does not name the object: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %v to fail", d)
	}
	_, err = storage.Check(ctx, st, storage.CheckOptions{})
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("check on a down store: %v, want ErrUnavailable", err)
	}
}
