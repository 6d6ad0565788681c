# kube-outpost: kube-proxy for machines outside the cluster.
# `make demo` and `make test` install what they need (Debian packages by name,
# Go modules by version) and cache the slow builds.

GO       ?= go
VERSION  ?= $(shell sh hack/version.sh)
LDFLAGS  := -s -w -X main.version=$(VERSION)
PKGS     := ./cmd/... ./internal/... ./test/packaging/... ./test/soak/ ./test/plot/ ./test/bench/
E2E_PKGS := ./test/... ./internal/routes/
# Tools (nfpm, staticcheck) are pinned in their own module, so that go.mod
# lists only what the daemon and its tests link.
TOOL     := $(GO) tool -modfile=hack/tools/go.mod

.PHONY: all build deps generate check-generated lab-bins test unit kernel fuzz e2e soak soak-short test-vm test-vm-coexist demo lint fmt vet staticcheck clean bench bench-compare bench-compare-short bench-fleet bench-fleet-short bench-clusters bench-clusters-short package

all: build

build:
	@echo ">> building bin/kube-outpost $(VERSION)"
	@CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/kube-outpost ./cmd/kube-outpost

deps:
	@bash hack/deps.sh

# The eBPF objects of mode ebpf (internal/proxy/ebpf/bpf/*.c), compiled by
# bpf2go (pinned in hack/tools/go.mod) with Debian's clang-14. The .o and
# .go files are committed, so building needs no clang; CI runs this and
# fails on a diff.
generate:
	@bash hack/deps.sh generate
	@echo ">> generating the eBPF objects (bpf2go, clang-14)"
	@$(GO) generate ./internal/proxy/ebpf/

# make test's guard that the committed objects are what the sources make.
check-generated: generate
	@echo ">> checking the generated eBPF objects match their sources"
	@git diff --exit-code --stat -- internal/proxy/ebpf/ || \
	  { echo "the generated eBPF objects differ from their sources: run make generate and commit"; exit 1; }

# The lock is the one the lab takes around the same script (test/lab/lab.go,
# findBinaries): two builds at once in the one cache collide on their .tmp
# files, and the second fails.
lab-bins: deps
	@flock $${TMPDIR:-/tmp}/kube-outpost-lab-build.lock bash test/lab/build-k8s.sh >/dev/null

# bench-compare-short and bench-clusters-short assert nothing about their
# figures: they are there so that the harnesses of `make bench-compare`
# and `make bench-clusters` cannot rot unnoticed.
test: lint check-generated unit kernel fuzz e2e soak-short bench-compare-short bench-clusters-short test-vm

unit:
	@echo ">> unit tests"
	@$(GO) test -race -count=1 $(PKGS)

# iptables, nftables and ebpf mode against this kernel (needs root). Each
# iptables test runs itself again in a network namespace of its own; the
# nftables tests run in one made here and refuse any unnamed one (the
# machine's); each ebpf test attaches to a child cgroup it makes (never
# an existing one) holding only its client, whose network namespace it
# makes too, and pins under a bpffs it mounts.
kernel:
	@echo ">> real-kernel tests of iptables mode (each in a new network namespace)"
	@$(GO) test -tags kernel -count=1 -run '^TestKernel' ./internal/proxy/iptables/
	@echo ">> real-kernel tests of nftables mode (in netns kotest-$$$$)"
	@$(GO) test -tags kernel -c -o bin/nftables-kernel.test ./internal/proxy/nftables/
	@ns=kotest-$$$$; ip netns add $$ns && trap "ip netns del $$ns" EXIT && \
	  ip netns exec $$ns bin/nftables-kernel.test -test.count=1 -test.run '^TestKernel'
	@echo ">> real-kernel tests of ebpf mode (each in a throw-away cgroup, netns and bpffs of its own)"
	@$(GO) test -tags kernel -c -o bin/ebpf-kernel.test ./internal/proxy/ebpf/
	@bin/ebpf-kernel.test -test.count=1 -test.run '^TestKernel'

