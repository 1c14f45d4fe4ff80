package bulk

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// Health records never travel over plain http to another machine: the
// base URL, redirects and file downloads to a non-loopback http URL are
// refused before anything is sent.
func TestPlainHTTPOnlyToLoopback(t *testing.T) {
	for _, base := range []string{"http://fhir.example.org/fhir", "http://10.0.0.7:8080/fhir"} {
		if _, err := New(Options{BaseURL: base}); err == nil || !strings.Contains(err.Error(), "plain http") {
			t.Errorf("New(%s): err = %v, want a plain-http refusal", base, err)
		}
	}
	for _, base := range []string{"http://127.0.0.1:1/fhir", "http://localhost:1/fhir", "http://[::1]:1/fhir", "https://fhir.example.org/fhir"} {
		if _, err := New(Options{BaseURL: base}); err != nil {
			t.Errorf("New(%s): %v", base, err)
		}
	}

	sent := false
	c, err := New(Options{BaseURL: "http://127.0.0.1:1/fhir", HTTPClient: &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
		sent = true
		return nil, http.ErrHandlerTimeout
	})}})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://files.example.org/Patient.ndjson", nil)
	_, err = c.do(context.Background(), req, true)
	if err == nil || !strings.Contains(err.Error(), "plain http") || sent {
		t.Fatalf("download over plain http to another host: err = %v, sent = %v", err, sent)
	}
	redirect, _ := http.NewRequest(http.MethodGet, "http://files.example.org/x", nil)
	if err := checkRedirect(redirect, []*http.Request{req}); err == nil {
		t.Fatal("a redirect to plain http on another host was followed")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
