# The first two commands of the README: `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo man test test-slow test-dates mutation lint bench bench-fleet bench-floor bench-postgresql clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@# Bytecode now, as pip does for an installed package: every command starts faster.
	$(PY) -m compileall -q provisioner >/dev/null
	touch $(STAMP)

demo: $(STAMP)
	@bash examples/demo.sh $(abspath $(VENV))/bin/provisioner

# provisioner(1), rendered from the help texts (provisioner/cli/manpage.py): `man -l` reads it;
# install it with `install -m 0644 build/man/provisioner.1 /usr/local/share/man/man1/`.
man: $(STAMP)
	$(PY) -m provisioner.cli.manpage build/man/provisioner.1

lint: $(STAMP)
	$(VENV)/bin/ruff check provisioner tests bench
	$(VENV)/bin/ruff format --check provisioner tests bench
	$(VENV)/bin/mypy --strict provisioner

# The fast suite on TEST_WORKERS processes (pytest-xdist), a whole test file to one worker, so
# that a file's fixtures start once; the servers (a PostgreSQL cluster, sshd, smbd) start once
# a worker, each on its own free ports and folders. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
XDIST        := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
test: lint
	$(VENV)/bin/pytest -q $(XDIST)

# The long randomized suites: the stateful scenario suite's long profile (stopped after
# PROVISIONER_STATEFUL_MINUTES, default 25) and the randomized kills of tests/test_crash.py.
test-slow: $(STAMP)
	$(VENV)/bin/pytest -q -s -m slow tests/test_stateful.py tests/test_crash.py

# The fast suite under libfaketime (Debian package faketime) at three shifted dates: no test
# may depend on the day it runs (tests/conftest.py pins the program's clock; every certificate
# a test makes is dated by it). Real servers run on the system clock (tests/realtime.py).
# DATES_SUITE narrows the run; .ci/run runs one date. Excluded: tests/test_smb.py and
# tests/test_ssh_fleet.py, whose clients wait for a silent or hung server with a timeout on a
# thread that never wakes under libfaketime's shifted clock (each test hangs until its 300 s
# timeout; nothing in them reads a date). Each date's run is stopped after DATES_MINUTES, so a
# wait that never wakes fails the target instead of eating the CI's time.
FAKETIME_DATES ?= +400d +1096d 2031-06-01
DATES_SUITE    ?= --ignore=tests/test_smb.py --ignore=tests/test_ssh_fleet.py
DATES_MINUTES  ?= 25
test-dates: $(STAMP)
	@command -v faketime >/dev/null || { echo "test-dates needs faketime (apt-get install faketime)"; exit 1; }
	@set -e; for at in $(FAKETIME_DATES); do \
	    case "$$at" in +*) shift="$$at" ;; \
	        *) shift="+$$(( ($$(date -u -d "$$at 09:00" +%s) - $$(date -u +%s)) / 86400 ))d" ;; esac; \
	    echo "== the fast suite on $$(faketime -f "$$shift" date -u +%F) (faketime -f $$shift)"; \
	    timeout -k 30 $$(( $(DATES_MINUTES) * 60 )) \
	        faketime -f "$$shift" $(VENV)/bin/pytest -q -p no:cacheprovider $(XDIST) $(DATES_SUITE) \
	        || { echo "== the fast suite failed or ran over $(DATES_MINUTES) minutes at $$shift"; exit 1; }; \
	done

# Mutation testing of the safety modules ([tool.mutmut] in pyproject.toml, docs/TESTING.md):
# mutmut on both cores, then the figures per module. MUTATE narrows it to a few mutant names
# or globs (e.g. MUTATE='provisioner.check.*'). Each mutant gets MUTATION_BUDGET seconds of the
# tests that reach its function (those that killed its siblings first; 0: no limit); the
# venv's mypy is on PATH for mutmut's type check; key derivations are made cheap
# (PROVISIONER_TEST_FAST_KDF, tests/conftest.py).
MUTATE          ?=
MUTATION_BUDGET ?= 10
mutation: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,mutation]'
	PATH="$(abspath $(VENV))/bin:$$PATH" PROVISIONER_MUTATION_BUDGET=$(MUTATION_BUDGET) \
	    PROVISIONER_TEST_FAST_KDF=1 $(VENV)/bin/mutmut run --max-children 2 $(MUTATE) || true
	$(PY) tests/mutation_summary.py

bench: $(STAMP)
	$(PY) bench/run.py

# Only the fleet section of docs/PERFORMANCE.md (500 SSH workstations, 25 % unreachable):
# about 20 minutes, where the whole `make bench` takes over an hour.
bench-fleet: $(STAMP)
	$(PY) bench/fleet_bench.py --write

# Only the section of docs/PERFORMANCE.md that sets a no-op plan and apply against their floor
# (one Python start plus sha256sum over every copy), at 1,000 x 10 and 20 x 5: a few minutes.
bench-floor: $(STAMP)
	$(PY) bench/floor.py --write

# Only the PostgreSQL section of docs/PERFORMANCE.md: a first apply and no-op plans at 1,000 x 10
# on PostgreSQL beside SQLite (a throwaway cluster; PostgreSQL's server binaries installed).
bench-postgresql: $(STAMP)
	$(PY) bench/pg_bench.py --write

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
