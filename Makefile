# slirp4netns (Go) — build, test, demo, benchmarks.
# Run as root on Debian 12: `make demo`, `make test`.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export PATH := /usr/local/go/bin:$(PATH)

GO      ?= go
PREFIX  ?= /usr/local
DESTDIR ?=
BIN     := bin/slirp4netns
# The integration tests run each case as root and as uid 65534; independent
# cases run in parallel within one outer namespace (they mostly wait).
# The timeout is shared by the two privilege variants (each gets half).
ITEST_FLAGS ?= -count=1 -timeout 6m -parallel 8
UTEST_FLAGS ?= -count=1 -timeout 3m
LOGDIR  := bin/test-logs
# Summary lines printed after each test run so that CI logs show them.
SUMMARY := ^(=== VARIANT|--- FAIL|--- PASS|ok |FAIL|PASS$$|panic:)

.PHONY: all build deps test test-unit test-integration integration-pass test-c vet demo bench bench-net fuzz install uninstall deb clean

all: build

# Linked statically: every one of our processes (supervisor, engine, helper)
# would otherwise map libc.so, of which ~1.4 MiB ends up resident in each;
# linked in, glibc adds ~0.8 MB to the binary's own (shared) pages instead
# (-0.4 to -0.5 MiB RSS per process, docs/benchmarks.md). netgo: the pure-Go
# resolver, so that glibc's NSS (which a static binary cannot load) is not
# linked; nothing here looks names up anyway. `go build ./cmd/slirp4netns`
# without these flags still gives a working (dynamic) binary.
BUILD_FLAGS ?= -tags netgo -ldflags=-extldflags=-static

build:
	CGO_ENABLED=1 $(GO) build $(BUILD_FLAGS) -o $(BIN) ./cmd/slirp4netns

deps:
	@scripts/install-deps

# test: vet, unit tests (everything but test/integration), then the
# integration suite against bin/slirp4netns. Every phase runs even if an
# earlier one failed, so that CI shows all results; the exit status says
# whether all passed.
test: deps build
	@rc=0; \
	$(MAKE) --no-print-directory vet || rc=1; \
	$(MAKE) --no-print-directory test-unit || rc=1; \
	$(MAKE) --no-print-directory test-integration || rc=1; \
	if [ $$rc = 0 ]; then echo "make test: all passed"; else echo "make test: FAILED"; fi; \
	exit $$rc

vet:
	$(GO) vet ./...

test-unit:
	@mkdir -p $(LOGDIR)
	$(GO) test $(UTEST_FLAGS) $$($(GO) list ./... | grep -v /test/integration) 2>&1 | tee $(LOGDIR)/unit.log

# test-integration runs the suite twice: as users start it, and with every
# slirp4netns confined (--enable-sandbox --enable-seccomp, which podman
# always passes), so the seccomp allow-list is proven complete.
test-integration: build
	@mkdir -p $(LOGDIR)
	@if [ "$$(id -u)" = 0 ]; then chmod 666 /dev/net/tun; fi
	@rc=0; \
	$(MAKE) --no-print-directory integration-pass PASS=plain EXTRA= || rc=1; \
	$(MAKE) --no-print-directory integration-pass PASS=sandbox EXTRA="--enable-sandbox --enable-seccomp" || rc=1; \
	exit $$rc

integration-pass:
	@rc=0; SLIRP4NETNS_BIN=$(CURDIR)/$(BIN) SLIRP4NETNS_IMPL=go SLIRPTEST_EXTRA_ARGS="$(EXTRA)" \
		$(GO) test -v $(ITEST_FLAGS) ./test/integration/ >$(LOGDIR)/integration-$(PASS).log 2>&1 || rc=$$?; \
		if [ $$rc != 0 ]; then cat $(LOGDIR)/integration-$(PASS).log; echo "=== SUMMARY ($(PASS))"; fi; \
		echo "=== integration pass: $(PASS) $(EXTRA)"; \
		grep -E '$(SUMMARY)' $(LOGDIR)/integration-$(PASS).log || true; \
		echo "integration log: $(LOGDIR)/integration-$(PASS).log"; exit $$rc

