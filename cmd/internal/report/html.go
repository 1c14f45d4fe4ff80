package report

import (
	"bytes"
	"fmt"
	"github.com/ehrport/ehrport/storage"
	"html/template"
	"math"
	"sort"
	"strings"
	"sync"
)

// HTML renders the report as one self-contained page: inline CSS and SVG,
// no script, no external reference of any kind.
func HTML(r *Report) ([]byte, error) {
	var buf bytes.Buffer
	if err := page().Execute(&buf, newView(r)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type view struct {
	R        *Report
	Pass     bool
	Timeline timeline
	Counts   countsChart
	Failing  []Finding
	Info     []Finding
}

type timeline struct {
	Width, Height int
	AxisX, AxisW  int
	Bars          []bar
	Ticks         []tick
	RTOX          float64
	HasRTO        bool
	RTOLabel      string
}

type bar struct {
	Y           int
	TextY       int
	X, W        float64
	Label       string
	Value       string
	ValueX      float64
	Class       string
	SkippedText bool
}

type tick struct {
	X     float64
	Label string
}

type countsChart struct {
	Width, Height int
	Rows          []countRow
	Empty         bool
}

type countRow struct {
	Type         string
	LabelY       int
	SY, TY       int
	SW, TW       float64
	SVal, TVal   string
	SValX, TValX float64
	Mismatch     bool
	BarX, BarH   int
}

const (
	labelW = 120
	plotW  = 560
	rowH   = 28
)

func newView(r *Report) view {
	v := view{R: r, Pass: r.Verdict == Pass}
	for _, f := range r.Findings {
		if f.Severity == SevInfo {
			v.Info = append(v.Info, f)
		} else {
			v.Failing = append(v.Failing, f)
		}
	}
	v.Timeline = newTimeline(r)
	v.Counts = newCounts(r)
	return v
}

func newTimeline(r *Report) timeline {
	t := timeline{AxisX: labelW, AxisW: plotW}
	t.Width = labelW + plotW + 110
	scale := r.TotalSeconds
	if r.RTO != nil && r.RTO.LimitSeconds > scale {
		scale = r.RTO.LimitSeconds
	}
	for _, p := range r.Phases {
		if end := p.OffsetSeconds + p.DurationSeconds; end > scale {
			scale = end
		}
	}
	if scale <= 0 {
		scale = 1
	}
	for i, p := range r.Phases {
		b := bar{Y: 10 + i*rowH, TextY: 10 + i*rowH + 15, Label: p.Title, Class: p.Status}
		if b.Label == "" {
			b.Label = p.Name
		}
		b.X = float64(labelW) + p.OffsetSeconds/scale*plotW
		b.W = math.Max(2, p.DurationSeconds/scale*plotW)
		if p.Status == StatusSkipped {
			b.W = 0
			b.Value = "skipped"
			b.SkippedText = true
		} else {
			b.Value = fmt.Sprintf("%s %s", seconds(p.DurationSeconds), p.Status)
		}
		b.ValueX = b.X + b.W + 6
		t.Bars = append(t.Bars, b)
	}
	plotBottom := 10 + len(r.Phases)*rowH
	t.Height = plotBottom + 30
	for i := 0; i <= 4; i++ {
		s := scale * float64(i) / 4
		t.Ticks = append(t.Ticks, tick{X: float64(labelW) + float64(plotW)*float64(i)/4, Label: seconds(s)})
	}
	if r.RTO != nil && r.RTO.LimitSeconds > 0 {
		t.HasRTO = true
		t.RTOX = float64(labelW) + r.RTO.LimitSeconds/scale*plotW
		t.RTOLabel = "RTO " + r.RTO.Limit
	}
	return t
}

func newCounts(r *Report) countsChart {
	c := countsChart{Width: labelW + 60 + plotW + 80}
	types := map[string]bool{}
	for t := range r.Counts.Source {
		types[t] = true
	}
	for t := range r.Counts.Target {
		types[t] = true
	}
	names := make([]string, 0, len(types))
	var max int64 = 1
	for t := range types {
		names = append(names, t)
		if n := r.Counts.Source[t]; n > max {
			max = n
		}
		if n := r.Counts.Target[t]; n > max {
			max = n
		}
	}
	sort.Strings(names)
	const h = 9
	const row = 2*h + 10
	x0 := labelW + 60
	for i, t := range names {
		y := 30 + i*row
		s, sok := r.Counts.Source[t]
		g, gok := r.Counts.Target[t]
		cr := countRow{Type: t, LabelY: y + h + 4, SY: y, TY: y + h + 1, BarX: x0, BarH: h}
		cr.SW = float64(s) / float64(max) * plotW
		cr.TW = float64(g) / float64(max) * plotW
		cr.SVal, cr.TVal = fmt.Sprint(s), fmt.Sprint(g)
		if !sok {
			cr.SVal = "none"
		}
		if !gok {
			cr.TVal = "none"
		}
		cr.SValX = float64(x0) + cr.SW + 4
		cr.TValX = float64(x0) + cr.TW + 4
		cr.Mismatch = s != g
		c.Rows = append(c.Rows, cr)
	}
	c.Empty = len(names) == 0
	c.Height = 30 + len(names)*row + 10
	return c
}

func seconds(s float64) string {
	switch {
	case s < 0.001:
		return "0s"
	case s < 1:
		return fmt.Sprintf("%.0fms", s*1000)
	case s < 100:
		return fmt.Sprintf("%.1fs", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", int(s)/60, int(s)%60)
	}
	return fmt.Sprintf("%dh%02dm", int(s)/3600, (int(s)%3600)/60)
}

// page is parsed on first use: package init runs before every command.
var page = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("report").Funcs(template.FuncMap{
		"seconds": seconds,
		"bytes":   storage.FormatSize,
		"join":    strings.Join,
		"f2":      func(f float64) string { return fmt.Sprintf("%.2f", f) },
		"f1":      func(f float64) string { return fmt.Sprintf("%.1f", f) },
	}).Parse(pageHTML))
})

