// Package modelsrc reads the source of the samply R4 models for the
// generators under fhir/internal/gen.
package modelsrc

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Module is the models' module; its package fhir holds the types.
const Module = "github.com/samply/golang-fhir-models/fhir-models"

// Parse parses every non-test file of the models' fhir package, found
// through `go list` (the version go.mod pins). The package has no build
// tags: these files are the whole package.
func Parse() ([]*ast.File, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", Module).Output()
	if err != nil {
		return nil, fmt.Errorf("locate %s: %w", Module, err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "fhir")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}
