package cli

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
)

func testGlobals() (*globals, *bytes.Buffer) {
	var out bytes.Buffer
	return &globals{Stdout: &out, Stderr: &out, Log: slog.New(slog.NewTextHandler(&out, nil))}, &out
}

func initTestKeys(t *testing.T, dir string) {
	t.Helper()
	g, _ := testGlobals()
	if err := (&keysInitOptions{globals: g, Dir: dir}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestKeysCommands(t *testing.T) {
	t.Setenv("EHRPORT_PASSPHRASE", "unit passphrase")
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "k")
	initTestKeys(t, dir)
	g, out := testGlobals()
	if err := (&keysRotateOptions{globals: g, Dir: dir}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	g.JSON = true
	if err := (&keysListOptions{globals: g, Dir: dir}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Count(out.String(), `"purpose": "kek"`) != 2 || strings.Contains(out.String(), "unit passphrase") {
		t.Fatal(out.String())
	}
	if err := (&keysDisableOptions{globals: g, Dir: dir, ID: 7}).Run(ctx); !errors.Is(err, ehrcrypto.ErrNoMatchingKey) {
		t.Fatalf("disable unknown: %v", err)
	}
	if err := (&keysInitOptions{globals: g, Dir: dir, KMS: "ftp://x"}).Run(ctx); !errors.Is(err, ehrcrypto.ErrPolicy) {
		t.Fatalf("bad kms: %v", err)
	}
	t.Setenv("EHRPORT_PASSPHRASE", "")
	if err := (&keysRotateOptions{globals: g, Dir: dir}).Run(ctx); !errors.Is(err, ErrUsage) {
		t.Fatalf("no passphrase: %v", err)
	}
	if ExitCode(ctx, (&keysListOptions{globals: g, Dir: t.TempDir()}).Run(ctx)) != ExitCrypto {
		t.Fatal("missing key dir should exit 3")
	}
}
