# Both targets bootstrap .venv on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Test files run on this many processes (a file's tests stay together, so a module's fixtures are
# built once); each process keeps one BLAS thread so two of them do not fight over two cores.
TEST_WORKERS ?= 2

.PHONY: test demo lint format bench clean mutate

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned here (a CPU build on this disk); pyproject keeps a permissive range for real users.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,data]'
	touch $(STAMP)

test: $(STAMP)
	# the dashboard's browser test drives Debian's chromium (never a Playwright browser download)
	command -v chromium >/dev/null || { SUDO=$$(test "$$(id -u)" -eq 0 || echo sudo); $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 \
		$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# make demo KEEP=1 keeps the subnet and its dashboard up, live, until Ctrl-C
demo: $(STAMP)
	KEEP=$(KEEP) $(PY) -m crucible.neurons.demo

# Mutation testing of the scoring core (slow: not part of `make test`); prints a table and a JSON line.
mutate: $(STAMP)
	$(PY) -m pip install -q mutmut==2.5.1
	$(PY) tests/mutate.py

lint: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
