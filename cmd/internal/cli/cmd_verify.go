package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ehrport/ehrport/cmd/internal/verify"
	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/crypto/keys"
	"github.com/ehrport/ehrport/storage"
)

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "prove an export is complete and unchanged: signature, every object's size and SHA-256, bindings, nothing extra",
		UsageText: `ehrport verify --at REF [--keys DIR [--deep] | --verify-key FILE] [--against REF]

Without keys it reads every object the manifest lists in full and compares
its size and ciphertext SHA-256 with the manifest (never an ETag), checks
that each envelope is bound to its own path and export, and that nothing
unlisted sits beside the export. With --keys DIR it also checks the
manifest's signature (signing.pub.json: no passphrase needed). With --deep
it decrypts every object as a stream, compares the plaintext SHA-256 and the
counts per type with the encrypted summary, and validates the FHIR and its
references. --against REF also compares the two locations object by object.

Exits 0 only when everything matches; 1 with a finding for each problem.

Examples:
   ehrport verify --at cloudb:exit-2026/run1 --keys ./hospital-keys
   ehrport verify --at cloudb:exit-2026/run1 --keys ./hospital-keys --deep
   ehrport verify --at cloudb:exit-2026/run1 --against clouda:exports/run1
   ehrport --json verify --at ./export --verify-key signing.pub.json`,
		Description: passphraseHelp + " (--deep only)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "at", Usage: "the export to verify, `REF` (NAME:bucket/prefix or a folder)", Required: true},
			keysDirFlag("check the signature with `DIR`/signing.pub.json, and decrypt with DIR for --deep"),
			&cli.StringFlag{Name: "verify-key", Usage: "check the manifest signature with `FILE` (a signing.pub.json)", TakesFile: true},
			&cli.BoolFlag{Name: "deep", Usage: "decrypt every object and check the plaintext, the counts and the FHIR (needs --keys)"},
			&cli.StringFlag{Name: "against", Usage: "also compare with the location `REF`, object by object"},
			&cli.IntFlag{Name: "concurrency", Value: verify.DefaultConcurrency, Usage: "objects read at once"},
			reportFlag(),
		},
		Action: func(c *cli.Context) error {
			g, err := globalsFrom(c)
			if err != nil {
				return err
			}
			if c.Args().Present() {
				return usagef("verify takes no arguments; give the location with --at")
			}
			if c.Bool("deep") && c.String("keys") == "" {
				return usagef("--deep needs --keys DIR")
			}
			if n := c.Int("concurrency"); n < 1 || n > 256 {
				return usagef("--concurrency must be 1 to 256")
			}
			if err := checkReportFlag(c); err != nil {
				return err
			}
			return (&verifyOptions{globals: g, At: c.String("at"), Keys: c.String("keys"), VerifyKey: c.String("verify-key"),
				Deep: c.Bool("deep"), Against: c.String("against"), Concurrency: c.Int("concurrency"), ReportDir: c.String("report")}).Run(c.Context)
		},
	}
}

type verifyOptions struct {
	*globals
	At, Keys, VerifyKey, Against string
	ReportDir                    string // a signed report, signed with Keys
	Deep                         bool
	Concurrency                  int
}

