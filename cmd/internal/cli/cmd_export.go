package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/ehrport/ehrport/cmd/internal/export"
	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/fhir/bulk"
	"github.com/ehrport/ehrport/storage"
)

func exportCommand() *cli.Command {
	return &cli.Command{
		Name:  "export",
		Usage: "validate FHIR R4 files, encrypt them per resource type and write them with a signed manifest to a store",
		UsageText: `ehrport export --from PATH [--from PATH...] --to STORE_REF (--keys DIR | --recipient PUB.json [--sign-keys DIR | --unsigned]) [options]

Examples:
   ehrport export --from ./bundles --to clouda:exit-2026/run1 --keys ./hospital-keys
   ehrport export --from Patient.ndjson.gz --from ./more --to ./exports/run1 --keys ./hospital-keys --on-invalid quarantine
   ehrport export --from ./data --to clouda:exit/run2 --recipient hospital.pub.json --escrow auditor.pub.json --sign-keys ./provider-keys
   ehrport export --from https://ehr.example.org/fhir --smart-client-id ehrport --smart-key ./ehrport-client.jwks.json --state job.json --to clouda:exit/run3 --keys ./hospital-keys`,
		Description: `Reads Bundles, NDJSON (.ndjson, .ndjson.gz), single resources (.json,
.json.gz) and folders of them, or a FHIR server's Bulk Data $export
(--from https://host/fhir; a bearer token from EHRPORT_BULK_TOKEN, or SMART
Backend Services with --smart-client-id and --smart-key; --state FILE and
--resume continue an interrupted server job; the server's error and deleted
files are exported too, under _server/). Every resource is validated against FHIR R4
(DSTU2 and STU3 data is refused, exit 2); the record is the original bytes
with whitespace removed. Output: one NDJSON stream per resource type, split
into parts (--split-resources, --split-bytes), each encrypted (docs/format-v1.md)
for the KEK of --keys DIR and every --recipient/--escrow, an encrypted
summary with plaintext hashes and counts, and last a Bulk Data manifest.json
with ciphertext hashes only, signed by the signing key. An export without
manifest.json is incomplete; rerunning the command replaces it.
Layout and manifest: docs/export-format.md. Guide: docs/export.md.
` + passphraseHelp,
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{Name: "from", Usage: "read FHIR input from `PATH` (file or folder; repeatable)", TakesFile: true},
			&cli.StringFlag{Name: "to", Usage: "write the export to `STORE_REF` (NAME:bucket/prefix or a folder)"},
			keysDirFlag("encrypt for the KEK of the key directory `DIR` and sign with its signing key"),
			&cli.StringSliceFlag{Name: "recipient", Usage: "also encrypt for the public keyset `PUB.json` or a KMS key URI (repeatable)"},
			&cli.StringSliceFlag{Name: "escrow", Usage: "also encrypt for the escrow/auditor public keyset `PUB.json` (repeatable)"},
			&cli.StringFlag{Name: "sign-keys", Usage: "sign the manifest with the signing key of `DIR` (when --keys is not given)", TakesFile: true},
			&cli.BoolFlag{Name: "unsigned", Usage: "write an unsigned manifest (restore then needs --allow-unsigned)"},
			&cli.StringFlag{Name: "on-invalid", Value: "fail", Usage: "what to do with invalid resources: `fail`, skip or quarantine (encrypted, under quarantine/)"},
			&cli.BoolFlag{Name: "split-bundles", Usage: "export the entries of collection/transaction/batch/searchset Bundles as resources"},
			&cli.BoolFlag{Name: "strict-references", Usage: "fail when references resolve to no resource in the export (default: count them as findings)"},
			&cli.Int64Flag{Name: "split-resources", Value: export.DefaultSplitResources, Usage: "start a new part after `N` resources"},
			&cli.StringFlag{Name: "split-bytes", Value: "256MiB", Usage: "start a new part after `SIZE` bytes of plaintext"},
			&cli.StringFlag{Name: "max-resource-size", Value: "64MiB", Usage: "refuse a resource (NDJSON line, .json file, Bundle entry) over `SIZE`; peak memory is about twice this"},
			&cli.IntFlag{Name: "concurrency", Value: export.DefaultConcurrency, Usage: "upload `N` parts at a time"},
			&cli.StringFlag{Name: "export-id", Usage: "bind the objects to export `ID` (default: time and random)"},
			&cli.StringSliceFlag{Name: "type", Usage: "server export: only resource `TYPE` (_type; repeatable)"},
			&cli.StringFlag{Name: "since", Usage: "server export: only resources changed since `INSTANT` (_since)"},
			&cli.StringFlag{Name: "group", Usage: "server export: export Group `ID` (default: system level)"},
			&cli.StringFlag{Name: "state", Usage: "server export: save the job state to `FILE` (0600) so --resume can continue it", TakesFile: true},
			&cli.BoolFlag{Name: "resume", Usage: "server export: continue the job saved in --state FILE instead of starting a new one"},
		}, bulkAuthFlags()...),
		Action: func(c *cli.Context) error {
			g, err := globalsFrom(c)
			if err != nil {
				return err
			}
			if c.Args().Present() {
				return usagef("export takes no arguments; give inputs with --from")
			}
			from := c.StringSlice("from")
			if len(from) == 0 {
				return usagef("--from PATH is required")
			}
			server := ""
			for _, f := range from {
				if strings.HasPrefix(f, "http://") || strings.HasPrefix(f, "https://") {
					if len(from) > 1 {
						return usagef("--from %s: a FHIR server is the only input of an export", f)
					}
					server = f
				}
			}
			if server == "" && (c.Bool("resume") || c.String("state") != "" || len(c.StringSlice("type")) > 0 || c.String("since") != "" || c.String("group") != "") {
				return usagef("--resume, --state, --type, --since and --group apply to --from https://.../fhir only")
			}
			if c.Bool("resume") && c.String("state") == "" {
				return usagef("--resume needs --state FILE, the state saved by the interrupted export")
			}
			if c.String("to") == "" {
				return usagef("--to STORE_REF is required")
			}
			pol, err := fhir.ParsePolicy(c.String("on-invalid"))
			if err != nil {
				return usagef("--on-invalid: %v", err)
			}
			sb, err := storage.ParseSize(c.String("split-bytes"))
			if err != nil || sb <= 0 {
				return usagef("--split-bytes %q: give a size such as 256MiB", c.String("split-bytes"))
			}
			if c.Int64("split-resources") <= 0 || c.Int("concurrency") <= 0 {
				return usagef("--split-resources and --concurrency must be positive")
			}
			maxRes, err := storage.ParseSize(c.String("max-resource-size"))
			if err != nil || maxRes <= 0 || maxRes > 1<<31-1 {
				return usagef("--max-resource-size %q: give a size from 1 byte to 2GiB, such as 256MiB", c.String("max-resource-size"))
			}
			return (&exportCmdOptions{globals: g, From: from, To: c.String("to"), Keys: c.String("keys"),
				Recipients: c.StringSlice("recipient"), Escrow: c.StringSlice("escrow"), SignKeys: c.String("sign-keys"),
				Unsigned: c.Bool("unsigned"), Policy: pol, SplitBundles: c.Bool("split-bundles"),
				StrictRefs: c.Bool("strict-references"), SplitResources: c.Int64("split-resources"), SplitBytes: sb, MaxResource: int(maxRes),
				Concurrency: c.Int("concurrency"), ExportID: c.String("export-id"),
				Server: server, Types: c.StringSlice("type"), Since: c.String("since"), Group: c.String("group"),
				StateFile: c.String("state"), Resume: c.Bool("resume"), Auth: bulkAuthFrom(c)}).Run(c.Context)
		},
	}
}

