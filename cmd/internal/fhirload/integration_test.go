//go:build integration

package fhirload

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/cmd/internal/fhirload/fhirtest"
)

// A real FHIR engine (@medplum/fhir-router) takes the export: every id
// kept, every resource readable back with the same content, the kept Bundle
// as one Bundle, and the counts per type by search equal to the export's.
func TestIntegrationRestoreIntoFHIRServer(t *testing.T) {
	ctx := context.Background()
	fx := exportFixture(t, 25)
	c, err := New(Options{BaseURL: fhirtest.Tenant(t, "fhirload")})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Restore(ctx, fx.restoreOptions(t), c)
	if err != nil {
		t.Fatal(err)
	}
	if res.FHIRVersion != "4.0.1" || res.Load.Resources != fx.sum.Resources || len(res.Check.Mismatches) != 0 {
		t.Fatalf("result %+v %+v", res.Load, res.Check)
	}
	for typ, n := range fx.sum.Counts {
		if res.Check.Server[typ] != n {
			t.Errorf("%s: server %d, export %d", typ, res.Check.Server[typ], n)
		}
	}
	t.Logf("%d resources in %d transaction Bundles in %.2fs: %.0f resources/s, %d retries",
		res.Load.Resources, res.Load.Bundles, res.Load.Seconds, res.Load.PerSecond, res.Load.Retries)

	// Read every restored resource back by its id: same content, apart
	// from the meta the server adds.
	checked := 0
	ro := fx.restoreOptions(t)
	ro.Sink = func(ctx context.Context, obj export.RestoredObject, r io.Reader) error {
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 1<<24)
		for sc.Scan() {
			var sent map[string]any
			if err := json.Unmarshal(sc.Bytes(), &sent); err != nil {
				return err
			}
			ref := sent["resourceType"].(string) + "/" + sent["id"].(string)
			got, err := c.do(ctx, http.MethodGet, ref, nil, "read "+ref)
			if err != nil {
				return err
			}
			var back map[string]any
			if err := json.Unmarshal(got, &back); err != nil {
				return err
			}
			delete(back, "meta")
			delete(sent, "meta")
			if !reflect.DeepEqual(sent, back) {
				t.Errorf("%s differs at the server:\nsent %s\ngot  %s", ref, sc.Bytes(), got)
			}
			checked++
		}
		return sc.Err()
	}
	if _, err := ro.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if int64(checked) != fx.sum.Resources {
		t.Fatalf("read back %d of %d", checked, fx.sum.Resources)
	}

	// A rerun replaces (PUT keeps ids): the counts stay the same.
	if _, err := Restore(ctx, fx.restoreOptions(t), c); err != nil {
		t.Fatalf("rerun: %v", err)
	}

	// Another tenant that already holds a Patient: the check names it.
	c2, _ := New(Options{BaseURL: fhirtest.Tenant(t, "fhirload")})
	if _, err := c2.do(ctx, http.MethodPut, "Patient/other-1", []byte(`{"resourceType":"Patient","id":"other-1"}`), "put"); err != nil {
		t.Fatal(err)
	}
	res, err = Restore(ctx, fx.restoreOptions(t), c2)
	if !errors.Is(err, ErrCountMismatch) || len(res.Check.Mismatches) != 1 || !strings.Contains(err.Error(), "Patient: export") {
		t.Fatalf("server with another Patient: %v", err)
	}
}

// The real server refuses a transaction with an invalid entry; the error
// carries its diagnostics and the lines concerned.
func TestIntegrationFHIRServerRefusal(t *testing.T) {
	ctx := context.Background()
	c, err := New(Options{BaseURL: fhirtest.Tenant(t, "fhirload")})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Capabilities(ctx); err != nil {
		t.Fatal(err)
	}
	l := c.Start(ctx)
	in := `{"resourceType":"Patient","id":"ok-1"}` + "\n" + `{"resourceType":"NoSuchType","id":"x"}` + "\n"
	l.Add("bad.ndjson", bytes.NewReader([]byte(in)))
	_, err = l.Wait()
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "bad.ndjson lines 1-2") {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)

	// More PUTs in one transaction than Medplum allows (50): refused, which
	// is why DefaultBatchSize is 50.
	c, _ = New(Options{BaseURL: fhirtest.Tenant(t, "fhirload"), BatchSize: 51})
	l = c.Start(ctx)
	var b strings.Builder
	for i := range 51 {
		b.WriteString(`{"resourceType":"Patient","id":"p` + strconv.Itoa(i) + `"}` + "\n")
	}
	l.Add("many.ndjson", strings.NewReader(b.String()))
	if _, err = l.Wait(); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "more update operations than allowed") {
		t.Fatalf("51 updates: %v", err)
	}
}
