# ehrport: every step a new machine or CI needs is here.
#   make demo    the main job on embedded defaults and sample data
#   make test    every test, starting the S3 test bed (MinIO + versitygw) it needs
#   make check   formatting, vet, staticcheck, layering, go mod tidy, race tests
#   make bench   benchmarks against peers, scale curve, micro-benchmarks (not part of test or CI)
#   make bench-quick  the same code paths on small sizes, a few minutes

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
BIN := bin/ehrport
TESTBED_ENV := .cache/testbed/env
# Integration tests talk to the test bed; the env file names its stores.
WITH_TESTBED := set -a && source $(TESTBED_ENV) && set +a &&
# The FHIR server of the restore-into-FHIR tests (scripts/fhirserver.sh).
WITH_FHIRSERVER := set -a && source .cache/fhirserver/env && set +a &&

.PHONY: build test test-unit test-integration check bench bench-quick demo testbed-up testbed-down fuzz fuzz-short clean fhirserver-up

# The release build (scripts/lib.sh's build_ehrport, which the benchmarks
# use too): static and without urfave/cli's docs generators.
build:
	source scripts/lib.sh && GO=$(GO) build_ehrport $(BIN)

# Unit tests first (no servers), a short pass of every fuzz target, then the
# real clouds, then the tests that use them, one package at a time: fault
# tests kill and restart the servers.
test: test-unit fuzz-short testbed-up fhirserver-up test-integration

test-unit:
	$(GO) test -count=1 -timeout 20m ./...

test-integration: fhirserver-up
	bash scripts/install-debs.sh
	$(WITH_TESTBED) $(WITH_FHIRSERVER) $(GO) test -count=1 -p 1 -timeout 30m -tags integration -run Integration ./...

check:
	@out=$$(gofmt -l cmd crypto fhir storage); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	$(GO) tool staticcheck ./...
	bash scripts/check-layers.sh
	bash scripts/vulncheck.sh
	# The check above must be able to fail: findings, clean and unreachable
	# shown on databases built for the purpose (govulncheck scans offline).
	bash scripts/vulncheck.sh --self-test
	cp go.mod /tmp/ehrport-go.mod.bak && cp go.sum /tmp/ehrport-go.sum.bak
	$(GO) mod tidy
	@if ! diff -q go.mod /tmp/ehrport-go.mod.bak >/dev/null || ! diff -q go.sum /tmp/ehrport-go.sum.bak >/dev/null; then \
		diff -u /tmp/ehrport-go.mod.bak go.mod || true; \
		cp /tmp/ehrport-go.mod.bak go.mod; cp /tmp/ehrport-go.sum.bak go.sum; \
		echo "go.mod/go.sum are not tidy: run 'go mod tidy' and commit"; exit 1; fi
	$(GO) test -race -count=1 -timeout 30m ./...

# The Go benchmarks of the commands and stores against the test bed (once;
# those of fhir and crypto run in scripts/bench-micro.sh), then every
# scripts/bench-*.sh, each writing its own section of docs/BENCHMARKS.md
# (and its entries of docs/benchmarks.json): the peers, the scale curve and
# the Go micro-benchmarks with benchstat. $(1): rounds against the peers,
# $(2): rounds of the scale curve, $(3): -count of the micro-benchmarks. A
# failed script does not stop the others; the target fails at the end.
BENCH_ROUNDS ?= 5
BENCH_SCALE_ROUNDS ?= 3
BENCH_MICRO_COUNT ?= 6
bench_all = failed=; for s in scripts/bench-*.sh; do \
		case "$$s" in */bench-scale.sh) n=$(2);; */bench-micro.sh) n=$(3);; *) n=$(1);; esac; \
		echo "== $$s $$n"; ( $(WITH_TESTBED) bash "$$s" "$$n" ) || failed="$$failed $$s"; \
	done; if [ -n "$$failed" ]; then echo "bench: failed:$$failed"; exit 1; fi

bench: build testbed-up
	$(WITH_TESTBED) $(GO) test -tags integration -run '^$$' -bench . -benchmem ./cmd/... ./storage/...
	@$(call bench_all,$(BENCH_ROUNDS),$(BENCH_SCALE_ROUNDS),$(BENCH_MICRO_COUNT))

# The same scripts and code paths on small sizes, 2 rounds, nothing recorded
# in docs/: a few minutes.
bench-quick: build testbed-up
	@export BENCH_RECORD=0 BENCH_SMALL_PATIENTS=300 BENCH_LARGE_MIB=16 BENCH_LARGE_N=2 BENCH_MIB=64 \
		BENCH_EXPORT_PATIENTS=530 BENCH_SCALE_RESOURCES="1000 10000" BENCH_MICRO_TIME=1x; \
	$(call bench_all,2,1,1)

# The main job, end to end: an exit drill from MinIO (cloud A) to versitygw
# (cloud B) over TLS on generated patients, with ephemeral keys, deletion at A
# proven, and a signed report. Each run uses a fresh prefix, so reruns never
# collide. Prints the verdict and the path to the HTML report.
demo: build testbed-up
	$(WITH_TESTBED) ./$(BIN) --quiet stores check --create clouda:ehrport-demo cloudb:ehrport-demo >/dev/null
	@run=drill-$$(date -u +%Y%m%dT%H%M%SZ)-$$RANDOM; \
	$(WITH_TESTBED) ./$(BIN) --log-level warn drill --a clouda:ehrport-demo/$$run --b cloudb:ehrport-demo/$$run \
		--decommission-source --rto 5m --report ehrport-report
	@echo "Open ehrport-report/report.html in a browser; check the signature with: ./$(BIN) report verify ehrport-report/report.json"
	@echo "The test bed keeps running; stop it with: make testbed-down"

# Every fuzz target: `make fuzz FUZZTIME=10m` for a long run.
FUZZTIME ?= 1m
fuzz:
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

fuzz-short:
	FUZZTIME=3s bash scripts/fuzz.sh

# Faults injected against private servers (kill -9, network, signals, full
# disk, ...), bad inputs, fuzzing and security checks, measured; then
# docs/RELIABILITY.md regenerated from the figures. EHRPORT_FAULT_ROUNDS=20
# for longer kill loops, FUZZTIME=10m for longer fuzzing.
.PHONY: reliability
reliability:
	bash scripts/reliability.sh

testbed-up:
	bash scripts/testbed.sh up

# A real FHIR R4 server (Node, @medplum/fhir-router in memory) on 127.0.0.1;
# stop it with: bash scripts/fhirserver.sh down
fhirserver-up:
	bash scripts/fhirserver.sh up

testbed-down:
	bash scripts/testbed.sh down

clean:
	rm -rf bin
