// Command benchchart turns the runs of scripts/bench-scale.sh into the scale
// curve of docs/BENCHMARKS.md: a summary (docs/bench/scale.json), a chart
// (docs/bench/scale.svg) and Markdown tables. It is bench tooling, not part
// of ehrport:
//
//	go run ./cmd/internal/benchchart -runs runs.jsonl -json scale.json -svg scale.svg -md table.md
//
// Or it redraws the chart from a summary already written:
//
//	go run ./cmd/internal/benchchart -from docs/bench/scale.json -svg docs/bench/scale.svg
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
)

func main() {
	var o Options
	flag.StringVar(&o.Runs, "runs", "", "read the runs, one JSON object a `FILE` line")
	flag.StringVar(&o.From, "from", "", "read the runs from a summary `FILE` written before (instead of -runs)")
	flag.StringVar(&o.Meta, "meta", "", "a JSON object stored as the summary's meta (machine, commit, date)")
	flag.Float64Var(&o.RSSLimit, "rss-limit", 256, "peak RSS limit in `MB`, drawn and checked")
	flag.StringVar(&o.Title, "title", "ehrport scale curve", "chart title")
	flag.StringVar(&o.JSON, "json", "", "write the summary to `FILE`")
	flag.StringVar(&o.SVGOut, "svg", "", "write the chart to `FILE`")
	flag.StringVar(&o.MD, "md", "", "write the Markdown tables to `FILE` (- for stdout)")
	flag.Parse()
	if err := o.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchchart:", err)
		os.Exit(1)
	}
}

// Options are one invocation: one input, any of the outputs.
type Options struct {
	Runs, From, Meta string
	RSSLimit         float64
	Title            string
	JSON, SVGOut, MD string
}

// Run reads, summarises and writes what was asked.
func (o *Options) Run() error {
	var s *Scale
	switch {
	case o.Runs != "" && o.From != "":
		return fmt.Errorf("give -runs or -from, not both")
	case o.Runs != "":
		f, err := os.Open(o.Runs)
		if err != nil {
			return err
		}
		runs, err := ReadRuns(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", o.Runs, err)
		}
		s = Summarise(runs, o.RSSLimit)
		if o.Meta != "" {
			if !json.Valid([]byte(o.Meta)) {
				return fmt.Errorf("-meta is not JSON")
			}
			s.Meta = json.RawMessage(o.Meta)
		}
	case o.From != "":
		b, err := os.ReadFile(o.From)
		if err != nil {
			return err
		}
		var old Scale
		if err := json.Unmarshal(b, &old); err != nil {
			return fmt.Errorf("%s: %w", o.From, err)
		}
		s = Summarise(old.Runs, o.RSSLimit)
		s.Meta = old.Meta
	default:
		return fmt.Errorf("give -runs FILE or -from FILE")
	}
	if o.JSON != "" {
		b, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.JSON, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if o.SVGOut != "" {
		if err := writeWith(o.SVGOut, func(f *os.File) error { return s.SVG(f, o.Title) }); err != nil {
			return err
		}
	}
	switch o.MD {
	case "":
	case "-":
		return s.Markdown(os.Stdout)
	default:
		return writeWith(o.MD, func(f *os.File) error { return s.Markdown(f) })
	}
	return nil
}

func writeWith(path string, fn func(*os.File) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
