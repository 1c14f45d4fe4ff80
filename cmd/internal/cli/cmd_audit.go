package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/urfave/cli/v2"

	"github.com/ehrport/ehrport/cmd/internal/audit"
	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/storage"
)

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "check encryption at rest without any key: every object must be a valid, correctly bound ehrport envelope",
		UsageText: `ehrport audit --at REF [--policy FILE] [--fail-on SEVERITY]

Lists every object (and every version, where the store keeps versions), reads
the head of each, and classifies it: a valid envelope that meets the policy
and is bound to its own name; plaintext (FHIR/JSON, gzip, PDF, DICOM, text);
unknown content; or a malformed envelope. Names, metadata and tags are checked
for anything that looks like patient data or a plaintext hash. It records
versioning, object lock, bucket policy and the endpoint's TLS. It never
changes the store and needs no key.

Exits 1 when a finding is at or above --fail-on (default high). The output
lists at most 100 findings of each kind and counts them all; --findings FILE
writes every finding, one JSON object per line (the file appears only when
the audit ran to the end).

Examples:
   ehrport audit --at cloudb:exit-2026
   ehrport audit --at ./export --json > audit.json
   ehrport audit --at clouda:archive --policy audit-policy.toml --fail-on medium
   ehrport audit --at clouda:archive --findings all-findings.jsonl`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "at", Usage: "the store location to audit, `REF` (NAME:bucket/prefix or a folder)", Required: true},
			&cli.StringFlag{Name: "policy", Usage: "TOML `FILE` with format_version, max_stanzas, required_key_ids, require_escrow, metadata_names, min_payload_entropy (docs/audit.md)", TakesFile: true},
			&cli.StringFlag{Name: "fail-on", Value: "high", Usage: "exit 1 on findings at or above `SEVERITY`: info, low, medium, high, critical"},
			&cli.IntFlag{Name: "concurrency", Value: audit.DefaultConcurrency, Usage: fmt.Sprintf("objects read at once (1 to %d)", audit.MaxConcurrency)},
			&cli.StringFlag{Name: "findings", Usage: "write every finding to `FILE` as JSON lines", TakesFile: true},
			reportFlag(), keysDirFlag("sign the --report with the signing key of `DIR`"),
		},
		Action: func(c *cli.Context) error {
			g, err := globalsFrom(c)
			if err != nil {
				return err
			}
			if c.Args().Present() {
				return usagef("audit takes no arguments; give the location with --at")
			}
			failOn, err := audit.ParseSeverity(c.String("fail-on"))
			if err != nil {
				return usagef("--fail-on: %v", err)
			}
			if c.Int("concurrency") < 1 || c.Int("concurrency") > audit.MaxConcurrency {
				return usagef("--concurrency must be 1 to %d", audit.MaxConcurrency)
			}
			if err := checkReportFlag(c); err != nil {
				return err
			}
			return (&auditOptions{globals: g, At: c.String("at"), PolicyFile: c.String("policy"), FailOn: failOn, Concurrency: c.Int("concurrency"),
				FindingsFile: c.String("findings"), ReportDir: c.String("report"), Keys: c.String("keys")}).Run(c.Context)
		},
	}
}

type auditOptions struct {
	*globals
	At          string
	PolicyFile  string
	FailOn      audit.Severity
	Concurrency int
	// FindingsFile, when set, receives every finding as JSON lines.
	FindingsFile string
	// ReportDir, when set, receives a signed report (signed with Keys).
	ReportDir, Keys string
}

// auditPolicyFile is the --policy schema (docs/audit.md).
type auditPolicyFile struct {
	FormatVersion     *uint8   `toml:"format_version"`
	MaxStanzas        *int     `toml:"max_stanzas"`
	RequiredKeyIDs    []uint32 `toml:"required_key_ids"`
	RequireEscrow     *bool    `toml:"require_escrow"`
	MetadataNames     []string `toml:"metadata_names"`
	MinPayloadEntropy *float64 `toml:"min_payload_entropy"`
}

func loadAuditPolicy(path string) (audit.Policy, error) {
	p := audit.DefaultPolicy()
	if path == "" {
		return p, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return p, usagef("--policy: %v", err)
	}
	var f auditPolicyFile
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		var de *toml.DecodeError
		var sme *toml.StrictMissingError
		switch {
		case errors.As(err, &sme) && len(sme.Errors) > 0:
			row, _ := sme.Errors[0].Position()
			return p, usagef("%s:%d: unknown key %q (see docs/audit.md)", path, row, strings.Join(sme.Errors[0].Key(), "."))
		case errors.As(err, &de):
			row, col := de.Position()
			return p, usagef("%s:%d:%d: %v", path, row, col, de)
		}
		return p, usagef("%s: %v", path, err)
	}
	if f.FormatVersion != nil {
		p.Crypto.Version = *f.FormatVersion
	}
	if f.MaxStanzas != nil {
		p.Crypto.MaxStanzas = *f.MaxStanzas
	}
	if f.RequireEscrow != nil {
		p.Crypto.RequireEscrow = *f.RequireEscrow
	}
	p.Crypto.RequiredKeyIDs = f.RequiredKeyIDs
	if f.MetadataNames != nil {
		p.MetadataNames = f.MetadataNames
	}
	if f.MinPayloadEntropy != nil {
		p.MinPayloadEntropy = *f.MinPayloadEntropy
	}
	return p, nil
}