# The model fuzzed with random Services and EndpointSlices of several
# clusters: no panic, nothing refused programmed, the same state in any
# event order; and the config parser with random files: no panic, every
# problem on a line of the file. Bounded, to keep `make test` within its
# budget; a short minimization time keeps the fuzzing time spent fuzzing.
FUZZTIME ?= 30s
fuzz:
	@echo ">> fuzzing the model for $(FUZZTIME)"
	@$(GO) test -run '^$$' -fuzz '^FuzzStore$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./internal/model/
	@echo ">> fuzzing the config parser for $(FUZZTIME)"
	@$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./internal/config/
	@echo ">> fuzzing the DNS server's answers for $(FUZZTIME)"
	@$(GO) test -run '^$$' -fuzz '^FuzzAnswer$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./internal/names/

# The scenarios run once per mode this kernel has: iptables mode (with the
# lab's own tests), then nftables mode, which TestModeSwitch enters from
# iptables mode with probes running, then ebpf mode, entered from nftables
# mode; its hooks attach to a throw-away cgroup holding the test process,
# its pins go on a bpffs of each lab's own (docs/testing.md). ipvs mode
# runs them in the VM. The 3-minute apiserver outage of TestWatchRecovery
# runs once, in iptables mode: what it tests is the watches, the same in
# every mode, and the later runs take -short to keep CI within its hour.
e2e: deps lab-bins build
	@echo ">> end-to-end tests in iptables mode (real kube-apiserver, network namespaces, real packets)"
	@KO_E2E_MODE=iptables $(GO) test -tags e2e -count=1 -timeout 25m -p 1 $(E2E_PKGS)
	@echo ">> end-to-end tests in nftables mode"
	@KO_E2E_MODE=nftables KO_E2E_SWITCH_FROM=iptables $(GO) test -tags e2e -count=1 -timeout 25m -p 1 -short ./test/e2e/
	@echo ">> end-to-end tests in ebpf mode (a throw-away cgroup and bpffs)"
	@KO_E2E_MODE=ebpf KO_E2E_SWITCH_FROM=nftables $(GO) test -tags e2e -count=1 -timeout 25m -p 1 -short ./test/e2e/

# The soak: churn (services and EndpointSlices created, changed, deleted,
# SOAK_CHURN a second) against the daemon in the lab for DURATION, with
# probes to the ClusterIPs every 100 ms from the host and a routed client.
# It fails on a probe that should have been answered and was not, a failed
# sync, or RSS growing over the second half; the report (report.md, rss.png,
# latency.png) goes to SOAK_OUT. `make test` runs it for SOAK_SHORT.
DURATION   ?= 1h
SOAK_SHORT ?= 5m
SOAK_OUT   ?= bin/soak
soak: deps lab-bins build
	@echo ">> soak: $(DURATION) of churn and probes against kube-outpost in the lab; report in $(SOAK_OUT)/report.md"
	@SOAK_DURATION=$(DURATION) SOAK_OUT=$(abspath $(SOAK_OUT)) KO_SOAK_BINARY=$(abspath bin/kube-outpost) \
	  $(GO) test -tags soak -count=1 -timeout 0 -v -run '^TestSoak$$' ./test/soak/

soak-short:
	@$(MAKE) --no-print-directory soak DURATION=$(SOAK_SHORT)

# A real Debian bookworm under QEMU (software emulation) installs the .deb,
# starts the unit and reaches a lab ClusterIP, serves names through a real
# systemd-resolved, and keeps its rules beside Docker, ufw and firewalld
# through their reloads (TestCoexistence, about 6 minutes of the run); the
# .rpm is checked on the host. `make test-vm-coexist` runs that one alone.
test-vm: deps lab-bins package
	@echo ">> VM tests: Debian VM installs and runs the package, beside Docker, ufw and firewalld"
	@bash test/vm/deps.sh
	@bash test/vm/build-image.sh >/dev/null
	@$(GO) test -tags vm -count=1 -timeout 50m ./test/vm/

