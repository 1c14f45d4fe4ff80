package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
)

// Run is one timed command of the scale curve, as scripts/bench-scale.sh
// writes it: one JSON object a line.
type Run struct {
	Op         string  `json:"op"` // "export" or "migrate"
	Resources  int64   `json:"resources"`
	Bytes      int64   `json:"bytes"` // NDJSON plaintext bytes of the data set
	Round      int     `json:"round"`
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_s"`
	RSSMB      float64 `json:"rss_mb"` // peak resident set size, 2^20 bytes
	OK         bool    `json:"ok"`
}

// Point summarises the successful runs of one operation at one size.
type Point struct {
	Op            string  `json:"op"`
	Resources     int64   `json:"resources"`
	Bytes         int64   `json:"bytes"`
	Runs          int     `json:"runs"`
	Failed        int     `json:"failed"`
	MedianSeconds float64 `json:"median_s"`
	MinSeconds    float64 `json:"min_s"`
	MaxSeconds    float64 `json:"max_s"`
	MedianCPU     float64 `json:"median_cpu_s"`
	MedianRSSMB   float64 `json:"median_rss_mb"`
	MaxRSSMB      float64 `json:"max_rss_mb"`
	// MicrosPerResource is the median time over the resources: flat when
	// time is linear in the size.
	MicrosPerResource float64 `json:"us_per_resource"`
}

// Fit says how one operation scales: time ∝ resources^TimeExponent (least
// squares on log-log medians: 1 is linear) and the largest peak RSS at the
// largest size over the largest at the smallest (1 is flat).
type Fit struct {
	Op           string  `json:"op"`
	Sizes        int     `json:"sizes"` // sizes with a successful run; the exponents need two`
	TimeExponent float64 `json:"time_exponent"`
	CPUExponent  float64 `json:"cpu_exponent"`
	// The same between the two largest sizes only, where a fixed start-up
	// cost no longer hides a cost per resource that grows with the size.
	LastTimeExponent float64 `json:"last_time_exponent"`
	LastCPUExponent  float64 `json:"last_cpu_exponent"`
	RSSGrowth        float64 `json:"rss_growth"`
	MaxRSSMB         float64 `json:"max_rss_mb"`
}

// Scale is docs/bench/scale.json.
type Scale struct {
	Meta     json.RawMessage `json:"meta,omitempty"`
	RSSLimit float64         `json:"rss_limit_mb"`
	Points   []Point         `json:"points"`
	Fits     []Fit           `json:"fits"`
	Runs     []Run           `json:"runs"`
}

// ReadRuns reads JSON lines of Run; blank lines are skipped.
func ReadRuns(r io.Reader) ([]Run, error) {
	var runs []Run
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var run Run
		if err := json.Unmarshal(sc.Bytes(), &run); err != nil {
			return nil, fmt.Errorf("runs line %d: %w", n, err)
		}
		if run.Op == "" || run.Resources <= 0 {
			return nil, fmt.Errorf("runs line %d: op and resources are required", n)
		}
		runs = append(runs, run)
	}
	return runs, sc.Err()
}

// Summarise groups the runs by operation and size.
func Summarise(runs []Run, rssLimit float64) *Scale {
	s := &Scale{RSSLimit: rssLimit, Runs: runs}
	type key struct {
		op string
		n  int64
	}
	groups := map[key][]Run{}
	var keys []key
	for _, r := range runs {
		k := key{r.Op, r.Resources}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].op != keys[j].op {
			return opOrder(keys[i].op) < opOrder(keys[j].op)
		}
		return keys[i].n < keys[j].n
	})
	for _, k := range keys {
		p := Point{Op: k.op, Resources: k.n}
		var secs, cpu, rss []float64
		for _, r := range groups[k] {
			p.Bytes = r.Bytes
			if !r.OK {
				p.Failed++
				continue
			}
			secs = append(secs, r.Seconds)
			cpu = append(cpu, r.CPUSeconds)
			rss = append(rss, r.RSSMB)
		}
		p.Runs = len(secs)
		if p.Runs > 0 {
			p.MedianSeconds, p.MinSeconds, p.MaxSeconds = median(secs), slices.Min(secs), slices.Max(secs)
			p.MedianCPU = median(cpu)
			p.MedianRSSMB, p.MaxRSSMB = median(rss), slices.Max(rss)
			p.MicrosPerResource = p.MedianSeconds * 1e6 / float64(k.n)
		}
		s.Points = append(s.Points, p)
	}
	for _, op := range s.ops() {
		pts := s.pointsOf(op)
		f := Fit{Op: op}
		var xs, ts, cs []float64
		for _, p := range pts {
			xs = append(xs, float64(p.Resources))
			ts = append(ts, p.MedianSeconds)
			cs = append(cs, p.MedianCPU)
			f.MaxRSSMB = math.Max(f.MaxRSSMB, p.MaxRSSMB)
		}
		f.Sizes = len(pts)
		f.TimeExponent = finite(logSlope(xs, ts))
		f.CPUExponent = finite(logSlope(xs, cs))
		if n := len(pts); n > 1 {
			f.LastTimeExponent = finite(logSlope(xs[n-2:], ts[n-2:]))
			f.LastCPUExponent = finite(logSlope(xs[n-2:], cs[n-2:]))
		}
		if len(pts) > 1 && pts[0].MaxRSSMB > 0 {
			f.RSSGrowth = pts[len(pts)-1].MaxRSSMB / pts[0].MaxRSSMB
		}
		s.Fits = append(s.Fits, f)
	}
	return s
}

