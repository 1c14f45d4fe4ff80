package drill

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/cmd/internal/report"
	"github.com/ehrport/ehrport/fhir"
)

// maxListed caps the compare findings named one by one; the rest are
// counted in one more finding.
const maxListed = 50

type comparison struct {
	sourceCounts, restoredCounts       map[string]int64
	sourceResources, restoredResources int64
	sourceBytes, restoredBytes         int64
	files                              int
	equal, missing, differ, extra      int64
	findings                           []report.Finding
}

// sourceIndex is the source as the export read it: per resource (Type/id,
// or the content digest for a resource without id) the SHA-256 of each
// record, and the counts. Only digests are kept, never the records.
type sourceIndex struct {
	idx       map[string][][32]byte
	counts    map[string]int64
	resources int64
	bytes     int64
}

func newSourceIndex() *sourceIndex {
	return &sourceIndex{idx: map[string][][32]byte{}, counts: map[string]int64{}}
}

// add records one item the checker let through (act Write); it has the
// signature of a fhir.Checker handler, and of export.Options.Observe.
func (s *sourceIndex) add(it *fhir.Item, act fhir.Action) error {
	if act != fhir.Write {
		return nil
	}
	var key, typ string
	var sum [32]byte
	var n int64
	if it.Kind == fhir.KindBundle {
		h := sha256.New()
		m, err := it.Bundle.WriteTo(h)
		if err != nil {
			return err
		}
		copy(sum[:], h.Sum(nil))
		typ, n = "Bundle", m
		key = resourceKey(typ, it.Bundle.ID, sum)
	} else {
		sum = sha256.Sum256(it.Raw)
		var id string
		typ, id = typeAndID(it.Raw)
		n = int64(len(it.Raw))
		key = resourceKey(typ, id, sum)
	}
	s.idx[key] = append(s.idx[key], sum)
	s.counts[typ]++
	s.resources++
	s.bytes += n + 1
	return nil
}

// readSource reads source files again the way the export did (the same
// walker and checker: compacted records, duplicates once).
func readSource(ctx context.Context, src []string) (*sourceIndex, error) {
	s := newSourceIndex()
	w, err := fhir.NewWalker(src, fhir.WalkOptions{})
	if err != nil {
		return nil, err
	}
	defer w.Close()
	chk := fhir.NewChecker(fhir.CheckerOptions{Policy: fhir.PolicyFail})
	defer chk.Close() // its spilled index, when a comparison stops early
	err = chk.Run(w, 0, func(it *fhir.Item, act fhir.Action) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return s.add(it, act)
	})
	if err != nil {
		return nil, fmt.Errorf("reading the source again: %w", err)
	}
	return s, nil
}

// compare reads the source files again (readSource) and compares the
// restored data with them (compareRestored).
func compare(ctx context.Context, src []string, restored string) (*comparison, error) {
	s, err := readSource(ctx, src)
	if err != nil {
		return nil, err
	}
	return compareRestored(ctx, s, restored)
}

// compareRestored reads the restored NDJSON files line by line and matches
// them with the source index resource by resource and byte for byte
// (SHA-256 of the record). It consumes src.
func compareRestored(ctx context.Context, src *sourceIndex, restored string) (*comparison, error) {
	c := &comparison{sourceCounts: src.counts, restoredCounts: map[string]int64{},
		sourceResources: src.resources, sourceBytes: src.bytes}
	idx := src.idx
	var files []string
	err := filepath.WalkDir(restored, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() {
			if p != restored && strings.HasPrefix(filepath.ToSlash(p[len(restored)+1:])+"/", export.QuarantineDir) {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(p, export.DataExt) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	c.files = len(files)
	for _, p := range files {
		if err := c.readRestored(ctx, p, restored, idx); err != nil {
			return nil, err
		}
	}
	var left []string
	for k, sums := range idx {
		for range sums {
			left = append(left, k)
		}
	}
	sort.Strings(left)
	for _, k := range left {
		c.missing++
		c.add(report.Finding{Severity: report.SevHigh, Code: "resource-missing", Object: k, Message: "in the source, not in the data restored from B"})
	}
	c.flushOverflow()
	return c, nil
}

func (c *comparison) readRestored(ctx context.Context, p, root string, idx map[string][][32]byte) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	rel, _ := filepath.Rel(root, p)
	br := bufio.NewReaderSize(f, 1<<20)
	line := 0
	for {
		if line%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		b, err := br.ReadBytes('\n')
		if len(b) > 0 {
			line++
			c.restoredBytes += int64(len(b))
			b = b[:len(b)-len(trailingNL(b))]
			sum := sha256.Sum256(b)
			typ, id := typeAndID(b)
			key := resourceKey(typ, id, sum)
			c.restoredCounts[typ]++
			c.restoredResources++
			where := fmt.Sprintf("%s line %d", rel, line)
			sums := idx[key]
			switch i := indexOf(sums, sum); {
			case i >= 0:
				c.equal++
				idx[key] = remove(sums, i)
			case len(sums) > 0:
				c.differ++
				idx[key] = sums[1:]
				c.add(report.Finding{Severity: report.SevHigh, Code: "resource-differs", Object: key,
					Message: fmt.Sprintf("restored record (%s) differs from the source: sha256 %s, source %s", where, short(sum), short(sums[0]))})
			default:
				c.extra++
				c.add(report.Finding{Severity: report.SevHigh, Code: "resource-extra", Object: key, Message: "restored from B (" + where + ") but not in the source"})
			}
			if len(idx[key]) == 0 {
				delete(idx, key)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (c *comparison) add(f report.Finding) {
	f.EUCS, f.ENISA = report.EUCSComplete, report.ENISAPortable
	if len(c.findings) < maxListed {
		c.findings = append(c.findings, f)
	}
}

func (c *comparison) flushOverflow() {
	if n := c.missing + c.differ + c.extra; n > maxListed {
		c.findings = append(c.findings, report.Finding{Severity: report.SevHigh, Code: "more-differences",
			Message: fmt.Sprintf("%d differences in all; the first %d are listed", n, maxListed), EUCS: report.EUCSComplete, ENISA: report.ENISAPortable})
	}
}

func trailingNL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		if n > 1 && b[n-2] == '\r' {
			return b[n-2:]
		}
		return b[n-1:]
	}
	return nil
}

func resourceKey(typ, id string, sum [32]byte) string {
	if id == "" {
		return typ + "#sha256:" + hex.EncodeToString(sum[:8])
	}
	return typ + "/" + id
}

// typeAndID reads the top-level resourceType and id of a compact record.
func typeAndID(b []byte) (string, string) {
	var h struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
	}
	if err := json.Unmarshal(b, &h); err != nil || h.ResourceType == "" {
		return "(not a resource)", ""
	}
	return h.ResourceType, h.ID
}

func indexOf(s [][32]byte, v [32]byte) int {
	for i := range s {
		if s[i] == v {
			return i
		}
	}
	return -1
}

func remove(s [][32]byte, i int) [][32]byte {
	return append(s[:i:i], s[i+1:]...)
}

func short(s [32]byte) string { return hex.EncodeToString(s[:8]) + "…" }
