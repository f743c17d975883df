# Every entry point of ModelFleet. `make help` lists them.
#
# Tests and tools run in the release profile only: the engine is too slow unoptimised, and
# building the workspace in two profiles doubles the build on small machines.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
TOOLS := scripts/tools.sh
export MODELFLEET_CACHE ?= $(HOME)/.cache/modelfleet
export MODELFLEET_TOOLS_BIN ?= $(MODELFLEET_CACHE)/bin

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  make %-18s %s\n", $$1, $$2 }'

.PHONY: tools
tools: ## Provision the pinned Kubernetes binaries (kubelet, kube-proxy too), etcd, containerd, kwok, Prometheus, kubectl, helm, buildah, the demo model, the OpenAI Python client
	@bash $(TOOLS) all

.PHONY: images
images: tools ## Build the engine and operator images (and the test node's) with buildah into target/images/*.tar
	@bash scripts/images.sh all

.PHONY: build
build: ## Build every binary (release)
	$(CARGO) build --release --workspace --locked

.PHONY: test
test: tools images ## Run every test tier that runs without a GPU (release profile)
	$(CARGO) test --release --workspace --locked --no-fail-fast

.PHONY: test-unit
test-unit: ## The fast tier for the edit-test loop: every test that needs no cluster tools, root or network namespace (minutes)
	@bash $(TOOLS) model >/dev/null
	$(CARGO) test --release --workspace --locked --lib --bins
	$(CARGO) test --release --locked -p modelfleet-engine --test golden --test tokenizers --test chat_templates --test model_loading

.PHONY: soak
soak: tools ## Soak one engine with mixed clients for SOAK_SECONDS (default 120) and print the figures; not in make test
	$(CARGO) test --release --locked -p modelfleet-engine --test serving -- --ignored --nocapture --test-threads 1 soak

.PHONY: e2e
e2e: tools images ## Run the cluster tests only (control plane, real node, kwok, Helm, fleet)
	$(CARGO) test --release --locked -p modelfleet-e2e

.PHONY: cluster
cluster: tools ## Start a local control plane in the foreground (Ctrl-C tears it down)
	$(CARGO) run --release --locked -p modelfleet-e2e --bin modelfleet-dev -- cluster up

.PHONY: demo
demo: tools ## Run a local fleet on a real node with the CPU backend and the demo model; Ctrl-C stops it
	@echo "[demo] building the engine, the operator and the harness (first time: ~10 min on 2 cores)" >&2
	cargo build --release --locked --workspace --bins
	@bash scripts/images.sh engine pause
	./target/release/modelfleet-dev demo

.PHONY: bench
bench: ## Engine benchmark on the CPU against llama.cpp and transformers (figures; BENCH_OUT=file.md, BENCH_JSON=file.json)
	bash bench/engine_cpu.sh

.PHONY: bench-operator
bench-operator: tools ## The operator at 100, 1,000 and 5,000 ModelDeployments on kwok with a real Prometheus (figures; BENCH_COUNTS=100,1000 BENCH_OUT=file.md)
	$(CARGO) build --release --locked -p modelfleet-operator -p modelfleet-e2e --bins
	./target/release/modelfleet-bench-operator --counts $(or $(BENCH_COUNTS),100,1000,5000) $(if $(BENCH_OUT),--out $(BENCH_OUT))

.PHONY: crds
crds: ## Regenerate crds/ from the Rust API types (and the Helm chart's copy)
	$(CARGO) run --release --locked -p modelfleet-operator -- crdgen --out-dir crds
	cp crds/*.yaml charts/modelfleet/crds/

.PHONY: lint
lint: ## rustfmt check + clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets --locked -- -D warnings

.PHONY: print-kubectl
print-kubectl: ## Print the absolute path of the provisioned kubectl
	@bash $(TOOLS) kubectl >/dev/null 2>&1 || bash $(TOOLS) kubectl
	@bash $(TOOLS) print-bin kubectl

.PHONY: print-grpcurl
print-grpcurl: ## Print the absolute path of the provisioned grpcurl
	@bash $(TOOLS) grpcurl >/dev/null 2>&1 || bash $(TOOLS) grpcurl
	@bash $(TOOLS) print-bin grpcurl

.PHONY: print-helm
print-helm: ## Print the absolute path of the provisioned helm
	@bash $(TOOLS) kubectl >/dev/null 2>&1 || bash $(TOOLS) kubectl
	@bash $(TOOLS) print-bin helm

.PHONY: print-demo-model
print-demo-model: ## Print the absolute path of the demo model directory (fetching it if needed)
	@bash $(TOOLS) print-model 2>/dev/null || bash $(TOOLS) print-model