type exportCmdOptions struct {
	*globals
	From           []string
	To             string
	Keys           string
	Recipients     []string
	Escrow         []string
	SignKeys       string
	Unsigned       bool
	Policy         fhir.Policy
	SplitBundles   bool
	StrictRefs     bool
	SplitResources int64
	SplitBytes     int64
	MaxResource    int
	Concurrency    int
	ExportID       string

	// A FHIR server's $export instead of files.
	Server, Since, Group string
	Types                []string
	StateFile            string
	Resume               bool
	Auth                 bulkAuthOptions
}

// exportGCPercent is the collector's headroom during an export unless GOGC
// says otherwise. Export's live heap is small and bounded (about 34 MiB for
// a million resources), so Go's default 100% headroom is most of its RSS:
// at 50% a 1M-resource export peaks at about 70 MB instead of 100 MB, for
// some 3% more CPU (docs/export.md, Memory). Commands that move many small
// objects (verify, migrate) allocate faster against a tiny live heap and
// would pay 15-20% more CPU, so they keep the default.
const exportGCPercent = 50

func (o *exportCmdOptions) Run(ctx context.Context) error {
	if o.Keys == "" && len(o.Recipients) == 0 {
		return usagef("give --keys DIR or at least one --recipient PUB.json")
	}
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(exportGCPercent))
	}
	signDir := o.Keys
	if o.SignKeys != "" {
		signDir = o.SignKeys
	}
	if signDir == "" && !o.Unsigned {
		return usagef("the manifest must be signed: give --sign-keys DIR (or --keys DIR), or --unsigned to write it unsigned on purpose")
	}
	if signDir != "" && o.Unsigned {
		return usagef("--unsigned contradicts --keys/--sign-keys")
	}
	cfg, err := o.loadConfig()
	if err != nil {
		return err
	}
	st, err := storage.OpenRef(cfg, o.To)
	if err != nil {
		return err
	}
	// The server's credentials are checked before the keys are unlocked:
	// a wrong key file or client id fails without a passphrase prompt.
	paths := o.From
	var src *export.BulkSource
	if o.Server != "" {
		if src, err = o.bulkSource(ctx); err != nil {
			return err
		}
		paths = nil
	}
	rs, err := recipientsFrom(ctx, o.Keys, o.Recipients, o.Escrow)
	if err != nil {
		return err
	}
	var signer *ehrcrypto.Signer
	if signDir != "" {
		d, err := openKeys(ctx, signDir)
		if err != nil {
			return err
		}
		if signer, err = d.Signer(); err != nil {
			return err
		}
	}
	var findings, dangling int
	eo := &export.Options{Paths: paths, Bulk: src, Store: st, Recipients: rs, Signer: signer, Unsigned: o.Unsigned,
		Policy: o.Policy, SplitBundles: o.SplitBundles, StrictReferences: o.StrictRefs,
		SplitResources: o.SplitResources, SplitBytes: o.SplitBytes, Concurrency: o.Concurrency, ExportID: o.ExportID,
		MaxResourceBytes: o.MaxResource, Log: o.Log,
		Findings: func(f fhir.Finding) {
			if f.Severity < fhir.Warning {
				return
			}
			if f.Code == fhir.CodeDanglingRef {
				dangling++
				if dangling > 3 {
					o.Log.Debug(f.String())
					return
				}
			}
			findings++
			if findings <= 20 {
				o.Log.Warn(f.String())
			} else if findings == 21 {
				o.Log.Warn("more findings are counted in the summary, not printed (--log-level debug prints them)")
			}
		},
	}
	if src != nil {
		eo.Request = "ehrport export (FHIR Bulk Data $export)"
	}
	eo.Progress, eo.ProgressEvery = progressPrinter(o.globals, "export")
	sum, err := eo.Run(ctx)
	if err != nil {
		if errors.Is(err, export.ErrTargetHasExport) {
			return usagef("%v", err)
		}
		return err
	}
	if o.JSON {
		return o.printJSON(sum)
	}
	fmt.Fprintf(o.Stdout, "Exported %d resources (%s plaintext) to %s as %d encrypted objects, export id %s.\n",
		sum.Resources, storage.FormatSize(sum.PlaintextBytes), sum.Location, sum.Objects, sum.ExportID)
	tw := tabwriter.NewWriter(o.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tRESOURCES")
	for _, t := range sortedKeys(sum.Counts) {
		fmt.Fprintf(tw, "%s\t%d\n", t, sum.Counts[t])
	}
	tw.Flush()
	s := sum.Stats
	fmt.Fprintf(o.Stdout, "duplicates stored once %d, skipped %d, quarantined %d; findings:", s.Duplicates, s.Skipped, s.Quarantined)
	if len(sum.Findings) == 0 {
		fmt.Fprint(o.Stdout, " none")
	}
	for _, c := range sortedKeys(sum.Findings) {
		fmt.Fprintf(o.Stdout, " %s %d", c, sum.Findings[c])
	}
	fmt.Fprintln(o.Stdout)
	if sf := sum.Server; sf != nil {
		fmt.Fprintf(o.Stdout, "from the server: %d error files (%d OperationOutcomes: %s), %d deleted files (%d Bundles, %d deleted resources), in _server/.\n",
			sf.ErrorFiles, sf.Outcomes, severityCounts(sf.OutcomesBySev), sf.DeletedFiles, sf.DeletedBundles, sf.Deleted)
	}
	signed := "signed"
	if !sum.Signed {
		signed = "UNSIGNED"
	}
	fmt.Fprintf(o.Stdout, "manifest.json written last (%s); %.1fs, %.0f resources/s.\n", signed, sum.Timings.Total, sum.Timings.ResourcesPerSec)
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// progressPrinter draws a one-line progress display on a terminal, or logs
// a line every 10 seconds otherwise. Quiet and JSON modes print nothing.
func progressPrinter(g *globals, what string) (func(export.Progress), time.Duration) {
	if g.Quiet {
		return nil, 0
	}
	tty := false
	if f, ok := g.Stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
	}
	if tty {
		return func(p export.Progress) {
			bar := ""
			if p.FilesTotal > 0 {
				const width = 24
				n := int(p.Files * width / p.FilesTotal)
				if p.Done {
					n = width
				}
				bar = fmt.Sprintf("[%s%s] %d/%d files, ", strings.Repeat("=", n), strings.Repeat(" ", width-n), p.Files, p.FilesTotal)
			}
			line := fmt.Sprintf("\r%s: %s%d resources, %s, %d objects stored, %s", what, bar, p.Resources, storage.FormatSize(p.PlaintextBytes), p.Uploaded, p.Elapsed.Truncate(time.Second))
			if p.Done {
				line += "\n"
			}
			io.WriteString(g.Stderr, line+"\x1b[K")
		}, 200 * time.Millisecond
	}
	return func(p export.Progress) {
		if p.Done {
			return
		}
		g.Log.Info(what+" progress", "files", p.Files, "files_total", p.FilesTotal, "resources", p.Resources, "plaintext_bytes", p.PlaintextBytes, "objects_stored", p.Uploaded, "elapsed", p.Elapsed.Truncate(time.Second).String())
	}, 10 * time.Second
}

