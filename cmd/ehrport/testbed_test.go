//go:build integration

package main

import (
	"os"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestIntegrationScripts runs the script tests that talk to the real S3 test
// bed (MinIO as clouda, versitygw as cloudb). `make test` starts it first.
func TestIntegrationScripts(t *testing.T) {
	if os.Getenv("EHRPORT_TESTBED") == "" {
		t.Fatal("the S3 test bed is not up: run `make testbed-up` and source .cache/testbed/env (make test does both)")
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script-testbed",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Cmds:                scriptCmds,
		Setup: func(env *testscript.Env) error {
			for _, kv := range os.Environ() {
				if strings.HasPrefix(kv, "EHRPORT_") {
					k, v, _ := strings.Cut(kv, "=")
					env.Setenv(k, v)
				}
			}
			return nil
		},
	})
}
