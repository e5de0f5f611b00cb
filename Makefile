# nnunetv2-topo — the two set-up commands are `make demo` and `make test`.
# make test       ruff + mypy + the whole suite (what CI runs), with the 20 slowest tests listed
# make test-fast  ruff + mypy + the unit tier: everything not marked e2e or slow (the inner development loop)
# make docs       regenerate docs/reference/ from the code (a unit test fails while they are stale)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch 2.14.1 / torchvision 0.29.1 lie on local disk on our machines; pinning them keeps pip from
# downloading a newer multi-GB build when nnunetv2's requirements are resolved.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# nnU-Net trains on the CPU with one OpenMP thread per core; spin-waiting threads make that many times slower
# whenever anything else runs on the machine (tests spawn several processes).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install test test-fast lint docs demo benchmarks clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=23.1" "setuptools>=64" wheel
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,volume]'
	@touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest --durations=20 $(PYTEST_ARGS)

test-fast: lint
	$(PY) -m pytest -m "not e2e and not slow" --durations=10 $(PYTEST_ARGS)

docs: install
	$(PY) -m nnunetv2_topo.tools.reference_docs

demo: install
	$(VENV)/bin/nnunetv2_topo demo --work demo_work

benchmarks: install
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf demo_work build *.egg-info .pytest_cache .ruff_cache .mypy_cache