func opOrder(op string) int {
	switch op {
	case "export":
		return 0
	case "migrate":
		return 1
	}
	return 2
}

// ops lists the operations in the order of the points.
func (s *Scale) ops() []string {
	var ops []string
	for _, p := range s.Points {
		if !slices.Contains(ops, p.Op) {
			ops = append(ops, p.Op)
		}
	}
	return ops
}

// pointsOf returns the points of op that have at least one successful run,
// smallest first.
func (s *Scale) pointsOf(op string) []Point {
	var pts []Point
	for _, p := range s.Points {
		if p.Op == op && p.Runs > 0 {
			pts = append(pts, p)
		}
	}
	return pts
}

// finite maps NaN and infinities to 0: JSON has no NaN.
func finite(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return x
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// logSlope is the least-squares slope of log(y) over log(x); NaN with fewer
// than two usable points.
func logSlope(xs, ys []float64) float64 {
	var lx, ly []float64
	for i := range xs {
		if xs[i] > 0 && ys[i] > 0 {
			lx = append(lx, math.Log(xs[i]))
			ly = append(ly, math.Log(ys[i]))
		}
	}
	n := float64(len(lx))
	if n < 2 {
		return math.NaN()
	}
	var sx, sy, sxx, sxy float64
	for i := range lx {
		sx += lx[i]
		sy += ly[i]
		sxx += lx[i] * lx[i]
		sxy += lx[i] * ly[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return math.NaN()
	}
	return (n*sxy - sx*sy) / d
}

// Markdown writes the points and fits as tables.
func (s *Scale) Markdown(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "| operation | resources | NDJSON MB | runs | median time (min-max) | µs per resource | median CPU s | peak RSS: median (max) | failed |")
	fmt.Fprintln(bw, "|---|---|---|---|---|---|---|---|---|")
	for _, p := range s.Points {
		if p.Runs == 0 {
			fmt.Fprintf(bw, "| %s | %d | %.0f | 0 | - | - | - | - | %d |\n", p.Op, p.Resources, float64(p.Bytes)/1e6, p.Failed)
			continue
		}
		fmt.Fprintf(bw, "| %s | %d | %.0f | %d | %.1f s (%.1f-%.1f) | %.1f | %.1f | %.0f MB (%.0f) | %d |\n",
			p.Op, p.Resources, float64(p.Bytes)/1e6, p.Runs, p.MedianSeconds, p.MinSeconds, p.MaxSeconds,
			p.MicrosPerResource, p.MedianCPU, p.MedianRSSMB, p.MaxRSSMB, p.Failed)
	}
	fmt.Fprintln(bw)
	fmt.Fprintln(bw, "| operation | time ∝ resources^k, all sizes: k of wall time | k of CPU time | k between the two largest sizes: wall | CPU | peak RSS, largest size over smallest | largest peak RSS | every run under the RSS limit |")
	fmt.Fprintln(bw, "|---|---|---|---|---|---|---|---|")
	for _, f := range s.Fits {
		under := "yes"
		if f.MaxRSSMB > s.RSSLimit {
			under = "**no**"
		}
		if f.Sizes < 2 {
			fmt.Fprintf(bw, "| %s | - | - | - | - | - | %.0f MB | %s (%.0f MB) |\n", f.Op, f.MaxRSSMB, under, s.RSSLimit)
			continue
		}
		fmt.Fprintf(bw, "| %s | %.2f | %.2f | %.2f | %.2f | %.2fx | %.0f MB | %s (%.0f MB) |\n", f.Op, f.TimeExponent, f.CPUExponent,
			f.LastTimeExponent, f.LastCPUExponent, f.RSSGrowth, f.MaxRSSMB, under, s.RSSLimit)
	}
	return bw.Flush()
}
