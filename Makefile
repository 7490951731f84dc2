# The two commands README.md gives: `make demo` and `make test`.
# Everything else here is a step of those two.

VENV   ?= .venv
PYTEST := $(VENV)/bin/pytest
RUFF   := $(VENV)/bin/ruff
TOX    := $(VENV)/bin/tox

.PHONY: demo test bootstrap daemons lint unit contract functional fault nova genconfig bench

demo: bootstrap daemons
	$(VENV)/bin/python tools/demo.py

test: bootstrap daemons lint
	$(PYTEST) -q -p no:cacheprovider tests/unit tests/contract tests/functional tests/fault
	$(TOX) -e nova

bootstrap:
	tools/bootstrap.sh

daemons: bootstrap
	tools/start-daemons.sh

lint: bootstrap
	$(RUFF) check --no-cache virt backends tests benchmarks tools
	$(VENV)/bin/mypy --no-incremental
	shellcheck tools/*.sh tools/demo-guest/init tools/demo-guest/power-button

unit: bootstrap
	$(PYTEST) -q tests/unit

contract: daemons
	$(PYTEST) -q tests/contract

functional: daemons
	$(PYTEST) -q tests/functional

fault: daemons
	$(PYTEST) -q tests/fault

# Nova in process drives real guests through backends/nova (its own env: .tox/nova).
nova: daemons
	$(TOX) -e nova

genconfig: bootstrap
	$(VENV)/bin/oslo-config-generator --namespace virt-driver \
		--output-file etc/virt-driver/virt-driver.conf.sample

bench: bootstrap daemons
	$(VENV)/bin/python benchmarks/run.py