// bulkSource builds the $export client. The bearer token, if the server
// needs one, comes from EHRPORT_BULK_TOKEN or SMART Backend Services
// (bulk_auth.go), never from the command line.
func (o *exportCmdOptions) bulkSource(ctx context.Context) (*export.BulkSource, error) {
	hc, err := fhirHTTPClient(o.Auth.CACert, 8)
	if err != nil {
		return nil, err
	}
	bo := bulk.Options{BaseURL: o.Server, HTTPClient: hc, TokenHosts: o.Auth.TokenHosts,
		Events: func(ev bulk.Event) { o.Log.Debug("bulk", "event", fmt.Sprint(ev)) }}
	auth, err := o.Auth.tokenSource(ctx, o.Server, bo.HTTPClient, o.Log.Warn)
	if err != nil {
		return nil, err
	}
	bo.Auth = auth
	client, err := bulk.New(bo)
	if err != nil {
		return nil, usagef("--from %s: %v", o.Server, err)
	}
	src := &export.BulkSource{Client: client, Request: bulk.Request{Level: bulk.LevelSystem, Types: o.Types, Since: o.Since}}
	if o.Group != "" {
		src.Request.Level, src.Request.GroupID = bulk.LevelGroup, o.Group
	}
	if o.Resume {
		f, err := os.Open(o.StateFile)
		if err != nil {
			return nil, usagef("--resume: %v", err)
		}
		defer f.Close()
		if src.State, err = bulk.LoadState(f); err != nil {
			return nil, usagef("--resume: %s: %v", o.StateFile, err)
		}
	}
	if o.StateFile != "" {
		path := o.StateFile
		src.Save = func(st *bulk.State) error {
			return ehrcrypto.WriteFileAtomic(path, func(w io.Writer) error { return st.Save(w) })
		}
	}
	return src, nil
}

// severityCounts prints "1 error, 2 information" in severity order.
func severityCounts(m map[string]int64) string {
	var parts []string
	for _, sev := range []string{"fatal", "error", "warning", "information"} {
		if n := m[sev]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, sev))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
