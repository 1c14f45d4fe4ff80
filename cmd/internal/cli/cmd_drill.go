package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ehrport/ehrport/cmd/internal/drill"
	"github.com/ehrport/ehrport/cmd/internal/fhirload"
	"github.com/ehrport/ehrport/cmd/internal/report"
	"github.com/ehrport/ehrport/storage"
)

func drillCommand() *cli.Command {
	return &cli.Command{
		Name:  "drill",
		Usage: "the whole exit plan in one command: export to A, migrate to B, verify, restore and compare, optionally load into a FHIR server, audit, optionally delete at A; timed, with a signed report",
		UsageText: `ehrport drill [--from PATH | --from https://…/fhir | --patients N --seed S] [--a REF --b REF] [--keys DIR] [--rto DURATION] [--restore-fhir URL] [--decommission-source [--purge-versions]] [--report DIR]

With no flags at all it generates 200 sample patients, creates ephemeral
keys, uses two folder stores in a temporary directory (removed afterwards)
and writes the report to ./ehrport-report/: no server, no configuration.

Phases: 1 export the source into A (encrypted, signed manifest); 2 migrate
A to B without decrypting; 3 verify B deeply with the customer's keys; 4
restore B into a private temporary folder and compare it with the source,
resource by resource and byte for byte; 4c with --restore-fhir URL, restore
B into that FHIR server (transaction Bundles of PUT entries, ids kept,
decrypted in memory only) and check its counts per type by search; 5 audit
B without keys; 6 with
--decommission-source, delete the export at A and prove the listing (and the
version listing) is empty. In a bucket that keeps versions, deleting leaves
every byte behind as old versions, so the version listing is not empty and
the phase fails; --purge-versions also removes every version and delete
marker under A's prefix for good (versions under object lock stay, and are
named). Each phase is timed, with its throughput; --rto
turns the total into a pass or a fail. A failing phase does not hide the
others; what cannot run is marked skipped, with the reason.

--from https://host/fhir exports a FHIR server's Bulk Data $export (token
from EHRPORT_BULK_TOKEN or --smart-*, as for ehrport export); the comparison
then checks the restored data against SHA-256 digests of the records the
export downloaded, taken in memory as they streamed by: the server's data is
never written to disk unencrypted, and it is exported once.

The report folder gets report.json (docs/report-schema.md), report.html
(self-contained) and report.json.sig (signed with the key directory's
signing key), and signing.pub.json to check it: ehrport report verify.

Exits 0 on PASS (every phase passed and the RTO, if given, was met), 1 on
FAIL, 2 for bad flags (or a --restore-fhir URL that is not a FHIR R4
server), 3 for keys that do not open, 4 when a store or the --restore-fhir
server cannot be reached before the drill starts, 130 when interrupted. See
docs/drill.md.

Examples:
   ehrport drill
   ehrport drill --patients 2000 --rto 5m
   ehrport drill --from ./fhir-export --a clouda:exports/drill1 --b cloudb:exit/drill1 --keys ./hospital-keys --rto 4h
   ehrport drill --a clouda:exports/d2 --b cloudb:exit/d2 --keys ./hospital-keys --decommission-source --report ./evidence/d2
   ehrport drill --a clouda:versioned-bucket/d4 --b cloudb:exit/d4 --keys ./hospital-keys --decommission-source --purge-versions
   ehrport drill --from https://ehr.old-provider.example/fhir --a clouda:exports/d3 --b cloudb:exit/d3 --keys ./hospital-keys --restore-fhir https://fhir.new-provider.example/r4`,
		Description: passphraseHelp + " (--keys only; ephemeral keys need none)",
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{Name: "from", Usage: "export the FHIR files or folders at `PATH` (repeatable), or a FHIR server's $export (https://…/fhir; default: generated sample patients)", TakesFile: true},
			&cli.IntFlag{Name: "patients", Value: drill.DefaultPatients, Usage: "generate `N` sample patients (without --from)"},
			&cli.Uint64Flag{Name: "seed", Value: drill.DefaultSeed, Usage: "seed `S` of the sample patients"},
			&cli.StringFlag{Name: "a", Usage: "cloud A, the provider being left, `REF` (default: a temporary folder)"},
			&cli.StringFlag{Name: "b", Usage: "cloud B, the new provider, `REF` (default: a temporary folder)"},
			keysDirFlag("use the customer's key directory `DIR` (default: ephemeral keys, destroyed after the drill)"),
			&cli.DurationFlag{Name: "rto", Usage: "fail unless the whole drill takes at most `DURATION` (e.g. 4h, 90s)"},
			&cli.BoolFlag{Name: "decommission-source", Usage: "after everything passed, delete the export at A and prove the deletion"},
			&cli.BoolFlag{Name: "purge-versions", Usage: "with --decommission-source: also remove every version and delete marker under A's prefix for good (versioned buckets)"},
			&cli.StringFlag{Name: "report", Value: "ehrport-report", Usage: "write the signed report into `DIR`", TakesFile: true},
			&cli.IntFlag{Name: "concurrency", Value: 4, Usage: "objects in flight per phase"},
			&cli.StringFlag{Name: "restore-fhir", Usage: "also restore B into the FHIR R4 server whose base is `URL` and check its counts (token from EHRPORT_FHIR_TOKEN)"},
			&cli.IntFlag{Name: "fhir-retries", Value: fhirload.DefaultAttempts - 1, Usage: "--restore-fhir: retry a failed request up to `N` times"},
		}, bulkAuthFlags()...),
		Action: func(c *cli.Context) error {
			g, err := globalsFrom(c)
			if err != nil {
				return err
			}
			if c.Args().Present() {
				return usagef("drill takes no arguments; see --help")
			}
			from := c.StringSlice("from")
			server := ""
			for _, f := range from {
				if strings.HasPrefix(f, "http://") || strings.HasPrefix(f, "https://") {
					if len(from) > 1 {
						return usagef("--from %s: a FHIR server is the only input of a drill", f)
					}
					server = f
				}
			}
			for _, f := range from {
				if _, err := os.Stat(f); err != nil && server == "" {
					return usagef("--from %s: no such file or folder", f)
				}
			}
			var fc *fhirload.Client
			if u := c.String("restore-fhir"); u != "" {
				if c.Int("fhir-retries") < 0 {
					return usagef("--fhir-retries must be at least 0")
				}
				hc, err := fhirHTTPClient(c.String("fhir-ca-cert"), fhirload.DefaultConcurrency+2)
				if err != nil {
					return err
				}
				if fc, err = fhirload.New(fhirload.Options{BaseURL: u, Token: os.Getenv("EHRPORT_FHIR_TOKEN"), HTTPClient: hc,
					Attempts: c.Int("fhir-retries") + 1, Log: g.Log}); err != nil {
					return usagef("--restore-fhir: %v", err)
				}
			}
			if len(from) > 0 && (c.IsSet("patients") || c.IsSet("seed")) {
				return usagef("--patients and --seed generate sample data: they contradict --from")
			}
			if c.Int("patients") < 1 {
				return usagef("--patients must be at least 1")
			}
			if c.Duration("rto") < 0 {
				return usagef("--rto must be positive")
			}
			if n := c.Int("concurrency"); n < 1 || n > 256 {
				return usagef("--concurrency must be 1 to 256")
			}
			if c.Bool("purge-versions") && !c.Bool("decommission-source") {
				return usagef("--purge-versions needs --decommission-source")
			}
			if c.String("report") == "" {
				return usagef("--report DIR must name a folder")
			}
			o := &drillCmdOptions{globals: g, From: from, Patients: c.Int("patients"), Seed: c.Uint64("seed"),
				A: c.String("a"), B: c.String("b"), Keys: c.String("keys"), RTO: c.Duration("rto"),
				Decommission: c.Bool("decommission-source"), PurgeVersions: c.Bool("purge-versions"), ReportDir: c.String("report"), Concurrency: c.Int("concurrency"),
				RestoreFHIR: fc, Auth: bulkAuthFrom(c)}
			if server != "" {
				o.From, o.Server = nil, server
			}
			return o.Run(c.Context)
		},
	}
}

