package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/ehrport/ehrport/storage"
)

// globalFlags are accepted before or after the command name
// (`ehrport --json audit ...` and `ehrport audit ... --json` alike).
func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "json", Usage: "print machine-readable JSON on stdout"},
		&cli.StringFlag{Name: "config", Usage: "read stores from `FILE` (default: ./ehrport.toml if present)", EnvVars: []string{"EHRPORT_CONFIG"}},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "log `LEVEL`: debug, info, warn or error"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only errors and the result"},
	}
}

// globals are the settings every command shares.
type globals struct {
	JSON       bool
	Quiet      bool
	ConfigFile string
	Log        *slog.Logger
	Stdout     io.Writer
	Stderr     io.Writer
}

// lineageValue finds the innermost context where the flag was set, so a
// global flag given after the command wins over its default on the app.
func lineageValue(c *cli.Context, name string) (*cli.Context, bool) {
	for _, ctx := range c.Lineage() {
		if ctx == nil {
			continue
		}
		if slices.Contains(ctx.LocalFlagNames(), name) {
			return ctx, true
		}
	}
	return c, false
}

func globalBool(c *cli.Context, name string) bool {
	ctx, ok := lineageValue(c, name)
	return ok && ctx.Bool(name)
}

func globalString(c *cli.Context, name, def string) string {
	if ctx, ok := lineageValue(c, name); ok {
		return ctx.String(name)
	}
	if v := c.String(name); v != "" { // from an environment variable
		return v
	}
	return def
}

func globalsFrom(c *cli.Context) (*globals, error) {
	g := &globals{
		JSON:       globalBool(c, "json"),
		Quiet:      globalBool(c, "quiet"),
		ConfigFile: globalString(c, "config", ""),
		Stdout:     c.App.Writer,
		Stderr:     c.App.ErrWriter,
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(globalString(c, "log-level", "info"))); err != nil {
		return nil, fmt.Errorf("%w: --log-level: use debug, info, warn or error", ErrUsage)
	}
	if g.Quiet && level < slog.LevelError {
		level = slog.LevelError
	}
	g.Log = slog.New(slog.NewTextHandler(g.Stderr, &slog.HandlerOptions{Level: level}))
	return g, nil
}

// loadConfig reads the stores from the config file and environment.
func (g *globals) loadConfig() (*storage.Config, error) {
	return storage.LoadConfig(g.ConfigFile, os.Environ())
}

// printJSON writes v as indented JSON on stdout.
func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// usagef returns a usage error (exit code 2).
func usagef(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUsage}, args...)...)
}
