package main

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// The chart: two panels side by side. Left, wall time over resources on
// log-log axes, where a linear cost is a line of slope 1 (drawn dashed
// through each operation's largest size). Right, peak RSS over resources
// on a linear memory axis, with the limit as a red line: flat is good.
const (
	chartW, chartH = 960, 440
	panelW, panelH = 360, 280
	leftX, topY    = 80, 80
	gapX           = 120
)

var opColor = map[string]string{"export": "#1f77b4", "migrate": "#d95f02"}

func colorOf(op string) string {
	if c, ok := opColor[op]; ok {
		return c
	}
	return "#555555"
}

// axis maps data values to pixels along one side of a panel.
type axis struct {
	lo, hi float64 // in axis units (log10 of the value when log)
	log    bool
	px0    float64 // pixel of lo
	pxLen  float64 // signed: negative for y (up)
}

func (a axis) at(v float64) float64 {
	if a.log {
		v = math.Log10(v)
	}
	return a.px0 + (v-a.lo)/(a.hi-a.lo)*a.pxLen
}

// decades returns the log10 range covering [min, max], at least one decade.
// A value within 5% of a decade counts as on it (9,990 resources is at
// 10k, not a reason to start the axis at 1k).
func decades(min, max float64) (float64, float64) {
	lo, hi := math.Floor(math.Log10(min)+0.02), math.Ceil(math.Log10(max)-0.02)
	if hi <= lo {
		hi = lo + 1
	}
	return lo, hi
}

func countLabel(v float64) string {
	switch {
	case v >= 1e6:
		return trimZero(v/1e6) + "M"
	case v >= 1e3:
		return trimZero(v/1e3) + "k"
	}
	return trimZero(v)
}

func secondsLabel(v float64) string {
	if v < 1 {
		return trimZero(v*1000) + " ms"
	}
	return trimZero(v) + " s"
}

func trimZero(v float64) string {
	s := fmt.Sprintf("%.1f", v)
	return strings.TrimSuffix(s, ".0")
}

