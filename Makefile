# The entry points the README names. Each one sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

PROFILE ?= short

.PHONY: run run-redis test test-differential test-resilience lint typecheck unit bench bench-saga bench-scale clean proto \
	image k8s-validate k8s-e2e compiled pure wheel test-compiled

# Run a fastdtm node at :36789 on the embedded store (./fastdtm.db): nothing else to install.
run: $(STAMP)
	$(BIN)/fastdtm serve $(ARGS)

# The same on a local Redis (127.0.0.1:6379, started here if none answers): the production store.
run-redis: $(STAMP)
	./scripts/ensure-redis.sh
	./scripts/local-redis.sh
	$(BIN)/fastdtm serve --store redis://127.0.0.1:6379/0 $(ARGS)

# The hot path's modules compiled by mypyc, beside their sources (docs/compiled.md): this tree's node, tests and
# benchmarks then run compiled. `make pure` removes them. Needs a C compiler and Python's headers.
compiled: $(STAMP)
	./scripts/compile.sh

pure:
	./scripts/compile.sh --clean

# dist/fastdtm-<version>-*.whl: compiled when a C compiler is here (cp311 linux wheel), pure Python otherwise.
wheel: $(STAMP)
	if command -v cc >/dev/null 2>&1; then export HATCH_BUILD_HOOK_ENABLE_MYPYC=1; fi; \
	$(BIN)/pip wheel -q --no-build-isolation --no-deps -w dist .
	./scripts/compile.sh --after-wheel

# The whole suite on the compiled build only (scripts/test-compiled.sh), leaving the tree pure afterwards.
test-compiled: $(STAMP)
	./scripts/ensure-redis.sh
	./scripts/ensure-mariadb.sh
	./scripts/ensure-postgres.sh
	./scripts/ensure-chromium.sh
	./scripts/warm-interop.sh
	./scripts/test-compiled.sh $(PYTEST_ARGS)

# Everything CI checks: formatting, lint, types, then the whole test suite against real servers on the compiled
# build, the one the image ships (docs/compiled.md), and the request path's suites again on the pure build.
test: $(STAMP) lint typecheck
	./scripts/ensure-redis.sh
	./scripts/ensure-mariadb.sh
	./scripts/ensure-postgres.sh
	./scripts/ensure-chromium.sh
	./scripts/warm-interop.sh
	./scripts/test-uvicorn-range.sh
	./scripts/test-compiled.sh $(PYTEST_ARGS)
	$(BIN)/pytest tests/unit tests/api $(PYTEST_ARGS)

# The same raw-HTTP scenarios against Go DTM v1.19.0 and fastdtm, replies compared (tests/differential; also part
# of make test). Builds Go DTM first if it is missing; without go the suite skips (fails under CI=true).
test-differential: $(STAMP)
	./scripts/ensure-redis.sh
	PATH="$$PATH:/usr/local/go/bin" ./scripts/install-go-dtm.sh || echo "Go DTM not installed: tests/differential skips"
	$(BIN)/pytest tests/differential $(PYTEST_ARGS)

# Transfers through 3 nodes on a 3+3 Redis Cluster under node kills and Redis failovers (PROFILE=short|long).
test-resilience: $(STAMP)
	./scripts/ensure-redis.sh
	$(BIN)/pytest tests/resilience --resilience-profile=$(PROFILE) $(PYTEST_ARGS)

# fastdtm/proto/dtmgimp_pb2.py(i) from dtmgimp.proto, by the protoc of grpcio-tools (a dev dependency);
# tests/unit/test_proto.py fails when they are stale.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Ifastdtm/proto --python_out=fastdtm/proto --pyi_out=fastdtm/proto \
		fastdtm/proto/dtmgimp.proto

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# fastdtm beside Go DTM v1.19.0 (bench/README.md). The script installs what it lacks itself: redis-server
# and nginx (apt), Go DTM (go install), its Go load generator (go build); the `bench` extra brings matplotlib.
bench: $(BENCH_STAMP)
	$(BIN)/python bench/side_by_side.py $(ARGS)

# How Redis load spreads over a 3-master Redis Cluster: 3 fastdtm nodes, then 3 Go DTM nodes, behind one nginx
# (bench/README.md). Same set-up steps as `make bench`; the cluster is started by the script itself.
bench-scale: $(BENCH_STAMP)
	$(BIN)/python bench/scale.py $(ARGS)

# fastdtm alone on the two-branch saga, with the Redis command breakdown (bench/saga_bench.py).
bench-saga: $(STAMP)
	./scripts/ensure-redis.sh
	$(BIN)/python bench/saga_bench.py $(ARGS)

# The container image fastdtm:latest (Dockerfile), checked (non-root, read-only root, serves), and saved to
# .tools/images/fastdtm.tar. Starts a private Docker engine when none answers (docs/deploy.md).
image: $(STAMP)
	./scripts/k8s/image.sh

# Every k8s/ overlay rendered, then a server-side dry run on a real kube-apiserver + etcd on loopback, in a
# namespace at Pod Security `restricted`; known-bad manifests must be refused. In CI.
k8s-validate:
	./scripts/k8s/validate.sh

# The image on a real control plane + 3 kubelets with containerd on loopback: probes, a saga, NotReady while
# Redis is down, drain on delete and a rolling update under load, a PodDisruptionBudget (about 6 minutes).
k8s-e2e: $(STAMP)
	./scripts/k8s/e2e.sh

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q -e './clients/python[all]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
