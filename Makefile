# Two commands do everything on a fresh machine with Python 3.11+:
#   make serve   - create .venv from the lock file, then run `cosmogen serve` on the embedded SQLite default
#   make test    - create .venv if needed, then lint, type-check and run the whole test suite
# Every target bootstraps the environment itself; nothing else needs installing first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all test lint typecheck unit chromium serve demo bench clean lock

all: test

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "cosmogen needs Python 3.11 or newer"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# uv installs the hash-pinned lock quickly; it comes from the registry like everything else.
	# Bytecode is compiled at install time because PYTHONDONTWRITEBYTECODE may be set, and then every
	# process would recompile its imports (seconds per CLI start on a small machine).
	$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements.lock)"
	UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip sync -q --compile-bytecode --python $(BIN)/python --require-hashes requirements.lock
	UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) chromium
	$(BIN)/python -m compileall -q src   # tests start many CLI processes; see the note on bytecode above
	$(BIN)/pytest -q

# The browser tests (tests/browser) drive Debian's chromium through Playwright, which downloads nothing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests (apt-get, needs root)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

test: lint typecheck unit

serve: $(STAMP)
	$(BIN)/cosmogen serve

demo: $(STAMP)
	$(BIN)/cosmogen validate examples/banking.json
	$(BIN)/cosmogen run examples/banking.json

bench: $(STAMP)
	$(BIN)/cosmogen bench chain40

# Regenerate the lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra otel --generate-hashes --python-version 3.11 --universal -o requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
