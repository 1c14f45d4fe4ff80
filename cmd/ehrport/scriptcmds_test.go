package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/ehrport/ehrport/storage/storetest"
)

// scriptCmds are extra script commands shared by every script test.
// blackholes maps a blackhole's address to a channel closed at its first
// connection (for waitconn).
var blackholes sync.Map

var scriptCmds = map[string]func(ts *testscript.TestScript, neg bool, args []string){
	// exits CODE PROGRAM [ARGS...] runs PROGRAM and asserts its exact exit
	// code: `! exec` alone cannot tell "bad input" (2) from "storage" (4).
	"exits": func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) < 2 {
			ts.Fatalf("usage: exits CODE PROGRAM [ARGS...]")
		}
		want, err := strconv.Atoi(args[0])
		if err != nil {
			ts.Fatalf("exits: bad code %q", args[0])
		}
		got := 0
		if err := ts.Exec(args[1], args[2:]...); err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				ts.Fatalf("exits: %v", err)
			}
			got = ee.ExitCode()
		}
		if got != want {
			ts.Fatalf("%s exited %d, want %d", args[1], got, want)
		}
	},
	// blackhole VAR starts a TCP listener on 127.0.0.1 that accepts
	// connections and never answers, and sets VAR to its host:port: a
	// server that hangs, for interrupt and timeout tests.
	"blackhole": func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) != 1 {
			ts.Fatalf("usage: blackhole VAR")
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			ts.Fatalf("blackhole: %v", err)
		}
		var mu sync.Mutex
		var held []net.Conn
		accepted := make(chan struct{})
		blackholes.Store(ln.Addr().String(), accepted)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				if len(held) == 0 {
					close(accepted)
				}
				held = append(held, c)
				mu.Unlock()
			}
		}()
		ts.Defer(func() {
			ln.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, c := range held {
				c.Close()
			}
		})
		ts.Setenv(args[0], ln.Addr().String())
	},
	// waitconn VAR waits (up to 2 minutes) until the blackhole whose address
	// is in VAR has accepted a connection: the command under test is then
	// running and stuck, whatever the machine's load.
	"waitconn": func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) != 1 {
			ts.Fatalf("usage: waitconn VAR")
		}
		ch, ok := blackholes.Load(ts.Getenv(args[0]))
		if !ok {
			ts.Fatalf("waitconn: %s is no blackhole", args[0])
		}
		select {
		case <-ch.(chan struct{}):
		case <-time.After(2 * time.Minute):
			ts.Fatalf("waitconn: nothing connected to %s", args[0])
		}
	},
	// sleep DURATION waits, e.g. for a background command to get going.
	"sleep": func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) != 1 {
			ts.Fatalf("usage: sleep DURATION")
		}
		d, err := time.ParseDuration(args[0])
		if err != nil {
			ts.Fatalf("sleep: %v", err)
		}
		time.Sleep(d)
	},
	// flipbyte FILE OFFSET flips the low bit of one byte in place.
	"flipbyte": func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) != 2 {
			ts.Fatalf("usage: flipbyte FILE OFFSET")
		}
		off, err := strconv.Atoi(args[1])
		if err != nil {
			ts.Fatalf("flipbyte: %v", err)
		}
		path := ts.MkAbs(args[0])
		b, err := os.ReadFile(path)
		if err != nil || off >= len(b) {
			ts.Fatalf("flipbyte: %v (size %d)", err, len(b))
		}
		b[off] ^= 1
		ts.Check(os.WriteFile(path, b, 0o600))
	},
	// lyingcloud NAME starts a lying S3 server (gofakes3: accepts any
	// checksum, stores framing as data) for this script and names it as the
	// store NAME through EHRPORT_STORE_NAME_* variables.
	"lyingcloud": func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) != 1 {
			ts.Fatalf("usage: lyingcloud NAME")
		}
		srv := storetest.NewLyingCloudServer()
		ts.Defer(srv.Close)
		for _, kv := range storetest.LyingCloudEnv(strings.ToUpper(args[0]), srv.URL, 5<<20) {
			k, v, _ := strings.Cut(kv, "=")
			ts.Setenv(k, v)
		}
	},
	// fhirbinary FILE BYTES writes a FHIR Binary resource whose data is
	// BYTES random bytes (base64), to make an export object of a given size.
	"fhirbinary": func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) != 2 {
			ts.Fatalf("usage: fhirbinary FILE BYTES")
		}
		n, err := strconv.Atoi(args[1])
		if err != nil {
			ts.Fatalf("fhirbinary: %v", err)
		}
		data := make([]byte, n)
		rand.Read(data)
		doc := `{"resourceType":"Binary","id":"big","contentType":"application/octet-stream","data":"` + base64.StdEncoding.EncodeToString(data) + `"}`
		ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(doc), 0o600))
	},
	// randhex VAR sets VAR to 8 random hex digits: a fresh prefix per run
	// on the shared test bed.
	"randhex": func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) != 1 {
			ts.Fatalf("usage: randhex VAR")
		}
		b := make([]byte, 4)
		rand.Read(b)
		ts.Setenv(args[0], fmt.Sprintf("%x", b))
	},
}
