package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/ehrport/ehrport/cmd/internal/cli"
)

// TestMain lets script tests run `ehrport` as a real process, with the same
// main as the binary.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"ehrport": func() {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			code := cli.Main(ctx, os.Args, os.Stdout, os.Stderr)
			stop()
			os.Exit(code)
		},
	})
}

// TestScripts runs the CLI contract tests in testdata/script: commands,
// flags, outputs and exit codes as a user sees them. They need no servers.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Cmds:                scriptCmds,
		Setup: func(env *testscript.Env) error {
			// The corpus of public FHIR data sits beside the repo.
			if wd, err := os.Getwd(); err == nil {
				env.Setenv("CORPUS", wd+"/../../../shared/corpus")
			}
			return nil
		},
	})
}