const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>ehrport {{.R.Kind}} report: {{.R.Verdict}}</title>
<style>
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:980px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d7dbe2;padding-bottom:4px}
.verdict{border-radius:8px;padding:18px 22px;color:#fff;margin-bottom:18px}
.verdict.PASS{background:#1e7b34}.verdict.FAIL{background:#b3261e}
.verdict .big{font-size:34px;font-weight:700;letter-spacing:1px}
.verdict ul{margin:6px 0 0 18px;padding:0}
.meta{color:#4a5262;font-size:13px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border:1px solid #d7dbe2;padding:5px 7px;text-align:left;vertical-align:top}
th{background:#eceff3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#1e7b34;font-weight:600}.fail{color:#b3261e;font-weight:600}.skipped{color:#6b7280}
.sev-critical,.sev-high{color:#b3261e;font-weight:600}.sev-medium{color:#a15c00}.sev-info,.sev-low{color:#4a5262}
.ev{background:#fff;border:1px solid #d7dbe2;border-radius:6px;padding:8px 12px;margin:8px 0}
.ev .st{float:right;font-weight:600}
.st.proven{color:#1e7b34}.st.failed{color:#b3261e}.st.measured{color:#1f5fa8}.st.not-run{color:#6b7280}
.refs{font-size:12px;color:#4a5262}
svg{background:#fff;border:1px solid #d7dbe2;border-radius:6px;max-width:100%;height:auto}
svg text{font:12px system-ui,sans-serif;fill:#1d2330}svg text.v{font-size:10px}
svg .bar-pass{fill:#2e8b47}svg .bar-fail{fill:#c62828}svg .grid{stroke:#e3e6eb}
svg .rto{stroke:#b3261e;stroke-dasharray:5 4;stroke-width:2}
svg .src{fill:#2f6db5}svg .tgt{fill:#1b998b}svg .mis{fill:#b3261e;font-weight:700}
code{font-size:12px}
</style>
</head>
<body>
<main>
<section class="verdict {{.R.Verdict}}" id="verdict">
<div class="big">{{.R.Verdict}}</div>
<div>ehrport {{.R.Kind}}{{if .R.ExportID}}, export <code>{{.R.ExportID}}</code>{{end}}: total {{seconds .R.TotalSeconds}}{{with .R.RTO}}, RTO {{.Limit}} {{if .Met}}met{{else}}NOT met{{end}}{{end}}</div>
{{if .R.VerdictReasons}}<ul>{{range .R.VerdictReasons}}<li>{{.}}</li>{{end}}</ul>{{end}}
</section>
<h1>{{if eq .R.Kind "audit"}}Audit report{{else if eq .R.Kind "verify"}}Verification report{{else}}Exit drill report{{end}}</h1>
<div class="meta">generated {{.R.GeneratedAt}} by {{.R.Tool.Name}} {{.R.Tool.Version}}, run {{.R.RunID}}, report schema v{{.R.SchemaVersion}}.
The signature in report.json.sig covers report.json; check it with <code>ehrport report verify report.json</code>.</div>

<h2>Phases</h2>
<svg id="timeline" role="img" aria-label="timeline of the phases" width="{{.Timeline.Width}}" height="{{.Timeline.Height}}" viewBox="0 0 {{.Timeline.Width}} {{.Timeline.Height}}">
{{range .Timeline.Ticks}}<line class="grid" x1="{{f1 .X}}" y1="4" x2="{{f1 .X}}" y2="{{$.Timeline.Height}}"/><text x="{{f1 .X}}" y="{{$.Timeline.Height}}" dy="-4" text-anchor="middle">{{.Label}}</text>
{{end}}{{range .Timeline.Bars}}<text x="4" y="{{.TextY}}">{{.Label}}</text>{{if not .SkippedText}}<rect class="bar-{{.Class}}" x="{{f1 .X}}" y="{{.Y}}" width="{{f1 .W}}" height="20" rx="3"><title>{{.Label}}: {{.Value}}</title></rect>{{end}}<text x="{{f1 .ValueX}}" y="{{.TextY}}">{{.Value}}</text>
{{end}}{{if .Timeline.HasRTO}}<line class="rto" x1="{{f1 .Timeline.RTOX}}" y1="4" x2="{{f1 .Timeline.RTOX}}" y2="{{.Timeline.Height}}"/><text x="{{f1 .Timeline.RTOX}}" y="14" dx="4" class="mis">{{.Timeline.RTOLabel}}</text>{{end}}
</svg>
<table>
<tr><th>phase</th><th>status</th><th>duration</th><th>objects</th><th>data</th><th>resources</th><th>throughput</th><th>what it did</th></tr>
{{range .R.Phases}}<tr><td>{{.Title}}</td><td class="{{.Status}}">{{.Status}}</td><td class="num">{{if ne .Status "skipped"}}{{seconds .DurationSeconds}}{{end}}</td><td class="num">{{if .Objects}}{{.Objects}}{{end}}</td><td class="num">{{if .Bytes}}{{bytes .Bytes}}{{end}}</td><td class="num">{{if .Resources}}{{.Resources}}{{end}}</td>
<td class="num">{{if .Throughput.MBPerSecond}}{{f2 .Throughput.MBPerSecond}} MB/s{{end}}{{if .Throughput.ResourcesPerSecond}}<br>{{f1 .Throughput.ResourcesPerSecond}} res/s{{end}}</td>
<td>{{.Summary}}{{if .SkipReason}}skipped: {{.SkipReason}}{{end}}{{if .Error}}<br><span class="fail">{{.Error}}</span>{{end}}</td></tr>
{{end}}</table>

<h2>Resources per type: source and target</h2>
<svg id="counts" role="img" aria-label="resources per type at the source and at the target" width="{{.Counts.Width}}" height="{{.Counts.Height}}" viewBox="0 0 {{.Counts.Width}} {{.Counts.Height}}">
<rect class="src" x="10" y="8" width="12" height="10"/><text x="26" y="17">source</text><rect class="tgt" x="90" y="8" width="12" height="10"/><text x="106" y="17">target{{if .R.Counts.TargetFrom}} ({{.R.Counts.TargetFrom}}){{end}}</text>
{{if .Counts.Empty}}<text x="10" y="40">no counts: the phases that count did not run</text>{{end}}
{{range .Counts.Rows}}<text x="4" y="{{.LabelY}}"{{if .Mismatch}} class="mis"{{end}}>{{.Type}}{{if .Mismatch}} ≠{{end}}</text><rect class="src" x="{{.BarX}}" y="{{.SY}}" width="{{f1 .SW}}" height="{{.BarH}}"/><text class="v" x="{{f1 .SValX}}" y="{{.SY}}" dy="8">{{.SVal}}</text><rect class="tgt" x="{{.BarX}}" y="{{.TY}}" width="{{f1 .TW}}" height="{{.BarH}}"/><text class="v" x="{{f1 .TValX}}" y="{{.TY}}" dy="8">{{.TVal}}</text>
{{end}}</svg>

<h2>Findings</h2>
{{if .Failing}}<table>
<tr><th>severity</th><th>phase</th><th>code</th><th>object</th><th>finding</th><th>EUCS</th><th>ENISA</th></tr>
{{range .Failing}}<tr><td class="sev-{{.Severity}}">{{.Severity}}</td><td>{{.Phase}}</td><td><code>{{.Code}}</code></td><td><code>{{.Object}}</code></td><td>{{.Message}}</td><td>{{join .EUCS " "}}</td><td>{{join .ENISA "; "}}</td></tr>
{{end}}</table>{{else}}<p class="pass">No problems found.</p>{{end}}
{{if .Info}}<h3>Recorded facts</h3><table>
<tr><th>phase</th><th>code</th><th>fact</th><th>EUCS</th></tr>
{{range .Info}}<tr><td>{{.Phase}}</td><td><code>{{.Code}}</code></td><td>{{.Message}}</td><td>{{join .EUCS " "}}</td></tr>
{{end}}</table>{{end}}

<h2>Evidence</h2>
{{range .R.Evidence}}<div class="ev"><span class="st {{.Status}}">{{.Status}}</span><strong>{{.Claim}}</strong>
<div>{{.How}}</div>{{if .Details}}<ul>{{range .Details}}<li>{{.}}</li>{{end}}</ul>{{end}}
<div class="refs">EUCS {{join .EUCS ", "}}{{if .ENISA}} · {{join .ENISA "; "}}{{end}} · phases: {{join .Phases ", "}}</div></div>
{{end}}

<h2>Stores and keys</h2>
<table>
<tr><th>role</th><th>location</th><th>kind</th><th>endpoint</th><th>TLS</th><th>bucket</th></tr>
{{range .R.Stores}}<tr><td>{{.Role}}</td><td><code>{{.Location}}</code></td><td>{{.Kind}}{{if .Ephemeral}} (temporary){{end}}</td><td>{{.Endpoint}}</td>
<td>{{if .TLS}}{{.TLSVersion}}<br><span class="refs">cert sha256 {{.CertSHA256}}</span>{{else if eq .Kind "s3"}}<span class="fail">plain HTTP</span>{{else}}n/a (local){{end}}</td>
<td>{{if .BucketLocation}}location {{.BucketLocation}}<br>{{end}}{{if .Versioning}}versioning {{.Versioning}}, object lock {{.ObjectLock}}{{end}}{{.Note}}</td></tr>
{{end}}</table>
<p>Keys: {{if .R.Keys.Ephemeral}}ephemeral, created for this drill and destroyed after it{{else}}<code>{{.R.Keys.Dir}}</code>{{end}}{{with .R.Keys.Protection}}, protected by {{.}}{{end}}.
Objects are encrypted for {{range $i, $k := .R.Keys.Recipients}}{{if $i}}, {{end}}{{$k.Type}} key {{$k.KeyID}} ({{$k.Role}}){{end}}; manifest signed by key {{.R.Keys.SigningKeyID}}; this report signed by key {{.R.Keys.ReportSigningKeyID}}.</p>
{{if .R.Keys.List}}<table><tr><th>key id</th><th>purpose</th><th>type</th><th>status</th><th>created</th></tr>
{{range .R.Keys.List}}<tr><td class="num">{{.ID}}</td><td>{{.Purpose}}{{if .Primary}} (primary){{end}}</td><td>{{.Type}}</td><td>{{.Status}}</td><td>{{.Created.Format "2006-01-02 15:04:05Z07:00"}}</td></tr>
{{end}}</table>{{end}}
<p>Input: {{.R.Inputs.Source}}{{if .R.Inputs.Patients}}, {{.R.Inputs.Patients}} patients (seed {{.R.Inputs.Seed}}){{end}}{{range .R.Inputs.Paths}} <code>{{.}}</code>{{end}}: {{.R.Inputs.Resources}} resources, {{bytes .R.Inputs.Bytes}}.</p>

<h2>Not checked</h2>
<ul>{{range .R.NotChecked}}<li>{{.}}</li>{{end}}</ul>
</main>
</body>
</html>
`