type drillCmdOptions struct {
	*globals
	From         []string
	Patients     int
	Seed         uint64
	A, B, Keys   string
	RTO          time.Duration
	Decommission bool
	// PurgeVersions: see drill.Options.PurgeVersions.
	PurgeVersions bool
	ReportDir     string
	Concurrency   int
	Server        string          // --from https://…: a FHIR server's $export
	Auth          bulkAuthOptions // its credentials
	RestoreFHIR   *fhirload.Client
}

func (o *drillCmdOptions) Run(ctx context.Context) error {
	do := &drill.Options{Paths: o.From, Patients: o.Patients, Seed: o.Seed, RTO: o.RTO,
		DecommissionSource: o.Decommission, PurgeVersions: o.PurgeVersions, ReportDir: o.ReportDir, Concurrency: o.Concurrency,
		Version: version(), Log: o.Log, RestoreFHIR: o.RestoreFHIR}
	if o.Server != "" {
		src, err := (&exportCmdOptions{globals: o.globals, Server: o.Server, Auth: o.Auth}).bulkSource(ctx)
		if err != nil {
			return err
		}
		do.Bulk, do.BulkURL = src, shownURL(o.Server)
	}
	if o.A != "" || o.B != "" {
		cfg, err := o.loadConfig()
		if err != nil {
			return err
		}
		if o.A != "" {
			if do.StoreA, err = storage.OpenRef(cfg, o.A); err != nil {
				return err
			}
		}
		if o.B != "" {
			if do.StoreB, err = storage.OpenRef(cfg, o.B); err != nil {
				return err
			}
		}
	}
	if o.Keys != "" {
		d, err := openKeys(ctx, o.Keys)
		if err != nil {
			return err
		}
		do.Keys = d
	}
	res, err := do.Run(ctx)
	if errors.Is(err, report.ErrNotReportDir) {
		return usagef("%v", err)
	}
	if err != nil {
		return err
	}
	r := res.Report
	if o.JSON {
		if err := o.printJSON(r); err != nil {
			return err
		}
		if res.Paths.JSON != "" {
			fmt.Fprintf(o.Stderr, "ehrport: drill: %s, report %s\n", r.Verdict, res.Paths.JSON)
		}
	} else {
		printDrill(o.globals, r, res.Paths)
	}
	if r.Verdict != report.Pass {
		if !o.JSON {
			fmt.Fprintf(o.Stderr, "ehrport: drill: FAIL (%s)\n", strings.Join(r.VerdictReasons, "; "))
		}
		return ErrFindings
	}
	return nil
}

