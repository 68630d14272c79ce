# optimlab: `make test` and `make demo` work from a clean clone on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The constraints file pins torch to the CPU build on this machine's disk (never a CUDA build).
PIP := $(PY) -m pip install --quiet --constraint constraints.txt

.PHONY: test fuzz demo lint format install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) "torch==2.13.0"
	$(PIP) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	KERAS_BACKEND=torch $(PY) -m pytest -q -n 2 --durations=15

# The property tests with fresh random examples, FUZZ_RUNS times (each run draws new ones).
FUZZ_RUNS ?= 20
fuzz: $(STAMP)
	for run in $$(seq $(FUZZ_RUNS)); do \
		HYPOTHESIS_PROFILE=explore KERAS_BACKEND=torch \
			$(PY) -m pytest -q -n 2 -p no:cacheprovider -m hypothesis tests || exit 1; \
	done

demo: $(STAMP)
	$(VENV)/bin/optimlab demo

lint: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
