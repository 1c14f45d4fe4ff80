package cli

import (
	"fmt"
	"github.com/ehrport/ehrport/storage"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// meter shows a command's progress: a line redrawn in place when stderr is
// a terminal, a log line every few seconds otherwise (CI logs stay
// readable), nothing with --quiet. It is safe for concurrent use.
type meter struct {
	g     *globals
	what  string
	tty   bool
	every time.Duration
	start time.Time
	mu    sync.Mutex
	last  time.Time
}

func newMeter(g *globals, what string) *meter {
	m := &meter{g: g, what: what, every: 5 * time.Second, start: time.Now()}
	if f, ok := g.Stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		m.tty, m.every = true, 200*time.Millisecond
	}
	return m
}

// update reports done of total (total 0: unknown) items and bytes so far.
func (m *meter) update(done, total int, bytes int64) {
	if m == nil || m.g.Quiet {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	final := total > 0 && done >= total
	if !final && time.Since(m.last) < m.every {
		return
	}
	m.last = time.Now()
	secs := time.Since(m.start).Seconds()
	rate := fmt.Sprintf("%.0f/s, %.1f MB/s", float64(done)/secs, float64(bytes)/secs/1e6)
	if !m.tty {
		m.g.Log.Info(m.what+" progress", "done", done, "total", total, "bytes", bytes, "rate", rate)
		return
	}
	bar := ""
	if total > 0 {
		const width = 24
		n := min(width, done*width/total)
		bar = fmt.Sprintf("[%s%s] ", strings.Repeat("=", n), strings.Repeat(" ", width-n))
	}
	line := fmt.Sprintf("\r%s: %s%d/%d objects, %s, %s\x1b[K", m.what, bar, done, total, storage.FormatSize(bytes), rate)
	if final {
		line += "\n"
	}
	io.WriteString(m.g.Stderr, line)
}
