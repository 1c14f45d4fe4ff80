# ehrport: every step a new machine or CI needs is here.
#   make demo    the main job on embedded defaults and sample data
#   make test    every test, starting the S3 test bed (MinIO + versitygw) it needs
#   make check   formatting, vet, staticcheck, layering, go mod tidy, race tests
#   make bench   benchmarks against peers (not part of test or CI)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
BIN := bin/ehrport
TESTBED_ENV := .cache/testbed/env
# Integration tests talk to the test bed; the env file names its stores.
WITH_TESTBED := set -a && source $(TESTBED_ENV) && set +a &&

.PHONY: build test test-unit test-integration check bench demo testbed-up testbed-down fuzz-short clean

build:
	$(GO) build -o $(BIN) ./cmd/ehrport

# Unit tests first (no servers), then the real clouds, then the tests that use
# them, one package at a time: fault tests kill and restart the servers.
test: test-unit testbed-up test-integration

test-unit:
	$(GO) test -count=1 ./...

test-integration:
	$(WITH_TESTBED) $(GO) test -count=1 -p 1 -tags integration -run Integration ./...

check:
	@out=$$(gofmt -l cmd crypto fhir storage); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	$(GO) tool staticcheck ./...
	bash scripts/check-layers.sh
	cp go.mod /tmp/ehrport-go.mod.bak && cp go.sum /tmp/ehrport-go.sum.bak
	$(GO) mod tidy
	@if ! diff -q go.mod /tmp/ehrport-go.mod.bak >/dev/null || ! diff -q go.sum /tmp/ehrport-go.sum.bak >/dev/null; then \
		diff -u /tmp/ehrport-go.mod.bak go.mod || true; \
		cp /tmp/ehrport-go.mod.bak go.mod; cp /tmp/ehrport-go.sum.bak go.sum; \
		echo "go.mod/go.sum are not tidy: run 'go mod tidy' and commit"; exit 1; fi
	$(GO) test -race -count=1 ./...

bench: build testbed-up
	$(WITH_TESTBED) $(GO) test -tags integration -run '^$$' -bench . -benchmem ./...
	@for s in scripts/bench-*.sh; do [ -e "$$s" ] || continue; echo "== $$s"; $(WITH_TESTBED) bash "$$s"; done

# For now the demo proves both clouds are usable; the drill issue replaces it
# with a full exit drill.
demo: build testbed-up
	$(WITH_TESTBED) ./$(BIN) stores check --create clouda:ehrport-demo cloudb:ehrport-demo
	@echo "Both clouds are up. Stop them with: make testbed-down"

testbed-up:
	bash scripts/testbed.sh up

testbed-down:
	bash scripts/testbed.sh down

clean:
	rm -rf bin
