package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ehrport/ehrport/cmd/internal/migrate"
	"github.com/ehrport/ehrport/storage"
)

func migrateCommand() *cli.Command {
	return &cli.Command{
		Name:  "migrate",
		Usage: "copy an export between clouds without decrypting it, proving every object at the target; rerun to resume",
		UsageText: `ehrport migrate --from REF --to REF [--concurrency N] [--bw-limit RATE] [--shard I/N] [--dry-run]

Copies every object the source's manifest lists, streaming from store to
store (no local disk, no keys, no decryption). Each object's size and
SHA-256 are checked against the manifest before the target may commit it,
and it is then proven at the target: by the server's own SHA-256 check
where a one-request probe shows the target rejects wrong checksums (such a
target alone hashes the large objects it gets in one PUT), otherwise by
ehrport's hash in flight and a read-back. ETags are never used. The
manifest is written at the target last, only when every object is there.
Rerunning the same command skips what is already proven and finishes the
rest. Nothing at the target is ever deleted.

Exits 0 when the target holds the whole export (or this shard's part of it),
1 when objects are missing at the source or failed their proof, 4 when a
store stayed unavailable after retries; the report says what is still
missing.

Examples:
   ehrport migrate --from clouda:exports/run1 --to cloudb:exit-2026/run1
   ehrport migrate --from clouda:exports/run1 --to cloudb:exit-2026/run1 --dry-run
   ehrport migrate --from clouda:exports/run1 --to cloudb:exit-2026/run1 --bw-limit 100MiB --shard 0/4
   ehrport --json migrate --from ./export --to cloudb:exit-2026/run1 > migrate.json`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "the export to copy, `REF`", Required: true},
			&cli.StringFlag{Name: "to", Usage: "where to copy it, `REF`", Required: true},
			&cli.IntFlag{Name: "concurrency", Value: migrate.DefaultConcurrency, Usage: "objects copied at once"},
			&cli.IntFlag{Name: "parallel", Value: 1, Usage: "ranges of one large object read at once (1: one streamed GET)"},
			&cli.IntFlag{Name: "large-in-flight", Value: 2, Usage: "objects over the part size copied at once (each buffers parallel × part size when parallel > 1, plus 5 parts above 5 GiB)"},
			&cli.StringFlag{Name: "part-size", Value: "16MiB", Usage: "range `SIZE` for large objects"},
			&cli.StringFlag{Name: "single-put-max", Value: "5GiB", Usage: "objects up to `SIZE` go to the target in one PUT, whose SHA-256 the server checks whole; larger ones in parts (0: parts above the target's part size)"},
			&cli.StringFlag{Name: "bw-limit", Usage: "cap the bytes read per second, e.g. 100MiB (a `RATE`)"},
			&cli.StringFlag{Name: "shard", Usage: "copy only shard `I/N` of the objects (0-based), so N machines can share one migration"},
			&cli.BoolFlag{Name: "dry-run", Usage: "show what would be copied; write nothing"},
		},
		Action: func(c *cli.Context) error {
			g, err := globalsFrom(c)
			if err != nil {
				return err
			}
			if c.Args().Present() {
				return usagef("migrate takes no arguments; use --from and --to")
			}
			o := &migrateOptions{globals: g, From: c.String("from"), To: c.String("to"), Concurrency: c.Int("concurrency"),
				Parallel: c.Int("parallel"), LargeInFlight: c.Int("large-in-flight"), DryRun: c.Bool("dry-run")}
			if o.Concurrency < 1 || o.Concurrency > 256 || o.Parallel < 1 || o.Parallel > 64 || o.LargeInFlight < 1 || o.LargeInFlight > 64 {
				return usagef("--concurrency must be 1 to 256, --parallel and --large-in-flight 1 to 64")
			}
			if o.PartSize, err = storage.ParseSize(c.String("part-size")); err != nil || o.PartSize < storage.MinPartSize {
				return usagef("--part-size: give at least 5MiB, e.g. 16MiB")
			}
			if o.SinglePutMax, err = storage.ParseSize(c.String("single-put-max")); err != nil || o.SinglePutMax > storage.MaxSinglePut {
				return usagef("--single-put-max: give at most 5GiB (S3's limit for one PUT), or 0 for parts")
			}
			if o.SinglePutMax == 0 {
				o.SinglePutMax = -1 // parts above the target's part size
			}
			if v := c.String("bw-limit"); v != "" {
				if o.BandwidthLimit, err = storage.ParseSize(strings.TrimSuffix(v, "/s")); err != nil || o.BandwidthLimit <= 0 {
					return usagef("--bw-limit %q: give a rate such as 100MiB", v)
				}
			}
			if v := c.String("shard"); v != "" {
				i, n, ok := strings.Cut(v, "/")
				si, err1 := strconv.Atoi(i)
				sn, err2 := strconv.Atoi(n)
				if !ok || err1 != nil || err2 != nil || sn < 1 || si < 0 || si >= sn {
					return usagef("--shard %q: write I/N with 0 <= I < N, e.g. 0/4", v)
				}
				o.Shard, o.Shards = si, sn
			}
			return o.Run(c.Context)
		},
	}
}

