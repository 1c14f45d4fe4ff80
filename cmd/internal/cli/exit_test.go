package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/storage"
)

func TestExitCode(t *testing.T) {
	live := context.Background()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	wrap := func(err error) error { return fmt.Errorf("doing something: %w", err) }
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want int
	}{
		{"nil", live, nil, 0},
		{"findings", live, ErrFindings, 1},
		{"unknown", live, errors.New("boom"), 1},
		{"usage", live, usagef("x"), 2},
		{"bad ref", live, wrap(storage.ErrBadRef), 2},
		{"bad config", live, wrap(storage.ErrBadConfig), 2},
		{"bad fhir", live, wrap(fhir.ErrBadInput), 2},
		{"corrupt", live, wrap(ehrcrypto.ErrCorrupt), 3},
		{"no key", live, wrap(ehrcrypto.ErrNoMatchingKey), 3},
		{"policy", live, wrap(ehrcrypto.ErrPolicy), 3},
		{"store", live, wrap(&storage.Error{Op: "get", Err: storage.ErrUnavailable}), 4},
		{"disk full", live, wrap(syscall.ENOSPC), 4},
		{"path", live, &fs.PathError{Op: "open", Path: "x", Err: fs.ErrPermission}, 4},
		{"interrupted", cancelled, wrap(context.Canceled), 130},
		{"interrupted inside a store error", cancelled, &storage.Error{Op: "put", Err: context.Canceled}, 130},
		// A server's own timeout is a storage failure, not an interruption.
		{"timeout", live, &storage.Error{Op: "get", Err: context.DeadlineExceeded}, 4},
	} {
		if got := ExitCode(tc.ctx, tc.err); got != tc.want {
			t.Errorf("%s: ExitCode = %d, want %d", tc.name, got, tc.want)
		}
	}
}
