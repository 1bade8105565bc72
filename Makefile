# `make test` works on a fresh machine with nothing but this repository.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch; an unpinned torch resolves to a multi-GB CUDA build on Linux.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install lint test run bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[tf,dev]"
	touch $(STAMP)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src
	@if [ -x $(BIN)/actionlint ]; then $(BIN)/actionlint .github/workflows/*.yml; \
	else echo "actionlint not installed on this platform; workflow not linted"; fi

test: install lint
	$(BIN)/pytest -q

run: install
	$(BIN)/danbert all

# Benchmarks print figures; the first run generates a 1.3 GB checkpoint under benchmarks/.cache.
# `make bench BENCH_ARGS=--setup-legacy` adds the transformers 4.x contender to bench_convert
# (installed once under benchmarks/.cache/legacy-site, from the network, never into the venv).
BENCH_ARGS ?=
bench: install
	$(BIN)/python benchmarks/bench_convert.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_verify.py
	$(BIN)/python benchmarks/bench_fetch.py
	$(BIN)/python benchmarks/bench_startup.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
