# Two commands: `make demo` and `make test`. Each creates .venv if missing and installs the pinned set.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Re-install only when the dependency pins change.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: demo test install clean-demo

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml requirements.lock | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -c requirements.lock -e '.[test,mlflow,wandb,export]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

test: install
	$(PY) -m pytest

demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

clean-demo:
	rm -rf demo_data