func printDrill(g *globals, r *report.Report, p report.Paths) {
	w := g.Stdout
	fmt.Fprintf(w, "DRILL %s", r.RunID)
	if r.Inputs.Embedded {
		fmt.Fprint(w, " (embedded defaults: sample patients, ephemeral keys, temporary folder stores)")
	}
	fmt.Fprintln(w)
	for _, s := range r.Stores {
		tlsDesc := ""
		if s.Kind == "s3" {
			tlsDesc = ", plain HTTP"
			if s.TLS {
				tlsDesc = ", " + s.TLSVersion
			}
		}
		fmt.Fprintf(w, "cloud %s: %s (%s%s)\n", s.Role, s.Location, s.Kind, tlsDesc)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PHASE\tSTATUS\tTIME\tOBJECTS\tDATA\tRESOURCES\tTHROUGHPUT")
	for _, ph := range r.Phases {
		if ph.Status == report.StatusSkipped {
			fmt.Fprintf(tw, "%s\tskipped\t-\t-\t-\t-\t%s\n", ph.Name, ph.SkipReason)
			continue
		}
		tp := ""
		if ph.Throughput.MBPerSecond > 0 {
			tp = fmt.Sprintf("%.1f MB/s", ph.Throughput.MBPerSecond)
		}
		if ph.Throughput.ResourcesPerSecond > 0 {
			tp += fmt.Sprintf(", %.0f res/s", ph.Throughput.ResourcesPerSecond)
		}
		if tp == "" && ph.Throughput.ObjectsPerSecond > 0 {
			tp = fmt.Sprintf("%.0f objects/s", ph.Throughput.ObjectsPerSecond)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%s\n", ph.Name, ph.Status,
			(time.Duration(ph.DurationSeconds * float64(time.Second))).Round(time.Millisecond), ph.Objects, storage.FormatSize(ph.Bytes), ph.Resources, strings.TrimPrefix(tp, ", "))
	}
	tw.Flush()
	n := 0
	for _, f := range r.Findings {
		if f.Severity != report.SevInfo {
			n++
		}
	}
	if n > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PHASE\tSEVERITY\tCODE\tOBJECT\tFINDING")
		shown := 0
		for _, f := range r.Findings {
			if f.Severity == report.SevInfo {
				continue
			}
			if shown++; shown > 20 {
				fmt.Fprintf(tw, "…\t\t\t\t%d more in the report\n", n-20)
				break
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Phase, f.Severity, f.Code, dash(f.Object), oneLine(f.Message))
		}
		tw.Flush()
	}
	fmt.Fprintln(w)
	total := (time.Duration(r.TotalSeconds * float64(time.Second))).Round(time.Millisecond)
	rto := ""
	if r.RTO != nil {
		rto = ", RTO " + r.RTO.Limit + " met"
		if !r.RTO.Met {
			rto = ", RTO " + r.RTO.Limit + " NOT met"
		}
	}
	fmt.Fprintf(w, "verdict: %s in %s%s\n", r.Verdict, total, rto)
	for _, reason := range r.VerdictReasons {
		fmt.Fprintf(w, "  - %s\n", reason)
	}
	if p.HTML != "" {
		fmt.Fprintf(w, "report: %s (signed: %s; check with: ehrport report verify %s)\n", p.HTML, p.Signature, p.JSON)
	}
}

// shownURL is a URL without its credentials or query, for the report.
func shownURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(a FHIR server)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
