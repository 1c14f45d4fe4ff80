package bulk

import (
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestLayering keeps fhir/bulk below crypto, storage and the CLI: it may
// import the standard library and, from this module, only fhir (for
// ErrBadInput).
func TestLayering(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			first, _, _ := strings.Cut(path, "/")
			switch {
			case path == "github.com/ehrport/ehrport/fhir":
			case !strings.Contains(first, "."):
				// standard library
			default:
				t.Errorf("%s imports %s; fhir/bulk may use only the standard library and fhir", name, path)
			}
		}
	}
}
