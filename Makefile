# Barge. `make help` lists the targets.

GO      ?= go
BIN     := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/bargeml/barge/internal/cli.Version=$(VERSION) -X main.version=$(VERSION)
# Tools are built from hack/tools/go.mod, the control plane for envtest from
# hack/controlplane/go.mod; each binary depends on its go.mod, so a bump rebuilds it.
TOOLS_MOD      := $(CURDIR)/hack/tools/go.mod
CONTROLPLANE_MOD := $(CURDIR)/hack/controlplane/go.mod
ORAS           := $(BIN)/oras
CONTROLLER_GEN := $(BIN)/controller-gen
HELM           := $(BIN)/helm
COSIGN         := $(BIN)/cosign
KUBE_APISERVER := $(BIN)/kube-apiserver
ETCD           := $(BIN)/etcd
KUBECTL        := $(BIN)/kubectl
# versitygw (an S3 server over a directory) is pinned on its own in
# hack/tools/versitygw/go.mod: only the registry's S3 test runs it.
VERSITYGW_MOD  := $(CURDIR)/hack/tools/versitygw/go.mod
VERSITYGW      := $(BIN)/versitygw
# The server reports the version pinned in hack/controlplane/go.mod.
KUBE_VERSION   := $(shell awk '$$1 == "k8s.io/kubernetes" { print $$2 }' $(CONTROLPLANE_MOD))
KUBE_SEMVER    := $(subst ., ,$(KUBE_VERSION:v%=%))
KUBE_LDFLAGS   := -s -w $(foreach v,gitVersion=$(KUBE_VERSION) gitMajor=$(word 1,$(KUBE_SEMVER)) gitMinor=$(word 2,$(KUBE_SEMVER)) gitTreeState=clean,-X k8s.io/component-base/version.$(v))
FUZZTIME  ?= 10s

export GOFLAGS := -buildvcs=false

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: build
build: ## Build the binaries into bin/.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

.PHONY: test
test: tools ## Run every test (unit, fuzz seeds, envtest on the real kube-apiserver, interop with oras, S3 replicas on versitygw, the network fault suite: root for it).
	BARGE_ORAS=$(ORAS) BARGE_COSIGN=$(COSIGN) BARGE_VERSITYGW=$(VERSITYGW) $(GO) test -count=1 -timeout 30m ./...

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code and the CRDs in charts/barge/crds/.
	$(CONTROLLER_GEN) object paths=./api/... crd:allowDangerousTypes=false paths=./api/... output:crd:artifacts:config=charts/barge/crds

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 10s).
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./hack/fuzz.sh

.PHONY: lint-chart
lint-chart: $(HELM) ## Lint the Helm chart (test/chart renders and checks it).
	$(HELM) lint --strict charts/barge --kube-version $(subst v,,$(KUBE_VERSION))

.PHONY: verify
verify: lint-chart ## Check formatting, vet, go.mod tidiness, generated files and the chart.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) mod tidy -diff
	cd hack/tools && $(GO) mod tidy -diff
	cd hack/controlplane && $(GO) mod tidy -diff
	cd hack/tools/versitygw && $(GO) mod tidy -diff
	@$(MAKE) --no-print-directory generate
	@git diff --exit-code -- 'api/*zz_generated.*.go' charts/barge/crds && test -z "$$(git status --porcelain -- 'api/*zz_generated.*.go' charts/barge/crds)" \
	  || { echo "generated files are stale or uncommitted: run make generate and commit them"; exit 1; }

.PHONY: quickstart
# The registry and CLI part runs at once; the script builds the control plane in the
# background meanwhile (`make controlplane`), which takes minutes on a fresh machine.
quickstart: build ## Run the registry, push and pull the examples, then a local cluster: controller, two edge pullers, a metric-gated choice, a rollback, and federated training promoted to serving.
	$(GO) build -o $(BIN)/localcluster ./hack/localcluster
	$(GO) build -o $(BIN)/logreg ./examples/trainer/logreg
	./hack/quickstart.sh

