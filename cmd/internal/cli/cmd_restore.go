package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/crypto/keys"
	"github.com/ehrport/ehrport/storage"
)

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:  "restore",
		Usage: "check an export's signature and hashes and decrypt it back to NDJSON files",
		UsageText: `ehrport restore --from STORE_REF --keys DIR --to DIR [--concurrency N]

Examples:
   ehrport restore --from clouda:exit-2026/run1 --keys ./hospital-keys --to ./restored
   ehrport --json restore --from ./exports/run1 --keys ./hospital-keys --to ./restored`,
		Description: `Reads manifest.json, checks its signature with the signing.pub.json of
--keys DIR (or --verify-key FILE), decrypts the summary, then fetches every
object, checking its ciphertext size and SHA-256 against the manifest while
streaming, and decrypts it into DIR/<Type>.<NNN>.ndjson. A file appears only
after its last segment authenticated and its plaintext SHA-256, size, line
count and ids matched the summary. The restored bytes are exactly the
exported plaintext. Exit 3 names a corrupt or tampered object.
` + passphraseHelp,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "read the export at `STORE_REF`"},
			keysDirFlag("decrypt with the key directory `DIR`"),
			&cli.StringFlag{Name: "to", Usage: "write NDJSON files into the folder `DIR`", TakesFile: true},
			&cli.StringFlag{Name: "verify-key", Usage: "check the manifest signature with `FILE` (default: DIR/signing.pub.json)", TakesFile: true},
			&cli.BoolFlag{Name: "allow-unsigned", Usage: "restore even if the manifest is unsigned (not recommended)"},
			&cli.IntFlag{Name: "concurrency", Value: export.DefaultConcurrency, Usage: "restore `N` objects at a time"},
		},
		Action: func(c *cli.Context) error {
			g, err := globalsFrom(c)
			if err != nil {
				return err
			}
			if c.Args().Present() {
				return usagef("restore takes no arguments")
			}
			for _, f := range []string{"from", "keys", "to"} {
				if c.String(f) == "" {
					return usagef("--%s is required", f)
				}
			}
			return (&restoreCmdOptions{globals: g, From: c.String("from"), Keys: c.String("keys"), To: c.String("to"),
				VerifyKey: c.String("verify-key"), AllowUnsigned: c.Bool("allow-unsigned"), Concurrency: c.Int("concurrency")}).Run(c.Context)
		},
	}
}

type restoreCmdOptions struct {
	*globals
	From, Keys, To string
	VerifyKey      string
	AllowUnsigned  bool
	Concurrency    int
}

func (o *restoreCmdOptions) Run(ctx context.Context) error {
	cfg, err := o.loadConfig()
	if err != nil {
		return err
	}
	st, err := storage.OpenRef(cfg, o.From)
	if err != nil {
		return err
	}
	d, err := openKeys(ctx, o.Keys)
	if err != nil {
		return err
	}
	vk := o.VerifyKey
	if vk == "" {
		vk = filepath.Join(o.Keys, keys.FileVerify)
	}
	v, err := keys.LoadVerifier(vk)
	if err != nil {
		return err
	}
	ro := &export.RestoreOptions{Store: st, To: o.To, Identities: d.Identities(), Verifier: v,
		AllowUnsigned: o.AllowUnsigned, Concurrency: o.Concurrency, Log: o.Log}
	ro.Progress, ro.ProgressEvery = progressPrinter(o.globals, "restore")
	sum, err := ro.Run(ctx)
	if errors.Is(err, export.ErrTargetNotEmpty) {
		return usagef("%v", err)
	}
	if err != nil {
		return err
	}
	if o.JSON {
		return o.printJSON(sum)
	}
	fmt.Fprintf(o.Stdout, "Restored %d resources (%s) from %s into %s: %d files, signature and every hash checked.\n",
		sum.Resources, storage.FormatSize(sum.PlaintextBytes), sum.Location, sum.To, len(sum.Files))
	for _, t := range sortedKeys(sum.Counts) {
		fmt.Fprintf(o.Stdout, "  %-28s %d\n", t, sum.Counts[t])
	}
	return nil
}
