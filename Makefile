# `make run` tries the tool offline on the bundled sample; `make test` works on a fresh machine
# with nothing but this repository.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch; an unpinned torch resolves to a multi-GB CUDA build on Linux.
TORCH_SPEC ?= torch==2.13.0
# Where that build comes from, if not the default index (CI: PyTorch's CPU wheel index).
TORCH_INDEX ?=
TORCH_INSTALL = pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
# What running needs (`make install`, `make run`), then the rest for tests and lint.
STAMP     := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# The TF2 test checkpoints are written by the TF Model Garden itself (tests/tfckpt_tf2.py), whose
# releases pin an older TensorFlow than the tf extra installs; its modeling code runs on the
# venv's TensorFlow, though. So it goes, without dependencies, into a folder that only those
# tests put on PYTHONPATH, with the three of its dependencies that code imports and the venv
# lacks: tf-keras (its version must match TensorFlow's), gin-config and scipy.
# Its own stamp, so that a venv made before it gets it from the next `make install-dev`.
MODELGARDEN := $(VENV)/modelgarden
MODELGARDEN_SPEC ?= tf-models-official==2.20.0 tf-keras==2.21.0 gin-config==0.5.0 scipy
MG_STAMP := $(MODELGARDEN)/.installed

.PHONY: install install-dev lint test dist run bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m $(TORCH_INSTALL)
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

install-dev: $(DEV_STAMP) $(MG_STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[tf,dev]"
	touch $(DEV_STAMP)

$(MG_STAMP): $(DEV_STAMP)
	rm -rf $(MODELGARDEN)
	$(BIN)/python -m pip install -q --no-deps --target $(MODELGARDEN) $(MODELGARDEN_SPEC)
	touch $(MG_STAMP)

lint: install-dev
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy src
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

test: install-dev lint
	$(BIN)/pytest -q
	$(MAKE) dist

# What the package index would get, checked as a user would meet it: sdist and wheel built,
# their metadata checked (twine), then the wheel (not the editable tree) installed into a new
# venv that runs the whole pipeline on the bundled sample, offline.
DIST_VENV ?= build/dist-venv
dist: install-dev
	rm -rf dist $(DIST_VENV)
	$(BIN)/python -m build --no-isolation --outdir dist .
	$(BIN)/twine check --strict dist/*
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python -m $(TORCH_INSTALL)
	$(DIST_VENV)/bin/python -m pip install -q dist/*.whl
	cd $(DIST_VENV) && bin/python -c "import danbert_convert, pathlib, sys; \
	    p = pathlib.Path(danbert_convert.__file__).resolve(); \
	    sys.exit(0 if pathlib.Path.cwd().resolve() in p.parents else f'imported from {p}')"
	cd $(DIST_VENV) && bin/danbert --version && bin/danbert -q all danish-bert-sample --dest work --out model

# The bundled sample release, offline, in seconds; the real one is `danbert all`.
run: install
	$(BIN)/danbert all danish-bert-sample

# Benchmarks print figures; the first run generates a 1.3 GB checkpoint under benchmarks/.cache.
# `make bench BENCH_ARGS=--setup-legacy` adds the transformers 4.x contender to bench_convert
# (installed once under benchmarks/.cache/legacy-site, from the network, never into the venv).
BENCH_ARGS ?=
bench: install-dev
	$(BIN)/python benchmarks/bench_convert.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_verify.py
	$(BIN)/python benchmarks/bench_fetch.py
	$(BIN)/python benchmarks/bench_startup.py
	$(BIN)/python benchmarks/bench_crc.py
	$(BIN)/python benchmarks/bench_tokenizer.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