test-vm-coexist: deps lab-bins package
	@bash test/vm/deps.sh
	@bash test/vm/build-image.sh >/dev/null
	@$(GO) test -tags vm -count=1 -timeout 30m -v -run '^TestCoexistence$$' ./test/vm/

demo: deps lab-bins build
	@echo ">> demo: two clusters, kube-outpost on an outside host, a real curl to a ClusterIP"
	@$(GO) build -o bin/demo ./test/lab/demo
	@bin/demo

# Debian and RPM packages in dist/, with nfpm pinned in hack/tools/go.mod.
package: build
	@echo ">> packaging kube-outpost $(VERSION) (deb, rpm)"
	@mkdir -p dist
	@{ echo "# kube-outpost configuration. Nothing is configured yet, so the service"; \
	   echo "# does not start. Uncomment and edit, then: systemctl enable --now kube-outpost"; \
	   echo "# Every key is explained in /usr/share/doc/kube-outpost/config.toml.example."; echo; \
	   sed -e '/^[^#]/s/^/# /' packaging/config.toml.example; } > dist/config.toml
	@rm -f dist/*.deb dist/*.rpm
	@VERSION=$(VERSION) $(TOOL) nfpm package --config nfpm.yaml --packager deb --target dist/
	@VERSION=$(VERSION) $(TOOL) nfpm package --config nfpm.yaml --packager rpm --target dist/
	@ls -l dist/*.deb dist/*.rpm

# Every build tag the repo uses (grep -rh '^//go:build' --include=*.go .).
# None is negated, so one set compiles every file: vet and staticcheck run
# once over all of it (!linux files: GOOS=darwin vet).
LINT_TAGS := e2e,vm,kernel,ipvskernel,soak,bench

lint: fmt vet staticcheck

fmt:
	@echo ">> checking gofmt"
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	@echo ">> go vet (tags $(LINT_TAGS); GOOS=darwin for the !linux files)"
	@$(GO) vet -tags $(LINT_TAGS) ./...
	@GOOS=darwin $(GO) vet ./internal/cluster/ ./internal/names/ ./internal/proxy/ipvs/ ./internal/routes/

staticcheck:
	@echo ">> staticcheck (tags $(LINT_TAGS))"
	@$(TOOL) staticcheck -tags $(LINT_TAGS) ./...

clean:
	@echo ">> cleaning"
	@rm -rf bin dist

# Benchmarks against the real kernel run in a throw-away network namespace,
# never in the machine's own: one per mode, so that no mode's rules are in
# another's path. ebpf mode's also attach to a throw-away cgroup holding
# only the benchmark process and pin on a bpffs of their own
# (internal/proxy/ebpf/kernel_bench_test.go). BENCH_SERVICES=500 tries the
# harness quickly; BENCHFLAGS=-cpuprofile=... profiles (one mode:
# BENCH_MODES=nftables).
# At 10,000 services one nftables full sync takes minutes on a 6.18 kernel
# (docs/benchmarks.md): each benchmark runs once, with no test timeout.
BENCH_SERVICES ?= 10000
BENCH_TIME ?= 1x
BENCH_MODES ?= nftables iptables ebpf
bench: deps
	@echo ">> benchmarks: rule generation (fake iptables), the DNS server at $(BENCH_SERVICES) services x 10 endpoints"
	@BENCH_SERVICES=$(BENCH_SERVICES) $(GO) test -run '^$$' -bench . -benchmem ./internal/...
	@echo ">> benchmarks on this kernel, $(BENCH_MODES) side by side: $(BENCH_SERVICES) services x 10 endpoints"
	@mkdir -p bin/bench
	@for m in $(BENCH_MODES); do \
	  { ( ns=kobench-$$$$-$$m; echo ">> $$m mode, in netns $$ns"; \
	      ip netns add $$ns && trap "ip netns del $$ns" EXIT && \
	      ip netns exec $$ns env BENCH_SERVICES=$(BENCH_SERVICES) $(GO) test -tags kernel -run '^$$' \
	        -bench Kernel -benchtime $(BENCH_TIME) -timeout 0 $(BENCHFLAGS) ./internal/proxy/$$m/ ) 2>&1; \
	    echo $$? > bin/bench/$$m.rc; } | tee bin/bench/$$m.txt; \
	  [ "$$(cat bin/bench/$$m.rc)" = 0 ] || exit 1; \
	done
	@bash hack/bench-table.sh $(foreach m,$(BENCH_MODES),bin/bench/$(m).txt)

# kube-proxy v1.37.2 (built by test/lab/build-k8s.sh) and kube-outpost side
# by side (docs/benchmarks.md): the same lab apiserver and objects, each
# proxy in a node namespace of its own, for every mode this machine has;
# ebpf mode is kube-outpost's alone, its hooks on a throw-away cgroup
# holding the bench process, its pins on a bpffs of each node's own.
# A benchmark, never a timed test: it asserts nothing about the figures.
# The report (results.md, latency-cdf.png, rss.png, results.json) goes to
# COMPARE_OUT, by default test/bench/results/<UTC time>-<S>x<E>/.
COMPARE_SERVICES  ?= 10000
COMPARE_ENDPOINTS ?= 10
COMPARE_CHANGES   ?= 50
COMPARE_CHURN     ?= 50
COMPARE_LONE      ?= 20
COMPARE_MODES     ?=
COMPARE_COLD      ?= 5m
COMPARE_OUT       ?=
COMPARE_FLAGS     ?=
bench-compare: deps lab-bins build
	@echo ">> kube-proxy and kube-outpost side by side: $(COMPARE_SERVICES) services x $(COMPARE_ENDPOINTS) endpoints"
	@$(GO) test -tags bench -c -o bin/bench-compare.test ./test/bench/
	@cd test/bench && KO_BENCH_BINARY=$(abspath bin/kube-outpost) ../../bin/bench-compare.test \
	  -test.run '^TestCompare$$' -test.v -test.timeout 0 \
	  -services $(COMPARE_SERVICES) -endpoints $(COMPARE_ENDPOINTS) -changes $(COMPARE_CHANGES) \
	  -churn $(COMPARE_CHURN) -lone $(COMPARE_LONE) -modes '$(COMPARE_MODES)' -cold-timeout $(COMPARE_COLD) \
	  $(if $(COMPARE_OUT),-out $(abspath $(COMPARE_OUT))) $(COMPARE_FLAGS)

# The reduced run, for CI (a few minutes): 500 services x 5 endpoints,
# 10 changes under 10 background changes a second, one lone change; the
# report in bin/bench-compare-short/.
bench-compare-short:
	@$(MAKE) --no-print-directory bench-compare COMPARE_SERVICES=500 COMPARE_ENDPOINTS=5 COMPARE_CHANGES=10 COMPARE_LONE=1 \
	  COMPARE_CHURN=10 COMPARE_COLD=90s COMPARE_OUT=$(or $(COMPARE_OUT),bin/bench-compare-short) \
	  COMPARE_FLAGS='-sample 5 -connects 300 $(COMPARE_FLAGS)'

# One cluster against several (docs/benchmarks.md): one kube-outpost
# watching CLUSTERS x CLUSTERS_SERVICES services in one cluster, then as
# many spread over CLUSTERS clusters (each its own lab apiserver): cold
# sync, RSS, Go heap and lone changes side by side. A benchmark: it
# asserts nothing. The report goes to CLUSTERS_OUT, by default
# test/bench/results/<UTC time>-clusters-<K>x<S>/.
CLUSTERS          ?= 3
CLUSTERS_SERVICES ?= 3333
CLUSTERS_MODE     ?= nftables
CLUSTERS_OUT      ?=
CLUSTERS_FLAGS    ?=
bench-clusters: deps lab-bins build
	@echo ">> one cluster against $(CLUSTERS): $(CLUSTERS) x $(CLUSTERS_SERVICES) services"
	@$(GO) test -tags bench -c -o bin/bench-clusters.test ./test/bench/
	@cd test/bench && KO_BENCH_BINARY=$(abspath bin/kube-outpost) ../../bin/bench-clusters.test \
	  -test.run '^TestClusters$$' -test.v -test.timeout 0 \
	  -clusters $(CLUSTERS) -clusters-services $(CLUSTERS_SERVICES) -clusters-mode $(CLUSTERS_MODE) \
	  $(if $(CLUSTERS_OUT),-out $(abspath $(CLUSTERS_OUT))) $(CLUSTERS_FLAGS)

# The reduced run, for CI: 3 x 100 services x 5 endpoints, 6 changes.
bench-clusters-short:
	@$(MAKE) --no-print-directory bench-clusters CLUSTERS_SERVICES=100 CLUSTERS_OUT=$(or $(CLUSTERS_OUT),bin/bench-clusters-short) \
	  CLUSTERS_FLAGS='-endpoints 5 -changes 6 -cold-timeout 90s $(CLUSTERS_FLAGS)'

# The fleet's cost to the cluster (docs/benchmarks.md, "Sizing"): FLEET
# daemons at once, each in a loopback-only namespace of its own, against
# one lab apiserver holding FLEET_SERVICES x FLEET_ENDPOINTS; the
# apiserver's CPU, RSS and the bytes it sends each daemon (counted by a
# relay per daemon) at sync, at rest and per change, over a baseline of no
# daemon, for kube-outpost (watch-list on and off) and kube-proxy.
# A benchmark: it asserts nothing about the figures. The report
# (results.md, results.json, logs/) goes to FLEET_OUT, by default
# test/bench/results/<UTC time>-fleet-<S>x<E>/.
FLEET           ?= 1,10,50
FLEET_SERVICES  ?= 1000
FLEET_ENDPOINTS ?= 10
FLEET_CHANGES   ?= 50
FLEET_REST      ?= 1m
FLEET_VARIANTS  ?= kube-outpost,kube-outpost-no-watchlist,kube-proxy
FLEET_MODE      ?= nftables
FLEET_OUT       ?=
FLEET_FLAGS     ?=
bench-fleet: deps lab-bins build
	@echo ">> the fleet's cost to the cluster: $(FLEET) daemons against one apiserver, $(FLEET_SERVICES) services x $(FLEET_ENDPOINTS) endpoints"
	@$(GO) test -tags bench -c -o bin/bench-fleet.test ./test/bench/
	@cd test/bench && KO_BENCH_BINARY=$(abspath bin/kube-outpost) ../../bin/bench-fleet.test \
	  -test.run '^TestFleet$$' -test.v -test.timeout 0 \
	  -fleet $(FLEET) -fleet-services $(FLEET_SERVICES) -fleet-endpoints $(FLEET_ENDPOINTS) \
	  -fleet-changes $(FLEET_CHANGES) -fleet-rest $(FLEET_REST) -fleet-variants $(FLEET_VARIANTS) \
	  -fleet-mode $(FLEET_MODE) $(if $(FLEET_OUT),-out $(abspath $(FLEET_OUT))) $(FLEET_FLAGS)

# The harness tried end to end in a few minutes: fleets of 1 and 3,
# 200 services x 5 endpoints, 10 changes, 15 s at rest; the report in
# bin/bench-fleet-short/.
bench-fleet-short:
	@$(MAKE) --no-print-directory bench-fleet FLEET=1,3 FLEET_SERVICES=200 FLEET_ENDPOINTS=5 FLEET_CHANGES=10 \
	  FLEET_REST=15s FLEET_OUT=$(or $(FLEET_OUT),bin/bench-fleet-short) \
	  FLEET_FLAGS='-fleet-settle 10s -fleet-sync-timeout 3m $(FLEET_FLAGS)'
