package main

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// maxInitBytes bounds what one of ehrport's packages may allocate in its
// package init. Every command, down to `ehrport --version`, pays every
// package's init: tables, templates and regexps belong in sync.OnceValue.
// Allocation is deterministic where init time is not; before the tables
// were made lazy, fhir allocated 220 KB and export 166 KB.
const maxInitBytes = 32 << 10

var initLine = regexp.MustCompile(`(?m)^init (\S+) @[0-9.]+ ms, [0-9.]+ ms clock, ([0-9]+) bytes, [0-9]+ allocs$`)

func TestPackageInitIsCheap(t *testing.T) {
	// This test binary links every package ehrport does; run it again,
	// running no test, with the runtime tracing each package init.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	godebug := "inittrace=1"
	if v := os.Getenv("GODEBUG"); v != "" {
		godebug = v + "," + godebug
	}
	cmd.Env = append(os.Environ(), "GODEBUG="+godebug)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	seen := 0
	for _, m := range initLine.FindAllStringSubmatch(string(out), -1) {
		pkg := m[1]
		// The test package's own init (testscript's tables) is not ehrport's.
		if !strings.HasPrefix(pkg, "github.com/ehrport/ehrport/") || pkg == "github.com/ehrport/ehrport/cmd/ehrport" {
			continue
		}
		seen++
		n, _ := strconv.Atoi(m[2])
		if n > maxInitBytes {
			t.Errorf("package %s allocates %d bytes in its init (limit %d): build its tables on first use", pkg, n, maxInitBytes)
		}
	}
	if seen < 5 {
		t.Fatalf("only %d of ehrport's packages in the init trace; has the GODEBUG=inittrace format changed?\n%s", seen, out)
	}
}
