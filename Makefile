# Two commands do everything on a fresh machine with Python 3.11+:
#   make test    - create .venv from the lock file, then lint, type-check and run the whole test suite
#   make demo    - create .venv, then run an example universe end to end
# Every target bootstraps the environment itself; nothing else needs installing first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all test lint typecheck unit fuzz demo bench clean lock

all: test

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "cosmogen needs Python 3.11 or newer"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# uv installs the hash-pinned lock quickly; it comes from the registry like everything else.
	$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements.lock)"
	UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip sync -q --python $(BIN)/python --require-hashes requirements.lock
	UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

demo: $(STAMP)
	$(BIN)/cosmogen validate examples/banking.json
	$(BIN)/cosmogen run examples/banking.json

bench: $(STAMP)
	$(BIN)/cosmogen bench chain40

# Regenerate the lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 --universal -o requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
