# Barge. `make help` lists the targets.

GO      ?= go
BIN     := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/bargeml/barge/internal/cli.Version=$(VERSION)
# Tools are built from hack/tools/go.mod, pinned there.
TOOLS_MOD := $(CURDIR)/hack/tools/go.mod
ORAS      := $(BIN)/oras
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
test: tools ## Run every test (unit, fuzz seeds, interop with the real oras CLI).
	BARGE_ORAS=$(ORAS) $(GO) test -count=1 -timeout 30m ./...

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 10s).
	@for pkg in $$($(GO) list ./...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$target"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

.PHONY: verify
verify: ## Check formatting, vet, go.mod tidiness and generated files.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) mod tidy -diff
	cd hack/tools && $(GO) mod tidy -diff

.PHONY: quickstart
quickstart: build ## Start the embedded registry, push, attach metrics, pull and inspect the example model.
	./hack/quickstart.sh

##@ Tools

.PHONY: tools
tools: $(ORAS) ## Build the pinned tools into bin/.

$(ORAS): $(TOOLS_MOD)
	cd hack/tools && $(GO) build -o $(ORAS) oras.land/oras/cmd/oras

.PHONY: clean
clean: ## Remove bin/.
	rm -rf $(BIN)
