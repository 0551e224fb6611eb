# The first two commands of the README: `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint bench bench-fleet clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@# Bytecode now, as pip does for an installed package: every command starts faster.
	$(PY) -m compileall -q provisioner >/dev/null
	touch $(STAMP)

demo: $(STAMP)
	@bash examples/demo.sh $(abspath $(VENV))/bin/provisioner

lint: $(STAMP)
	$(VENV)/bin/ruff check provisioner tests bench
	$(VENV)/bin/ruff format --check provisioner tests bench
	$(VENV)/bin/mypy --strict provisioner

test: lint
	$(VENV)/bin/pytest -q

# The long randomized suites: the stateful scenario suite's long profile (stopped after
# PROVISIONER_STATEFUL_MINUTES, default 25) and the randomized kills of tests/test_crash.py.
test-slow: $(STAMP)
	$(VENV)/bin/pytest -q -s -m slow tests/test_stateful.py tests/test_crash.py

bench: $(STAMP)
	$(PY) bench/run.py

# Only the fleet section of docs/PERFORMANCE.md (500 SSH workstations, 25 % unreachable):
# about 20 minutes, where the whole `make bench` takes over an hour.
bench-fleet: $(STAMP)
	$(PY) bench/fleet_bench.py --write

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
