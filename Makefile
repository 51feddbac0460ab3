# Two commands: `make demo` and `make test`. Each creates .venv if missing and installs the pinned set.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Re-install only when the dependency pins change.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: demo test check install clean-demo chromium

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml requirements.lock | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -c requirements.lock -e '.[test,mlflow,wandb,export]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# Two workers, each taking whole test files (module fixtures such as a shared training run are built once).
TEST_WORKERS ?= 2

test: install chromium
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25

# The fast tier for the edit-test loop: no training (tests marked slow are left out); `make test` runs everything.
check: install
	$(PY) -m pytest -m "not slow" -q

# The report's browser test needs Debian's chromium: installed when missing (apt-get as root, else sudo -n).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    sudo -n apt-get install -y chromium || { sudo -n apt-get update && sudo -n apt-get install -y chromium; }; \
	  else echo "chromium is missing and cannot be installed here (not root, no passwordless sudo): run" \
	    "'sudo apt-get install -y chromium'; without it the report browser tests are skipped (failed under CI=1)"; fi; }

demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

clean-demo:
	rm -rf demo_data