# test-c: the integration suite against the C slirp4netns 1.2.0 (the
# harness's own check; deliberate differences are asserted per impl).
test-c:
	@mkdir -p $(LOGDIR)
	@if [ "$$(id -u)" = 0 ]; then chmod 666 /dev/net/tun; fi
	@rc=0; SLIRP4NETNS_BIN=/usr/bin/slirp4netns SLIRP4NETNS_IMPL=c $(GO) test -v $(ITEST_FLAGS) ./test/integration/ \
		>$(LOGDIR)/integration-c.log 2>&1 || rc=$$?; \
		if [ $$rc != 0 ]; then cat $(LOGDIR)/integration-c.log; echo "=== SUMMARY"; fi; \
		grep -E '$(SUMMARY)' $(LOGDIR)/integration-c.log || true; \
		echo "integration log: $(LOGDIR)/integration-c.log"; exit $$rc

# test-race: the integration suite (root variant) against a -race build of
# the binary; the race detector's reports make the binary exit 66, which the
# tests see as failures. GORACE makes every report end the process, and
# drops the race runtime's 1 s sleep at every exit (timed tests would fail).
RACE_BIN := bin/slirp4netns-race
build-race:
	CGO_ENABLED=1 $(GO) build -race -o $(RACE_BIN) ./cmd/slirp4netns

test-race: build-race
	@mkdir -p $(LOGDIR)
	@rc=0; GORACE="halt_on_error=1 atexit_sleep_ms=0" SLIRPTEST_VARIANTS=root SLIRP4NETNS_BIN=$(CURDIR)/$(RACE_BIN) SLIRP4NETNS_IMPL=go \
		$(GO) test -v $(ITEST_FLAGS) ./test/integration/ >$(LOGDIR)/integration-race.log 2>&1 || rc=$$?; \
		if [ $$rc != 0 ]; then cat $(LOGDIR)/integration-race.log; echo "=== SUMMARY"; fi; \
		grep -E '$(SUMMARY)|WARNING: DATA RACE' $(LOGDIR)/integration-race.log || true; \
		echo "integration log: $(LOGDIR)/integration-race.log"; exit $$rc

# test-load: the load and fault tests at the issue's full size (10,000
# guest connections, 1,000 forwarded ones, a 10 s UDP flood), both variants.
test-load: build
	@mkdir -p $(LOGDIR)
	@if [ "$$(id -u)" = 0 ]; then chmod 666 /dev/net/tun; fi
	@rc=0; SLIRPTEST_LOAD=full SLIRP4NETNS_BIN=$(CURDIR)/$(BIN) SLIRP4NETNS_IMPL=go $(GO) test -v -count=1 -timeout 10m \
		-run 'TestLoad|TestLowNofile' ./test/integration/ >$(LOGDIR)/integration-load.log 2>&1 || rc=$$?; \
		if [ $$rc != 0 ]; then cat $(LOGDIR)/integration-load.log; echo "=== SUMMARY"; fi; \
		grep -E '$(SUMMARY)|load_test.go' $(LOGDIR)/integration-load.log || true; \
		echo "integration log: $(LOGDIR)/integration-load.log"; exit $$rc

demo: deps build
	scripts/demo

# bench: the engine's Go benchmarks, bounded.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s -timeout 10m ./engine/...

