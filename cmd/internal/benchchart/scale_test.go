package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// linearRuns: time exactly proportional to the size, memory flat, two
// rounds; one failed run that must be left out.
func linearRuns() []Run {
	var runs []Run
	for _, n := range []int64{10_000, 100_000, 1_000_000} {
		for r := 1; r <= 2; r++ {
			runs = append(runs,
				Run{Op: "export", Resources: n, Bytes: n * 750, Round: r, Seconds: float64(n) / 10_000 * float64(r), CPUSeconds: float64(n) / 20_000, RSSMB: 90, OK: true},
				Run{Op: "migrate", Resources: n, Bytes: n * 750, Round: r, Seconds: float64(n) / 50_000, CPUSeconds: float64(n) / 100_000, RSSMB: 40 + float64(r), OK: true})
		}
	}
	runs = append(runs, Run{Op: "export", Resources: 10_000, Round: 3, Seconds: 1e6, RSSMB: 9999, OK: false})
	return runs
}

func TestSummariseLinearFlat(t *testing.T) {
	s := Summarise(linearRuns(), 256)
	if len(s.Points) != 6 {
		t.Fatalf("%d points, want 6", len(s.Points))
	}
	p := s.Points[0]
	if p.Op != "export" || p.Resources != 10_000 || p.Runs != 2 || p.Failed != 1 {
		t.Fatalf("first point %+v", p)
	}
	if p.MedianSeconds != 1.5 || p.MinSeconds != 1 || p.MaxSeconds != 2 || p.MaxRSSMB != 90 {
		t.Fatalf("first point %+v: the failed run must not count", p)
	}
	for _, f := range s.Fits {
		if math.Abs(f.TimeExponent-1) > 1e-9 || math.Abs(f.CPUExponent-1) > 1e-9 || math.Abs(f.LastCPUExponent-1) > 1e-9 {
			t.Errorf("%s: exponents %v %v, want 1", f.Op, f.TimeExponent, f.CPUExponent)
		}
		if f.RSSGrowth != 1 || f.Sizes != 3 {
			t.Errorf("%s: rss growth %v over %d sizes, want 1 over 3", f.Op, f.RSSGrowth, f.Sizes)
		}
	}
}

func TestQuadraticIsNotLinear(t *testing.T) {
	var runs []Run
	for _, n := range []int64{1000, 10_000, 100_000} {
		runs = append(runs, Run{Op: "export", Resources: n, Seconds: float64(n) * float64(n) / 1e8, RSSMB: float64(n) / 100, OK: true})
	}
	s := Summarise(runs, 256)
	f := s.Fits[0]
	if math.Abs(f.TimeExponent-2) > 1e-9 || f.RSSGrowth != 100 {
		t.Fatalf("fit %+v: want exponent 2 and growth 100", f)
	}
	var md bytes.Buffer
	if err := s.Markdown(&md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "**no**") {
		t.Errorf("a run over the limit (1000 MB) is not flagged:\n%s", md.String())
	}
}

func TestOneSizeHasNoExponent(t *testing.T) {
	s := Summarise([]Run{{Op: "export", Resources: 10, Seconds: 1, RSSMB: 10, OK: true}}, 256)
	if _, err := json.Marshal(s); err != nil {
		t.Fatalf("summary of one size does not marshal: %v", err)
	}
	var md bytes.Buffer
	s.Markdown(&md)
	if !strings.Contains(md.String(), "| export | - | - | - | - | - |") {
		t.Errorf("one size shows exponents:\n%s", md.String())
	}
}

func TestReadRunsRejectsBadLines(t *testing.T) {
	if _, err := ReadRuns(strings.NewReader(`{"op":"export","resources":10}` + "\n\n" + `{"op":"","resources":1}`)); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("err = %v, want one naming line 3", err)
	}
	runs, err := ReadRuns(strings.NewReader(`{"op":"export","resources":10,"seconds":2,"ok":true}` + "\n"))
	if err != nil || len(runs) != 1 || runs[0].Seconds != 2 || !runs[0].OK {
		t.Fatalf("runs %+v, err %v", runs, err)
	}
}

// The chart is well-formed XML with a wall-time, a CPU-time and an RSS
// polyline per operation, a circle for each of them per point, and the
// limit line.
func TestSVGWellFormed(t *testing.T) {
	s := Summarise(linearRuns(), 256)
	var b bytes.Buffer
	if err := s.SVG(&b, "scale <test>"); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b.Bytes()))
	count := map[string]int{}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not XML: %v\n%s", err, b.String())
		}
		if se, ok := tok.(xml.StartElement); ok {
			count[se.Name.Local]++
		}
	}
	// Per operation: wall, CPU and RSS lines; per point: wall, CPU, RSS.
	if count["polyline"] != 6 || count["circle"] != 18 {
		t.Errorf("polylines %d (want 6), circles %d (want 18)", count["polyline"], count["circle"])
	}
	for _, want := range []string{"limit 256 MB", "scale &lt;test&gt;", "1M", "10k"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("chart lacks %q", want)
		}
	}
	if strings.Contains(b.String(), "NaN") || strings.Contains(b.String(), "Inf") {
		t.Errorf("chart has NaN or Inf coordinates")
	}
}

func TestRunWritesAndRedraws(t *testing.T) {
	dir := t.TempDir()
	var lines []string
	for _, r := range linearRuns() {
		b, _ := json.Marshal(r)
		lines = append(lines, string(b))
	}
	runs := filepath.Join(dir, "runs.jsonl")
	os.WriteFile(runs, []byte(strings.Join(lines, "\n")), 0o644)
	o := &Options{Runs: runs, Meta: `{"commit":"abc"}`, RSSLimit: 256, JSON: filepath.Join(dir, "s.json"), SVGOut: filepath.Join(dir, "s.svg"), MD: filepath.Join(dir, "s.md")}
	if err := o.Run(); err != nil {
		t.Fatal(err)
	}
	o2 := &Options{From: o.JSON, RSSLimit: 256, SVGOut: filepath.Join(dir, "again.svg")}
	if err := o2.Run(); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(o.SVGOut)
	b, _ := os.ReadFile(o2.SVGOut)
	if !bytes.Equal(a, b) {
		t.Error("redrawing from the summary gives another chart")
	}
	j, _ := os.ReadFile(o.JSON)
	if !strings.Contains(string(j), `"commit": "abc"`) {
		t.Errorf("meta not kept:\n%s", j)
	}
	if err := (&Options{Runs: runs, Meta: "{not json"}).Run(); err == nil {
		t.Error("bad -meta accepted")
	}
}

// The exponent between the two largest sizes comes from those two only, so
// a fixed start-up cost at the smallest size does not blur it.
func TestLastExponent(t *testing.T) {
	var runs []Run
	for _, n := range []int64{10_000, 100_000, 1_000_000} {
		cpu := 5 + float64(n)/100_000
		if n == 1_000_000 {
			cpu = 5 + 2*float64(n)/100_000 // twice the cost per resource
		}
		runs = append(runs, Run{Op: "export", Resources: n, Seconds: cpu, CPUSeconds: cpu, RSSMB: 50, OK: true})
	}
	f := Summarise(runs, 256).Fits[0]
	if f.CPUExponent > 1 {
		t.Errorf("fit over all sizes %v: expected under 1 with the start-up cost", f.CPUExponent)
	}
	if want := math.Log10(25.0 / 6); math.Abs(f.LastCPUExponent-want) > 1e-9 {
		t.Errorf("last exponent %v, want %v", f.LastCPUExponent, want)
	}
}
