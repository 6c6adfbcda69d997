# shipit — make targets that do real work. `make demo` and `make test` are the two a
# newcomer needs; both bring up the local rig (five Docker engines + sshd, root, Debian 12 or 13).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
RIG    := bash integration/rig.sh

.PHONY: install test unit rig-up rig-down demo lint bench soak check-debian13

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,lint]'
	touch $@

# Unit + integration tests. Without root or Debian the rig cannot start and the
# integration tests skip with the reason; under CI ($$CI set) they fail instead.
test: install
	@$(RIG) up || { [ -z "$$CI" ] || exit 1; echo "rig unavailable: integration tests will skip"; }
	$(PY) -m pytest

unit: install
	$(PY) -m pytest tests/unit

rig-up:
	$(RIG) up

rig-down:
	$(RIG) down

# Brings up the rig and ships rosie (as rosie:demo) to an SSH alias of it, then runs it there.
demo: install rig-up
	bash integration/demo.sh

# On a Debian 12 machine: does the rig also come up on Debian 13? (debootstrap + chroot)
check-debian13:
	bash integration/check-debian13.sh

lint: install
	$(VENV)/bin/ruff check shipit tests integration
	$(VENV)/bin/ruff format --check shipit tests integration
	$(VENV)/bin/mypy shipit

# 50 redeploys in a row into each store over SSH: bytes, RSS, disk, leftovers (~12 min).
soak: install rig-up
	$(PY) integration/soak.py --rounds 50

# The benchmarks (~100 min): Docker engines, a containerd node, the floor cases, the chart.
bench: install rig-up
	$(VENV)/bin/pip install -q -e '.[bench]'
	@# Timed as installed: pip compiles an installed package's bytecode, while a checkout
	@# under PYTHONDONTWRITEBYTECODE would compile all of shipit again in every run (60 ms).
	$(PY) -m compileall -q shipit
	$(PY) integration/bench.py
	$(PY) integration/bench_nodes.py
	$(PY) integration/bench_floor.py
	$(PY) integration/bench_chart.py
