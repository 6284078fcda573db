# berth — build, test, lint and benchmark.
#
#   make build   the berth binary in bin/
#   make test    unit, component and end-to-end tests (installs the Debian
#                packages they need when run as root)
#   make lint    go vet and gofmt
#   make bench   benchmarks
#   make demo    the quick start
#
# BERTH_E2E=required makes a test layer that cannot run a failure instead
# of a skip (.ci/run sets it).

GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN     := bin/berth

.PHONY: build test lint bench demo deps clean

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/berth

deps:
	@./scripts/deps.sh

test: deps lint
	$(GO) test -count=1 -timeout 60m ./...

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "not gofmt'ed:"; echo "$$out"; exit 1; fi

bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m ./...

# The quick start: a lab of 3 machines on this host (root), the agent
# bootstrapped onto each over SSH, the example fleet planned against them,
# reconciled onto them, and what they run. `bin/berth lab down` removes it all.
LAB ?= /var/lib/berth-lab
demo: deps build
	./$(BIN) validate examples/quickstart
	./$(BIN) lab status --dir $(LAB) >/dev/null 2>&1 || ./$(BIN) lab up --nodes 3 --dir $(LAB)
	. $(LAB)/lab.env && ./$(BIN) machines bootstrap && ./$(BIN) machines status
	. $(LAB)/lab.env && ./$(BIN) plan
	. $(LAB)/lab.env && ./$(BIN) reconcile --once --timeout 5m
	. $(LAB)/lab.env && ./$(BIN) get pods -o wide && ./$(BIN) get svc && ./$(BIN) get deployments && ./$(BIN) status

clean:
	rm -rf bin
