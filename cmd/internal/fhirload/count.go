package fhirload

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
)

// Count asks the server how many resources of typ it holds:
// GET [base]/typ?_summary=count, whose Bundle.total is the answer.
func (c *Client) Count(ctx context.Context, typ string) (int64, error) {
	if !typeRE().MatchString(typ) {
		return 0, fmt.Errorf("%w: %q is not a FHIR type name", ErrRefused, typ)
	}
	b, err := c.do(ctx, http.MethodGet, typ+"?_summary=count", nil, "search "+typ+"?_summary=count")
	if err != nil {
		return 0, err
	}
	var bundle struct {
		ResourceType string `json:"resourceType"`
		Total        *int64 `json:"total"`
	}
	if err := json.Unmarshal(b, &bundle); err != nil || bundle.ResourceType != "Bundle" {
		return 0, fmt.Errorf("%w: search %s?_summary=count at %s: the answer is not a Bundle", ErrRefused, typ, c.shown)
	}
	if bundle.Total == nil {
		return 0, fmt.Errorf("%w: search %s?_summary=count at %s: the Bundle has no total: the server cannot count, so the load cannot be checked", ErrRefused, typ, c.shown)
	}
	return *bundle.Total, nil
}

// Mismatch is one type whose count at the server differs from the export.
type Mismatch struct {
	Type   string `json:"type"`
	Export int64  `json:"export"`
	Server int64  `json:"server"`
}

func (m Mismatch) String() string {
	how := "missing at the server"
	if m.Server > m.Export {
		how = "more at the server: it held other resources of this type"
	}
	return fmt.Sprintf("%s: export %d, server %d (%s)", m.Type, m.Export, m.Server, how)
}

// CountCheck is the comparison of the export's counts with the server's.
type CountCheck struct {
	Server     map[string]int64 `json:"server"`
	Mismatches []Mismatch       `json:"mismatches"`
}

// CheckCounts counts every type of want at the server and compares. The
// error is ErrCountMismatch (with the check) when any type differs, or the
// failure of a search.
func (c *Client) CheckCounts(ctx context.Context, want map[string]int64) (*CountCheck, error) {
	types := make([]string, 0, len(want))
	for t := range want {
		types = append(types, t)
	}
	sort.Strings(types)
	cc := &CountCheck{Server: map[string]int64{}, Mismatches: []Mismatch{}}
	for _, t := range types {
		n, err := c.Count(ctx, t)
		if err != nil {
			return nil, err
		}
		cc.Server[t] = n
		if n != want[t] {
			cc.Mismatches = append(cc.Mismatches, Mismatch{Type: t, Export: want[t], Server: n})
		}
	}
	if len(cc.Mismatches) > 0 {
		var parts []string
		for _, m := range cc.Mismatches {
			parts = append(parts, m.String())
		}
		return cc, fmt.Errorf("%w at %s: %s", ErrCountMismatch, c.shown, strings.Join(parts, "; "))
	}
	return cc, nil
}