type migrateOptions struct {
	*globals
	From, To              string
	Concurrency, Parallel int
	LargeInFlight         int
	PartSize              int64
	SinglePutMax          int64
	BandwidthLimit        int64
	Shard, Shards         int
	DryRun                bool
}

func (o *migrateOptions) Run(ctx context.Context) error {
	cfg, err := o.loadConfig()
	if err != nil {
		return err
	}
	from, err := openExisting(cfg, o.From, "--from")
	if err != nil {
		return err
	}
	to, err := storage.OpenRef(cfg, o.To)
	if err != nil {
		return err
	}
	if from.Location() == to.Location() {
		return usagef("--from and --to name the same location")
	}
	m := newMeter(o.globals, "migrate")
	rep, err := migrate.Run(ctx, migrate.Options{
		From: from, To: to, Concurrency: o.Concurrency, Parallel: o.Parallel, LargeInFlight: o.LargeInFlight, PartSize: o.PartSize, SinglePutMax: o.SinglePutMax,
		BandwidthLimit: o.BandwidthLimit, Shard: o.Shard, Shards: o.Shards, DryRun: o.DryRun, Log: o.Log,
		Progress: func(p migrate.Progress) { m.update(p.Objects, p.Total, p.Bytes) },
	})
	if err != nil {
		return err
	}
	if o.JSON {
		if err := o.printJSON(rep); err != nil {
			return err
		}
	} else {
		printMigrate(o.globals, rep)
	}
	switch {
	case rep.Unavailable() != nil:
		return fmt.Errorf("%d object(s) not migrated, still missing at the target: %w", len(rep.Failed), rep.Unavailable())
	case len(rep.Failed) > 0 || len(rep.MissingAtSource) > 0:
		if !o.JSON {
			fmt.Fprintf(o.Stderr, "ehrport: migrate: %d object(s) failed, %d missing at the source; the target's manifest was not written\n", len(rep.Failed), len(rep.MissingAtSource))
		}
		return ErrFindings
	}
	return nil
}

func printMigrate(g *globals, rep *migrate.Report) {
	w := g.Stdout
	mode := ""
	if rep.DryRun {
		mode = " (dry run)"
	}
	fmt.Fprintf(w, "MIGRATE %s -> %s%s\n", rep.From, rep.To, mode)
	if rep.Shard != "" {
		fmt.Fprintf(w, "shard %s: %d of the export's objects\n", rep.Shard, rep.Planned)
	}
	proof := "read back and hashed at the target"
	if rep.TargetVerifiesChecksums {
		proof = "verified by the target's own SHA-256 check (probed)"
	}
	if !rep.DryRun {
		fmt.Fprintf(w, "export %s; proof: %s\n", rep.ExportID, proof)
	}
	secs := rep.Duration.Seconds()
	verb := "copied"
	if rep.DryRun {
		verb = "to copy"
	}
	fmt.Fprintf(w, "%s %d objects (%s), already at the target %d (%s), failed %d, missing at the source %d, in %s",
		verb, len(rep.Copied), storage.FormatSize(rep.BytesCopied), len(rep.Skipped), storage.FormatSize(rep.BytesSkipped), len(rep.Failed), len(rep.MissingAtSource), rep.Duration.Round(time.Millisecond))
	if secs > 0 && !rep.DryRun {
		fmt.Fprintf(w, ": %.0f objects/s, %.1f MB/s", float64(len(rep.Copied))/secs, float64(rep.BytesCopied)/secs/1e6)
	}
	fmt.Fprintln(w)
	problems := append(append([]migrate.Object{}, rep.Failed...), rep.MissingAtSource...)
	if len(problems) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "OBJECT\tSIZE\tPROBLEM")
		for _, f := range problems {
			fmt.Fprintf(tw, "%s\t%d\t%s\n", f.Key, f.Size, oneLine(f.Error))
		}
		tw.Flush()
	}
	for _, x := range rep.ExtraAtTarget {
		fmt.Fprintf(w, "extra at the target (left alone): %s (%d bytes)\n", x.Key, x.Size)
	}
	if rep.ManifestWritten {
		fmt.Fprintln(w, "manifest written at the target last: the export is complete there")
	} else if rep.ManifestNote != "" {
		fmt.Fprintln(w, "manifest "+rep.ManifestNote)
	}
}