func (o *verifyOptions) Run(ctx context.Context) error {
	cfg, err := o.loadConfig()
	if err != nil {
		return err
	}
	st, err := openExisting(cfg, o.At, "--at")
	if err != nil {
		return err
	}
	var against storage.Store
	if o.Against != "" {
		if against, err = openExisting(cfg, o.Against, "--against"); err != nil {
			return err
		}
	}
	var verifier *ehrcrypto.Verifier
	if vk := o.VerifyKey; vk != "" || o.Keys != "" {
		if vk == "" {
			vk = filepath.Join(o.Keys, keys.FileVerify)
		}
		if verifier, err = keys.LoadVerifier(vk); err != nil {
			return err
		}
	}
	opts := verify.Options{Store: st, Verifier: verifier, Deep: o.Deep, Concurrency: o.Concurrency, Log: o.Log, Reference: against}
	if o.Deep {
		d, err := openKeys(ctx, o.Keys)
		if err != nil {
			return err
		}
		opts.Identities = d.Identities()
	}
	m := newMeter(o.globals, "verify")
	progress := func(objects int, bytes int64) { m.update(objects, 0, bytes) }
	opts.Progress = progress
	started := time.Now()
	rep, err := verify.Run(ctx, opts)
	if err != nil {
		return err
	}
	var cmpRep *verify.Report
	if against != nil {
		cmpRep, err = verify.CompareByManifest(ctx, rep, verify.CompareOptions{Store: st, Reference: against, Concurrency: o.Concurrency, Progress: progress})
		if err != nil {
			return err
		}
	}
	if o.JSON {
		out := map[string]any{"verify": rep}
		if cmpRep != nil {
			out["against"] = map[string]any{"reference": against.Location(), "report": cmpRep}
		}
		if err := o.printJSON(out); err != nil {
			return err
		}
	} else {
		printVerify(o.globals, "VERIFY "+rep.Location, rep)
		if cmpRep != nil {
			printVerify(o.globals, "COMPARE "+rep.Location+" against "+against.Location(), cmpRep)
		}
	}
	if o.ReportDir != "" {
		if err := verifyReport(ctx, o.globals, o.ReportDir, o.Keys, st, against, rep, cmpRep, started); err != nil {
			return err
		}
	}
	n := len(rep.Findings)
	if cmpRep != nil {
		n += len(cmpRep.Findings)
	}
	if n > 0 {
		if !o.JSON {
			fmt.Fprintf(o.Stderr, "ehrport: verify: %d problem(s) found\n", n)
		}
		return ErrFindings
	}
	return nil
}

// openExisting opens a reference whose location must already exist: a
// folder that is not there is a typo, not an empty export.
func openExisting(cfg *storage.Config, ref, flag string) (storage.Store, error) {
	st, err := storage.OpenRef(cfg, ref)
	if err != nil {
		return nil, err
	}
	if ls, ok := st.(*storage.LocalStore); ok {
		if fi, err := os.Stat(ls.Root()); errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.IsDir()) {
			return nil, usagef("%s %s: no such folder", flag, ref)
		}
	}
	return st, nil
}

func printVerify(g *globals, title string, rep *verify.Report) {
	w := g.Stdout
	fmt.Fprintln(w, title)
	if rep.ExportID != "" {
		sig := "signature not checked"
		if rep.SignatureChecked {
			sig = "signature valid"
		}
		fmt.Fprintf(w, "export %s, %s\n", rep.ExportID, sig)
	}
	fmt.Fprintf(w, "objects %d, verified %d, %s read in %s; proof: %s\n", rep.Objects, rep.ObjectsVerified, storage.FormatSize(rep.Bytes), rep.Duration.Round(time.Millisecond), rep.Proof)
	if rep.Deep {
		fmt.Fprintf(w, "decrypted %s; resources per type:", storage.FormatSize(rep.PlaintextBytes))
		for _, t := range sortedKeys(rep.Counts) {
			fmt.Fprintf(w, " %s %d", t, rep.Counts[t])
		}
		fmt.Fprintln(w)
	}
	for _, n := range rep.FHIRNotes {
		fmt.Fprintf(w, "FHIR: %s\n", n)
	}
	if len(rep.Findings) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CODE\tOBJECT\tEXPECTED\tFOUND\tPROBLEM")
		for _, f := range rep.Findings {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Code, dash(f.Object), dash(short(f.Expected)), dash(short(f.Found)), oneLine(f.Message))
		}
		tw.Flush()
	}
	if len(rep.NotChecked) > 0 {
		fmt.Fprintln(w, "not checked:")
		for _, n := range rep.NotChecked {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	if rep.OK() {
		fmt.Fprintln(w, "verdict: OK, everything matches")
	} else {
		fmt.Fprintf(w, "verdict: FAIL, %d problem(s)\n", len(rep.Findings))
	}
	fmt.Fprintln(w)
}

// short keeps long hashes readable in a table; --json has them whole.
func short(s string) string {
	if len(s) > 40 && !strings.Contains(s, " ") {
		return s[:16] + "…"
	}
	return s
}
