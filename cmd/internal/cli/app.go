// Package cli is ehrport's command line: one file per command, each with a
// constructor that returns a *cli.Command whose Action builds an options
// struct and calls its Run(ctx). The logic lives in the options' Run, so
// tests can call it without urfave.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

// Main runs the command line and returns the process exit code. main()
// passes a context that is cancelled on SIGINT or SIGTERM.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := NewApp(stdout, stderr)
	err := app.RunContext(ctx, args)
	// urfave reports a missing required flag through an unexported type,
	// so it is recognised by its text: it is a usage error like any other.
	if err != nil && !errors.Is(err, ErrUsage) && strings.HasPrefix(err.Error(), "Required flag") {
		err = fmt.Errorf("%w: %v (see --help)", ErrUsage, err)
	}
	code := ExitCode(ctx, err)
	switch {
	case err == nil:
	case code == ExitInterrupted:
		fmt.Fprintln(stderr, "ehrport: interrupted; nothing half-written was made visible. Run the same command again to continue.")
	case errors.Is(err, ErrFindings):
		// The command already printed its findings.
	default:
		fmt.Fprintf(stderr, "ehrport: error: %s\n", oneLine(err.Error()))
		if h := hint(err); h != "" {
			fmt.Fprintf(stderr, "ehrport: hint: %s\n", h)
		}
	}
	return code
}

// NewApp builds the command tree. Only commands that really work are
// registered.
func NewApp(stdout, stderr io.Writer) *cli.App {
	// urfave's CommandNotFound hook cannot return an error itself.
	notFound := ""
	app := &cli.App{
		Name:    "ehrport",
		Usage:   "move FHIR health records between clouds, encrypted under keys only the hospital holds, and prove the move was safe",
		Version: version(),
		UsageText: `ehrport [global options] command [command options] [arguments...]

Examples:
   ehrport stores list
   ehrport stores check clouda:exports
   ehrport --json stores check clouda:exports ./local-folder`,
		Description: `Stores are named in ehrport.toml (or --config FILE) or through environment
variables EHRPORT_STORE_<NAME>_ENDPOINT, _ACCESS_KEY, _SECRET_KEY, _REGION,
_CA_CERT and _ALLOW_HTTP, and referred to as NAME:bucket/prefix. A plain path
is a local folder. Secrets are never read from the command line.

Exit codes: 0 ok, 1 checks found problems, 2 usage or bad input, 3 key or
crypto failure, 4 storage or network failure, 130 interrupted
(docs/exit-codes.md).`,
		Writer:               stdout,
		ErrWriter:            stderr,
		Flags:                globalFlags(),
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Commands: []*cli.Command{
			storesCommand(),
			keysCommand(),
			encryptCommand(),
			decryptCommand(),
			inspectCommand(),
			rewrapCommand(),
			rekeyCommand(),
			auditCommand(),
			verifyCommand(),
			migrateCommand(),
			exportCommand(),
			restoreCommand(),
			testdataCommand(),
			drillCommand(),
			reportCommand(),
		},
		// Errors become exit codes in Main, never inside urfave.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	prepare(app.Commands)
	app.OnUsageError = usageErrorHandler
	app.CommandNotFound = func(c *cli.Context, name string) { notFound = name }
	app.After = func(c *cli.Context) error {
		if notFound != "" {
			return fmt.Errorf("%w: no command %q; run 'ehrport --help' for the list", ErrUsage, notFound)
		}
		return nil
	}
	return app
}

// prepare gives every command the global flags (so they work after the
// command name too), the usage-error handler, and a guard that rejects
// stray arguments of commands that take none.
func prepare(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = usageErrorHandler
		if len(c.Subcommands) > 0 {
			prepare(c.Subcommands)
			if c.Action == nil {
				c.Action = func(ctx *cli.Context) error {
					if ctx.Args().Present() {
						return fmt.Errorf("%w: %q has no subcommand %q; see 'ehrport %s --help'", ErrUsage, ctx.Command.Name, ctx.Args().First(), ctx.Command.Name)
					}
					return cli.ShowSubcommandHelp(ctx)
				}
			}
			continue
		}
		c.Flags = append(c.Flags, globalFlags()...)
	}
}

func usageErrorHandler(c *cli.Context, err error, isSubcommand bool) error {
	return fmt.Errorf("%w: %v (see --help)", ErrUsage, err)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