# bench-net: ours (plain, and confined with --enable-sandbox --enable-seccomp
# through scripts/slirp4netns-confined) vs C slirp4netns vs pasta vs veth (the
# kernel: the physical limit the bars refer to), with ../shared/bench/netbench;
# then a second, shorter netbench run of ours and C only with UDP at
# NETBENCH_UDP_RATE (netbench has one UDP rate per invocation; 500M is where
# both keep up, 2G is where the difference shows); then scripts/netab for what
# netbench does not measure (host->guest through a forward at MTU 1500, CPU
# per GB at MTU 1500; ours and C, NETAB_ROUNDS interleaved rounds of 5 s).
# Writes docs/benchmarks.md. About 14 minutes on the 2-core machines (the
# first run ~9, the second ~2.5, netab ~2).
NETBENCH ?= ../shared/bench/netbench
NETBENCH_FLAGS ?=
NETBENCH_UDP_RATE ?= 2G
NETBENCH_UDP_FLAGS ?= --runs 3 --duration 3
NETAB_ROUNDS ?= 3
#
# It measures an installed copy of bin/slirp4netns (what `make install` and
# dpkg produce), not the linker's output itself: the Go linker writes its
# output through a shared mapping, and the page-cache pages that leaves are
# mapped in larger runs when the binary runs: the same bytes showed ~0.8 MiB
# more file-backed RSS in the supervisor and ~0.2 MiB in the engine than an
# installed copy (VmHWM after iperf3 both ways, both fully cached).
BENCH_BIN = $(LOGDIR)/bench/slirp4netns
bench-net: deps build
	@mkdir -p $(LOGDIR)/bench
	install -m 0755 $(BIN) $(BENCH_BIN)
	SLIRP4NETNS_CONFINED_BIN=$(CURDIR)/$(BENCH_BIN) \
	$(NETBENCH) $(NETBENCH_FLAGS) --impl go-slirp4netns=./$(BENCH_BIN) --impl go-confined=scripts/slirp4netns-confined \
		--impl c-slirp4netns=/usr/bin/slirp4netns --impl pasta --impl veth \
		--json $(LOGDIR)/netbench.json | tee $(LOGDIR)/netbench.txt
	$(NETBENCH) $(NETBENCH_UDP_FLAGS) $(NETBENCH_FLAGS) --udp-rate $(NETBENCH_UDP_RATE) \
		--impl go-slirp4netns=./$(BENCH_BIN) --impl c-slirp4netns=/usr/bin/slirp4netns \
		--json $(LOGDIR)/netbench-udp.json | tee $(LOGDIR)/netbench-udp.txt
	{ scripts/netab h2g1500 $(NETAB_ROUNDS) 5 go-slirp4netns=./$(BENCH_BIN) c-slirp4netns=/usr/bin/slirp4netns | sed 's/^/h2g1500 /'; \
	  scripts/netab g2h1500 $(NETAB_ROUNDS) 5 go-slirp4netns=./$(BENCH_BIN) c-slirp4netns=/usr/bin/slirp4netns | sed 's/^/g2h1500 /'; } | tee $(LOGDIR)/netab-1500.txt
	scripts/benchmarks-md $(LOGDIR)/netbench.txt $(LOGDIR)/netbench.json $(LOGDIR)/netbench-udp.json $(LOGDIR)/netab-1500.txt >docs/benchmarks.md
	@echo "wrote docs/benchmarks.md"

# fuzz: every Fuzz target for 60 s each.
FUZZTIME ?= 60s
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) scripts/fuzz

# install: the binary, the man page and the bash and zsh completions under
# $(DESTDIR)$(PREFIX) (e.g. make install PREFIX=/usr DESTDIR=pkg/).
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
INSTALLED   := $(BINDIR)/slirp4netns $(MANDIR)/man1/slirp4netns.1 \
	$(BASHCOMPDIR)/slirp4netns $(ZSHCOMPDIR)/_slirp4netns

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/slirp4netns
	install -D -m 0644 docs/slirp4netns.1 $(DESTDIR)$(MANDIR)/man1/slirp4netns.1
	install -D -m 0644 contrib/completions/bash/slirp4netns $(DESTDIR)$(BASHCOMPDIR)/slirp4netns
	install -D -m 0644 contrib/completions/zsh/_slirp4netns $(DESTDIR)$(ZSHCOMPDIR)/_slirp4netns

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))

# deb: a Debian package (packaging/nfpm.yaml: the binary, the gzipped man
# page, the bash and zsh completions, the license) in $(DEBDIR), built by
# nfpm from the Go module proxy, or by NFPM=/path/to/nfpm.
NFPM_VERSION ?= v2.45.2
NFPM         ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)
DEBDIR       ?= bin
DEBSTAGE     ?= bin/deb-stage
DEBVERSION    = $(shell sed -n 's/^const Version = "\(.*\)"$$/\1/p' supervisor/banner.go)

deb: build
	rm -rf $(DEBSTAGE)
	install -D -m 0755 $(BIN) $(DEBSTAGE)/slirp4netns
	install -D -m 0644 contrib/completions/bash/slirp4netns $(DEBSTAGE)/bash/slirp4netns
	install -D -m 0644 contrib/completions/zsh/_slirp4netns $(DEBSTAGE)/zsh/_slirp4netns
	install -D -m 0644 LICENSE $(DEBSTAGE)/copyright
	gzip -9n <docs/slirp4netns.1 >$(DEBSTAGE)/slirp4netns.1.gz
	mkdir -p $(DEBDIR)
	cd $(DEBSTAGE) && VERSION="$(DEBVERSION)" GOARCH="$$($(GO) env GOARCH)" \
		$(NFPM) package --config $(CURDIR)/packaging/nfpm.yaml --packager deb --target $(abspath $(DEBDIR))/

clean:
	rm -rf bin
