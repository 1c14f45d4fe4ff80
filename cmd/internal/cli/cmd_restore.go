package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/cmd/internal/fhirload"
	"github.com/ehrport/ehrport/crypto/keys"
	"github.com/ehrport/ehrport/storage"
)

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:  "restore",
		Usage: "check an export's signature and hashes and decrypt it back to NDJSON files, or load it into a FHIR server",
		UsageText: `ehrport restore --from STORE_REF --keys DIR (--to DIR | --to-fhir URL) [options]

Examples:
   ehrport restore --from clouda:exit-2026/run1 --keys ./hospital-keys --to ./restored
   ehrport --json restore --from ./exports/run1 --keys ./hospital-keys --to ./restored
   ehrport restore --from cloudb:exit-2026/run1 --keys ./hospital-keys --to-fhir https://fhir.new-provider.example/r4
   EHRPORT_FHIR_TOKEN=... ehrport restore --from ./exports/run1 --keys ./hospital-keys --to-fhir https://fhir.example/r4 --batch-size 100`,
		Description: `Reads manifest.json, checks its signature with the signing.pub.json of
--keys DIR (or --verify-key FILE), decrypts the summary, then fetches every
object, checking its ciphertext size and SHA-256 against the manifest while
streaming, and decrypts it into DIR/<Type>.<NNN>.ndjson. A file appears only
after its last segment authenticated and its plaintext SHA-256, size, line
count and ids matched the summary. The restored bytes are exactly the
exported plaintext. Exit 3 names a corrupt or tampered object.

With --to-fhir URL (the server's FHIR R4 base) nothing is written to disk
but ciphertext: each object is checked against the signed manifest, then
decrypted in memory and sent as transaction Bundles of PUT entries (ids
kept; a rerun replaces), --batch-size entries each, --fhir-concurrency at
a time, retried with back-off on 408, 429, 5xx and network errors. A
Bundle the export kept whole is loaded as one Bundle resource. Then
GET URL/Type?_summary=count must equal the export's count for every type:
load into a server (or tenant) that holds no other resources of those
types. A bearer token comes from EHRPORT_FHIR_TOKEN. Plain http only to
loopback. Exit 1: a count differs or the server refused the data; exit 2:
the URL is not a FHIR R4 server; exit 4: the server cannot be reached or
refused the token. Guide: docs/restore.md.
` + passphraseHelp,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "read the export at `STORE_REF`"},
			keysDirFlag("decrypt with the key directory `DIR`"),
			&cli.StringFlag{Name: "to", Usage: "write NDJSON files into the folder `DIR`", TakesFile: true},
			&cli.StringFlag{Name: "to-fhir", Usage: "load into the FHIR R4 server whose base is `URL` instead (nothing decrypted on disk)"},
			&cli.IntFlag{Name: "batch-size", Value: fhirload.DefaultBatchSize, Usage: "--to-fhir: `N` resources per transaction Bundle"},
			&cli.IntFlag{Name: "fhir-concurrency", Value: fhirload.DefaultConcurrency, Usage: "--to-fhir: `N` transactions in flight"},
			&cli.IntFlag{Name: "retries", Value: fhirload.DefaultAttempts - 1, Usage: "--to-fhir: retry a failed request up to `N` times"},
			fhirCAFlag(),
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
			for _, f := range []string{"from", "keys"} {
				if c.String(f) == "" {
					return usagef("--%s is required", f)
				}
			}
			switch {
			case c.String("to") == "" && c.String("to-fhir") == "":
				return usagef("--to is required: give --to DIR (NDJSON files) or --to-fhir URL (a FHIR server)")
			case c.String("to") != "" && c.String("to-fhir") != "":
				return usagef("--to DIR and --to-fhir URL contradict each other: give one of them")
			}
			o := &restoreCmdOptions{globals: g, From: c.String("from"), Keys: c.String("keys"), To: c.String("to"),
				VerifyKey: c.String("verify-key"), AllowUnsigned: c.Bool("allow-unsigned"), Concurrency: c.Int("concurrency")}
			if u := c.String("to-fhir"); u != "" {
				if c.Int("batch-size") < 1 || c.Int("fhir-concurrency") < 1 || c.Int("retries") < 0 {
					return usagef("--batch-size and --fhir-concurrency must be at least 1, --retries at least 0")
				}
				hc, err := fhirHTTPClient(c.String("fhir-ca-cert"), c.Int("fhir-concurrency")+2)
				if err != nil {
					return err
				}
				fc, err := fhirload.New(fhirload.Options{BaseURL: u, Token: os.Getenv("EHRPORT_FHIR_TOKEN"), HTTPClient: hc, BatchSize: c.Int("batch-size"),
					Concurrency: c.Int("fhir-concurrency"), Attempts: c.Int("retries") + 1, Log: g.Log})
				if err != nil {
					return usagef("--to-fhir: %v", err)
				}
				o.FHIR = fc
			}
			return o.Run(c.Context)
		},
	}
}

type restoreCmdOptions struct {
	*globals
	From, Keys, To string
	VerifyKey      string
	AllowUnsigned  bool
	Concurrency    int
	FHIR           *fhirload.Client // --to-fhir, instead of To
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
	if o.FHIR != nil {
		return o.toFHIR(ctx, ro)
	}
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

// toFHIR restores into the FHIR server and prints what it holds per type.
// A count that differs is printed, then returned as the error (exit 1).
func (o *restoreCmdOptions) toFHIR(ctx context.Context, ro *export.RestoreOptions) error {
	res, err := fhirload.Restore(ctx, *ro, o.FHIR)
	if res == nil || res.Restore == nil || res.Load == nil {
		return err
	}
	if o.JSON {
		if perr := o.printJSON(res); perr != nil {
			return perr
		}
		return err
	}
	l := res.Load
	fmt.Fprintf(o.Stdout, "Loaded %d resources from %s into %s (FHIR %s%s): %d transaction Bundles (%s), %.1fs, %.0f resources/s, %d retries; signature and every hash checked, nothing decrypted on disk.\n",
		l.Resources, res.Restore.Location, res.Server, res.FHIRVersion, paren(res.Software), l.Bundles, storage.FormatSize(l.Bytes), l.Seconds, l.PerSecond, l.Retries)
	if l.Posted > 0 {
		fmt.Fprintf(o.Stdout, "%d resources without an id were created (POST): the server chose their ids.\n", l.Posted)
	}
	if res.Check != nil {
		tw := tabwriter.NewWriter(o.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TYPE\tEXPORT\tSERVER\tCOUNT CHECK (_summary=count)")
		for _, t := range sortedKeys(res.Restore.Counts) {
			mark := "equal"
			if res.Check.Server[t] != res.Restore.Counts[t] {
				mark = "DIFFERS"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", t, res.Restore.Counts[t], res.Check.Server[t], mark)
		}
		tw.Flush()
	}
	return err
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return ", " + s
}
