# cacheplane — build, test and run. Every target works as root on a fresh
# Debian bookworm machine with Go (>= 1.26) and make; `make deps` installs the
# rest, idempotently.

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
GO       ?= go
BIN      ?= bin
IMAGES   ?= $(CURDIR)/.dev/images
# Debian packages of the engine versions bookworm does not ship (private apt
# lists, .debs, unpacked trees): kept so a second `make images` is offline
DEBIAN_CACHE ?= $(CURDIR)/.dev/debian
# Tests: unit + multi-process, all with -race. The e2e bound is a safety
# net (the suite takes ~15 min on 2 vCPUs), not a target.
TESTFLAGS ?= -race -timeout 25m
E2EFLAGS  ?= -race -timeout 45m
# Build tags of every build, test and lint: no_dynamic_plugins leaves Go's
# plugin package (containerd's client links it for dynamic plugins the agent
# never loads) out of the binaries — it exports every symbol, so nothing is
# dead-code eliminated (agent 61 → 46 MB; docs/benchmarks.md, footprint).
# Keep it equal to buildTags in e2e/harness_test.go and packaging/deb/build.go.
GOTAGS   ?= no_dynamic_plugins
export GOFLAGS := -tags=$(GOTAGS)
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/cacheplane/cacheplane/cli.Version=$(VERSION) -X github.com/cacheplane/cacheplane/coordinator.Release=$(VERSION)

.PHONY: all deps deps-system deps-go deps-node images containerd build test unit e2e lint bench run clean

all: build

## deps: Debian packages, Go modules and tools, containerd running, images
## built, SeaweedFS's weed built (in the background meanwhile: it is the
## longest step on a fresh machine)
deps: seaweedfs-start deps-system deps-go deps-node containerd images seaweedfs-wait

deps-system:
	@scripts/deps-system.sh

deps-go:
	$(GO) mod download
	@command -v staticcheck >/dev/null || GOFLAGS= $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

# node-redis and ioredis, for the client-compatibility e2e test
deps-node:
	@test -d e2e/node/node_modules/ioredis -a -d e2e/node/node_modules/redis || (cd e2e/node && npm install --no-audit --no-fund --no-package-lock --loglevel=error)

containerd:
	@scripts/ensure-containerd.sh

# SeaweedFS's weed (.dev/bin/weed), the real S3 server backupstore's tests
# start: built once from scripts/seaweedfs/ (minutes from an empty cache)
.PHONY: seaweedfs seaweedfs-start seaweedfs-wait
seaweedfs:
	@GO=$(GO) scripts/seaweedfs.sh
seaweedfs-start:
	@mkdir -p .dev && rm -f .dev/seaweedfs.status && (GO=$(GO) scripts/seaweedfs.sh > .dev/seaweedfs.log 2>&1; echo $$? > .dev/seaweedfs.status) &
seaweedfs-wait:
	@while [ ! -f .dev/seaweedfs.status ]; do sleep 2; done; \
	 s=$$(cat .dev/seaweedfs.status); rm -f .dev/seaweedfs.status; \
	 if [ "$$s" != 0 ]; then cat .dev/seaweedfs.log; echo "building SeaweedFS's weed failed (exit $$s)"; exit 1; fi

images:
	$(GO) run ./packaging/cmd/build-images -out $(IMAGES) -debian $(DEBIAN_CACHE)

# What packaging and its tests need: systemd-analyze, debootstrap, strace
.PHONY: deps-packaging packages
deps: deps-packaging
deps-packaging:
	@scripts/deps-packaging.sh

## packages: .debs of the coordinator, the agent (carrying the images) and
## the CLI in $(BIN)/packages (packaging/deb; version from git describe)
packages: images
	$(GO) run ./packaging/deb -images $(IMAGES) -out $(BIN)/packages

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/cacheplane-coordinator ./cmd/coordinator
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/cacheplane ./cmd/cacheplane
	@if [ -d cmd/agent ] && ls cmd/agent/*.go >/dev/null 2>&1; then $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/cacheplane-agent ./cmd/agent; fi

## test: everything CI runs — deps, lint, unit tests, then the multi-process
## tests alone (they measure failovers: they must not share the CPUs with
## the unit suites)
test: deps lint build
	CACHEPLANE_IMAGES=$(IMAGES) $(GO) test $(TESTFLAGS) $$($(GO) list ./... | grep -v /e2e)
	CACHEPLANE_IMAGES=$(IMAGES) $(GO) test $(E2EFLAGS) -p 1 ./e2e/

unit:
	$(GO) test $(TESTFLAGS) $$($(GO) list ./... | grep -v /e2e)

e2e: build
	CACHEPLANE_IMAGES=$(IMAGES) $(GO) test $(E2EFLAGS) -p 1 -v ./e2e/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^e2e/testdata/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	staticcheck ./...

## chaos: the seeded fault suite for CHAOS_DURATION (default 10m) with
## CHAOS_SEED (default drawn and printed): kills, freezes, partitions
## (iptables on loopback, removed afterwards), plan changes, drains and
## upgrades under writers; report into docs/chaos/ (e2e/chaos_test.go)
.PHONY: chaos
chaos: build containerd
	CACHEPLANE_IMAGES=$(IMAGES) $(GO) test $(E2EFLAGS) -tags chaos -count=1 -run '^TestChaos$$' -v ./e2e/

## bench: benchmarks as ratios against a baseline of the same run, into docs/benchmarks.md
bench: deps build
	CACHEPLANE_IMAGES=$(IMAGES) $(GO) test -tags bench -timeout 30m -run 'TestBench' -v ./e2e/

## scale: one 3-member coordinator cluster (real processes, Raft) against
## thousands of simulated agents speaking the agent API over mutual TLS
## (each joined with its own token); sizes from CACHEPLANE_SCALE_HOSTS
## (default 1000, e.g. 1000,3000,10000); figures into docs/benchmarks.md
## (e2e/scale_test.go). Not part of `make test`.
.PHONY: scale
scale: build
	CACHEPLANE_IMAGES=$(IMAGES) $(GO) test -tags 'scale bench' -timeout 3h -count=1 -run '^TestScale$$' -v ./e2e/

## run: a local fleet in dev mode (Ctrl-C stops it; run again to resume)
run: deps build
	@scripts/dev.sh

clean:
	rm -rf $(BIN)
