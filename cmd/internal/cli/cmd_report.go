package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ehrport/ehrport/cmd/internal/audit"
	"github.com/ehrport/ehrport/cmd/internal/report"
	"github.com/ehrport/ehrport/cmd/internal/verify"
	"github.com/ehrport/ehrport/crypto/keys"
	"github.com/ehrport/ehrport/storage"
)

func reportCommand() *cli.Command {
	return &cli.Command{
		Name:  "report",
		Usage: "work with signed evidence reports",
		Subcommands: []*cli.Command{
			{
				Name:  "verify",
				Usage: "prove a report was not edited: check report.json.sig over the exact bytes of report.json",
				UsageText: `ehrport report verify [--verify-key FILE | --keys DIR] REPORT.json

The signature file is REPORT.json.sig beside the report. The public key is
--verify-key FILE, else DIR/signing.pub.json with --keys DIR, else the
signing.pub.json the drill wrote beside the report. That last one only proves
the report is unchanged since someone signed it: check that the key id printed
here is the hospital's (ehrport keys list), or verify with the hospital's own
key directory (--keys). Needs no passphrase.

Exits 0 when the signature verifies, 3 when it does not (the report or its
signature was changed, or another key signed it), 2 when a file is missing.

Examples:
   ehrport report verify ehrport-report/report.json
   ehrport report verify --keys ./hospital-keys evidence/d2/report.json`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "verify-key", Usage: "check with the public keyset `FILE` (a signing.pub.json)", TakesFile: true},
					keysDirFlag("check with `DIR`/signing.pub.json"),
				},
				Action: func(c *cli.Context) error {
					g, err := globalsFrom(c)
					if err != nil {
						return err
					}
					if c.NArg() != 1 {
						return usagef("report verify needs exactly one report.json")
					}
					if c.String("verify-key") != "" && c.String("keys") != "" {
						return usagef("give --verify-key FILE or --keys DIR, not both")
					}
					return (&reportVerifyOptions{globals: g, Path: c.Args().First(), VerifyKey: c.String("verify-key"), Keys: c.String("keys")}).Run(c.Context)
				},
			},
		},
	}
}

type reportVerifyOptions struct {
	*globals
	Path, VerifyKey, Keys string
}

func (o *reportVerifyOptions) Run(ctx context.Context) error {
	vk := o.VerifyKey
	switch {
	case vk != "":
	case o.Keys != "":
		vk = filepath.Join(o.Keys, keys.FileVerify)
	default:
		vk = filepath.Join(filepath.Dir(o.Path), report.FileVerifyKey)
	}
	v, err := keys.LoadVerifier(vk)
	if err != nil {
		return usagef("verification key %s: %v", vk, err)
	}
	sigPath := o.Path + ".sig"
	for _, f := range []string{o.Path, sigPath} {
		if _, err := os.Stat(f); err != nil {
			return usagef("%v", err)
		}
	}
	r, sig, err := report.Verify(o.Path, sigPath, v)
	if err != nil {
		return err
	}
	if o.JSON {
		return o.printJSON(map[string]any{"report": o.Path, "signature": sigPath, "verify_key": vk, "key_id": sig.KeyID,
			"sha256": sig.SHA256, "valid": true, "kind": r.Kind, "verdict": r.Verdict, "generated_at": r.GeneratedAt, "run_id": r.RunID})
	}
	fmt.Fprintf(o.Stdout, "report %s: signature valid (key %d, %s)\n", o.Path, sig.KeyID, vk)
	fmt.Fprintf(o.Stdout, "%s %s generated %s: verdict %s\n", r.Kind, r.RunID, r.GeneratedAt, r.Verdict)
	if o.VerifyKey == "" && o.Keys == "" {
		fmt.Fprintf(o.Stdout, "note: the key beside the report proves it is unchanged since it was signed, not who signed it: check that key %d is the hospital's (ehrport keys list), or verify with --keys DIR\n", sig.KeyID)
	}
	return nil
}

// reportFlag is the --report flag of audit and verify.
func reportFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "report", Usage: "also write a signed report (report.json, report.html, report.json.sig) into `DIR`; needs --keys DIR to sign it", TakesFile: true}
}

// checkReportFlag validates --report before any work is done.
func checkReportFlag(c *cli.Context) error {
	dir := c.String("report")
	if dir == "" {
		return nil
	}
	if c.String("keys") == "" {
		return usagef("--report needs --keys DIR: the report is signed with its signing key")
	}
	if err := report.CheckDir(dir); err != nil {
		return usagef("%v", err)
	}
	return nil
}

// writeCommandReport signs r with the signing key of keysDir and writes it
// into dir, with signing.pub.json beside it.
func writeCommandReport(ctx context.Context, g *globals, dir, keysDir string, r *report.Report) error {
	d, err := openKeys(ctx, keysDir)
	if err != nil {
		return err
	}
	signer, err := d.Signer()
	if err != nil {
		return err
	}
	pk, err := os.ReadFile(filepath.Join(keysDir, keys.FileVerify))
	if err != nil {
		return err
	}
	r.Keys.Dir = keysDir
	if abs, err := filepath.Abs(keysDir); err == nil {
		r.Keys.Dir = abs
	}
	r.Keys.List = report.KeyList(d)
	p, err := report.Write(dir, r, signer, pk)
	if err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	w := g.Stdout
	if g.JSON {
		w = g.Stderr
	}
	fmt.Fprintf(w, "report: %s (signed: %s; check with: ehrport report verify %s)\n", p.HTML, p.Signature, p.JSON)
	return nil
}

func auditReport(ctx context.Context, g *globals, dir, keysDir string, st storage.Store, rep *audit.Report, failOn audit.Severity) error {
	r := report.FromAudit(rep, failOn, report.DescribeStore(ctx, "audited", st, false), version(), time.Now())
	return writeCommandReport(ctx, g, dir, keysDir, r)
}

func verifyReport(ctx context.Context, g *globals, dir, keysDir string, st, against storage.Store, rep, cmp *verify.Report, started time.Time) error {
	stores := []report.Store{report.DescribeStore(ctx, "verified", st, false)}
	if against != nil {
		stores = append(stores, report.DescribeStore(ctx, "reference", against, false))
	}
	r := report.FromVerify(rep, cmp, stores, version(), started, time.Now())
	return writeCommandReport(ctx, g, dir, keysDir, r)
}