// SVG draws the scale curve. title goes at the top (escaped).
func (s *Scale) SVG(w io.Writer, title string) error {
	bw := bufio.NewWriter(w)
	minN, maxN := math.Inf(1), math.Inf(-1)
	minT, maxT := math.Inf(1), math.Inf(-1)
	maxRSS := s.RSSLimit
	for _, p := range s.Points {
		if p.Runs == 0 {
			continue
		}
		minN, maxN = math.Min(minN, float64(p.Resources)), math.Max(maxN, float64(p.Resources))
		minT, maxT = math.Min(minT, p.MinSeconds), math.Max(maxT, p.MaxSeconds)
		if p.MedianCPU > 0 {
			minT, maxT = math.Min(minT, p.MedianCPU), math.Max(maxT, p.MedianCPU)
		}
		maxRSS = math.Max(maxRSS, p.MaxRSSMB)
	}
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", chartW, chartH, chartW, chartH)
	fmt.Fprintf(bw, `<rect width="%d" height="%d" fill="white"/>`+"\n", chartW, chartH)
	fmt.Fprintf(bw, `<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", leftX-60, html.EscapeString(title))
	if math.IsInf(minN, 1) || minT <= 0 {
		fmt.Fprintf(bw, `<text x="%d" y="%d">no successful run</text>`+"\n", leftX, topY+panelH/2)
		fmt.Fprintln(bw, "</svg>")
		return bw.Flush()
	}
	xlo, xhi := decades(minN, maxN)
	tlo, thi := decades(minT, maxT)
	rhi := math.Ceil(maxRSS*1.15/50) * 50

	// Left panel: time, log-log.
	x1 := axis{lo: xlo, hi: xhi, log: true, px0: leftX, pxLen: panelW}
	y1 := axis{lo: tlo, hi: thi, log: true, px0: topY + panelH, pxLen: -panelH}
	s.frame(bw, x1, leftX, "time (log scale): wall ●, CPU ○ (dotted)")
	for e := tlo; e <= thi; e++ {
		y := y1.at(math.Pow(10, e))
		fmt.Fprintf(bw, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", leftX, y, leftX+panelW, y)
		fmt.Fprintf(bw, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", leftX-6, y+4, secondsLabel(math.Pow(10, e)))
	}
	// Right panel: peak RSS, linear.
	px2 := leftX + panelW + gapX
	x2 := axis{lo: xlo, hi: xhi, log: true, px0: float64(px2), pxLen: panelW}
	y2 := axis{lo: 0, hi: rhi, px0: topY + panelH, pxLen: -panelH}
	s.frame(bw, x2, px2, "peak RSS (MB)")
	step := niceStep(rhi)
	for v := 0.0; v <= rhi+1e-9; v += step {
		y := y2.at(v)
		fmt.Fprintf(bw, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", px2, y, px2+panelW, y)
		fmt.Fprintf(bw, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", px2-6, y+4, trimZero(v))
	}
	ly := y2.at(s.RSSLimit)
	fmt.Fprintf(bw, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#c00" stroke-width="1.5" stroke-dasharray="6 4"/>`+"\n", px2, ly, px2+panelW, ly)
	fmt.Fprintf(bw, `<text x="%d" y="%.1f" fill="#c00" text-anchor="end">limit %s MB</text>`+"\n", px2+panelW-4, ly-5, trimZero(s.RSSLimit))

	for i, op := range s.ops() {
		pts := s.pointsOf(op)
		if len(pts) == 0 {
			continue
		}
		c := colorOf(op)
		// Linear reference through the largest size.
		last := pts[len(pts)-1]
		ref := func(n float64) float64 { return last.MedianSeconds * n / float64(last.Resources) }
		rx0 := math.Pow(10, xlo)
		if r0 := ref(rx0); r0 < math.Pow(10, tlo) {
			rx0 = math.Pow(10, tlo) * float64(last.Resources) / last.MedianSeconds
		}
		fmt.Fprintf(bw, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-opacity="0.5" stroke-dasharray="4 4"/>`+"\n",
			x1.at(rx0), y1.at(ref(rx0)), x1.at(float64(last.Resources)), y1.at(last.MedianSeconds), c)
		var tl, cl, rl []string
		for _, p := range pts {
			x := x1.at(float64(p.Resources))
			tl = append(tl, fmt.Sprintf("%.1f,%.1f", x, y1.at(p.MedianSeconds)))
			if p.MedianCPU > 0 {
				cl = append(cl, fmt.Sprintf("%.1f,%.1f", x, y1.at(p.MedianCPU)))
				fmt.Fprintf(bw, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="white" stroke="%s" stroke-width="1.5"><title>%s %s resources: %s of CPU (median)</title></circle>`+"\n",
					x, y1.at(p.MedianCPU), c, op, countLabel(float64(p.Resources)), secondsLabel(p.MedianCPU))
			}
			fmt.Fprintf(bw, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x, y1.at(p.MinSeconds), x, y1.at(p.MaxSeconds), c)
			fmt.Fprintf(bw, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%s %s resources: %s median (%s-%s)</title></circle>`+"\n",
				x, y1.at(p.MedianSeconds), c, op, countLabel(float64(p.Resources)), secondsLabel(p.MedianSeconds), secondsLabel(p.MinSeconds), secondsLabel(p.MaxSeconds))
			xr := x2.at(float64(p.Resources))
			rl = append(rl, fmt.Sprintf("%.1f,%.1f", xr, y2.at(p.MaxRSSMB)))
			fmt.Fprintf(bw, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%s %s resources: peak RSS %.0f MB (largest run)</title></circle>`+"\n",
				xr, y2.at(p.MaxRSSMB), c, op, countLabel(float64(p.Resources)), p.MaxRSSMB)
		}
		fmt.Fprintf(bw, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(tl, " "), c)
		if len(cl) > 0 {
			fmt.Fprintf(bw, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5" stroke-dasharray="2 3"/>`+"\n", strings.Join(cl, " "), c)
		}
		fmt.Fprintf(bw, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(rl, " "), c)
		// Legend.
		lx := leftX + i*260
		fmt.Fprintf(bw, `<rect x="%d" y="44" width="14" height="4" fill="%s"/><text x="%d" y="50">%s</text>`+"\n", lx, c, lx+20, html.EscapeString(op))
	}
	lx := leftX + len(s.ops())*260
	fmt.Fprintf(bw, `<line x1="%d" y1="46" x2="%d" y2="46" stroke="#777" stroke-dasharray="4 4"/><text x="%d" y="50">linear (time ∝ resources)</text>`+"\n", lx, lx+14, lx+20)
	fmt.Fprintf(bw, `<text x="%d" y="%d" fill="#555">left: medians of the runs, bars from the fastest to the slowest wall time; right: the largest peak of each size</text>`+"\n", leftX, chartH-8)
	fmt.Fprintln(bw, "</svg>")
	return bw.Flush()
}

// frame draws a panel's box, its x ticks (decades) and its titles.
func (s *Scale) frame(w io.Writer, x axis, px int, ytitle string) {
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", px, topY, panelW, panelH)
	for e := x.lo; e <= x.hi; e++ {
		v := math.Pow(10, e)
		xx := x.at(v)
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", xx, topY, xx, topY+panelH)
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", xx, topY+panelH+18, countLabel(v))
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">resources (log scale)</text>`+"\n", px+panelW/2, topY+panelH+38)
	fmt.Fprintf(w, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", px, topY-10, ytitle)
}

// niceStep is a grid step of 1, 2 or 5 times a power of ten giving 4-10 lines.
func niceStep(hi float64) float64 {
	raw := hi / 6
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}