.PHONY: controlplane
controlplane: $(KUBE_APISERVER) $(ETCD) $(KUBECTL) ## Build kube-apiserver, etcd and kubectl into bin/.

# crane is pinned on its own in hack/tools/crane/go.mod: only the benchmark uses it.
CRANE := $(BIN)/crane

.PHONY: bench
bench: build $(ORAS) $(CRANE) ## Benchmark barge pull against oras and crane, dataset statistics, the controller at fleet scale, resumable pushes and site fan-out over shaped uplinks (~30 min, ~15 GiB in TMPDIR; the last part needs root); write docs/benchmarks.md.
	$(GO) run ./test/bench -bin $(BIN) -doc docs/benchmarks.md
	$(GO) run ./test/bench/dataset -bin $(BIN) -doc docs/benchmarks.md
	$(GO) run ./test/bench/controller -bin $(BIN) -doc docs/benchmarks.md -section scale-models -target 60s -before 3m22s -before-when "issue 4's run, 2026-11-29"
	$(GO) run ./test/bench/controller -bin $(BIN) -doc docs/benchmarks.md -section scale-nodes -models 10 -nodes 1000 -ranges 1 -repos 5 -target 60s -before 3m03s -before-when "the run of 2026-12-03, before issue 12"
	$(GO) run ./test/bench/controller -bin $(BIN) -doc docs/benchmarks.md -section scale-real -pullers real -target 90s
	$(GO) run ./test/bench/upload -bin $(BIN) -doc docs/benchmarks.md
	$(GO) run ./test/bench/aggregate -bin $(BIN) -doc docs/benchmarks.md
	$(GO) run ./test/bench/netfault -doc docs/benchmarks.md

$(CRANE): $(CURDIR)/hack/tools/crane/go.mod
	cd hack/tools/crane && $(GO) build -o $@ github.com/google/go-containerregistry/cmd/crane

##@ Tools

.PHONY: tools
# Cold (empty build cache, 2 cores shared with other builds), measured: kube-apiserver
# 10m51s (7m34s CPU), helm 2m10s, controller-gen 1m15s, etcd 23s, versitygw 9m50s (3m CPU);
# the first `make test` includes this. Warm: nothing to do; a go.mod bump that changes no
# package relinks in 1s.
tools: $(ORAS) $(CONTROLLER_GEN) $(HELM) $(COSIGN) $(KUBE_APISERVER) $(ETCD) $(VERSITYGW) ## Build the pinned tools and control plane into bin/.

$(ORAS): $(TOOLS_MOD)
	cd hack/tools && $(GO) build -o $(ORAS) oras.land/oras/cmd/oras

$(CONTROLLER_GEN): $(TOOLS_MOD)
	cd hack/tools && $(GO) build -o $@ sigs.k8s.io/controller-tools/cmd/controller-gen

$(HELM): $(TOOLS_MOD)
	cd hack/tools && $(GO) build -o $@ helm.sh/helm/v3/cmd/helm

$(COSIGN): $(TOOLS_MOD)
	cd hack/tools && $(GO) build -o $@ github.com/sigstore/cosign/v3/cmd/cosign

$(VERSITYGW): $(VERSITYGW_MOD)
	cd hack/tools/versitygw && $(GO) build -o $@ github.com/versity/versitygw/cmd/versitygw

$(KUBE_APISERVER): $(CONTROLPLANE_MOD)
	cd hack/controlplane && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(KUBE_LDFLAGS)' -o $@ k8s.io/kubernetes/cmd/kube-apiserver

$(KUBECTL): $(CONTROLPLANE_MOD)
	cd hack/controlplane && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(KUBE_LDFLAGS)' -o $@ k8s.io/kubernetes/cmd/kubectl

$(ETCD): $(CONTROLPLANE_MOD)
	cd hack/controlplane && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $@ go.etcd.io/etcd/server/v3

.PHONY: clean
clean: ## Remove bin/.
	rm -rf $(BIN)