func (o *auditOptions) Run(ctx context.Context) error {
	pol, err := loadAuditPolicy(o.PolicyFile)
	if err != nil {
		return err
	}
	cfg, err := o.loadConfig()
	if err != nil {
		return err
	}
	st, err := storage.OpenRef(cfg, o.At)
	if err != nil {
		return err
	}
	if ls, ok := st.(*storage.LocalStore); ok {
		if fi, err := os.Stat(ls.Root()); err != nil || !fi.IsDir() {
			return usagef("--at %s: no such folder", o.At)
		}
	}
	m := newMeter(o.globals, "audit")
	ao := audit.Options{
		Store: st, Policy: pol, Concurrency: o.Concurrency,
		Progress: func(done int64) { m.update(int(done), 0, 0) },
	}
	var rep *audit.Report
	if o.FindingsFile == "" {
		rep, err = audit.Run(ctx, ao)
	} else {
		// Written beside its final name and renamed there only after the
		// audit ended, so a partial list never looks complete.
		err = ehrcrypto.WriteFileAtomic(o.FindingsFile, func(w io.Writer) error {
			// Buffered: OnFinding runs under the audit's lock, once per finding.
			bw := bufio.NewWriter(w)
			enc := json.NewEncoder(bw)
			var encErr error
			ao.OnFinding = func(f audit.Finding) {
				if encErr == nil {
					encErr = enc.Encode(f)
				}
			}
			var runErr error
			rep, runErr = audit.Run(ctx, ao)
			if runErr != nil {
				return runErr
			}
			if encErr == nil {
				encErr = bw.Flush()
			}
			if encErr != nil {
				return fmt.Errorf("--findings %s: %w", o.FindingsFile, encErr)
			}
			return nil
		})
	}
	if err != nil {
		return err
	}
	if o.JSON {
		if err := o.printJSON(rep); err != nil {
			return err
		}
	} else {
		printAudit(o, rep)
	}
	if o.ReportDir != "" {
		if err := auditReport(ctx, o.globals, o.ReportDir, o.Keys, st, rep, o.FailOn); err != nil {
			return err
		}
	}
	if n := rep.CountAtLeast(o.FailOn); n > 0 {
		if !o.JSON {
			fmt.Fprintf(o.Stderr, "ehrport: audit: %d finding(s) at or above %s\n", n, o.FailOn)
		}
		return ErrFindings
	}
	return nil
}

func printAudit(o *auditOptions, rep *audit.Report) {
	w := o.Stdout
	fmt.Fprintf(w, "AUDIT %s\n", rep.Location)
	fmt.Fprintf(w, "objects %d, versions %d, %d bytes, in %s\n", rep.Objects, rep.Versions, rep.Bytes, rep.Duration.Round(time.Millisecond))
	classes := []string{audit.ClassEnvelope, audit.ClassMetadata, audit.ClassPlaintext, audit.ClassUnknown, audit.ClassMalformed, audit.ClassPolicy, audit.ClassDeleted}
	var parts []string
	for _, c := range classes {
		if n := rep.Classes[c]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", c, n))
		}
	}
	fmt.Fprintf(w, "classes: %s\n", strings.Join(parts, ", "))
	if s := rep.Store; s != nil && s.Kind == "s3" {
		tlsDesc := "plain HTTP"
		if s.TLS {
			tlsDesc = s.Version + ", certificate sha256 " + s.CertSHA256
		}
		fmt.Fprintf(w, "store: %s, %s; versioning %s, object lock %s, bucket policy %s\n", s.Endpoint, tlsDesc, s.Versioning, s.ObjectLock, s.Policy)
	}
	if len(rep.Findings) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEVERITY\tCODE\tOBJECT\tEUCS\tFINDING")
		for _, f := range rep.Findings {
			obj := f.Object
			if f.VersionID != "" {
				obj += " (version " + f.VersionID + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Severity, f.Code, dash(obj), dash(strings.Join(f.EUCS, " ")), f.Message)
		}
		tw.Flush()
	}
	if rep.FindingsOmitted > 0 {
		var counts []string
		for _, code := range slices.Sorted(maps.Keys(rep.FindingCounts)) {
			counts = append(counts, fmt.Sprintf("%s %d", code, rep.FindingCounts[code]))
		}
		fmt.Fprintf(w, "... and %d more finding(s) not listed; all counted: %s (--findings FILE lists every one)\n", rep.FindingsOmitted, strings.Join(counts, ", "))
	}
	fmt.Fprintln(w, "\nnot checked:")
	for _, n := range rep.NotChecked {
		fmt.Fprintf(w, "  - %s\n", n)
	}
	worst, any := rep.Worst()
	switch {
	case !any || worst < o.FailOn:
		fmt.Fprintf(w, "\nverdict: PASS (no finding at or above %s)\n", o.FailOn)
	default:
		fmt.Fprintf(w, "\nverdict: FAIL (%d finding(s) at or above %s)\n", rep.CountAtLeast(o.FailOn), o.FailOn)
	}
}
